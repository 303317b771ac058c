// Reuse of large message buffers (see bufpool.h).  One mutex: the pool is
// touched once per large message, whose copy costs far more than the lock.

#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "core/bufpool.h"

static struct {
	pthread_mutex_t mtx;
	void *buf[TW_POOL_SLOTS];
	size_t cap[TW_POOL_SLOTS];
	size_t n;
	size_t bytes;
} pool = { .mtx = PTHREAD_MUTEX_INITIALIZER };

void *tw__pool_alloc(size_t n)
{
	if (n < TW_POOL_MIN)
		return malloc(n);
	void *p = NULL;
	pthread_mutex_lock(&pool.mtx);
	size_t best = TW_POOL_SLOTS;
	for (size_t i = 0; i < pool.n; i++)
		if (pool.cap[i] >= n && pool.cap[i] / 2 <= n
		    && (best == TW_POOL_SLOTS || pool.cap[i] < pool.cap[best]))
			best = i;
	if (best != TW_POOL_SLOTS) {
		p = pool.buf[best];
		pool.bytes -= pool.cap[best];
		pool.n--;
		pool.buf[best] = pool.buf[pool.n];
		pool.cap[best] = pool.cap[pool.n];
	}
	pthread_mutex_unlock(&pool.mtx);
	return p != NULL ? p : malloc(n);
}

void tw__pool_free(void *p)
{
	if (p == NULL)
		return;
	size_t cap = malloc_usable_size(p);
	if (cap >= TW_POOL_MIN) {
		pthread_mutex_lock(&pool.mtx);
		bool keep = pool.n < TW_POOL_SLOTS
		    && pool.bytes + cap <= TW_POOL_BYTES;
		if (keep) {
			pool.buf[pool.n] = p;
			pool.cap[pool.n] = cap;
			pool.n++;
			pool.bytes += cap;
		}
		pthread_mutex_unlock(&pool.mtx);
		if (keep)
			return;
	}
	free(p);
}

void tw__pool_held(size_t *buffers, size_t *bytes)
{
	pthread_mutex_lock(&pool.mtx);
	*buffers = pool.n;
	*bytes = pool.bytes;
	pthread_mutex_unlock(&pool.mtx);
}

void tw__pool_drain(void)
{
	pthread_mutex_lock(&pool.mtx);
	for (size_t i = 0; i < pool.n; i++)
		free(pool.buf[i]);
	pool.n = 0;
	pool.bytes = 0;
	pthread_mutex_unlock(&pool.mtx);
}

// At exit the pool gives its buffers back, so that leak checkers see
// every allocation freed.
__attribute__((destructor)) static void pool_at_exit(void)
{
	tw__pool_drain();
}
