// Unit tests of the mailbox (mailbox.c): the public (from, tag) FIFOs with
// blocking pops, and the internal operations the transports build on
// (ownership-taking and flow-controlled pushes, pops into caller memory,
// per-namespace close, abort and reopen).
//
// Threads never synchronise with sleeps.  A helper thread that must be
// blocked in the mailbox when the main thread acts announces itself with a
// flag and a condition variable right before it calls in; the main thread
// then gives it a bounded chance to reach its sleep by watching the
// thread's scheduler state in /proc.  That last step is a perturbation
// only: every assertion holds whether the helper was already asleep or
// not.  Helper threads never call cmocka (its assertions long-jump on the
// thread that runs the test); they record what they saw, and the main
// thread checks it after the join.
//
// Out-of-memory paths are driven by wrapping malloc, calloc and realloc at
// link time (see tests.cmake): failalloc_after(n) lets n allocations through and
// fails every later one until failalloc_never().

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/mailbox.h"
#include "failalloc.h"
#include "testutil.h"

#define MS INT64_C(1000000)

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

static int64_t slack_ms(void)
{
	// Generous: a loaded CI machine or a sanitizer build may be slow to
	// wake a thread, but never by seconds.
	return tw_test_scale_ms(2000);
}

// How long a helper thread waits for the wake-up under test.  Bounded, so
// that a missing wake-up fails with TW_ETIMEDOUT and a message instead of
// hanging until ctest kills the program; long enough never to expire when
// the wake-up works.
static int64_t long_ms(void)
{
	return tw_test_scale_ms(20000);
}

static int64_t long_deadline(void)
{
	return tw__now_ns() + long_ms() * MS;
}

static int64_t elapsed_ms(int64_t start_ns)
{
	return (tw__now_ns() - start_ns) / MS;
}

static void push_str(
    tw_mailbox *m, uint32_t from, const char *tag, const char *s)
{
	TW_PASS(tw_mailbox_push(m, from, tag, s, strlen(s)));
}

// Pops without waiting and checks the payload.
static void expect_pop(
    tw_mailbox *m, uint32_t from, const char *tag, const char *want)
{
	tw_buf b = { NULL, 0 };
	TW_PASS(tw_mailbox_pop(m, from, tag, 0, &b));
	assert_int_equal(b.len, strlen(want));
	assert_non_null(b.data);
	assert_memory_equal(b.data, want, b.len);
	tw_buf_free(&b);
}

// What a data message of n bytes counts for flow control.
#define C(n) tw__msg_cost(n)

// A mailbox as the built-in transports use it.
static tw_mailbox *mb_new(void)
{
	tw_mailbox *m = tw_mailbox_new();
	assert_non_null(m);
	tw__mailbox_count_by_cost(m);
	return m;
}

// ---------------------------------------------------------------------------
// A helper thread blocked in one mailbox call
// ---------------------------------------------------------------------------

enum { OP_POP, OP_PUSH_OWNED, OP_POP_INTO };

typedef struct waiter {
	pthread_t thr;
	tw_mailbox *m;
	int op;
	uint32_t from;
	const char *key;
	int64_t timeout_ms; // OP_POP
	int64_t deadline; // OP_PUSH_OWNED, OP_POP_INTO
	size_t len; // OP_PUSH_OWNED: bytes to push
	uint64_t limit; // OP_PUSH_OWNED
	const _Atomic int *cancel; // OP_PUSH_OWNED

	pthread_mutex_t mtx;
	pthread_cond_t cv;
	bool started; // protected by mtx
	pid_t tid; // protected by mtx

	int status;
	tw_buf out;
	char into[64];
	size_t into_len;
	int64_t done_ns; // when the call returned
} waiter;

static void *waiter_main(void *arg)
{
	waiter *w = arg;
	void *data = NULL;
	if (w->op == OP_PUSH_OWNED && w->len > 0) {
		data = malloc(w->len);
		if (data != NULL)
			memset(data, 0x77, w->len);
	}
	pthread_mutex_lock(&w->mtx);
	w->tid = (pid_t)syscall(SYS_gettid);
	w->started = true;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mtx);

	switch (w->op) {
	case OP_POP:
		w->status = tw_mailbox_pop(
		    w->m, w->from, w->key, w->timeout_ms, &w->out);
		break;
	case OP_POP_INTO:
		w->status = tw__mailbox_pop_into(w->m, w->from, w->key,
		    w->deadline, w->into, sizeof(w->into), &w->into_len);
		break;
	case OP_PUSH_OWNED:
		w->status = tw__mailbox_push_owned(w->m, w->from, w->key, data,
		    w->len, w->limit, w->deadline, w->cancel);
		// Ownership passes only on success.
		if (w->status != TW_OK)
			free(data);
		break;
	}
	w->done_ns = tw__now_ns();
	return NULL;
}

// Gives thread `tid` a bounded chance to fall asleep (state S or D in
// /proc).  A perturbation only: nothing fails when it does not.
static void let_block(pid_t tid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
	int64_t give_up = tw__now_ns() + tw_test_scale_ms(2000) * MS;
	while (tw__now_ns() < give_up) {
		FILE *f = fopen(path, "r");
		if (f == NULL)
			return;
		char buf[512];
		size_t n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = '\0';
		const char *p = strrchr(buf, ')');
		if (p != NULL && p[1] == ' ' && (p[2] == 'S' || p[2] == 'D'))
			return;
		sched_yield();
	}
}

// Starts `w` and returns once it is about to call the mailbox (and, most
// likely, blocked in it).
static void waiter_start(waiter *w)
{
	pthread_mutex_init(&w->mtx, NULL);
	pthread_cond_init(&w->cv, NULL);
	w->started = false;
	w->status = 1; // no TW_* status
	w->out.data = NULL;
	w->out.len = 0;
	assert_int_equal(pthread_create(&w->thr, NULL, waiter_main, w), 0);
	pthread_mutex_lock(&w->mtx);
	while (!w->started)
		pthread_cond_wait(&w->cv, &w->mtx);
	pid_t tid = w->tid;
	pthread_mutex_unlock(&w->mtx);
	let_block(tid);
}

static void waiter_join(waiter *w)
{
	assert_int_equal(pthread_join(w->thr, NULL), 0);
	pthread_mutex_destroy(&w->mtx);
	pthread_cond_destroy(&w->cv);
}

// Joins `w` and checks that its call returned soon after the main thread
// acted at `act_ns`: a waiter that only noticed at its own deadline was not
// woken, even when the status it returns then looks right.
static void waiter_join_prompt(waiter *w, int64_t act_ns)
{
	waiter_join(w);
	int64_t late_ms = (w->done_ns - act_ns) / MS;
	if (late_ms >= slack_ms())
		fail_msg("waiter returned %lld ms after the wake-up",
		    (long long)late_ms);
}

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

static void test_fifo(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	// Interleave three keys; each must come out in its own push order.
	push_str(m, 1, "t", "t1");
	push_str(m, 1, "u", "u1");
	push_str(m, 2, "t", "x1");
	push_str(m, 1, "t", "t2");
	push_str(m, 2, "t", "x2");
	push_str(m, 1, "u", "u2");
	push_str(m, 1, "t", "t3");
	expect_pop(m, 1, "u", "u1");
	expect_pop(m, 1, "t", "t1");
	expect_pop(m, 2, "t", "x1");
	expect_pop(m, 1, "t", "t2");
	expect_pop(m, 1, "t", "t3");
	expect_pop(m, 2, "t", "x2");
	expect_pop(m, 1, "u", "u2");
	tw_buf b = { NULL, 0 };
	TW_FAIL(tw_mailbox_pop(m, 1, "t", 0, &b), TW_ETIMEDOUT);
	tw_mailbox_free(m);
}

static void test_copy_semantics(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	char src[16] = "original";
	TW_PASS(tw_mailbox_push(m, 1, "t", src, 9));
	// The caller may reuse its buffer at once.
	memcpy(src, "CLOBBER!", 9);
	tw_buf b = { NULL, 0 };
	TW_PASS(tw_mailbox_pop(m, 1, "t", 0, &b));
	assert_int_equal(b.len, 9);
	assert_memory_equal(b.data, "original", 9); // with its NUL
	tw_buf_free(&b);
	tw_mailbox_free(m);

	// Messages still queued at free are released with the mailbox
	// (LeakSanitizer checks).
	m = mb_new();
	push_str(m, 1, "a", "left behind");
	push_str(m, 2, "b", "also left");
	tw_mailbox_free(m);
	tw_mailbox_free(NULL);
}

static void test_keys_isolated(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	size_t len = 0;
	push_str(m, 1, "t", "one");
	// Another sender under the same tag sees nothing...
	tw_buf b = { NULL, 0 };
	TW_FAIL(tw_mailbox_pop(m, 2, "t", 0, &b), TW_ETIMEDOUT);
	TW_FAIL(tw_mailbox_probe(m, 2, "t", &len), TW_EAGAIN);
	// ...nor do senders whose id shares bytes with it...
	TW_FAIL(tw_mailbox_probe(m, 0x100 | 1, "t", &len), TW_EAGAIN);
	TW_FAIL(tw_mailbox_probe(m, 0x01000001, "t", &len), TW_EAGAIN);
	TW_FAIL(tw_mailbox_probe(m, UINT32_MAX, "t", &len), TW_EAGAIN);
	// ...nor tags that extend or prefix it.
	TW_FAIL(tw_mailbox_probe(m, 1, "tt", &len), TW_EAGAIN);
	TW_FAIL(tw_mailbox_probe(m, 1, "", &len), TW_EAGAIN);
	TW_FAIL(tw_mailbox_probe(m, 1, "T", &len), TW_EAGAIN);
	expect_pop(m, 1, "t", "one");

	// The empty tag is a key like any other.
	push_str(m, 1, "", "empty tag");
	TW_FAIL(tw_mailbox_probe(m, 1, "t", &len), TW_EAGAIN);
	expect_pop(m, 1, "", "empty tag");

	// Keys longer than any a link builds still work.
	char tag[1000];
	memset(tag, 'k', sizeof(tag) - 1);
	tag[sizeof(tag) - 1] = '\0';
	push_str(m, 7, tag, "long");
	tag[500] = 'K';
	TW_FAIL(tw_mailbox_probe(m, 7, tag, &len), TW_EAGAIN);
	tag[500] = 'k';
	expect_pop(m, 7, tag, "long");
	tw_mailbox_free(m);
}

