// tcp://HOST:PORT: parties that are processes, on this host or others.
//
// Design notes.
//
// Listening.  A process listens once per address, whatever the number of
// links naming it (tcp_node.c).
//
// Peers.  Two processes share one connection, whatever the number of
// links between them, plus its stripes (tcp_peer.c).  Of each pair the
// party whose address sorts first connects (tw__tcp_dials), so that all
// links between the same processes agree on the direction.  A link is
// bound to the peer by OPEN frames: the connecting side sends one naming
// the link and its rank, with a proof of the link's secret bound to the
// connection's fresh nonces, its receive window and its largest message;
// the other side checks it and answers with its own.  The connection's
// handshake already names one link and checks its secret, so that a
// stranger gets no further than the handshake.
//
// Flow control is per link and direction, by credit, in message costs
// (tw__msg_cost: bytes plus a fixed part per message, so that empty
// messages cost something too): a receiver grants TW_OPT_RECV_BUFFER in
// its OPEN and reports what its application has taken (CREDIT, when half
// the window is free again or when the sender asks with CREDIT_REQ); a
// sender sends while its messages in flight fit the window, and one
// message of any size when nothing is in flight.  Control messages
// (names.h) are not counted: they are few (the link layer bounds them),
// and the throttle's acks must pass a full window.  Since a sender keeps
// to its credit, the reader of a shared connection never has to stop
// reading for one slow receiver, which would stall every other link on
// the connection.  A peer that overruns its credit is broken: its
// connection closes.  A CREDIT smaller than the last one is stale (two
// threads of the receiver reported out of order) and ignored.
//
// Sending.  A message up to TW_TCP_FRAME_MAX bytes is one DATA frame,
// copied into the connection's ring (kept there for a resume), so tw_send
// returns when the buffer may be reused.  A longer one is announced
// (STRIPED) and sent in CHUNK frames of at most TW_TCP_FRAME_MAX bytes,
// TW_OPT_CHUNK_SIZE bytes at a time per connection, round robin over the
// peer's connections: no frame holds a connection for long, so heartbeats
// and credit pass between them, and an abort stops the message between
// two chunks (CANCEL tells the receiver to drop what it has).  Chunks are
// lent to the ring rather than copied (tcp_writer.c): tw_send returns
// once the peer confirmed them, or once they were copied after all.  A
// message larger than the peer's largest is TW_ETOOBIG here, before
// anything goes out.
//
// Waiting for delivery.  Frames carry sequence numbers and cumulative acks
// per connection; a channel remembers the main connection's number of its
// last message and waits until the peer acknowledges it (the peer holds
// acks back while a longer message is incomplete).  A peer's UNBIND
// carries its final ack, so that messages it handled before its link went
// count as delivered, and later ones do not.

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
// Namespace entries this party's mailbox keeps (core/mailbox.h): bounded
// by the child links closed or aborted on one side only, which no sane
// party has this many of; a peer that pushes beyond it is broken.
#define TCP_NS_ENTRIES_MAX 65536

static bool flag(const _Atomic int *p)
{
	return atomic_load_explicit(p, memory_order_acquire) != 0;
}

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

static tcp_conn *chan_main(tcp_chan *mc)
{
	return tw__tcp_peer_main(mc->peer);
}

// Sends a control frame of mc on the main connection of peer p: never
// waits.
static int send_ctl_on(tcp_peer *p, tcp_chan *mc, uint8_t type,
    const char *key, const void *payload, size_t len)
{
	struct iovec v = { (void *)payload, len };
	return tw__tcp_conn_send(tw__tcp_peer_main(p), type, mc->my_slot, key,
	    &v, len > 0 ? 1 : 0, TCP_TX_NOWAIT, 0, NULL, NULL);
}

// The same on mc's peer; only for a channel that is ready (its peer no
// longer changes).
static int send_ctl(tcp_chan *mc, uint8_t type, const char *key,
    const void *payload, size_t len)
{
	return send_ctl_on(mc->peer, mc, type, key, payload, len);
}

// mc's peer, referenced, while mc is bound to one, or NULL: a dialing
// channel whose peer fails before it answered goes back to no peer.
static tcp_peer *peer_get(tcp_chan *mc)
{
	pthread_mutex_lock(&mc->mtx);
	tcp_peer *p = atomic_load(&mc->state) != CH_IDLE ? mc->peer : NULL;
	if (p != NULL)
		tw__tcp_peer_ref(p);
	pthread_mutex_unlock(&mc->mtx);
	return p;
}

// The peer's link is gone (`ack`: its last acknowledgement): receives end
// once what was delivered is drained, sends fail.
static void peer_gone(tcp_chan *mc, uint64_t ack)
{
	int zero = 0;
	if (atomic_load(&mc->peer_gone) == 0)
		atomic_store(&mc->gone_ack, ack);
	(void)atomic_compare_exchange_strong(&mc->peer_gone, &zero, 1);
	tw_mailbox_close_from(mc->ep->mb, mc->peer_rank);
	wake(mc);
}

void tw__tcp_chan_peer_failed(tcp_chan *mc, tcp_peer *p)
{
	// A dialing channel whose OPEN was not answered yet has nothing of
	// the peer's link: it goes back to no peer, and its creation dials
	// again until the connect timeout (the peer's process may be one
	// that restarts, or that creates the link later).
	pthread_mutex_lock(&mc->mtx);
	bool reset = mc->dialer && atomic_load(&mc->state) == CH_OPENING
	    && mc->peer == p;
	if (reset) {
		// Unbound under mc's lock, as it was bound: its slot number
		// is the new peer's once it dials again.
		tw__tcp_peer_unbind(p, mc);
		atomic_store(&mc->state, CH_IDLE);
		mc->peer = NULL;
		pthread_cond_broadcast(&mc->cv);
	}
	pthread_mutex_unlock(&mc->mtx);
	if (reset) {
		tw__tcp_peer_unref(p); // the channel's
		return;
	}
	// p, not mc->peer: a channel is bound to p (and p may fail) just
	// before it stores p.
	peer_gone(mc, tw__tcp_conn_peer_ack(tw__tcp_peer_main(p)));
}

