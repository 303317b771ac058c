// Unit tests of tw_ring and tw_signal within one process (threads), plus a
// forked child where a dead peer is needed.
//
// Threads never synchronise with sleeps: a helper that must act while the
// main thread sleeps in the ring waits until the ring's own sleeper count
// says so.  Helper threads do not call cmocka (its assertions long-jump on
// the thread that runs the test); they record what they saw and the main
// thread checks it after the join.

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/clock.h"
#include "ring/ring_int.h"
#include "ring/ring_layout.h"
#include "testutil.h"

#define SEC_US INT64_C(1000000)

static void *ring_alloc(
    uint32_t lanes, uint32_t slots, uint32_t max_msg, size_t *size)
{
	size_t bytes = tw_ring_bytes(lanes, slots, max_msg);
	assert_true(bytes > 0);
	void *mem = aligned_alloc(TW_RING_LINE, bytes);
	assert_non_null(mem);
	memset(mem, 0xa5, bytes); // slots are not cleared by init
	TW_PASS(tw_ring_init(mem, bytes, lanes, slots, max_msg));
	if (size != NULL)
		*size = bytes;
	return mem;
}

static tw_ring *ring_open(void *mem, size_t size)
{
	tw_ring *r = NULL;
	TW_PASS(tw_ring_attach(mem, size, &r));
	assert_non_null(r);
	return r;
}

static struct tw_ring_hdr *hdr_of(void *mem)
{
	return mem;
}

static struct tw_ring_lane *lane_of(void *mem, uint32_t lane)
{
	return (struct tw_ring_lane *)((unsigned char *)mem + TW_RING_HDR_SIZE)
	    + lane;
}

// The slot of message `idx` of `lane`, from the geometry in the header.
static struct tw_ring_slot *slot_of(void *mem, uint32_t lane, uint32_t idx)
{
	struct tw_ring_hdr *h = mem;
	unsigned char *slot0 = (unsigned char *)mem + TW_RING_HDR_SIZE
	    + (size_t)h->lanes * TW_RING_LANE_SIZE;
	size_t k = (size_t)lane * h->slots + (idx & (h->slots - 1));
	return (struct tw_ring_slot *)(slot0 + k * h->slot_size);
}

// The count of messages published in `lane`: head, plus the run of slots
// from head on whose sequence word says they hold their message.
static uint32_t tail_of(void *mem, uint32_t lane)
{
	struct tw_ring_hdr *h = mem;
	uint32_t idx = lane_of(mem, lane)->head;
	for (uint32_t k = 0; k < h->slots; k++, idx++) {
		if (slot_of(mem, lane, idx)->seq != idx + 1)
			break;
	}
	return idx;
}

// Makes an empty `lane` start at message `start`, as if that many had
// passed through it.
static void lane_start(void *mem, uint32_t lane, uint32_t start)
{
	struct tw_ring_hdr *h = mem;
	lane_of(mem, lane)->head = start;
	for (uint32_t i = 0; i < h->slots; i++)
		slot_of(mem, lane, start + i)->seq = start + i + 1 - h->slots;
}

static int64_t elapsed_us(int64_t start_ns)
{
	return (tw__now_ns() - start_ns) / 1000;
}

// Waits (yielding, not sleeping) until *count is non-zero: the owner of
// the count has announced itself as a sleeper.  Returns 0 on success, -1
// after ten seconds.
static int await_sleeper(uint32_t *count)
{
	int64_t give_up = tw__now_ns() + 10 * INT64_C(1000000000);
	while (__atomic_load_n(count, __ATOMIC_SEQ_CST) == 0) {
		if (tw__now_ns() > give_up)
			return -1;
		sched_yield();
	}
	return 0;
}

static void test_geometry(void **state)
{
	assert_int_equal(tw_ring_bytes(0, 1, 1), 0);
	assert_int_equal(tw_ring_bytes(1, 0, 1), 0);
	assert_int_equal(tw_ring_bytes(1, 1, 0), 0);
	assert_int_equal(tw_ring_bytes(1, 3, 8), 0);
	assert_int_equal(tw_ring_bytes(1, 12, 8), 0);
	assert_int_equal(tw_ring_bytes(1, UINT32_MAX, 8), 0);
	// Sizes that cannot be represented.
	assert_int_equal(tw_ring_bytes(UINT32_MAX, 1u << 31, UINT32_MAX), 0);
	assert_int_equal(tw_ring_bytes(UINT32_MAX, 1u << 31, 1), 0);
	assert_int_equal(tw_ring_bytes(1u << 31, 1u << 31, 48), 0);

	static const uint32_t g[][3] = { { 1, 1, 1 }, { 1, 1, 48 },
		{ 1, 1, 41 }, { 3, 4, 100 }, { 16, 1024, 4096 },
		{ 1, 1u << 31, 1 }, { 2, 2, UINT32_MAX } };
	for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++) {
		uint64_t stride = (g[i][2] + UINT64_C(24) + 63) / 64 * 64;
		uint64_t want = TW_RING_HDR_SIZE
		    + (uint64_t)g[i][0] * TW_RING_LANE_SIZE
		    + (uint64_t)g[i][0] * g[i][1] * stride;
		size_t got = tw_ring_bytes(g[i][0], g[i][1], g[i][2]);
		assert_int_equal(got, want);
		assert_int_equal(got % 64, 0);
	}
	// A slot of 40 payload bytes fits one cache line with its header.
	assert_int_equal(tw_ring_bytes(1, 1, 40), 192 + 64 + 64);
	assert_int_equal(tw_ring_bytes(1, 1, 41), 192 + 64 + 128);
}

static void test_init_errors(void **state)
{
	size_t bytes = tw_ring_bytes(2, 4, 32);
	unsigned char *mem = aligned_alloc(64, bytes + 64);
	assert_non_null(mem);
	TW_FAIL(tw_ring_init(NULL, bytes, 2, 4, 32), TW_EINVAL);
	TW_FAIL(tw_ring_init(mem + 8, bytes, 2, 4, 32), TW_EINVAL);
	TW_FAIL(tw_ring_init(mem + 32, bytes, 2, 4, 32), TW_EINVAL);
	TW_FAIL(tw_ring_init(mem, bytes - 1, 2, 4, 32), TW_EINVAL);
	TW_FAIL(tw_ring_init(mem, 0, 2, 4, 32), TW_EINVAL);
	TW_FAIL(tw_ring_init(mem, bytes, 0, 4, 32), TW_EINVAL);
	TW_FAIL(tw_ring_init(mem, bytes, 2, 0, 32), TW_EINVAL);
	TW_FAIL(tw_ring_init(mem, bytes, 2, 6, 32), TW_EINVAL);
	TW_FAIL(tw_ring_init(mem, bytes, 2, 4, 0), TW_EINVAL);
	TW_FAIL(tw_ring_init(mem, SIZE_MAX, UINT32_MAX, 1u << 31, UINT32_MAX),
	    TW_EINVAL);
	TW_PASS(tw_ring_init(mem, bytes, 2, 4, 32));
	TW_PASS(tw_ring_init(mem + 64, bytes, 2, 4, 32));
	TW_PASS(tw_ring_init(mem, bytes + 64, 2, 4, 32));
	free(mem);
}

static void test_attach_errors(void **state)
{
	size_t bytes;
	unsigned char *mem = ring_alloc(2, 4, 32, &bytes);
	tw_ring *r = NULL;
	TW_FAIL(tw_ring_attach(NULL, bytes, &r), TW_EINVAL);
	TW_FAIL(tw_ring_attach(mem, bytes, NULL), TW_EINVAL);
	TW_FAIL(tw_ring_attach(mem + 8, bytes - 64, &r), TW_EINVAL);
	assert_null(r);
	TW_FAIL(tw_ring_attach(mem, 0, &r), TW_EPROTO);
	TW_FAIL(tw_ring_attach(mem, TW_RING_HDR_SIZE - 1, &r), TW_EPROTO);
	TW_FAIL(tw_ring_attach(mem, bytes - 1, &r), TW_EPROTO);
	TW_FAIL(tw_ring_attach(mem, TW_RING_HDR_SIZE, &r), TW_EPROTO);
	assert_null(r);
	// A larger region is fine: the ring uses its own size.
	TW_PASS(tw_ring_attach(mem, bytes + 1000, &r));
	tw_ring_detach(r);

	struct tw_ring_hdr *h = hdr_of(mem);
	// Another version of the layout (version 1 kept prod_sleepers
	// elsewhere), older or newer, is refused.
	h->version = TW_RING_VERSION - 1;
	TW_FAIL(tw_ring_attach(mem, bytes, &r), TW_EPROTO);
	h->version = TW_RING_VERSION + 1;
	TW_FAIL(tw_ring_attach(mem, bytes, &r), TW_EPROTO);
	h->version = TW_RING_VERSION;
	h->magic ^= 1;
	TW_FAIL(tw_ring_attach(mem, bytes, &r), TW_EPROTO);
	h->magic ^= 1;
	TW_PASS(tw_ring_attach(mem, bytes, &r));
	tw_ring_detach(r);
	tw_ring_detach(NULL);

	// Memory that was never initialised is not a ring.
	memset(mem, 0, bytes);
	r = NULL;
	TW_FAIL(tw_ring_attach(mem, bytes, &r), TW_EPROTO);
	assert_null(r);
	free(mem);
}

