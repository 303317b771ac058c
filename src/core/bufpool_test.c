// The pool of large message buffers: what it keeps, what it hands out
// again, its bounds, and many threads at once.

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/bufpool.h"
#include "testutil.h"

static void held(size_t want_n, size_t *bytes)
{
	size_t n, b;
	tw__pool_held(&n, &b);
	assert_int_equal(n, want_n);
	if (bytes != NULL)
		*bytes = b;
}

static void t_small_not_kept(void **state)
{
	tw__pool_drain();
	void *p = tw__pool_alloc(100);
	assert_non_null(p);
	tw__pool_free(p);
	held(0, NULL);
	tw__pool_free(NULL); // like free(NULL)
	held(0, NULL);
}

static void t_reuse(void **state)
{
	tw__pool_drain();
	size_t n = (size_t)1 << 20;
	unsigned char *p = tw__pool_alloc(n);
	assert_non_null(p);
	memset(p, 0xab, n);
	tw__pool_free(p);
	size_t bytes;
	held(1, &bytes);
	assert_true(bytes >= n);
	// Half the size or more takes it; smaller would waste it.
	unsigned char *q = tw__pool_alloc(n / 4);
	held(1, NULL);
	assert_true(q != p);
	free(q);
	unsigned char *r = tw__pool_alloc(n - 1000);
	assert_ptr_equal(r, p);
	held(0, NULL);
	tw__pool_free(r);
	// A larger request than any buffer kept is not served from them.
	unsigned char *s = tw__pool_alloc(2 * n);
	assert_true(s != p);
	held(1, NULL);
	free(s);
	tw__pool_drain();
}

static void t_bounds(void **state)
{
	tw__pool_drain();
	void *p[TW_POOL_SLOTS + 2];
	for (size_t i = 0; i < TW_POOL_SLOTS + 2; i++)
		assert_non_null(p[i] = malloc(TW_POOL_MIN));
	for (size_t i = 0; i < TW_POOL_SLOTS + 2; i++)
		tw__pool_free(p[i]);
	held(TW_POOL_SLOTS, NULL);
	tw__pool_drain();
	// By bytes: three buffers of 40% of the bound fit twice.
	size_t big = TW_POOL_BYTES / 10 * 4;
	for (int i = 0; i < 3; i++)
		assert_non_null(p[i] = malloc(big));
	for (int i = 0; i < 3; i++)
		tw__pool_free(p[i]);
	size_t bytes;
	held(2, &bytes);
	assert_true(bytes <= TW_POOL_BYTES);
	tw__pool_drain();
}

static void *churn(void *arg)
{
	uintptr_t seed = (uintptr_t)arg;
	for (int i = 0; i < 2000; i++) {
		size_t n = TW_POOL_MIN << (seed + (uintptr_t)i) % 4;
		unsigned char *p = tw__pool_alloc(n);
		if (p == NULL)
			return (void *)1;
		// Each holder owns its buffer alone: a buffer handed out
		// twice would show as a mismatch here.
		memset(p, (int)seed, n);
		for (size_t k = 0; k < n; k += 4096)
			if (p[k] != (unsigned char)seed)
				return (void *)1;
		tw__pool_free(p);
	}
	return NULL;
}

static void t_threads(void **state)
{
	pthread_t th[4];
	for (uintptr_t i = 0; i < 4; i++)
		assert_int_equal(
		    pthread_create(&th[i], NULL, churn, (void *)i), 0);
	for (int i = 0; i < 4; i++) {
		void *rv;
		assert_int_equal(pthread_join(th[i], &rv), 0);
		assert_null(rv);
	}
	size_t n, bytes;
	tw__pool_held(&n, &bytes);
	assert_true(n <= TW_POOL_SLOTS && bytes <= TW_POOL_BYTES);
	tw__pool_drain();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_small_not_kept),
		cmocka_unit_test(t_reuse),
		cmocka_unit_test(t_bounds),
		cmocka_unit_test(t_threads),
	};
	return cmocka_run_group_tests_name("bufpool", tests, NULL, NULL);
}
