// Link creation and life-cycle errors that need no peer traffic.

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "testutil.h"
#include "transport/transport.h"

static tw_desc *desc2(const char *id, const char *a0, const char *a1)
{
	tw_desc *d = tw_desc_new(id);
	assert_non_null(d);
	TW_PASS(tw_desc_add_party(d, "a", a0));
	TW_PASS(tw_desc_add_party(d, "b", a1));
	TW_PASS(tw_desc_set(d, TW_OPT_CONNECT_TIMEOUT_MS, 200));
	return d;
}

static void t_create_bad_args(void **state)
{
	tw_link *l = (tw_link *)0x1;
	tw_desc *d = desc2("lt1", "mem://a", "mem://b");
	TW_FAIL(tw_link_create(NULL, 0, &l), TW_EINVAL);
	TW_FAIL(tw_link_create(d, 0, NULL), TW_EINVAL);
	TW_FAIL(tw_link_create(d, 2, &l), TW_EINVAL);
	assert_ptr_equal(l, (tw_link *)0x1); // outputs untouched on error
	tw_desc *empty = tw_desc_new("lt-empty");
	TW_FAIL(tw_link_create(empty, 0, &l), TW_EINVAL);
	tw_desc_free(empty);
	tw_desc_free(d);
}

static void t_single_party(void **state)
{
	tw_desc *d = tw_desc_new("lt-single");
	TW_PASS(tw_desc_add_party(d, "only", "mem://only"));
	tw_link *l;
	TW_PASS(tw_link_create(d, 0, &l));
	assert_int_equal(tw_link_size(l), 1);
	assert_int_equal(tw_link_rank(l), 0);
	assert_string_equal(tw_link_id(l), "lt-single");
	TW_FAIL(tw_send(l, 0, "t", "x", 1), TW_EINVAL); // to self
	TW_PASS(tw_barrier(l, "b"));
	tw_buf out[1];
	TW_PASS(tw_allgather(l, "g", "abc", 3, out));
	assert_int_equal(out[0].len, 3);
	assert_memory_equal(out[0].data, "abc", 3);
	tw_buf_free(&out[0]);
	TW_PASS(tw_link_wait_pending(l));
	TW_PASS(tw_link_close(l));
	TW_PASS(tw_link_close(NULL));
	tw_desc_free(d);
}

static void t_timeout_alone(void **state)
{
	tw_desc *d = desc2("lt2", "mem://a", "mem://b");
	tw_link *l = NULL;
	TW_FAIL(tw_link_create(d, 0, &l), TW_ETIMEDOUT);
	assert_null(l);
	tw_desc_free(d);
}

typedef struct creator {
	tw_desc *d;
	size_t rank;
	int rv;
	tw_link *l;
} creator;

static void *create_thread(void *a)
{
	creator *c = a;
	c->rv = tw_link_create(c->d, c->rank, &c->l);
	return NULL;
}

static void t_address_in_use(void **state)
{
	tw_desc *d = desc2("lt3", "mem://a", "mem://b");
	TW_PASS(tw_desc_set(d, TW_OPT_CONNECT_TIMEOUT_MS, 5000));
	creator c = { d, 1, 0, NULL };
	pthread_t th;
	pthread_create(&th, NULL, create_thread, &c);
	tw_link *l;
	TW_PASS(tw_link_create(d, 0, &l));
	pthread_join(th, NULL);
	TW_PASS(c.rv);
	// The same link id and address again in this process: in use.
	tw_link *dup = NULL;
	TW_FAIL(tw_link_create(d, 0, &dup), TW_ESYS);
	assert_null(dup);
	TW_PASS(tw_link_close(c.l));
	TW_PASS(tw_link_close(l));
	tw_desc_free(d);
}

static int noop_send(tw_channel *c, const char *k, const void *b, size_t n)
{
	return TW_OK;
}

static int noop_recv(tw_channel *c, const char *k, int64_t t, tw_buf *o)
{
	return TW_ETIMEDOUT;
}

static int noop_test_send(tw_channel *c, int64_t t)
{
	return TW_OK;
}

