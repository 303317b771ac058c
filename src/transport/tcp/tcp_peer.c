// Peers of the tcp:// transport: the connections to one peer process and
// the links bound to them.
//
// Design notes.  Two processes share one main connection, whatever the
// number of links between them, plus TW_OPT_STRIPES - 1 extra connections
// (stripes) for bulk data when the link that made it asked for them.  The
// peer object owns them all: it is their owner in the sense of
// tcp_conn.h, so every frame of every one of them comes here, and it
// routes each to the link that the frame's slot names.  Each side numbers
// the links it runs to the other process (its slots); a frame carries its
// sender's slot.
//
// A main connection and its stripes stand and fall together: a message
// longer than a frame may have chunks on all of them.  A connection that
// ends cleanly (the peer's BYE) leaves the others to end in their own
// order, so that frames sent before the BYE on the main connection are
// still delivered; any other failure of any connection fails the peer and
// every link bound to it.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/bufpool.h"
#include "core/clock.h"
#include "core/names.h"
#include "transport/tcp/tcp.h"

// The largest slot number a peer may use: slots are allocated densely, so
// this bounds the links between two processes.
#define SLOT_MAX 65536

struct tcp_peer {
	tcp_peer *next; // node's list, protected by the node's mtx
	tcp_node *node;
	_Atomic unsigned refs;
	_Atomic int failed;
	bool listed; // counted by the node as live
	bool dialer;
	char *dialed; // dialer: the address as the links name it
	uint64_t peer_instance;
	uint64_t session; // the dialer's id of the connections between us
	tcp_creds creds;
	int64_t down_limit_ms;
	int64_t next_probe; // accepted: when the resumer looks next (node mtx)
	unsigned char my_nonce[TW_TCP_NONCE_LEN];
	unsigned char peer_nonce[TW_TCP_NONCE_LEN];
	char who[TW_TCP_ADDR_MAX + 1];
	tcp_sx *sx;
	_Atomic uint64_t next_id; // ids of striped messages sent
	// Small messages read off the main connection, staged to be queued
	// a run at a time (core/mailbox.h); only whoever holds the main
	// connection's reader role touches it, and flushes it before the
	// pump ends (peer_rx_idle) and before any frame that is not staged.
	tw__mailbox_run run;

	pthread_mutex_t mtx;
	tcp_conn *main; // referenced; constant once made
	tcp_conn *stripes[TCP_STRIPES_MAX - 1]; // by mtx; published by count
	_Atomic unsigned nstripes;
	tcp_chan **mine; // [nmine]: our slot -> channel, by mtx
	size_t nmine;
	tcp_chan **theirs; // [ntheirs]: the peer's slot -> channel, by mtx
	size_t ntheirs;
	// Changes after each change of `theirs` (under mtx): a reader's memo
	// of a slot's channel (rx_chan) holds while it stays.
	_Atomic uint64_t theirs_gen;
};

// --- small accessors ---------------------------------------------------------------

void tw__tcp_peer_ref(tcp_peer *p)
{
	atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
}

void tw__tcp_peer_unref(tcp_peer *p)
{
	if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
		return;
	unsigned ns = atomic_load(&p->nstripes);
	for (unsigned i = 0; i < ns; i++)
		tw__tcp_conn_unref(p->stripes[i]);
	if (p->main != NULL)
		tw__tcp_conn_unref(p->main);
	tw__tcp_sx_free(p->sx);
	tw__mailbox_run_fini(&p->run);
	if (p->creds.secret != NULL) {
		memset(p->creds.secret, 0, p->creds.secret_len);
		free(p->creds.secret);
	}
	free(p->mine);
	free(p->theirs);
	free(p->dialed);
	pthread_mutex_destroy(&p->mtx);
	tcp_node *n = p->node;
	bool listed = p->listed;
	free(p);
	if (listed)
		tw__tcp_node_peer_freed(n);
}

bool tw__tcp_peer_failed(const tcp_peer *p)
{
	return atomic_load_explicit(&p->failed, memory_order_acquire) != 0;
}

