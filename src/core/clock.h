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

// The deadline of a timeout in milliseconds: -1 (any negative) = forever.
static inline int64_t tw__deadline_ms(int64_t timeout_ms)
{
	if (timeout_ms < 0)
		return TW_FOREVER;
	if (timeout_ms > INT64_MAX / 2000000)
		return TW_FOREVER;
	return tw__now_ns() + timeout_ms * 1000000;
}

// The deadline of a timeout in microseconds: negative = forever.
static inline int64_t tw__deadline_us(int64_t timeout_us)
{
	if (timeout_us < 0 || timeout_us > INT64_MAX / 2000)
		return TW_FOREVER;
	return tw__now_ns() + timeout_us * 1000;
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
