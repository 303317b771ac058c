// A ring whose shared memory is scribbled on by a hostile or broken peer.
//
// Each ring is allocated with exactly tw_ring_bytes bytes, so that under
// AddressSanitizer any read or write past the segment, however small, stops
// the test.  Every field of the header, the lane control blocks and the
// slots is set to chosen bad values, then thousands of seeded trials flip
// random bytes; after each, every call must return either a status or data
// that fits the caller's buffer and the ring's slots.
//
// Run with `--write-seeds DIR` this program instead writes a few valid
// rings with messages into DIR: the seed corpus of fuzz/ring_fuzz.c.

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "ring/ring_layout.h"
#include "testutil.h"

#define TRIALS 10000

static _Atomic int log_lines; // lines logged

static void count_log(const tw_log_record *rec, void *arg)
{
	(void)rec;
	(void)arg;
	atomic_fetch_add_explicit(&log_lines, 1, memory_order_relaxed);
}

static int setup_quiet(void **state)
{
	log_lines = 0;
	tw_log_set_handler(count_log, NULL);
	return 0;
}

static int teardown_quiet(void **state)
{
	tw_log_set_handler(NULL, NULL);
	return 0;
}

struct ring_fixture {
	unsigned char *mem;
	size_t bytes;
	uint32_t lanes, slots, max_msg;
	size_t stride; // slot size
	tw_ring *r;
};

static uint64_t rng_next(uint64_t *s)
{
	// xorshift64*: fast, seedable, and good enough to pick bytes.
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * UINT64_C(2685821657736338717);
}

static struct tw_ring_hdr *fx_hdr(struct ring_fixture *f)
{
	return (struct tw_ring_hdr *)f->mem;
}

static struct tw_ring_lane *fx_lane(struct ring_fixture *f, uint32_t lane)
{
	return (struct tw_ring_lane *)(f->mem + TW_RING_HDR_SIZE) + lane;
}

static struct tw_ring_slot *fx_slot(
    struct ring_fixture *f, uint32_t lane, uint32_t idx)
{
	size_t off = TW_RING_HDR_SIZE + (size_t)f->lanes * TW_RING_LANE_SIZE
	    + ((size_t)lane * f->slots + (idx & (f->slots - 1))) * f->stride;
	return (struct tw_ring_slot *)(f->mem + off);
}

// The count of messages published in `lane`: head, plus the run of slots
// from head on whose sequence word says they hold their message.
static uint32_t fx_tail(struct ring_fixture *f, uint32_t lane)
{
	uint32_t idx = fx_lane(f, lane)->head;
	for (uint32_t k = 0; k < f->slots; k++, idx++) {
		if (fx_slot(f, lane, idx)->seq != idx + 1)
			break;
	}
	return idx;
}

// Makes an empty `lane` start at message `start`, as if that many had
// passed through it; before the handle first uses the lane.
static void fx_start(struct ring_fixture *f, uint32_t lane, uint32_t start)
{
	fx_lane(f, lane)->head = start;
	for (uint32_t i = 0; i < f->slots; i++)
		fx_slot(f, lane, start + i)->seq = start + i + 1 - f->slots;
}

// A ring in exactly tw_ring_bytes bytes, zeroed, initialised, attached.
static int fx_make(
    struct ring_fixture *f, uint32_t lanes, uint32_t slots, uint32_t max_msg)
{
	memset(f, 0, sizeof(*f));
	f->lanes = lanes;
	f->slots = slots;
	f->max_msg = max_msg;
	f->stride = (max_msg + TW_RING_SLOT_HDR + 63u) / 64u * 64u;
	f->bytes = tw_ring_bytes(lanes, slots, max_msg);
	if (f->bytes == 0)
		return -1;
	f->mem = aligned_alloc(TW_RING_LINE, f->bytes);
	if (f->mem == NULL)
		return -1;
	memset(f->mem, 0, f->bytes);
	if (tw_ring_init(f->mem, f->bytes, lanes, slots, max_msg) != TW_OK
	    || tw_ring_attach(f->mem, f->bytes, &f->r) != TW_OK)
		return -1;
	return 0;
}