static int refuse_test_recv(tw_channel *c)
{
	return TW_EPEER;
}

static int destroyed;

static void count_destroy(tw_channel *c)
{
	destroyed++;
}

static void t_with_channels_errors(void **state)
{
	tw_desc *d = desc2("lt5", "mem://x", "mem://y");
	static const tw_channel_ops no_recv = { .send = noop_send,
		.test_send = noop_test_send,
		.test_recv = refuse_test_recv,
		.destroy = count_destroy };
	static const tw_channel_ops refusing = { .send = noop_send,
		.recv = noop_recv,
		.test_send = noop_test_send,
		.test_recv = refuse_test_recv,
		.destroy = count_destroy };
	tw_channel bad = { &no_recv, NULL }, peer = { &refusing, NULL };
	tw_link *l = NULL;
	tw_channel *chans[2] = { NULL, &bad };
	TW_FAIL(tw_link_create_with_channels(d, 0, chans, &l), TW_EINVAL);
	chans[1] = NULL;
	TW_FAIL(tw_link_create_with_channels(d, 0, chans, &l), TW_EINVAL);
	tw_channel *self_set[2] = { &peer, &peer };
	TW_FAIL(tw_link_create_with_channels(d, 0, self_set, &l), TW_EINVAL);
	TW_FAIL(tw_link_create_with_channels(d, 0, NULL, &l), TW_EINVAL);
	// A failed handshake leaves the channels to the caller.
	tw_channel *ok[2] = { NULL, &peer };
	destroyed = 0;
	TW_FAIL(tw_link_create_with_channels(d, 0, ok, &l), TW_EPEER);
	assert_int_equal(destroyed, 0);
	assert_null(l);
	tw_desc_free(d);
}

// --- tables of every size (tw_channel_ops.size) ----------------------------

// A channel between two threads over two mailboxes: each party pops its
// own inbox and pushes into its peer's.
typedef struct pchan {
	tw_channel ch;
	tw_mailbox *in, *out;
	uint32_t self, peer;
} pchan;

static _Atomic int async_calls, wait_calls;

static int p_send(tw_channel *c, const char *key, const void *buf, size_t n)
{
	pchan *p = c->impl;
	int rv = tw_mailbox_push(p->out, p->self, key, buf, n);
	return rv == TW_ECLOSED ? TW_EPEER : rv;
}

static int p_send_async(
    tw_channel *c, const char *key, const void *buf, size_t n)
{
	atomic_fetch_add_explicit(&async_calls, 1, memory_order_relaxed);
	return p_send(c, key, buf, n);
}

static int p_recv(tw_channel *c, const char *key, int64_t ms, tw_buf *out)
{
	pchan *p = c->impl;
	return tw_mailbox_pop(p->in, p->peer, key, ms, out);
}

static int p_test_send(tw_channel *c, int64_t ms)
{
	(void)ms;
	return p_send(c, "\001hello", NULL, 0);
}

static int p_test_recv(tw_channel *c)
{
	tw_buf b = { 0 };
	int rv = p_recv(c, "\001hello", tw_test_scale_ms(5000), &b);
	tw_buf_free(&b);
	return rv;
}

static int p_wait_pending(tw_channel *c)
{
	(void)c;
	atomic_fetch_add_explicit(&wait_calls, 1, memory_order_relaxed);
	return TW_OK;
}

static void p_abort(tw_channel *c)
{
	pchan *p = c->impl;
	tw_mailbox_abort(p->in);
	tw_mailbox_close_from(p->out, p->self);
}

static void p_destroy(tw_channel *c)
{
	pchan *p = c->impl;
	tw_mailbox_close_from(p->out, p->self);
}

// An op of a later version, which this library must never call.
static void p_later(void)
{
	fail_msg("an op beyond the table this library knows was called");
}

#define P_OPS                                                                 \
	.send = p_send, .send_async = p_send_async, .recv = p_recv,           \
	.test_send = p_test_send, .test_recv = p_test_recv,                   \
	.wait_pending = p_wait_pending, .abort = p_abort,                     \
	.destroy = p_destroy

