// Channel access for the link layer.
//
// Built-in transports offer tw__chan_xops (deadlines, probes, receives into
// caller memory, per-namespace abort) and the link uses them directly.
// User channels offer only the public vtable, so the link emulates the rest:
//  - probes and truncated receives pull the message out of the channel and
//    park it in the family's stash mailbox, which every later receive of
//    that key looks at first, so per-key order is kept;
//  - a channel cannot be told that one child link was aborted, so receives
//    on a child, or on a channel without an abort op, wait in short slices
//    and look at the link's abort flag between them.

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/mailbox.h"
#include "link/link_int.h"

// How long a user-channel receive waits before it looks at the abort flag
// again, when the channel itself cannot be woken.
#define TW_POLL_SLICE_MS 10

static bool aborted(const tw_link *l)
{
	return atomic_load_explicit(&l->aborted, memory_order_acquire) != 0;
}

// The transport's extra ops (NULL for a user channel), with `*deadline`
// fixed unless they take it lazy (tw__deadline_lazy_ms).
static const tw__chan_xops *xops_for(
    const tw__family *f, size_t root_peer, int64_t *deadline)
{
	const tw__chan_xops *x
	    = f->xops != NULL ? tw__fam_xops(f, root_peer) : NULL;
	if (x == NULL || !x->lazy_deadline)
		*deadline = tw__deadline_fix(*deadline);
	return x;
}

int tw__chan_send(tw_link *l, size_t root_peer, const char *key,
    const void *buf, size_t len, bool async, int64_t deadline)
{
	tw__family *f = l->fam;
	tw_channel *c = f->chans[root_peer];
	if (aborted(l))
		return TW_ECLOSED;
	const tw__chan_xops *x = xops_for(f, root_peer, &deadline);
	if (x != NULL)
		return x->send(c, key, buf, len, async ? TW__SEND_ASYNC : 0,
		    deadline, &l->aborted);
	int (*send_async)(tw_channel *, const char *, const void *, size_t)
	    = TW__CHAN_OP(c->ops, send_async);
	int status = async && send_async != NULL
	    ? send_async(c, key, buf, len)
	    : c->ops->send(c, key, buf, len);
	if (status != TW_OK && aborted(l))
		status = TW_ECLOSED;
	return status;
}

// A receive from a user channel, woken by abort within a slice.
static int user_recv(
    tw_link *l, tw_channel *c, const char *key, int64_t deadline, tw_buf *out)
{
	bool wakeable
	    = l->parent == NULL && TW__CHAN_OP(c->ops, abort) != NULL;
	for (;;) {
		if (aborted(l))
			return TW_ECLOSED;
		int64_t ms = tw__ms_left(deadline);
		if (!wakeable && (ms < 0 || ms > TW_POLL_SLICE_MS))
			ms = TW_POLL_SLICE_MS;
		tw_buf b = { 0 };
		int status = c->ops->recv(c, key, ms, &b);
		if (status == TW_OK && aborted(l)) {
			free(b.data);
			return TW_ECLOSED;
		}
		if (status == TW_OK) {
			*out = b;
			return TW_OK;
		}
		if (status != TW_ETIMEDOUT)
			return aborted(l) ? TW_ECLOSED : status;
		if (deadline != TW_FOREVER && tw__now_ns() >= deadline)
			return TW_ETIMEDOUT;
	}
}

int tw__chan_recv(tw_link *l, size_t root_peer, const char *key,
    int64_t deadline, tw_buf *out)
{
	tw__family *f = l->fam;
	tw_channel *c = f->chans[root_peer];
	if (aborted(l))
		return TW_ECLOSED;
	const tw__chan_xops *x = xops_for(f, root_peer, &deadline);
	if (x != NULL)
		return x->recv(c, key, deadline, out);
	if (tw_mailbox_pop(f->stash, (uint32_t)root_peer, key, 0, out)
	    == TW_OK)
		return TW_OK;
	return user_recv(l, c, key, deadline, out);
}

int tw__chan_recv_into(tw_link *l, size_t root_peer, const char *key,
    int64_t deadline, void *buf, size_t cap, size_t *len)
{
	tw__family *f = l->fam;
	tw_channel *c = f->chans[root_peer];
	if (aborted(l))
		return TW_ECLOSED;
	const tw__chan_xops *x = xops_for(f, root_peer, &deadline);
	if (x != NULL)
		return x->recv_into(c, key, deadline, buf, cap, len);
	int status = tw__mailbox_pop_into(
	    f->stash, (uint32_t)root_peer, key, 0, buf, cap, len);
	if (status != TW_ETIMEDOUT)
		return status;
	tw_buf b = { 0 };
	if ((status = user_recv(l, c, key, deadline, &b)) != TW_OK)
		return status;
	if (b.len > cap) {
		*len = b.len;
		status = tw__mailbox_push_owned(f->stash, (uint32_t)root_peer,
		    key, b.data, b.len, UINT64_MAX, TW_FOREVER, NULL);
		if (status != TW_OK) {
			free(b.data);
			return status;
		}
		return TW_ETRUNC;
	}
	if (b.len > 0)
		memcpy(buf, b.data, b.len);
	*len = b.len;
	free(b.data);
	return TW_OK;
}

int tw__chan_probe(tw_link *l, size_t root_peer, const char *key, size_t *len)
{
	tw__family *f = l->fam;
	tw_channel *c = f->chans[root_peer];
	if (aborted(l))
		return TW_ECLOSED;
	if (f->xops != NULL)
		return tw__fam_xops(f, root_peer)->probe(c, key, len);
	int status = tw_mailbox_probe(f->stash, (uint32_t)root_peer, key, len);
	if (status != TW_EAGAIN)
		return status;
	tw_buf b = { 0 };
	status = c->ops->recv(c, key, 0, &b);
	if (status == TW_ETIMEDOUT || status == TW_EAGAIN)
		return TW_EAGAIN;
	if (status != TW_OK)
		return status;
	*len = b.len;
	status = tw__mailbox_push_owned(f->stash, (uint32_t)root_peer, key,
	    b.data, b.len, UINT64_MAX, TW_FOREVER, NULL);
	if (status != TW_OK)
		free(b.data);
	return status;
}