static void test_send_recv(void **state)
{
	size_t bytes;
	void *mem = ring_alloc(2, 4, 64, &bytes);
	tw_ring *r = ring_open(mem, bytes);
	char buf[64];
	size_t n = 0;
	uint32_t route = 0, lane = 9;
	uint64_t corr = 0;

	TW_PASS(tw_ring_send(
	    r, 0, 7, "hello", 5, UINT64_C(0x1122334455667788), 0));
	TW_PASS(tw_ring_recv(r, 0, buf, sizeof(buf), &n, &route, &corr, 0));
	assert_int_equal(n, 5);
	assert_memory_equal(buf, "hello", 5);
	assert_int_equal(route, 7);
	assert_true(corr == UINT64_C(0x1122334455667788));

	// Zero-length messages, NULL data, and NULL output arguments.
	TW_PASS(tw_ring_send(r, 1, UINT32_MAX, NULL, 0, 0, 0));
	n = 99;
	TW_PASS(tw_ring_recv_any(r, &lane, NULL, 0, &n, &route, &corr, 0));
	assert_int_equal(lane, 1);
	assert_int_equal(n, 0);
	assert_int_equal(route, UINT32_MAX);
	assert_true(corr == 0);
	TW_PASS(tw_ring_send(r, 1, 1, "x", 1, 1, 0));
	TW_PASS(tw_ring_recv(r, 1, buf, 1, NULL, NULL, NULL, 0));
	assert_int_equal(buf[0], 'x');

	// A message of exactly max_msg bytes, and order within a lane.
	unsigned char big[64];
	for (int i = 0; i < 64; i++)
		big[i] = (unsigned char)(i * 7 + 1);
	for (uint32_t i = 0; i < 4; i++)
		TW_PASS(tw_ring_send(r, 0, i, big, 64 - i, i + 100, 0));
	for (uint32_t i = 0; i < 4; i++) {
		unsigned char got[64];
		TW_PASS(tw_ring_recv(
		    r, 0, got, sizeof(got), &n, &route, &corr, 0));
		assert_int_equal(n, 64 - i);
		assert_int_equal(route, i);
		assert_true(corr == i + 100);
		assert_memory_equal(got, big, n);
	}
	TW_FAIL(tw_ring_recv(r, 0, buf, sizeof(buf), &n, NULL, NULL, 0),
	    TW_ETIMEDOUT);

	// Two handles on one ring see the same lanes.
	tw_ring *r2 = ring_open(mem, bytes);
	TW_PASS(tw_ring_send(r2, 1, 3, "abc", 3, 4, 0));
	TW_PASS(tw_ring_recv(r, 1, buf, sizeof(buf), &n, &route, &corr, 0));
	assert_int_equal(n, 3);
	assert_memory_equal(buf, "abc", 3);
	// Nobody ever slept, so nobody was woken: the futex words were never
	// bumped, which means no send or receive made a system call.
	assert_int_equal(hdr_of(mem)->data_seq, 0);
	assert_int_equal(lane_of(mem, 0)->space_seq, 0);
	assert_int_equal(lane_of(mem, 1)->space_seq, 0);
	tw_ring_detach(r2);
	tw_ring_detach(r);
	free(mem);
}

static void test_send_errors(void **state)
{
	size_t bytes;
	void *mem = ring_alloc(2, 4, 16, &bytes);
	tw_ring *r = ring_open(mem, bytes);
	char data[32] = { 0 };
	TW_FAIL(tw_ring_send(NULL, 0, 0, data, 1, 0, 0), TW_EINVAL);
	TW_FAIL(tw_ring_send(r, 2, 0, data, 1, 0, 0), TW_EINVAL);
	TW_FAIL(tw_ring_send(r, UINT32_MAX, 0, data, 1, 0, 0), TW_EINVAL);
	TW_FAIL(tw_ring_send(r, 0, 0, NULL, 1, 0, 0), TW_EINVAL);
	TW_FAIL(tw_ring_send(r, 0, 0, data, 17, 0, 0), TW_ETOOBIG);
	TW_FAIL(tw_ring_send(r, 0, 0, data, SIZE_MAX, 0, -1), TW_ETOOBIG);
	TW_PASS(tw_ring_send(r, 0, 0, data, 16, 0, 0));
	// Nothing but the one good message was queued.
	assert_int_equal(tail_of(mem, 0), 1);
	assert_int_equal(tail_of(mem, 1), 0);
	tw_ring_detach(r);
	free(mem);
}

static void test_recv_errors(void **state)
{
	size_t bytes;
	void *mem = ring_alloc(2, 4, 16, &bytes);
	tw_ring *r = ring_open(mem, bytes);
	char buf[16];
	size_t n = 0;
	uint32_t lane = 77, route = 55;
	uint64_t corr = 66;
	TW_FAIL(tw_ring_recv(NULL, 0, buf, 16, &n, NULL, NULL, 0), TW_EINVAL);
	TW_FAIL(tw_ring_recv(r, 2, buf, 16, &n, NULL, NULL, 0), TW_EINVAL);
	TW_FAIL(tw_ring_recv(r, 0, NULL, 16, &n, NULL, NULL, 0), TW_EINVAL);
	TW_FAIL(tw_ring_recv_any(NULL, &lane, buf, 16, &n, NULL, NULL, 0),
	    TW_EINVAL);
	TW_FAIL(
	    tw_ring_recv_any(r, NULL, buf, 16, &n, NULL, NULL, 0), TW_EINVAL);
	TW_FAIL(
	    tw_ring_recv_any(r, &lane, NULL, 1, &n, NULL, NULL, 0), TW_EINVAL);

	// A buffer too small: TW_ETRUNC, the needed size, the message stays.
	TW_PASS(tw_ring_send(r, 1, 5, "0123456789", 10, 6, 0));
	TW_FAIL(tw_ring_recv(r, 1, buf, 4, &n, &route, &corr, 0), TW_ETRUNC);
	assert_int_equal(n, 10);
	assert_int_equal(route, 55); // outputs other than *n untouched
	assert_true(corr == 66);
	n = 0;
	TW_FAIL(tw_ring_recv(r, 1, NULL, 0, &n, NULL, NULL, 0), TW_ETRUNC);
	assert_int_equal(n, 10);
	TW_FAIL(tw_ring_recv(r, 1, buf, 9, NULL, NULL, NULL, 0), TW_ETRUNC);
	n = 0;
	TW_FAIL(tw_ring_recv_any(r, &lane, buf, 9, &n, &route, &corr, 0),
	    TW_ETRUNC);
	assert_int_equal(lane, 1);
	assert_int_equal(n, 10);
	assert_int_equal(route, 55);
	// A message that arrives meanwhile on a lane scanned earlier does not
	// overtake the one left in place.
	TW_PASS(tw_ring_send(r, 0, 9, "later", 5, 9, 0));
	TW_PASS(tw_ring_recv_any(r, &lane, buf, 10, &n, &route, &corr, 0));
	assert_int_equal(lane, 1);
	assert_int_equal(n, 10);
	assert_int_equal(route, 5);
	assert_true(corr == 6);
	assert_memory_equal(buf, "0123456789", 10);
	TW_FAIL(tw_ring_recv(r, 1, buf, 16, &n, NULL, NULL, 0), TW_ETIMEDOUT);
	TW_PASS(tw_ring_recv_any(r, &lane, buf, 10, &n, &route, &corr, 0));
	assert_int_equal(lane, 0);
	assert_int_equal(route, 9);
	tw_ring_detach(r);
	free(mem);
}

static void test_timeouts(void **state)
{
	size_t bytes;
	void *mem = ring_alloc(2, 2, 8, &bytes);
	tw_ring *r = ring_open(mem, bytes);
	char buf[8];
	uint32_t lane;
	int64_t t0;

	TW_FAIL(tw_ring_recv(r, 0, buf, 8, NULL, NULL, NULL, 0), TW_ETIMEDOUT);
	TW_FAIL(tw_ring_recv(r, 0, buf, 8, NULL, NULL, NULL, 1), TW_ETIMEDOUT);
	t0 = tw__now_ns();
	TW_FAIL(
	    tw_ring_recv(r, 0, buf, 8, NULL, NULL, NULL, 30000), TW_ETIMEDOUT);
	assert_true(elapsed_us(t0) >= 30000);
	t0 = tw__now_ns();
	TW_FAIL(tw_ring_recv_any(r, &lane, buf, 8, NULL, NULL, NULL, 0),
	    TW_ETIMEDOUT);
	TW_FAIL(tw_ring_recv_any(r, &lane, buf, 8, NULL, NULL, NULL, 45000),
	    TW_ETIMEDOUT);
	assert_true(elapsed_us(t0) >= 45000);

	// A full lane times out; the other lane is independent.
	TW_PASS(tw_ring_send(r, 0, 0, "a", 1, 0, 0));
	TW_PASS(tw_ring_send(r, 0, 0, "b", 1, 0, 0));
	TW_FAIL(tw_ring_send(r, 0, 0, "c", 1, 0, 0), TW_ETIMEDOUT);
	t0 = tw__now_ns();
	TW_FAIL(tw_ring_send(r, 0, 0, "c", 1, 0, 25000), TW_ETIMEDOUT);
	assert_true(elapsed_us(t0) >= 25000);
	TW_PASS(tw_ring_send(r, 1, 0, "d", 1, 0, 0));
	// A message waiting makes even a tiny or infinite timeout return at
	// once.
	TW_PASS(tw_ring_recv(r, 1, buf, 8, NULL, NULL, NULL, -1));
	TW_PASS(tw_ring_recv(r, 0, buf, 8, NULL, NULL, NULL, -1));
	assert_int_equal(buf[0], 'a');
	TW_PASS(tw_ring_send(r, 0, 0, "c", 1, 0, -1));
	tw_ring_detach(r);
	free(mem);
}

