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
// large algorithms won 2-4x from 256 KiB; at 8 and 16, where the parties
// outnumber the CPUs and each of the ring's n-1 steps waits for the
// scheduler, the ring allgather lost up to 3x at 256 KiB, was even at
// 1 MiB and won 2-2.6x at 16 MiB, and scatter + ring was within the noise
// of the tree from 1 MiB on.  Below 1 MiB the extra steps cost more than
// the shared load saves.
#define TW__COLL_AG_LARGE ((uint64_t)1 << 20)
#define TW__COLL_BC_LARGE ((uint64_t)1 << 20)
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