bool tw__tcp_peer_is_dialer(const tcp_peer *p)
{
	return p->dialer;
}

const char *tw__tcp_peer_dialed(const tcp_peer *p)
{
	return p->dialed;
}

uint64_t tw__tcp_peer_instance(const tcp_peer *p)
{
	return p->peer_instance;
}

uint64_t tw__tcp_peer_session(const tcp_peer *p)
{
	return p->session;
}

int64_t *tw__tcp_peer_next_probe(tcp_peer *p)
{
	return &p->next_probe;
}

const tcp_creds *tw__tcp_peer_creds(const tcp_peer *p)
{
	return &p->creds;
}

tcp_conn *tw__tcp_peer_conn(tcp_peer *p, unsigned k)
{
	pthread_mutex_lock(&p->mtx);
	unsigned n = atomic_load(&p->nstripes);
	tcp_conn *c = k == 0 ? p->main : k <= n ? p->stripes[k - 1] : NULL;
	if (c != NULL)
		tw__tcp_conn_ref(c);
	pthread_mutex_unlock(&p->mtx);
	return c;
}

tw__tls *tw__tcp_peer_tls(const tcp_peer *p)
{
	return tw__tcp_conn_tls(p->main);
}

const char *tw__tcp_peer_who(const tcp_peer *p)
{
	return p->who;
}

const unsigned char *tw__tcp_peer_my_nonce(const tcp_peer *p)
{
	return p->my_nonce;
}

const unsigned char *tw__tcp_peer_peer_nonce(const tcp_peer *p)
{
	return p->peer_nonce;
}

tcp_node *tw__tcp_peer_node(const tcp_peer *p)
{
	return p->node;
}

tcp_sx *tw__tcp_peer_sx(const tcp_peer *p)
{
	return p->sx;
}

tcp_conn *tw__tcp_peer_main(const tcp_peer *p)
{
	return p->main;
}

unsigned tw__tcp_peer_nstripes(const tcp_peer *p)
{
	return atomic_load_explicit(&p->nstripes, memory_order_acquire);
}

tcp_peer *tw__tcp_peer_next(const tcp_peer *p)
{
	return p->next;
}

tcp_peer **tw__tcp_peer_nextp(tcp_peer *p)
{
	return &p->next;
}

uint64_t tw__tcp_peer_next_id(tcp_peer *p)
{
	return atomic_fetch_add_explicit(&p->next_id, 1, memory_order_relaxed)
	    + 1;
}

tcp_conn *tw__tcp_peer_pick(tcp_peer *p, uint64_t i)
{
	unsigned n = atomic_load_explicit(&p->nstripes, memory_order_acquire);
	unsigned k = (unsigned)(i % (n + 1));
	return k == 0 ? p->main : p->stripes[k - 1];
}

// --- slots ------------------------------------------------------------------------

static bool grow(tcp_chan ***v, size_t *n, size_t want)
{
	if (want <= *n)
		return true;
	size_t m = *n < 8 ? 8 : *n;
	while (m < want)
		m *= 2;
	tcp_chan **nv = realloc(*v, m * sizeof(*nv));
	if (nv == NULL)
		return false;
	memset(nv + *n, 0, (m - *n) * sizeof(*nv));
	*v = nv;
	*n = m;
	return true;
}

int tw__tcp_peer_bind(tcp_peer *p, tcp_chan *mc)
{
	pthread_mutex_lock(&p->mtx);
	int status = TW_OK;
	size_t s = 0;
	while (s < p->nmine && p->mine[s] != NULL)
		s++;
	if (tw__tcp_peer_failed(p))
		status = TW_EPEER;
	else if (s >= SLOT_MAX || !grow(&p->mine, &p->nmine, s + 1))
		status = TW_ENOMEM;
	if (status == TW_OK) {
		p->mine[s] = mc;
		mc->my_slot = (uint32_t)s;
	}
	pthread_mutex_unlock(&p->mtx);
	return status;
}

