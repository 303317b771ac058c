// Multi-lane single-producer/single-consumer rings in caller memory.
//
// Design notes.
//
// Each lane is a classic ring of `slots` (a power of two) fixed-size slots
// with free-running 32-bit indices: `head`, in the lane's control line,
// counts messages the consumer has taken, and each side keeps its own count
// of the messages published.  There is no published tail: a message is
// published by the sequence word of its own slot, which the producer
// stores last (message i stores i + 1; a free slot holds the number of the
// previous lap, i + 1 - slots).  The consumer reads the word of the slot
// at head with acquire semantics, so it finds a message by reading the
// line that holds it, and the producer writes only the slot, a line it
// must own anyway: one cache line crosses between the cores per small
// message, where a tail count of its own made two.  The consumer releases
// head only after it has copied the slot out; the producer reads head only
// when its last view shows the lane full.
//
// The other side is not trusted.  The geometry is validated once, at
// attach, and kept in the private handle; it is never read from the segment
// again, so every slot address is computed from private values and an index
// reduced by the private mask.  Each word that does come from the segment
// is loaded once (an atomic load the compiler may not repeat) into a local,
// checked, and only the local is used: a sequence word that is neither the
// message expected nor the previous lap's, a head beyond what was
// published, or a slot claiming more bytes than max_msg is TW_EPROTO.
// The route and correlation id are opaque data handed to the caller.
//
// Waiting.  A waiter spins for a few microseconds first, which is all it
// takes when the peer is active on another core.  Then it announces itself
// by incrementing a sleeper count in the segment, re-checks its condition,
// and sleeps on a 32-bit futex word: one per ring for the consumer ("not
// empty") and one per lane for its producer ("not full").  The side that
// makes progress stores its index and then reads the sleeper count; only if
// it is non-zero does it bump the futex word and make a system call, so a
// send or a receive that nobody waits for costs no system call.  That is
// the store-then-load pattern of Dekker's algorithm on both sides, which
// needs sequential consistency: the sequence word and head stores and
// loads and the sleeper increment are therefore seq_cst operations rather
// than plain release/acquire (on x86 the load costs nothing extra and the
// store is one xchg).  Fences would do the same, but thread sanitizers do not model them.
//
// A waiter sleeps in bounded slices, so that a lost wake-up (a corrupt
// sleeper count) costs at most one slice, and so that it can check between
// slices whether the other side has gone: its abort flag, or, once per
// slice, whether the process whose pid it published still exists.

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tagwire/ring.h>

#include "core/clock.h"
#include "core/log.h"
#include "platform/posix/futex.h"
#include "ring/ring_int.h"
#include "ring/ring_layout.h"

// How long a waiter spins before it sleeps.  Waking a sleeping thread costs
// several microseconds, so spinning about as long catches a peer that is
// merely busy without burning a core for a peer that is idle.
#define RING_SPIN_NS 8000
// Attempts between two looks at the clock and the abort flags while
// spinning.
#define RING_CHECK_PASSES 8
// The longest single sleep: the delay after which a dead peer is noticed.
#define RING_SLICE_NS 20000000

struct tw_ring {
	struct tw_ring_hdr *hdr;
	struct tw_ring_lane *lane; // lanes control blocks
	unsigned char *slot0; // first slot of lane 0
	size_t slot_size;
	size_t lane_bytes; // slots * slot_size
	uint32_t lanes;
	uint32_t slots;
	uint32_t mask; // slots - 1
	uint32_t max_msg;
	uint32_t next; // recv_any: the lane to look at first
	// Consumer: a taken slot is handed back to the producer (head
	// published) when head reaches a multiple of this, when the consumer
	// next finds the lane empty, or when a producer sleeps; 1 = at every
	// take.  See tw__ring_set_release.
	uint32_t release_mask;
	// Per lane, the counts this handle works from.  A producer keeps the
	// count of messages it published and head as it last loaded it,
	// reloading head only when that view shows the lane full (a stale
	// head is behind the true one, so it can only make the lane look
	// fuller than it is).  A consumer keeps the head it reached and the
	// one it last stored.  Each side trusts its own count and checks the
	// segment as it stores into it (an exchange of the sequence word, or
	// of head), where anything but what it left there is corruption.  The
	// producer's and the consumer's each on lines of their own: they may
	// be two threads.
	struct ring_seen *prod, *cons;
};

struct ring_seen {
	uint32_t head; // producer: as last loaded; consumer: taken so far
	uint32_t tail; // producer: published so far
	uint32_t valid; // set once the counts were loaded
	uint32_t pub; // consumer: head as last stored in the segment
};

// Per-lane views for one side, on cache lines of their own.
static struct ring_seen *seen_alloc(uint32_t lanes)
{
	size_t bytes
	    = ((size_t)lanes * sizeof(struct ring_seen) + TW_RING_LINE - 1)
	    & ~(size_t)(TW_RING_LINE - 1);
	struct ring_seen *s = aligned_alloc(TW_RING_LINE, bytes);
	if (s != NULL)
		memset(s, 0, bytes);
	return s;
}

