// tcp://HOST:PORT: parties that are processes, on this host or others.
//
// Design notes.
//
// Listening.  A process listens once per address, whatever the number of
// links naming it (tcp_node.c).
//
// Connections.  Two processes share one connection, whatever the number
// of links between them (tcp_conn.c).  Of each pair the party whose
// address sorts first connects (tw__tcp_dials), so that all links between
// the same processes agree on the direction and two processes never
// connect to each other at the same time.  A connection carries the links
// that are bound to it: the connecting side sends an OPEN naming the link
// and its rank, with a proof of the link's secret bound to the
// connection's fresh nonces; the other side checks it and answers with
// its own OPEN.  Each side numbers its links on the connection (slots),
// and every frame carries its sender's slot.  The connection's first
// handshake already names one link and checks its secret, so that a
// stranger gets no further than the handshake.
//
// Flow control is per link and direction, by credit: a receiver grants
// TW_OPT_RECV_BUFFER bytes (in its OPEN) and reports the data bytes its
// application has taken (CREDIT, when half the window is free again or
// when the sender asks with CREDIT_REQ); a sender sends while its bytes
// in flight fit the window, and one message of any size when nothing is
// in flight.  Control messages (names.h) are not counted: they are small,
// and the throttle's acks must pass a full window.  Since a sender keeps
// to its credit, the reader of a shared connection never has to stop
// reading for one slow receiver, which would stall every other link on
// the connection.  A peer that overruns its credit is broken: its
// connection closes.
//
// Sending.  tw_send hands the frame to the connection, which writes it
// from the caller's memory (small frames may be copied into its queue
// when the connection is busy), so tw_send returns when the buffer may be
// reused.
//
// Waiting for delivery.  Frames carry sequence numbers and cumulative
// acks per connection; a channel remembers the number of its last DATA
// frame and waits until the peer acknowledges it (tcp_conn.c).  A peer's
// UNBIND carries its final ack, so that messages it handled before its
// link went count as delivered, and later ones do not.

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/names.h"
#include "core/sync.h"
#include "transport/tcp/tcp.h"
#include "transport/tcp/tcp_auth.h"

// How often a waiting sender looks at its cancel flag and deadline.
#define TCP_SLICE_NS 10000000
// How long a receive that finds nothing reads the connection itself before
// it sleeps, once nothing arrives: about two round trips on a loopback or a
// LAN, so that a reply on its way is taken straight off the socket rather
// than handed over by the I/O thread (two thread wake-ups, several
// microseconds each).
#define TCP_SPIN_NS 50000

static int tcp_addr_check(const char *addr)
{
	char host[TW_TCP_ADDR_MAX + 1];
	uint16_t port;
	if (tw__tcp_addr_parse(addr, host, sizeof(host), &port) != TW_OK)
		return TW_EINVAL;
	return port != 0 ? TW_OK : TW_EINVAL;
}

static void wake(tcp_chan *mc)
{
	pthread_mutex_lock(&mc->mtx);
	pthread_cond_broadcast(&mc->cv);
	pthread_mutex_unlock(&mc->mtx);
}

// The peer's link is gone (`ack`: its last acknowledgement): receives end
// once what was delivered is drained, sends fail.
static void peer_failed(tcp_chan *mc, uint64_t ack)
{
	if (__atomic_load_n(&mc->peer_gone, __ATOMIC_ACQUIRE) == 0)
		__atomic_store_n(&mc->gone_ack, ack, __ATOMIC_RELEASE);
	__atomic_store_n(&mc->peer_gone, 1, __ATOMIC_SEQ_CST);
	tw_mailbox_close_from(mc->ep->mb, mc->peer_rank);
	wake(mc);
}

void tw__tcp_chan_conn_failed(tcp_chan *mc)
{
	peer_failed(mc, tw__tcp_conn_peer_ack(mc->conn));
}

static tcp_conn *chan_conn(tcp_chan *mc)
{
	// Set once under mtx before the state leaves CH_IDLE (release).
	if (__atomic_load_n(&mc->state, __ATOMIC_ACQUIRE) == CH_IDLE)
		return NULL;
	return mc->conn;
}

// --- OPEN --------------------------------------------------------------------------

