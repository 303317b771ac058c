// Internal view of the collectives (coll.c): which algorithm a call takes,
// for `tagwire perf` to name it and for tests to force either path.
#ifndef TW_LINK_COLL_H
#define TW_LINK_COLL_H

#include <stddef.h>
#include <stdint.h>

// Thresholds: blocks of TW__COLL_AG_LARGE bytes or more go round the
// allgather ring; a broadcast of TW__COLL_BC_LARGE bytes or more to 3
// parties or more takes scatter + ring.  Measured with
// bench/coll_sweep.sh, forcing each path, over tcp:// and shm:// with 4,
// 8 and 16 parties on two CPUs (README, "Performance"): at 4 parties both
// large algorithms won 2-4x from 256 KiB.  At 8 and 16, where the parties
// outnumber the CPUs and each of the ring's n-1 steps waits for the
// scheduler, the ring allgather lost up to 3x at 256 KiB, was even at
// 1 MiB and won in most runs from 4 MiB (2-3.4x at 16 MiB); scatter +
// ring, which moves twice the tree's bytes through the shared CPUs, lost
// up to 4-5x over tcp:// at 1 MiB and 4 MiB and first won clearly at
// 16 MiB (2x with 16 parties over tcp://, within 20% otherwise).
#define TW__COLL_AG_LARGE ((uint64_t)1 << 20)
#define TW__COLL_BC_LARGE ((uint64_t)16 << 20)
// The rings' pieces: small enough that a step's sending and receiving
// overlap, large enough that the per-message cost stays small.
#define TW__COLL_RING_CHUNK ((uint64_t)256 << 10)
// A broadcast tree message carries its data after the header in one
// message up to this size (one copy); larger data follows in pieces sent
// from where it lies.
#define TW__COLL_BC_INLINE ((uint64_t)64 << 10)

enum { TW__COLL_AUTO, TW__COLL_SMALL, TW__COLL_LARGE };

// TAGWIRE_COLL_FORCE, read at each call: "small" takes Bruck's allgather
// and the binomial broadcast at every size, "large" the ring allgather and
// scatter + ring broadcast at every size (n >= 2), anything else the
// choice by size.  For tests and measurements only; every party of a
// broadcast follows its root, and of an allgather each block's owner.
int tw__coll_force(void);

enum {
	TW__COLL_BARRIER,
	TW__COLL_BCAST,
	TW__COLL_GATHER,
	TW__COLL_SCATTER,
	TW__COLL_ALLGATHER
};

// The algorithm collective `coll` takes on n parties when every
// contribution (broadcast: the root's data) is len bytes, under the
// current TAGWIRE_COLL_FORCE.
const char *tw__coll_algo(int coll, size_t n, uint64_t len);

#endif // TW_LINK_COLL_H