// Computes the slot stride and the total size of a geometry.  Returns 0
// when the geometry is invalid or a size would overflow.
static int ring_geometry(uint32_t lanes, uint32_t slots, uint32_t max_msg,
    size_t *slot_size, size_t *total)
{
	if (lanes == 0 || slots == 0 || max_msg == 0
	    || (slots & (slots - 1)) != 0)
		return 0;
	uint64_t stride
	    = ((uint64_t)max_msg + TW_RING_SLOT_HDR + TW_RING_LINE - 1)
	    & ~(uint64_t)(TW_RING_LINE - 1);
	if (stride > SIZE_MAX)
		return 0;
	size_t per_lane, all_slots, ctl, sum;
	if (__builtin_mul_overflow((size_t)slots, (size_t)stride, &per_lane)
	    || __builtin_mul_overflow((size_t)lanes, per_lane, &all_slots)
	    || __builtin_mul_overflow((size_t)lanes, TW_RING_LANE_SIZE, &ctl)
	    || __builtin_add_overflow(TW_RING_HDR_SIZE, ctl, &sum)
	    || __builtin_add_overflow(sum, all_slots, &sum))
		return 0;
	*slot_size = (size_t)stride;
	*total = sum;
	return 1;
}

size_t tw_ring_bytes(uint32_t lanes, uint32_t slots, uint32_t max_msg)
{
	size_t slot_size, total;
	if (!ring_geometry(lanes, slots, max_msg, &slot_size, &total))
		return 0;
	return total;
}

int tw_ring_init(
    void *mem, size_t size, uint32_t lanes, uint32_t slots, uint32_t max_msg)
{
	size_t slot_size, total;
	if (mem == NULL || (uintptr_t)mem % TW_RING_LINE != 0
	    || !ring_geometry(lanes, slots, max_msg, &slot_size, &total)
	    || size < total)
		return TW_EINVAL;
	// The control blocks start empty and every slot free: its sequence
	// word holds the previous lap's number.  The payload needs no
	// clearing: a slot is read only after its producer has written it.
	struct tw_ring_hdr *hdr = mem;
	memset(mem, 0, TW_RING_HDR_SIZE + (size_t)lanes * TW_RING_LANE_SIZE);
	unsigned char *slot = (unsigned char *)mem + TW_RING_HDR_SIZE
	    + (size_t)lanes * TW_RING_LANE_SIZE;
	for (uint32_t l = 0; l < lanes; l++) {
		for (uint32_t i = 0; i < slots; i++, slot += slot_size) {
			struct tw_ring_slot *s = (struct tw_ring_slot *)slot;
			memset(s, 0, sizeof(*s));
			s->seq = i + 1 - slots;
		}
	}
	hdr->version = TW_RING_VERSION;
	hdr->lanes = lanes;
	hdr->slots = slots;
	hdr->max_msg = max_msg;
	hdr->slot_size = slot_size;
	hdr->total_size = total;
	// Release: whoever sees the magic, after whatever hand-over the
	// caller arranges, also sees the geometry written before it.
	__atomic_store_n(&hdr->magic, TW_RING_MAGIC, __ATOMIC_RELEASE);
	return TW_OK;
}

int tw_ring_attach(void *mem, size_t size, tw_ring **out)
{
	if (mem == NULL || out == NULL || (uintptr_t)mem % TW_RING_LINE != 0)
		return TW_EINVAL;
	if (size < TW_RING_HDR_SIZE) {
		TW_WARN("ring", "%zu bytes cannot hold a ring header", size);
		return TW_EPROTO;
	}
	struct tw_ring_hdr *hdr = mem;
	// Each field is loaded exactly once; everything after this block
	// works on the locals and, after attach, on the private handle.
	uint64_t magic = __atomic_load_n(&hdr->magic, __ATOMIC_ACQUIRE);
	uint32_t version = __atomic_load_n(&hdr->version, __ATOMIC_RELAXED);
	uint32_t lanes = __atomic_load_n(&hdr->lanes, __ATOMIC_RELAXED);
	uint32_t slots = __atomic_load_n(&hdr->slots, __ATOMIC_RELAXED);
	uint32_t max_msg = __atomic_load_n(&hdr->max_msg, __ATOMIC_RELAXED);
	uint64_t stride = __atomic_load_n(&hdr->slot_size, __ATOMIC_RELAXED);
	uint64_t bytes = __atomic_load_n(&hdr->total_size, __ATOMIC_RELAXED);
	size_t slot_size, total;
	if (magic != TW_RING_MAGIC) {
		TW_WARN("ring", "not a ring: bad magic number");
		return TW_EPROTO;
	}
	if (version != TW_RING_VERSION) {
		TW_WARN("ring",
		    "ring format version %u, this library reads %u", version,
		    TW_RING_VERSION);
		return TW_EPROTO;
	}
	if (!ring_geometry(lanes, slots, max_msg, &slot_size, &total)
	    || stride != slot_size || bytes != total) {
		TW_WARN("ring",
		    "corrupt ring geometry (%u lanes, %u slots, %u bytes "
		    "per message)",
		    lanes, slots, max_msg);
		return TW_EPROTO;
	}
	if (total > size) {
		TW_WARN("ring", "ring of %zu bytes does not fit in %zu bytes",
		    total, size);
		return TW_EPROTO;
	}
	tw_ring *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return TW_ENOMEM;
	// lanes * TW_RING_LANE_SIZE fits in `size`, so these cannot overflow.
	r->prod = seen_alloc(lanes);
	r->cons = seen_alloc(lanes);
	if (r->prod == NULL || r->cons == NULL) {
		tw_ring_detach(r);
		return TW_ENOMEM;
	}
	r->hdr = hdr;
	r->lane
	    = (struct tw_ring_lane *)((unsigned char *)mem + TW_RING_HDR_SIZE);
	r->slot0 = (unsigned char *)(r->lane + lanes);
	r->slot_size = slot_size;
	r->lane_bytes = (size_t)slots * slot_size;
	r->lanes = lanes;
	r->slots = slots;
	r->mask = slots - 1;
	r->max_msg = max_msg;
	r->release_mask = 0;
	*out = r;
	return TW_OK;
}

