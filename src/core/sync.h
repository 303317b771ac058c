// Thin wrappers over pthread primitives that the library uses everywhere.

#ifndef TW_CORE_SYNC_H
#define TW_CORE_SYNC_H

#include <pthread.h>
#include <stdint.h>

#include "core/clock.h"

// A condition variable that waits on CLOCK_MONOTONIC, so that a change of
// the wall clock never shortens or stretches a timeout.
int tw__cond_init(pthread_cond_t *cv);

// Waits on `cv` until signalled or `deadline` (tw__now_ns scale) passes.
// Returns 0, or ETIMEDOUT once the deadline has passed.
int tw__cond_wait_until(
    pthread_cond_t *cv, pthread_mutex_t *mtx, int64_t deadline);

#endif // TW_CORE_SYNC_H
