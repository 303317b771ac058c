// Unit tests of the status codes and owned buffers (status.c).
//
// The expected texts and names are written out here rather than taken from
// TW_STATUS_MAP, so that a change to the one list that breaks the contract
// (the codes documented in include/tagwire/status.h) shows up as a red
// test instead of silently agreeing with itself.

#include <limits.h>
#include <string.h>

#include "core/bufpool.h"
#include "testutil.h"

typedef struct status_case {
	int code;
	int value; // as include/tagwire/status.h documents it
	const char *name;
} status_case;

static const status_case all_codes[] = {
	{ TW_OK, 0, "TW_OK" },
	{ TW_EINVAL, -1, "TW_EINVAL" },
	{ TW_ETIMEDOUT, -2, "TW_ETIMEDOUT" },
	{ TW_ECLOSED, -3, "TW_ECLOSED" },
	{ TW_EPEER, -4, "TW_EPEER" },
	{ TW_ETOOBIG, -5, "TW_ETOOBIG" },
	{ TW_ENOMEM, -6, "TW_ENOMEM" },
	{ TW_EAGAIN, -7, "TW_EAGAIN" },
	{ TW_EAUTH, -8, "TW_EAUTH" },
	{ TW_EPROTO, -9, "TW_EPROTO" },
	{ TW_ESYS, -10, "TW_ESYS" },
	{ TW_ETRUNC, -11, "TW_ETRUNC" },
	{ TW_ENOTSUP, -12, "TW_ENOTSUP" },
};

#define N_CODES (sizeof(all_codes) / sizeof(all_codes[0]))

// Codes that no version of the contract defines.  INT_MIN and INT_MAX catch
// a lookup table indexed by -status without a bounds check.
static const int unknown_codes[]
    = { 1, 2, 42, -13, -14, -100, -1000, INT_MIN, INT_MIN + 1, INT_MAX };

#define N_UNKNOWN (sizeof(unknown_codes) / sizeof(unknown_codes[0]))

static void test_values(void **state)
{
	(void)state;
	// Other programs are compiled against these numbers.
	for (size_t i = 0; i < N_CODES; i++)
		assert_int_equal(all_codes[i].code, all_codes[i].value);
}

static void test_strerror_known(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_CODES; i++) {
		const char *s = tw_strerror(all_codes[i].code);
		assert_non_null(s);
		assert_true(strlen(s) > 0);
		// A known code must not fall through to the unknown text.
		assert_string_not_equal(s, "unknown status");
		// Every code has its own description; two equal texts would
		// make a log line ambiguous.
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(
			    s, tw_strerror(all_codes[j].code));
	}
	assert_string_equal(tw_strerror(TW_OK), "success");
	// The texts are constants: two calls return the same storage.
	assert_ptr_equal(tw_strerror(TW_EPEER), tw_strerror(TW_EPEER));
}

static void test_strerror_unknown(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_UNKNOWN; i++) {
		const char *s = tw_strerror(unknown_codes[i]);
		assert_non_null(s);
		assert_string_equal(s, "unknown status");
	}
}

static void test_err_name(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_CODES; i++)
		assert_string_equal(
		    tw_err_name(all_codes[i].code), all_codes[i].name);
	for (size_t i = 0; i < N_UNKNOWN; i++) {
		const char *s = tw_err_name(unknown_codes[i]);
		assert_non_null(s);
		assert_string_equal(s, "TW_E?");
	}
}

static void test_buf_free(void **state)
{
	(void)state;
	// NULL-safe.
	tw_buf_free(NULL);

	tw_buf b = { malloc(32), 32 };
	assert_non_null(b.data);
	memset(b.data, 0x5a, 32);
	tw_buf_free(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);

	// Freeing an already freed (reset) buffer again is a no-op; under
	// ASan a missing reset would show up as a double free here.
	tw_buf_free(&b);
	assert_null(b.data);
	assert_int_equal(b.len, 0);

	// An empty message is {NULL, 0}; a stale length with NULL data is
	// reset too.
	tw_buf e = { NULL, 7 };
	tw_buf_free(&e);
	assert_null(e.data);
	assert_int_equal(e.len, 0);
}

static void test_buf_pool_drain(void **state)
{
	(void)state;
	size_t n, bytes;
	tw_buf_pool_drain();
	tw__pool_held(&n, &bytes);
	assert_int_equal(n, 0);
	assert_int_equal(bytes, 0);

	// A large buffer freed by tw_buf_free waits in the pool...
	tw_buf b = { malloc(TW_POOL_MIN), TW_POOL_MIN };
	assert_non_null(b.data);
	tw_buf_free(&b);
	tw__pool_held(&n, &bytes);
	assert_int_equal(n, 1);
	assert_true(bytes >= TW_POOL_MIN);

	// ...until the drain gives it back (ASan/LSan would see a buffer
	// dropped instead of freed), and the pool fills again afterwards.
	tw_buf_pool_drain();
	tw__pool_held(&n, &bytes);
	assert_int_equal(n, 0);
	assert_int_equal(bytes, 0);
	b.data = malloc(TW_POOL_MIN);
	assert_non_null(b.data);
	tw_buf_free(&b);
	tw__pool_held(&n, &bytes);
	assert_int_equal(n, 1);
	tw_buf_pool_drain();
	// Draining an empty pool does nothing.
	tw_buf_pool_drain();
	tw__pool_held(&n, &bytes);
	assert_int_equal(n, 0);
}

static void test_version(void **state)
{
	(void)state;
	char want[32];
	snprintf(want, sizeof(want), "%d.%d.%d", TW_VERSION_MAJOR,
	    TW_VERSION_MINOR, TW_VERSION_PATCH);
	assert_non_null(tw_version());
	// The string compiled into the library matches the header the
	// caller was compiled against.
	assert_string_equal(tw_version(), want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_strerror_known),
		cmocka_unit_test(test_strerror_unknown),
		cmocka_unit_test(test_err_name),
		cmocka_unit_test(test_buf_free),
		cmocka_unit_test(test_buf_pool_drain),
		cmocka_unit_test(test_version),
	};
	return cmocka_run_group_tests_name("status", tests, NULL, NULL);
}