void tw_ring_detach(tw_ring *r)
{
	if (r != NULL) {
		free(r->prod);
		free(r->cons);
	}
	free(r);
}

int tw_ring_set_role(tw_ring *r, int consumer)
{
	if (r == NULL)
		return TW_EINVAL;
	int role = consumer ? TW_RING_CONSUMER : TW_RING_PRODUCER;
	__atomic_store_n(
	    &r->hdr->pid[role], (uint32_t)getpid(), __ATOMIC_SEQ_CST);
	return TW_OK;
}

// The slot of `lane` that free-running index `idx` maps to.  Only private
// values enter the computation, and idx is reduced by the private mask, so
// the result lies inside the validated segment whatever idx holds.
static struct tw_ring_slot *ring_slot(
    const tw_ring *r, uint32_t lane, uint32_t idx)
{
	return (struct tw_ring_slot *)(r->slot0 + lane * r->lane_bytes
	    + (size_t)(idx & r->mask) * r->slot_size);
}

// Bumps a futex word and wakes everyone sleeping on it.
static void ring_wake(uint32_t *word)
{
	__atomic_fetch_add(word, 1, __ATOMIC_SEQ_CST);
	tw__futex_wake(word, INT_MAX);
}

static int ring_bad_count(uint32_t lane, uint32_t used, uint32_t slots)
{
	TW_WARN("ring", "corrupt ring: lane %u claims %u messages in %u slots",
	    lane, used, slots);
	return TW_EPROTO;
}

// A sequence word that is neither message `idx`'s nor the previous lap's.
static int ring_bad_seq(uint32_t lane, uint32_t idx, uint32_t seq)
{
	TW_WARN("ring",
	    "corrupt ring: the slot of message %u in lane %u holds sequence "
	    "word %u",
	    idx, lane, seq);
	return TW_EPROTO;
}

// TW_OK while both sides are there; TW_ECLOSED once this side aborted,
// TW_EPEER once the other side aborted or (when check_pid) its process no
// longer exists.
static int ring_peer_status(const tw_ring *r, int role, int check_pid)
{
	struct tw_ring_hdr *hdr = r->hdr;
	if (__atomic_load_n(&hdr->aborted[role], __ATOMIC_SEQ_CST) != 0)
		return TW_ECLOSED;
	if (__atomic_load_n(&hdr->aborted[!role], __ATOMIC_SEQ_CST) != 0)
		return TW_EPEER;
	if (check_pid) {
		uint32_t pid
		    = __atomic_load_n(&hdr->pid[!role], __ATOMIC_RELAXED);
		if (!tw__proc_alive(pid)) {
			TW_DEBUG("ring", "ring %s process %u is gone",
			    role == TW_RING_CONSUMER ? "producer" : "consumer",
			    pid);
			return TW_EPEER;
		}
	}
	return TW_OK;
}

// One attempt of an operation: TW_EAGAIN when it must wait, anything else
// is its result.
typedef int (*ring_try_func_t)(tw_ring *r, void *arg);

