// The test channel: party i's channel to j pushes into j's inbox under
// sender i and pops its own inbox under sender j.  Only public API here.

#include <stdlib.h>
#include <string.h>

#include "testchan.h"

#define HELLO_KEY "\001hello"

struct testchan_net {
	size_t n;
	tw_mailbox **inbox;
};

typedef struct tchan {
	tw_channel ch;
	testchan_net *net;
	uint32_t self;
	uint32_t peer;
} tchan;

testchan_net *testchan_net_new(size_t n)
{
	testchan_net *net = calloc(1, sizeof(*net));
	if (net == NULL)
		return NULL;
	net->n = n;
	net->inbox = calloc(n, sizeof(*net->inbox));
	for (size_t i = 0; net->inbox != NULL && i < n; i++)
		net->inbox[i] = tw_mailbox_new();
	return net;
}

void testchan_net_free(testchan_net *net)
{
	if (net == NULL)
		return;
	for (size_t i = 0; i < net->n; i++)
		tw_mailbox_free(net->inbox[i]);
	free(net->inbox);
	free(net);
}

static int tc_send(tw_channel *c, const char *key, const void *buf, size_t len)
{
	tchan *t = c->impl;
	int rv
	    = tw_mailbox_push(t->net->inbox[t->peer], t->self, key, buf, len);
	// The peer's inbox refuses us once it aborted: to us, the peer is gone.
	return rv == TW_ECLOSED ? TW_EPEER : rv;
}

static int tc_recv(
    tw_channel *c, const char *key, int64_t timeout_ms, tw_buf *out)
{
	tchan *t = c->impl;
	return tw_mailbox_pop(
	    t->net->inbox[t->self], t->peer, key, timeout_ms, out);
}

static int tc_test_send(tw_channel *c, int64_t timeout_ms)
{
	(void)timeout_ms; // every inbox exists from the start
	return tc_send(c, HELLO_KEY, NULL, 0);
}

static int tc_test_recv(tw_channel *c)
{
	tw_buf b = { 0 };
	int rv = tc_recv(c, HELLO_KEY, 30000, &b);
	tw_buf_free(&b);
	return rv;
}

static void tc_abort(tw_channel *c)
{
	tchan *t = c->impl;
	tw_mailbox_abort(t->net->inbox[t->self]);
	tw_mailbox_close_from(t->net->inbox[t->peer], t->self);
}

static void tc_destroy(tw_channel *c)
{
	tchan *t = c->impl;
	// Both directions end.  The peer's sends are refused before it is
	// told, so that a peer that saw TW_EPEER on a receive (after draining
	// what it had) cannot then send successfully.
	tw_mailbox_close_from(t->net->inbox[t->self], t->peer);
	tw_mailbox_close_from(t->net->inbox[t->peer], t->self);
	free(t);
}

static const tw_channel_ops tc_ops = {
	.send = tc_send,
	.send_async = NULL,
	.recv = tc_recv,
	.test_send = tc_test_send,
	.test_recv = tc_test_recv,
	.wait_pending = NULL,
	.abort = tc_abort,
	.destroy = tc_destroy,
};

int testchan_make(testchan_net *net, size_t self, tw_channel **chans)
{
	for (size_t j = 0; j < net->n; j++) {
		chans[j] = NULL;
		if (j == self)
			continue;
		tchan *t = calloc(1, sizeof(*t));
		if (t == NULL)
			return TW_ENOMEM;
		t->ch.ops = &tc_ops;
		t->ch.impl = t;
		t->net = net;
		t->self = (uint32_t)self;
		t->peer = (uint32_t)j;
		chans[j] = &t->ch;
	}
	return TW_OK;
}
