// Counters that many threads add to and anyone may read, exactly, without
// an atomic read-modify-write per addition.
//
// A link counts every message it sends and receives.  With one atomic
// add per count, the receive of a small message over shm:// spent about a
// tenth of its time there: a locked instruction waits until the stores
// before it (to the ring, which the peer's CPU reads) have left this CPU.
// Here each thread adds to a shard of its own, with a plain load and
// store, since it is the shard's only writer; a read sums the shards.
//
// A thread finds its shard through a small cache of its own (by the set's
// serial number, unique for the life of the process), and otherwise by
// walking the set's list of shards for the one it owns, or adds one.  A
// shard stays with its set until tw__counters_fini; a thread that ends
// leaves its shard to a later thread that has the same thread-local
// address, so that a set gains at most one shard per live thread.  When a
// shard cannot be allocated, the addition goes to the set's own atomic
// counters instead: nothing is lost.

#ifndef TW_CORE_COUNTERS_H
#define TW_CORE_COUNTERS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define TW_COUNTERS_N 4

typedef struct tw__cshard tw__cshard;

typedef struct tw__counters {
	_Atomic(tw__cshard *) shards;
	uint64_t serial; // 0: not initialised
	_Atomic uint64_t spill[TW_COUNTERS_N]; // when a shard cannot be had
} tw__counters;

// Prepares an empty set.  Not thread-safe on `c`.
void tw__counters_init(tw__counters *c);

// Frees the shards.  Nobody may add to or read `c` meanwhile or after.
void tw__counters_fini(tw__counters *c);

// Adds a to counter i and b to counter j (i != j, both below
// TW_COUNTERS_N).  Thread-safe; never fails, never blocks.
void tw__counters_add2(
    tw__counters *c, unsigned i, uint64_t a, unsigned j, uint64_t b);

// The totals: every addition that happened before the call (in the sense
// of the C memory model) is in them.  Thread-safe.
void tw__counters_sum(const tw__counters *c, uint64_t out[TW_COUNTERS_N]);

// How many shards the set has (for tests).
size_t tw__counters_shards(const tw__counters *c);

#endif // TW_CORE_COUNTERS_H