// Our proof of the link's secret on connection c, zeros without one.
static int open_proof(tcp_chan *mc, tcp_conn *c, unsigned char *mac)
{
	tcp_ep *ep = mc->ep;
	memset(mac, 0, TW_TCP_MAC_LEN);
	if (ep->secret == NULL)
		return TW_OK;
	return tw__tcp_auth_proof(ep->secret, ep->secret_len,
	    tw__tcp_conn_peer_nonce(c), tw__tcp_conn_my_nonce(c),
	    tw__tcp_node_instance(ep->node), ep->self_rank, ep->link_id,
	    strlen(ep->link_id), mac);
}

static int open_check(tcp_chan *mc, tcp_conn *c, const tw__tcp_open *o)
{
	tcp_ep *ep = mc->ep;
	static const unsigned char zeros[TW_TCP_MAC_LEN];
	int status;
	if (ep->secret == NULL)
		status = memcmp(o->proof, zeros, sizeof(zeros)) == 0
		    ? TW_OK
		    : TW_EAUTH;
	else
		status = tw__tcp_auth_check(ep->secret, ep->secret_len,
		    tw__tcp_conn_my_nonce(c), tw__tcp_conn_peer_nonce(c),
		    tw__tcp_conn_peer_instance(c), o->rank, ep->link_id,
		    strlen(ep->link_id), o->proof);
	if (status == TW_EAUTH) {
		LOGC(mc, TW_LOG_WARN,
		    "%s (%s) failed authentication for the link (%s)",
		    mc->peer_id, tw__tcp_conn_who(c), tw_err_name(TW_EAUTH));
		__atomic_store_n(&mc->auth_failed, 1, __ATOMIC_RELEASE);
	}
	return status;
}

// Sends our OPEN for mc on its connection.  mc->mtx held.
static int send_open(tcp_chan *mc)
{
	tcp_ep *ep = mc->ep;
	tw__tcp_open o = { .rank = ep->self_rank,
		.size = ep->size,
		.window = ep->recv_buffer };
	int status = open_proof(mc, mc->conn, o.proof);
	if (status != TW_OK)
		return status;
	unsigned char buf[TW_TCP_OPEN_LEN];
	tw__tcp_open_encode(buf, &o);
	return tw__tcp_conn_send(mc->conn, TW_TCP_F_OPEN, mc->my_slot,
	    ep->link_id, buf, sizeof(buf), TX_NOWAIT, 0, NULL, NULL);
}

int tw__tcp_chan_on_open(
    tcp_conn *c, tcp_chan *mc, const tw__tcp_hdr *h, const tw__tcp_open *o)
{
	int status = TW_OK;
	pthread_mutex_lock(&mc->mtx);
	int state = __atomic_load_n(&mc->state, __ATOMIC_ACQUIRE);
	if (state == CH_OPENING && mc->conn == c) {
		// The answer to our OPEN.
		status = open_check(mc, c, o);
		if (status == TW_OK)
			status = tw__tcp_conn_map_peer(c, mc, h->slot);
	} else if (state == CH_IDLE && !mc->dialer
	    && !tw__tcp_flag(&mc->aborted)) {
		// The peer opens the link: bind, and answer.
		status = open_check(mc, c, o);
		if (status == TW_OK)
			status = tw__tcp_conn_bind(c, mc);
		if (status == TW_OK) {
			tw__tcp_conn_ref(c);
			mc->conn = c;
			status = tw__tcp_conn_map_peer(c, mc, h->slot);
			if (status == TW_OK)
				status = send_open(mc);
			// Bound even on failure: the channel's destroy
			// unbinds and drops the reference.
			__atomic_store_n(
			    &mc->state, CH_OPENING, __ATOMIC_RELEASE);
		}
	} else {
		LOGC(mc, TW_LOG_WARN, "%s opens the link a second time",
		    tw__tcp_conn_who(c));
		status = TW_EPROTO;
	}
	if (status == TW_OK) {
		mc->peer_slot = h->slot;
		mc->peer_window = o->window;
		__atomic_store_n(&mc->state, CH_READY, __ATOMIC_RELEASE);
	}
	pthread_cond_broadcast(&mc->cv);
	pthread_mutex_unlock(&mc->mtx);
	return status;
}

// --- credit --------------------------------------------------------------------------

// Sends a CREDIT when it is due.  Called with mc->mtx held; returns the
// count to send (0: nothing due), which the caller sends after unlocking.
static uint64_t credit_due(tcp_chan *mc)
{
	uint64_t window = mc->ep->recv_buffer;
	if (__atomic_load_n(&mc->state, __ATOMIC_ACQUIRE) != CH_READY
	    || tw__tcp_flag(&mc->unbound) || mc->taken == mc->credit_sent)
		return 0;
	if (mc->taken - mc->credit_sent < window / 2 && !mc->peer_starved)
		return 0;
	mc->credit_sent = mc->taken;
	mc->peer_starved = false;
	return mc->taken;
}

