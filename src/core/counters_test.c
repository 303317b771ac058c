// Per-thread counter shards: exact totals under concurrent additions, one
// shard per thread however many sets a thread uses, reuse of the shard of
// a thread that ended, and the atomic spill when no shard can be had.

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#include "core/counters.h"
#include "failalloc.h"
#include "testutil.h"

#define THREADS 8
#define ADDS 100000
#define SETS 40 // more than a thread's cache of shards holds

static void t_one_thread(void **state)
{
	(void)state;
	tw__counters c;
	tw__counters_init(&c);
	uint64_t v[TW_COUNTERS_N];
	tw__counters_sum(&c, v);
	for (unsigned i = 0; i < TW_COUNTERS_N; i++)
		assert_int_equal(v[i], 0);
	assert_int_equal(tw__counters_shards(&c), 0);
	for (uint64_t k = 1; k <= 1000; k++)
		tw__counters_add2(&c, 0, 1, 3, k);
	tw__counters_add2(&c, 2, 5, 1, 7);
	tw__counters_sum(&c, v);
	assert_int_equal(v[0], 1000);
	assert_int_equal(v[1], 7);
	assert_int_equal(v[2], 5);
	assert_int_equal(v[3], 1000 * 1001 / 2);
	assert_int_equal(tw__counters_shards(&c), 1);
	tw__counters_fini(&c);
}

typedef struct adder {
	tw__counters *c;
	uint64_t k;
	pthread_barrier_t *go;
} adder;

static void *add_main(void *arg)
{
	adder *a = arg;
	if (a->go != NULL)
		pthread_barrier_wait(a->go);
	for (unsigned n = 0; n < ADDS; n++)
		tw__counters_add2(a->c, 1, 1, 2, a->k);
	return NULL;
}

typedef struct summer {
	tw__counters *c;
	_Atomic int stop;
	unsigned sums;
} summer;

// Sums while the adders run: no total may ever go down.
static void *sum_main(void *arg)
{
	summer *s = arg;
	uint64_t last[TW_COUNTERS_N] = { 0 };
	while (!atomic_load(&s->stop)) {
		uint64_t v[TW_COUNTERS_N];
		tw__counters_sum(s->c, v);
		for (unsigned i = 0; i < TW_COUNTERS_N; i++) {
			if (v[i] < last[i])
				return "a total went down";
			last[i] = v[i];
		}
		s->sums++;
	}
	return NULL;
}

static void t_threads_exact(void **state)
{
	(void)state;
	tw__counters c;
	tw__counters_init(&c);
	pthread_barrier_t go;
	pthread_barrier_init(&go, NULL, THREADS);
	pthread_t th[THREADS], sth;
	adder a[THREADS];
	summer s = { .c = &c };
	assert_int_equal(pthread_create(&sth, NULL, sum_main, &s), 0);
	for (unsigned t = 0; t < THREADS; t++) {
		a[t] = (adder) { &c, t + 1, &go };
		assert_int_equal(
		    pthread_create(&th[t], NULL, add_main, &a[t]), 0);
	}
	for (unsigned t = 0; t < THREADS; t++)
		pthread_join(th[t], NULL);
	atomic_store(&s.stop, 1);
	void *why = NULL;
	pthread_join(sth, &why);
	if (why != NULL)
		fail_msg("%s", (const char *)why);
	uint64_t v[TW_COUNTERS_N];
	tw__counters_sum(&c, v);
	assert_int_equal(v[1], (uint64_t)THREADS * ADDS);
	assert_int_equal(v[2], (uint64_t)ADDS * THREADS * (THREADS + 1) / 2);
	assert_int_equal(v[0] + v[3], 0);
	// All ran at once (the barrier): one shard each, none shared.
	assert_int_equal(tw__counters_shards(&c), THREADS);
	pthread_barrier_destroy(&go);
	tw__counters_fini(&c);
}

static void t_many_sets(void **state)
{
	(void)state;
	static tw__counters c[SETS];
	for (unsigned i = 0; i < SETS; i++)
		tw__counters_init(&c[i]);
	// Round robin over more sets than the cache holds: every addition
	// may miss it, and must find this thread's shard again.
	for (unsigned r = 0; r < 100; r++)
		for (unsigned i = 0; i < SETS; i++)
			tw__counters_add2(&c[i], 0, 1, 1, i);
	for (unsigned i = 0; i < SETS; i++) {
		uint64_t v[TW_COUNTERS_N];
		tw__counters_sum(&c[i], v);
		assert_int_equal(v[0], 100);
		assert_int_equal(v[1], 100 * i);
		assert_int_equal(tw__counters_shards(&c[i]), 1);
		tw__counters_fini(&c[i]);
	}
}

static void t_threads_one_after_another(void **state)
{
	(void)state;
	tw__counters c;
	tw__counters_init(&c);
	for (unsigned t = 0; t < 50; t++) {
		adder a = { &c, 1, NULL };
		pthread_t th;
		assert_int_equal(pthread_create(&th, NULL, add_main, &a), 0);
		pthread_join(th, NULL);
	}
	uint64_t v[TW_COUNTERS_N];
	tw__counters_sum(&c, v);
	assert_int_equal(v[1], 50 * ADDS);
	assert_int_equal(v[2], 50 * ADDS);
	// A thread that has the thread-local address of one that ended
	// takes its shard over; how often that happens is the C library's.
	size_t n = tw__counters_shards(&c);
	printf("50 threads, one after another: %zu shard(s)\n", n);
	assert_true(n >= 1 && n <= 50);
	tw__counters_fini(&c);
}

static void t_no_memory(void **state)
{
	(void)state;
	tw__counters c;
	tw__counters_init(&c);
	failalloc_after(0);
	tw__counters_add2(&c, 0, 1, 1, 10);
	tw__counters_add2(&c, 0, 1, 1, 10);
	failalloc_never();
	assert_int_equal(tw__counters_shards(&c), 0);
	uint64_t v[TW_COUNTERS_N];
	tw__counters_sum(&c, v);
	assert_int_equal(v[0], 2);
	assert_int_equal(v[1], 20);
	// With memory back, the thread gets its shard; the spill stays.
	tw__counters_add2(&c, 0, 1, 1, 10);
	assert_int_equal(tw__counters_shards(&c), 1);
	tw__counters_sum(&c, v);
	assert_int_equal(v[0], 3);
	assert_int_equal(v[1], 30);
	tw__counters_fini(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_one_thread),
		cmocka_unit_test(t_threads_exact),
		cmocka_unit_test(t_many_sets),
		cmocka_unit_test(t_threads_one_after_another),
		cmocka_unit_test(t_no_memory),
	};
	return cmocka_run_group_tests_name("counters", tests, NULL, NULL);
}