// As written before the size field existed: size 0.
static const tw_channel_ops ops_old = { P_OPS };
static const tw_channel_ops ops_now
    = { P_OPS, .size = sizeof(tw_channel_ops) };
// As a later header may define it: more ops after the size field.
static const struct {
	tw_channel_ops ops;
	void (*later[3])(void);
} ops_later
    = { { P_OPS, .size = sizeof(ops_later) }, { p_later, p_later, p_later } };

typedef struct pparty {
	tw_desc *d;
	size_t rank;
	pchan chan;
	int rv;
} pparty;

// Creates the link over the party's channel, sends or receives two
// messages (one asynchronous), waits for pending sends, and closes.
static void *pparty_run(void *arg)
{
	pparty *pp = arg;
	tw_channel *chans[2] = { NULL, NULL };
	chans[1 - pp->rank] = &pp->chan.ch;
	tw_link *l = NULL;
	int rv = tw_link_create_with_channels(pp->d, pp->rank, chans, &l);
	tw_buf b = { 0 };
	if (rv == TW_OK && pp->rank == 0)
		rv = tw_send_async(l, 1, "a", "xy", 2);
	if (rv == TW_OK && pp->rank == 0)
		rv = tw_send(l, 1, "s", "z", 1);
	if (rv == TW_OK && pp->rank == 1)
		rv = tw_recv(l, 0, "a", &b);
	if (rv == TW_OK && pp->rank == 1)
		rv = b.len == 2 && memcmp(b.data, "xy", 2) == 0 ? TW_OK
		                                                : TW_EPROTO;
	tw_buf_free(&b);
	if (rv == TW_OK && pp->rank == 1)
		rv = tw_recv(l, 0, "s", &b);
	tw_buf_free(&b);
	if (rv == TW_OK)
		rv = tw_barrier(l, "b");
	if (rv == TW_OK)
		rv = tw_link_wait_pending(l);
	int crv = l != NULL ? tw_link_close(l) : TW_OK;
	pp->rv = rv != TW_OK ? rv : crv;
	return NULL;
}

// Runs a two-party link over channels with table `ops`; the optional ops
// must be used (the table's size covers them).
static void run_with_ops(const tw_channel_ops *ops)
{
	tw_desc *d = desc2("lt-ops", "mem://x", "mem://y");
	tw_mailbox *box[2] = { tw_mailbox_new(), tw_mailbox_new() };
	pparty pp[2];
	for (size_t i = 0; i < 2; i++) {
		pp[i] = (pparty) { .d = d, .rank = i };
		pp[i].chan = (pchan) { { ops, &pp[i].chan }, box[i],
			box[1 - i], (uint32_t)i, (uint32_t)(1 - i) };
	}
	atomic_store_explicit(&async_calls, 0, memory_order_relaxed);
	atomic_store_explicit(&wait_calls, 0, memory_order_relaxed);
	pthread_t th;
	pthread_create(&th, NULL, pparty_run, &pp[1]);
	pparty_run(&pp[0]);
	pthread_join(th, NULL);
	TW_PASS(pp[0].rv);
	TW_PASS(pp[1].rv);
	assert_true(
	    atomic_load_explicit(&async_calls, memory_order_relaxed) > 0);
	assert_true(
	    atomic_load_explicit(&wait_calls, memory_order_relaxed) > 0);
	tw_mailbox_free(box[0]);
	tw_mailbox_free(box[1]);
	tw_desc_free(d);
}

static void t_ops_size_old(void **state)
{
	run_with_ops(&ops_old);
}

static void t_ops_size_now(void **state)
{
	run_with_ops(&ops_now);
}

static void t_ops_size_later(void **state)
{
	run_with_ops(&ops_later.ops);
}

// The last error line logged.
static char last_error[512];

static void capture_error(const tw_log_record *rec, void *arg)
{
	if (rec->level == TW_LOG_ERROR)
		snprintf(last_error, sizeof(last_error), "%s", rec->msg);
}

