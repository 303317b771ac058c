// The layout of a tw_ring in shared memory, shared by the ring code, its
// tests and its fuzz target.  Everything here may be read and written by a
// process we do not trust; see ring.c for how each field is checked.
//
//   header    3 cache lines: geometry, liveness, consumer wake-up
//   lanes     `lanes` control blocks of 1 cache line each
//   slots     lanes * slots slots of `slot_size` bytes, lane after lane
//
// All integers are in the byte order of the host: both ends of a ring run
// on the same machine.
//
// The fields are plain integers, not _Atomic ones, though both processes
// access them at once: ring.c reaches each through the __atomic builtins,
// once, into a local that it then checks, and the layout is a format two
// processes (and the public tw_ring API's callers, and the fuzz target)
// agree on, which an _Atomic type's size or alignment must not change.
// The futex calls, too, take these words as plain uint32_t.

#ifndef TW_RING_LAYOUT_H
#define TW_RING_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#define TW_RING_MAGIC UINT64_C(0x3176676e69727774) // "twringv1" in LE
#define TW_RING_VERSION 3u
#define TW_RING_LINE 64

// Indices into the per-role arrays of the header.
enum { TW_RING_PRODUCER = 0, TW_RING_CONSUMER = 1 };

struct tw_ring_hdr {
	// Line 0: written by tw_ring_init, read once by tw_ring_attach.
	uint64_t magic;
	uint32_t version;
	uint32_t lanes;
	uint32_t slots;
	uint32_t max_msg;
	uint64_t slot_size; // bytes from one slot to the next
	uint64_t total_size; // bytes of the whole ring
	uint8_t pad0[TW_RING_LINE - 40];

	// Line 1: liveness, indexed by TW_RING_PRODUCER / TW_RING_CONSUMER.
	// Written rarely (tw_ring_set_role, tw_ring_abort), read by waiters.
	uint32_t pid[2]; // 0 = unknown
	uint32_t aborted[2]; // non-zero = that side is gone
	uint8_t pad1[TW_RING_LINE - 16];

	// Line 2: waking the consumer.  A producer reads cons_sleepers after
	// every send, so nothing else that changes often lives here.
	uint32_t data_seq; // futex word, bumped to wake the consumer
	uint32_t cons_sleepers; // consumer threads about to sleep
	uint8_t pad2[TW_RING_LINE - 8];
};

// One lane: the consumer's line.  Version 3 has no producer's count:
// a message is published by the sequence word in its own slot, so the
// consumer finds it by reading the line it must read anyway, and the
// producer writes only lines it owns (version 2 published a `tail` count
// on a line of its own, which the consumer polled: two lines crossed
// between the cores per message instead of one).  The consumer reads
// prod_sleepers after every receive: it lives on the consumer's line,
// which a producer writes only on its way to sleep.
struct tw_ring_lane {
	uint32_t head; // free-running count of messages consumed
	uint32_t space_seq; // futex word, bumped to wake the producer
	uint32_t prod_sleepers; // producer threads about to sleep
	uint8_t pad[TW_RING_LINE - 12];
};

// The fixed part of a slot; max_msg payload bytes follow.  `seq` is
// written last: the free-running index of the message the slot holds plus
// one once it is published, that index plus one minus `slots` (the
// previous lap) while it is free.  tw_ring_init writes the latter into
// every slot.
struct tw_ring_slot {
	uint32_t seq;
	uint32_t route;
	uint32_t len;
	uint32_t rsvd; // zero
	uint64_t corr;
};

#define TW_RING_HDR_SIZE sizeof(struct tw_ring_hdr)
#define TW_RING_LANE_SIZE sizeof(struct tw_ring_lane)
#define TW_RING_SLOT_HDR sizeof(struct tw_ring_slot)

_Static_assert(sizeof(struct tw_ring_hdr) == 3 * TW_RING_LINE,
    "ring header is three cache lines");
_Static_assert(offsetof(struct tw_ring_hdr, pid) == TW_RING_LINE,
    "liveness starts line 1");
_Static_assert(offsetof(struct tw_ring_hdr, data_seq) == 2 * TW_RING_LINE,
    "consumer wake-up starts line 2");
_Static_assert(
    sizeof(struct tw_ring_lane) == TW_RING_LINE, "a lane is one cache line");
_Static_assert(sizeof(struct tw_ring_slot) == 24, "slot header");

#endif // TW_RING_LAYOUT_H