// Repeats `attempt` until it stops answering TW_EAGAIN, the timeout passes or
// a side goes away.  `word` is the futex word the other side bumps after
// making progress and `sleepers` the count it reads to decide whether to.
static int ring_wait(tw_ring *r, int role, uint32_t *word, uint32_t *sleepers,
    ring_try_func_t attempt, void *arg, int64_t timeout_us)
{
	int status;
	if (timeout_us == 0) {
		status = ring_peer_status(r, role, 0);
		return status != TW_OK ? status : TW_ETIMEDOUT;
	}
	int64_t now = tw__now_ns();
	int64_t deadline = tw__deadline_us(timeout_us);
	int64_t spin_end = now + RING_SPIN_NS;
	for (unsigned pass = 1; now < spin_end && now < deadline; pass++) {
		tw__cpu_relax();
		status = attempt(r, arg);
		if (status != TW_EAGAIN)
			return status;
		// The flags and the clock every few passes: each costs about
		// as much as an attempt, and the fewer there are between two
		// attempts, the sooner the other side's progress is seen.
		if (pass % RING_CHECK_PASSES != 0)
			continue;
		status = ring_peer_status(r, role, 0);
		if (status != TW_OK)
			return status;
		now = tw__now_ns();
	}
	int64_t next_pid_check = now + RING_SLICE_NS;
	for (;;) {
		// The word is sampled before announcing and re-checking: a
		// bump after this point makes the futex wait return at once,
		// so progress made during the re-check is never slept through.
		uint32_t seq = __atomic_load_n(word, __ATOMIC_ACQUIRE);
		__atomic_fetch_add(sleepers, 1, __ATOMIC_SEQ_CST);
		status = attempt(r, arg);
		int64_t nap = RING_SLICE_NS;
		if (status == TW_EAGAIN) {
			now = tw__now_ns();
			int check_pid = now >= next_pid_check;
			if (check_pid)
				next_pid_check = now + RING_SLICE_NS;
			status = ring_peer_status(r, role, check_pid);
			if (status == TW_OK)
				status = TW_EAGAIN;
			if (deadline != TW_FOREVER && deadline - now < nap)
				nap = deadline - now;
			if (status == TW_EAGAIN && nap <= 0)
				status = TW_ETIMEDOUT;
		}
		if (status == TW_EAGAIN)
			tw__futex_wait(word, seq, nap);
		// A stale non-zero count only costs the other side a wake-up
		// call, so the decrement needs no ordering.
		__atomic_fetch_sub(sleepers, 1, __ATOMIC_RELAXED);
		if (status != TW_EAGAIN)
			return status;
	}
}

// The payload is data[0..n) followed by more[0..n_more).
struct ring_send_args {
	uint32_t lane;
	uint32_t route;
	const void *data;
	size_t n;
	const void *more;
	size_t n_more;
	uint64_t corr;
};

// Our own word, found in the segment other than we last stored it: only
// this side writes it, so the segment was scribbled on (or another handle
// took over the role).  The value found is put back and the handle forgets
// its view, so that the next call loads the counts afresh and judges them.
static int ring_own_moved(uint32_t *word, uint32_t found, struct ring_seen *sn,
    uint32_t lane, const char *which)
{
	__atomic_store_n(word, found, __ATOMIC_RELAXED);
	sn->valid = 0;
	TW_WARN("ring",
	    "corrupt ring: the %s of lane %u moved under its owner", which,
	    lane);
	return TW_EPROTO;
}

// Whether the slot of message `idx` holds it (1), is free (0), or holds
// neither (TW_EPROTO).  Seq_cst: the load pairs with the producer's
// release of the word, making the slot written before it visible, and is
// the re-check of a consumer that announced itself.
static int ring_published(const tw_ring *r, uint32_t lane, uint32_t idx)
{
	struct tw_ring_slot *s = ring_slot(r, lane, idx);
	uint32_t seq = __atomic_load_n(&s->seq, __ATOMIC_SEQ_CST);
	if (seq == idx + 1)
		return 1;
	if (seq == idx + 1 - r->slots)
		return 0;
	return ring_bad_seq(lane, idx, seq);
}

// Counts the messages published in `lane` from `head` on: a handle that
// takes over the producer's role learns where the previous one stopped
// from the sequence words, there being no published tail.  At most
// `slots` words are read.
static int ring_find_tail(
    const tw_ring *r, uint32_t lane, uint32_t head, uint32_t *tail)
{
	uint32_t idx = head;
	for (uint32_t k = 0; k < r->slots; k++, idx++) {
		int there = ring_published(r, lane, idx);
		if (there < 0)
			return there;
		if (there == 0)
			break;
	}
	*tail = idx;
	return TW_OK;
}

// A producer asks for the first line of the slot this many messages ahead
// as soon as it has published one.  That line was last read by the
// consumer a lap ago, so writing it takes it from the consumer's cache: a
// transfer between cores that, begun early, runs while the producer does
// the rest of its work, where it used to stall the publishing exchange
// (which waits for the slot's stores to complete).  Two ahead, not one:
// a consumer that keeps up polls the very next slot.
#define RING_PREFETCH_AHEAD 2

// A hint; the instruction is a no-op where the CPU lacks it.
static inline void ring_prefetch_w(const void *p)
{
#if defined(__x86_64__) || defined(__i386__)
	__asm__ __volatile__("prefetchw %0" ::"m"(*(const char *)p));
#else
	__builtin_prefetch(p, 1, 3);
#endif
}

