#include "core/clock.h"
#include "core/mailbox.h"
#include "core/names.h"
#include "transport/rxbox.h"

int tw__rxbox_recv_until(
    tw_channel *c, const char *key, int64_t deadline, tw_buf *out)
{
	tw__rxbox *rx = c->impl;
	return tw__mailbox_pop_until(rx->mb, rx->from, key, deadline, out);
}

int tw__rxbox_recv(
    tw_channel *c, const char *key, int64_t timeout_ms, tw_buf *out)
{
	return tw__rxbox_recv_until(c, key, tw__deadline_ms(timeout_ms), out);
}

int tw__rxbox_recv_into(tw_channel *c, const char *key, int64_t deadline,
    void *buf, size_t cap, size_t *len)
{
	tw__rxbox *rx = c->impl;
	return tw__mailbox_pop_into(
	    rx->mb, rx->from, key, deadline, buf, cap, len);
}

int tw__rxbox_probe(tw_channel *c, const char *key, size_t *len)
{
	tw__rxbox *rx = c->impl;
	return tw_mailbox_probe(rx->mb, rx->from, key, len);
}

bool tw__rxbox_ready(const tw__rxbox *rx, const char *key)
{
	return tw__rxbox_ready_kind(rx, key, tw__key_is_ctl(key));
}

bool tw__rxbox_ready_kind(const tw__rxbox *rx, const char *key, bool ctl)
{
	// tw__mailbox_idle without its scan of the key.
	if (!ctl && tw__mailbox_idle_data(rx->mb))
		return false;
	size_t len;
	return tw_mailbox_probe(rx->mb, rx->from, key, &len) != TW_EAGAIN;
}

int tw__rxbox_try_into(
    const tw__rxbox *rx, const char *key, void *buf, size_t cap, size_t *len)
{
	if (tw__mailbox_idle(rx->mb, key))
		return TW_EAGAIN;
	// A deadline already passed: no wait, TW_ETIMEDOUT when empty.
	int status
	    = tw__mailbox_pop_into(rx->mb, rx->from, key, 0, buf, cap, len);
	return status == TW_ETIMEDOUT ? TW_EAGAIN : status;
}

uint64_t tw__rxbox_peak(tw_channel *c)
{
	tw__rxbox *rx = c->impl;
	return tw__mailbox_peak(rx->mb, rx->from);
}

size_t tw__rxbox_ns_entries(tw_channel *c)
{
	tw__rxbox *rx = c->impl;
	return tw__mailbox_ns_entries(rx->mb);
}