// --- OPEN --------------------------------------------------------------------------

// Our proof of the link's secret to peer p, zeros without one.
static int open_proof(tcp_chan *mc, tcp_peer *p, unsigned char *mac)
{
	tcp_ep *ep = mc->ep;
	memset(mac, 0, TW_TCP_MAC_LEN);
	if (ep->secret == NULL)
		return TW_OK;
	tcp_node *n = tw__tcp_peer_node(p);
	return tw__tcp_auth_proof(ep->secret, ep->secret_len,
	    tw__tcp_peer_peer_nonce(p), tw__tcp_peer_my_nonce(p),
	    tw__tcp_node_instance(n), ep->self_rank, ep->link_id,
	    strlen(ep->link_id), mac);
}

static int open_check(tcp_chan *mc, tcp_peer *p, const tw__tcp_open *o)
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
		    tw__tcp_peer_my_nonce(p), tw__tcp_peer_peer_nonce(p),
		    tw__tcp_peer_instance(p), o->rank, ep->link_id,
		    strlen(ep->link_id), o->proof);
	if (status == TW_OK
	    && (status = tw__tcp_tls_check(mc->ep, mc->peer_rank, p))
	        != TW_OK) {
		atomic_store(&mc->auth_seen, 1); // logged
		return status;
	}
	if (status == TW_EAUTH) {
		// Whoever sent it holds some link's secret, not this one's:
		// it loses its connection, and the link waits for the real
		// peer (reporting TW_EAUTH if none comes).
		LOGC(mc, TW_LOG_WARN,
		    "%s (%s) failed authentication for the link (%s)",
		    mc->peer_id, tw__tcp_peer_who(p), tw_err_name(TW_EAUTH));
		atomic_store(&mc->auth_seen, 1);
	}
	return status;
}

// Sends our OPEN for mc on its peer.  Takes no lock of anybody's: a
// connection that fails reports it later, on the I/O thread.
static int send_open(tcp_chan *mc, tcp_peer *p)
{
	tcp_ep *ep = mc->ep;
	tw__tcp_open o = { .rank = ep->self_rank,
		.size = ep->size,
		.window = ep->recv_buffer,
		.max_msg = ep->max_msg };
	int status = open_proof(mc, p, o.proof);
	if (status != TW_OK)
		return status;
	unsigned char buf[TW_TCP_OPEN_LEN];
	tw__tcp_open_encode(buf, &o);
	struct iovec v = { buf, sizeof(buf) };
	return tw__tcp_conn_send(tw__tcp_peer_main(p), TW_TCP_F_OPEN,
	    mc->my_slot, ep->link_id, &v, 1, TCP_TX_NOWAIT, 0, NULL, NULL);
}

// Makes mc ready with the peer's window.  Broadcast on cv.  mc->mtx held.
static void ready(tcp_chan *mc, uint32_t peer_slot, const tw__tcp_open *o)
{
	mc->peer_slot = peer_slot;
	mc->peer_window = o->window;
	mc->peer_max_msg = o->max_msg;
	atomic_store(&mc->state, CH_READY);
	pthread_cond_broadcast(&mc->cv);
}

int tw__tcp_chan_on_open(
    tcp_peer *p, tcp_chan *mc, uint32_t peer_slot, const tw__tcp_open *o)
{
	int status = open_check(mc, p, o);
	if (status != TW_OK)
		return status;
	pthread_mutex_lock(&mc->mtx);
	int state = atomic_load(&mc->state);
	if (state == CH_OPENING && mc->peer == p) {
		// The answer to our OPEN.
		status = tw__tcp_peer_map(p, mc, peer_slot);
		if (status == TW_OK)
			ready(mc, peer_slot, o);
		pthread_mutex_unlock(&mc->mtx);
		return status;
	}
	if (state != CH_IDLE || mc->dialer
	    || tw__chanbase_aborted(&mc->base)) {
		pthread_mutex_unlock(&mc->mtx);
		LOGC(mc, TW_LOG_WARN, "%s opens the link a second time (%s)",
		    tw__tcp_peer_who(p), tw_err_name(TW_EPROTO));
		return TW_EPROTO;
	}
	// The peer opens the link: bind, and answer.  Bound even on
	// failure: the channel's destroy unbinds and drops the reference.
	status = tw__tcp_peer_bind(p, mc);
	if (status == TW_OK) {
		tw__tcp_peer_ref(p);
		mc->peer = p;
		atomic_store(&mc->state, CH_OPENING);
		status = tw__tcp_peer_map(p, mc, peer_slot);
	}
	pthread_mutex_unlock(&mc->mtx);
	// Our OPEN goes out before the channel is ready, so that nothing of
	// the link can reach the peer before the slot it names.  No lock is
	// held: a connection that fails reports it later, on the I/O thread.
	if (status == TW_OK)
		status = send_open(mc, p);
	if (status == TW_OK) {
		pthread_mutex_lock(&mc->mtx);
		ready(mc, peer_slot, o);
		pthread_mutex_unlock(&mc->mtx);
	}
	return status;
}

// --- credit --------------------------------------------------------------------------

void (*_Atomic tw__tcp_credit_req_hook)(void);

// Whether a CREDIT is due; returns the count to send (0: nothing), which
// the caller sends after unlocking.  `asked`: for a CREDIT_REQ.  mc->mtx
// held.
static uint64_t credit_due_asked(tcp_chan *mc, bool asked)
{
	uint64_t half = mc->ep->recv_buffer / 2;
	struct tcp_taken *tk = &mc->ep->taken[mc->peer_rank];
	uint64_t taken = atomic_load(&tk->taken) + mc->dropped;
	if (asked) {
		void (*hook)(void) = atomic_load_explicit(
		    &tw__tcp_credit_req_hook, memory_order_relaxed);
		if (hook != NULL)
			hook();
	}
	uint64_t v = 0;
	if (atomic_load(&mc->state) == CH_READY && !flag(&mc->unbound)
	    && taken != mc->credit_sent
	    && (taken - mc->credit_sent >= half || mc->peer_starved)) {
		mc->credit_sent = taken;
		mc->peer_starved = false;
		v = taken;
	}
	// Below this count a take cannot make credit due (on_taken).
	uint64_t due = mc->peer_starved ? 0 : mc->credit_sent + half;
	atomic_store(&tk->due, due > mc->dropped ? due - mc->dropped : 0);
	return v;
}

