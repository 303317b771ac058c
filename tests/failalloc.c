#include <stdbool.h>
#include <stddef.h>

#include "failalloc.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);

static int fail_left = -1; // allocations still allowed; -1 = no limit

static bool fail_now(void)
{
	int left = __atomic_load_n(&fail_left, __ATOMIC_RELAXED);
	if (left < 0)
		return false;
	if (left == 0)
		return true;
	__atomic_store_n(&fail_left, left - 1, __ATOMIC_RELAXED);
	return false;
}

void *__wrap_malloc(size_t n)
{
	return fail_now() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
	return fail_now() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
	return fail_now() ? NULL : __real_realloc(p, n);
}

void failalloc_after(int n)
{
	__atomic_store_n(&fail_left, n, __ATOMIC_RELAXED);
}

void failalloc_never(void)
{
	__atomic_store_n(&fail_left, -1, __ATOMIC_RELAXED);
}