static void test_zero_length(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	TW_PASS(tw_mailbox_push(m, 1, "z", NULL, 0));
	// A non-NULL buffer with length 0 is an empty message too.
	TW_PASS(tw_mailbox_push(m, 1, "z", "ignored", 0));
	size_t len = 99;
	TW_PASS(tw_mailbox_probe(m, 1, "z", &len));
	assert_int_equal(len, 0);
	for (int i = 0; i < 2; i++) {
		tw_buf b = { (void *)&len, 42 }; // garbage to be replaced
		TW_PASS(tw_mailbox_pop(m, 1, "z", 0, &b));
		assert_null(b.data);
		assert_int_equal(b.len, 0);
	}
	TW_FAIL(tw_mailbox_probe(m, 1, "z", &len), TW_EAGAIN);
	tw_mailbox_free(m);
}

static void test_einval(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	tw_buf b = { NULL, 0 };
	size_t len = 0;
	TW_FAIL(tw_mailbox_push(NULL, 1, "t", "x", 1), TW_EINVAL);
	TW_FAIL(tw_mailbox_push(m, 1, NULL, "x", 1), TW_EINVAL);
	TW_FAIL(tw_mailbox_push(m, 1, "t", NULL, 1), TW_EINVAL);
	TW_FAIL(tw_mailbox_pop(NULL, 1, "t", 0, &b), TW_EINVAL);
	TW_FAIL(tw_mailbox_pop(m, 1, NULL, 0, &b), TW_EINVAL);
	TW_FAIL(tw_mailbox_pop(m, 1, "t", 0, NULL), TW_EINVAL);
	TW_FAIL(tw_mailbox_probe(NULL, 1, "t", &len), TW_EINVAL);
	TW_FAIL(tw_mailbox_probe(m, 1, NULL, &len), TW_EINVAL);
	TW_FAIL(tw_mailbox_probe(m, 1, "t", NULL), TW_EINVAL);
	TW_FAIL(tw_mailbox_close_from(NULL, 1), TW_EINVAL);
	// A rejected push queued nothing.
	TW_FAIL(tw_mailbox_probe(m, 1, "t", &len), TW_EAGAIN);
	tw_mailbox_abort(NULL); // NULL-safe
	tw_mailbox_free(m);
}

static void test_pop_timeout(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	tw_buf b = { NULL, 0 };

	// Timeout 0 does not wait, and nothing queued is TW_ETIMEDOUT, not
	// TW_EAGAIN.
	int64_t t0 = tw__now_ns();
	TW_FAIL(tw_mailbox_pop(m, 1, "t", 0, &b), TW_ETIMEDOUT);
	assert_true(elapsed_ms(t0) < slack_ms());
	assert_null(b.data);

	// A queued message is returned by a zero timeout.
	push_str(m, 1, "t", "ready");
	expect_pop(m, 1, "t", "ready");

	// A positive timeout waits the whole timeout: never returns early,
	// and not much later.
	static const int64_t waits[] = { 1, 50, 200 };
	for (size_t i = 0; i < sizeof(waits) / sizeof(waits[0]); i++) {
		t0 = tw__now_ns();
		TW_FAIL(tw_mailbox_pop(m, 1, "t", waits[i], &b), TW_ETIMEDOUT);
		int64_t ns = tw__now_ns() - t0;
		if (ns < waits[i] * MS)
			fail_msg("pop(%lld ms) gave up after %lld us",
			    (long long)waits[i], (long long)(ns / 1000));
		assert_true(ns / MS < waits[i] + slack_ms());
		assert_null(b.data);
	}

	// An absolute deadline in the past is a poll.
	t0 = tw__now_ns();
	TW_FAIL(tw__mailbox_pop_until(m, 1, "t", tw__now_ns() - MS, &b),
	    TW_ETIMEDOUT);
	assert_true(elapsed_ms(t0) < slack_ms());

	// A lazy deadline counts from the moment the pop waits: the whole
	// timeout, then TW_ETIMEDOUT; zero is a poll; a message already
	// queued is returned.
	t0 = tw__now_ns();
	TW_FAIL(tw__mailbox_pop_until(m, 1, "t", tw__deadline_lazy_ms(50), &b),
	    TW_ETIMEDOUT);
	int64_t lazy_ns = tw__now_ns() - t0;
	assert_true(lazy_ns >= 50 * MS);
	assert_true(lazy_ns / MS < 50 + slack_ms());
	t0 = tw__now_ns();
	TW_FAIL(tw__mailbox_pop_until(m, 1, "t", tw__deadline_lazy_ms(0), &b),
	    TW_ETIMEDOUT);
	assert_true(elapsed_ms(t0) < slack_ms());
	push_str(m, 1, "t", "lazy");
	TW_PASS(
	    tw__mailbox_pop_until(m, 1, "t", tw__deadline_lazy_ms(50), &b));
	assert_int_equal(b.len, 4);
	assert_memory_equal(b.data, "lazy", 4);
	tw_buf_free(&b);

	// The timed-out pops left nothing behind that would break a later
	// exchange on the same key.
	push_str(m, 1, "t", "after");
	expect_pop(m, 1, "t", "after");
	tw_mailbox_free(m);
}

static void test_probe(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	size_t len = 12345;
	TW_FAIL(tw_mailbox_probe(m, 1, "t", &len), TW_EAGAIN);
	assert_int_equal(len, 12345); // untouched when nothing waits
	push_str(m, 1, "t", "abc");
	push_str(m, 1, "t", "defgh");
	// Probing does not consume and reports the oldest message.
	TW_PASS(tw_mailbox_probe(m, 1, "t", &len));
	assert_int_equal(len, 3);
	TW_PASS(tw_mailbox_probe(m, 1, "t", &len));
	assert_int_equal(len, 3);
	expect_pop(m, 1, "t", "abc");
	TW_PASS(tw_mailbox_probe(m, 1, "t", &len));
	assert_int_equal(len, 5);
	expect_pop(m, 1, "t", "defgh");
	TW_FAIL(tw_mailbox_probe(m, 1, "t", &len), TW_EAGAIN);
	tw_mailbox_free(m);
}

static void test_blocked_pop_gets_push(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	waiter w = { .m = m,
		.op = OP_POP,
		.from = 3,
		.key = "wake",
		.timeout_ms = long_ms() };
	waiter_start(&w);
	// A push under another key or sender must not satisfy it.
	push_str(m, 3, "other", "no");
	push_str(m, 4, "wake", "no");
	int64_t act = tw__now_ns();
	push_str(m, 3, "wake", "yes");
	waiter_join_prompt(&w, act);
	TW_PASS(w.status);
	assert_int_equal(w.out.len, 3);
	assert_memory_equal(w.out.data, "yes", 3);
	tw_buf_free(&w.out);
	expect_pop(m, 3, "other", "no");
	expect_pop(m, 4, "wake", "no");
	tw_mailbox_free(m);
}

static void test_close_from(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	size_t len = 0;
	tw_buf b = { NULL, 0 };
	push_str(m, 1, "t", "m1");
	push_str(m, 1, "t", "m2");
	push_str(m, 1, "u", "u1");
	push_str(m, 2, "t", "other");
	TW_PASS(tw_mailbox_close_from(m, 1));
	// Pushes from a closed sender are refused...
	TW_FAIL(tw_mailbox_push(m, 1, "t", "m3", 2), TW_EPEER);
	TW_FAIL(tw_mailbox_push(m, 1, "new", "m3", 2), TW_EPEER);
	// ...what it delivered can still be received, in order...
	TW_PASS(tw_mailbox_probe(m, 1, "t", &len));
	assert_int_equal(len, 2);
	expect_pop(m, 1, "t", "m1");
	expect_pop(m, 1, "t", "m2");
	// ...then its keys report the peer as gone, promptly even with a
	// long timeout.
	int64_t t0 = tw__now_ns();
	TW_FAIL(
	    tw_mailbox_pop(m, 1, "t", tw_test_scale_ms(10000), &b), TW_EPEER);
	TW_FAIL(tw_mailbox_pop(m, 1, "never-used", -1, &b), TW_EPEER);
	assert_true(elapsed_ms(t0) < slack_ms());
	TW_FAIL(tw_mailbox_probe(m, 1, "t", &len), TW_EPEER);
	// Another key of the closed sender drains the same way.
	expect_pop(m, 1, "u", "u1");
	TW_FAIL(tw_mailbox_pop(m, 1, "u", 0, &b), TW_EPEER);
	// Other senders are unaffected.
	expect_pop(m, 2, "t", "other");
	push_str(m, 2, "t", "still");
	expect_pop(m, 2, "t", "still");
	TW_FAIL(tw_mailbox_pop(m, 2, "t", 0, &b), TW_ETIMEDOUT);
	// Closing twice is harmless.
	TW_PASS(tw_mailbox_close_from(m, 1));
	// Closing a sender never heard from works too.
	TW_PASS(tw_mailbox_close_from(m, 9));
	TW_FAIL(tw_mailbox_probe(m, 9, "t", &len), TW_EPEER);
	TW_FAIL(tw_mailbox_push(m, 9, "t", NULL, 0), TW_EPEER);
	tw_mailbox_free(m);
}

static void test_close_from_wakes(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	waiter w = { .m = m,
		.op = OP_POP,
		.from = 5,
		.key = "t",
		.timeout_ms = long_ms() };
	waiter_start(&w);
	int64_t act = tw__now_ns();
	TW_PASS(tw_mailbox_close_from(m, 5));
	waiter_join_prompt(&w, act);
	TW_FAIL(w.status, TW_EPEER);
	assert_null(w.out.data);
	tw_mailbox_free(m);
}

static void test_abort(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	push_str(m, 2, "queued", "q");
	waiter w = { .m = m,
		.op = OP_POP,
		.from = 1,
		.key = "t",
		.timeout_ms = long_ms() };
	waiter_start(&w);
	int64_t act = tw__now_ns();
	tw_mailbox_abort(m);
	// The blocked pop woke with TW_ECLOSED, at once.
	waiter_join_prompt(&w, act);
	TW_FAIL(w.status, TW_ECLOSED);
	assert_null(w.out.data);

	// Everything after fails the same way, queued messages included.
	size_t len = 0;
	tw_buf b = { NULL, 0 };
	TW_FAIL(tw_mailbox_push(m, 1, "t", "x", 1), TW_ECLOSED);
	TW_FAIL(tw_mailbox_pop(m, 1, "t", -1, &b), TW_ECLOSED);
	TW_FAIL(tw_mailbox_pop(m, 2, "queued", 0, &b), TW_ECLOSED);
	TW_FAIL(tw_mailbox_probe(m, 2, "queued", &len), TW_ECLOSED);
	TW_FAIL(tw_mailbox_probe(m, 1, "t", &len), TW_ECLOSED);
	// Idempotent.
	tw_mailbox_abort(m);
	TW_FAIL(tw_mailbox_pop(m, 1, "t", 0, &b), TW_ECLOSED);
	tw_mailbox_free(m);
}