static uint64_t credit_due(tcp_chan *mc)
{
	return credit_due_asked(mc, false);
}

static void send_credit(tcp_chan *mc, uint64_t v)
{
	unsigned char buf[TW_TCP_CREDIT_LEN];
	tw__tcp_credit_encode(buf, v);
	(void)send_ctl(mc, TW_TCP_F_CREDIT, NULL, buf, sizeof(buf));
}

// The mailbox's report: the application took messages of peer `from`.
static void on_taken(void *arg, uint32_t from, uint64_t taken)
{
	tcp_ep *ep = arg;
	if (from >= ep->size)
		return;
	// Most takes grant nothing: they leave the count for credit_due and
	// go, with one locked instruction rather than two mutexes and a
	// reference.  The count is stored, then `due` read (seq_cst), and a
	// CREDIT_REQ stores `due` = 0, then reads the count: one of the two
	// sees the other, so a starved peer is never left waiting.
	struct tcp_taken *tk = &ep->taken[from];
	uint64_t cur = atomic_load_explicit(&tk->taken, memory_order_relaxed);
	while (taken > cur
	    && !atomic_compare_exchange_weak(&tk->taken, &cur, taken))
		;
	if (taken < atomic_load(&tk->due))
		return;
	pthread_mutex_lock(&ep->mtx);
	tcp_chan *mc = ep->chans[from];
	if (mc != NULL)
		tw__tcp_chan_ref(mc);
	pthread_mutex_unlock(&ep->mtx);
	if (mc == NULL)
		return;
	pthread_mutex_lock(&mc->mtx);
	uint64_t v = credit_due(mc);
	pthread_mutex_unlock(&mc->mtx);
	if (v > 0)
		send_credit(mc, v);
	tw__tcp_chan_unref(mc);
}

void tw__tcp_chan_dropped(tcp_chan *mc, uint64_t len)
{
	pthread_mutex_lock(&mc->mtx);
	mc->dropped += tw__msg_cost((size_t)len);
	uint64_t v = credit_due(mc);
	pthread_mutex_unlock(&mc->mtx);
	if (v > 0)
		send_credit(mc, v);
}

// --- frames from the peer ---------------------------------------------------------------

// What a push into the mailbox means for the connection: TW_OK, or an
// error that fails it (logged).
static int deliver_status(tcp_chan *mc, int status)
{
	switch (status) {
	case TW_OK:
		return TW_OK;
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
		return TW_OK; // closed or aborted here: dropped
	}
}

// Never waits: within its credit the peer's data always fits.  A message
// of a namespace closed or aborted here is refused (and counted as taken,
// so its credit comes back).
static uint64_t deliver_limit(tcp_chan *mc, const char *key)
{
	return tw__key_is_ctl(key) ? UINT64_MAX : mc->ep->recv_buffer;
}

int tw__tcp_chan_deliver(tcp_chan *mc, const char *key, void *data, size_t len)
{
	int status = tw__mailbox_push_owned(mc->ep->mb, mc->peer_rank, key,
	    data, len, deliver_limit(mc, key), 0, NULL);
	if (status != TW_OK)
		free(data);
	return deliver_status(mc, status);
}

int tw__tcp_chan_deliver_copy(
    tcp_chan *mc, const char *key, const void *src, size_t len)
{
	return deliver_status(mc,
	    tw__mailbox_push_copy(mc->ep->mb, mc->peer_rank, key, src, len,
	        deliver_limit(mc, key), 0, NULL));
}

int tw__tcp_chan_deliver_run(tcp_chan *mc, tw__mailbox_run *run,
    const char *key, const void *src, size_t len)
{
	// A push ignores the limit for a control key: no need to tell.
	return deliver_status(mc,
	    tw__mailbox_run_push(run, mc->ep->mb, mc->peer_rank, key, src, len,
	        mc->ep->recv_buffer));
}

// The peer closed or aborted namespace `ns` (core/mailbox.h keeps what
// matters of it).  A peer that keeps doing so for namespaces that mean
// nothing here is broken: the entries are bounded.
static int peer_left_ns(tcp_chan *mc, uint8_t type, const char *ns)
{
	tw_mailbox *mb = mc->ep->mb;
	if (tw__mailbox_ns_entries(mb) >= TCP_NS_ENTRIES_MAX) {
		LOGC(mc, TW_LOG_ERROR,
		    "%s closed more namespaces than %d that this side keeps "
		    "(%s)",
		    mc->peer_id, TCP_NS_ENTRIES_MAX, tw_err_name(TW_EPROTO));
		return TW_EPROTO;
	}
	int status = type == TW_TCP_F_ABORT_NS
	    ? tw__mailbox_peer_abort_ns(mb, mc->peer_rank, ns)
	    : tw__mailbox_close_ns(mb, mc->peer_rank, ns);
	return status == TW_ENOMEM ? TW_ENOMEM : TW_OK;
}