static void send_credit(tcp_chan *mc, uint64_t v)
{
	unsigned char buf[TW_TCP_CREDIT_LEN];
	tw__tcp_credit_encode(buf, v);
	(void)tw__tcp_conn_send(mc->conn, TW_TCP_F_CREDIT, mc->my_slot, NULL,
	    buf, sizeof(buf), TX_NOWAIT, 0, NULL, NULL);
}

// The mailbox's report: the application took data of peer `from`.
static void on_taken(void *arg, uint32_t from, uint64_t taken)
{
	tcp_ep *ep = arg;
	pthread_mutex_lock(&ep->mtx);
	tcp_chan *mc = from < ep->size ? ep->chans[from] : NULL;
	if (mc != NULL)
		tw__tcp_chan_ref(mc);
	pthread_mutex_unlock(&ep->mtx);
	if (mc == NULL)
		return;
	pthread_mutex_lock(&mc->mtx);
	if (taken > mc->taken)
		mc->taken = taken;
	uint64_t v = credit_due(mc);
	pthread_mutex_unlock(&mc->mtx);
	if (v > 0)
		send_credit(mc, v);
	tw__tcp_chan_unref(mc);
}

// --- frames from the peer ---------------------------------------------------------------

int tw__tcp_chan_deliver(tcp_chan *mc, const char *key, void *data, size_t len)
{
	tcp_ep *ep = mc->ep;
	bool ctl = tw__key_is_ctl(key);
	tw__nsset_forget_key(&mc->peer_aborted, key);
	// Never waits: within its credit the peer's data always fits.
	int status = tw__mailbox_push_owned(ep->mb, mc->peer_rank, key, data,
	    len, ctl ? UINT64_MAX : ep->recv_buffer, 0, NULL);
	if (status == TW_OK)
		return TW_OK;
	free(data);
	switch (status) {
	case TW_ETIMEDOUT:
		LOGC(mc, TW_LOG_ERROR,
		    "%s sent beyond the window it was granted (%s)",
		    mc->peer_id, tw_err_name(TW_EPROTO));
		return TW_EPROTO;
	case TW_ENOMEM:
		LOGC(mc, TW_LOG_ERROR,
		    "out of memory queueing a message from %s", mc->peer_id);
		return TW_ENOMEM;
	default:
		return TW_OK; // aborted or closed here: dropped
	}
}

int tw__tcp_chan_on_frame(
    tcp_chan *mc, const tw__tcp_hdr *h, const char *key, void *payload)
{
	tcp_ep *ep = mc->ep;
	switch (h->type) {
	case TW_TCP_F_DATA:
		return tw__tcp_sx_data(tw__tcp_conn_sx(mc->conn), mc, key,
		    payload, (size_t)h->len);
	case TW_TCP_F_STRIPED: {
		tw__tcp_chunk ck;
		if (tw__tcp_striped_decode(payload, TW_TCP_STRIPED_LEN, &ck)
		    != TW_OK)
			return TW_EPROTO;
		int status = tw__tcp_sx_announce(
		    tw__tcp_conn_sx(mc->conn), mc, h->slot, key, &ck, h->seq);
		if (status == TW_EPROTO)
			LOGC(mc, TW_LOG_ERROR,
			    "%s announced a striped message wrongly (%s)",
			    mc->peer_id, tw_err_name(TW_EPROTO));
		return status;
	}
	case TW_TCP_F_CLOSE_NS:
		tw__mailbox_close_ns(ep->mb, mc->peer_rank, key);
		return TW_OK;
	case TW_TCP_F_ABORT_NS:
		tw__nsset_add(&mc->peer_aborted, key);
		tw__mailbox_close_ns(ep->mb, mc->peer_rank, key);
		return TW_OK;
	case TW_TCP_F_UNBIND:
		tw__tcp_conn_unmap_peer(mc->conn, h->slot);
		peer_failed(mc, h->ack);
		return TW_OK;
	case TW_TCP_F_CREDIT: {
		uint64_t v;
		if (tw__tcp_credit_decode(payload, TW_TCP_CREDIT_LEN, &v)
		    != TW_OK)
			return TW_EPROTO;
		pthread_mutex_lock(&mc->mtx);
		bool ok = v >= mc->tx_credit && v <= mc->tx_data;
		if (ok) {
			mc->tx_credit = v;
			mc->credit_asked = false;
			pthread_cond_broadcast(&mc->cv);
		}
		pthread_mutex_unlock(&mc->mtx);
		if (!ok)
			LOGC(mc, TW_LOG_ERROR,
			    "%s grants credit for data never sent (%s)",
			    mc->peer_id, tw_err_name(TW_EPROTO));
		return ok ? TW_OK : TW_EPROTO;
	}
	case TW_TCP_F_CREDIT_REQ: {
		pthread_mutex_lock(&mc->mtx);
		mc->peer_starved = true;
		uint64_t v = credit_due(mc);
		pthread_mutex_unlock(&mc->mtx);
		if (v > 0)
			send_credit(mc, v);
		return TW_OK;
	}
	default:
		return TW_OK;
	}
}