static void test_abort_wakes_many(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	enum { N = 4 };
	static const char *const keys[N] = { "a", "a", "b", "" };
	waiter w[N];
	for (int i = 0; i < N; i++) {
		w[i] = (waiter) { .m = m,
			.op = OP_POP,
			.from = (uint32_t)i % 2,
			.key = keys[i],
			.timeout_ms = long_ms() };
		waiter_start(&w[i]);
	}
	int64_t act = tw__now_ns();
	tw_mailbox_abort(m);
	// Join them all before checking: a failed check must not leave a
	// thread running on this frame.
	for (int i = 0; i < N; i++)
		waiter_join(&w[i]);
	for (int i = 0; i < N; i++) {
		TW_FAIL(w[i].status, TW_ECLOSED);
		assert_true((w[i].done_ns - act) / MS < slack_ms());
	}
	tw_mailbox_free(m);
}

// Exactly once, in order: four threads pop one key while a fifth pushes.
enum { EO_POPPERS = 4, EO_MSGS = 20000 };

typedef struct eo_popper {
	pthread_t thr;
	tw_mailbox *m;
	uint32_t *ids; // what this thread popped, in order
	size_t n;
	int status; // first unexpected status, TW_OK when none
	bool disorder; // an id not larger than the one before
	bool bad_len;
} eo_popper;

static void *eo_pop_main(void *arg)
{
	eo_popper *p = arg;
	p->status = TW_OK;
	for (;;) {
		tw_buf b = { NULL, 0 };
		int status = tw_mailbox_pop(
		    p->m, 1, "k", tw_test_scale_ms(20000), &b);
		if (status != TW_OK) {
			p->status = status;
			return NULL;
		}
		if (b.len == 0)
			return NULL; // the pusher's end marker
		uint32_t id;
		if (b.len != sizeof(id)) {
			p->bad_len = true;
			tw_buf_free(&b);
			return NULL;
		}
		memcpy(&id, b.data, sizeof(id));
		tw_buf_free(&b);
		if (p->n > 0 && id <= p->ids[p->n - 1])
			p->disorder = true;
		if (p->n < EO_MSGS)
			p->ids[p->n++] = id;
	}
}

typedef struct eo_pusher {
	tw_mailbox *m;
	int status;
} eo_pusher;

static void *eo_push_main(void *arg)
{
	eo_pusher *p = arg;
	p->status = TW_OK;
	for (uint32_t id = 0; id < EO_MSGS && p->status == TW_OK; id++)
		p->status = tw_mailbox_push(p->m, 1, "k", &id, sizeof(id));
	// One end marker per popper; they queue behind every id.
	for (int i = 0; i < EO_POPPERS && p->status == TW_OK; i++)
		p->status = tw_mailbox_push(p->m, 1, "k", NULL, 0);
	return NULL;
}

static void test_exactly_once(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	eo_popper pop[EO_POPPERS];
	for (int i = 0; i < EO_POPPERS; i++) {
		pop[i] = (eo_popper) { .m = m };
		pop[i].ids = calloc(EO_MSGS, sizeof(uint32_t));
		assert_non_null(pop[i].ids);
		assert_int_equal(
		    pthread_create(&pop[i].thr, NULL, eo_pop_main, &pop[i]),
		    0);
	}
	eo_pusher push = { .m = m };
	pthread_t pt;
	assert_int_equal(pthread_create(&pt, NULL, eo_push_main, &push), 0);
	assert_int_equal(pthread_join(pt, NULL), 0);
	for (int i = 0; i < EO_POPPERS; i++)
		assert_int_equal(pthread_join(pop[i].thr, NULL), 0);

	TW_PASS(push.status);
	unsigned char *seen = calloc(EO_MSGS, 1);
	assert_non_null(seen);
	size_t total = 0;
	for (int i = 0; i < EO_POPPERS; i++) {
		TW_PASS(pop[i].status);
		assert_false(pop[i].bad_len);
		// Each thread's pops are in push order (the FIFO holds for
		// every consumer, not only for the queue as a whole).
		assert_false(pop[i].disorder);
		for (size_t k = 0; k < pop[i].n; k++) {
			uint32_t id = pop[i].ids[k];
			assert_true(id < EO_MSGS);
			if (seen[id]++ != 0)
				fail_msg("id %u popped twice", id);
		}
		total += pop[i].n;
		free(pop[i].ids);
	}
	for (uint32_t id = 0; id < EO_MSGS; id++)
		if (seen[id] != 1)
			fail_msg("id %u popped %d times", id, seen[id]);
	assert_int_equal(total, EO_MSGS);
	free(seen);
	// Nothing is left: all markers were taken too.
	size_t len;
	TW_FAIL(tw_mailbox_probe(m, 1, "k", &len), TW_EAGAIN);
	tw_mailbox_free(m);
}

static void test_out_of_memory_new(void **state)
{
	(void)state;
	failalloc_after(0);
	tw_mailbox *m = tw_mailbox_new();
	failalloc_never();
	assert_null(m);
}

// The push sweep runs in a child process: a library that gives up with
// exit() on an allocation failure must show up as a red test, not end the
// whole test program.
static int oom_push_sweep(void)
{
	for (int n = 0; n < 64; n++) {
		tw_mailbox *m = tw_mailbox_new();
		if (m == NULL)
			return 10;
		failalloc_after(n);
		int status = tw_mailbox_push(m, 1, "t", "abc", 3);
		failalloc_never();
		if (status == TW_OK) {
			tw_buf b = { NULL, 0 };
			if (tw_mailbox_pop(m, 1, "t", 0, &b) != TW_OK
			    || b.len != 3)
				return 11;
			tw_buf_free(&b);
			tw_mailbox_free(m);
			return n > 0 ? 0 : 12; // no allocation at all?
		}
		if (status != TW_ENOMEM) {
			fprintf(stderr, "push with %d allocations: %s\n", n,
			    tw_err_name(status));
			return 13;
		}
		// A failed push left nothing behind, and the mailbox still
		// works.
		size_t len;
		if (tw_mailbox_probe(m, 1, "t", &len) != TW_EAGAIN)
			return 14;
		if (tw_mailbox_push(m, 1, "t", "x", 1) != TW_OK)
			return 15;
		tw_mailbox_free(m);
	}
	return 16;
}

static void test_out_of_memory_push(void **state)
{
	(void)state;
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(oom_push_sweep());
	int st = 0;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	if (WIFSIGNALED(st))
		fail_msg("push under allocation failure: killed by signal %d",
		    WTERMSIG(st));
	if (WEXITSTATUS(st) == 255)
		fail_msg("push under allocation failure called exit(-1) "
		         "instead of returning TW_ENOMEM (uthash_fatal?)");
	if (WEXITSTATUS(st) != 0)
		fail_msg("push under allocation failure: check %d failed",
		    WEXITSTATUS(st));
}

// ---------------------------------------------------------------------------
// Internal operations
// ---------------------------------------------------------------------------

static void test_pop_into(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	char buf[16];
	size_t len = 0;
	push_str(m, 1, "k", "hello");
	push_str(m, 1, "k", "next");
	// Too small: the needed size comes back and the message stays.
	memset(buf, '#', sizeof(buf));
	TW_FAIL(tw__mailbox_pop_into(m, 1, "k", 0, buf, 2, &len), TW_ETRUNC);
	assert_int_equal(len, 5);
	assert_int_equal(buf[0], '#'); // nothing written
	TW_FAIL(tw__mailbox_pop_into(m, 1, "k", 0, NULL, 0, &len), TW_ETRUNC);
	assert_int_equal(len, 5);
	size_t plen = 0;
	TW_PASS(tw_mailbox_probe(m, 1, "k", &plen));
	assert_int_equal(plen, 5);
	// An exact fit succeeds and takes it; the order is unchanged.
	TW_PASS(tw__mailbox_pop_into(m, 1, "k", 0, buf, 5, &len));
	assert_int_equal(len, 5);
	assert_memory_equal(buf, "hello", 5);
	TW_PASS(tw__mailbox_pop_into(m, 1, "k", 0, buf, sizeof(buf), &len));
	assert_int_equal(len, 4);
	assert_memory_equal(buf, "next", 4);
	// Empty messages fit anywhere, even a NULL buffer.
	TW_PASS(tw_mailbox_push(m, 1, "k", NULL, 0));
	len = 99;
	TW_PASS(tw__mailbox_pop_into(m, 1, "k", 0, NULL, 0, &len));
	assert_int_equal(len, 0);
	// Waits up to the deadline, not less.
	int64_t t0 = tw__now_ns();
	TW_FAIL(tw__mailbox_pop_into(
	            m, 1, "k", t0 + 50 * MS, buf, sizeof(buf), &len),
	    TW_ETIMEDOUT);
	assert_true(tw__now_ns() - t0 >= 50 * MS);
	assert_true(elapsed_ms(t0) < 50 + slack_ms());
	// Bad arguments.
	TW_FAIL(
	    tw__mailbox_pop_into(NULL, 1, "k", 0, buf, 1, &len), TW_EINVAL);
	TW_FAIL(tw__mailbox_pop_into(m, 1, NULL, 0, buf, 1, &len), TW_EINVAL);
	TW_FAIL(tw__mailbox_pop_into(m, 1, "k", 0, NULL, 1, &len), TW_EINVAL);
	TW_FAIL(tw__mailbox_pop_into(m, 1, "k", 0, buf, 1, NULL), TW_EINVAL);
	tw_mailbox_free(m);
}

static void test_pop_into_wakes(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	waiter w = { .m = m,
		.op = OP_POP_INTO,
		.from = 1,
		.key = "k",
		.deadline = long_deadline() };
	waiter_start(&w);
	int64_t act = tw__now_ns();
	push_str(m, 1, "k", "into");
	waiter_join_prompt(&w, act);
	TW_PASS(w.status);
	assert_int_equal(w.into_len, 4);
	assert_memory_equal(w.into, "into", 4);
	tw_mailbox_free(m);
}

static void *owned(const char *s, size_t *len)
{
	*len = strlen(s);
	char *p = malloc(*len);
	assert_non_null(p);
	memcpy(p, s, *len);
	return p;
}