int tw__tcp_chan_on_frame(
    tcp_chan *mc, const tw__tcp_hdr *h, const unsigned char *payload)
{
	switch (h->type) {
	case TW_TCP_F_CLOSE_NS:
	case TW_TCP_F_ABORT_NS:
		return peer_left_ns(mc, h->type, h->key);
	case TW_TCP_F_UNBIND:
		tw__tcp_peer_unmap(mc->peer, h->slot);
		peer_gone(mc, h->ack);
		return TW_OK;
	case TW_TCP_F_CREDIT: {
		uint64_t v;
		if (tw__tcp_credit_decode(payload, TW_TCP_CREDIT_LEN, &v)
		    != TW_OK)
			return TW_EPROTO;
		pthread_mutex_lock(&mc->mtx);
		bool ok = v <= atomic_load(&mc->tx_cost);
		if (ok && v > atomic_load(&mc->tx_credit)) {
			atomic_store(&mc->tx_credit, v);
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
		// Before credit_due reads the count (see on_taken).
		atomic_store(&mc->ep->taken[mc->peer_rank].due, 0);
		uint64_t v = credit_due_asked(mc, true);
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

static int tx_status(tcp_chan *mc, const _Atomic int *cancel)
{
	if (tw__chanbase_aborted(&mc->base) || tw__chanbase_cancelled(cancel))
		return TW_ECLOSED;
	if (flag(&mc->peer_gone) || tw__tcp_peer_failed(mc->peer))
		return TW_EPEER;
	return TW_OK;
}

// Whether a message of cost `cost` may go with `out` sent and not yet
// taken: one always may when nothing is out, so that a message larger than
// the window still goes.
static bool credit_fits(const tcp_chan *mc, uint64_t out, uint64_t cost)
{
	return out == 0 || out + cost <= mc->peer_window;
}

// Reserves credit for a message of cost `cost`, waiting for the peer's
// CREDIT until `deadline`.
static int reserve(
    tcp_chan *mc, uint64_t cost, int64_t *deadline, const _Atomic int *cancel)
{
	// With credit at hand, as for most messages: one compare-and-swap, no
	// lock.  The credit only grows, so what fits with the value read
	// fits.
	uint64_t credit
	    = atomic_load_explicit(&mc->tx_credit, memory_order_acquire);
	uint64_t have
	    = atomic_load_explicit(&mc->tx_cost, memory_order_relaxed);
	for (;;) {
		if (!credit_fits(mc, have - credit, cost))
			break;
		if (atomic_compare_exchange_weak_explicit(&mc->tx_cost, &have,
		        have + cost, memory_order_relaxed,
		        memory_order_relaxed))
			return TW_OK;
	}
	int status = TW_OK;
	bool sleeper = false;
	pthread_mutex_lock(&mc->mtx);
	for (;;) {
		uint64_t out
		    = atomic_load(&mc->tx_cost) - atomic_load(&mc->tx_credit);
		if (credit_fits(mc, out, cost))
			break;
		if ((status = tx_status(mc, cancel)) != TW_OK)
			break;
		*deadline = tw__deadline_fix(*deadline);
		int64_t now = tw__now_ns();
		if (now >= *deadline) {
			status = TW_ETIMEDOUT;
			break;
		}
		if (!mc->credit_asked) {
			mc->credit_asked = true;
			pthread_mutex_unlock(&mc->mtx);
			(void)send_ctl(mc, TW_TCP_F_CREDIT_REQ, NULL, NULL, 0);
			pthread_mutex_lock(&mc->mtx);
			continue;
		}
		if (!sleeper) {
			// The CREDIT comes by reading the connection.
			sleeper = true;
			pthread_mutex_unlock(&mc->mtx);
			tw__tcp_conn_sleep_begin(chan_main(mc));
			pthread_mutex_lock(&mc->mtx);
			continue;
		}
		int64_t until = now + TCP_SLICE_NS;
		(void)tw__cond_wait_until(
		    &mc->cv, &mc->mtx, until < *deadline ? until : *deadline);
	}
	if (status == TW_OK)
		atomic_fetch_add(&mc->tx_cost, cost);
	pthread_mutex_unlock(&mc->mtx);
	if (sleeper)
		tw__tcp_conn_sleep_end(chan_main(mc));
	return status;
}

// Gives back credit reserved for a message that never went out.
static void unreserve(tcp_chan *mc, uint64_t cost)
{
	pthread_mutex_lock(&mc->mtx);
	atomic_fetch_sub(&mc->tx_cost, cost);
	pthread_cond_broadcast(&mc->cv);
	pthread_mutex_unlock(&mc->mtx);
}

// The connections that a long message's chunks were lent to, and the
// number of the last chunk lent to each.
typedef struct lent_conns {
	tcp_conn *c[TCP_STRIPES_MAX];
	uint64_t seq[TCP_STRIPES_MAX];
	unsigned n;
} lent_conns;

static void lent_note(lent_conns *l, tcp_conn *c, uint64_t seq)
{
	unsigned i = 0;
	while (i < l->n && l->c[i] != c)
		i++;
	if (i == l->n)
		l->c[l->n++] = c;
	l->seq[i] = seq;
}

static void reclaim_all(lent_conns *l, const void *lender)
{
	for (unsigned i = 0; l->n > 1 && i < l->n; i++)
		tw__tcp_conn_ask(l->c[i], l->seq[i]);
	for (unsigned i = 0; i < l->n; i++)
		tw__tcp_conn_reclaim(l->c[i], lender, l->seq[i]);
	l->n = 0;
}

// A message longer than a frame: announced on the main connection (where
// its order is kept), its bytes in CHUNK frames of at most
// TW_TCP_FRAME_MAX bytes, TW_OPT_CHUNK_SIZE bytes per connection in turn,
// each lent from the caller's memory.  Once announced the message is
// finished unless the link is aborted between two frames (then CANCEL) or
// the connection fails (then the peer fails with it).  *seq: the
// announcement's number.  TW_OK; before the announcement went out, the
// codes of tw__tcp_conn_send; after it, TW_ECLOSED or TW_EPEER.
static int send_long(tcp_chan *mc, const char *key, const void *buf,
    size_t len, int64_t deadline, const _Atomic int *cancel, uint64_t *seq)
{
	tcp_peer *p = mc->peer;
	tw__tcp_chunk ck = { .id = tw__tcp_peer_next_id(p), .total = len };
	unsigned char ann[TW_TCP_STRIPED_LEN];
	tw__tcp_striped_encode(ann, &ck);
	struct iovec av = { ann, sizeof(ann) };
	uint64_t chunk = mc->ep->chunk;
	// The first chunk, which always goes on the main connection, takes
	// the announcement along in its writev (or a CANCEL does).
	int status = tw__tcp_conn_send(tw__tcp_peer_main(p), TW_TCP_F_STRIPED,
	    mc->my_slot, key, &av, 1, TCP_TX_MORE, deadline, cancel, seq);
	if (status != TW_OK)
		return status;
	const unsigned char *bytes = buf;
	unsigned char prefix[TW_TCP_CHUNK_PREFIX];
	// The chunks are written from buf (lent, tcp_writer.c): before we
	// return, every connection that took some gives it back.
	lent_conns lent = { .n = 0 };
	for (uint64_t i = 0; ck.offset < len; i++) {
		tcp_conn *c = tw__tcp_peer_pick(p, i);
		uint64_t end
		    = ck.offset + chunk < len ? ck.offset + chunk : len;
		while (ck.offset < end) {
			if (tw__chanbase_aborted(&mc->base)
			    || tw__chanbase_cancelled(cancel)) {
				unsigned char v[TW_TCP_CANCEL_LEN];
				tw__tcp_cancel_encode(v, ck.id);
				(void)send_ctl(
				    mc, TW_TCP_F_CANCEL, NULL, v, sizeof(v));
				reclaim_all(&lent, &ck);
				return TW_ECLOSED;
			}
			size_t n = (size_t)(end - ck.offset);
			if (n > TW_TCP_FRAME_MAX)
				n = TW_TCP_FRAME_MAX;
			tw__tcp_chunk_encode(prefix, &ck);
			struct iovec v[2] = { { prefix, sizeof(prefix) },
				{ (void *)(bytes + ck.offset), n } };
			// No deadline once announced: only an abort
			// (checked between frames) or a failure stops it.
			bool lent_now = false;
			uint64_t cseq = 0;
			status = tw__tcp_conn_send_lent(c, TW_TCP_F_CHUNK,
			    mc->my_slot, NULL, v, 2, &ck, &lent_now, &cseq);
			if (lent_now)
				lent_note(&lent, c, cseq);
			if (status != TW_OK) {
				reclaim_all(&lent, &ck);
				// The peer would wait for the rest for ever.
				tw__tcp_peer_fail(p, TW_EPEER,
				    status == TW_EPEER
				        ? NULL
				        : "a chunk could not be sent");
				return TW_EPEER;
			}
			ck.offset += n;
			// What comes back meanwhile (acks, credit) is read
			// here, not by a wake-up of the I/O thread each.
			tw__tcp_conn_read_between(c);
		}
	}
	reclaim_all(&lent, &ck);
	return TW_OK;
}

static int tcp_xsend(tw_channel *c, const char *key, const void *buf,
    size_t len, int flags, int64_t deadline, const _Atomic int *cancel)
{
	(void)flags;
	tcp_chan *mc = c->impl;
	if (tw__chanbase_aborted(&mc->base))
		return TW_ECLOSED;
	if (atomic_load(&mc->state) != CH_READY)
		return TW_EPEER;
	size_t klen = strlen(key);
	if (klen == 0 || klen >= TW_KEY_MAX || (buf == NULL && len > 0))
		return TW_EINVAL;
	if (flag(&mc->peer_gone)
	    || tw__mailbox_peer_left(mc->ep->mb, mc->peer_rank, key))
		return TW_EPEER;
	if (len > mc->peer_max_msg) {
		LOGC(mc, TW_LOG_DEBUG,
		    "a message of %zu bytes is more than %s accepts (%llu)",
		    len, mc->peer_id, (unsigned long long)mc->peer_max_msg);
		return TW_ETOOBIG;
	}
	bool data = !tw__key_is_ctl(key);
	uint64_t cost = data ? tw__msg_cost(len) : 0;
	// The deadline may be lazy (tw__deadline_lazy_ms): fixed by the first
	// wait for credit or for room in the connection's ring, which most
	// small messages never have.
	int status = data ? reserve(mc, cost, &deadline, cancel) : TW_OK;
	if (status != TW_OK)
		return status;
	uint64_t seq = 0;
	bool announced = len > TW_TCP_FRAME_MAX;
	if (announced) {
		deadline = tw__deadline_fix(deadline);
		status = send_long(mc, key, buf, len, deadline, cancel, &seq);
	} else if (data) {
		// Only data counts for tw_link_wait_pending and close: a
		// control message (a throttle window's ack) to a peer that
		// closed meanwhile is moot, not a lost message.
		struct iovec v = { (void *)buf, len };
		status = tw__tcp_conn_send_mark(chan_main(mc), TW_TCP_F_DATA,
		    mc->my_slot, key, klen, &v, len > 0 ? 1 : 0, deadline,
		    cancel, &mc->last_seq);
	} else {
		struct iovec v = { (void *)buf, len };
		status = tw__tcp_conn_send(chan_main(mc), TW_TCP_F_DATA,
		    mc->my_slot, key, &v, len > 0 ? 1 : 0, 0, deadline, cancel,
		    &seq);
	}
	if (status == TW_OK) {
		// A long message's announcement raises the mark that
		// tw__tcp_conn_send_mark keeps (tcp_conn.h says why both
		// may).
		if (announced && data) {
			uint64_t prev = atomic_load(&mc->last_seq);
			while (prev < seq
			    && !atomic_compare_exchange_weak(
			        &mc->last_seq, &prev, seq))
				;
		}
		return TW_OK;
	}
	// Never sent, or given up with CANCEL: the credit comes back (the
	// peer counts a cancelled message as taken).
	if (data && status != TW_EPEER && seq == 0)
		unreserve(mc, cost);
	return tw__chanbase_send_status(&mc->base, status, cancel);
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
	// Ready, its peer no longer changes.
	if (atomic_load(&mc->state) != CH_READY || flag(&mc->peer_gone))
		return;
	(void)send_ctl(mc, type, ns, NULL, 0);
}

// Tells the peer that our side of the link is gone, once.
static void tx_unbind(tcp_chan *mc)
{
	tcp_peer *p = peer_get(mc);
	if (p == NULL)
		return;
	if (atomic_exchange(&mc->unbound, 1) == 0)
		(void)send_ctl_on(p, mc, TW_TCP_F_UNBIND, NULL, NULL, 0);
	tw__tcp_peer_unref(p);
}

// --- the other channel ops ----------------------------------------------------------

static int tcp_wait_until(
    tw_channel *c, int64_t deadline, const _Atomic int *cancel)
{
	tcp_chan *mc = c->impl;
	if (tw__chanbase_aborted(&mc->base))
		return TW_ECLOSED;
	if (atomic_load(&mc->state) != CH_READY)
		return TW_OK;
	uint64_t target = atomic_load(&mc->last_seq);
	int status = TW_OK;
	if (target > 0 && !flag(&mc->peer_gone))
		status = tw__tcp_conn_wait_ack(
		    chan_main(mc), target, deadline, cancel);
	// Acknowledged after the peer's link went: dropped there.
	if (flag(&mc->peer_gone) && atomic_load(&mc->gone_ack) < target)
		status = TW_EPEER;
	if (status != TW_OK)
		LOGC(mc, TW_LOG_DEBUG,
		    "delivery to %s unconfirmed: %s (last frame %llu, acked "
		    "%llu, when gone %llu)",
		    mc->peer_id, tw_err_name(status),
		    (unsigned long long)target,
		    (unsigned long long)tw__tcp_conn_peer_ack(chan_main(mc)),
		    (unsigned long long)atomic_load(&mc->gone_ack));
	if (tw__chanbase_aborted(&mc->base))
		status = TW_ECLOSED;
	return status;
}

static int tcp_wait_pending(tw_channel *c)
{
	tcp_chan *mc = c->impl;
	return tcp_wait_until(c, TW_FOREVER, &mc->base.aborted);
}

static void tcp_abort(tw_channel *c)
{
	tcp_chan *mc = c->impl;
	tw__chanbase_set_aborted(&mc->base);
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
	tcp_chan *mc = c->impl;
	// What the peer sends there until it learns of the close is dropped,
	// and its cost comes back as credit (core/mailbox.h).
	tw__mailbox_drop_ns(mc->ep->mb, mc->peer_rank, ns);
	tx_ns(mc, TW_TCP_F_CLOSE_NS, ns);
}

// --- receiving ---------------------------------------------------------------------

typedef struct wanted {
	const tw__rxbox *rx;
	const char *key;
	const tcp_post *post; // or NULL
} wanted;

static bool arrived(void *arg)
{
	wanted *w = arg;
	return (w->post != NULL
	           && atomic_load_explicit(
	               &w->post->done, memory_order_acquire))
	    || tw__rxbox_ready(w->rx, w->key);
}

// Polls the connection briefly when the message is not there yet.
// A lazy deadline (tw__deadline_lazy_ms) is fixed here when the message
// has not arrived, and otherwise by the mailbox if it must wait after all.
// With a post, a long message may arrive in its buffer (post->done).
static void spin(
    tcp_chan *mc, const char *key, int64_t *deadline, tcp_post *post)
{
	wanted w = { &mc->base.rx, key, post };
	if (atomic_load(&mc->state) != CH_READY || arrived(&w))
		return;
	*deadline = tw__deadline_fix(*deadline);
	(void)tw__tcp_conn_poll(chan_main(mc), TCP_SPIN_NS, *deadline, arrived,
	    &w, post, post != NULL && post->cap > TW_TCP_FRAME_MAX);
}

// A message taken out of the mailbox: if the I/O thread put it there, it
// leaves the connection to this receiver after its next read
// (tw__tcp_conn_note_taken).
static void note_taken(tcp_chan *mc)
{
	if (atomic_load(&mc->state) == CH_READY)
		tw__tcp_conn_note_taken(chan_main(mc));
}

// A receive about to sleep in the mailbox for a message still on its way
// keeps the connection watched meanwhile (tw__tcp_conn_sleep_begin):
// returns the connection to pass to tw__tcp_conn_sleep_end, or NULL.
static tcp_conn *sleep_begin(tcp_chan *mc, const char *key)
{
	if (atomic_load(&mc->state) != CH_READY
	    || tw__rxbox_ready(&mc->base.rx, key))
		return NULL;
	tcp_conn *conn = chan_main(mc);
	tw__tcp_conn_sleep_begin(conn);
	return conn;
}

static void sleep_end(tcp_conn *conn)
{
	if (conn != NULL)
		tw__tcp_conn_sleep_end(conn);
}

static int tcp_recv_until(
    tw_channel *c, const char *key, int64_t deadline, tw_buf *out)
{
	tcp_chan *mc = c->impl;
	spin(mc, key, &deadline, NULL);
	tcp_conn *conn = sleep_begin(mc, key);
	int status = tw__rxbox_recv_until(c, key, deadline, out);
	sleep_end(conn);
	if (status == TW_OK)
		note_taken(mc);
	return status;
}

// A probe looks at the mailbox only; when it finds nothing there while a
// receive left the socket parked, the I/O thread takes the socket back
// now, so that a probing application sees messages as soon as before.
static int tcp_probe(tw_channel *c, const char *key, size_t *len)
{
	tcp_chan *mc = c->impl;
	int status = tw__rxbox_probe(c, key, len);
	if (status == TW_EAGAIN && atomic_load(&mc->state) == CH_READY)
		tw__tcp_conn_unpark(chan_main(mc));
	return status;
}

static int tcp_recv_into(tw_channel *c, const char *key, int64_t deadline,
    void *buf, size_t cap, size_t *len)
{
	tcp_chan *mc = c->impl;
	int status = tw__rxbox_try_into(&mc->base.rx, key, buf, cap, len);
	if (status == TW_OK)
		note_taken(mc);
	if (status != TW_EAGAIN)
		return status;
	tcp_post post = { .mc = mc, .key = key, .buf = buf, .cap = cap };
	spin(mc, key, &deadline, &post);
	if (atomic_load_explicit(&post.done, memory_order_acquire)) {
		*len = post.len;
		return TW_OK;
	}
	tcp_conn *conn = sleep_begin(mc, key);
	status = tw__rxbox_recv_into(c, key, deadline, buf, cap, len);
	sleep_end(conn);
	if (status == TW_OK)
		note_taken(mc);
	return status;
}

// --- the handshake ------------------------------------------------------------------

// Why a channel that is not ready will not be, or TW_OK to keep waiting.
// mc->mtx held.
static int not_ready(tcp_chan *mc)
{
	if (tw__chanbase_aborted(&mc->base))
		return TW_ECLOSED;
	if (flag(&mc->auth_failed))
		return TW_EAUTH;
	if (flag(&mc->peer_gone))
		return TW_EPEER;
	return TW_OK;
}

// Waits until mc is ready, or why it will not be.  mc->mtx held.  At the
// deadline, a peer that only ever failed to prove the secret is reported
// as such.
static int wait_ready(tcp_chan *mc, int64_t deadline)
{
	for (;;) {
		int state = atomic_load(&mc->state);
		if (state == CH_READY)
			return TW_OK;
		if (state == CH_IDLE && mc->dialer)
			return TW_EAGAIN; // its peer failed: dial again
		int status = not_ready(mc);
		if (status != TW_OK)
			return status;
		if (tw__cond_wait_until(&mc->cv, &mc->mtx, deadline)
		        == ETIMEDOUT
		    && atomic_load(&mc->state) != CH_READY)
			return flag(&mc->auth_seen) ? TW_EAUTH : TW_ETIMEDOUT;
	}
}

// Dials the peer (or finds the connection another link made) and sends
// our OPEN.  TW_OK, TW_EAGAIN (the peer failed meanwhile: again), or why
// creation fails.
static int dial_open(tcp_chan *mc, int64_t deadline)
{
	tcp_ep *ep = mc->ep;
	tcp_peer *p = NULL;
	int status = tw__tcp_node_dial(atomic_load(&ep->node), mc->peer_addr,
	    ep, mc->peer_rank, deadline, &mc->base.aborted, &p);
	if (status != TW_OK)
		return status;
	bool send = false;
	pthread_mutex_lock(&mc->mtx);
	if (atomic_load(&mc->state) == CH_IDLE) {
		status = tw__tcp_peer_bind(p, mc);
		if (status == TW_OK) {
			tw__tcp_peer_ref(p); // the channel's
			mc->peer = p;
			atomic_store(&mc->state, CH_OPENING);
			send = true;
		} else if (status == TW_EPEER) {
			status
			    = TW_EAGAIN; // it failed since the dial found it
		}
	}
	pthread_mutex_unlock(&mc->mtx);
	// A connection that failed meanwhile resets the channel (or reports
	// its peer gone) on its own; waiting for the answer then tells.
	if (send && (status = send_open(mc, p)) == TW_EPEER)
		status = TW_OK;
	tw__tcp_peer_unref(p);
	return status;
}

static int tcp_test_send(tw_channel *c, int64_t timeout_ms)
{
	tcp_chan *mc = c->impl;
	int64_t deadline = tw__deadline_ms(timeout_ms);
	int status = TW_EAGAIN;
	while (status == TW_EAGAIN) {
		if (mc->dialer && atomic_load(&mc->state) == CH_IDLE)
			status = dial_open(mc, deadline);
		else
			status = TW_OK;
		if (status == TW_OK) {
			pthread_mutex_lock(&mc->mtx);
			status = wait_ready(mc, deadline);
			pthread_mutex_unlock(&mc->mtx);
		}
		if (status == TW_EAGAIN && tw__now_ns() >= deadline)
			status = TW_ETIMEDOUT;
	}
	if (status != TW_OK)
		return status;
	return tw__chanbase_send_hello(c, tcp_xsend, deadline);
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
	for (size_t i = 0; ep->ids != NULL && i < ep->size; i++)
		free(ep->ids[i]);
	free(ep->ids);
	for (int i = 0; i < 3; i++)
		free(ep->tls[i]);
	free(ep->chans);
	free(ep->taken);
	pthread_mutex_destroy(&ep->mtx);
	free(ep);
}

void tw__tcp_ep_ref(tcp_ep *ep)
{
	atomic_fetch_add_explicit(&ep->refs, 1, memory_order_relaxed);
}

void tw__tcp_ep_unref(tcp_ep *ep)
{
	if (atomic_fetch_sub_explicit(&ep->refs, 1, memory_order_acq_rel) == 1)
		ep_free(ep);
}

static void chan_free(tcp_chan *mc)
{
	tw__tcp_sx_chan_free(mc);
	if (mc->peer != NULL)
		tw__tcp_peer_unref(mc->peer);
	pthread_cond_destroy(&mc->cv);
	pthread_mutex_destroy(&mc->mtx);
	free(mc->peer_id);
	free(mc->peer_addr);
	free(mc);
}

void tw__tcp_chan_ref(tcp_chan *mc)
{
	atomic_fetch_add_explicit(&mc->refs, 1, memory_order_relaxed);
}

void tw__tcp_chan_unref(tcp_chan *mc)
{
	if (atomic_fetch_sub_explicit(&mc->refs, 1, memory_order_acq_rel) != 1)
		return;
	tcp_ep *ep = mc->ep;
	chan_free(mc);
	tw__tcp_ep_unref(ep);
}

static void tcp_destroy(tw_channel *c)
{
	tcp_chan *mc = c->impl;
	tcp_ep *ep = mc->ep;
	// No new OPEN may reach the link once it is closing.
	tw__tcp_node_unlist(ep);
	pthread_mutex_lock(&ep->mtx);
	ep->chans[mc->peer_rank] = NULL;
	bool last = --ep->live_chans == 0;
	pthread_mutex_unlock(&ep->mtx);
	// The UNBIND carries our final ack: the peer learns which of its
	// messages arrived before it learns that we are gone.
	tx_unbind(mc);
	tcp_peer *p = peer_get(mc);
	if (p != NULL) {
		tw__tcp_peer_unbind(p, mc);
		tw__tcp_peer_unref(p);
	}
	// The endpoint outlives its channels; its node reference goes with
	// the last of them, once they let go of their peers (the last link of
	// the node stops it, waiting for its peers to be gone).
	if (last)
		tw__tcp_ep_ref(ep);
	tw__tcp_chan_unref(mc);
	if (last) {
		tw__tcp_node_leave(ep);
		tw__tcp_ep_unref(ep);
	}
}

// The connections to the peer are the node's, shared by every link bound
// to it: each is trimmed (tw__tcp_conn_trim), for all of them.
static size_t tcp_trim(tw_channel *c)
{
	tcp_peer *p = peer_get(c->impl);
	if (p == NULL)
		return 0;
	size_t freed = 0;
	tcp_conn *conn;
	for (unsigned k = 0; (conn = tw__tcp_peer_conn(p, k)) != NULL; k++) {
		freed += tw__tcp_conn_trim(conn);
		tw__tcp_conn_unref(conn);
	}
	tw__tcp_peer_unref(p);
	return freed;
}

static const tw_channel_ops tcp_ops = {
	.send = tcp_send,
	.send_async = NULL,
	.recv = tw__rxbox_recv,
	.test_send = tcp_test_send,
	.test_recv = tw__chanbase_test_recv,
	.wait_pending = tcp_wait_pending,
	.abort = tcp_abort,
	.destroy = tcp_destroy,
	.size = sizeof(tw_channel_ops),
};

static const tw__chan_xops tcp_xops = {
	.size = sizeof(tw__chan_xops),
	.send = tcp_xsend,
	.recv = tcp_recv_until,
	.recv_into = tcp_recv_into,
	.probe = tcp_probe,
	.abort_ns = tcp_abort_ns,
	.close_ns = tcp_close_ns,
	.open_ns = tw__chanbase_open_ns,
	.unreceived_peak = tw__rxbox_peak,
	.ns_entries = tw__rxbox_ns_entries,
	.wait_pending = tcp_wait_until,
	.trim = tcp_trim,
	.lazy_deadline = 1,
};

static tw__chanbase *chan_new(const tw__link_cfg *cfg, void *arg, size_t peer)
{
	tcp_ep *ep = arg;
	tcp_chan *mc = calloc(1, sizeof(*mc));
	if (mc == NULL)
		return NULL;
	pthread_mutex_init(&mc->mtx, NULL);
	tw__cond_init(&mc->cv);
	mc->peer_id = strdup(cfg->parties[peer].id);
	mc->peer_addr = strdup(cfg->parties[peer].addr);
	if (mc->peer_id == NULL || mc->peer_addr == NULL) {
		chan_free(mc);
		return NULL;
	}
	tw__chanbase_init(&mc->base, &tcp_ops, ep->mb, ep->link_id, cfg, peer);
	mc->ep = ep;
	atomic_init(&mc->refs, 1);
	mc->peer_rank = (uint32_t)peer;
	mc->dialer = cfg->dial_rank >= 0
	    ? (size_t)cfg->dial_rank == cfg->self
	    : tw__tcp_dials(
	        cfg->parties[cfg->self].addr, cfg->parties[peer].addr);
	return &mc->base;
}

// Frees a channel that never ran (open failed half way).
static void chan_drop(tw__chanbase *b)
{
	chan_free((tcp_chan *)b);
}

static int tcp_open_link(const tw__link_cfg *cfg, tw_channel **chans)
{
	if (cfg->size < 2)
		return TW_OK; // a link of one party has nobody to talk to
	// Before any thread of ours can touch libcrypto (tcp_auth.h).
	tw__tcp_crypto_init();
	tcp_ep *ep = calloc(1, sizeof(*ep));
	if (ep == NULL)
		return TW_ENOMEM;
	pthread_mutex_init(&ep->mtx, NULL);
	ep->size = (uint32_t)cfg->size;
	ep->self_rank = (uint32_t)cfg->self;
	ep->dial_rank = cfg->dial_rank;
	// This side's closes travel in order with its data, and its credit
	// counts messages by cost (tcp.c, design notes).
	ep->mb = tw__chanbase_mailbox_new();
	ep->link_id = strdup(cfg->link_id);
	ep->chans = calloc(cfg->size, sizeof(*ep->chans));
	ep->taken = calloc(cfg->size, sizeof(*ep->taken));
	ep->addrs = calloc(cfg->size, sizeof(*ep->addrs));
	ep->ids = calloc(cfg->size, sizeof(*ep->ids));
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
	    || ep->taken == NULL || ep->addrs == NULL || ep->ids == NULL
	    || (cfg->secret != NULL && cfg->secret_len > 0
	        && ep->secret == NULL))
		goto err_free;
	for (size_t i = 0; i < cfg->size; i++)
		if ((ep->addrs[i] = strdup(cfg->parties[i].addr)) == NULL
		    || (ep->ids[i] = strdup(cfg->parties[i].id)) == NULL)
			goto err_free;
	for (int i = 0; cfg->tls != NULL && i < 3; i++)
		if ((ep->tls[i] = strdup(cfg->tls[i])) == NULL)
			goto err_free;
	tw__mailbox_on_taken(ep->mb, on_taken, ep);
	if ((status
	        = tw__chanbase_open_all(cfg, ep, chan_new, chan_drop, chans))
	    != TW_OK)
		goto err_free;
	for (size_t i = 0; i < cfg->size; i++) {
		if (i == cfg->self)
			continue;
		ep->chans[i] = chans[i]->impl;
		ep->live_chans++;
		atomic_fetch_add(&ep->refs, 1);
	}
	// Joining the node makes the link reachable: last, once everything
	// an OPEN could need exists.
	status = tw__tcp_node_join(cfg->parties[cfg->self].addr, ep);
	if (status == TW_OK)
		return TW_OK;
	tw__chanbase_free_all(cfg, chan_drop, chans);

err_free:
	ep_free(ep);
	return status;
}

const tw__transport tw__tcp_transport = {
	.scheme = "tcp",
	.addr_check = tcp_addr_check,
	.open = tcp_open_link,
	.ops = &tcp_ops,
	.xops = &tcp_xops,
};
