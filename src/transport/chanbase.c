#include <stdatomic.h>

#include "transport/chanbase.h"

#include "core/clock.h"
#include "core/mailbox.h"
#include "core/names.h"

void tw__chanbase_init(tw__chanbase *b, const tw_channel_ops *ops,
    tw_mailbox *mb, const char *link_id, const tw__link_cfg *cfg, size_t peer)
{
	b->rx = (tw__rxbox) { mb, (uint32_t)peer };
	b->ch.ops = ops;
	b->ch.impl = b;
	b->link_id = link_id;
	b->connect_deadline
	    = tw__deadline_ms(cfg->opts[TW_OPT_CONNECT_TIMEOUT_MS]);
	atomic_init(&b->aborted, 0);
}

tw_mailbox *tw__chanbase_mailbox_new(void)
{
	tw_mailbox *mb = tw_mailbox_new();
	if (mb != NULL) {
		tw__mailbox_keep_peer_closes(mb);
		tw__mailbox_count_by_cost(mb);
	}
	return mb;
}

int tw__chanbase_send_status(
    const tw__chanbase *b, int status, const _Atomic int *cancel)
{
	if (status != TW_EPEER && status != TW_ECLOSED)
		return status;
	return tw__chanbase_aborted(b) || tw__chanbase_cancelled(cancel)
	    ? TW_ECLOSED
	    : TW_EPEER;
}

int tw__chanbase_send_hello(tw_channel *c, tw__xsend_fn send, int64_t deadline)
{
	tw__chanbase *b = c->impl;
	char key[TW_KEY_MAX];
	tw__key_ctl(key, b->link_id, "hello");
	return send(c, key, NULL, 0, 0, deadline, NULL);
}

int tw__chanbase_hello_arrived(tw__chanbase *b, const _Atomic int *cancel)
{
	char key[TW_KEY_MAX];
	tw__key_ctl(key, b->link_id, "hello");
	return tw__mailbox_push_owned(b->rx.mb, b->rx.from, key, NULL, 0,
	    UINT64_MAX, TW_FOREVER, cancel);
}

int tw__chanbase_test_recv(tw_channel *c)
{
	tw__chanbase *b = c->impl;
	char key[TW_KEY_MAX];
	tw__key_ctl(key, b->link_id, "hello");
	tw_buf msg = { 0 };
	int status = tw__mailbox_pop_until(
	    b->rx.mb, b->rx.from, key, b->connect_deadline, &msg);
	tw_buf_free(&msg);
	return status;
}

void tw__chanbase_open_ns(tw_channel *c, const char *ns)
{
	tw__chanbase *b = c->impl;
	tw__mailbox_reopen_ns(b->rx.mb, ns);
}

void tw__chanbase_free_all(
    const tw__link_cfg *cfg, tw__chan_free_fn drop, tw_channel **chans)
{
	for (size_t i = 0; i < cfg->size; i++) {
		if (chans[i] != NULL)
			drop(chans[i]->impl);
		chans[i] = NULL;
	}
}

int tw__chanbase_open_all(const tw__link_cfg *cfg, void *ep,
    tw__chan_new_fn make, tw__chan_free_fn drop, tw_channel **chans)
{
	return tw__chanbase_open_some(cfg, NULL, ep, make, drop, chans);
}

int tw__chanbase_open_some(const tw__link_cfg *cfg, const bool *want, void *ep,
    tw__chan_new_fn make, tw__chan_free_fn drop, tw_channel **chans)
{
	for (size_t i = 0; i < cfg->size; i++)
		chans[i] = NULL;
	for (size_t i = 0; i < cfg->size; i++) {
		if (i == cfg->self || (want != NULL && !want[i]))
			continue;
		tw__chanbase *b = make(cfg, ep, i);
		if (b == NULL) {
			tw__chanbase_free_all(cfg, drop, chans);
			return TW_ENOMEM;
		}
		chans[i] = &b->ch;
	}
	return TW_OK;
}