// Makes sure the slot of `lane`'s next message (prod[lane].tail) is free
// to write, and sets *slot to it.  TW_OK, TW_EAGAIN (the lane is full) or
// TW_EPROTO.
static int ring_claim(tw_ring *r, uint32_t lane, struct tw_ring_slot **slot)
{
	struct tw_ring_lane *lc = &r->lane[lane];
	struct ring_seen *sn = &r->prod[lane];
	uint32_t tail = sn->tail;
	uint32_t used = tail - sn->head;
	if (!sn->valid || used >= r->slots) {
		// Acquire: the consumer released head only after copying the
		// slot out, so a slot behind head may be overwritten.  Seq_cst
		// because this load is the re-check of a producer that
		// announced itself.
		uint32_t head = __atomic_load_n(&lc->head, __ATOMIC_SEQ_CST);
		if (!sn->valid) {
			int status = ring_find_tail(r, lane, head, &tail);
			if (status != TW_OK)
				return status;
		}
		used = tail - head;
		if (used > r->slots)
			return ring_bad_count(lane, used, r->slots);
		sn->head = head;
		sn->tail = tail;
		sn->valid = 1;
		if (used == r->slots)
			return TW_EAGAIN;
	}
	*slot = ring_slot(r, lane, tail);
	return TW_OK;
}

// Publishes the message of `len` payload bytes written into the claimed
// slot of `lane`.  TW_OK or TW_EPROTO.
static int ring_publish(
    tw_ring *r, uint32_t lane, uint32_t route, uint32_t len, uint64_t corr)
{
	struct ring_seen *sn = &r->prod[lane];
	uint32_t tail = sn->tail;
	struct tw_ring_slot *s = ring_slot(r, lane, tail);
	s->route = route;
	s->len = len;
	s->corr = corr;
	// Release: the slot is complete before the consumer can see it.
	// Seq_cst so that the sleeper count below is read after it.  The
	// exchange also checks that the slot was free, as we left it a lap
	// ago: only this producer writes the word.
	uint32_t was
	    = __atomic_exchange_n(&s->seq, tail + 1, __ATOMIC_SEQ_CST);
	if (was != tail + 1 - r->slots)
		return ring_own_moved(
		    &s->seq, was, sn, lane, "slot sequence word");
	sn->tail = tail + 1;
	ring_prefetch_w(ring_slot(r, lane, tail + RING_PREFETCH_AHEAD));
	if (__atomic_load_n(&r->hdr->cons_sleepers, __ATOMIC_SEQ_CST) != 0)
		ring_wake(&r->hdr->data_seq);
	return TW_OK;
}

static int ring_try_send(tw_ring *r, void *arg)
{
	struct ring_send_args *a = arg;
	struct tw_ring_slot *s;
	int status = ring_claim(r, a->lane, &s);
	if (status != TW_OK)
		return status;
	if (a->n > 0)
		memcpy(s + 1, a->data, a->n);
	if (a->n_more > 0)
		memcpy((unsigned char *)(s + 1) + a->n, a->more, a->n_more);
	return ring_publish(
	    r, a->lane, a->route, (uint32_t)(a->n + a->n_more), a->corr);
}

int tw__ring_claim(tw_ring *r, uint32_t lane, void **payload)
{
	if (r == NULL || lane >= r->lanes || payload == NULL)
		return TW_EINVAL;
	struct tw_ring_slot *s;
	int status = ring_claim(r, lane, &s);
	if (status == TW_OK)
		*payload = s + 1;
	return status;
}

void tw__ring_geometry(
    const tw_ring *r, uint32_t *lanes, uint32_t *slots, uint32_t *max_msg)
{
	*lanes = r->lanes;
	*slots = r->slots;
	*max_msg = r->max_msg;
}

int tw__ring_publish(
    tw_ring *r, uint32_t lane, uint32_t route, size_t n, uint64_t corr)
{
	if (r == NULL || lane >= r->lanes)
		return TW_EINVAL;
	if (n > r->max_msg)
		return TW_ETOOBIG;
	return ring_publish(r, lane, route, (uint32_t)n, corr);
}

int tw_ring_send(tw_ring *r, uint32_t lane, uint32_t route, const void *data,
    size_t n, uint64_t corr, int64_t timeout_us)
{
	return tw__ring_send2(
	    r, lane, route, data, n, NULL, 0, corr, timeout_us);
}

int tw__ring_send2(tw_ring *r, uint32_t lane, uint32_t route, const void *data,
    size_t n, const void *more, size_t n_more, uint64_t corr,
    int64_t timeout_us)
{
	if (r == NULL || lane >= r->lanes || (data == NULL && n > 0)
	    || (more == NULL && n_more > 0))
		return TW_EINVAL;
	if (n > r->max_msg || n_more > r->max_msg - n)
		return TW_ETOOBIG;
	struct ring_send_args a = { lane, route, data, n, more, n_more, corr };
	int status = ring_try_send(r, &a);
	if (status != TW_EAGAIN)
		return status;
	struct tw_ring_lane *lc = &r->lane[lane];
	return ring_wait(r, TW_RING_PRODUCER, &lc->space_seq,
	    &lc->prod_sleepers, ring_try_send, &a, timeout_us);
}