static void fx_free(struct ring_fixture *f)
{
	tw_ring_detach(f->r);
	free(f->mem);
	memset(f, 0, sizeof(*f));
}

static void fill(unsigned char *p, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(seed + i * 13);
}

// Queues `count` messages on `lane` with lengths and contents from `seed`.
static int fx_send(
    struct ring_fixture *f, uint32_t lane, uint32_t count, uint64_t seed)
{
	unsigned char buf[256];
	for (uint32_t i = 0; i < count; i++) {
		size_t len = (size_t)((seed + i * 5) % (f->max_msg + 1));
		if (len > sizeof(buf))
			len = sizeof(buf);
		fill(buf, len, seed + i);
		int status = tw_ring_send(f->r, lane, (uint32_t)(seed + i),
		    buf, len, seed * 1000 + i, 0);
		if (status != TW_OK)
			return status;
	}
	return TW_OK;
}

static int status_known(int s)
{
	return s == TW_OK || s == TW_ETIMEDOUT || s == TW_EPROTO
	    || s == TW_ETRUNC || s == TW_EPEER || s == TW_ECLOSED;
}

// Receives from `h` (lane UINT32_MAX = recv_any) into a buffer of exactly
// `cap` bytes and checks that whatever came back is sane.  `room` bounds a
// message: the payload bytes of a slot.
static int checked_recv(tw_ring *h, uint32_t lane, size_t cap, size_t room,
    uint32_t lanes, int64_t timeout_us)
{
	unsigned char *buf = cap > 0 ? malloc(cap) : NULL;
	if (cap > 0)
		assert_non_null(buf);
	size_t n = SIZE_MAX;
	uint32_t got_lane = UINT32_MAX, route;
	uint64_t corr;
	int s;
	if (lane == UINT32_MAX)
		s = tw_ring_recv_any(
		    h, &got_lane, buf, cap, &n, &route, &corr, timeout_us);
	else
		s = tw_ring_recv(
		    h, lane, buf, cap, &n, &route, &corr, timeout_us);
	if (!status_known(s))
		fail_msg("receive returned %s", tw_err_name(s));
	if (s == TW_OK) {
		assert_true(n <= cap);
		assert_true(n <= room);
	}
	if (s == TW_ETRUNC) {
		assert_true(n > cap);
		assert_true(n <= room);
	}
	if ((s == TW_OK || s == TW_ETRUNC) && lane == UINT32_MAX)
		assert_true(got_lane < lanes);
	free(buf);
	return s;
}

// The handle keeps working from its private geometry, whatever the header
// says now: a message goes round the ring intact.
static void assert_round_trip(struct ring_fixture *f, uint32_t lane)
{
	unsigned char out[64], in[64];
	size_t n;
	uint32_t route;
	uint64_t corr;
	size_t len = f->max_msg < sizeof(out) ? f->max_msg : sizeof(out);
	fill(out, len, 77);
	TW_PASS(tw_ring_send(f->r, lane, 12345, out, len, 678, 0));
	uint32_t head = fx_lane(f, lane)->head;
	for (uint32_t k = head; k != fx_tail(f, lane) - 1; k++)
		TW_PASS(tw_ring_recv(
		    f->r, lane, in, sizeof(in), NULL, NULL, NULL, 0));
	TW_PASS(
	    tw_ring_recv(f->r, lane, in, sizeof(in), &n, &route, &corr, 0));
	assert_int_equal(n, len);
	assert_int_equal(route, 12345);
	assert_true(corr == 678);
	assert_memory_equal(in, out, len);
}

// Whether the header, as it is now, describes a valid ring of the same
// size.  That happens when only max_msg changed, within the same slot size:
// nothing can tell such a header from a genuine one.
static int header_consistent(const struct tw_ring_hdr *h)
{
	size_t total = tw_ring_bytes(h->lanes, h->slots, h->max_msg);
	return h->magic == TW_RING_MAGIC && h->version == TW_RING_VERSION
	    && total != 0 && total == h->total_size
	    && h->slot_size == (h->max_msg + 16u + 63u) / 64u * 64u;
}

