// Shared test helpers on top of cmocka.
//
// TW_PASS(expr) asserts that a tagwire call returns TW_OK and
// TW_FAIL(expr, code) that it returns `code`; both print the status names
// on failure so that a red test says what came back.

#ifndef TW_TESTUTIL_H
#define TW_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmocka.h>
#include <tagwire/tagwire.h>

#define TW_PASS(expr)                                                         \
	do {                                                                  \
		int tw_rv_ = (expr);                                          \
		if (tw_rv_ != TW_OK)                                          \
			fail_msg("%s: got %s (%s), want TW_OK", #expr,        \
			    tw_err_name(tw_rv_), tw_strerror(tw_rv_));        \
	} while (0)

#define TW_FAIL(expr, want)                                                   \
	do {                                                                  \
		int tw_rv_ = (expr);                                          \
		if (tw_rv_ != (want))                                         \
			fail_msg("%s: got %s, want %s", #expr,                \
			    tw_err_name(tw_rv_), tw_err_name(want));          \
	} while (0)

// Skips the whole test program (ctest SKIP_RETURN_CODE 77) with a reason.
#define TW_SKIP_ALL(...)                                                      \
	do {                                                                  \
		fprintf(stderr, "skipped: ");                                 \
		fprintf(stderr, __VA_ARGS__);                                 \
		fprintf(stderr, "\n");                                        \
		exit(77);                                                     \
	} while (0)

// Scales a test timeout by TW_TEST_TIMEOUT_MULTIPLIER (sanitizer builds).
static inline int64_t tw_test_scale_ms(int64_t ms)
{
	const char *m = getenv("TW_TEST_TIMEOUT_MULTIPLIER");
	long f = m ? strtol(m, NULL, 10) : 1;
	return ms * (f > 0 ? f : 1);
}

// Restricts the cmocka group `tests` to the one test called prefix+name.
// Returns -1, with a message, when the group has no such test, so that a
// mistyped ctest entry fails instead of passing on zero tests run.
static inline int tw_test_select(const struct CMUnitTest *tests, size_t count,
    const char *prefix, const char *name)
{
	// cmocka keeps the pointer, not a copy: the name must outlive main's
	// call to the runner.
	static char full[128];
	snprintf(full, sizeof(full), "%s%s", prefix, name);
	for (size_t i = 0; i < count; i++) {
		if (strcmp(tests[i].name, full) == 0) {
			cmocka_set_test_filter(full);
			return 0;
		}
	}
	fprintf(stderr, "no test named '%s'\n", name);
	return -1;
}

// Lowers the process's descriptor limit to the lowest free descriptor plus
// `spare` (0 or 1): after it, exactly `spare` more descriptors can be
// opened.  The old limit goes to *old, for setrlimit to put back.
static inline void tw_test_fd_squeeze(int spare, struct rlimit *old)
{
	assert_int_equal(getrlimit(RLIMIT_NOFILE, old), 0);
	int lowest = dup(0);
	assert_true(lowest >= 0);
	close(lowest);
	struct rlimit low = *old;
	low.rlim_cur = (rlim_t)lowest + (rlim_t)spare;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
}

#endif // TW_TESTUTIL_H