int tw__tcp_peer_map(tcp_peer *p, tcp_chan *mc, uint32_t peer_slot)
{
	pthread_mutex_lock(&p->mtx);
	int status = TW_OK;
	if (peer_slot >= SLOT_MAX)
		status = TW_EPROTO;
	else if (!grow(&p->theirs, &p->ntheirs, (size_t)peer_slot + 1))
		status = TW_ENOMEM;
	else if (p->theirs[peer_slot] != NULL)
		status = TW_EPROTO; // the peer reused a slot it did not free
	else
		p->theirs[peer_slot] = mc;
	atomic_fetch_add_explicit(&p->theirs_gen, 1, memory_order_release);
	pthread_mutex_unlock(&p->mtx);
	return status;
}

void tw__tcp_peer_unbind(tcp_peer *p, tcp_chan *mc)
{
	pthread_mutex_lock(&p->mtx);
	if (mc->my_slot < p->nmine && p->mine[mc->my_slot] == mc)
		p->mine[mc->my_slot] = NULL;
	for (size_t i = 0; i < p->ntheirs; i++)
		if (p->theirs[i] == mc)
			p->theirs[i] = NULL;
	atomic_fetch_add_explicit(&p->theirs_gen, 1, memory_order_release);
	pthread_mutex_unlock(&p->mtx);
}

void tw__tcp_peer_unmap(tcp_peer *p, uint32_t peer_slot)
{
	pthread_mutex_lock(&p->mtx);
	if (peer_slot < p->ntheirs)
		p->theirs[peer_slot] = NULL;
	atomic_fetch_add_explicit(&p->theirs_gen, 1, memory_order_release);
	pthread_mutex_unlock(&p->mtx);
}

// The channel the peer's slot names, referenced, or NULL.
static tcp_chan *by_slot(tcp_peer *p, uint32_t slot)
{
	pthread_mutex_lock(&p->mtx);
	tcp_chan *mc = slot < p->ntheirs ? p->theirs[slot] : NULL;
	if (mc != NULL)
		tw__tcp_chan_ref(mc);
	pthread_mutex_unlock(&p->mtx);
	return mc;
}

static bool is_main(const tcp_peer *p, const tcp_conn *c)
{
	return c == p->main;
}

// Queues the messages that c's reader staged (only the main connection's
// stages any).  TW_OK, or an error that fails the connection (logged).
static int run_flush(tcp_peer *p, tcp_conn *c)
{
	if (!is_main(p, c) || !tw__mailbox_run_staged(&p->run))
		return TW_OK;
	int status = tw__mailbox_run_flush(&p->run);
	switch (status) {
	case TW_OK:
		return TW_OK;
	case TW_ETIMEDOUT:
		TW_ERROR("tcp",
		    "%s sent beyond the window it was granted (%s)", p->who,
		    tw_err_name(TW_EPROTO));
		return TW_EPROTO;
	default:
		TW_ERROR(
		    "tcp", "out of memory queueing messages from %s", p->who);
		return status;
	}
}

// Queues what the reader staged and lets go of its memo (see rx_chan).
static int peer_rx_idle(void *owner, tcp_conn *c)
{
	int status = run_flush(owner, c);
	tcp_rx_memo *m = tw__tcp_conn_rx_memo(c);
	if (m->val != NULL)
		tw__tcp_chan_unref(m->val);
	*m = (tcp_rx_memo) { 0 };
	return status;
}