struct helper {
	void *mem;
	size_t bytes;
	uint32_t lane;
	int status;
	int ok;
};

// Waits until the consumer sleeps, then sends one message on `lane`.
static void *send_when_consumer_sleeps(void *arg)
{
	struct helper *h = arg;
	tw_ring *r = NULL;
	h->status = tw_ring_attach(h->mem, h->bytes, &r);
	if (h->status != TW_OK)
		return NULL;
	h->ok = await_sleeper(&hdr_of(h->mem)->cons_sleepers) == 0;
	h->status = tw_ring_send(r, h->lane, 42, "wake", 4, 43, 0);
	tw_ring_detach(r);
	return NULL;
}

// Waits until the producer of `lane` sleeps, then takes one message.
static void *recv_when_producer_sleeps(void *arg)
{
	struct helper *h = arg;
	tw_ring *r = NULL;
	char buf[8];
	h->status = tw_ring_attach(h->mem, h->bytes, &r);
	if (h->status != TW_OK)
		return NULL;
	h->ok = await_sleeper(&lane_of(h->mem, h->lane)->prod_sleepers) == 0;
	h->status
	    = tw_ring_recv(r, h->lane, buf, sizeof(buf), NULL, NULL, NULL, 0);
	tw_ring_detach(r);
	return NULL;
}

static void test_blocking_wake(void **state)
{
	size_t bytes;
	void *mem = ring_alloc(3, 2, 8, &bytes);
	tw_ring *r = ring_open(mem, bytes);
	pthread_t t;
	char buf[8];
	size_t n;
	uint32_t route, lane;
	uint64_t corr;

	// A consumer asleep in tw_ring_recv is woken by a send.
	struct helper h = { mem, bytes, 2, -100, 0 };
	assert_int_equal(
	    pthread_create(&t, NULL, send_when_consumer_sleeps, &h), 0);
	TW_PASS(tw_ring_recv(r, 2, buf, sizeof(buf), &n, &route, &corr, -1));
	pthread_join(t, NULL);
	TW_PASS(h.status);
	assert_true(h.ok);
	assert_int_equal(n, 4);
	assert_memory_equal(buf, "wake", 4);
	assert_int_equal(route, 42);
	// The producer found a sleeper and bumped the futex word.
	assert_true(hdr_of(mem)->data_seq > 0);
	assert_int_equal(hdr_of(mem)->cons_sleepers, 0);

	// The same through tw_ring_recv_any, with a finite timeout.
	struct helper h2 = { mem, bytes, 1, -100, 0 };
	assert_int_equal(
	    pthread_create(&t, NULL, send_when_consumer_sleeps, &h2), 0);
	TW_PASS(tw_ring_recv_any(
	    r, &lane, buf, sizeof(buf), &n, NULL, NULL, 30 * SEC_US));
	pthread_join(t, NULL);
	TW_PASS(h2.status);
	assert_true(h2.ok);
	assert_int_equal(lane, 1);

	// A producer asleep on a full lane is woken by a receive.  The
	// helper's handle is the consumer while it runs, a fresh one after:
	// the consumer is never the handle `r` again, which counts on the
	// head it stored last.
	TW_PASS(tw_ring_send(r, 0, 1, "1", 1, 0, 0));
	TW_PASS(tw_ring_send(r, 0, 2, "2", 1, 0, 0));
	struct helper h3 = { mem, bytes, 0, -100, 0 };
	assert_int_equal(
	    pthread_create(&t, NULL, recv_when_producer_sleeps, &h3), 0);
	TW_PASS(tw_ring_send(r, 0, 3, "3", 1, 0, -1));
	pthread_join(t, NULL);
	TW_PASS(h3.status);
	assert_true(h3.ok);
	assert_true(lane_of(mem, 0)->space_seq > 0);
	assert_int_equal(lane_of(mem, 0)->prod_sleepers, 0);
	tw_ring *c = ring_open(mem, bytes);
	for (uint32_t want = 2; want <= 3; want++) {
		TW_PASS(
		    tw_ring_recv(c, 0, buf, sizeof(buf), &n, &route, NULL, 0));
		assert_int_equal(route, want);
	}
	tw_ring_detach(c);
	tw_ring_detach(r);
	free(mem);
}

struct release_helper {
	void *mem;
	tw_ring *c; // the consumer's handle, used by this thread alone
	uint32_t route; // of the message taken
	int status;
	int ok;
};

// Waits until the producer of lane 0 sleeps, then takes one message
// through the consumer's own handle.
static void *take_when_producer_sleeps(void *arg)
{
	struct release_helper *h = arg;
	char buf[8];
	h->ok = await_sleeper(&lane_of(h->mem, 0)->prod_sleepers) == 0;
	h->status = tw_ring_recv(
	    h->c, 0, buf, sizeof(buf), NULL, &h->route, NULL, 0);
	return NULL;
}

static void take_route(tw_ring *c, uint32_t want)
{
	char buf[8];
	uint32_t route = UINT32_MAX;
	TW_PASS(tw_ring_recv(c, 0, buf, sizeof(buf), NULL, &route, NULL, 0));
	assert_int_equal(route, want);
}

// Batches of at most half the lane: 64 asked of 16 slots make 8.
static void release_batch_cap(void)
{
	size_t bytes;
	void *mem = ring_alloc(1, 16, 8, &bytes);
	tw_ring *p = ring_open(mem, bytes);
	tw_ring *c = ring_open(mem, bytes);
	uint32_t *head = &lane_of(mem, 0)->head;
	tw__ring_set_release(c, 64);
	for (uint32_t i = 0; i < 16; i++)
		TW_PASS(tw_ring_send(p, 0, i, "x", 1, 0, 0));
	for (uint32_t i = 0; i < 7; i++)
		take_route(c, i);
	assert_int_equal(__atomic_load_n(head, __ATOMIC_SEQ_CST), 0);
	take_route(c, 7);
	assert_int_equal(__atomic_load_n(head, __ATOMIC_SEQ_CST), 8);
	tw_ring_detach(c);
	tw_ring_detach(p);
	free(mem);
}

// A consumer that hands slots back in batches (tw__ring_set_release): the
// producer sees room once a batch is taken, when the consumer calls
// tw__ring_release, when the producer sleeps, and when the consumer finds
// the lane empty; a head scribbled on meanwhile is caught at the next
// hand-back.
static void test_release_batch(void **state)
{
	(void)state;
	release_batch_cap();
	size_t bytes;
	void *mem = ring_alloc(1, 16, 8, &bytes);
	tw_ring *p = ring_open(mem, bytes);
	tw_ring *c = ring_open(mem, bytes);
	uint32_t *head = &lane_of(mem, 0)->head;
	tw__ring_set_release(c, 4);
	uint32_t next = 0; // route of the next message sent
	for (; next < 16; next++)
		TW_PASS(tw_ring_send(p, 0, next, "x", 1, 0, 0));
	TW_FAIL(tw_ring_send(p, 0, next, "x", 1, 0, 0), TW_ETIMEDOUT);

	// Three of a batch taken: the producer sees no room yet.
	for (uint32_t i = 0; i < 3; i++)
		take_route(c, i);
	assert_int_equal(__atomic_load_n(head, __ATOMIC_SEQ_CST), 0);
	TW_FAIL(tw_ring_send(p, 0, next, "x", 1, 0, 0), TW_ETIMEDOUT);
	// The fourth completes it.
	take_route(c, 3);
	assert_int_equal(__atomic_load_n(head, __ATOMIC_SEQ_CST), 4);
	for (uint32_t i = 0; i < 4; i++, next++)
		TW_PASS(tw_ring_send(p, 0, next, "x", 1, 0, 0));
	TW_FAIL(tw_ring_send(p, 0, next, "x", 1, 0, 0), TW_ETIMEDOUT);

	// tw__ring_release hands back part of a batch.
	take_route(c, 4);
	TW_FAIL(tw_ring_send(p, 0, next, "x", 1, 0, 0), TW_ETIMEDOUT);
	TW_PASS(tw__ring_release(c));
	assert_int_equal(__atomic_load_n(head, __ATOMIC_SEQ_CST), 5);
	TW_PASS(tw_ring_send(p, 0, next++, "x", 1, 0, 0));

	// A producer asleep on the full lane gets the slot of the next take,
	// though it is not the end of a batch.
	struct release_helper h = { mem, c, UINT32_MAX, -100, 0 };
	pthread_t t;
	assert_int_equal(
	    pthread_create(&t, NULL, take_when_producer_sleeps, &h), 0);
	TW_PASS(tw_ring_send(p, 0, next++, "x", 1, 0, 30 * SEC_US));
	pthread_join(t, NULL);
	assert_true(h.ok);
	TW_PASS(h.status);
	assert_int_equal(h.route, 5);

	// Taking everything hands everything back, at the look that finds
	// the lane empty: the take of the last message leaves its batch
	// open, for it does not read the next slot, whose line the producer
	// writes next (a transfer between cores on every small message's
	// way).
	for (uint32_t i = 6; i < next; i++)
		take_route(c, i);
	assert_true(__atomic_load_n(head, __ATOMIC_SEQ_CST) < next);
	TW_FAIL(
	    tw_ring_recv(c, 0, NULL, 0, NULL, NULL, NULL, 0), TW_ETIMEDOUT);
	assert_int_equal(__atomic_load_n(head, __ATOMIC_SEQ_CST), next);

	// A head moved by someone else while a batch is open.
	TW_PASS(tw_ring_send(p, 0, next, "x", 1, 0, 0));
	TW_PASS(tw_ring_send(p, 0, next + 1, "x", 1, 0, 0));
	take_route(c, next);
	__atomic_store_n(head, 7, __ATOMIC_SEQ_CST);
	TW_FAIL(tw__ring_release(c), TW_EPROTO);
	tw_ring_detach(c);
	tw_ring_detach(p);
	free(mem);
}

