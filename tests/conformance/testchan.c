// The test channel: party i's channel to j pushes into j's inbox under
// sender i and pops its own inbox under sender j.  Only public API here.
//
// Asynchronous sends are not delivered at once: they wait in the sender's
// outbox to the peer until something moves them, as in a transport whose
// bytes are still on their way.  The sender moves them before a
// synchronous send (which must arrive after them) and in wait_pending; the
// receiver moves them while it waits in recv, looking again every
// TC_PULL_MS, but not in a recv that does not wait (a probe): so a party
// that was told wait_pending returned can see whether it really waited.

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "testchan.h"

#define HELLO_KEY "\001hello"
// How often a waiting receive moves what its peer sent asynchronously.
#define TC_PULL_MS 1

typedef struct tc_msg {
	struct tc_msg *next;
	char *key;
	void *data;
	size_t len;
} tc_msg;

// What party i sent party j asynchronously and was not delivered yet.
typedef struct tc_outbox {
	pthread_mutex_t mtx;
	tc_msg *head, *tail; // protected by mtx
	int failed; // the first delivery error, protected by mtx
	bool dead; // the sender aborted or was destroyed, protected by mtx
} tc_outbox;

struct testchan_net {
	size_t n;
	bool lazy_wait;
	tw_mailbox **inbox;
	tc_outbox *out; // out[i * n + j]: from i to j
};

typedef struct tchan {
	tw_channel ch;
	testchan_net *net;
	uint32_t self;
	uint32_t peer;
} tchan;