// Creation over a channel with table `ops` is refused with a line that
// holds `what`, and the channel stays the caller's.
static void refused_ops(const tw_channel_ops *ops, const char *what)
{
	tw_desc *d = desc2("lt-bad-ops", "mem://x", "mem://y");
	tw_channel c = { ops, NULL };
	tw_channel *chans[2] = { NULL, &c };
	tw_link *l = NULL;
	last_error[0] = '\0';
	TW_PASS(tw_log_set_handler(capture_error, NULL));
	int rv = tw_link_create_with_channels(d, 0, chans, &l);
	TW_PASS(tw_log_set_handler(NULL, NULL));
	TW_FAIL(rv, TW_EINVAL);
	assert_null(l);
	if (strstr(last_error, what) == NULL)
		fail_msg(
		    "want a line naming '%s', got '%s'", what, last_error);
	tw_desc_free(d);
}

static void t_ops_required(void **state)
{
	static const char *const names[]
	    = { "send", "recv", "test_send", "test_recv", "destroy" };
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		tw_channel_ops o = ops_now;
		if (i == 0)
			o.send = NULL;
		else if (i == 1)
			o.recv = NULL;
		else if (i == 2)
			o.test_send = NULL;
		else if (i == 3)
			o.test_recv = NULL;
		else
			o.destroy = NULL;
		char what[64];
		snprintf(what, sizeof(what),
		    "channel 1 lacks the required op %s", names[i]);
		refused_ops(&o, what);
		o.size = 0; // the old shape needs them too
		refused_ops(&o, what);
	}
	// The optional ones may be missing, under either shape.
	tw_channel_ops o = { .send = p_send,
		.recv = p_recv,
		.test_send = p_test_send,
		.test_recv = p_test_recv,
		.destroy = p_destroy };
	char why[160];
	assert_int_equal(tw__chan_ops_check(&o, why, sizeof(why)), TW_OK);
	o.size = sizeof(o);
	assert_int_equal(tw__chan_ops_check(&o, why, sizeof(why)), TW_OK);
}

static void t_ops_nonsense_size(void **state)
{
	size_t align = _Alignof(tw_channel_ops);
	size_t min = offsetof(tw_channel_ops, size) + sizeof(size_t);
	const size_t bad[] = { 1, align, offsetof(tw_channel_ops, size),
		min - 1, min + 1, sizeof(tw_channel_ops) + 1,
		TW__CHAN_OPS_SIZE_MAX + align, SIZE_MAX,
		(size_t)(uintptr_t)&ops_now };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		tw_channel_ops o = ops_now;
		o.size = bad[i];
		char what[64];
		snprintf(what, sizeof(what), "size %zu,", bad[i]);
		refused_ops(&o, what);
	}
	// The limits themselves are sizes a table may have.
	tw_channel_ops o = ops_now;
	char why[160];
	o.size = min;
	assert_int_equal(tw__chan_ops_check(&o, why, sizeof(why)), TW_OK);
	o.size = TW__CHAN_OPS_SIZE_MAX;
	assert_int_equal(tw__chan_ops_check(&o, why, sizeof(why)), TW_OK);
}

static void t_null_safe(void **state)
{
	tw_stats st = { 1, 1, 1, 1 };
	tw_link_stats(NULL, &st);
	assert_int_equal(st.msgs_sent, 1);
	tw_link_abort(NULL);
	TW_FAIL(tw_link_set_recv_timeout(NULL, 5), TW_EINVAL);
	TW_FAIL(tw_link_wait_pending(NULL), TW_EINVAL);
	TW_FAIL(tw_link_spawn(NULL, "x", NULL), TW_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_create_bad_args),
		cmocka_unit_test(t_single_party),
		cmocka_unit_test(t_timeout_alone),
		cmocka_unit_test(t_address_in_use),
		cmocka_unit_test(t_with_channels_errors),
		cmocka_unit_test(t_ops_size_old),
		cmocka_unit_test(t_ops_size_now),
		cmocka_unit_test(t_ops_size_later),
		cmocka_unit_test(t_ops_required),
		cmocka_unit_test(t_ops_nonsense_size),
		cmocka_unit_test(t_null_safe),
	};
	return cmocka_run_group_tests_name("link", tests, NULL, NULL);
}