static void test_push_owned(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	size_t len;
	void *p = owned("mine", &len);
	TW_PASS(tw__mailbox_push_owned(
	    m, 1, "k", p, len, UINT64_MAX, TW_FOREVER, NULL));
	// The mailbox hands out the very buffer it was given.
	tw_buf b = { NULL, 0 };
	TW_PASS(tw_mailbox_pop(m, 1, "k", 0, &b));
	assert_ptr_equal(b.data, p);
	assert_int_equal(b.len, 4);
	tw_buf_free(&b);
	TW_PASS(
	    tw__mailbox_push_owned(m, 1, "k", NULL, 0, 0, TW_FOREVER, NULL));
	TW_PASS(tw_mailbox_pop(m, 1, "k", 0, &b));
	assert_null(b.data);

	p = owned("x", &len);
	TW_FAIL(tw__mailbox_push_owned(
	            NULL, 1, "k", p, len, UINT64_MAX, TW_FOREVER, NULL),
	    TW_EINVAL);
	TW_FAIL(tw__mailbox_push_owned(
	            m, 1, NULL, p, len, UINT64_MAX, TW_FOREVER, NULL),
	    TW_EINVAL);
	TW_FAIL(tw__mailbox_push_owned(
	            m, 1, "k", NULL, 1, UINT64_MAX, TW_FOREVER, NULL),
	    TW_EINVAL);
	free(p); // still ours: every push failed
	tw_mailbox_free(m);
}

// Copied pushes: a message of a few bytes lives in its node, and nodes are
// reused, so that once the mailbox has run a while a small message needs
// no allocation at all; larger ones get memory of their own.
static void test_push_copy(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	char big[200], got[256];
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)('a' + i % 26);
	size_t len = 0;
	TW_PASS(tw__mailbox_push_copy(
	    m, 1, "k", "small", 5, UINT64_MAX, TW_FOREVER, NULL));
	TW_PASS(tw__mailbox_push_copy(
	    m, 1, "k", big, sizeof(big), UINT64_MAX, TW_FOREVER, NULL));
	TW_PASS(tw__mailbox_push_copy(
	    m, 1, "k", NULL, 0, UINT64_MAX, TW_FOREVER, NULL));
	TW_PASS(tw__mailbox_pop_into(m, 1, "k", 0, got, sizeof(got), &len));
	assert_int_equal(len, 5);
	assert_memory_equal(got, "small", 5);
	TW_PASS(tw__mailbox_pop_into(m, 1, "k", 0, got, sizeof(got), &len));
	assert_int_equal(len, sizeof(big));
	assert_memory_equal(got, big, sizeof(big));
	TW_PASS(tw__mailbox_pop_into(m, 1, "k", 0, got, sizeof(got), &len));
	assert_int_equal(len, 0);

	// Warm now: three small messages at once (as many as were queued
	// above) come and go without one allocation.
	failalloc_after(0);
	int st = TW_OK;
	for (int i = 0; i < 3 && st == TW_OK; i++) {
		char v[2] = { (char)('0' + i), 0 };
		st = tw__mailbox_push_copy(
		    m, 1, "k", v, 1, UINT64_MAX, TW_FOREVER, NULL);
	}
	for (int i = 0; i < 3 && st == TW_OK; i++) {
		st = tw__mailbox_pop_into(
		    m, 1, "k", 0, got, sizeof(got), &len);
		if (st == TW_OK && (len != 1 || got[0] != '0' + i))
			st = TW_EPROTO;
	}
	failalloc_never();
	TW_PASS(st);
	failalloc_after(0);
	// A larger one needs memory: refused whole, nothing left queued.
	st = tw__mailbox_push_copy(
	    m, 1, "k", big, sizeof(big), UINT64_MAX, TW_FOREVER, NULL);
	failalloc_never();
	TW_FAIL(st, TW_ENOMEM);
	TW_FAIL(tw_mailbox_probe(m, 1, "k", &len), TW_EAGAIN);

	// A pop that hands the bytes to the caller gives them memory of
	// their own; without it the message stays for a later pop.
	TW_PASS(tw__mailbox_push_copy(
	    m, 1, "k", "mine", 4, UINT64_MAX, TW_FOREVER, NULL));
	tw_buf b = { NULL, 0 };
	failalloc_after(0);
	st = tw_mailbox_pop(m, 1, "k", 0, &b);
	failalloc_never();
	TW_FAIL(st, TW_ENOMEM);
	TW_PASS(tw_mailbox_probe(m, 1, "k", &len));
	assert_int_equal(len, 4);
	TW_PASS(tw_mailbox_pop(m, 1, "k", 0, &b));
	assert_int_equal(b.len, 4);
	assert_memory_equal(b.data, "mine", 4);
	tw_buf_free(&b); // the leak check sees that it was the caller's

	// Control keys keep the newest, in the node or not.
	TW_PASS(tw__mailbox_push_copy(
	    m, 1, "a!ack", "old", 3, UINT64_MAX, TW_FOREVER, NULL));
	TW_PASS(tw__mailbox_push_copy(
	    m, 1, "a!ack", big, sizeof(big), UINT64_MAX, TW_FOREVER, NULL));
	TW_PASS(tw__mailbox_push_copy(
	    m, 1, "a!ack", "new", 3, UINT64_MAX, TW_FOREVER, NULL));
	expect_pop(m, 1, "a!ack", "new");
	TW_FAIL(tw_mailbox_probe(m, 1, "a!ack", &len), TW_EAGAIN);

	// Flow control and refusals as for owned pushes.
	TW_PASS(tw__mailbox_push_copy(m, 1, "k", "x", 1, 0, 0, NULL));
	TW_FAIL(tw__mailbox_push_copy(m, 1, "k", "y", 1, 0, 0, NULL),
	    TW_ETIMEDOUT);
	expect_pop(m, 1, "k", "x");
	TW_FAIL(tw_mailbox_probe(m, 1, "k", &len), TW_EAGAIN);
	TW_FAIL(tw__mailbox_push_copy(
	            NULL, 1, "k", "x", 1, UINT64_MAX, TW_FOREVER, NULL),
	    TW_EINVAL);
	TW_FAIL(tw__mailbox_push_copy(
	            m, 1, NULL, "x", 1, UINT64_MAX, TW_FOREVER, NULL),
	    TW_EINVAL);
	TW_FAIL(tw__mailbox_push_copy(
	            m, 1, "k", NULL, 1, UINT64_MAX, TW_FOREVER, NULL),
	    TW_EINVAL);
	tw_mailbox_abort(m);
	TW_FAIL(tw__mailbox_push_copy(
	            m, 1, "k", "z", 1, UINT64_MAX, TW_FOREVER, NULL),
	    TW_ECLOSED);
	tw_mailbox_free(m);
}

static void test_limit_blocks_until_pop(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	size_t len;
	// One message larger than the limit is admitted into an empty box,
	// so that no message is ever too big to send.
	void *big = malloc(300);
	assert_non_null(big);
	memset(big, 1, 300);
	TW_PASS(tw__mailbox_push_owned(
	    m, 3, "a", big, 300, 150, tw__now_ns(), NULL));
	assert_int_equal(tw__mailbox_peak(m, 3), C(300));
	// But only alone.
	void *p = owned("z", &len);
	TW_FAIL(
	    tw__mailbox_push_owned(m, 3, "a", p, len, 150, tw__now_ns(), NULL),
	    TW_ETIMEDOUT);
	free(p);
	tw_buf b = { NULL, 0 };

	// Room for one 10-byte message and a little more.
	uint64_t limit = C(10) + 5;
	p = owned("0123456789", &len);
	TW_PASS(tw__mailbox_push_owned(
	    m, 1, "a", p, len, limit, TW_FOREVER, NULL));
	// A second 10 bytes from the same sender (under another key: the
	// limit is per sender) must wait for space.
	waiter w = { .m = m,
		.op = OP_PUSH_OWNED,
		.from = 1,
		.key = "b",
		.len = 10,
		.limit = limit,
		.deadline = long_deadline() };
	waiter_start(&w);
	// Another sender is not held back meanwhile.
	p = owned("0123456789", &len);
	TW_PASS(tw__mailbox_push_owned(
	    m, 2, "a", p, len, limit, tw__now_ns(), NULL));
	size_t plen;
	TW_FAIL(tw_mailbox_probe(m, 1, "b", &plen), TW_EAGAIN);
	// Popping frees the space and lets the pusher through.
	int64_t act = tw__now_ns();
	TW_PASS(tw_mailbox_pop(m, 1, "a", 0, &b));
	tw_buf_free(&b);
	waiter_join_prompt(&w, act);
	TW_PASS(w.status);
	TW_PASS(tw_mailbox_probe(m, 1, "b", &plen));
	assert_int_equal(plen, 10);
	// The waiting push was admitted only after the pop: sender 1 never
	// held more than one 10-byte message at once.
	assert_int_equal(tw__mailbox_peak(m, 1), C(10));
	assert_int_equal(tw__mailbox_peak(m, 2), C(10));
	tw_mailbox_free(m);
}

// Empty messages are not free: each counts TW_MSG_MIN_COST, so a flood of
// them into a box that nobody empties is held back after limit / that.
static void test_empty_messages_count(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	enum { LIMIT = 16 * TW_MSG_MIN_COST };
	int pushed = 0;
	while (pushed < 1000000
	    && tw__mailbox_push_owned(
	           m, 1, "a:z", NULL, 0, LIMIT, tw__now_ns(), NULL)
	        == TW_OK)
		pushed++;
	assert_int_equal(pushed, LIMIT / TW_MSG_MIN_COST);
	assert_int_equal(tw__mailbox_peak(m, 1), LIMIT);
	// The floor up to where length and overhead pass it.
	assert_int_equal(C(0), TW_MSG_MIN_COST);
	assert_int_equal(C(8), TW_MSG_MIN_COST);
	assert_int_equal(
	    C(TW_MSG_MIN_COST - TW_MSG_OVERHEAD), TW_MSG_MIN_COST);
	assert_int_equal(
	    C(TW_MSG_MIN_COST - TW_MSG_OVERHEAD + 1), TW_MSG_MIN_COST + 1);
	assert_int_equal(C(1 << 20), (1 << 20) + TW_MSG_OVERHEAD);
	assert_true(C(SIZE_MAX) == UINT64_MAX);
	// Taking one makes room for one.
	tw_buf b = { NULL, 0 };
	TW_PASS(tw_mailbox_pop(m, 1, "a:z", 0, &b));
	TW_PASS(tw__mailbox_push_owned(
	    m, 1, "a:z", NULL, 0, LIMIT, tw__now_ns(), NULL));
	TW_FAIL(tw__mailbox_push_owned(
	            m, 1, "a:z", NULL, 0, LIMIT, tw__now_ns(), NULL),
	    TW_ETIMEDOUT);
	tw_mailbox_free(m);
	// Until its owner counts by cost, a mailbox counts bytes (a credit
	// in bytes must agree with it).
	m = tw_mailbox_new();
	assert_non_null(m);
	for (int i = 0; i < 1000; i++)
		TW_PASS(tw__mailbox_push_owned(
		    m, 1, "a:z", NULL, 0, LIMIT, tw__now_ns(), NULL));
	assert_int_equal(tw__mailbox_peak(m, 1), 0);
	tw_mailbox_free(m);
}

