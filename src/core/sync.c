#include <errno.h>

#include "core/sync.h"

int tw__cond_init(pthread_cond_t *cv)
{
	pthread_condattr_t attr;
	int rv = pthread_condattr_init(&attr);
	if (rv != 0)
		return rv;
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	rv = pthread_cond_init(cv, &attr);
	pthread_condattr_destroy(&attr);
	return rv;
}

int tw__cond_wait_until(
    pthread_cond_t *cv, pthread_mutex_t *mtx, int64_t deadline)
{
	if (deadline == TW_FOREVER) {
		pthread_cond_wait(cv, mtx);
		return 0;
	}
	if (tw__now_ns() >= deadline)
		return ETIMEDOUT;
	struct timespec ts;
	tw__deadline_ts(deadline, &ts);
	int rv = pthread_cond_timedwait(cv, mtx, &ts);
	return rv == ETIMEDOUT ? ETIMEDOUT : 0;
}