struct ring_recv_args {
	uint32_t *lane; // recv_any: where to report the lane; else NULL
	uint32_t which; // tw_ring_recv: the lane
	void *dst;
	size_t cap;
	size_t *n;
	uint32_t *route;
	uint64_t *corr;
	tw__ring_place_fn place; // NULL: the payload goes to dst
	void *place_arg;
	void **at; // where the payload went; NULL: not asked
	size_t *from; // with at: the payload's bytes before it are in dst
};

// Hands the slots taken so far back to the producer by publishing head.
// Only the consumer writes head: the last value it stored is the count, and
// the segment's copy is checked as the exchange replaces it.
static int ring_release(tw_ring *r, uint32_t lane, struct ring_seen *sn)
{
	struct tw_ring_lane *lc = &r->lane[lane];
	// Release: the slots have been copied out before the producer may see
	// them free and overwrite them.  Seq_cst so that the sleeper count
	// below is read after it.
	uint32_t was
	    = __atomic_exchange_n(&lc->head, sn->head, __ATOMIC_SEQ_CST);
	if (was != sn->pub)
		return ring_own_moved(&lc->head, was, sn, lane, "head");
	sn->pub = sn->head;
	if (__atomic_load_n(&lc->prod_sleepers, __ATOMIC_SEQ_CST) != 0)
		ring_wake(&lc->space_seq);
	return TW_OK;
}

// Asks the consumer's place callback where the payload of the slot at
// `s` goes; a peek copies its leading bytes to dst first.  Returns where
// the payload's byte *from goes, as tw__ring_recv_any_placed reports them;
// *done: the leading bytes copied already (at least *from).
static void *ring_place(struct ring_recv_args *a, struct tw_ring_slot *s,
    uint32_t lane, uint32_t route, uint64_t corr, size_t len, size_t *from,
    size_t *done)
{
	tw__ring_placing p
	    = { .lane = lane, .route = route, .corr = corr, .len = len };
	void *to = a->place(a->place_arg, &p);
	if (to == NULL && p.peek > 0) {
		p.have = p.peek < len ? p.peek : len;
		memcpy(a->dst, s + 1, p.have);
		p.peek = 0;
		p.from = 0;
		to = a->place(a->place_arg, &p);
	}
	if (to == NULL || p.from > p.have) {
		*from = 0;
		*done = p.have;
		return a->dst;
	}
	*from = *done = p.from;
	return to;
}

// Takes the oldest message of `lane`, if any.
static int ring_take(tw_ring *r, uint32_t lane, struct ring_recv_args *a)
{
	struct tw_ring_lane *lc = &r->lane[lane];
	struct ring_seen *sn = &r->cons[lane];
	if (!sn->valid) {
		sn->head = sn->pub
		    = __atomic_load_n(&lc->head, __ATOMIC_RELAXED);
		sn->valid = 1;
	}
	uint32_t head = sn->head;
	int there = ring_published(r, lane, head);
	if (there <= 0) {
		if (there < 0)
			return there;
		// Looks empty: hand back what was taken.
		if (sn->pub != head) {
			int status = ring_release(r, lane, sn);
			if (status != TW_OK)
				return status;
		}
		return TW_EAGAIN;
	}
	struct tw_ring_slot *s = ring_slot(r, lane, head);
	uint32_t len = __atomic_load_n(&s->len, __ATOMIC_RELAXED);
	if (len > r->max_msg) {
		TW_WARN("ring",
		    "corrupt ring: message of %u bytes in lane %u, "
		    "limit %u",
		    len, lane, r->max_msg);
		return TW_EPROTO;
	}
	if (len > a->cap) {
		if (a->n != NULL)
			*a->n = len;
		if (a->lane != NULL)
			*a->lane = lane;
		return TW_ETRUNC;
	}
	uint32_t route = __atomic_load_n(&s->route, __ATOMIC_RELAXED);
	uint64_t corr = __atomic_load_n(&s->corr, __ATOMIC_RELAXED);
	void *at = a->dst;
	size_t from = 0, done = 0;
	if (a->place != NULL && len > 0)
		at = ring_place(a, s, lane, route, corr, len, &from, &done);
	if (a->at != NULL) {
		*a->at = at;
		*a->from = from;
	}
	// Byte `from` goes to `at`, so byte `done` to at + (done - from).
	if (len > done)
		memcpy((unsigned char *)at + (done - from),
		    (const unsigned char *)(s + 1) + done, len - done);
	sn->head = head + 1;
	// Publishing head is a locked exchange on a line that a producer
	// waiting for room keeps reading: in a stream that fills the ring,
	// one per message made it most of a take.  Batching it leaves up to
	// release_mask slots unseen by the producer until the batch is full,
	// the consumer's next look finds the lane empty (above), or a
	// producer sleeps (read relaxed: one that is about to sleep rechecks
	// head after announcing itself, and the next publish wakes it).
	// Whether the lane holds more is not asked here: that reads the next
	// slot's line, which the producer writes next, and a small message's
	// whole way from one process to the other then waited for that line
	// to cross between the cores (a sixth of an 8-byte message's latency
	// over shm://).
	if (((head + 1) & r->release_mask) == 0
	    || __atomic_load_n(&lc->prod_sleepers, __ATOMIC_RELAXED) != 0) {
		int status = ring_release(r, lane, sn);
		if (status != TW_OK)
			return status;
	}
	if (a->n != NULL)
		*a->n = len;
	if (a->route != NULL)
		*a->route = route;
	if (a->corr != NULL)
		*a->corr = corr;
	if (a->lane != NULL)
		*a->lane = lane;
	return TW_OK;
}

