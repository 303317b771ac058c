// What the library's own transports need from a ring beyond the public
// API: waiting for a message without taking it, so that the thread that
// waits and the thread that consumes may differ (shm:// lets a receiving
// application thread consume the ring itself while its receiver thread
// waits, see shm.c).

#ifndef TW_RING_RING_INT_H
#define TW_RING_RING_INT_H

#include <stdatomic.h>
#include <stdint.h>

#include <tagwire/ring.h>

// Waits up to `timeout_us` (0 = look once, negative = forever) until a lane
// of `r` holds a message or *stop (this process's memory) is non-zero, taking
// nothing.  Returns TW_OK (a message seems to be there, or stop: the
// consumer's receive tells, and checks the indices), TW_ETIMEDOUT, TW_EPEER
// and TW_ECLOSED as tw_ring_recv.
// Whoever consumes must still be the ring's only consumer at that time;
// this call only reads.
int tw__ring_wait_any(tw_ring *r, const _Atomic int *stop, int64_t timeout_us);

// Wakes a thread of this process that sleeps in tw__ring_wait_any (or in a
// receive) on `r`, so that it looks at its stop word: one system call.
void tw__ring_kick(tw_ring *r);

// One thread that waits on many rings at once (futex_waitv) announces
// itself on each with tw__ring_sleep_begin, sleeps on the words it returns,
// then calls tw__ring_sleep_end on each.  Returns TW_EAGAIN when announced
// (*word and *seq to sleep on: a producer that publishes from now on bumps
// the word), TW_OK when a lane of `lane_mask` (bit i: lane i) holds a
// message, and TW_EPEER or TW_ECLOSED as tw_ring_recv (with `check_pid`,
// also when the producer's process is gone); nothing is announced then.
int tw__ring_sleep_begin(tw_ring *r, uint32_t lane_mask, int check_pid,
    uint32_t **word, uint32_t *seq);
void tw__ring_sleep_end(tw_ring *r);

// The word that tw__ring_kick bumps, with its value now in *seq.  A thread
// of the consumer's process that must be woken by kicks but not by every
// message sleeps on it without announcing itself: producers bump it only
// for announced sleepers, and tw__ring_kick always.
uint32_t *tw__ring_kick_word(tw_ring *r, uint32_t *seq);

// Whether some lane of `r` looks full: every slot holds a message that
// the consumer has not handed back, so its producer cannot send.  A hint
// read from the segment without ordering, for a thread that does not
// hold the consumer's role (whose counts it cannot see); it never fails.
int tw__ring_looks_full(const tw_ring *r);

// The geometry of the ring a handle is attached to: what tw_ring_attach
// found consistent with the mapping's size, which a caller that expects a
// geometry of its own (a segment's owner could lay out the same bytes as
// more, smaller slots) still has to compare.  Never fails.
void tw__ring_geometry(
    const tw_ring *r, uint32_t *lanes, uint32_t *slots, uint32_t *max_msg);

// Lets the consumer of `r` hand taken slots back to producers in batches of
// `every` (rounded down to a power of two, at most half the slots;
// 1, the default, hands each back as it is taken).  A batch is also handed
// back when the consumer next looks at a lane and finds it empty, and at
// its next take once the lane's producer sleeps.  So a producer misses at
// most every - 1 slots of room, and only while the consumer does not look:
// a consumer that stops looking for long while a producer may need the
// room (held back by its own reader) calls tw__ring_release first; one
// whose producer, finding the lane full, wakes it (tw__ring_kick) needs
// not.
void tw__ring_set_release(tw_ring *r, uint32_t every);
// Hands back every slot taken so far.  Returns TW_OK, or TW_EPROTO when
// the segment's head moved under the consumer (the take that follows says
// so too).
int tw__ring_release(tw_ring *r);

// tw_ring_send of the payload data[0..n) followed by more[0..n_more), both
// copied straight into the slot: a frame's header built apart from the
// payload it carries costs no copy of the payload through a buffer of
// its own.  Returns as tw_ring_send; TW_EINVAL also for more == NULL with
// n_more > 0, TW_ETOOBIG when n + n_more exceeds the ring's max_msg.
int tw__ring_send2(tw_ring *r, uint32_t lane, uint32_t route, const void *data,
    size_t n, const void *more, size_t n_more, uint64_t corr,
    int64_t timeout_us);

// A send in two steps, for a producer that builds its message in place:
// tw__ring_claim finds, without waiting, the slot that `lane`'s next
// message takes and sets *payload to its payload bytes (max_msg of them),
// which the producer fills; tw__ring_publish then makes the first `n` of
// them the message, as tw_ring_send would have.  Nothing of the slot is
// the consumer's before the publish.  Another send on the lane between the
// two is a caller's error.  tw__ring_claim returns TW_OK, TW_EAGAIN (the
// lane is full: send with tw_ring_send to wait), TW_EINVAL or TW_EPROTO
// (the producer's counts were scribbled on); tw__ring_publish returns
// TW_OK, TW_ETOOBIG (n > max_msg), TW_EINVAL or TW_EPROTO (the slot's
// sequence word was scribbled on).
int tw__ring_claim(tw_ring *r, uint32_t lane, void **payload);
int tw__ring_publish(
    tw_ring *r, uint32_t lane, uint32_t route, size_t n, uint64_t corr);

// A consumer placing a message's payload where it belongs, asked once the
// slot's header was read (each field once) and checked against the ring's
// limits and the caller's `cap`.  The fields are those the receive
// reports.
typedef struct tw__ring_placing {
	uint32_t lane;
	uint32_t route;
	uint64_t corr;
	size_t len; // payload bytes
	// Leading payload bytes already copied to dst: 0 at the first ask.
	size_t have;
	// Out, first ask: with a NULL answer, copy this many leading bytes
	// (at most len) to dst and ask once more, so that the consumer can
	// decide from a header it reads in its own memory, which the other
	// side cannot change under it.  0: no second ask.
	size_t peek;
	// Out: with an answer, the payload from byte `from` on goes there;
	// the bytes before it stay in dst.  At most `have` (an answer with
	// more is taken as NULL).
	size_t from;
} tw__ring_placing;

// Where the payload (from p->from on) goes: memory for p->len - p->from
// bytes, or NULL for dst.  The payload is copied after the call.
typedef void *(*tw__ring_place_fn)(void *arg, tw__ring_placing *p);

// tw_ring_recv_any with a timeout of 0, where `place` may choose where the
// payload goes.  On TW_OK, bytes [*from, *n) of the payload went to *at
// (dst or place's answer) and bytes [0, *from) to dst.  For a consumer that
// can put a payload where it belongs without a copy through dst, once the
// header says where.
int tw__ring_recv_any_placed(tw_ring *r, uint32_t *lane, void *dst, size_t cap,
    size_t *n, uint32_t *route, uint64_t *corr, tw__ring_place_fn place,
    void *arg, void **at, size_t *from);

#endif // TW_RING_RING_INT_H
