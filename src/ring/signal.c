// 64-bit signals in shared memory: notify stores a value, wait returns once
// the value has reached a threshold.
//
// The signal is a bare uint64_t that the caller places anywhere (in a
// segment shared with a device or another process), so there is no room
// next to it for a sleeper count: notify always makes one futex wake call
// after its store.  Futexes are 32 bits wide, so waiters sleep on the low
// half of the value.  A notify that leaves the low half unchanged (a jump
// by a multiple of 2^32) can therefore slip in between a waiter's load and
// its sleep without waking it; sleeping in bounded slices limits the damage
// to one slice, and every other notify wakes the sleeper at once because
// the kernel compares the word and queues the sleeper atomically with
// respect to the wake.

#include <limits.h>

#include <tagwire/ring.h>

#include "core/clock.h"
#include "platform/posix/futex.h"

// How long a waiter spins before it sleeps, and its longest single sleep.
#define SIGNAL_SPIN_NS 4000
#define SIGNAL_SLICE_NS 20000000

static uint32_t *signal_low_word(uint64_t *sig)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	return (uint32_t *)sig + 1;
#else
	return (uint32_t *)sig;
#endif
}

static int signal_ok(const uint64_t *sig)
{
	return sig != NULL && (uintptr_t)sig % sizeof(uint64_t) == 0;
}

int tw_signal_notify(uint64_t *sig, uint64_t value)
{
	if (!signal_ok(sig))
		return TW_EINVAL;
	// Release: what the notifier wrote before is visible to a waiter that
	// sees the value.  The store precedes the wake call, and the kernel
	// orders the wake against a waiter's compare of the word.
	__atomic_store_n(sig, value, __ATOMIC_RELEASE);
	tw__futex_wake(signal_low_word(sig), INT_MAX);
	return TW_OK;
}

int tw_signal_wait(uint64_t *sig, uint64_t at_least, int64_t timeout_us)
{
	if (!signal_ok(sig))
		return TW_EINVAL;
	// Acquire pairs with the notifier's release.
	uint64_t v = __atomic_load_n(sig, __ATOMIC_ACQUIRE);
	if (v >= at_least)
		return TW_OK;
	if (timeout_us == 0)
		return TW_ETIMEDOUT;
	int64_t now = tw__now_ns();
	int64_t deadline = tw__deadline_us(timeout_us);
	int64_t spin_end = now + SIGNAL_SPIN_NS;
	while (now < spin_end && now < deadline) {
		tw__cpu_relax();
		if (__atomic_load_n(sig, __ATOMIC_ACQUIRE) >= at_least)
			return TW_OK;
		now = tw__now_ns();
	}
	for (;;) {
		v = __atomic_load_n(sig, __ATOMIC_ACQUIRE);
		if (v >= at_least)
			return TW_OK;
		now = tw__now_ns();
		if (now >= deadline)
			return TW_ETIMEDOUT;
		int64_t nap = SIGNAL_SLICE_NS;
		if (deadline != TW_FOREVER && deadline - now < nap)
			nap = deadline - now;
		tw__futex_wait(signal_low_word(sig), (uint32_t)v, nap);
	}
}