// A lane's producer, or the ring's consumer, that goes back to a handle
// after another handle moved its index is told so (TW_EPROTO), and the
// index is left where the other handle put it: the next call through the
// first handle takes up from there.
static void test_role_back_to_handle(void **state)
{
	(void)state;
	size_t bytes;
	void *mem = ring_alloc(1, 4, 8, &bytes);
	tw_ring *a = ring_open(mem, bytes), *b = ring_open(mem, bytes);
	char buf[8];
	uint32_t route;
	TW_PASS(tw_ring_send(a, 0, 1, "a", 1, 0, 0));
	TW_PASS(tw_ring_recv(a, 0, buf, sizeof(buf), NULL, &route, NULL, 0));
	TW_PASS(tw_ring_send(b, 0, 2, "b", 1, 0, 0));
	TW_PASS(tw_ring_recv(b, 0, buf, sizeof(buf), NULL, &route, NULL, 0));
	assert_int_equal(route, 2);
	TW_FAIL(tw_ring_send(a, 0, 3, "c", 1, 0, 0), TW_EPROTO);
	assert_int_equal(tail_of(mem, 0), 2);
	TW_PASS(tw_ring_send(a, 0, 4, "d", 1, 0, 0));
	assert_int_equal(tail_of(mem, 0), 3);
	TW_FAIL(tw_ring_recv(a, 0, buf, sizeof(buf), NULL, &route, NULL, 0),
	    TW_EPROTO);
	assert_int_equal(lane_of(mem, 0)->head, 2);
	TW_PASS(tw_ring_recv(a, 0, buf, sizeof(buf), NULL, &route, NULL, 0));
	assert_int_equal(route, 4);
	assert_int_equal(lane_of(mem, 0)->head, 3);
	tw_ring_detach(a);
	tw_ring_detach(b);
	free(mem);
}

struct kicker {
	void *mem;
	tw_ring *r;
	_Atomic int stop;
	int ok;
};

// Waits until the consumer sleeps, then raises its stop word and kicks it.
static void *stop_when_consumer_sleeps(void *arg)
{
	struct kicker *k = arg;
	k->ok = await_sleeper(&hdr_of(k->mem)->cons_sleepers) == 0;
	atomic_store(&k->stop, 1);
	tw__ring_kick(k->r);
	return NULL;
}

static void test_wait_any(void **state)
{
	size_t bytes;
	void *mem = ring_alloc(2, 4, 8, &bytes);
	tw_ring *r = ring_open(mem, bytes);
	_Atomic int stop = 0;
	char buf[8];
	size_t n;
	uint32_t lane;
	pthread_t t;

	// Empty: looking once, and waiting a little, both time out.
	TW_FAIL(tw__ring_wait_any(r, &stop, 0), TW_ETIMEDOUT);
	int64_t t0 = tw__now_ns();
	TW_FAIL(tw__ring_wait_any(r, &stop, 2000), TW_ETIMEDOUT);
	assert_true(elapsed_us(t0) >= 2000);

	// A message in any lane is seen and left in place.
	TW_PASS(tw_ring_send(r, 1, 7, "m", 1, 0, 0));
	TW_PASS(tw__ring_wait_any(r, &stop, 0));
	TW_PASS(tw__ring_wait_any(r, &stop, -1));
	TW_PASS(
	    tw_ring_recv_any(r, &lane, buf, sizeof(buf), &n, NULL, NULL, 0));
	assert_int_equal(lane, 1);
	TW_FAIL(tw__ring_wait_any(r, &stop, 0), TW_ETIMEDOUT);

	// A raised stop word ends the wait at once.
	stop = 1;
	TW_PASS(tw__ring_wait_any(r, &stop, -1));

	// A sleeper is woken by a send, and takes nothing.
	struct helper h = { mem, bytes, 0, -100, 0 };
	stop = 0;
	assert_int_equal(
	    pthread_create(&t, NULL, send_when_consumer_sleeps, &h), 0);
	TW_PASS(tw__ring_wait_any(r, &stop, 30 * SEC_US));
	pthread_join(t, NULL);
	TW_PASS(h.status);
	assert_true(h.ok);
	TW_PASS(tw_ring_recv(r, 0, buf, sizeof(buf), &n, NULL, NULL, 0));
	assert_memory_equal(buf, "wake", 4);

	// A sleeper is woken by a kick once its stop word is raised.
	struct kicker k = { mem, r, 0, 0 };
	assert_int_equal(
	    pthread_create(&t, NULL, stop_when_consumer_sleeps, &k), 0);
	TW_PASS(tw__ring_wait_any(r, &k.stop, 30 * SEC_US));
	pthread_join(t, NULL);
	assert_true(k.ok);
	assert_int_equal(hdr_of(mem)->cons_sleepers, 0);

	// The other side gone: TW_EPEER; this side gone: TW_ECLOSED.
	tw_ring_abort(r, 0);
	TW_FAIL(tw__ring_wait_any(r, &stop, 0), TW_EPEER);
	TW_FAIL(tw__ring_wait_any(r, &stop, -1), TW_EPEER);
	tw_ring_abort(r, 1);
	TW_FAIL(tw__ring_wait_any(r, &stop, -1), TW_ECLOSED);
	tw_ring_detach(r);
	free(mem);
}

// Sleeping on many rings: announcing, then the words to sleep on, and a
// producer that publishes after the announcement bumps the word.
static void test_sleep_begin(void **state)
{
	size_t bytes;
	void *mem = ring_alloc(2, 4, 8, &bytes);
	tw_ring *r = ring_open(mem, bytes);
	struct tw_ring_hdr *hdr = hdr_of(mem);
	uint32_t *word;
	uint32_t seq;
	char buf[8];
	size_t n;

	// Empty: announced, and a send now bumps the word.
	TW_FAIL(tw__ring_sleep_begin(r, 3, 0, &word, &seq), TW_EAGAIN);
	assert_ptr_equal(word, &hdr->data_seq);
	assert_int_equal(hdr->cons_sleepers, 1);
	TW_PASS(tw_ring_send(r, 1, 7, "m", 1, 0, 0));
	assert_int_not_equal(__atomic_load_n(word, __ATOMIC_SEQ_CST), seq);
	tw__ring_sleep_end(r);
	assert_int_equal(hdr->cons_sleepers, 0);

	// A message in a lane of the mask: nothing announced.  Outside
	// the mask it does not count.
	TW_PASS(tw__ring_sleep_begin(r, 2, 0, &word, &seq));
	assert_int_equal(hdr->cons_sleepers, 0);
	TW_FAIL(tw__ring_sleep_begin(r, 1, 0, &word, &seq), TW_EAGAIN);
	tw__ring_sleep_end(r);
	TW_PASS(tw_ring_recv(r, 1, buf, sizeof(buf), &n, NULL, NULL, 0));
	assert_int_equal(n, 1);

	// The other side gone: TW_EPEER; this side gone: TW_ECLOSED.
	tw_ring_abort(r, 0);
	TW_FAIL(tw__ring_sleep_begin(r, 3, 1, &word, &seq), TW_EPEER);
	tw_ring_abort(r, 1);
	TW_FAIL(tw__ring_sleep_begin(r, 3, 0, &word, &seq), TW_ECLOSED);
	assert_int_equal(hdr->cons_sleepers, 0);
	tw_ring_detach(r);
	free(mem);
}