// by_slot for a frame being read on `c`, borrowed: valid until the pump
// ends.  A stream of small messages to one channel brings hundreds of
// frames per read; the reader's memo keeps the channel it looked up last,
// referenced, for the frames after it, until the pump ends (peer_rx_idle)
// or the peer's slots change (theirs_gen), instead of a lock and a
// reference per frame.  The messages staged in p->run are always the
// memo's channel's: a change of channel flushes them first, while the
// reference keeps their mailbox.  TW_OK, or the flush's error.
static int rx_chan(tcp_peer *p, tcp_conn *c, uint32_t slot, tcp_chan **out)
{
	tcp_rx_memo *m = tw__tcp_conn_rx_memo(c);
	uint64_t gen
	    = atomic_load_explicit(&p->theirs_gen, memory_order_acquire);
	if (m->set && m->key == slot && m->gen == gen) {
		*out = m->val;
		return TW_OK;
	}
	int status = peer_rx_idle(p, c); // the old memo goes
	tcp_chan *mc = by_slot(p, slot);
	*m = (tcp_rx_memo) { .val = mc, .gen = gen, .key = slot, .set = true };
	*out = mc;
	return status;
}

// --- failing ------------------------------------------------------------------------

void tw__tcp_peer_fail(tcp_peer *p, int status, const char *why)
{
	int zero = 0;
	if (!atomic_compare_exchange_strong(&p->failed, &zero, 1))
		return;
	if (why != NULL)
		TW_WARN(
		    "tcp", "closing the connection with %s: %s", p->who, why);
	tw__tcp_peer_ref(p);
	tw__tcp_node_forget(p);
	tw__tcp_sx_fail(p->sx);
	tw__tcp_conn_fail(p->main, status, NULL);
	unsigned ns = atomic_load(&p->nstripes);
	for (unsigned i = 0; i < ns; i++)
		tw__tcp_conn_fail(p->stripes[i], status, NULL);
	// Every bound link learns that its peer is gone.
	pthread_mutex_lock(&p->mtx);
	size_t n = p->nmine;
	tcp_chan **v = n > 0 ? calloc(n, sizeof(*v)) : NULL;
	for (size_t i = 0; v != NULL && i < n; i++)
		if ((v[i] = p->mine[i]) != NULL)
			tw__tcp_chan_ref(v[i]);
	pthread_mutex_unlock(&p->mtx);
	for (size_t i = 0; v != NULL && i < n; i++) {
		if (v[i] != NULL) {
			tw__tcp_chan_peer_failed(v[i], p);
			tw__tcp_chan_unref(v[i]);
		}
	}
	free(v);
	tw__tcp_peer_unref(p);
}

void tw__tcp_peer_close(tcp_peer *p, int64_t deadline)
{
	unsigned ns = atomic_load(&p->nstripes);
	for (unsigned i = 0; i < ns; i++)
		tw__tcp_conn_close(p->stripes[i], deadline);
	tw__tcp_conn_close(p->main, deadline);
	tw__tcp_peer_fail(p, TW_EPEER, NULL);
}

// --- frames from the peer -------------------------------------------------------------

static int refuse(tcp_peer *p, const char *why)
{
	TW_ERROR("tcp", "malformed frame from %s: %s (%s); dropping it",
	    p->who, why, tw_err_name(TW_EPROTO));
	return TW_EPROTO;
}

// A DATA frame's buffer, or a chunk's claim, while its payload arrives.
typedef struct data_rx {
	tcp_chan *mc; // referenced, or NULL: the link is gone here
	unsigned char *buf;
	tcp_post *post; // buf is this post's (a receive's) memory
	tcp_sx_claim claim;
	size_t n; // a chunk's bytes; a DATA message's
} data_rx;

// The post of the application thread that reads c, if c is the main
// connection (only it is polled by application threads).
static tcp_post *post_of(const tcp_peer *p, const tcp_conn *c)
{
	return is_main(p, c) ? tw__tcp_conn_post(c) : NULL;
}

static int on_data(tcp_peer *p, tcp_conn *c, tcp_chan *mc,
    const tw__tcp_hdr *h, unsigned char *buf)
{
	// Counted as handled before the application can take it: its next
	// frame (a reply, an UNBIND) must acknowledge it.
	tw__tcp_conn_rx_handled(c);
	return tw__tcp_sx_data(p->sx, mc, h->key, buf, (size_t)h->len);
}