// --- sending -------------------------------------------------------------------------

static int tx_status(tcp_chan *mc, const int *cancel)
{
	if (tw__tcp_flag(&mc->aborted)
	    || (cancel != NULL && tw__tcp_flag(cancel)))
		return TW_ECLOSED;
	if (tw__tcp_flag(&mc->peer_gone) || tw__tcp_conn_failed(mc->conn))
		return TW_EPEER;
	return TW_OK;
}

// Reserves credit for len data bytes, waiting for the peer's CREDIT.
static int reserve(
    tcp_chan *mc, size_t len, int64_t deadline, const int *cancel)
{
	int status = TW_OK;
	pthread_mutex_lock(&mc->mtx);
	for (;;) {
		uint64_t out = mc->tx_data - mc->tx_credit;
		if (out == 0 || out + len <= mc->peer_window)
			break;
		if ((status = tx_status(mc, cancel)) != TW_OK)
			break;
		int64_t now = tw__now_ns();
		if (now >= deadline) {
			status = TW_ETIMEDOUT;
			break;
		}
		if (!mc->credit_asked) {
			mc->credit_asked = true;
			pthread_mutex_unlock(&mc->mtx);
			(void)tw__tcp_conn_send(mc->conn, TW_TCP_F_CREDIT_REQ,
			    mc->my_slot, NULL, NULL, 0, TX_NOWAIT, 0, NULL,
			    NULL);
			pthread_mutex_lock(&mc->mtx);
			continue;
		}
		int64_t until = now + TCP_SLICE_NS;
		(void)tw__cond_wait_until(
		    &mc->cv, &mc->mtx, until < deadline ? until : deadline);
	}
	if (status == TW_OK)
		mc->tx_data += len;
	pthread_mutex_unlock(&mc->mtx);
	return status;
}

// A large message over a connection with stripes: announced on the main
// connection (where its order is kept), its chunks spread over all of them
// round robin, each written from the caller's memory.  TW_EPEER after the
// announcement means the connection failed (it stands or falls with its
// stripes); before it, the message was not sent at all.
static int send_striped(tcp_chan *mc, const char *key, const void *buf,
    size_t len, int64_t deadline, const int *cancel, uint64_t *seq)
{
	tcp_conn *conn = mc->conn;
	tw__tcp_chunk ck = { .id = tw__tcp_conn_next_id(conn), .total = len };
	unsigned char ann[TW_TCP_STRIPED_LEN];
	tw__tcp_striped_encode(ann, &ck);
	int status = tw__tcp_conn_send(conn, TW_TCP_F_STRIPED, mc->my_slot,
	    key, ann, sizeof(ann), 0, deadline, cancel, seq);
	if (status != TW_OK)
		return status;
	const unsigned char *p = buf;
	uint64_t chunk = mc->ep->chunk;
	for (uint64_t i = 0; ck.offset < len && status == TW_OK; i++) {
		size_t n = (size_t)(len - ck.offset < chunk ? len - ck.offset
		                                            : chunk);
		status = tw__tcp_conn_send_chunk(tw__tcp_conn_pick(conn, i),
		    mc->my_slot, &ck, p + ck.offset, n);
		ck.offset += n;
	}
	if (status == TW_OK)
		return TW_OK;
	// The peer would wait for the rest for ever.
	tw__tcp_conn_fail(conn, "a stripe failed in the middle of a message");
	return TW_EPEER;
}