// The kick word: the consumer's word, bumped by a kick and, unlike a
// sleeper's announcement, by nothing else; and a lane that looks full to a
// thread that does not hold the consumer's role.
static void test_kick_full(void **state)
{
	size_t bytes;
	void *mem = ring_alloc(2, 4, 8, &bytes);
	tw_ring *r = ring_open(mem, bytes);
	uint32_t seq;
	uint32_t *word = tw__ring_kick_word(r, &seq);
	assert_ptr_equal(word, &hdr_of(mem)->data_seq);
	assert_int_equal(seq, *word);
	TW_PASS(tw_ring_send(r, 0, 7, "m", 1, 0, 0));
	assert_int_equal(__atomic_load_n(word, __ATOMIC_SEQ_CST), seq);
	tw__ring_kick(r);
	assert_int_not_equal(__atomic_load_n(word, __ATOMIC_SEQ_CST), seq);
	(void)tw__ring_kick_word(r, &seq);
	assert_int_equal(seq, *word);

	// Three of four slots of lane 0 used, then four; lane 1 empty.
	char buf[8];
	size_t n;
	assert_int_equal(tw__ring_looks_full(r), 0);
	TW_PASS(tw_ring_send(r, 0, 7, "m", 1, 0, 0));
	TW_PASS(tw_ring_send(r, 0, 7, "m", 1, 0, 0));
	assert_int_equal(tw__ring_looks_full(r), 0);
	TW_PASS(tw_ring_send(r, 0, 7, "m", 1, 0, 0));
	assert_int_equal(tw__ring_looks_full(r), 1);
	// A message taken and handed back makes room.
	TW_PASS(tw_ring_recv(r, 0, buf, sizeof(buf), &n, NULL, NULL, 0));
	assert_int_equal(tw__ring_looks_full(r), 0);
	// Lap after lap, and in the other lane.
	for (int lap = 0; lap < 9; lap++) {
		TW_PASS(tw_ring_send(r, 0, 7, "m", 1, 0, 0));
		assert_int_equal(tw__ring_looks_full(r), 1);
		TW_PASS(
		    tw_ring_recv(r, 0, buf, sizeof(buf), &n, NULL, NULL, 0));
		assert_int_equal(tw__ring_looks_full(r), 0);
	}
	for (int i = 0; i < 3; i++)
		TW_PASS(
		    tw_ring_recv(r, 0, buf, sizeof(buf), &n, NULL, NULL, 0));
	for (int i = 0; i < 4; i++)
		TW_PASS(tw_ring_send(r, 1, 7, "m", 1, 0, 0));
	assert_int_equal(tw__ring_looks_full(r), 1);
	tw_ring_detach(r);
	free(mem);
}

static void test_recv_any_fair(void **state)
{
	size_t bytes;
	void *mem = ring_alloc(4, 8, 8, &bytes);
	tw_ring *r = ring_open(mem, bytes);
	uint32_t lane, route;

	// Three messages in each lane come out lane by lane, in order.
	for (uint32_t l = 0; l < 4; l++)
		for (uint32_t i = 0; i < 3; i++)
			TW_PASS(
			    tw_ring_send(r, l, l * 100 + i, NULL, 0, 0, 0));
	for (uint32_t i = 0; i < 3; i++) {
		for (uint32_t l = 0; l < 4; l++) {
			TW_PASS(tw_ring_recv_any(
			    r, &lane, NULL, 0, NULL, &route, NULL, 0));
			assert_int_equal(lane, l);
			assert_int_equal(route, l * 100 + i);
		}
	}
	TW_FAIL(tw_ring_recv_any(r, &lane, NULL, 0, NULL, NULL, NULL, 0),
	    TW_ETIMEDOUT);

	// Empty lanes are skipped.
	for (uint32_t i = 0; i < 2; i++) {
		TW_PASS(tw_ring_send(r, 1, 1, NULL, 0, 0, 0));
		TW_PASS(tw_ring_send(r, 3, 3, NULL, 0, 0, 0));
	}
	static const uint32_t seq1[] = { 1, 3, 1, 3 };
	for (size_t i = 0; i < 4; i++) {
		TW_PASS(
		    tw_ring_recv_any(r, &lane, NULL, 0, NULL, NULL, NULL, 0));
		assert_int_equal(lane, seq1[i]);
	}

	// The scan starts after the last lane served (here lane 2), wrapping.
	TW_PASS(tw_ring_send(r, 2, 2, NULL, 0, 0, 0));
	TW_PASS(tw_ring_recv_any(r, &lane, NULL, 0, NULL, NULL, NULL, 0));
	assert_int_equal(lane, 2);
	for (uint32_t l = 0; l < 4; l++)
		TW_PASS(tw_ring_send(r, l, l, NULL, 0, 0, 0));
	static const uint32_t seq2[] = { 3, 0, 1, 2 };
	for (size_t i = 0; i < 4; i++) {
		TW_PASS(
		    tw_ring_recv_any(r, &lane, NULL, 0, NULL, NULL, NULL, 0));
		assert_int_equal(lane, seq2[i]);
	}

	// A lane that is refilled after every receive does not starve the
	// others: each of them is served within one round.
	TW_PASS(tw_ring_send(r, 0, 0, NULL, 0, 0, 0));
	TW_PASS(tw_ring_send(r, 2, 2, NULL, 0, 0, 0));
	TW_PASS(tw_ring_send(r, 3, 3, NULL, 0, 0, 0));
	int served[4] = { 0 };
	for (int i = 0; i < 6; i++) {
		TW_PASS(
		    tw_ring_recv_any(r, &lane, NULL, 0, NULL, NULL, NULL, 0));
		served[lane]++;
		if (lane == 0)
			TW_PASS(tw_ring_send(r, 0, 0, NULL, 0, 0, 0));
	}
	assert_int_equal(served[2], 1);
	assert_int_equal(served[3], 1);
	assert_int_equal(served[1], 0);
	assert_int_equal(served[0], 4);
	tw_ring_detach(r);
	free(mem);
}

// What a place callback of test_recv_placed saw, and where it sends the
// payloads of route 2 (all of it) and route 3 (from the byte after the
// first ':' on, once it has peeked at the first `peek` bytes).
struct placing {
	unsigned char to[64];
	unsigned calls;
	tw__ring_placing last;
	unsigned char *dst; // what the second ask finds there
	size_t peek;
	char seen[16];
};

static void *place_route(void *arg, tw__ring_placing *p)
{
	struct placing *pl = arg;
	pl->calls++;
	pl->last = *p;
	if (p->route == 2)
		return pl->to;
	if (p->route != 3)
		return NULL;
	if (p->have == 0) {
		p->peek = pl->peek;
		return NULL;
	}
	memcpy(pl->seen, pl->dst, p->have);
	pl->seen[p->have] = '\0';
	if (strcmp(pl->seen, "far") == 0) {
		// From beyond what was peeked at: not taken.
		p->from = p->have + 1;
		return pl->to;
	}
	const char *colon = memchr(pl->dst, ':', p->have);
	if (colon == NULL)
		return NULL;
	p->from = (size_t)(colon - (const char *)pl->dst) + 1;
	return pl->to;
}

static void test_recv_placed(void **state)
{
	size_t bytes;
	void *mem = ring_alloc(2, 8, 32, &bytes);
	tw_ring *r = ring_open(mem, bytes);
	unsigned char dst[32];
	struct placing p = { .dst = dst, .peek = 4 };
	uint32_t lane, route;
	uint64_t corr;
	size_t n, from = 99;
	void *at = NULL;

	// The callback sees the header as the receive reports it; its
	// answer takes the payload, NULL leaves it to dst.
	TW_PASS(tw_ring_send(r, 0, 2, "placed", 6, 77, 0));
	TW_PASS(tw_ring_send(r, 1, 1, "to dst", 6, 78, 0));
	TW_PASS(tw__ring_recv_any_placed(r, &lane, dst, sizeof(dst), &n,
	    &route, &corr, place_route, &p, &at, &from));
	assert_int_equal(p.calls, 1);
	assert_true(p.last.lane == 0 && p.last.route == 2 && p.last.corr == 77
	    && p.last.len == 6 && p.last.have == 0);
	assert_true(lane == 0 && route == 2 && corr == 77 && n == 6);
	assert_true(at == p.to && from == 0);
	assert_memory_equal(p.to, "placed", 6);
	memset(dst, 0, sizeof(dst));
	TW_PASS(tw__ring_recv_any_placed(r, &lane, dst, sizeof(dst), &n,
	    &route, &corr, place_route, &p, &at, &from));
	assert_int_equal(p.calls, 2);
	assert_true(lane == 1 && route == 1 && corr == 78 && n == 6);
	assert_true(at == dst && from == 0);
	assert_memory_equal(dst, "to dst", 6);

	// A peek: the first bytes go to dst, the callback is asked again
	// and its answer takes the payload from `from` on.
	memset(p.to, 0, sizeof(p.to));
	TW_PASS(tw_ring_send(r, 0, 3, "ab:cdefgh", 9, 81, 0));
	TW_PASS(tw__ring_recv_any_placed(r, &lane, dst, sizeof(dst), &n,
	    &route, &corr, place_route, &p, &at, &from));
	assert_int_equal(p.calls, 4);
	assert_string_equal(p.seen, "ab:c");
	assert_true(p.last.have == 4 && n == 9 && at == p.to && from == 3);
	assert_memory_equal(dst, "ab:", 3);
	assert_memory_equal(p.to, "cdefgh", 6);
	// Peeked, then not placed: the whole payload is in dst.
	memset(dst, 0, sizeof(dst));
	TW_PASS(tw_ring_send(r, 0, 3, "abcdefgh", 8, 82, 0));
	TW_PASS(tw__ring_recv_any_placed(r, &lane, dst, sizeof(dst), &n,
	    &route, &corr, place_route, &p, &at, &from));
	assert_true(p.calls == 6 && n == 8 && at == dst && from == 0);
	assert_memory_equal(dst, "abcdefgh", 8);
	// A peek longer than the payload gets the payload; an answer from
	// beyond what was peeked at is taken as NULL.
	p.peek = 100;
	memset(dst, 0, sizeof(dst));
	TW_PASS(tw_ring_send(r, 0, 3, "far", 3, 83, 0));
	TW_PASS(tw__ring_recv_any_placed(r, &lane, dst, sizeof(dst), &n,
	    &route, &corr, place_route, &p, &at, &from));
	assert_true(p.calls == 8 && p.last.have == 3);
	assert_true(n == 3 && at == dst && from == 0);
	assert_memory_equal(dst, "far", 3);

	// An empty message asks nothing; one longer than dst is refused
	// before the callback is asked; an empty ring says so at once.
	TW_PASS(tw_ring_send(r, 1, 2, NULL, 0, 79, 0));
	TW_PASS(tw__ring_recv_any_placed(r, &lane, dst, sizeof(dst), &n,
	    &route, &corr, place_route, &p, &at, &from));
	assert_true(n == 0 && corr == 79 && p.calls == 8);
	TW_PASS(tw_ring_send(r, 1, 2, "0123456789", 10, 80, 0));
	TW_FAIL(tw__ring_recv_any_placed(r, &lane, dst, 4, &n, &route, &corr,
	            place_route, &p, &at, &from),
	    TW_ETRUNC);
	assert_true(n == 10 && p.calls == 8);
	TW_PASS(tw__ring_recv_any_placed(r, &lane, dst, sizeof(dst), &n,
	    &route, &corr, place_route, &p, &at, &from));
	assert_true(p.calls == 9 && n == 10 && at == p.to);
	TW_FAIL(tw__ring_recv_any_placed(r, &lane, dst, sizeof(dst), &n,
	            &route, &corr, place_route, &p, &at, &from),
	    TW_ETIMEDOUT);
	TW_FAIL(tw__ring_recv_any_placed(r, NULL, dst, sizeof(dst), &n, &route,
	            &corr, place_route, &p, &at, &from),
	    TW_EINVAL);
	TW_FAIL(tw__ring_recv_any_placed(NULL, &lane, dst, sizeof(dst), &n,
	            &route, &corr, place_route, &p, &at, &from),
	    TW_EINVAL);
	TW_FAIL(tw__ring_recv_any_placed(r, &lane, dst, sizeof(dst), &n,
	            &route, &corr, place_route, &p, NULL, &from),
	    TW_EINVAL);
	TW_FAIL(tw__ring_recv_any_placed(r, &lane, dst, sizeof(dst), &n,
	            &route, &corr, place_route, &p, &at, NULL),
	    TW_EINVAL);
	tw_ring_detach(r);
	free(mem);
}