// `n` bytes of `c`, malloc'd.
static void *filled(int c, size_t n)
{
	void *p = malloc(n);
	assert_non_null(p);
	memset(p, c, n);
	return p;
}

static void expect_pop_filled(tw_mailbox *m, int c, size_t n)
{
	tw_buf b = { NULL, 0 };
	TW_PASS(tw_mailbox_pop(m, 1, "a", 0, &b));
	assert_int_equal(b.len, n);
	assert_int_equal(((unsigned char *)b.data)[0], c);
	assert_int_equal(((unsigned char *)b.data)[n - 1], c);
	tw_buf_free(&b);
}

static void test_limit_times_out(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	// Above the cost's floor, so that the lengths tell: room for BIG + 10
	// bytes and BIG + 5 more, not for BIG + 10 twice.
	enum { BIG = TW_MSG_MIN_COST };
	uint64_t limit = C(BIG + 10) + C(BIG + 5);
	TW_PASS(tw__mailbox_push_owned(m, 1, "a", filled('0', BIG + 10),
	    BIG + 10, limit, TW_FOREVER, NULL));
	void *p = filled('a', BIG + 10);
	int64_t t0 = tw__now_ns();
	TW_FAIL(tw__mailbox_push_owned(
	            m, 1, "a", p, BIG + 10, limit, t0 + 50 * MS, NULL),
	    TW_ETIMEDOUT);
	assert_true(tw__now_ns() - t0 >= 50 * MS);
	assert_true(elapsed_ms(t0) < 50 + slack_ms());
	// A deadline already past fails at once, and a message that fits
	// needs no wait at all.
	TW_FAIL(tw__mailbox_push_owned(
	            m, 1, "a", p, BIG + 10, limit, tw__now_ns() - MS, NULL),
	    TW_ETIMEDOUT);
	free(p); // ownership stayed with the caller
	TW_PASS(tw__mailbox_push_owned(m, 1, "a", filled('b', BIG + 5),
	    BIG + 5, limit, tw__now_ns() - MS, NULL));
	expect_pop_filled(m, '0', BIG + 10);
	expect_pop_filled(m, 'b', BIG + 5);
	assert_int_equal(tw__mailbox_peak(m, 1), limit);
	tw_mailbox_free(m);
}

static void test_cancel_and_kick(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	size_t len;
	void *p = owned("0123456789", &len);
	TW_PASS(
	    tw__mailbox_push_owned(m, 1, "a", p, len, 10, TW_FOREVER, NULL));
	_Atomic int cancel = 0;
	waiter w = { .m = m,
		.op = OP_PUSH_OWNED,
		.from = 1,
		.key = "a",
		.len = 10,
		.limit = 10,
		.deadline = long_deadline(),
		.cancel = &cancel };
	waiter_start(&w);
	int64_t act = tw__now_ns();
	atomic_store_explicit(&cancel, 1, memory_order_release);
	tw__mailbox_kick(m);
	waiter_join_prompt(&w, act);
	// Cancelled, promptly, although the deadline is far and nobody
	// popped (without the kick the push would wait for the deadline and
	// return TW_ETIMEDOUT).
	TW_FAIL(w.status, TW_ECLOSED);
	// The cancelled message was not queued.
	expect_pop(m, 1, "a", "0123456789");
	tw_buf b = { NULL, 0 };
	TW_FAIL(tw_mailbox_pop(m, 1, "a", 0, &b), TW_ETIMEDOUT);

	// A flag already set when the push must wait ends it at once.
	p = owned("0123456789", &len);
	TW_PASS(
	    tw__mailbox_push_owned(m, 1, "a", p, len, 10, TW_FOREVER, NULL));
	p = owned("x", &len);
	TW_FAIL(
	    tw__mailbox_push_owned(m, 1, "a", p, len, 10, TW_FOREVER, &cancel),
	    TW_ECLOSED);
	free(p);
	tw__mailbox_kick(m); // nobody waiting: harmless
	tw__mailbox_kick(NULL);
	tw_mailbox_free(m);
}

static void test_blocked_pusher_woken(void **state)
{
	(void)state;
	// abort wakes a pusher waiting for space with TW_ECLOSED, and
	// close_from wakes it with TW_EPEER.
	for (int round = 0; round < 2; round++) {
		tw_mailbox *m = mb_new();
		size_t len;
		void *p = owned("0123456789", &len);
		TW_PASS(tw__mailbox_push_owned(
		    m, 4, "a", p, len, 10, TW_FOREVER, NULL));
		waiter w = { .m = m,
			.op = OP_PUSH_OWNED,
			.from = 4,
			.key = "a",
			.len = 10,
			.limit = 10,
			.deadline = long_deadline() };
		waiter_start(&w);
		int64_t act = tw__now_ns();
		if (round == 0)
			tw_mailbox_abort(m);
		else
			TW_PASS(tw_mailbox_close_from(m, 4));
		waiter_join_prompt(&w, act);
		TW_FAIL(w.status, round == 0 ? TW_ECLOSED : TW_EPEER);
		tw_mailbox_free(m);
	}
}

// Keys of namespace "a" of every kind, its child, and a sibling whose name
// merely starts with "a".
static const char *const ns_in[] = { "a:x", "a@c.0:x", "a!ack", "a/b:x" };
#define N_NS_IN (sizeof(ns_in) / sizeof(ns_in[0]))
static const char *const ns_out = "ab:x";

static void test_close_ns(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	size_t len;
	tw_buf b = { NULL, 0 };
	for (size_t i = 0; i < N_NS_IN; i++) {
		push_str(m, 1, ns_in[i], "before");
		push_str(m, 2, ns_in[i], "from2");
	}
	push_str(m, 1, ns_out, "sibling");
	TW_PASS(tw__mailbox_close_ns(m, 1, "a"));
	for (size_t i = 0; i < N_NS_IN; i++) {
		const char *k = ns_in[i];
		// Delivered messages drain first, then the peer is gone,
		// promptly even for a pop that would wait forever.
		TW_PASS(tw_mailbox_probe(m, 1, k, &len));
		expect_pop(m, 1, k, "before");
		int64_t t0 = tw__now_ns();
		TW_FAIL(tw_mailbox_pop(m, 1, k, -1, &b), TW_EPEER);
		assert_true(elapsed_ms(t0) < slack_ms());
		TW_FAIL(tw_mailbox_probe(m, 1, k, &len), TW_EPEER);
		// The close was by sender 1 only.
		expect_pop(m, 2, k, "from2");
		push_str(m, 2, k, "again");
		expect_pop(m, 2, k, "again");
	}
	// The sibling namespace "ab" is untouched.
	expect_pop(m, 1, ns_out, "sibling");
	push_str(m, 1, ns_out, "more");
	expect_pop(m, 1, ns_out, "more");
	TW_FAIL(tw_mailbox_pop(m, 1, ns_out, 0, &b), TW_ETIMEDOUT);
	// Pushing to a sibling did not reopen "a".
	TW_FAIL(tw_mailbox_probe(m, 1, "a:x", &len), TW_EPEER);

	// A later push from sender 1 under "a" comes from a new link of the
	// same name and reopens the namespace: pops wait again instead of
	// reporting the old link's close.
	push_str(m, 1, "a:x", "new link");
	expect_pop(m, 1, "a:x", "new link");
	for (size_t i = 0; i < N_NS_IN; i++)
		TW_FAIL(tw_mailbox_pop(m, 1, ns_in[i], 0, &b), TW_ETIMEDOUT);

	TW_FAIL(tw__mailbox_close_ns(NULL, 1, "a"), TW_EINVAL);
	TW_FAIL(tw__mailbox_close_ns(m, 1, NULL), TW_EINVAL);
	tw_mailbox_free(m);
}

static void test_close_ns_child_only(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	tw_buf b = { NULL, 0 };
	size_t len;
	// Closing a child leaves the parent and the child's siblings alone,
	// and traffic there does not reopen the child.
	TW_PASS(tw__mailbox_close_ns(m, 1, "a/b"));
	push_str(m, 1, "a:x", "parent");
	push_str(m, 1, "a/bc:x", "sibling");
	push_str(m, 1, "a/c:x", "other child");
	TW_FAIL(tw_mailbox_pop(m, 1, "a/b:x", 0, &b), TW_EPEER);
	TW_FAIL(tw_mailbox_pop(m, 1, "a/b/c:x", 0, &b), TW_EPEER);
	TW_FAIL(tw_mailbox_probe(m, 1, "a/b@g.1:x", &len), TW_EPEER);
	TW_FAIL(tw_mailbox_probe(m, 1, "a/b!ack", &len), TW_EPEER);
	expect_pop(m, 1, "a:x", "parent");
	expect_pop(m, 1, "a/bc:x", "sibling");
	expect_pop(m, 1, "a/c:x", "other child");
	TW_FAIL(tw_mailbox_pop(m, 1, "a:x", 0, &b), TW_ETIMEDOUT);
	tw_mailbox_free(m);
}

static void test_close_ns_wakes(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	waiter in = { .m = m,
		.op = OP_POP,
		.from = 1,
		.key = "a@c.0:x",
		.timeout_ms = long_ms() };
	waiter_start(&in);
	int64_t act = tw__now_ns();
	TW_PASS(tw__mailbox_close_ns(m, 1, "a"));
	waiter_join_prompt(&in, act);
	TW_FAIL(in.status, TW_EPEER);
	tw_mailbox_free(m);
}