// Where a chunk of n bytes for mc goes, from its prefix: *claim and *dst
// (NULL: a late chunk of a message given up, skipped).  TW_OK, or an error
// that fails the connection (logged).
static int chunk_place(tcp_peer *p, tcp_conn *c, tcp_chan *mc,
    const tw__tcp_hdr *h, const unsigned char *prefix, tcp_sx_claim *claim,
    unsigned char **dst)
{
	tw__tcp_chunk ck;
	if (tw__tcp_chunk_decode(prefix, TW_TCP_CHUNK_PREFIX, &ck) != TW_OK)
		return refuse(p, "malformed chunk");
	size_t n = (size_t)h->len - TW_TCP_CHUNK_PREFIX;
	int status = tw__tcp_sx_chunk_begin(
	    p->sx, mc, h->slot, &ck, n, post_of(p, c), claim, dst);
	if (status == TW_EPROTO)
		return refuse(p, "a chunk that does not fit its message");
	return status;
}

static int on_chunk_small(tcp_peer *p, tcp_conn *c, tcp_chan *mc,
    const tw__tcp_hdr *h, const unsigned char *payload)
{
	if (mc == NULL)
		return TW_OK; // the link is gone here: skipped
	tcp_sx_claim claim;
	unsigned char *dst = NULL;
	int status = chunk_place(p, c, mc, h, payload, &claim, &dst);
	if (status != TW_OK)
		return status;
	if (dst != NULL)
		memcpy(dst, payload + TW_TCP_CHUNK_PREFIX,
		    (size_t)h->len - TW_TCP_CHUNK_PREFIX);
	// Handled before the message it completes can be taken: the next
	// frame, and the ACK that the end of the hold may send, confirm it,
	// so that the sender's ring lets it go.
	tw__tcp_conn_rx_handled(c);
	return tw__tcp_sx_chunk_end(p->sx, p->main, mc, &claim,
	    (size_t)h->len - TW_TCP_CHUNK_PREFIX, true);
}

static int peer_rx_frame(
    void *owner, tcp_conn *c, const tw__tcp_hdr *h, const unsigned char *pay)
{
	tcp_peer *p = owner;
	if (!is_main(p, c) && h->type != TW_TCP_F_CHUNK)
		return refuse(
		    p, "a frame that only a main connection carries");
	// Whatever this frame does comes after the messages staged so far.
	int status = h->type != TW_TCP_F_DATA ? run_flush(p, c) : TW_OK;
	if (status != TW_OK)
		return status;
	if (h->type == TW_TCP_F_OPEN) {
		tw__tcp_open o;
		if (tw__tcp_open_decode(pay, (size_t)h->len, &o) != TW_OK)
			return refuse(p, "malformed OPEN");
		tcp_chan *to = NULL;
		status = tw__tcp_node_open_lookup(p, h->key, h->slot, &o, &to);
		if (status == TW_OK && to != NULL) {
			status = tw__tcp_chan_on_open(p, to, h->slot, &o);
			tw__tcp_chan_unref(to);
		}
		return status;
	}
	tcp_chan *mc = NULL;
	if ((status = rx_chan(p, c, h->slot, &mc)) != TW_OK)
		return status;
	switch (h->type) {
	case TW_TCP_F_DATA:
		if (mc != NULL && h->len > mc->ep->max_msg) {
			status = refuse(
			    p, "a message larger than the link allows");
			break;
		}
		if (mc != NULL) {
			tw__tcp_conn_rx_handled(c); // see on_data
			status = tw__tcp_sx_data_copy(p->sx, mc, h->key, pay,
			    (size_t)h->len, post_of(p, c), &p->run);
		}
		break;
	case TW_TCP_F_STRIPED: {
		tw__tcp_chunk ck;
		if (tw__tcp_striped_decode(pay, (size_t)h->len, &ck)
		    != TW_OK) {
			status = refuse(p, "malformed announcement");
			break;
		}
		if (mc == NULL)
			break; // its chunks are skipped as they come
		status = tw__tcp_sx_announce(
		    p->sx, c, mc, h->slot, h->key, &ck, h->seq, post_of(p, c));
		if (status == TW_EPROTO)
			refuse(p, "a striped message announced wrongly");
		break;
	}
	case TW_TCP_F_CHUNK:
		status = on_chunk_small(p, c, mc, h, pay);
		break;
	case TW_TCP_F_CANCEL: {
		uint64_t id;
		if (tw__tcp_cancel_decode(pay, (size_t)h->len, &id) != TW_OK)
			status = refuse(p, "malformed cancel");
		else if (mc != NULL)
			status = tw__tcp_sx_cancel(p->sx, c, mc, id);
		break;
	}
	default:
		if (mc != NULL)
			status = tw__tcp_chan_on_frame(mc, h, pay);
		break;
	}
	return status;
}