testchan_net *testchan_net_new(size_t n, bool lazy_wait)
{
	testchan_net *net = calloc(1, sizeof(*net));
	if (net == NULL)
		return NULL;
	net->n = n;
	net->lazy_wait = lazy_wait;
	net->inbox = calloc(n, sizeof(*net->inbox));
	net->out = calloc(n * n, sizeof(*net->out));
	if (net->inbox == NULL || net->out == NULL) {
		free(net->inbox);
		free(net->out);
		free(net);
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
		net->inbox[i] = tw_mailbox_new();
	for (size_t i = 0; i < n * n; i++)
		pthread_mutex_init(&net->out[i].mtx, NULL);
	return net;
}

static void msgs_free(tc_msg *m)
{
	for (tc_msg *n; m != NULL; m = n) {
		n = m->next;
		free(m->key);
		free(m->data);
		free(m);
	}
}

void testchan_net_free(testchan_net *net)
{
	if (net == NULL)
		return;
	for (size_t i = 0; i < net->n; i++)
		tw_mailbox_free(net->inbox[i]);
	for (size_t i = 0; i < net->n * net->n; i++) {
		msgs_free(net->out[i].head);
		pthread_mutex_destroy(&net->out[i].mtx);
	}
	free(net->out);
	free(net->inbox);
	free(net);
}

static tc_outbox *outbox(testchan_net *net, uint32_t from, uint32_t to)
{
	return &net->out[(size_t)from * net->n + to];
}

// Delivers what waits in from's outbox to `to`, in order.  Box mutex held.
static void flush_locked(
    testchan_net *net, tc_outbox *o, uint32_t from, uint32_t to)
{
	while (o->head != NULL) {
		tc_msg *m = o->head;
		o->head = m->next;
		int rv = tw_mailbox_push(
		    net->inbox[to], from, m->key, m->data, m->len);
		if (rv != TW_OK && o->failed == TW_OK)
			o->failed = rv == TW_ECLOSED ? TW_EPEER : rv;
		m->next = NULL;
		msgs_free(m);
	}
	o->tail = NULL;
}

static void flush(testchan_net *net, uint32_t from, uint32_t to)
{
	tc_outbox *o = outbox(net, from, to);
	pthread_mutex_lock(&o->mtx);
	flush_locked(net, o, from, to);
	pthread_mutex_unlock(&o->mtx);
}

static int tc_send(tw_channel *c, const char *key, const void *buf, size_t len)
{
	tchan *t = c->impl;
	tc_outbox *o = outbox(t->net, t->self, t->peer);
	pthread_mutex_lock(&o->mtx);
	// After what was sent before it, and before anything sent later.
	flush_locked(t->net, o, t->self, t->peer);
	int rv
	    = tw_mailbox_push(t->net->inbox[t->peer], t->self, key, buf, len);
	pthread_mutex_unlock(&o->mtx);
	// The peer's inbox refuses us once it aborted: to us, the peer is gone.
	return rv == TW_ECLOSED ? TW_EPEER : rv;
}

static int tc_send_async(
    tw_channel *c, const char *key, const void *buf, size_t len)
{
	tchan *t = c->impl;
	tc_msg *m = calloc(1, sizeof(*m));
	if (m == NULL)
		return TW_ENOMEM;
	m->key = strdup(key);
	m->len = len;
	m->data = len > 0 ? malloc(len) : NULL;
	if (m->key == NULL || (len > 0 && m->data == NULL)) {
		msgs_free(m);
		return TW_ENOMEM;
	}
	if (len > 0)
		memcpy(m->data, buf, len);
	tc_outbox *o = outbox(t->net, t->self, t->peer);
	pthread_mutex_lock(&o->mtx);
	int rv = o->dead ? TW_ECLOSED : o->failed;
	if (rv == TW_OK) {
		if (o->tail != NULL)
			o->tail->next = m;
		else
			o->head = m;
		o->tail = m;
		m = NULL;
	}
	pthread_mutex_unlock(&o->mtx);
	msgs_free(m);
	return rv;
}

static int tc_recv(
    tw_channel *c, const char *key, int64_t timeout_ms, tw_buf *out)
{
	tchan *t = c->impl;
	tw_mailbox *in = t->net->inbox[t->self];
	if (timeout_ms == 0)
		return tw_mailbox_pop(in, t->peer, key, 0, out);
	// Wait in short slices, moving what the peer sent meanwhile.
	for (int64_t waited = 0;; waited += TC_PULL_MS) {
		flush(t->net, t->peer, t->self);
		int64_t slice
		    = timeout_ms < 0 || timeout_ms - waited > TC_PULL_MS
		    ? TC_PULL_MS
		    : timeout_ms - waited;
		int rv = tw_mailbox_pop(in, t->peer, key, slice, out);
		if (rv != TW_ETIMEDOUT
		    || (timeout_ms >= 0 && waited + slice >= timeout_ms))
			return rv;
	}
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

static int tc_wait_pending(tw_channel *c)
{
	tchan *t = c->impl;
	tc_outbox *o = outbox(t->net, t->self, t->peer);
	pthread_mutex_lock(&o->mtx);
	flush_locked(t->net, o, t->self, t->peer);
	int rv = o->failed;
	pthread_mutex_unlock(&o->mtx);
	return rv;
}

// A wait_pending that does not wait: the suite must notice (see
// testchan_net_new).
static int tc_wait_pending_lazy(tw_channel *c)
{
	(void)c;
	return TW_OK;
}

// Ends the outbox: what it holds is delivered (a close, as a socket sends
// what it holds) or dropped (an abort).
static void outbox_end(tchan *t, bool deliver)
{
	tc_outbox *o = outbox(t->net, t->self, t->peer);
	pthread_mutex_lock(&o->mtx);
	if (deliver && !o->dead)
		flush_locked(t->net, o, t->self, t->peer);
	o->dead = true;
	msgs_free(o->head);
	o->head = o->tail = NULL;
	pthread_mutex_unlock(&o->mtx);
}

static void tc_abort(tw_channel *c)
{
	tchan *t = c->impl;
	outbox_end(t, false);
	tw_mailbox_abort(t->net->inbox[t->self]);
	tw_mailbox_close_from(t->net->inbox[t->peer], t->self);
}

static void tc_destroy(tw_channel *c)
{
	tchan *t = c->impl;
	outbox_end(t, true);
	// Both directions end.  The peer's sends are refused before it is
	// told, so that a peer that saw TW_EPEER on a receive (after draining
	// what it had) cannot then send successfully.
	tw_mailbox_close_from(t->net->inbox[t->self], t->peer);
	tw_mailbox_close_from(t->net->inbox[t->peer], t->self);
	free(t);
}

static const tw_channel_ops tc_ops = {
	.send = tc_send,
	.send_async = tc_send_async,
	.recv = tc_recv,
	.test_send = tc_test_send,
	.test_recv = tc_test_recv,
	.wait_pending = tc_wait_pending,
	.abort = tc_abort,
	.destroy = tc_destroy,
};

static const tw_channel_ops tc_lazy_ops = {
	.send = tc_send,
	.send_async = tc_send_async,
	.recv = tc_recv,
	.test_send = tc_test_send,
	.test_recv = tc_test_recv,
	.wait_pending = tc_wait_pending_lazy,
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
		t->ch.ops = net->lazy_wait ? &tc_lazy_ops : &tc_ops;
		t->ch.impl = t;
		t->net = net;
		t->self = (uint32_t)self;
		t->peer = (uint32_t)j;
		chans[j] = &t->ch;
	}
	return TW_OK;
}
