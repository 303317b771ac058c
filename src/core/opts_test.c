// Unit tests of the option table (opts.c).
//
// The table is the one source for the setter, the CLI and the README, so
// it is checked against the ranges and defaults that include/tagwire/link.h
// documents, written out again here: a change to the table that breaks the
// documented contract turns this test red.

#include <string.h>

#include "core/opts.h"
#include "testutil.h"

#define KiB ((int64_t)1024)
#define MiB (1024 * KiB)
#define GiB (1024 * MiB)

typedef struct documented {
	int opt;
	const char *name;
	int64_t def, min, max;
} documented;

// From the comments of the option enum in link.h.  RECV_TIMEOUT_MS has no
// documented maximum; the table's is checked to be at least a day.
static const documented docs[] = {
	{ TW_OPT_RECV_TIMEOUT_MS, "RECV_TIMEOUT_MS", 60000, -1, -1 },
	{ TW_OPT_CONNECT_TIMEOUT_MS, "CONNECT_TIMEOUT_MS", 30000, 1,
	    (int64_t)1 << 31 },
	{ TW_OPT_THROTTLE_WINDOW, "THROTTLE_WINDOW", 0, 0, (int64_t)1 << 31 },
	{ TW_OPT_CHUNK_SIZE, "CHUNK_SIZE", 1 * MiB, 4 * KiB, 1 * GiB },
	{ TW_OPT_STRIPES, "STRIPES", 1, 1, 64 },
	{ TW_OPT_MAX_MSG_SIZE, "MAX_MSG_SIZE", 1 * GiB, 0, (int64_t)1 << 40 },
	{ TW_OPT_RECV_BUFFER, "RECV_BUFFER", 64 * MiB, 4 * KiB,
	    (int64_t)1 << 40 },
	{ TW_OPT_HEARTBEAT_MS, "HEARTBEAT_MS", 1000, 0, 3600000 },
	{ TW_OPT_SHM_LOCAL, "SHM_LOCAL", 0, 0, 1 },
	{ TW_OPT_WINDOW, "WINDOW", 16, 1, 1024 },
};

#define N_DOCS (sizeof(docs) / sizeof(docs[0]))

static void test_table_complete(void **state)
{
	(void)state;
	// Every option of the enum is in the table and documented here.
	assert_int_equal(TW_OPT_COUNT, N_DOCS);
	for (size_t i = 0; i < N_DOCS; i++) {
		const tw__opt_info *o = &tw__opts[docs[i].opt];
		assert_non_null(o->name);
		assert_string_equal(o->name, docs[i].name);
		assert_non_null(o->help);
		assert_true(strlen(o->help) > 0);
		// Names are unique, so that --help-config is unambiguous.
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(
			    o->name, tw__opts[docs[j].opt].name);
	}
}

static void test_defaults(void **state)
{
	(void)state;
	for (int opt = 0; opt < TW_OPT_COUNT; opt++) {
		const tw__opt_info *o = &tw__opts[opt];
		// The default is inside the range and passes the checker.
		assert_true(o->min <= o->def && o->def <= o->max);
		TW_PASS(tw__opt_check(opt, o->def));
	}
	for (size_t i = 0; i < N_DOCS; i++)
		if (tw__opts[docs[i].opt].def != docs[i].def)
			fail_msg("%s: default %lld, documented %lld",
			    docs[i].name, (long long)tw__opts[docs[i].opt].def,
			    (long long)docs[i].def);
}

static void test_ranges(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_DOCS; i++) {
		int opt = docs[i].opt;
		const tw__opt_info *o = &tw__opts[opt];
		assert_int_equal(o->min, docs[i].min);
		if (docs[i].max >= 0)
			assert_int_equal(o->max, docs[i].max);
		else
			assert_true(o->max >= INT64_C(86400000));
		TW_PASS(tw__opt_check(opt, o->min));
		TW_PASS(tw__opt_check(opt, o->max));
		TW_FAIL(tw__opt_check(opt, o->min - 1), TW_EINVAL);
		TW_FAIL(tw__opt_check(opt, o->max + 1), TW_EINVAL);
		TW_FAIL(tw__opt_check(opt, INT64_MIN), TW_EINVAL);
		TW_FAIL(tw__opt_check(opt, INT64_MAX), TW_EINVAL);
	}
}

static void test_heartbeat(void **state)
{
	(void)state;
	// 0 switches heartbeats off; anything between off and 10 ms would
	// flood the connection and is refused.
	TW_PASS(tw__opt_check(TW_OPT_HEARTBEAT_MS, 0));
	for (int64_t v = 1; v <= 9; v++)
		TW_FAIL(tw__opt_check(TW_OPT_HEARTBEAT_MS, v), TW_EINVAL);
	TW_PASS(tw__opt_check(TW_OPT_HEARTBEAT_MS, 10));
	TW_PASS(tw__opt_check(TW_OPT_HEARTBEAT_MS, 11));
}

static void test_special_values(void **state)
{
	(void)state;
	// -1 = forever and 0 = poll are meaningful receive timeouts.
	TW_PASS(tw__opt_check(TW_OPT_RECV_TIMEOUT_MS, -1));
	TW_PASS(tw__opt_check(TW_OPT_RECV_TIMEOUT_MS, 0));
	TW_FAIL(tw__opt_check(TW_OPT_RECV_TIMEOUT_MS, -2), TW_EINVAL);
	// A connect timeout of 0 would fail every creation at once.
	TW_FAIL(tw__opt_check(TW_OPT_CONNECT_TIMEOUT_MS, 0), TW_EINVAL);
	// Zero-length messages are legal, so a zero maximum is a legal
	// (if odd) setting.
	TW_PASS(tw__opt_check(TW_OPT_MAX_MSG_SIZE, 0));
	TW_FAIL(tw__opt_check(TW_OPT_STRIPES, 0), TW_EINVAL);
	TW_FAIL(tw__opt_check(TW_OPT_SHM_LOCAL, 2), TW_EINVAL);
}

static void test_unknown_options(void **state)
{
	(void)state;
	static const int bad[]
	    = { -1, TW_OPT_COUNT, TW_OPT_COUNT + 1, 99, INT32_MIN, INT32_MAX };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		TW_FAIL(tw__opt_check(bad[i], 0), TW_EINVAL);
		TW_FAIL(tw__opt_check(bad[i], 1), TW_EINVAL);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table_complete),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_ranges),
		cmocka_unit_test(test_heartbeat),
		cmocka_unit_test(test_special_values),
		cmocka_unit_test(test_unknown_options),
	};
	return cmocka_run_group_tests_name("opts", tests, NULL, NULL);
}
