// A minimal single-producer/single-consumer ring: the physical baseline
// that the benchmark compares tagwire's rings with.
//
// The ring lives in memory shared by two processes.  Its control block holds
// two free-running 64-bit counters on separate cache lines: `tail` (messages
// published, written only by the producer) and `head` (messages consumed,
// written only by the consumer).  Slots are a power of two in number, each a
// 16-byte header (the payload length) followed by up to `max_msg` inline
// bytes, rounded up to whole cache lines.  The producer fills a slot and
// publishes it with a store-release of tail; the consumer reads tail with a
// load-acquire, copies the slot out and releases head.  Each side keeps a
// private copy of the other side's counter and reloads it only when the
// ring looks full (producer) or empty (consumer).
//
// Waiting is a busy poll (or, on a host with one CPU, a loop of
// sched_yield), bounded by a timeout checked every few thousand polls.
// Nothing is validated: both ends are trusted.

#ifndef TW_BENCH_BARE_RING_H
#define TW_BENCH_BARE_RING_H

#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define BARE_LINE 64
#define BARE_SLOT_HDR 16

struct bare_ctl {
	_Alignas(BARE_LINE) uint64_t tail;
	_Alignas(BARE_LINE) uint64_t head;
};

// One end of a ring: private state of the producer or of the consumer.
struct bare_end {
	struct bare_ctl *ctl;
	unsigned char *slot0;
	size_t stride;
	uint64_t mask;
	uint64_t slots;
	size_t max_msg;
	uint64_t pos; // our own counter (tail or head)
	uint64_t seen; // last value read of the other side's counter
	int yield; // 1: give the CPU away while polling (single-CPU hosts)
};

static inline size_t bare_stride(size_t max_msg)
{
	return (BARE_SLOT_HDR + max_msg + BARE_LINE - 1)
	    & ~(size_t)(BARE_LINE - 1);
}

// Bytes for a ring of `slots` (a power of two) slots of max_msg bytes.
static inline size_t bare_ring_bytes(uint32_t slots, size_t max_msg)
{
	return sizeof(struct bare_ctl) + (size_t)slots * bare_stride(max_msg);
}

// Formats an empty ring at `mem` (cache-line aligned); before any end uses
// it.
static inline void bare_ring_init(void *mem)
{
	memset(mem, 0, sizeof(struct bare_ctl));
}

// Sets up an end on the ring at `mem`; both ends pass the same geometry.
static inline void bare_end_init(
    struct bare_end *e, void *mem, uint32_t slots, size_t max_msg)
{
	e->ctl = mem;
	e->slot0 = (unsigned char *)mem + sizeof(struct bare_ctl);
	e->stride = bare_stride(max_msg);
	e->slots = slots;
	e->mask = slots - 1;
	e->max_msg = max_msg;
	e->pos = 0;
	e->seen = 0;
	e->yield = 0;
}

static inline void bare_relax(const struct bare_end *e)
{
	if (e->yield) {
		sched_yield();
		return;
	}
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

static inline int64_t bare_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

// A waiting side reads the clock once every this many polls.
#define BARE_POLL_CHECK 4096

// The clock is read only once a side has polled BARE_POLL_CHECK times; the
// first reading starts the timeout.  Returns 1 once it has passed.
static inline int bare_expired(unsigned polls, int64_t *deadline, int64_t t)
{
	if (polls % BARE_POLL_CHECK != 0)
		return 0;
	int64_t now = bare_now_ns();
	if (*deadline == 0)
		*deadline = now + t;
	return now > *deadline;
}

// Copies data[0..n) (n <= max_msg) into the next slot.  Returns 0, or -1
// when the ring stayed full for timeout_ns.
static inline int bare_send(
    struct bare_end *e, const void *data, size_t n, int64_t timeout_ns)
{
	unsigned polls = 0;
	int64_t deadline = 0;
	while (e->pos - e->seen == e->slots) {
		e->seen = __atomic_load_n(&e->ctl->head, __ATOMIC_ACQUIRE);
		if (e->pos - e->seen != e->slots)
			break;
		bare_relax(e);
		if (bare_expired(++polls, &deadline, timeout_ns))
			return -1;
	}
	unsigned char *s = e->slot0 + (e->pos & e->mask) * e->stride;
	memcpy(s, &n, sizeof(n));
	memcpy(s + BARE_SLOT_HDR, data, n);
	e->pos++;
	__atomic_store_n(&e->ctl->tail, e->pos, __ATOMIC_RELEASE);
	return 0;
}

// Takes the next message into dst[0..cap) and sets *n.  Returns 0, -1 when
// the ring stayed empty for timeout_ns, -2 when cap is too small.
static inline int bare_recv(
    struct bare_end *e, void *dst, size_t cap, size_t *n, int64_t timeout_ns)
{
	unsigned polls = 0;
	int64_t deadline = 0;
	while (e->seen == e->pos) {
		e->seen = __atomic_load_n(&e->ctl->tail, __ATOMIC_ACQUIRE);
		if (e->seen != e->pos)
			break;
		bare_relax(e);
		if (bare_expired(++polls, &deadline, timeout_ns))
			return -1;
	}
	const unsigned char *s = e->slot0 + (e->pos & e->mask) * e->stride;
	size_t len;
	memcpy(&len, s, sizeof(len));
	if (len > cap)
		return -2;
	memcpy(dst, s + BARE_SLOT_HDR, len);
	*n = len;
	e->pos++;
	__atomic_store_n(&e->ctl->head, e->pos, __ATOMIC_RELEASE);
	return 0;
}

#endif // TW_BENCH_BARE_RING_H