static void test_abort_ns(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	size_t len;
	tw_buf b = { NULL, 0 };
	push_str(m, 1, ns_in[0], "queued");
	push_str(m, 1, ns_out, "sibling");
	waiter w = { .m = m,
		.op = OP_POP,
		.from = 2,
		.key = "a/b:x",
		.timeout_ms = long_ms() };
	waiter_start(&w);
	int64_t act = tw__now_ns();
	TW_PASS(tw__mailbox_abort_ns(m, "a"));
	waiter_join_prompt(&w, act);
	TW_FAIL(w.status, TW_ECLOSED);
	for (size_t i = 0; i < N_NS_IN; i++) {
		const char *k = ns_in[i];
		// Every sender, every kind of key, queued or not.
		for (uint32_t from = 1; from <= 2; from++) {
			TW_FAIL(
			    tw_mailbox_push(m, from, k, "x", 1), TW_ECLOSED);
			TW_FAIL(
			    tw_mailbox_pop(m, from, k, -1, &b), TW_ECLOSED);
			TW_FAIL(
			    tw_mailbox_probe(m, from, k, &len), TW_ECLOSED);
		}
	}
	expect_pop(m, 1, ns_out, "sibling");
	push_str(m, 3, ns_out, "fine");
	expect_pop(m, 3, ns_out, "fine");
	TW_FAIL(tw__mailbox_abort_ns(NULL, "a"), TW_EINVAL);
	TW_FAIL(tw__mailbox_abort_ns(m, NULL), TW_EINVAL);
	tw_mailbox_free(m);
}

static void test_reopen_ns(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	tw_buf b = { NULL, 0 };
	TW_PASS(tw__mailbox_abort_ns(m, "a"));
	TW_PASS(tw__mailbox_close_ns(m, 1, "a"));
	TW_FAIL(tw_mailbox_push(m, 2, "a:x", "x", 1), TW_ECLOSED);
	// Reopening a child does not lift the parent's abort: the child's
	// keys are still inside "a".
	TW_PASS(tw__mailbox_reopen_ns(m, "a/b"));
	TW_FAIL(tw_mailbox_push(m, 2, "a/b:x", "x", 1), TW_ECLOSED);
	// Reopening "a" forgets both its abort and sender 1's close.
	TW_PASS(tw__mailbox_reopen_ns(m, "a"));
	for (size_t i = 0; i < N_NS_IN; i++) {
		push_str(m, 1, ns_in[i], "reborn");
		expect_pop(m, 1, ns_in[i], "reborn");
	}
	// ...and the closes and aborts of its children with it.
	TW_PASS(tw__mailbox_abort_ns(m, "a/b"));
	TW_PASS(tw__mailbox_close_ns(m, 1, "a/c"));
	TW_FAIL(tw_mailbox_pop(m, 1, "a/b:x", 0, &b), TW_ECLOSED);
	TW_FAIL(tw_mailbox_pop(m, 1, "a/c:x", 0, &b), TW_EPEER);
	// A sibling's abort is kept.
	TW_PASS(tw__mailbox_abort_ns(m, "ab"));
	TW_PASS(tw__mailbox_reopen_ns(m, "a"));
	push_str(m, 1, "a/b:x", "b");
	expect_pop(m, 1, "a/b:x", "b");
	push_str(m, 1, "a/c:x", "c");
	expect_pop(m, 1, "a/c:x", "c");
	TW_FAIL(tw_mailbox_push(m, 1, "ab:x", "x", 1), TW_ECLOSED);
	// A whole-mailbox close of a sender is not a namespace close.
	TW_PASS(tw_mailbox_close_from(m, 5));
	TW_PASS(tw__mailbox_reopen_ns(m, "a"));
	TW_FAIL(tw_mailbox_push(m, 5, "a:x", "x", 1), TW_EPEER);
	TW_FAIL(tw__mailbox_reopen_ns(NULL, "a"), TW_EINVAL);
	TW_FAIL(tw__mailbox_reopen_ns(m, NULL), TW_EINVAL);
	tw_mailbox_free(m);
}

static void test_peak(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	assert_int_equal(tw__mailbox_peak(m, 1), 0);
	char ten[10] = { 0 };
	for (int i = 0; i < 3; i++)
		TW_PASS(tw_mailbox_push(m, 1, i == 1 ? "u" : "t", ten, 10));
	assert_int_equal(tw__mailbox_peak(m, 1), 3 * C(10));
	tw_buf b = { NULL, 0 };
	TW_PASS(tw_mailbox_pop(m, 1, "t", 0, &b));
	tw_buf_free(&b);
	TW_PASS(tw_mailbox_pop(m, 1, "u", 0, &b));
	tw_buf_free(&b);
	// The peak is the most ever held at once, not the current amount or
	// the total pushed.
	TW_PASS(tw_mailbox_push(m, 1, "t", ten, 5));
	assert_int_equal(tw__mailbox_peak(m, 1), 3 * C(10));
	TW_PASS(tw_mailbox_push(m, 1, "t", ten, 10));
	TW_PASS(tw_mailbox_push(m, 1, "t", ten, 10));
	assert_int_equal(tw__mailbox_peak(m, 1), 3 * C(10) + C(5));
	// Per sender.
	assert_int_equal(tw__mailbox_peak(m, 2), 0);
	TW_PASS(tw_mailbox_push(m, 2, "t", ten, 3));
	assert_int_equal(tw__mailbox_peak(m, 2), C(3));
	assert_int_equal(tw__mailbox_peak(m, 1), 3 * C(10) + C(5));
	tw_mailbox_free(m);
}

typedef struct taken_log {
	int calls;
	uint32_t from;
	uint64_t taken;
} taken_log;

static void on_taken(void *arg, uint32_t from, uint64_t taken)
{
	taken_log *t = arg;
	t->calls++;
	t->from = from;
	t->taken = taken;
}

// What a credit-based sender needs: the cost (tw__msg_cost) of each
// sender's data messages that left the box (popped, or dropped by an abort
// of their namespace, or refused for that reason), reported after each
// change; control messages count nowhere, not even against the limit.
static void test_taken(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	taken_log t = { 0 };
	tw__mailbox_on_taken(m, on_taken, &t);
	char ten[10] = { 0 };
	TW_PASS(tw_mailbox_push(m, 1, "a:x", ten, 10));
	TW_PASS(tw_mailbox_push(m, 1, "a!ack", ten, 4)); // control
	TW_PASS(tw_mailbox_push(m, 1, "a/c:y", ten, 7));
	assert_int_equal(t.calls, 0);
	assert_int_equal(tw__mailbox_peak(m, 1), C(10) + C(7));
	// A full box still admits control messages.
	void *ctl = malloc(4);
	assert_non_null(ctl);
	TW_PASS(tw__mailbox_push_owned(
	    m, 1, "a!ack", ctl, 4, C(10) + C(7), 0, NULL));
	tw_buf b = { NULL, 0 };
	TW_PASS(tw_mailbox_pop(m, 1, "a!ack", 0, &b));
	tw_buf_free(&b);
	assert_int_equal(t.calls, 0);
	TW_PASS(tw_mailbox_pop(m, 1, "a:x", 0, &b));
	tw_buf_free(&b);
	assert_true(t.calls == 1 && t.from == 1 && t.taken == C(10));
	// Aborting the child drops its queued message, and refuses later ones.
	TW_PASS(tw__mailbox_abort_ns(m, "a/c"));
	assert_true(t.calls >= 2 && t.from == 1 && t.taken == C(10) + C(7));
	int calls = t.calls;
	TW_FAIL(tw_mailbox_push(m, 1, "a/c:y", ten, 3), TW_ECLOSED);
	assert_true(t.calls == calls + 1 && t.taken == C(10) + C(7) + C(3));
	// A reopened child starts empty: nothing of the old one comes back.
	TW_PASS(tw__mailbox_reopen_ns(m, "a/c"));
	TW_FAIL(tw_mailbox_probe(m, 1, "a/c:y", &b.len), TW_EAGAIN);
	// Taking a control message changes nothing either.
	size_t len;
	TW_PASS(tw_mailbox_push(m, 1, "a!ack", ten, 4));
	TW_PASS(tw__mailbox_pop_into(m, 1, "a!ack", 0, ten, 10, &len));
	assert_int_equal(t.taken, C(10) + C(7) + C(3));
	tw_mailbox_free(m);
}

// Pushes a data message of one byte, `c`, through run r with no limit.
static int run_push1(
    tw__mailbox_run *r, tw_mailbox *m, const char *key, char c)
{
	return tw__mailbox_run_push(r, m, 1, key, &c, 1, UINT64_MAX);
}

// Pops one message into memory and checks that it is the byte `c`.
static void expect_pop1(tw_mailbox *m, const char *key, char c)
{
	char got[8];
	size_t len = 0;
	TW_PASS(tw__mailbox_pop_into(m, 1, key, 0, got, sizeof(got), &len));
	assert_int_equal(len, 1);
	assert_int_equal(got[0], c);
}