// tw__ring_send2: the two pieces make one message, in order; either may
// be empty; their sum is held to max_msg, without overflowing.
static void test_send2(void **state)
{
	size_t bytes;
	void *mem = ring_alloc(1, 4, 16, &bytes);
	tw_ring *r = ring_open(mem, bytes);
	unsigned char dst[32];
	uint32_t route;
	uint64_t corr;
	size_t n;

	TW_PASS(tw__ring_send2(r, 0, 3, "head:", 5, "payload", 7, 41, 0));
	TW_PASS(tw__ring_send2(r, 0, 4, NULL, 0, "only", 4, 42, 0));
	TW_PASS(tw__ring_send2(r, 0, 5, "alone", 5, NULL, 0, 43, 0));
	TW_PASS(tw__ring_send2(r, 0, 6, "0123456789", 10, "abcdef", 6, 44, 0));
	TW_PASS(tw_ring_recv(r, 0, dst, sizeof(dst), &n, &route, &corr, 0));
	assert_true(n == 12 && route == 3 && corr == 41);
	assert_memory_equal(dst, "head:payload", 12);
	TW_PASS(tw_ring_recv(r, 0, dst, sizeof(dst), &n, &route, &corr, 0));
	assert_true(n == 4 && route == 4 && corr == 42);
	assert_memory_equal(dst, "only", 4);
	TW_PASS(tw_ring_recv(r, 0, dst, sizeof(dst), &n, &route, &corr, 0));
	assert_true(n == 5 && route == 5 && corr == 43);
	assert_memory_equal(dst, "alone", 5);
	TW_PASS(tw_ring_recv(r, 0, dst, sizeof(dst), &n, &route, &corr, 0));
	assert_true(n == 16 && route == 6 && corr == 44);
	assert_memory_equal(dst, "0123456789abcdef", 16);

	TW_FAIL(tw__ring_send2(r, 0, 1, "0123456789", 10, "abcdefg", 7, 1, 0),
	    TW_ETOOBIG);
	TW_FAIL(
	    tw__ring_send2(r, 0, 1, "x", 1, "y", SIZE_MAX, 1, 0), TW_ETOOBIG);
	TW_FAIL(tw__ring_send2(r, 0, 1, "x", 1, NULL, 1, 1, 0), TW_EINVAL);
	TW_FAIL(tw__ring_send2(r, 0, 1, NULL, 1, "y", 1, 1, 0), TW_EINVAL);
	TW_FAIL(tw__ring_send2(r, 1, 1, "x", 1, "y", 1, 1, 0), TW_EINVAL);
	TW_FAIL(tw__ring_send2(NULL, 0, 1, "x", 1, "y", 1, 1, 0), TW_EINVAL);
	TW_FAIL(tw_ring_recv(r, 0, dst, sizeof(dst), &n, &route, &corr, 0),
	    TW_ETIMEDOUT);
	tw_ring_detach(r);
	free(mem);
}

// A message built in its slot (tw__ring_claim, tw__ring_publish) arrives
// as one sent whole; a full lane, bad arguments and a sequence word
// scribbled on between the two steps are refused.
static void test_claim_publish(void **state)
{
	(void)state;
	size_t bytes;
	void *mem = ring_alloc(2, 4, 16, &bytes);
	tw_ring *r = ring_open(mem, bytes);
	unsigned char dst[32];
	uint32_t route;
	uint64_t corr;
	size_t n;
	void *p = NULL;

	TW_PASS(tw__ring_claim(r, 1, &p));
	assert_ptr_equal(p, slot_of(mem, 1, 0) + 1);
	memcpy(p, "in its slot", 11);
	// Nothing is the consumer's before the publish.
	TW_FAIL(tw_ring_recv(r, 1, dst, sizeof(dst), &n, &route, &corr, 0),
	    TW_ETIMEDOUT);
	TW_PASS(tw__ring_publish(r, 1, 7, 11, 99));
	TW_PASS(tw_ring_recv(r, 1, dst, sizeof(dst), &n, &route, &corr, 0));
	assert_true(n == 11 && route == 7 && corr == 99);
	assert_memory_equal(dst, "in its slot", 11);

	// Claims take turns with whole sends, slot after slot, until the
	// lane is full.
	for (uint32_t i = 0; i < 4; i++) {
		if (i % 2 == 0) {
			TW_PASS(tw__ring_claim(r, 0, &p));
			assert_ptr_equal(p, slot_of(mem, 0, i) + 1);
			memset(p, 'a' + (int)i, 16);
			TW_PASS(tw__ring_publish(r, 0, i, 16, i));
		} else {
			TW_PASS(tw_ring_send(r, 0, i, "xy", 2, i, 0));
		}
	}
	TW_FAIL(tw__ring_claim(r, 0, &p), TW_EAGAIN);
	TW_PASS(tw_ring_recv(r, 0, dst, sizeof(dst), &n, &route, &corr, 0));
	assert_true(n == 16 && route == 0 && dst[15] == 'a');
	TW_PASS(tw_ring_recv(r, 0, dst, sizeof(dst), &n, &route, &corr, 0));
	assert_true(n == 2 && route == 1);
	TW_PASS(tw_ring_recv(r, 0, dst, sizeof(dst), &n, &route, &corr, 0));
	assert_true(n == 16 && route == 2 && dst[0] == 'c');
	TW_PASS(tw_ring_recv(r, 0, dst, sizeof(dst), &n, &route, &corr, 0));
	// Room again, once taken.
	TW_PASS(tw__ring_claim(r, 0, &p));

	TW_FAIL(tw__ring_publish(r, 0, 1, 17, 1), TW_ETOOBIG);
	TW_FAIL(tw__ring_claim(NULL, 0, &p), TW_EINVAL);
	TW_FAIL(tw__ring_claim(r, 2, &p), TW_EINVAL);
	TW_FAIL(tw__ring_claim(r, 0, NULL), TW_EINVAL);
	TW_FAIL(tw__ring_publish(NULL, 0, 1, 1, 1), TW_EINVAL);
	TW_FAIL(tw__ring_publish(r, 2, 1, 1, 1), TW_EINVAL);

	// The claimed slot's sequence word moved by someone else.
	struct tw_ring_slot *s = slot_of(mem, 0, 4);
	uint32_t was = __atomic_load_n(&s->seq, __ATOMIC_SEQ_CST);
	__atomic_store_n(&s->seq, was + 77, __ATOMIC_SEQ_CST);
	TW_FAIL(tw__ring_publish(r, 0, 1, 1, 1), TW_EPROTO);
	// The word is left as found and nothing was published.
	assert_int_equal(__atomic_load_n(&s->seq, __ATOMIC_SEQ_CST), was + 77);
	tw_ring_detach(r);
	free(mem);
}