static int tcp_xsend(tw_channel *c, const char *key, const void *buf,
    size_t len, int flags, int64_t deadline, const int *cancel)
{
	(void)flags;
	tcp_chan *mc = c->impl;
	if (tw__tcp_flag(&mc->aborted))
		return TW_ECLOSED;
	if (__atomic_load_n(&mc->state, __ATOMIC_ACQUIRE) != CH_READY)
		return TW_EPEER;
	size_t klen = strlen(key);
	if (klen == 0 || klen >= TW_KEY_MAX || (buf == NULL && len > 0))
		return TW_EINVAL;
	if (tw__tcp_flag(&mc->peer_gone)
	    || tw__nsset_holds(&mc->peer_aborted, key))
		return TW_EPEER;
	bool data = !tw__key_is_ctl(key);
	int status = data ? reserve(mc, len, deadline, cancel) : TW_OK;
	if (status != TW_OK)
		return status;
	uint64_t seq = 0;
	if (data && len > mc->ep->chunk
	    && tw__tcp_conn_pick(mc->conn, 1) != mc->conn)
		status
		    = send_striped(mc, key, buf, len, deadline, cancel, &seq);
	else
		status = tw__tcp_conn_send(mc->conn, TW_TCP_F_DATA,
		    mc->my_slot, key, buf, len, 0, deadline, cancel, &seq);
	if (status == TW_OK) {
		uint64_t prev
		    = __atomic_load_n(&mc->last_seq, __ATOMIC_RELAXED);
		while (prev < seq
		    && !__atomic_compare_exchange_n(&mc->last_seq, &prev, seq,
		        false, __ATOMIC_RELEASE, __ATOMIC_RELAXED))
			;
		return TW_OK;
	}
	if (data && status != TW_EPEER) {
		// Never sent: the credit goes back.
		pthread_mutex_lock(&mc->mtx);
		mc->tx_data -= len;
		pthread_cond_broadcast(&mc->cv);
		pthread_mutex_unlock(&mc->mtx);
	}
	if (status == TW_EPEER
	    && (tw__tcp_flag(&mc->aborted)
	        || (cancel != NULL && tw__tcp_flag(cancel))))
		status = TW_ECLOSED;
	return status;
}

static int tcp_send(
    tw_channel *c, const char *key, const void *buf, size_t len)
{
	return tcp_xsend(c, key, buf, len, 0, TW_FOREVER, NULL);
}

// Tells the peer that namespace `ns` was closed or aborted here, after the
// data sent before.  Never waits.
static void tx_ns(tcp_chan *mc, uint8_t type, const char *ns)
{
	tcp_conn *conn = chan_conn(mc);
	if (conn == NULL || tw__tcp_flag(&mc->peer_gone)
	    || __atomic_load_n(&mc->state, __ATOMIC_ACQUIRE) != CH_READY)
		return;
	(void)tw__tcp_conn_send(
	    conn, type, mc->my_slot, ns, NULL, 0, TX_NOWAIT, 0, NULL, NULL);
}