// A handle attached with a lowered max_msg enforces it, on both sides.
static void assert_smaller_max(tw_ring *r2, uint32_t max_msg)
{
	unsigned char buf[64] = { 0 };
	size_t n;
	TW_FAIL(tw_ring_send(r2, 0, 0, buf, max_msg + 1, 0, 0), TW_ETOOBIG);
	// Messages queued before may exceed the new limit: those are refused
	// as corrupt, the others delivered.
	int s = tw_ring_recv(r2, 0, buf, sizeof(buf), &n, NULL, NULL, 0);
	if (s == TW_OK)
		assert_true(n <= max_msg);
	else if (s != TW_EPROTO && s != TW_ETIMEDOUT)
		fail_msg("receive gave %s", tw_err_name(s));
}

static void test_targeted_header(void **state)
{
	struct ring_fixture f;
	assert_int_equal(fx_make(&f, 2, 4, 40), 0);
	TW_PASS(fx_send(&f, 0, 3, 1));
	TW_PASS(fx_send(&f, 1, 2, 2));
	struct tw_ring_hdr *h = fx_hdr(&f);
	struct {
		const char *name;
		size_t off, width;
	} fields[] = {
		{ "magic", offsetof(struct tw_ring_hdr, magic), 8 },
		{ "version", offsetof(struct tw_ring_hdr, version), 4 },
		{ "lanes", offsetof(struct tw_ring_hdr, lanes), 4 },
		{ "slots", offsetof(struct tw_ring_hdr, slots), 4 },
		{ "max_msg", offsetof(struct tw_ring_hdr, max_msg), 4 },
		{ "slot_size", offsetof(struct tw_ring_hdr, slot_size), 8 },
		{ "total_size", offsetof(struct tw_ring_hdr, total_size), 8 },
	};
	static const uint64_t values[] = { 0, 1, 2, 3, 63, 64, 65, 0x7fffffff,
		0x80000000, 0xffffffff, UINT64_C(0x100000000),
		UINT64_C(0x8000000000000000), UINT64_MAX };
	unsigned char saved[TW_RING_LINE];
	memcpy(saved, f.mem, sizeof(saved));
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		for (size_t v = 0; v < sizeof(values) / sizeof(values[0]) + 2;
		     v++) {
			uint64_t orig = 0, val;
			memcpy(&orig, f.mem + fields[i].off, fields[i].width);
			// Besides the fixed values: one more and one less.
			if (v < sizeof(values) / sizeof(values[0]))
				val = values[v];
			else
				val = v % 2 ? orig + 1 : orig - 1;
			memcpy(f.mem + fields[i].off, &val, fields[i].width);
			uint64_t now = 0;
			memcpy(&now, f.mem + fields[i].off, fields[i].width);
			tw_ring *r2 = NULL;
			int s = tw_ring_attach(f.mem, f.bytes, &r2);
			int want = now == orig || header_consistent(h)
			    ? TW_OK
			    : TW_EPROTO;
			if (s != want)
				fail_msg("%s = %#llx: attach gave %s",
				    fields[i].name, (unsigned long long)val,
				    tw_err_name(s));
			if (s == TW_OK && now != orig)
				assert_smaller_max(r2, h->max_msg);
			tw_ring_detach(r2);
			assert_round_trip(&f, v % 2);
			memcpy(f.mem, saved, sizeof(saved));
		}
	}
	// The whole line at once.
	memset(f.mem, 0xff, TW_RING_LINE);
	tw_ring *r2 = NULL;
	TW_FAIL(tw_ring_attach(f.mem, f.bytes, &r2), TW_EPROTO);
	assert_round_trip(&f, 0);
	// A lying header cannot make a small region look big enough.
	memcpy(f.mem, saved, sizeof(saved));
	h->total_size = 256;
	TW_FAIL(tw_ring_attach(f.mem, f.bytes, &r2), TW_EPROTO);
	memcpy(f.mem, saved, sizeof(saved));
	TW_FAIL(tw_ring_attach(f.mem, f.bytes - 64, &r2), TW_EPROTO);
	TW_PASS(tw_ring_attach(f.mem, f.bytes, &r2));
	tw_ring_detach(r2);
	assert_true(log_lines > 0);
	fx_free(&f);
}

