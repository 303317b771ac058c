// Link creation and life-cycle errors that need no peer traffic.

#include <pthread.h>
#include <string.h>

#include "testutil.h"

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
		cmocka_unit_test(t_null_safe),
	};
	return cmocka_run_group_tests_name("link", tests, NULL, NULL);
}