// A run stages small data messages of one sender and key out of sight and
// queues them, in order, when flushed; a message that cannot join the run
// (another key, a full run, a large or a control message) flushes it
// first, so that nothing overtakes what was staged before it.
static void test_run(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	tw__mailbox_run r;
	tw__mailbox_run_init(&r);
	size_t len = 0;
	TW_PASS(tw__mailbox_run_flush(&r)); // empty: nothing to do
	TW_PASS(run_push1(&r, m, "a:k", '1'));
	TW_PASS(run_push1(&r, m, "a:k", '2'));
	assert_true(tw__mailbox_run_staged(&r));
	TW_FAIL(tw_mailbox_probe(m, 1, "a:k", &len), TW_EAGAIN);
	assert_true(tw__mailbox_idle(m, "a:k"));
	assert_int_equal(tw__mailbox_peak(m, 1), 0);
	TW_PASS(tw__mailbox_run_flush(&r));
	assert_false(tw__mailbox_run_staged(&r));
	assert_int_equal(tw__mailbox_peak(m, 1), 2 * C(1));
	assert_false(tw__mailbox_idle(m, "a:k"));
	expect_pop1(m, "a:k", '1');
	expect_pop1(m, "a:k", '2');

	// Another key flushes the run; so does a message too large to stage,
	// which is queued after it at once.
	TW_PASS(run_push1(&r, m, "a:k", '3'));
	TW_PASS(run_push1(&r, m, "a:j", '4'));
	expect_pop1(m, "a:k", '3');
	TW_FAIL(tw_mailbox_probe(m, 1, "a:j", &len), TW_EAGAIN);
	char big[TW_MB_RUN_BYTES + 1];
	memset(big, 'b', sizeof(big));
	TW_PASS(tw__mailbox_run_push(
	    &r, m, 1, "a:j", big, sizeof(big), UINT64_MAX));
	assert_false(tw__mailbox_run_staged(&r));
	expect_pop1(m, "a:j", '4');
	char got[TW_MB_RUN_BYTES + 8];
	TW_PASS(tw__mailbox_pop_into(m, 1, "a:j", 0, got, sizeof(got), &len));
	assert_int_equal(len, sizeof(big));
	assert_memory_equal(got, big, sizeof(big));

	// A control message is never staged: it flushes the run and is
	// queued at once (and keeps only the newest of its key).
	TW_PASS(run_push1(&r, m, "a:k", '5'));
	TW_PASS(run_push1(&r, m, "a!ack", 'x'));
	TW_PASS(run_push1(&r, m, "a!ack", 'y'));
	assert_false(tw__mailbox_run_staged(&r));
	expect_pop1(m, "a:k", '5');
	expect_pop1(m, "a!ack", 'y');
	TW_FAIL(tw_mailbox_probe(m, 1, "a!ack", &len), TW_EAGAIN);

	// Another sender, an empty message, and a full run.
	TW_PASS(tw__mailbox_run_push(&r, m, 1, "a:k", NULL, 0, UINT64_MAX));
	TW_PASS(tw__mailbox_run_push(&r, m, 2, "a:k", "z", 1, UINT64_MAX));
	TW_PASS(tw__mailbox_pop_into(m, 1, "a:k", 0, got, sizeof(got), &len));
	assert_int_equal(len, 0);
	TW_PASS(tw__mailbox_run_flush(&r));
	TW_PASS(tw__mailbox_pop_into(m, 2, "a:k", 0, got, sizeof(got), &len));
	assert_true(len == 1 && got[0] == 'z');
	for (int i = 0; i <= TW_MB_RUN_MAX; i++)
		TW_PASS(run_push1(&r, m, "a:k", (char)i));
	// The first TW_MB_RUN_MAX went when the last came; it waits.
	for (int i = 0; i < TW_MB_RUN_MAX; i++)
		expect_pop1(m, "a:k", (char)i);
	TW_FAIL(tw_mailbox_probe(m, 1, "a:k", &len), TW_EAGAIN);
	TW_PASS(tw__mailbox_run_flush(&r));
	expect_pop1(m, "a:k", (char)TW_MB_RUN_MAX);

	TW_FAIL(tw__mailbox_run_push(NULL, m, 1, "a:k", "x", 1, 0), TW_EINVAL);
	TW_FAIL(
	    tw__mailbox_run_push(&r, NULL, 1, "a:k", "x", 1, 0), TW_EINVAL);
	TW_FAIL(tw__mailbox_run_push(&r, m, 1, NULL, "x", 1, 0), TW_EINVAL);
	TW_FAIL(tw__mailbox_run_push(&r, m, 1, "a:k", NULL, 1, 0), TW_EINVAL);
	tw__mailbox_run_fini(&r);
	tw_mailbox_free(m);
}

// A flush applies the checks of a push with no wait to every message:
// the sender's limit (the message that would pass it and those after it
// are dropped, TW_ETIMEDOUT), refusals (dropped and counted as taken, as
// a push counts them), a closed sender (queued: read before its close), and
// memory.
static void test_run_refusals(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	taken_log t = { 0 };
	tw__mailbox_on_taken(m, on_taken, &t);
	tw__mailbox_run r;
	tw__mailbox_run_init(&r);
	size_t len = 0;
	// Room for two: the third is beyond the limit, and so is the fourth.
	for (int i = 0; i < 4; i++)
		TW_PASS(
		    tw__mailbox_run_push(&r, m, 1, "a:k", "v", 1, 2 * C(1)));
	TW_FAIL(tw__mailbox_run_flush(&r), TW_ETIMEDOUT);
	assert_false(tw__mailbox_run_staged(&r));
	assert_int_equal(tw__mailbox_peak(m, 1), 2 * C(1));
	for (int i = 0; i < 2; i++)
		expect_pop1(m, "a:k", 'v');
	TW_FAIL(tw_mailbox_probe(m, 1, "a:k", &len), TW_EAGAIN);
	assert_int_equal(t.taken, 2 * C(1));
	// A run that cannot be flushed is not joined by the next message:
	// the failure comes back, and that message is not taken either.
	TW_PASS(tw__mailbox_run_push(&r, m, 1, "a:k", "v", 1, 0));
	TW_PASS(tw__mailbox_run_push(&r, m, 1, "a:k", "v", 1, 0));
	TW_FAIL(
	    tw__mailbox_run_push(&r, m, 1, "a:j", "w", 1, 0), TW_ETIMEDOUT);
	TW_FAIL(tw_mailbox_probe(m, 1, "a:j", &len), TW_EAGAIN);
	expect_pop1(m, "a:k", 'v');

	// Staged in a namespace aborted before the flush: dropped, taken.
	int calls = t.calls;
	uint64_t before = t.taken;
	TW_PASS(run_push1(&r, m, "a/c:k", '1'));
	TW_PASS(run_push1(&r, m, "a/c:k", '2'));
	TW_PASS(tw__mailbox_abort_ns(m, "a/c"));
	TW_PASS(tw__mailbox_run_flush(&r));
	assert_true(t.calls == calls + 1 && t.taken == before + 2 * C(1));
	TW_PASS(tw__mailbox_reopen_ns(m, "a/c"));
	TW_FAIL(tw_mailbox_probe(m, 1, "a/c:k", &len), TW_EAGAIN);

	// Out of memory for the queue of a new key: nothing queued.
	TW_PASS(run_push1(&r, m, "a:new", '1'));
	failalloc_after(0);
	int st = tw__mailbox_run_flush(&r);
	failalloc_never();
	TW_FAIL(st, TW_ENOMEM);
	TW_FAIL(tw_mailbox_probe(m, 1, "a:new", &len), TW_EAGAIN);

	// From a sender closed before the flush: read before its close was
	// known, so queued all the same; pops drain them, then TW_EPEER.
	TW_PASS(run_push1(&r, m, "a:k", '3'));
	TW_PASS(tw_mailbox_close_from(m, 1));
	TW_PASS(tw__mailbox_run_flush(&r));
	expect_pop1(m, "a:k", '3');
	TW_FAIL(tw_mailbox_probe(m, 1, "a:k", &len), TW_EPEER);
	tw__mailbox_run_fini(&r);
	tw_mailbox_free(m);
}

// A pop blocked on a key wakes when a flush queues its message.
static void test_run_wakes(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	tw__mailbox_run r;
	tw__mailbox_run_init(&r);
	waiter w = { .m = m,
		.op = OP_POP_INTO,
		.from = 1,
		.key = "a:k",
		.deadline = long_deadline() };
	waiter_start(&w);
	TW_PASS(run_push1(&r, m, "a:k", 'q'));
	int64_t act = tw__now_ns();
	TW_PASS(tw__mailbox_run_flush(&r));
	waiter_join_prompt(&w, act);
	TW_PASS(w.status);
	assert_true(w.into_len == 1 && w.into[0] == 'q');
	tw__mailbox_run_fini(&r);
	tw_mailbox_free(m);
}

// Keeps sender 1's reports only.
static void on_taken_1(void *arg, uint32_t from, uint64_t taken)
{
	if (from == 1)
		on_taken(arg, from, taken);
}

// With tw__mailbox_keep_peer_closes, both sides' closes of a namespace
// meet, in either order, and then nothing about it is kept; a sender's
// abort is not its last word (its close follows), and this side's abort
// ends with this side's close.
static void test_ns_both_closed(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	tw__mailbox_keep_peer_closes(m);
	taken_log t = { 0 };
	tw__mailbox_on_taken(m, on_taken_1, &t);
	tw_buf b = { NULL, 0 };
	size_t len;

	// This side first: what sender 1 queued there goes, what it pushes
	// there later is refused, both counted as taken; control messages go
	// too; the parent is untouched.
	push_str(m, 1, "a/c:x", "queued");
	push_str(m, 1, "a/c/d:x", "child");
	push_str(m, 1, "a/c!ack", "ctl");
	push_str(m, 1, "a:x", "parent");
	push_str(m, 2, "a/c:x", "other");
	TW_PASS(tw__mailbox_drop_ns(m, 1, "a/c"));
	assert_int_equal(t.taken, C(6) + C(5));
	TW_FAIL(tw_mailbox_probe(m, 1, "a/c:x", &len), TW_ECLOSED);
	TW_FAIL(tw_mailbox_pop(m, 1, "a/c!ack", 0, &b), TW_ECLOSED);
	TW_FAIL(tw_mailbox_push(m, 1, "a/c:x", "late", 4), TW_ECLOSED);
	assert_int_equal(t.taken, C(6) + C(5) + C(4));
	expect_pop(m, 1, "a:x", "parent");
	expect_pop(m, 2, "a/c:x", "other"); // closed towards sender 1 only
	assert_false(tw__mailbox_peer_left(m, 1, "a/c:x"));
	assert_int_equal(tw__mailbox_ns_entries(m), 1);
	TW_PASS(tw__mailbox_close_ns(m, 1, "a/c"));
	assert_int_equal(tw__mailbox_ns_entries(m), 0);

	// The sender first: its queued messages drain, then pops fail, and
	// sends to it there are told to fail, until this side closes too.
	push_str(m, 1, "a/d:x", "last");
	TW_PASS(tw__mailbox_close_ns(m, 1, "a/d"));
	assert_true(tw__mailbox_peer_left(m, 1, "a/d:x"));
	assert_true(tw__mailbox_peer_left(m, 1, "a/d/e@g.0:x"));
	assert_false(tw__mailbox_peer_left(m, 2, "a/d:x"));
	assert_false(tw__mailbox_peer_left(m, 1, "a/dd:x"));
	expect_pop(m, 1, "a/d:x", "last");
	TW_FAIL(tw_mailbox_pop(m, 1, "a/d:x", 0, &b), TW_EPEER);
	TW_PASS(tw__mailbox_drop_ns(m, 1, "a/d"));
	assert_false(tw__mailbox_peer_left(m, 1, "a/d:x"));
	assert_int_equal(tw__mailbox_ns_entries(m), 0);

	// The sender aborts, this side closes: its close still comes.
	TW_PASS(tw__mailbox_peer_abort_ns(m, 1, "a/e"));
	assert_true(tw__mailbox_peer_left(m, 1, "a/e:x"));
	TW_PASS(tw__mailbox_drop_ns(m, 1, "a/e"));
	assert_true(tw__mailbox_ns_entries(m) > 0);
	TW_PASS(tw__mailbox_close_ns(m, 1, "a/e"));
	assert_int_equal(tw__mailbox_ns_entries(m), 0);

	// This side aborts, then closes: the sender's close ends it all.
	TW_PASS(tw__mailbox_abort_ns(m, "a/f"));
	TW_FAIL(tw_mailbox_push(m, 1, "a/f:x", "x", 1), TW_ECLOSED);
	TW_PASS(tw__mailbox_drop_ns(m, 1, "a/f"));
	TW_FAIL(tw_mailbox_push(m, 1, "a/f:x", "x", 1), TW_ECLOSED);
	TW_PASS(tw__mailbox_close_ns(m, 1, "a/f"));
	assert_int_equal(tw__mailbox_ns_entries(m), 0);

	// A reopen forgets this side's close, and keeps the sender's: it may
	// close its side of a child before this side creates it.
	TW_PASS(tw__mailbox_close_ns(m, 1, "a/g"));
	TW_PASS(tw__mailbox_drop_ns(m, 2, "a/g"));
	TW_PASS(tw__mailbox_reopen_ns(m, "a/g"));
	TW_FAIL(tw_mailbox_pop(m, 1, "a/g:x", 0, &b), TW_EPEER);
	push_str(m, 2, "a/g:x", "new");
	expect_pop(m, 2, "a/g:x", "new");
	TW_PASS(tw__mailbox_drop_ns(m, 1, "a/g"));
	TW_PASS(tw__mailbox_drop_ns(m, 2, "a/g"));
	TW_PASS(tw__mailbox_close_ns(m, 2, "a/g"));
	assert_int_equal(tw__mailbox_ns_entries(m), 0);

	// However many child links both sides closed, nothing is kept.
	char ns[32];
	for (int i = 0; i < 20000; i++) {
		snprintf(ns, sizeof(ns), "a/h%d", i);
		TW_PASS(tw__mailbox_reopen_ns(m, ns));
		if (i % 2 == 0) {
			TW_PASS(tw__mailbox_drop_ns(m, 1, ns));
			TW_PASS(tw__mailbox_close_ns(m, 1, ns));
		} else {
			TW_PASS(tw__mailbox_close_ns(m, 1, ns));
			TW_PASS(tw__mailbox_drop_ns(m, 1, ns));
		}
	}
	assert_int_equal(tw__mailbox_ns_entries(m), 0);
	tw_mailbox_free(m);
}