static void test_targeted_lanes(void **state)
{
	struct ring_fixture f;
	unsigned char buf[64];
	uint32_t lane;
	// A sequence word that is neither its message's nor the previous
	// lap's, at the consumer's head: every receive says so at once, the
	// message stays, and mended it comes out whole.  Offsets from the
	// message's own word; -4 would be the previous lap (4 slots).
	static const uint32_t bad_seq[]
	    = { 1, 2, 3, 5, 100, 0x7fffffff, 0x80000000, (uint32_t)-1,
		      (uint32_t)-2, (uint32_t)-3, (uint32_t)-5 };
	for (size_t v = 0; v < sizeof(bad_seq) / sizeof(bad_seq[0]); v++) {
		assert_int_equal(fx_make(&f, 2, 4, 40), 0);
		TW_PASS(fx_send(&f, 1, 2, 9));
		struct tw_ring_slot *s = fx_slot(&f, 1, 0);
		uint32_t good = s->seq;
		s->seq = good + bad_seq[v];
		TW_FAIL(tw_ring_recv(
		            f.r, 1, buf, sizeof(buf), NULL, NULL, NULL, 0),
		    TW_EPROTO);
		TW_FAIL(tw_ring_recv(
		            f.r, 1, buf, sizeof(buf), NULL, NULL, NULL, 20000),
		    TW_EPROTO);
		TW_FAIL(tw_ring_recv_any(f.r, &lane, buf, sizeof(buf), NULL,
		            NULL, NULL, -1),
		    TW_EPROTO);
		assert_int_equal(fx_lane(&f, 1)->head, 0);
		s->seq = good;
		TW_PASS(checked_recv(f.r, 1, 40, 40, 2, 0));
		TW_PASS(checked_recv(f.r, 1, 40, 40, 2, 0));
		TW_FAIL(checked_recv(f.r, 1, 40, 40, 2, 0), TW_ETIMEDOUT);
		// The same word in the slot the producer fills next: its
		// exchange finds it (only the producer writes it), puts it
		// back, and the sends after judge it afresh.
		s = fx_slot(&f, 1, 2);
		good = s->seq;
		s->seq = good + bad_seq[v];
		TW_FAIL(tw_ring_send(f.r, 1, 0, buf, 1, 0, 0), TW_EPROTO);
		assert_int_equal(s->seq, good + bad_seq[v]);
		TW_FAIL(tw_ring_send(f.r, 1, 0, buf, 1, 0, -1), TW_EPROTO);
		s->seq = good;
		TW_PASS(tw_ring_send(f.r, 1, 7, buf, 1, 0, 0));
		TW_PASS(checked_recv(f.r, 1, 40, 40, 2, 0));
		// The other lane is unaffected.
		TW_PASS(tw_ring_send(f.r, 0, 1, buf, 3, 0, 0));
		TW_PASS(checked_recv(f.r, 0, 40, 40, 2, 0));
		fx_free(&f);
	}

	// Head, the consumer's own count, moved to claim more messages than
	// the lane holds.  The consumer notices at its next hand-back (an
	// exchange), puts the value back and judges the lane afresh from
	// then on.  A producer reloads head only once its last view of it
	// shows the lane full, so it notices within one lane's worth of
	// sends, each into a slot that the last good head left free; unless
	// the sends themselves made the counts agree again (head moved a
	// slot or two ahead): then there is nothing left to notice, and
	// sends go on or find the lane full.
	static const uint32_t bad_used[] = { 5, 6, 7, 8, 100, 0x7fffffff,
		0x80000000, 0x80000001, 0xfffffffe, 0xffffffff };
	for (size_t v = 0; v < sizeof(bad_used) / sizeof(bad_used[0]); v++) {
		assert_int_equal(fx_make(&f, 2, 4, 40), 0);
		TW_PASS(fx_send(&f, 1, 2, 9));
		TW_PASS(checked_recv(f.r, 1, 40, 40, 2, 0));
		struct tw_ring_lane *lc = fx_lane(&f, 1);
		uint32_t bad = 2 - bad_used[v];
		lc->head = bad;
		TW_FAIL(tw_ring_recv(
		            f.r, 1, buf, sizeof(buf), NULL, NULL, NULL, 0),
		    TW_EPROTO);
		assert_int_equal(lc->head, bad);
		for (int i = 0; i < 3; i++)
			(void)checked_recv(f.r, UINT32_MAX, 40, 40, 2, 0);
		lc->head = bad;
		int sst = TW_OK;
		for (uint32_t i = 0; i <= f.slots && sst == TW_OK; i++)
			sst = tw_ring_send(f.r, 1, 0, buf, 1, 0, 0);
		if (bad_used[v] < 0xfffffffe) {
			TW_FAIL(sst, TW_EPROTO);
			TW_FAIL(
			    tw_ring_send(f.r, 1, 0, buf, 1, 0, -1), TW_EPROTO);
		} else {
			assert_true(sst == TW_OK || sst == TW_ETIMEDOUT);
		}
		// Nothing moved, and the other lane is unaffected.
		assert_int_equal(lc->head, bad);
		TW_PASS(tw_ring_send(f.r, 0, 1, buf, 3, 0, 0));
		TW_PASS(tw_ring_recv(
		    f.r, 0, buf, sizeof(buf), NULL, NULL, NULL, 0));
		fx_free(&f);
	}

	// A lane whose every slot claims a message that was never written:
	// every message that comes back fits, and the producer sees a full
	// lane.
	assert_int_equal(fx_make(&f, 1, 4, 40), 0);
	for (uint32_t i = 0; i < 4; i++) {
		fx_slot(&f, 0, i)->seq = i + 1;
		fx_slot(&f, 0, i)->len = 40;
	}
	TW_FAIL(tw_ring_send(f.r, 0, 0, buf, 1, 0, 0), TW_ETIMEDOUT);
	for (int i = 0; i < 4; i++)
		TW_PASS(checked_recv(f.r, 0, 40, 40, 1, 0));
	TW_FAIL(checked_recv(f.r, 0, 40, 40, 1, 0), TW_ETIMEDOUT);
	fx_free(&f);

	// Sleeper counts and futex words hold garbage: calls still work, at
	// worst with a useless wake-up call or a missed one (bounded by the
	// sleep slice).
	assert_int_equal(fx_make(&f, 2, 2, 40), 0);
	fx_lane(&f, 0)->prod_sleepers = UINT32_MAX;
	fx_lane(&f, 0)->space_seq = 0xdeadbeef;
	fx_lane(&f, 1)->prod_sleepers = 0x80000000;
	fx_hdr(&f)->cons_sleepers = UINT32_MAX;
	fx_hdr(&f)->data_seq = UINT32_MAX;
	for (int i = 0; i < 10; i++) {
		TW_PASS(tw_ring_send(f.r, i % 2, 0, buf, 8, 0, 0));
		TW_PASS(checked_recv(f.r, UINT32_MAX, 64, 40, 2, 0));
	}
	TW_PASS(tw_ring_send(f.r, 0, 0, buf, 8, 0, 0));
	TW_PASS(tw_ring_send(f.r, 0, 0, buf, 8, 0, 0));
	TW_FAIL(tw_ring_send(f.r, 0, 0, buf, 8, 0, 30000), TW_ETIMEDOUT);
	TW_FAIL(
	    tw_ring_recv(f.r, 1, buf, sizeof(buf), NULL, NULL, NULL, 30000),
	    TW_ETIMEDOUT);
	fx_free(&f);
	assert_true(log_lines > 0);
}