static int ring_try_recv(tw_ring *r, void *arg)
{
	struct ring_recv_args *a = arg;
	return ring_take(r, a->which, a);
}

// Looks at every lane once, starting after the last one served, so that a
// busy lane cannot starve the others.  A message that does not fit
// (TW_ETRUNC) moves the cursor onto its lane: the next call finds it first.
static int ring_try_recv_any(tw_ring *r, void *arg)
{
	struct ring_recv_args *a = arg;
	uint32_t lane = r->next;
	for (uint32_t i = 0; i < r->lanes; i++) {
		int status = ring_take(r, lane, a);
		if (status == TW_OK)
			r->next = lane + 1 < r->lanes ? lane + 1 : 0;
		else if (status == TW_ETRUNC)
			r->next = lane;
		if (status != TW_EAGAIN)
			return status;
		lane = lane + 1 < r->lanes ? lane + 1 : 0;
	}
	return TW_EAGAIN;
}

int tw_ring_recv(tw_ring *r, uint32_t lane, void *dst, size_t cap, size_t *n,
    uint32_t *route, uint64_t *corr, int64_t timeout_us)
{
	if (r == NULL || lane >= r->lanes || (dst == NULL && cap > 0))
		return TW_EINVAL;
	struct ring_recv_args a = { .which = lane,
		.dst = dst,
		.cap = cap,
		.n = n,
		.route = route,
		.corr = corr };
	int status = ring_try_recv(r, &a);
	if (status != TW_EAGAIN)
		return status;
	return ring_wait(r, TW_RING_CONSUMER, &r->hdr->data_seq,
	    &r->hdr->cons_sleepers, ring_try_recv, &a, timeout_us);
}

static int recv_any(tw_ring *r, uint32_t *lane, void *dst, size_t cap,
    size_t *n, uint32_t *route, uint64_t *corr, tw__ring_place_fn place,
    void *arg, void **at, size_t *from, int64_t timeout_us)
{
	if (r == NULL || lane == NULL || (dst == NULL && cap > 0))
		return TW_EINVAL;
	struct ring_recv_args a = { .lane = lane,
		.dst = dst,
		.cap = cap,
		.n = n,
		.route = route,
		.corr = corr,
		.place = place,
		.place_arg = arg,
		.at = at,
		.from = from };
	int status = ring_try_recv_any(r, &a);
	if (status != TW_EAGAIN)
		return status;
	return ring_wait(r, TW_RING_CONSUMER, &r->hdr->data_seq,
	    &r->hdr->cons_sleepers, ring_try_recv_any, &a, timeout_us);
}

int tw_ring_recv_any(tw_ring *r, uint32_t *lane, void *dst, size_t cap,
    size_t *n, uint32_t *route, uint64_t *corr, int64_t timeout_us)
{
	return recv_any(r, lane, dst, cap, n, route, corr, NULL, NULL, NULL,
	    NULL, timeout_us);
}

int tw__ring_recv_any_placed(tw_ring *r, uint32_t *lane, void *dst, size_t cap,
    size_t *n, uint32_t *route, uint64_t *corr, tw__ring_place_fn place,
    void *arg, void **at, size_t *from)
{
	if (at == NULL || from == NULL)
		return TW_EINVAL;
	return recv_any(
	    r, lane, dst, cap, n, route, corr, place, arg, at, from, 0);
}

struct ring_peek_args {
	const _Atomic int *stop;
};

// Whether the slot at the published head of `lane` is anything but free:
// a message, or a word the consumer's take will judge.  The caller need
// not be the consumer, so this is only a hint: the consumer may have taken
// messages it has not handed back yet (only while the lane still holds
// more, see ring_take) or move head between the two loads.
static int ring_lane_busy(const tw_ring *r, uint32_t lane)
{
	// Seq_cst: these loads are the re-check of a waiter that announced
	// itself.
	uint32_t head = __atomic_load_n(&r->lane[lane].head, __ATOMIC_SEQ_CST);
	uint32_t seq = __atomic_load_n(
	    &ring_slot(r, lane, head)->seq, __ATOMIC_SEQ_CST);
	return seq != head + 1 - r->slots;
}