static int peer_rx_begin(void *owner, tcp_conn *c, const tw__tcp_hdr *h,
    const unsigned char *head, unsigned char **dst, void **cookie)
{
	tcp_peer *p = owner;
	int status = run_flush(p, c); // this frame comes after them
	if (status != TW_OK)
		return status;
	if (h->type == TW_TCP_F_DATA) {
		if (!is_main(p, c))
			return refuse(
			    p, "a frame that only a main connection carries");
		data_rx *d = calloc(1, sizeof(*d));
		if (d == NULL)
			return TW_ENOMEM;
		d->mc = by_slot(p, h->slot);
		if (d->mc != NULL && h->len > d->mc->ep->max_msg) {
			tw__tcp_chan_unref(d->mc);
			free(d);
			return refuse(
			    p, "a message larger than the link allows");
		}
		// Awaited by the receive that reads: read into its memory.
		tcp_post *post = post_of(p, c);
		if (d->mc != NULL
		    && tw__tcp_sx_claim_small(
		        d->mc, h->key, (size_t)h->len, post)) {
			d->buf = post->buf;
			d->post = post;
			d->n = (size_t)h->len;
			post->frame = d;
		}
		if (d->mc != NULL && d->buf == NULL
		    && (d->buf = tw__pool_alloc((size_t)h->len)) == NULL) {
			tw__tcp_chan_unref(d->mc);
			free(d);
			TW_ERROR("tcp",
			    "out of memory for a message of %llu bytes from "
			    "%s",
			    (unsigned long long)h->len, p->who);
			return TW_ENOMEM;
		}
		if (d->buf != NULL) {
			memcpy(d->buf, head, TCP_CONN_HEAD);
			*dst = d->buf + TCP_CONN_HEAD;
		} else {
			*dst = NULL; // the link is gone here: skipped
		}
		*cookie = d;
		return TW_OK;
	}
	if (h->type != TW_TCP_F_CHUNK)
		return refuse(p, "a frame longer than its type allows");
	// A chunk: its prefix is in head, and the bytes go straight into
	// their place in the message.
	tcp_chan *mc = by_slot(p, h->slot);
	*dst = NULL;
	*cookie = NULL;
	if (mc == NULL)
		return TW_OK; // the link is gone here: skipped
	data_rx *d = calloc(1, sizeof(*d));
	if (d == NULL) {
		tw__tcp_chan_unref(mc);
		return TW_ENOMEM;
	}
	unsigned char *to = NULL;
	status = chunk_place(p, c, mc, h, head, &d->claim, &to);
	if (status != TW_OK) {
		tw__tcp_chan_unref(mc);
		free(d);
		return status;
	}
	d->mc = mc;
	d->n = (size_t)h->len - TW_TCP_CHUNK_PREFIX;
	if (to != NULL) {
		size_t in_head = TCP_CONN_HEAD - TW_TCP_CHUNK_PREFIX;
		memcpy(to, head + TW_TCP_CHUNK_PREFIX, in_head);
		*dst = to + in_head;
	}
	*cookie = d;
	return TW_OK;
}