static void test_targeted_slots(void **state)
{
	static const uint32_t bad_len[]
	    = { 41, 42, 64, 65, 0x7fffffff, 0x80000000, 0xffffffff };
	struct ring_fixture f;
	unsigned char buf[64];
	size_t n;
	uint32_t route, lane;
	uint64_t corr;
	assert_int_equal(fx_make(&f, 2, 4, 40), 0);
	for (size_t v = 0; v < sizeof(bad_len) / sizeof(bad_len[0]); v++) {
		TW_PASS(fx_send(&f, 1, 1, v));
		struct tw_ring_slot *s = fx_slot(&f, 1, fx_lane(&f, 1)->head);
		uint32_t good = s->len;
		s->len = bad_len[v];
		n = 12345;
		TW_FAIL(
		    tw_ring_recv(f.r, 1, buf, sizeof(buf), &n, NULL, NULL, 0),
		    TW_EPROTO);
		assert_int_equal(n, 12345);
		TW_FAIL(tw_ring_recv(
		            f.r, 1, buf, 0 * sizeof(buf), &n, NULL, NULL, 0),
		    TW_EPROTO);
		TW_FAIL(tw_ring_recv_any(
		            f.r, &lane, buf, sizeof(buf), &n, NULL, NULL, -1),
		    TW_EPROTO);
		// The bad message stays; mended, it comes out whole.
		s->len = good;
		TW_PASS(
		    tw_ring_recv(f.r, 1, buf, sizeof(buf), &n, NULL, NULL, 0));
		assert_int_equal(n, good);
	}

	// Lengths up to max_msg are believed and bounded by the caller's
	// buffer; the route and correlation id are just data.
	TW_PASS(fx_send(&f, 0, 3, 0));
	struct tw_ring_slot *s = fx_slot(&f, 0, fx_lane(&f, 0)->head);
	s->len = 40;
	s->route = UINT32_MAX;
	s->corr = UINT64_MAX;
	TW_FAIL(tw_ring_recv(f.r, 0, buf, 39, &n, NULL, NULL, 0), TW_ETRUNC);
	assert_int_equal(n, 40);
	TW_PASS(tw_ring_recv(f.r, 0, buf, 40, &n, &route, &corr, 0));
	assert_int_equal(n, 40);
	assert_int_equal(route, UINT32_MAX);
	assert_true(corr == UINT64_MAX);
	s = fx_slot(&f, 0, fx_lane(&f, 0)->head);
	s->len = 0;
	TW_PASS(tw_ring_recv(f.r, 0, NULL, 0, &n, NULL, NULL, 0));
	assert_int_equal(n, 0);
	// Payload bytes scribbled on are delivered as they are.
	s = fx_slot(&f, 0, fx_lane(&f, 0)->head);
	memset(s + 1, 0xee, 40);
	TW_PASS(tw_ring_recv(f.r, 0, buf, sizeof(buf), &n, NULL, NULL, 0));
	assert_true(n <= 40);
	fx_free(&f);
	assert_true(log_lines > 0);
}