// Whether a lane holds a message, without taking it.
static int ring_try_peek(tw_ring *r, void *arg)
{
	struct ring_peek_args *a = arg;
	for (uint32_t lane = 0; lane < r->lanes; lane++) {
		if (ring_lane_busy(r, lane))
			return TW_OK;
	}
	// Seq_cst: the caller's stop word is raised before a kick, and this
	// load is the re-check after announcing a sleeper.
	if (atomic_load(a->stop) != 0)
		return TW_OK;
	return TW_EAGAIN;
}

int tw__ring_wait_any(tw_ring *r, const _Atomic int *stop, int64_t timeout_us)
{
	struct ring_peek_args a = { stop };
	int status = ring_try_peek(r, &a);
	if (status != TW_EAGAIN)
		return status;
	return ring_wait(r, TW_RING_CONSUMER, &r->hdr->data_seq,
	    &r->hdr->cons_sleepers, ring_try_peek, &a, timeout_us);
}

int tw__ring_sleep_begin(tw_ring *r, uint32_t lane_mask, int check_pid,
    uint32_t **word, uint32_t *seq)
{
	struct tw_ring_hdr *hdr = r->hdr;
	// As in ring_wait: sample, announce, re-check.
	*word = &hdr->data_seq;
	*seq = __atomic_load_n(&hdr->data_seq, __ATOMIC_ACQUIRE);
	__atomic_fetch_add(&hdr->cons_sleepers, 1, __ATOMIC_SEQ_CST);
	int status = TW_EAGAIN;
	for (uint32_t lane = 0; lane < r->lanes; lane++) {
		if (!(lane_mask & (UINT32_C(1) << lane)))
			continue;
		if (ring_lane_busy(r, lane))
			status = TW_OK;
	}
	if (status == TW_EAGAIN) {
		status = ring_peer_status(r, TW_RING_CONSUMER, check_pid);
		if (status == TW_OK)
			return TW_EAGAIN;
	}
	__atomic_fetch_sub(&hdr->cons_sleepers, 1, __ATOMIC_RELAXED);
	return status;
}

void tw__ring_sleep_end(tw_ring *r)
{
	__atomic_fetch_sub(&r->hdr->cons_sleepers, 1, __ATOMIC_RELAXED);
}

uint32_t *tw__ring_kick_word(tw_ring *r, uint32_t *seq)
{
	*seq = __atomic_load_n(&r->hdr->data_seq, __ATOMIC_ACQUIRE);
	return &r->hdr->data_seq;
}

int tw__ring_looks_full(const tw_ring *r)
{
	for (uint32_t lane = 0; lane < r->lanes; lane++) {
		uint32_t head
		    = __atomic_load_n(&r->lane[lane].head, __ATOMIC_RELAXED);
		uint32_t last = head + r->slots - 1;
		if (__atomic_load_n(
		        &ring_slot(r, lane, last)->seq, __ATOMIC_RELAXED)
		    == last + 1)
			return 1;
	}
	return 0;
}

void tw__ring_set_release(tw_ring *r, uint32_t every)
{
	// Up to half the lane, the other half being the room that the
	// producer fills meanwhile: each hand-back is a locked exchange on
	// the line that a producer waiting for room keeps reading, and
	// batches of a quarter still cost a stream of 8-byte messages over
	// a 32-slot lane a fifth of its rate.
	uint32_t m = 1;
	while (m * 2 <= every && m * 2 <= r->slots / 2)
		m *= 2;
	r->release_mask = m - 1;
}

int tw__ring_release(tw_ring *r)
{
	for (uint32_t lane = 0; lane < r->lanes; lane++) {
		struct ring_seen *sn = &r->cons[lane];
		if (sn->valid && sn->pub != sn->head) {
			int status = ring_release(r, lane, sn);
			if (status != TW_OK)
				return status;
		}
	}
	return TW_OK;
}

void tw__ring_kick(tw_ring *r)
{
	ring_wake(&r->hdr->data_seq);
}

void tw_ring_abort(tw_ring *r, int consumer)
{
	if (r == NULL)
		return;
	struct tw_ring_hdr *hdr = r->hdr;
	int role = consumer ? TW_RING_CONSUMER : TW_RING_PRODUCER;
	__atomic_store_n(&hdr->aborted[role], 1, __ATOMIC_SEQ_CST);
	// Wake both sides: the other one to see TW_EPEER, other threads of
	// this one to see TW_ECLOSED.  A waiter reads the flags after it
	// announced itself, so a lane whose producer has not announced itself
	// needs no call; the consumer's word is woken regardless, once.
	ring_wake(&hdr->data_seq);
	for (uint32_t i = 0; i < r->lanes; i++) {
		struct tw_ring_lane *lc = &r->lane[i];
		if (__atomic_load_n(&lc->prod_sleepers, __ATOMIC_SEQ_CST) != 0)
			ring_wake(&lc->space_seq);
	}
}