// Tells the peer that our side of the link is gone, once.
static void tx_unbind(tcp_chan *mc)
{
	tcp_conn *conn = chan_conn(mc);
	if (conn == NULL
	    || __atomic_exchange_n(&mc->unbound, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	(void)tw__tcp_conn_send(conn, TW_TCP_F_UNBIND, mc->my_slot, NULL, NULL,
	    0, TX_NOWAIT, 0, NULL, NULL);
}

// --- the other channel ops ----------------------------------------------------------

static int tcp_wait_until(tw_channel *c, int64_t deadline, const int *cancel)
{
	tcp_chan *mc = c->impl;
	if (tw__tcp_flag(&mc->aborted))
		return TW_ECLOSED;
	if (__atomic_load_n(&mc->state, __ATOMIC_ACQUIRE) != CH_READY)
		return TW_OK;
	uint64_t target = __atomic_load_n(&mc->last_seq, __ATOMIC_ACQUIRE);
	int status = TW_OK;
	if (target > 0 && !tw__tcp_flag(&mc->peer_gone))
		status = tw__tcp_conn_wait_ack(
		    mc->conn, target, deadline, cancel);
	// Acknowledged after the peer's link went: dropped there.
	if (tw__tcp_flag(&mc->peer_gone)
	    && __atomic_load_n(&mc->gone_ack, __ATOMIC_ACQUIRE) < target)
		status = TW_EPEER;
	if (status != TW_OK)
		LOGC(mc, TW_LOG_DEBUG,
		    "delivery to %s unconfirmed: %s (last frame %llu, acked "
		    "%llu, when gone %llu)",
		    mc->peer_id, tw_err_name(status),
		    (unsigned long long)target,
		    (unsigned long long)tw__tcp_conn_peer_ack(mc->conn),
		    (unsigned long long)__atomic_load_n(
		        &mc->gone_ack, __ATOMIC_ACQUIRE));
	if (tw__tcp_flag(&mc->aborted))
		status = TW_ECLOSED;
	return status;
}

static int tcp_wait_pending(tw_channel *c)
{
	tcp_chan *mc = c->impl;
	return tcp_wait_until(c, TW_FOREVER, &mc->aborted);
}

static void tcp_abort(tw_channel *c)
{
	tcp_chan *mc = c->impl;
	__atomic_store_n(&mc->aborted, 1, __ATOMIC_SEQ_CST);
	tw_mailbox_abort(mc->ep->mb);
	// The peer sees its link to us end (TW_EPEER); never waits.
	tx_unbind(mc);
	wake(mc);
}

static void tcp_abort_ns(tw_channel *c, const char *ns)
{
	tcp_chan *mc = c->impl;
	tw__mailbox_abort_ns(mc->ep->mb, ns);
	// The root link's abort is ops.abort's (UNBIND); a child's travels
	// as a frame.
	if (strcmp(ns, mc->ep->link_id) == 0)
		return;
	tx_ns(mc, TW_TCP_F_ABORT_NS, ns);
}

static void tcp_close_ns(tw_channel *c, const char *ns)
{
	tx_ns(c->impl, TW_TCP_F_CLOSE_NS, ns);
}

static void tcp_open_ns(tw_channel *c, const char *ns)
{
	tcp_chan *mc = c->impl;
	tw__mailbox_reopen_ns(mc->ep->mb, ns);
	tw__nsset_forget_ns(&mc->peer_aborted, ns);
}

// --- receiving ---------------------------------------------------------------------

typedef struct wanted {
	const tw__rxbox *rx;
	const char *key;
} wanted;

static bool arrived(void *arg)
{
	wanted *w = arg;
	return tw__rxbox_ready(w->rx, w->key);
}

// Polls the connection briefly when the message is not there yet.
static void spin(tcp_chan *mc, const char *key, int64_t deadline)
{
	wanted w = { &mc->rx, key };
	if (__atomic_load_n(&mc->state, __ATOMIC_ACQUIRE) != CH_READY
	    || arrived(&w))
		return;
	(void)tw__tcp_conn_poll(mc->conn, TCP_SPIN_NS, deadline, arrived, &w);
}

static int tcp_recv_until(
    tw_channel *c, const char *key, int64_t deadline, tw_buf *out)
{
	spin(c->impl, key, deadline);
	return tw__rxbox_recv_until(c, key, deadline, out);
}

static int tcp_recv_into(tw_channel *c, const char *key, int64_t deadline,
    void *buf, size_t cap, size_t *len)
{
	spin(c->impl, key, deadline);
	return tw__rxbox_recv_into(c, key, deadline, buf, cap, len);
}

// --- the handshake ------------------------------------------------------------------

// Waits until mc is ready, or why it will not be.  mc->mtx held.
static int wait_ready(tcp_chan *mc, int64_t deadline)
{
	for (;;) {
		if (__atomic_load_n(&mc->state, __ATOMIC_ACQUIRE) == CH_READY)
			return TW_OK;
		if (tw__tcp_flag(&mc->aborted))
			return TW_ECLOSED;
		if (tw__tcp_flag(&mc->auth_failed))
			return TW_EAUTH;
		if (tw__tcp_flag(&mc->peer_gone))
			return TW_EPEER;
		if (tw__cond_wait_until(&mc->cv, &mc->mtx, deadline)
		        == ETIMEDOUT
		    && __atomic_load_n(&mc->state, __ATOMIC_ACQUIRE)
		        != CH_READY)
			return TW_ETIMEDOUT;
	}
}

static int tcp_test_send(tw_channel *c, int64_t timeout_ms)
{
	tcp_chan *mc = c->impl;
	tcp_ep *ep = mc->ep;
	int64_t deadline = tw__deadline_ms(timeout_ms);
	int status = TW_OK;
	if (mc->dialer && chan_conn(mc) == NULL) {
		tcp_conn *conn = NULL;
		status = tw__tcp_node_dial(ep->node, mc->peer_addr, ep,
		    mc->peer_rank, deadline, &mc->aborted, &conn);
		if (status != TW_OK)
			return status == TW_EPEER ? TW_ETIMEDOUT : status;
		pthread_mutex_lock(&mc->mtx);
		if (__atomic_load_n(&mc->state, __ATOMIC_ACQUIRE) == CH_IDLE) {
			status = tw__tcp_conn_bind(conn, mc);
			if (status == TW_OK) {
				mc->conn = conn;
				conn = NULL; // the channel's reference now
				__atomic_store_n(
				    &mc->state, CH_OPENING, __ATOMIC_RELEASE);
				status = send_open(mc);
			}
		}
		pthread_mutex_unlock(&mc->mtx);
		if (conn != NULL)
			tw__tcp_conn_unref(conn);
		if (status != TW_OK)
			return status;
	}
	pthread_mutex_lock(&mc->mtx);
	status = wait_ready(mc, deadline);
	pthread_mutex_unlock(&mc->mtx);
	if (status != TW_OK)
		return status;
	char key[TW_KEY_MAX];
	tw__key_ctl(key, ep->link_id, "hello");
	return tcp_xsend(c, key, NULL, 0, 0, deadline, NULL);
}

static int tcp_test_recv(tw_channel *c)
{
	tcp_chan *mc = c->impl;
	char key[TW_KEY_MAX];
	tw__key_ctl(key, mc->ep->link_id, "hello");
	tw_buf b = { 0 };
	int status = tw__mailbox_pop_until(
	    mc->ep->mb, mc->peer_rank, key, mc->connect_deadline, &b);
	tw_buf_free(&b);
	return status;
}

// --- life cycle -------------------------------------------------------------------

static void ep_free(tcp_ep *ep)
{
	if (ep->mb != NULL)
		tw_mailbox_free(ep->mb);
	free(ep->link_id);
	if (ep->secret != NULL) {
		memset(ep->secret, 0, ep->secret_len);
		free(ep->secret);
	}
	for (size_t i = 0; ep->addrs != NULL && i < ep->size; i++)
		free(ep->addrs[i]);
	free(ep->addrs);
	free(ep->chans);
	pthread_mutex_destroy(&ep->mtx);
	free(ep);
}

void tw__tcp_ep_ref(tcp_ep *ep)
{
	__atomic_add_fetch(&ep->refs, 1, __ATOMIC_ACQ_REL);
}

void tw__tcp_ep_unref(tcp_ep *ep)
{
	if (__atomic_sub_fetch(&ep->refs, 1, __ATOMIC_ACQ_REL) == 0)
		ep_free(ep);
}

static void chan_free(tcp_chan *mc)
{
	tw__tcp_sx_chan_free(mc);
	if (mc->conn != NULL)
		tw__tcp_conn_unref(mc->conn);
	tw__nsset_fini(&mc->peer_aborted);
	pthread_cond_destroy(&mc->cv);
	pthread_mutex_destroy(&mc->mtx);
	free(mc->peer_id);
	free(mc->peer_addr);
	free(mc);
}

void tw__tcp_chan_ref(tcp_chan *mc)
{
	__atomic_add_fetch(&mc->refs, 1, __ATOMIC_ACQ_REL);
}

void tw__tcp_chan_unref(tcp_chan *mc)
{
	if (__atomic_sub_fetch(&mc->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	tcp_ep *ep = mc->ep;
	chan_free(mc);
	tw__tcp_ep_unref(ep);
}

static void tcp_destroy(tw_channel *c)
{
	tcp_chan *mc = c->impl;
	tcp_ep *ep = mc->ep;
	// No new OPEN may reach the link once it starts closing.
	tw__tcp_node_leave(ep);
	pthread_mutex_lock(&ep->mtx);
	ep->chans[mc->peer_rank] = NULL;
	pthread_mutex_unlock(&ep->mtx);
	// The UNBIND carries our final ack: the peer learns which of its
	// messages arrived before it learns that we are gone.
	tx_unbind(mc);
	tcp_conn *conn = chan_conn(mc);
	if (conn != NULL)
		tw__tcp_conn_unbind(conn, mc);
	tw__tcp_chan_unref(mc);
}

static const tw_channel_ops tcp_ops = {
	.send = tcp_send,
	.send_async = NULL,
	.recv = tw__rxbox_recv,
	.test_send = tcp_test_send,
	.test_recv = tcp_test_recv,
	.wait_pending = tcp_wait_pending,
	.abort = tcp_abort,
	.destroy = tcp_destroy,
};

static const tw__chan_xops tcp_xops = {
	.size = sizeof(tw__chan_xops),
	.send = tcp_xsend,
	.recv = tcp_recv_until,
	.recv_into = tcp_recv_into,
	.probe = tw__rxbox_probe,
	.abort_ns = tcp_abort_ns,
	.close_ns = tcp_close_ns,
	.open_ns = tcp_open_ns,
	.unreceived_peak = tw__rxbox_peak,
	.wait_pending = tcp_wait_until,
};

static tcp_chan *chan_new(const tw__link_cfg *cfg, tcp_ep *ep, size_t peer)
{
	tcp_chan *mc = calloc(1, sizeof(*mc));
	if (mc == NULL)
		return NULL;
	pthread_mutex_init(&mc->mtx, NULL);
	tw__cond_init(&mc->cv);
	tw__nsset_init(&mc->peer_aborted);
	mc->peer_id = strdup(cfg->parties[peer].id);
	mc->peer_addr = strdup(cfg->parties[peer].addr);
	if (mc->peer_id == NULL || mc->peer_addr == NULL) {
		chan_free(mc);
		return NULL;
	}
	mc->ch.ops = &tcp_ops;
	mc->ch.impl = mc;
	mc->rx = (tw__rxbox) { ep->mb, (uint32_t)peer };
	mc->ep = ep;
	mc->refs = 1;
	mc->peer_rank = (uint32_t)peer;
	mc->dialer = tw__tcp_dials(
	    cfg->parties[cfg->self].addr, cfg->parties[peer].addr);
	mc->connect_deadline
	    = tw__deadline_ms(cfg->opts[TW_OPT_CONNECT_TIMEOUT_MS]);
	return mc;
}

static int tcp_open_link(const tw__link_cfg *cfg, tw_channel **chans)
{
	if (cfg->size < 2)
		return TW_OK; // a link of one party has nobody to talk to
	tcp_ep *ep = calloc(1, sizeof(*ep));
	if (ep == NULL)
		return TW_ENOMEM;
	pthread_mutex_init(&ep->mtx, NULL);
	ep->size = (uint32_t)cfg->size;
	ep->self_rank = (uint32_t)cfg->self;
	ep->mb = tw_mailbox_new();
	ep->link_id = strdup(cfg->link_id);
	ep->chans = calloc(cfg->size, sizeof(*ep->chans));
	ep->addrs = calloc(cfg->size, sizeof(*ep->addrs));
	ep->recv_buffer = (uint64_t)cfg->opts[TW_OPT_RECV_BUFFER];
	ep->max_msg = (uint64_t)cfg->opts[TW_OPT_MAX_MSG_SIZE];
	ep->heartbeat_ms = cfg->opts[TW_OPT_HEARTBEAT_MS];
	ep->stripes = (unsigned)cfg->opts[TW_OPT_STRIPES];
	ep->chunk = (uint64_t)cfg->opts[TW_OPT_CHUNK_SIZE];
	if (cfg->secret != NULL && cfg->secret_len > 0) {
		ep->secret = malloc(cfg->secret_len);
		if (ep->secret != NULL) {
			memcpy(ep->secret, cfg->secret, cfg->secret_len);
			ep->secret_len = cfg->secret_len;
		}
	}
	int status = TW_ENOMEM;
	if (ep->mb == NULL || ep->link_id == NULL || ep->chans == NULL
	    || ep->addrs == NULL
	    || (cfg->secret != NULL && cfg->secret_len > 0
	        && ep->secret == NULL))
		goto err_free;
	for (size_t i = 0; i < cfg->size; i++)
		if ((ep->addrs[i] = strdup(cfg->parties[i].addr)) == NULL)
			goto err_free;
	tw__mailbox_on_taken(ep->mb, on_taken, ep);
	for (size_t i = 0; i < cfg->size; i++) {
		if (i == cfg->self)
			continue;
		tcp_chan *mc = chan_new(cfg, ep, i);
		if (mc == NULL)
			goto err_free;
		ep->chans[i] = mc;
		ep->refs++;
	}
	// Joining the node makes the link reachable: last, once everything
	// an OPEN could need exists.
	status = tw__tcp_node_join(cfg->parties[cfg->self].addr, ep);
	if (status != TW_OK)
		goto err_free;
	for (size_t i = 0; i < cfg->size; i++)
		if (i != cfg->self)
			chans[i] = &ep->chans[i]->ch;
	return TW_OK;

err_free:
	for (size_t i = 0; ep->chans != NULL && i < cfg->size; i++)
		if (ep->chans[i] != NULL)
			chan_free(ep->chans[i]);
	ep_free(ep);
	return status;
}

const tw__transport tw__tcp_transport = {
	.scheme = "tcp",
	.addr_check = tcp_addr_check,
	.open = tcp_open_link,
	.xops = &tcp_xops,
};
