// Point-to-point messages: argument checks, statistics, the throttle window
// and waiting for pending sends.
//
// The throttle window counts messages the peer's application has consumed.
// A receiver whose link has a window sends a control message "<ns>!ack"
// carrying its cumulative count of consumed messages (8 bytes, little
// endian) after each point-to-point message it consumes; a sender blocked
// on the window pulls those acks.  Acks are cumulative, so the mailbox
// keeps only the newest of each sender (mailbox.h): however many come, and
// whether or not this party's own window makes it ever pull them (parties
// may set different windows), one ack per peer and link waits here.

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "link/link_int.h"

static bool link_aborted(const tw_link *l)
{
	return atomic_load_explicit(&l->aborted, memory_order_acquire) != 0;
}

// The receive timeout's deadline, not fixed yet (core/clock.h): for the
// calls below that pass it only to tw__chan_*, which fix it unless the
// transport waits to.
static int64_t recv_deadline_lazy(const tw_link *l)
{
	return tw__deadline_lazy_ms(
	    atomic_load_explicit(&l->recv_timeout, memory_order_relaxed));
}

int64_t tw__link_recv_deadline(const tw_link *l)
{
	return tw__deadline_fix(recv_deadline_lazy(l));
}

// Checks a peer rank and a tag (a caller error, reported by status and not
// logged), and writes the message key "<link id>:<tag>" into
// key[TW_KEY_MAX]: one scan of the tag per message, none of the id.
static int msg_key(const tw_link *l, size_t peer, const char *tag, char *key)
{
	size_t n = tw__tag_len(tag);
	if (l == NULL || peer >= l->size || peer == l->rank || n > TW_TAG_MAX)
		return TW_EINVAL;
	tw__key_msg_n(key, l->id, l->id_len, tag, n);
	return TW_OK;
}

static void put_le64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

// Takes one ack message into ps->acked.  ack_mtx held.
static void ack_apply(tw__peer *ps, const tw_buf *b)
{
	if (b->len != 8)
		return; // not ours to trust; a malformed ack changes nothing
	uint64_t v = get_le64(b->data);
	uint64_t sent = atomic_load_explicit(&ps->sent, memory_order_relaxed);
	if (v > sent)
		v = sent; // a peer never consumes more than was sent
	if (v > atomic_load_explicit(&ps->acked, memory_order_relaxed))
		atomic_store_explicit(&ps->acked, v, memory_order_relaxed);
}

// Pulls acks from `dst` until fewer than the window are unconsumed, or
// until `deadline` (TW_ETIMEDOUT).
static int ack_wait(tw_link *l, size_t dst, int64_t deadline)
{
	int64_t window = l->opts[TW_OPT_THROTTLE_WINDOW];
	tw__peer *ps = &l->peers[dst];
	deadline = tw__deadline_fix(deadline);
	char key[TW_KEY_MAX];
	tw__key_ctl(key, l->id, "ack");
	int status = TW_OK;
	pthread_mutex_lock(&ps->ack_mtx);
	for (;;) {
		uint64_t sent
		    = atomic_load_explicit(&ps->sent, memory_order_relaxed);
		uint64_t acked
		    = atomic_load_explicit(&ps->acked, memory_order_relaxed);
		if (sent - acked < (uint64_t)window)
			break;
		tw_buf b = { 0 };
		status = tw__chan_recv(l, l->map[dst], key, deadline, &b);
		if (status != TW_OK)
			break;
		ack_apply(ps, &b);
		tw_buf_free(&b);
	}
	pthread_mutex_unlock(&ps->ack_mtx);
	return status;
}

// Tells `src` that one more of its messages was consumed here.
static void ack_send(tw_link *l, size_t src)
{
	if (l->opts[TW_OPT_THROTTLE_WINDOW] == 0)
		return;
	uint64_t n = atomic_fetch_add_explicit(
	                 &l->peers[src].consumed, 1, memory_order_relaxed)
	    + 1;
	unsigned char b[8];
	put_le64(b, n);
	char key[TW_KEY_MAX];
	tw__key_ctl(key, l->id, "ack");
	// A failure here means the peer is gone; its next send fails anyway.
	(void)tw__chan_send(
	    l, l->map[src], key, b, sizeof(b), true, TW_FOREVER);
}

