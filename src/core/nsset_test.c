// The namespace set: which keys a namespace holds, and forgetting.

#include "core/nsset.h"
#include "testutil.h"

static void t_holds(void **state)
{
	tw__nsset s;
	tw__nsset_init(&s);
	assert_false(tw__nsset_holds(&s, "a:x"));
	TW_PASS(tw__nsset_add(&s, "a"));
	TW_PASS(tw__nsset_add(&s, "a")); // once only
	assert_int_equal(s.n, 1);
	assert_true(tw__nsset_holds(&s, "a:x"));
	assert_true(tw__nsset_holds(&s, "a@bcast.0:x"));
	assert_true(tw__nsset_holds(&s, "a!ack"));
	assert_true(tw__nsset_holds(&s, "a/child:x"));
	assert_false(tw__nsset_holds(&s, "ab:x"));
	assert_false(tw__nsset_holds(&s, "b:a"));
	tw__nsset_fini(&s);
}

static void t_forget(void **state)
{
	tw__nsset s;
	tw__nsset_init(&s);
	TW_PASS(tw__nsset_add(&s, "r/a"));
	TW_PASS(tw__nsset_add(&s, "r/a/b"));
	TW_PASS(tw__nsset_add(&s, "r/c"));
	// A key of r/a/b is held by r/a and r/a/b: both go.
	tw__nsset_forget_key(&s, "r/a/b:t");
	assert_int_equal(s.n, 1);
	assert_true(tw__nsset_holds(&s, "r/c:t"));
	TW_PASS(tw__nsset_add(&s, "r/a"));
	TW_PASS(tw__nsset_add(&s, "r/a/b"));
	// Forgetting a namespace takes its children, not its siblings.
	tw__nsset_forget_ns(&s, "r/a");
	assert_int_equal(s.n, 1);
	assert_false(tw__nsset_holds(&s, "r/a/b:t"));
	assert_true(tw__nsset_holds(&s, "r/c:t"));
	tw__nsset_forget_ns(&s, "r");
	assert_int_equal(s.n, 0);
	tw__nsset_fini(&s);
}

static void t_remove(void **state)
{
	tw__nsset s;
	tw__nsset_init(&s);
	assert_false(tw__nsset_remove(&s, "r/a"));
	TW_PASS(tw__nsset_add(&s, "r/a"));
	TW_PASS(tw__nsset_add(&s, "r/a/b"));
	TW_PASS(tw__nsset_add(&s, "r/ab"));
	assert_int_equal(tw__nsset_count(&s), 3);
	// Exactly that namespace: its child and its sibling stay.
	assert_true(tw__nsset_remove(&s, "r/a"));
	assert_false(tw__nsset_remove(&s, "r/a"));
	assert_int_equal(tw__nsset_count(&s), 2);
	assert_true(tw__nsset_holds(&s, "r/a/b:t"));
	assert_false(tw__nsset_holds(&s, "r/a:t"));
	assert_true(tw__nsset_holds(&s, "r/ab:t"));
	tw__nsset_fini(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_holds),
		cmocka_unit_test(t_forget),
		cmocka_unit_test(t_remove),
	};
	return cmocka_run_group_tests_name("nsset", tests, NULL, NULL);
}