static void test_targeted_liveness(void **state)
{
	struct ring_fixture f;
	unsigned char buf[8];
	assert_int_equal(fx_make(&f, 1, 2, 8), 0);
	struct tw_ring_hdr *h = fx_hdr(&f);
	// Values that are no pid are ignored rather than handed to kill():
	// -1 would address every process, other negatives process groups.
	static const uint32_t unknown[]
	    = { 0, 0x80000000, 0xffffffff, 0xfffffffe };
	for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
		h->pid[TW_RING_PRODUCER] = unknown[i];
		h->pid[TW_RING_CONSUMER] = unknown[i];
		TW_FAIL(tw_ring_recv(f.r, 0, buf, 8, NULL, NULL, NULL, 50000),
		    TW_ETIMEDOUT);
	}
	// A pid above any pid limit: that process does not exist.
	h->pid[TW_RING_PRODUCER] = 0x7fffffff;
	TW_FAIL(
	    tw_ring_recv(f.r, 0, buf, 8, NULL, NULL, NULL, 5000000), TW_EPEER);
	h->pid[TW_RING_PRODUCER] = 0;
	// Any non-zero abort flag counts.
	h->aborted[TW_RING_PRODUCER] = 0xdeadbeef;
	TW_FAIL(tw_ring_recv(f.r, 0, buf, 8, NULL, NULL, NULL, 0), TW_EPEER);
	TW_PASS(tw_ring_send(f.r, 0, 0, buf, 1, 0, 0));
	TW_PASS(tw_ring_recv(f.r, 0, buf, 8, NULL, NULL, NULL, 0));
	h->aborted[TW_RING_CONSUMER] = 0x80000000;
	TW_FAIL(
	    tw_ring_recv(f.r, 0, buf, 8, NULL, NULL, NULL, -1), TW_ECLOSED);
	h->aborted[TW_RING_PRODUCER] = 0;
	h->aborted[TW_RING_CONSUMER] = 0;
	TW_FAIL(
	    tw_ring_recv(f.r, 0, buf, 8, NULL, NULL, NULL, 0), TW_ETIMEDOUT);
	fx_free(&f);
}