static int peer_rx_end(
    void *owner, tcp_conn *c, const tw__tcp_hdr *h, void *cookie, bool ok)
{
	tcp_peer *p = owner;
	data_rx *d = cookie;
	int status = TW_OK;
	if (d == NULL)
		return TW_OK;
	if (h->type == TW_TCP_F_DATA && d->post != NULL) {
		d->post->frame = NULL;
		if (d->mc != NULL && ok) {
			tw__tcp_conn_rx_handled(c); // see on_data
			tw__tcp_sx_placed_small(
			    d->mc, d->post, (size_t)h->len);
		}
	} else if (h->type == TW_TCP_F_DATA) {
		// No buffer: moved out of a receive's memory, into none.
		if (d->mc != NULL && ok && d->buf != NULL)
			status = on_data(p, c, d->mc, h, d->buf);
		else
			free(d->buf);
	} else if (d->mc != NULL) {
		if (ok)
			tw__tcp_conn_rx_handled(c); // see on_chunk_small
		status = tw__tcp_sx_chunk_end(
		    p->sx, p->main, d->mc, &d->claim, d->n, ok);
	}
	if (d->mc != NULL)
		tw__tcp_chan_unref(d->mc);
	free(d);
	return status;
}

static void peer_failed(void *owner, tcp_conn *c, int status)
{
	tcp_peer *p = owner;
	// A clean end of one connection (the peer's BYE) leaves the others
	// to end in their own order: the main connection's BYE comes after
	// every frame sent on it.
	if (status != TW_ECLOSED || is_main(p, c))
		tw__tcp_peer_fail(
		    p, status == TW_ECLOSED ? TW_EPEER : status, NULL);
	tw__tcp_peer_unref(p); // the connection's
}

// A message of one frame half read into the receive's memory moves into
// memory of its own, where the rest of it goes, and arrives through the
// mailbox as any other.
static int unpost_frame(tcp_conn *c, tcp_post *post)
{
	data_rx *d = post->frame;
	size_t len = d->n;
	unsigned char *to = tw__pool_alloc(len);
	if (to != NULL)
		memcpy(to, d->buf, len); // what is not read yet is overwritten
	tw__tcp_conn_rx_rebase(c, d->buf, len, to);
	d->buf = to;
	d->post = NULL;
	post->frame = NULL;
	atomic_fetch_add_explicit(
	    &tw__tcp_rx_moved_small, 1, memory_order_relaxed);
	if (to == NULL) {
		TW_ERROR(
		    "tcp", "out of memory for a message of %zu bytes", len);
		return TW_ENOMEM;
	}
	return TW_OK;
}

static int peer_rx_unpost(void *owner, tcp_conn *c, void *post)
{
	tcp_peer *p = owner;
	if (!is_main(p, c))
		return TW_OK;
	tcp_post *pp = post;
	int status = pp->frame != NULL ? unpost_frame(c, pp) : TW_OK;
	int st = tw__tcp_sx_unpost(p->sx, c, pp);
	return status != TW_OK ? status : st;
}

static void peer_down(void *owner, tcp_conn *c)
{
	(void)c;
	tcp_peer *p = owner;
	// The side that dialed dials again; the other waits for it, and
	// looks whether its process is still there.
	tw__tcp_node_resume_wake(p->node);
}

static const tcp_conn_ops peer_conn_ops = {
	.size = sizeof(tcp_conn_ops),
	.rx_frame = peer_rx_frame,
	.rx_begin = peer_rx_begin,
	.rx_end = peer_rx_end,
	.failed = peer_failed,
	.rx_unpost = peer_rx_unpost,
	.rx_idle = peer_rx_idle,
	.down = peer_down,
};

// --- making one -------------------------------------------------------------------------

// A connection of p on fd, reading once started.  The connection holds a
// reference to p until its failure upcall.
static int conn_make(tcp_peer *p, int fd, tw__tls *tls, const char *who,
    int64_t hb_ms, tcp_conn **out)
{
	tcp_conn_cfg cfg = { .fd = fd,
		.tls = tls,
		.poller = tw__tcp_node_poller(p->node),
		.ops = &peer_conn_ops,
		.owner = p,
		.who = who,
		.heartbeat_ms = hb_ms,
		.down_limit_ms = p->down_limit_ms };
	tw__tcp_peer_ref(p);
	int status = tw__tcp_conn_new(&cfg, out);
	if (status != TW_OK)
		tw__tcp_peer_unref(p);
	return status;
}