int tw__link_send_key(tw_link *l, size_t dst, const char *key, const void *buf,
    size_t len, bool async)
{
	if ((uint64_t)len > (uint64_t)l->opts[TW_OPT_MAX_MSG_SIZE])
		return TW_ETOOBIG;
	return tw__chan_send(
	    l, l->map[dst], key, buf, len, async, tw__link_recv_deadline(l));
}

int tw__link_recv_key(
    tw_link *l, size_t src, const char *key, int64_t deadline, tw_buf *out)
{
	return tw__chan_recv(l, l->map[src], key, deadline, out);
}

enum { SEND_SYNC, SEND_ASYNC, SEND_THROTTLED };

static int send_until(tw_link *l, size_t dst, const char *tag, const void *buf,
    size_t len, int mode, int64_t deadline)
{
	char key[TW_KEY_MAX];
	int status = msg_key(l, dst, tag, key);
	if (status != TW_OK || (buf == NULL && len > 0))
		return TW_EINVAL;
	if ((uint64_t)len > (uint64_t)l->opts[TW_OPT_MAX_MSG_SIZE])
		return TW_ETOOBIG;
	if (link_aborted(l))
		return TW_ECLOSED;
	if (mode == SEND_THROTTLED && l->opts[TW_OPT_THROTTLE_WINDOW] > 0) {
		status = ack_wait(l, dst, deadline);
		if (status != TW_OK) {
			if (status == TW_ETIMEDOUT)
				TW_LOGL(TW_LOG_DEBUG, "link", l->id, l->rank,
				    "throttled send to %zu timed out", dst);
			return status;
		}
	}
	status = tw__chan_send(
	    l, l->map[dst], key, buf, len, mode != SEND_SYNC, deadline);
	if (status != TW_OK)
		return status;
	// Only throttled sends look at this count (ack_wait).
	if (l->opts[TW_OPT_THROTTLE_WINDOW] > 0)
		atomic_fetch_add_explicit(
		    &l->peers[dst].sent, 1, memory_order_relaxed);
	tw__counters_add2(
	    &l->stats, TW__ST_MSGS_SENT, 1, TW__ST_BYTES_SENT, len);
	return TW_OK;
}

static int send_common(tw_link *l, size_t dst, const char *tag,
    const void *buf, size_t len, int mode)
{
	if (l == NULL)
		return TW_EINVAL;
	return send_until(l, dst, tag, buf, len, mode, recv_deadline_lazy(l));
}

int tw_send_timed(tw_link *l, size_t dst, const char *tag, const void *buf,
    size_t len, int flags, int64_t timeout_ms)
{
	if (l == NULL || timeout_ms < -1
	    || (flags & ~(TW_SEND_ASYNC | TW_SEND_THROTTLED)) != 0
	    || flags == TW_SEND_THROTTLED)
		return TW_EINVAL;
	int mode = flags & TW_SEND_THROTTLED ? SEND_THROTTLED
	    : flags & TW_SEND_ASYNC          ? SEND_ASYNC
	                                     : SEND_SYNC;
	return send_until(
	    l, dst, tag, buf, len, mode, tw__deadline_lazy_ms(timeout_ms));
}

int tw_send(
    tw_link *l, size_t dst, const char *tag, const void *buf, size_t len)
{
	return send_common(l, dst, tag, buf, len, SEND_SYNC);
}

int tw_send_async(
    tw_link *l, size_t dst, const char *tag, const void *buf, size_t len)
{
	return send_common(l, dst, tag, buf, len, SEND_ASYNC);
}

int tw_send_async_throttled(
    tw_link *l, size_t dst, const char *tag, const void *buf, size_t len)
{
	return send_common(l, dst, tag, buf, len, SEND_THROTTLED);
}

static void count_recv(tw_link *l, size_t src, size_t len)
{
	tw__counters_add2(
	    &l->stats, TW__ST_MSGS_RECV, 1, TW__ST_BYTES_RECV, len);
	ack_send(l, src);
}

static int recv_until(
    tw_link *l, size_t src, const char *tag, int64_t deadline, tw_buf *out)
{
	char key[TW_KEY_MAX];
	if (msg_key(l, src, tag, key) != TW_OK || out == NULL)
		return TW_EINVAL;
	tw_buf b = { 0 };
	int status = tw__chan_recv(l, l->map[src], key, deadline, &b);
	if (status != TW_OK)
		return status;
	*out = b;
	count_recv(l, src, b.len);
	return TW_OK;
}