// A close frees the room that the closed namespace's messages held: a
// pusher of the same sender waiting for it goes on.
static void test_drop_ns_wakes(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	size_t len;
	void *p = owned("0123456789", &len);
	TW_PASS(tw__mailbox_push_owned(
	    m, 4, "a/c:x", p, len, 10, TW_FOREVER, NULL));
	waiter w = { .m = m,
		.op = OP_PUSH_OWNED,
		.from = 4,
		.key = "a:x",
		.len = 10,
		.limit = 10,
		.deadline = long_deadline() };
	waiter_start(&w);
	int64_t act = tw__now_ns();
	TW_PASS(tw__mailbox_drop_ns(m, 4, "a/c"));
	waiter_join_prompt(&w, act);
	TW_PASS(w.status);
	tw_mailbox_free(m);
}

// Control messages keep only the newest per (sender, key): a flood of them
// that nobody takes holds one message, the newest, and a waiter still
// wakes for it.  Data keys keep every message, and nothing else is
// touched.
static void test_ctl_newest(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	tw_buf b = { NULL, 0 };
	char v[16];
	for (int i = 0; i < 100000; i++) {
		snprintf(v, sizeof(v), "%d", i);
		push_str(m, 1, "a!ack", v);
		push_str(m, 2, "a!ack", i == 0 ? "first" : "later");
		if (i < 3)
			push_str(m, 1, "a:x", v);
	}
	push_str(m, 1, "a/c!ack", "child");
	// Owned pushes replace too, and free what they replace (the leak
	// check of the sanitizer builds sees to that).
	size_t len;
	void *p = owned("owned", &len);
	TW_PASS(tw__mailbox_push_owned(
	    m, 1, "a!ack", p, len, 0, TW_FOREVER, NULL));
	expect_pop(m, 1, "a!ack", "owned");
	TW_FAIL(tw_mailbox_pop(m, 1, "a!ack", 0, &b), TW_ETIMEDOUT);
	expect_pop(m, 2, "a!ack", "later");
	TW_FAIL(tw_mailbox_pop(m, 2, "a!ack", 0, &b), TW_ETIMEDOUT);
	expect_pop(m, 1, "a/c!ack", "child");
	for (int i = 0; i < 3; i++) {
		snprintf(v, sizeof(v), "%d", i);
		expect_pop(m, 1, "a:x", v);
	}
	// A control message is no data: it never waits for room and never
	// counts against it.
	assert_int_equal(tw__mailbox_peak(m, 1), 3 * C(1));
	waiter w = { .m = m,
		.op = OP_POP,
		.from = 1,
		.key = "a!ack",
		.timeout_ms = long_ms() };
	waiter_start(&w);
	int64_t act = tw__now_ns();
	push_str(m, 1, "a!ack", "woken");
	waiter_join_prompt(&w, act);
	TW_PASS(w.status);
	assert_int_equal(w.out.len, 5);
	assert_memory_equal(w.out.data, "woken", 5);
	tw_buf_free(&w.out);
	tw_mailbox_free(m);
}

// tw__mailbox_idle says "nothing here" only when a probe would say
// TW_EAGAIN, and says it again once what it depends on is gone.
static void expect_idle(tw_mailbox *m, const char *key, bool want)
{
	size_t len;
	assert_int_equal(tw__mailbox_idle(m, key), want);
	if (want)
		TW_FAIL(tw_mailbox_probe(m, 1, key, &len), TW_EAGAIN);
}

static void test_idle(void **state)
{
	(void)state;
	tw_mailbox *m = mb_new();
	tw_buf b = { NULL, 0 };
	expect_idle(m, "a:x", true);
	expect_idle(m, "a!ack", false); // control keys: always ask the probe

	// Queued data, from any sender, until popped or dropped.
	push_str(m, 1, "a:x", "one");
	push_str(m, 2, "a:y", "two");
	expect_idle(m, "a:x", false);
	expect_idle(m, "a:z", false);
	expect_pop(m, 1, "a:x", "one");
	expect_idle(m, "a:x", false);
	expect_pop(m, 2, "a:y", "two");
	expect_idle(m, "a:x", true);
	push_str(m, 1, "a/c:x", "dropped");
	expect_idle(m, "a:x", false);
	TW_PASS(tw__mailbox_drop_ns(m, 1, "a/c")); // drops it, refuses a/c
	expect_idle(m, "a:x", false);
	TW_PASS(tw__mailbox_close_ns(m, 1, "a/c"));
	expect_idle(m, "a:x", true);

	// A truncated pop leaves the message queued.
	push_str(m, 1, "a:x", "long message");
	char small[2];
	size_t got = 0;
	TW_FAIL(
	    tw__mailbox_pop_into(m, 1, "a:x", 0, small, sizeof(small), &got),
	    TW_ETRUNC);
	expect_idle(m, "a:x", false);
	expect_pop(m, 1, "a:x", "long message");
	expect_idle(m, "a:x", true);

	// A control message queued is not data.
	push_str(m, 1, "a!ack", "ctl");
	expect_idle(m, "a:x", true);

	// A sender that left a namespace, until this side closed it too.
	TW_PASS(tw__mailbox_peer_abort_ns(m, 1, "a/e"));
	expect_idle(m, "a/e:x", false);
	expect_idle(m, "a:x", false);
	TW_PASS(tw__mailbox_drop_ns(m, 1, "a/e"));
	TW_PASS(tw__mailbox_close_ns(m, 1, "a/e"));
	expect_idle(m, "a:x", true);

	// Aborts and closes refuse; a reopen forgets a namespace's abort.
	TW_PASS(tw__mailbox_abort_ns(m, "a/f"));
	expect_idle(m, "a:x", false);
	TW_PASS(tw__mailbox_reopen_ns(m, "a/f"));
	expect_idle(m, "a:x", true);
	TW_PASS(tw_mailbox_close_from(m, 1));
	expect_idle(m, "a:x", false);
	TW_FAIL(tw_mailbox_pop(m, 1, "a:x", 0, &b), TW_EPEER);
	tw_mailbox_free(m);

	m = mb_new();
	tw_mailbox_abort(m);
	expect_idle(m, "a:x", false);
	tw_mailbox_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_taken),
		cmocka_unit_test(test_out_of_memory_new),
		cmocka_unit_test(test_out_of_memory_push),
		cmocka_unit_test(test_fifo),
		cmocka_unit_test(test_copy_semantics),
		cmocka_unit_test(test_keys_isolated),
		cmocka_unit_test(test_zero_length),
		cmocka_unit_test(test_einval),
		cmocka_unit_test(test_pop_timeout),
		cmocka_unit_test(test_probe),
		cmocka_unit_test(test_blocked_pop_gets_push),
		cmocka_unit_test(test_close_from),
		cmocka_unit_test(test_close_from_wakes),
		cmocka_unit_test(test_abort),
		cmocka_unit_test(test_abort_wakes_many),
		cmocka_unit_test(test_exactly_once),
		cmocka_unit_test(test_pop_into),
		cmocka_unit_test(test_pop_into_wakes),
		cmocka_unit_test(test_push_owned),
		cmocka_unit_test(test_push_copy),
		cmocka_unit_test(test_limit_blocks_until_pop),
		cmocka_unit_test(test_limit_times_out),
		cmocka_unit_test(test_empty_messages_count),
		cmocka_unit_test(test_cancel_and_kick),
		cmocka_unit_test(test_blocked_pusher_woken),
		cmocka_unit_test(test_close_ns),
		cmocka_unit_test(test_close_ns_child_only),
		cmocka_unit_test(test_close_ns_wakes),
		cmocka_unit_test(test_abort_ns),
		cmocka_unit_test(test_reopen_ns),
		cmocka_unit_test(test_peak),
		cmocka_unit_test(test_ctl_newest),
		cmocka_unit_test(test_ns_both_closed),
		cmocka_unit_test(test_drop_ns_wakes),
		cmocka_unit_test(test_idle),
		cmocka_unit_test(test_run),
		cmocka_unit_test(test_run_refusals),
		cmocka_unit_test(test_run_wakes),
	};
	return cmocka_run_group_tests_name("mailbox", tests, NULL, NULL);
}