int tw__tcp_peer_new(tcp_node *n, const tcp_peer_info *info, tcp_peer **out)
{
	tcp_peer *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return TW_ENOMEM;
	atomic_init(&p->refs, 1);
	p->node = n;
	p->dialer = info->dialer;
	p->peer_instance = info->hs->instance;
	p->session = info->hs->session;
	p->down_limit_ms = info->heartbeat_ms > 0 ? 3 * info->heartbeat_ms
	                                          : TCP_DOWN_LIMIT_NO_HB_MS;
	if (info->ep != NULL) {
		const tcp_ep *ep = info->ep;
		snprintf(p->creds.link_id, sizeof(p->creds.link_id), "%s",
		    ep->link_id);
		p->creds.self_rank = ep->self_rank;
		p->creds.peer_rank = info->peer_rank;
		snprintf(p->creds.peer_id, sizeof(p->creds.peer_id), "%s",
		    ep->ids[info->peer_rank]);
		p->creds.tls = ep->tls[0] != NULL;
		if (ep->secret != NULL) {
			p->creds.secret = malloc(ep->secret_len);
			if (p->creds.secret == NULL) {
				free(p);
				return TW_ENOMEM;
			}
			memcpy(p->creds.secret, ep->secret, ep->secret_len);
			p->creds.secret_len = ep->secret_len;
		}
	}
	memcpy(p->my_nonce, info->hs->my_nonce, TW_TCP_NONCE_LEN);
	memcpy(p->peer_nonce, info->hs->nonce, TW_TCP_NONCE_LEN);
	snprintf(p->who, sizeof(p->who), "%s", info->hs->addr);
	pthread_mutex_init(&p->mtx, NULL);
	p->dialed = info->dialed != NULL ? strdup(info->dialed) : NULL;
	p->sx = tw__tcp_sx_new();
	tw__mailbox_run_init(&p->run);
	if ((info->dialed != NULL && p->dialed == NULL) || p->sx == NULL) {
		tw__tcp_peer_unref(p);
		return TW_ENOMEM;
	}
	int status = conn_make(
	    p, info->fd, info->tls, p->who, info->heartbeat_ms, &p->main);
	if (status != TW_OK) {
		tw__tcp_peer_unref(p);
		return status;
	}
	// Listed before the first frame can arrive: an OPEN's lookup, or a
	// stripe, may need it.
	tw__tcp_peer_ref(p);
	p->listed = true;
	tw__tcp_node_add_peer(n, p);
	tw__tcp_conn_start(p->main);
	*out = p;
	return TW_OK;
}

int tw__tcp_peer_add_stripe(tcp_peer *p, int fd, tw__tls *tls, const char *who)
{
	tcp_conn *s = NULL;
	int status = conn_make(p, fd, tls, who, 0, &s);
	if (status != TW_OK) {
		tw__tls_free(tls);
		close(fd);
		return status;
	}
	pthread_mutex_lock(&p->mtx);
	unsigned n = atomic_load(&p->nstripes);
	if (tw__tcp_peer_failed(p) || n >= TCP_STRIPES_MAX - 1) {
		status = TW_EPROTO;
	} else {
		p->stripes[n] = s;
		atomic_store_explicit(
		    &p->nstripes, n + 1, memory_order_release);
	}
	pthread_mutex_unlock(&p->mtx);
	if (status != TW_OK) {
		// Never started: failing it gives the peer's reference back
		// through its upcall, and the socket goes with it.
		tw__tcp_conn_fail(s, TW_EPROTO, NULL);
		tw__tcp_conn_unref(s);
		return status;
	}
	tw__tcp_conn_start(s);
	return TW_OK;
}