// Flips `flips` random bytes, mostly where the ring keeps its metadata.
static void corrupt(struct ring_fixture *f, uint64_t *rng, int flips)
{
	size_t ctl = TW_RING_HDR_SIZE + (size_t)f->lanes * TW_RING_LANE_SIZE;
	static const unsigned char special[]
	    = { 0x00, 0xff, 0x80, 0x7f, 0x01, 0xfe };
	for (int i = 0; i < flips; i++) {
		uint64_t x = rng_next(rng);
		size_t off;
		switch (x % 4) {
		case 0: // the header
			off = (x >> 8) % TW_RING_HDR_SIZE;
			break;
		case 1: // lane control blocks
			off = TW_RING_HDR_SIZE
			    + (x >> 8)
			        % ((size_t)f->lanes * TW_RING_LANE_SIZE);
			break;
		case 2: { // the fixed part of a slot
			size_t nslots = (size_t)f->lanes * f->slots;
			off = ctl + (x >> 8) % nslots * f->stride
			    + (x >> 40) % TW_RING_SLOT_HDR;
			break;
		}
		default:
			off = (x >> 8) % f->bytes;
			break;
		}
		uint64_t y = rng_next(rng);
		f->mem[off] = y % 3 ? (unsigned char)(y >> 8)
		                    : special[(y >> 8) % sizeof(special)];
	}
}

// Drains and refills through `h`, checking every result.  `own` tells
// that `h` is the fixture's handle, attached before the corruption, whose
// geometry is known for certain.
static void exercise(tw_ring *h, int own, struct ring_fixture *f,
    uint64_t *rng, int64_t timeout_us)
{
	size_t room = f->stride - TW_RING_SLOT_HDR;
	uint32_t oks = 0;
	for (uint32_t i = 0; i < f->lanes * f->slots + 2; i++) {
		size_t cap = rng_next(rng) % (room + 8);
		int s = checked_recv(
		    h, UINT32_MAX, cap, room, f->lanes, timeout_us);
		oks += s == TW_OK;
		if (s == TW_ETIMEDOUT || s == TW_EPROTO || s == TW_EPEER
		    || s == TW_ECLOSED)
			break;
	}
	// Each success consumed one message, and a lane holds at most slots.
	assert_true(oks <= f->lanes * f->slots);
	for (uint32_t lane = 0; lane < f->lanes; lane++) {
		(void)checked_recv(h, lane, room, room, f->lanes, timeout_us);
		unsigned char buf[64] = { 0 };
		uint32_t sent = 0;
		for (uint32_t i = 0; i <= f->slots; i++) {
			size_t n = rng_next(rng) % (f->max_msg + 2);
			if (n > sizeof(buf))
				n = sizeof(buf);
			int s
			    = tw_ring_send(h, lane, i, buf, n, i, timeout_us);
			if (own && n > f->max_msg) {
				// Checked before any look at the segment.
				TW_FAIL(s, TW_ETOOBIG);
				continue;
			}
			if (s == TW_ETOOBIG)
				continue;
			if (!status_known(s))
				fail_msg("send returned %s", tw_err_name(s));
			if (s != TW_OK)
				break;
			sent++;
		}
		assert_true(sent <= f->slots);
	}
}

