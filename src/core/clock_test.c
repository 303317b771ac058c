// Deadlines (clock.h): fixed ones, lazy ones and forever.

#include "core/clock.h"
#include "testutil.h"

static void t_fixed(void **state)
{
	(void)state;
	assert_true(tw__deadline_ms(-1) == TW_FOREVER);
	assert_true(tw__deadline_us(-5) == TW_FOREVER);
	int64_t t0 = tw__now_ns();
	int64_t d = tw__deadline_ms(250);
	int64_t t1 = tw__now_ns();
	assert_true(d >= t0 + 250000000 && d <= t1 + 250000000);
	// A fixed deadline, and forever, pass through tw__deadline_fix.
	assert_true(tw__deadline_fix(d) == d);
	assert_true(tw__deadline_fix(TW_FOREVER) == TW_FOREVER);
	assert_true(tw__deadline_fix(0) == 0);
	// Timeouts too long to count are forever, and no fixed deadline
	// ever looks lazy.
	assert_true(tw__deadline_ms(INT64_MAX) == TW_FOREVER);
	assert_true(
	    tw__deadline_ms(TW__TIMEOUT_NS_MAX / 1000000) == TW_FOREVER);
	int64_t longest = tw__deadline_ms(TW__TIMEOUT_NS_MAX / 1000000 - 1);
	assert_true(longest != TW_FOREVER);
	assert_false(longest & TW__DEADLINE_LAZY);
	assert_true(tw__deadline_fix(longest) == longest);
	assert_true(tw__deadline_us(TW__TIMEOUT_NS_MAX / 1000) == TW_FOREVER);
	assert_false(tw__deadline_us(TW__TIMEOUT_NS_MAX / 1000 - 1)
	    & TW__DEADLINE_LAZY);
}

static void t_lazy(void **state)
{
	(void)state;
	assert_true(tw__deadline_lazy_ms(-1) == TW_FOREVER);
	assert_true(tw__deadline_lazy_ms(INT64_MAX) == TW_FOREVER);
	assert_true(
	    tw__deadline_lazy_ms(TW__TIMEOUT_NS_MAX / 1000000) == TW_FOREVER);
	// Unfixed, it lies beyond any reading of the clock: code that
	// compares it with the clock sees time left.
	int64_t lazy = tw__deadline_lazy_ms(0);
	assert_true(lazy > tw__now_ns());
	assert_true(lazy != TW_FOREVER);
	// Fixing counts the timeout from now, once.
	lazy = tw__deadline_lazy_ms(250);
	int64_t t0 = tw__now_ns();
	int64_t d = tw__deadline_fix(lazy);
	int64_t t1 = tw__now_ns();
	assert_true(d >= t0 + 250000000 && d <= t1 + 250000000);
	assert_true(tw__deadline_fix(d) == d);
	// The longest lazy timeout still fixes to a deadline in range.
	lazy = tw__deadline_lazy_ms(TW__TIMEOUT_NS_MAX / 1000000 - 1);
	assert_true(lazy != TW_FOREVER);
	d = tw__deadline_fix(lazy);
	assert_true(d > tw__now_ns() && d != TW_FOREVER);
	assert_false(d & TW__DEADLINE_LAZY);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_fixed),
		cmocka_unit_test(t_lazy),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