static void fill_pattern(unsigned char *p, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(seed * 131 + i * 7 + (seed >> 8));
}

static void test_wrap_around(void **state)
{
	size_t bytes;
	void *mem = ring_alloc(2, 4, 32, &bytes);
	tw_ring *r = ring_open(mem, bytes);
	unsigned char out[32], in[32];
	size_t n;
	uint32_t route;
	uint64_t corr;

	// Many messages through a small lane, in bursts of 1 to 4.
	uint32_t sent = 0, got = 0;
	for (uint32_t round = 0; sent < 20000; round++) {
		uint32_t burst = round % 4 + 1;
		for (uint32_t i = 0; i < burst; i++, sent++) {
			size_t len = sent % 33;
			fill_pattern(out, len, sent);
			TW_PASS(
			    tw_ring_send(r, 1, sent, out, len, sent * 3u, 0));
		}
		if (burst == 4)
			TW_FAIL(
			    tw_ring_send(r, 1, 0, out, 1, 0, 0), TW_ETIMEDOUT);
		for (; got < sent; got++) {
			TW_PASS(tw_ring_recv(
			    r, 1, in, sizeof(in), &n, &route, &corr, 0));
			size_t len = got % 33;
			assert_int_equal(route, got);
			assert_int_equal(n, len);
			fill_pattern(out, len, got);
			assert_memory_equal(in, out, len);
			assert_true(corr == got * 3u);
		}
		TW_FAIL(tw_ring_recv(r, 1, in, sizeof(in), &n, NULL, NULL, 0),
		    TW_ETIMEDOUT);
	}
	assert_int_equal(tail_of(mem, 1), sent);
	assert_int_equal(lane_of(mem, 1)->head, sent);

	// The indices are free-running 32-bit counters: start near 2^32 and
	// cross it, full and empty detection included.
	struct tw_ring_lane *lc = lane_of(mem, 0);
	lane_start(mem, 0, UINT32_MAX - 5);
	for (uint32_t round = 0; round < 10; round++) {
		for (uint32_t i = 0; i < 4; i++) {
			fill_pattern(out, 32, round * 4 + i);
			TW_PASS(
			    tw_ring_send(r, 0, round * 4 + i, out, 32, 0, 0));
		}
		TW_FAIL(tw_ring_send(r, 0, 0, out, 1, 0, 0), TW_ETIMEDOUT);
		for (uint32_t i = 0; i < 4; i++) {
			TW_PASS(tw_ring_recv(
			    r, 0, in, sizeof(in), &n, &route, NULL, 0));
			assert_int_equal(route, round * 4 + i);
			fill_pattern(out, 32, round * 4 + i);
			assert_memory_equal(in, out, 32);
		}
		TW_FAIL(tw_ring_recv(r, 0, in, sizeof(in), &n, NULL, NULL, 0),
		    TW_ETIMEDOUT);
	}
	assert_int_equal(tail_of(mem, 0), (uint32_t)(UINT32_MAX - 5 + 40));
	assert_int_equal(lc->head, tail_of(mem, 0));
	tw_ring_detach(r);
	free(mem);
}

#define SPSC_LANES 3
#define SPSC_PER_LANE 30000
#define SPSC_MAX 256

struct spsc_producer {
	void *mem;
	size_t bytes;
	uint32_t lane;
	int status;
};

static void *spsc_produce(void *arg)
{
	struct spsc_producer *p = arg;
	tw_ring *r = NULL;
	unsigned char buf[SPSC_MAX];
	p->status = tw_ring_attach(p->mem, p->bytes, &r);
	for (uint32_t i = 0; p->status == TW_OK && i < SPSC_PER_LANE; i++) {
		size_t len = (i * 7u + p->lane) % (SPSC_MAX + 1);
		fill_pattern(buf, len, i ^ (p->lane << 24));
		p->status = tw_ring_send(r, p->lane, p->lane, buf, len,
		    ((uint64_t)p->lane << 32) | i, 30 * SEC_US);
	}
	tw_ring_detach(r);
	return NULL;
}

static void test_threads_spsc(void **state)
{
	size_t bytes;
	void *mem = ring_alloc(SPSC_LANES, 8, SPSC_MAX, &bytes);
	tw_ring *r = ring_open(mem, bytes);
	pthread_t t[SPSC_LANES];
	struct spsc_producer p[SPSC_LANES];
	for (uint32_t l = 0; l < SPSC_LANES; l++) {
		p[l] = (struct spsc_producer) { mem, bytes, l, -100 };
		assert_int_equal(
		    pthread_create(&t[l], NULL, spsc_produce, &p[l]), 0);
	}
	uint32_t next[SPSC_LANES] = { 0 };
	unsigned char in[SPSC_MAX], want[SPSC_MAX];
	for (uint32_t k = 0; k < SPSC_LANES * SPSC_PER_LANE; k++) {
		uint32_t lane, route;
		uint64_t corr;
		size_t n;
		TW_PASS(tw_ring_recv_any(
		    r, &lane, in, sizeof(in), &n, &route, &corr, 30 * SEC_US));
		assert_true(lane < SPSC_LANES);
		assert_int_equal(route, lane);
		uint32_t i = next[lane]++;
		assert_true(corr == (((uint64_t)lane << 32) | i));
		assert_int_equal(n, (i * 7u + lane) % (SPSC_MAX + 1));
		fill_pattern(want, n, i ^ (lane << 24));
		assert_memory_equal(in, want, n);
	}
	for (uint32_t l = 0; l < SPSC_LANES; l++) {
		pthread_join(t[l], NULL);
		TW_PASS(p[l].status);
		assert_int_equal(next[l], SPSC_PER_LANE);
	}
	TW_FAIL(tw_ring_recv_any(
	            r, &(uint32_t) { 0 }, in, sizeof(in), NULL, NULL, NULL, 0),
	    TW_ETIMEDOUT);
	tw_ring_detach(r);
	free(mem);
}

struct blocked_call {
	tw_ring *r;
	int consumer; // 1: recv on lane 0, 0: send on lane 0
	int status;
};

static void *blocked_call_run(void *arg)
{
	struct blocked_call *b = arg;
	char buf[8];
	if (b->consumer)
		b->status = tw_ring_recv(
		    b->r, 0, buf, sizeof(buf), NULL, NULL, NULL, -1);
	else
		b->status = tw_ring_send(b->r, 0, 0, "z", 1, 0, -1);
	return NULL;
}

// Starts a thread blocked in a receive (consumer) or a send on a full lane
// and returns once it sleeps.
static void start_blocked(pthread_t *t, struct blocked_call *b, void *mem)
{
	if (!b->consumer) {
		while (tw_ring_send(b->r, 0, 0, "f", 1, 0, 0) == TW_OK)
			;
	}
	assert_int_equal(pthread_create(t, NULL, blocked_call_run, b), 0);
	uint32_t *count = b->consumer ? &hdr_of(mem)->cons_sleepers
	                              : &lane_of(mem, 0)->prod_sleepers;
	assert_int_equal(await_sleeper(count), 0);
}

static void test_abort(void **state)
{
	size_t bytes;
	pthread_t t;
	char buf[8];

	// The producer side aborts: messages queued before are still
	// delivered, then the consumer's blocked wait ends with TW_EPEER.
	void *mem = ring_alloc(2, 4, 8, &bytes);
	tw_ring *r = ring_open(mem, bytes);
	TW_PASS(tw_ring_send(r, 0, 0, "q", 1, 0, 0));
	TW_PASS(tw_ring_recv(r, 0, buf, 8, NULL, NULL, NULL, 0));
	struct blocked_call b = { r, 1, -100 };
	start_blocked(&t, &b, mem);
	TW_PASS(tw_ring_send(r, 1, 0, "k", 1, 0, 0)); // wakes, not for lane 0
	tw_ring_abort(r, 0);
	pthread_join(t, NULL);
	TW_FAIL(b.status, TW_EPEER);
	TW_PASS(tw_ring_recv(r, 1, buf, 8, NULL, NULL, NULL, 0));
	TW_FAIL(tw_ring_recv(r, 1, buf, 8, NULL, NULL, NULL, 0), TW_EPEER);
	TW_FAIL(tw_ring_recv(r, 1, buf, 8, NULL, NULL, NULL, 1000), TW_EPEER);
	uint32_t lane;
	TW_FAIL(tw_ring_recv_any(r, &lane, buf, 8, NULL, NULL, NULL, -1),
	    TW_EPEER);
	// The aborted side itself still fills free slots, and gets
	// TW_ECLOSED once it would wait.
	for (int i = 0; i < 4; i++)
		TW_PASS(tw_ring_send(r, 0, 0, NULL, 0, 0, 0));
	TW_FAIL(tw_ring_send(r, 0, 0, NULL, 0, 0, -1), TW_ECLOSED);
	tw_ring_detach(r);
	free(mem);

	// The consumer aborts while a producer sleeps on a full lane.
	mem = ring_alloc(1, 2, 8, &bytes);
	r = ring_open(mem, bytes);
	b = (struct blocked_call) { r, 0, -100 };
	start_blocked(&t, &b, mem);
	tw_ring_abort(r, 1);
	pthread_join(t, NULL);
	TW_FAIL(b.status, TW_EPEER);
	TW_FAIL(tw_ring_send(r, 0, 0, "z", 1, 0, 0), TW_EPEER);
	// The two queued messages are still there for the consumer, which
	// itself aborted: it gets them, then TW_ECLOSED.
	TW_PASS(tw_ring_recv(r, 0, buf, 8, NULL, NULL, NULL, -1));
	TW_PASS(tw_ring_recv(r, 0, buf, 8, NULL, NULL, NULL, -1));
	TW_FAIL(tw_ring_recv(r, 0, buf, 8, NULL, NULL, NULL, -1), TW_ECLOSED);
	tw_ring_detach(r);
	free(mem);

	// Another thread of the consumer side aborts: a consumer asleep in
	// the same process returns TW_ECLOSED.
	mem = ring_alloc(1, 2, 8, &bytes);
	r = ring_open(mem, bytes);
	b = (struct blocked_call) { r, 1, -100 };
	start_blocked(&t, &b, mem);
	tw_ring_abort(r, 1);
	pthread_join(t, NULL);
	TW_FAIL(b.status, TW_ECLOSED);
	tw_ring_abort(NULL, 0);
	tw_ring_detach(r);
	free(mem);
}

