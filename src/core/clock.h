// Monotonic time and deadlines.  Every blocking call in the library turns
// its timeout into an absolute deadline once, so that spurious wake-ups and
// retries never stretch the total wait.

#ifndef TW_CORE_CLOCK_H
#define TW_CORE_CLOCK_H

#include <stdint.h>
#include <time.h>

// Nanoseconds on CLOCK_MONOTONIC.
static inline int64_t tw__now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#define TW_FOREVER INT64_MAX

// Timeouts of 2^61 ns (73 years) or more are forever, so that a deadline
// never reaches TW__DEADLINE_LAZY.
#define TW__TIMEOUT_NS_MAX (INT64_C(1) << 61)

// The deadline of a timeout in microseconds: negative = forever.
static inline int64_t tw__deadline_us(int64_t timeout_us)
{
	if (timeout_us < 0 || timeout_us >= TW__TIMEOUT_NS_MAX / 1000)
		return TW_FOREVER;
	return tw__now_ns() + timeout_us * 1000;
}

// A deadline not fixed yet: the timeout, counted from the first time
// something waits for it (tw__deadline_fix).  Most sends and many
// receives never wait, and reading the clock costs about a tenth of a
// small message's trip through shared memory.  The encoding lies above
// any reading of the clock, so that code which compares such a deadline
// with the clock before fixing it finds time left, never a timeout.
// Only code that says so takes one (tw__chan_xops.lazy_deadline).
#define TW__DEADLINE_LAZY (INT64_C(1) << 62)

static inline int64_t tw__deadline_lazy_ms(int64_t timeout_ms)
{
	if (timeout_ms < 0 || timeout_ms >= TW__TIMEOUT_NS_MAX / 1000000)
		return TW_FOREVER;
	return TW__DEADLINE_LAZY | timeout_ms * 1000000;
}

// The deadline itself: a lazy one counted from now, any other unchanged.
static inline int64_t tw__deadline_fix(int64_t deadline)
{
	if (deadline == TW_FOREVER || !(deadline & TW__DEADLINE_LAZY))
		return deadline;
	return tw__now_ns() + (deadline & ~TW__DEADLINE_LAZY);
}

// The deadline of a timeout in milliseconds: -1 (any negative) = forever.
static inline int64_t tw__deadline_ms(int64_t timeout_ms)
{
	return tw__deadline_fix(tw__deadline_lazy_ms(timeout_ms));
}

// Milliseconds left until `deadline` (never negative; -1 = forever).
static inline int64_t tw__ms_left(int64_t deadline)
{
	if (deadline == TW_FOREVER)
		return -1;
	int64_t left = deadline - tw__now_ns();
	return left <= 0 ? 0 : (left + 999999) / 1000000;
}

// Fills `ts` with `deadline` as a CLOCK_MONOTONIC absolute time for
// pthread_cond_timedwait on a condition variable made with
// tw__cond_init_monotonic.
static inline void tw__deadline_ts(int64_t deadline, struct timespec *ts)
{
	ts->tv_sec = (time_t)(deadline / 1000000000);
	ts->tv_nsec = (long)(deadline % 1000000000);
}

#endif // TW_CORE_CLOCK_H