static void test_random_bytes(void **state)
{
	static const uint32_t geom[][3] = { { 1, 1, 1 }, { 1, 2, 8 },
		{ 3, 4, 24 }, { 2, 8, 48 }, { 4, 2, 49 }, { 2, 16, 33 } };
	uint64_t rng = UINT64_C(0x9e3779b97f4a7c15);
	int attached = 0, rejected = 0;
	for (int t = 0; t < TRIALS; t++) {
		const uint32_t *g = geom[t % 6];
		struct ring_fixture f;
		assert_int_equal(fx_make(&f, g[0], g[1], g[2]), 0);
		// Some messages, some consumed, so indices are not all zero
		// and some wrap around 2^32.
		for (uint32_t lane = 0; lane < f.lanes; lane++) {
			uint32_t start = rng_next(&rng) % 2
			    ? (uint32_t)rng_next(&rng)
			    : UINT32_MAX - (uint32_t)(rng_next(&rng) % 4);
			fx_start(&f, lane, start);
			TW_PASS(fx_send(&f, lane,
			    (uint32_t)(rng_next(&rng) % (f.slots + 1)),
			    rng_next(&rng)));
		}
		corrupt(&f, &rng, 1 + (int)(rng_next(&rng) % 8));
		// Mostly try-once calls; now and then a short wait, so that
		// the sleeping path meets garbage too.
		int64_t timeout = t % 64 == 0 ? 300 : 0;
		tw_ring *fresh = NULL;
		int s = tw_ring_attach(f.mem, f.bytes, &fresh);
		if (s != TW_OK && s != TW_EPROTO)
			fail_msg("attach returned %s", tw_err_name(s));
		if (s == TW_OK) {
			attached++;
			exercise(fresh, 0, &f, &rng, timeout);
			tw_ring_detach(fresh);
		} else {
			rejected++;
		}
		exercise(f.r, 1, &f, &rng, timeout);
		fx_free(&f);
	}
	// Both outcomes occur, or the corruption was not aimed well.
	assert_true(attached > TRIALS / 10);
	assert_true(rejected > TRIALS / 10);
	assert_true(log_lines > 0);
}

// Writes a few valid rings with messages, for the fuzz corpus.
static int write_seeds(const char *dir)
{
	static const struct {
		const char *name;
		uint32_t lanes, slots, max_msg;
		uint32_t start; // the first message of every lane
		uint32_t msgs[4]; // messages per lane
		uint32_t taken[4]; // of which consumed
	} seeds[] = {
		{ "one-message", 1, 2, 8, 0, { 1 }, { 0 } },
		{ "three-lanes", 3, 4, 16, 0, { 3, 0, 4 }, { 1, 0, 0 } },
		{ "full-lanes", 2, 1, 64, 7, { 1, 1 }, { 0, 0 } },
		{ "empty", 4, 2, 24, 0, { 0 }, { 0 } },
		{ "index-wrap", 2, 4, 40, UINT32_MAX - 1, { 4, 3 }, { 2, 1 } },
	};
	mkdir(dir, 0755);
	for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
		struct ring_fixture f;
		if (fx_make(
		        &f, seeds[i].lanes, seeds[i].slots, seeds[i].max_msg)
		    != 0)
			return 1;
		for (uint32_t l = 0; l < f.lanes; l++) {
			fx_start(&f, l, seeds[i].start);
			if (fx_send(&f, l, seeds[i].msgs[l], l * 10 + i)
			    != TW_OK)
				return 1;
			for (uint32_t k = 0; k < seeds[i].taken[l]; k++) {
				unsigned char buf[64];
				if (tw_ring_recv(f.r, l, buf, sizeof(buf),
				        NULL, NULL, NULL, 0)
				    != TW_OK)
					return 1;
			}
		}
		char path[512];
		snprintf(path, sizeof(path), "%s/%s", dir, seeds[i].name);
		FILE *fp = fopen(path, "wb");
		if (fp == NULL || fwrite(f.mem, 1, f.bytes, fp) != f.bytes
		    || fclose(fp) != 0) {
			perror(path);
			return 1;
		}
		fx_free(&f);
	}
	return 0;
}

#define T(name)                                                               \
	{                                                                     \
#name, test_##name, setup_quiet, teardown_quiet, NULL         \
	}

int main(int argc, char **argv)
{
	if (argc > 2 && strcmp(argv[1], "--write-seeds") == 0)
		return write_seeds(argv[2]);
	static const struct CMUnitTest tests[]
	    = { T(targeted_header), T(targeted_lanes), T(targeted_slots),
		      T(targeted_liveness), T(random_bytes) };
	size_t count = sizeof(tests) / sizeof(tests[0]);
	if (argc > 1 && tw_test_select(tests, count, "", argv[1]) != 0)
		return 1;
	return _cmocka_run_group_tests(
	    "ring_corrupt", tests, count, NULL, NULL);
}