// Runs `role` in a child process that publishes its pid and exits.  The
// child is reaped when `reap`; otherwise it is left a zombie, which must
// count as dead too, and the caller reaps it later.
static pid_t dead_child(void *mem, size_t bytes, int consumer, int reap)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		tw_ring *r = NULL;
		if (tw_ring_attach(mem, bytes, &r) != TW_OK
		    || tw_ring_set_role(r, consumer) != TW_OK)
			_exit(1);
		_exit(0);
	}
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	int options = WEXITED | (reap ? 0 : WNOWAIT);
	assert_int_equal(waitid(P_PID, (id_t)pid, &si, options), 0);
	assert_int_equal(si.si_code, CLD_EXITED);
	assert_int_equal(si.si_status, 0);
	return pid;
}

static void test_dead_peer(void **state)
{
	size_t bytes = tw_ring_bytes(1, 2, 8);
	// The ring must be shared with the child, hence a shared mapping.
	void *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(mem != MAP_FAILED);
	TW_PASS(tw_ring_init(mem, bytes, 1, 2, 8));
	tw_ring *r = ring_open(mem, bytes);
	char buf[8];
	TW_FAIL(tw_ring_set_role(NULL, 1), TW_EINVAL);

	// No producer pid published: nothing to check, the wait times out.
	TW_PASS(tw_ring_set_role(r, 1));
	assert_int_equal(
	    hdr_of(mem)->pid[TW_RING_CONSUMER], (uint32_t)getpid());
	TW_FAIL(
	    tw_ring_recv(r, 0, buf, 8, NULL, NULL, NULL, 50000), TW_ETIMEDOUT);

	// The producer process published its pid and exited (reaped).
	dead_child(mem, bytes, 0, 1);
	int64_t t0 = tw__now_ns();
	TW_FAIL(tw_ring_recv(r, 0, buf, 8, NULL, NULL, NULL, 20 * SEC_US),
	    TW_EPEER);
	assert_true(elapsed_us(t0) < 5 * SEC_US);
	// A try-once call does not look at pids (that would cost a system
	// call per poll), only at flags.
	TW_FAIL(tw_ring_recv(r, 0, buf, 8, NULL, NULL, NULL, 0), TW_ETIMEDOUT);

	// The consumer process died while the producer waits for space; it
	// is not reaped yet, a zombie, and still counts as dead.
	TW_PASS(tw_ring_set_role(r, 0));
	TW_PASS(tw_ring_send(r, 0, 0, "a", 1, 0, 0));
	TW_PASS(tw_ring_send(r, 0, 0, "b", 1, 0, 0));
	pid_t zombie = dead_child(mem, bytes, 1, 0);
	t0 = tw__now_ns();
	TW_FAIL(tw_ring_send(r, 0, 0, "c", 1, 0, 20 * SEC_US), TW_EPEER);
	assert_true(elapsed_us(t0) < 5 * SEC_US);
	assert_int_equal(waitpid(zombie, NULL, 0), zombie);

	// A live peer (this process) keeps the wait going until its timeout.
	TW_PASS(tw_ring_set_role(r, 1));
	TW_FAIL(tw_ring_send(r, 0, 0, "c", 1, 0, 50000), TW_ETIMEDOUT);
	tw_ring_detach(r);
	munmap(mem, bytes);
}

static void test_signal_basic(void **state)
{
	uint64_t words[2] = { 0, 0 };
	uint64_t *sig = &words[0];
	uint64_t *odd = (uint64_t *)((char *)words + 4);
	TW_FAIL(tw_signal_notify(NULL, 1), TW_EINVAL);
	TW_FAIL(tw_signal_notify(odd, 1), TW_EINVAL);
	TW_FAIL(tw_signal_wait(NULL, 1, 0), TW_EINVAL);
	TW_FAIL(tw_signal_wait(odd, 0, 0), TW_EINVAL);
	assert_true(words[0] == 0 && words[1] == 0);

	TW_PASS(tw_signal_wait(sig, 0, 0));
	TW_FAIL(tw_signal_wait(sig, 1, 0), TW_ETIMEDOUT);
	int64_t t0 = tw__now_ns();
	TW_FAIL(tw_signal_wait(sig, 1, 30000), TW_ETIMEDOUT);
	assert_true(elapsed_us(t0) >= 30000);
	TW_PASS(tw_signal_notify(sig, 5));
	assert_true(*sig == 5);
	TW_PASS(tw_signal_wait(sig, 5, 0));
	TW_PASS(tw_signal_wait(sig, 3, -1));
	TW_FAIL(tw_signal_wait(sig, 6, 0), TW_ETIMEDOUT);
	// The comparison is on all 64 bits, unsigned.
	TW_PASS(tw_signal_notify(sig, UINT64_C(1) << 32));
	TW_PASS(tw_signal_wait(sig, UINT64_C(1) << 32, 0));
	TW_FAIL(
	    tw_signal_wait(sig, (UINT64_C(1) << 32) + 1, 1000), TW_ETIMEDOUT);
	TW_PASS(tw_signal_notify(sig, UINT64_MAX));
	TW_PASS(tw_signal_wait(sig, UINT64_MAX, 0));
	// A notify may also lower the value; waits compare with what is there.
	TW_PASS(tw_signal_notify(sig, 2));
	TW_FAIL(tw_signal_wait(sig, 3, 0), TW_ETIMEDOUT);
	assert_true(words[1] == 0);
}

#define PINGPONG_ROUNDS 3000

struct pingpong {
	uint64_t ping;
	uint64_t pong;
	uint64_t high; // only the high half changes
	int status;
};

static void *pingpong_run(void *arg)
{
	struct pingpong *pp = arg;
	for (uint64_t i = 1; i <= PINGPONG_ROUNDS; i++) {
		pp->status = tw_signal_wait(&pp->ping, i, 30 * SEC_US);
		if (pp->status != TW_OK)
			return NULL;
		pp->status = tw_signal_notify(&pp->pong, i);
		if (pp->status != TW_OK)
			return NULL;
	}
	pp->status = tw_signal_wait(&pp->high, UINT64_C(5) << 32, 30 * SEC_US);
	return NULL;
}

static void test_signal_pingpong(void **state)
{
	_Alignas(8) struct pingpong pp = { 0, 0, 0, -100 };
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, pingpong_run, &pp), 0);
	int64_t t0 = tw__now_ns();
	for (uint64_t i = 1; i <= PINGPONG_ROUNDS; i++) {
		TW_PASS(tw_signal_notify(&pp.ping, i));
		TW_PASS(tw_signal_wait(&pp.pong, i, 30 * SEC_US));
	}
	// Every round trip involves a wake-up; had wakes been lost, each
	// would have cost a whole sleep slice (20 ms), 60 s in all.
	assert_true(elapsed_us(t0) < 20 * SEC_US);
	for (uint64_t i = 1; i <= 5; i++)
		TW_PASS(tw_signal_notify(&pp.high, i << 32));
	pthread_join(t, NULL);
	TW_PASS(pp.status);
	assert_true(pp.pong == PINGPONG_ROUNDS);
}

#define T(name)                                                               \
	{                                                                     \
#name, test_##name, NULL, NULL, NULL                          \
	}

int main(int argc, char **argv)
{
	static const struct CMUnitTest tests[] = { T(geometry), T(init_errors),
		T(attach_errors), T(send_recv), T(send_errors), T(recv_errors),
		T(timeouts), T(blocking_wake), T(release_batch),
		T(role_back_to_handle), T(wait_any), T(sleep_begin),
		T(kick_full), T(recv_any_fair), T(recv_placed), T(send2),
		T(claim_publish), T(wrap_around), T(threads_spsc), T(abort),
		T(dead_peer), T(signal_basic), T(signal_pingpong) };
	size_t count = sizeof(tests) / sizeof(tests[0]);
	if (argc > 1 && tw_test_select(tests, count, "", argv[1]) != 0)
		return 1;
	return _cmocka_run_group_tests("ring", tests, count, NULL, NULL);
}