int tw_recv(tw_link *l, size_t src, const char *tag, tw_buf *out)
{
	if (l == NULL)
		return TW_EINVAL;
	return recv_until(l, src, tag, recv_deadline_lazy(l), out);
}

int tw_recv_timed(
    tw_link *l, size_t src, const char *tag, int64_t timeout_ms, tw_buf *out)
{
	if (timeout_ms < -1)
		return TW_EINVAL;
	return recv_until(l, src, tag, tw__deadline_lazy_ms(timeout_ms), out);
}

static int recv_into_until(tw_link *l, size_t src, const char *tag, void *buf,
    size_t cap, int64_t deadline, size_t *len)
{
	char key[TW_KEY_MAX];
	if (msg_key(l, src, tag, key) != TW_OK || len == NULL
	    || (buf == NULL && cap > 0))
		return TW_EINVAL;
	size_t n = 0;
	int status
	    = tw__chan_recv_into(l, l->map[src], key, deadline, buf, cap, &n);
	if (status == TW_ETRUNC)
		*len = n;
	if (status != TW_OK)
		return status;
	*len = n;
	count_recv(l, src, n);
	return TW_OK;
}

int tw_recv_into(tw_link *l, size_t src, const char *tag, void *buf,
    size_t cap, size_t *len)
{
	if (l == NULL)
		return TW_EINVAL;
	return recv_into_until(
	    l, src, tag, buf, cap, recv_deadline_lazy(l), len);
}

int tw_recv_into_timed(tw_link *l, size_t src, const char *tag, void *buf,
    size_t cap, int64_t timeout_ms, size_t *len)
{
	if (timeout_ms < -1)
		return TW_EINVAL;
	return recv_into_until(
	    l, src, tag, buf, cap, tw__deadline_lazy_ms(timeout_ms), len);
}

int tw_probe(tw_link *l, size_t src, const char *tag, size_t *len)
{
	char key[TW_KEY_MAX];
	if (msg_key(l, src, tag, key) != TW_OK || len == NULL)
		return TW_EINVAL;
	return tw__chan_probe(l, l->map[src], key, len);
}

int tw_link_set_recv_timeout(tw_link *l, int64_t ms)
{
	if (l == NULL || ms < -1)
		return TW_EINVAL;
	atomic_store_explicit(&l->recv_timeout, ms, memory_order_relaxed);
	return TW_OK;
}

int tw__link_wait_pending_until(tw_link *l, int64_t deadline)
{
	if (link_aborted(l))
		return TW_ECLOSED;
	int status = TW_OK;
	tw__family *f = l->fam;
	for (size_t i = 0; i < l->size; i++) {
		if (i == l->rank)
			continue;
		tw_channel *c = f->chans[l->map[i]];
		int rv = TW_OK;
		int (*wait)(tw_channel *) = TW__CHAN_OP(c->ops, wait_pending);
		if (f->xops != NULL)
			rv = tw__fam_xops(f, l->map[i])
			         ->wait_pending(c, deadline, &l->aborted);
		else if (wait != NULL)
			rv = wait(c);
		if (status == TW_OK)
			status = rv;
	}
	if (status != TW_OK && link_aborted(l))
		status = TW_ECLOSED;
	return status;
}

int tw_link_wait_pending(tw_link *l)
{
	if (l == NULL)
		return TW_EINVAL;
	return tw__link_wait_pending_until(l, tw__link_recv_deadline(l));
}

int tw_link_wait_pending_timed(tw_link *l, int64_t timeout_ms)
{
	if (l == NULL || timeout_ms < -1)
		return TW_EINVAL;
	return tw__link_wait_pending_until(l, tw__deadline_ms(timeout_ms));
}

void tw_link_stats(const tw_link *l, tw_stats *out)
{
	if (l == NULL || out == NULL)
		return;
	uint64_t v[TW_COUNTERS_N];
	tw__counters_sum(&l->stats, v);
	out->msgs_sent = v[TW__ST_MSGS_SENT];
	out->msgs_recv = v[TW__ST_MSGS_RECV];
	out->bytes_sent = v[TW__ST_BYTES_SENT];
	out->bytes_recv = v[TW__ST_BYTES_RECV];
}
