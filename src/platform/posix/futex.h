// Waiting on words of memory that two processes share: a futex wait and wake
// on 32-bit words, a CPU pause hint for spin loops, and a liveness test for
// the process on the other side.
//
// The futex calls never use FUTEX_PRIVATE_FLAG: the words live in shared
// mappings, and a private futex is keyed by the virtual address of one
// process, so a wake from the other process would never find the sleeper.

#ifndef TW_PLATFORM_POSIX_FUTEX_H
#define TW_PLATFORM_POSIX_FUTEX_H

#include <stdint.h>

// Sleeps while *word == expected, for at most timeout_ns nanoseconds (> 0).
// Returns 0 when woken, when *word no longer held `expected` on entry, or
// when a signal interrupted the sleep; ETIMEDOUT when the time ran out.
// Callers re-check their condition after every return, so a spurious 0 is
// harmless.  Where futexes are missing this sleeps for a short while.
int tw__futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns);

// Sleeps while every words[i] == expected[i] (n <= TW_FUTEX_WAITV_MAX),
// until the absolute CLOCK_MONOTONIC time deadline_ns.  Returns 0 when
// woken, when a word differed on entry or on a signal; ETIMEDOUT once the
// deadline passed.  Kernels before 5.16 lack futex_waitv: then this naps
// briefly and returns 0, like tw__futex_wait's fallback.
#define TW_FUTEX_WAITV_MAX 128
int tw__futex_waitv(uint32_t *const *words, const uint32_t *expected,
    unsigned n, int64_t deadline_ns);

// Wakes up to `n` threads sleeping on `word`, in any process.
void tw__futex_wake(uint32_t *word, int n);

// Whether the process `pid` may still be running.  0 and values that are
// not a valid pid mean "unknown" and count as alive, as does a process we
// cannot inspect; a zombie (dead but not yet reaped) counts as dead.
int tw__proc_alive(uint32_t pid);

// Tells the CPU that this is a spin-wait loop: it saves power and lets a
// sibling hyper-thread, which may be the very peer we wait for, run.
static inline void tw__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

#endif // TW_PLATFORM_POSIX_FUTEX_H
