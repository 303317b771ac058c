// Unit tests of tw_desc_from_env (env.c).
//
// The environment is set with setenv/unsetenv in this (single-threaded)
// process; every test starts from all four TAGWIRE_* variables unset.  A
// capturing log handler checks that each rejection names the variable at
// fault, since a launcher's user has nothing else to go on.
//
// Out-of-memory paths are driven by wrapping malloc, calloc and realloc at
// link time (see tests.cmake).

#include <stdbool.h>
#include <string.h>

#include "link/link_int.h"
#include "failalloc.h"
#include "testutil.h"

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

#define CAP_MAX 8

typedef struct capture {
	int n;
	int level[CAP_MAX];
	char msg[CAP_MAX][512];
} capture;

static capture cap;

static void cap_handler(const tw_log_record *rec, void *arg)
{
	(void)arg;
	if (cap.n < CAP_MAX) {
		cap.level[cap.n] = rec->level;
		snprintf(cap.msg[cap.n], sizeof(cap.msg[0]), "%s", rec->msg);
	}
	cap.n++;
}

// Did some captured line at warn or above mention `what`?
static bool logged(const char *what)
{
	for (int i = 0; i < cap.n && i < CAP_MAX; i++)
		if (cap.level[i] <= TW_LOG_WARN
		    && strstr(cap.msg[i], what) != NULL)
			return true;
	return false;
}

static void env_clear(void)
{
	unsetenv("TAGWIRE_PARTIES");
	unsetenv("TAGWIRE_RANK");
	unsetenv("TAGWIRE_SECRET");
	unsetenv("TAGWIRE_LINK_ID");
	unsetenv("TAGWIRE_TLS_CERT");
	unsetenv("TAGWIRE_TLS_KEY");
	unsetenv("TAGWIRE_TLS_CA");
	unsetenv("TAGWIRE_SIZE");
	unsetenv("TAGWIRE_ROOT");
	unsetenv("TAGWIRE_BIND");
	unsetenv("MASTER_ADDR");
	unsetenv("MASTER_PORT");
	static const char *const launchers[] = { "OMPI_COMM_WORLD_RANK",
		"OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "SLURM_PROCID",
		"SLURM_NTASKS", "RANK", "WORLD_SIZE" };
	for (size_t i = 0; i < sizeof(launchers) / sizeof(launchers[0]); i++)
		unsetenv(launchers[i]);
}

static int setup(void **state)
{
	(void)state;
	env_clear();
	memset(&cap, 0, sizeof(cap));
	// The default level: a launcher's user sees these lines without
	// turning on debugging.
	tw_log_set_level(TW_LOG_WARN);
	return tw_log_set_handler(cap_handler, NULL);
}

static int teardown(void **state)
{
	(void)state;
	failalloc_never();
	env_clear();
	return tw_log_set_handler(NULL, NULL);
}

static void env_set(const char *name, const char *value)
{
	assert_int_equal(setenv(name, value, 1), 0);
}

// Runs tw_desc_from_env expecting success; returns the description.
static tw_desc *from_env_ok(size_t *rank)
{
	tw_desc *d = NULL;
	*rank = 777;
	TW_PASS(tw_desc_from_env(&d, rank));
	assert_non_null(d);
	return d;
}

static void expect_party(
    const tw_desc *d, size_t rank, const char *id, const char *addr)
{
	assert_true(rank < tw_desc_size(d));
	const tw__party *p = &tw__desc_parties(d)[rank];
	assert_string_equal(p->id, id);
	assert_string_equal(p->addr, addr);
}

// Expects TW_EINVAL, outputs untouched, and a log line naming `var`.
static void expect_einval(const char *var, const char *why)
{
	tw_desc *d = (tw_desc *)0x1;
	size_t rank = 4242;
	cap.n = 0;
	int status = tw_desc_from_env(&d, &rank);
	if (status != TW_EINVAL)
		fail_msg(
		    "%s: got %s, want TW_EINVAL", why, tw_err_name(status));
	assert_ptr_equal(d, (tw_desc *)0x1);
	assert_int_equal(rank, 4242);
	if (!logged(var))
		fail_msg("%s: no log line names %s (%d lines, last '%s')", why,
		    var, cap.n,
		    cap.n > 0 ? cap.msg[(cap.n - 1) % CAP_MAX] : "");
}

// ---------------------------------------------------------------------------
// Valid environments
// ---------------------------------------------------------------------------

static void test_default_ids(void **state)
{
	(void)state;
	env_set("TAGWIRE_PARTIES", "mem://a,mem://b");
	env_set("TAGWIRE_RANK", "1");
	size_t rank;
	tw_desc *d = from_env_ok(&rank);
	assert_int_equal(rank, 1);
	assert_int_equal(tw_desc_size(d), 2);
	expect_party(d, 0, "p0", "mem://a");
	expect_party(d, 1, "p1", "mem://b");
	assert_string_equal(tw__desc_link_id(d), "root");
	size_t slen = 99;
	tw__desc_secret(d, &slen);
	assert_int_equal(slen, 0);
	tw_desc_free(d);
	// A valid environment is not worth a warning.
	assert_int_equal(cap.n, 0);
}

static void test_named_ids(void **state)
{
	(void)state;
	env_set("TAGWIRE_PARTIES", "x=mem://a,y=mem://b");
	env_set("TAGWIRE_RANK", "0");
	size_t rank;
	tw_desc *d = from_env_ok(&rank);
	assert_int_equal(rank, 0);
	assert_int_equal(tw_desc_size(d), 2);
	expect_party(d, 0, "x", "mem://a");
	expect_party(d, 1, "y", "mem://b");
	tw_desc_free(d);

	// Mixed: a default id is "p" and the item's position.
	env_set("TAGWIRE_PARTIES", "mem://a,y=mem://b,mem://c");
	env_set("TAGWIRE_RANK", "2");
	d = from_env_ok(&rank);
	assert_int_equal(rank, 2);
	assert_int_equal(tw_desc_size(d), 3);
	expect_party(d, 0, "p0", "mem://a");
	expect_party(d, 1, "y", "mem://b");
	expect_party(d, 2, "p2", "mem://c");
	tw_desc_free(d);

	// One party alone is a valid (if lonely) link.
	env_set("TAGWIRE_PARTIES", "solo=mem://s");
	env_set("TAGWIRE_RANK", "0");
	d = from_env_ok(&rank);
	assert_int_equal(tw_desc_size(d), 1);
	expect_party(d, 0, "solo", "mem://s");
	tw_desc_free(d);
}

static void test_link_id(void **state)
{
	(void)state;
	env_set("TAGWIRE_PARTIES", "mem://a,mem://b");
	env_set("TAGWIRE_RANK", "0");
	env_set("TAGWIRE_LINK_ID", "job-7/step.2");
	size_t rank;
	tw_desc *d = from_env_ok(&rank);
	assert_string_equal(tw__desc_link_id(d), "job-7/step.2");
	tw_desc_free(d);
	unsetenv("TAGWIRE_LINK_ID");
	d = from_env_ok(&rank);
	assert_string_equal(tw__desc_link_id(d), "root");
	tw_desc_free(d);
}

static void test_secret(void **state)
{
	(void)state;
	env_set("TAGWIRE_PARTIES", "mem://a,mem://b");
	env_set("TAGWIRE_RANK", "0");
	env_set("TAGWIRE_SECRET", "s3cret");
	size_t rank;
	tw_desc *d = from_env_ok(&rank);
	size_t slen = 0;
	const void *s = tw__desc_secret(d, &slen);
	assert_int_equal(slen, 6);
	assert_memory_equal(s, "s3cret", 6);
	tw_desc_free(d);

	// The longest secret a description takes.
	char big[1026];
	memset(big, 'k', 1024);
	big[1024] = '\0';
	env_set("TAGWIRE_SECRET", big);
	d = from_env_ok(&rank);
	tw__desc_secret(d, &slen);
	assert_int_equal(slen, 1024);
	tw_desc_free(d);

	// One byte more is refused, naming the variable.
	big[1024] = 'k';
	big[1025] = '\0';
	env_set("TAGWIRE_SECRET", big);
	expect_einval("TAGWIRE_SECRET", "1025-byte secret");
}

static void test_tls(void **state)
{
	(void)state;
	env_set("TAGWIRE_PARTIES", "tcp://127.0.0.1:1,tcp://127.0.0.1:2");
	env_set("TAGWIRE_RANK", "0");
	size_t rank;
	tw_desc *d = from_env_ok(&rank);
	assert_null(tw__desc_tls(d)); // none of the three: no TLS
	tw_desc_free(d);
	env_set("TAGWIRE_TLS_CERT", "c.pem");
	env_set("TAGWIRE_TLS_KEY", "k.pem");
	env_set("TAGWIRE_TLS_CA", "ca.pem");
	d = from_env_ok(&rank);
	const char *const *f = tw__desc_tls(d);
	assert_non_null(f);
	assert_string_equal(f[0], "c.pem");
	assert_string_equal(f[1], "k.pem");
	assert_string_equal(f[2], "ca.pem");
	tw_desc_free(d);
	// Some but not all: refused, naming what is missing.
	unsetenv("TAGWIRE_TLS_KEY");
	expect_einval("TAGWIRE_TLS_KEY", "no TLS key");
	env_set("TAGWIRE_TLS_KEY", "k.pem");
	env_set("TAGWIRE_TLS_CA", "");
	expect_einval("TAGWIRE_TLS_CA", "empty TLS CA");
	unsetenv("TAGWIRE_TLS_CERT");
	unsetenv("TAGWIRE_TLS_CA");
	expect_einval("TAGWIRE_TLS_CERT", "TLS key alone");
}

// ---------------------------------------------------------------------------
// Malformed environments
// ---------------------------------------------------------------------------

static void test_bad_parties(void **state)
{
	(void)state;
	env_set("TAGWIRE_RANK", "0");
	expect_einval("TAGWIRE_PARTIES", "unset");
	static const char *const bad[] = {
		"",
		"mem://a,,mem://b", // empty item
		"mem://a,", // trailing comma
		",mem://a", // leading comma
		",",
		"a b=mem://a", // bad id
		"=mem://a", // empty id
		"x/y=mem://a",
		"bogus", // not an address
		"mem://", // malformed address
		"mem://a b",
		"foo://x", // unknown scheme
		"x=", // no address
		"x=mem://a,x=mem://b", // duplicate ids
		"p1=mem://a,mem://b", // duplicate with a default id
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		env_set("TAGWIRE_PARTIES", bad[i]);
		expect_einval("TAGWIRE_PARTIES", bad[i]);
	}
}

static void test_huge_parties(void **state)
{
	(void)state;
	// 70 kB of otherwise valid items: the length alone is the fault.
	size_t cap_bytes = 70 * 1024;
	char *list = malloc(cap_bytes + 32);
	assert_non_null(list);
	size_t n = 0;
	for (int i = 0; n < cap_bytes; i++)
		n += (size_t)snprintf(list + n, cap_bytes + 32 - n,
		    "%smem://n%d", i ? "," : "", i);
	env_set("TAGWIRE_PARTIES", list);
	env_set("TAGWIRE_RANK", "0");
	expect_einval("TAGWIRE_PARTIES", "70 kB list");
	free(list);
}

static void test_bad_rank(void **state)
{
	(void)state;
	env_set("TAGWIRE_PARTIES", "mem://a,mem://b");
	expect_einval("TAGWIRE_RANK", "unset");
	static const char *const bad[] = { "", "abc", "-1", "1x", " 1", "1 ",
		"+1", "1.0", "0x1", "2" /* == size */, "3",
		"99999999999999999999" /* overflows */,
		"18446744073709551616" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		env_set("TAGWIRE_RANK", bad[i]);
		expect_einval("TAGWIRE_RANK", bad[i]);
	}
}

// Under a launcher the rank comes from its variables, the first set in
// tagwire's order, and the sizes that are set must match the list.
static void test_launcher_rank(void **state)
{
	(void)state;
	static const char *const ranks[][2] = {
		{ "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE" },
		{ "PMI_RANK", "PMI_SIZE" },
		{ "SLURM_PROCID", "SLURM_NTASKS" },
		{ "RANK", "WORLD_SIZE" },
	};
	env_set("TAGWIRE_PARTIES", "mem://a,mem://b,mem://c");
	for (size_t i = 0; i < sizeof(ranks) / sizeof(ranks[0]); i++) {
		env_clear();
		env_set("TAGWIRE_PARTIES", "mem://a,mem://b,mem://c");
		env_set(ranks[i][0], "2");
		size_t rank;
		tw_desc *d = from_env_ok(&rank);
		assert_int_equal(rank, 2);
		tw_desc_free(d);
		env_set(ranks[i][1], "3");
		d = from_env_ok(&rank);
		assert_int_equal(rank, 2);
		tw_desc_free(d);
		env_set(ranks[i][1], "4");
		expect_einval(
		    ranks[i][1], "a size that differs from the list");
		env_set(ranks[i][1], "3");
		env_set(ranks[i][0], "3");
		expect_einval(ranks[i][0], "a rank out of range");
		env_set(ranks[i][0], "x");
		expect_einval(ranks[i][0], "not a number");
		// TAGWIRE_RANK comes first, and TAGWIRE_SIZE is checked too.
		env_set("TAGWIRE_RANK", "1");
		d = from_env_ok(&rank);
		assert_int_equal(rank, 1);
		tw_desc_free(d);
		env_set("TAGWIRE_SIZE", "2");
		expect_einval("TAGWIRE_SIZE", "TAGWIRE_SIZE differs");
		unsetenv("TAGWIRE_RANK");
		env_set(ranks[i][0], "0");
		expect_einval("TAGWIRE_SIZE", "TAGWIRE_SIZE under a launcher");
	}
	// An earlier source wins over a later one.
	env_clear();
	env_set("TAGWIRE_PARTIES", "mem://a,mem://b,mem://c");
	env_set("RANK", "0");
	env_set("SLURM_PROCID", "1");
	size_t rank;
	tw_desc *d = from_env_ok(&rank);
	assert_int_equal(rank, 1);
	tw_desc_free(d);
}

// A root instead of a list: the description carries it, the size from
// the rank's source, and the bind address.
static void test_root(void **state)
{
	(void)state;
	env_set("TAGWIRE_RANK", "2");
	env_set("TAGWIRE_SIZE", "4");
	env_set("TAGWIRE_ROOT", "tcp://127.0.0.1:7000");
	size_t rank;
	tw_desc *d = from_env_ok(&rank);
	const char *bind = "unset";
	assert_int_equal(rank, 2);
	assert_int_equal(tw_desc_size(d), 4);
	assert_string_equal(tw__desc_root(d, &bind), "tcp://127.0.0.1:7000");
	assert_null(bind);
	tw_desc_free(d);

	env_set("TAGWIRE_BIND", "tcp://127.0.0.2:0");
	d = from_env_ok(&rank);
	assert_string_equal(tw__desc_root(d, &bind), "tcp://127.0.0.1:7000");
	assert_string_equal(bind, "tcp://127.0.0.2:0");
	tw_desc_free(d);
}

// torchrun's variables: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (an
// IPv6 literal in brackets); TAGWIRE_ROOT wins over MASTER_*, and a list
// over both.
static void test_root_torchrun(void **state)
{
	(void)state;
	env_set("RANK", "1");
	env_set("WORLD_SIZE", "3");
	env_set("MASTER_ADDR", "::1");
	env_set("MASTER_PORT", "29500");
	size_t rank;
	tw_desc *d = from_env_ok(&rank);
	assert_int_equal(rank, 1);
	assert_int_equal(tw_desc_size(d), 3);
	assert_string_equal(tw__desc_root(d, NULL), "tcp://[::1]:29500");
	tw_desc_free(d);

	env_set("MASTER_ADDR", "localhost");
	d = from_env_ok(&rank);
	assert_string_equal(tw__desc_root(d, NULL), "tcp://localhost:29500");
	tw_desc_free(d);

	env_set("TAGWIRE_ROOT", "tcp://127.0.0.1:7000");
	d = from_env_ok(&rank);
	assert_string_equal(tw__desc_root(d, NULL), "tcp://127.0.0.1:7000");
	tw_desc_free(d);

	unsetenv("TAGWIRE_ROOT");
	env_set("TAGWIRE_PARTIES", "mem://a,mem://b,mem://c");
	d = from_env_ok(&rank);
	assert_null(tw__desc_root(d, NULL));
	assert_int_equal(tw_desc_size(d), 3);
	tw_desc_free(d);
}

static void test_bad_root(void **state)
{
	(void)state;
	env_set("TAGWIRE_RANK", "0");
	env_set("TAGWIRE_ROOT", "tcp://127.0.0.1:7000");
	expect_einval("TAGWIRE_SIZE", "a root without a size");
	env_set("TAGWIRE_SIZE", "2");
	env_set("TAGWIRE_PARTIES", "mem://a,mem://b");
	expect_einval("TAGWIRE_ROOT", "both TAGWIRE_ROOT and TAGWIRE_PARTIES");
	unsetenv("TAGWIRE_PARTIES");

	static const char *const bad[] = { "shm://x", "tcp://127.0.0.1:0",
		"tcp://127.0.0.1", "tcp://:7000", "mem://r", "tcp://a b:1" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		env_set("TAGWIRE_ROOT", bad[i]);
		expect_einval("TAGWIRE_ROOT", bad[i]);
	}
	env_set("TAGWIRE_ROOT", "tcp://127.0.0.1:7000");
	env_set("TAGWIRE_BIND", "shm://x");
	expect_einval("TAGWIRE_BIND", "a bind address that is not tcp://");
	unsetenv("TAGWIRE_BIND");
	env_set("TAGWIRE_RANK", "2");
	expect_einval("TAGWIRE_RANK", "a rank past TAGWIRE_SIZE");
	env_set("TAGWIRE_SIZE", "0");
	expect_einval("TAGWIRE_SIZE", "zero parties");

	unsetenv("TAGWIRE_ROOT");
	env_set("TAGWIRE_SIZE", "2");
	env_set("TAGWIRE_RANK", "0");
	env_set("MASTER_ADDR", "127.0.0.1");
	expect_einval("MASTER_PORT", "MASTER_ADDR alone");
	unsetenv("MASTER_ADDR");
	env_set("MASTER_PORT", "29500");
	expect_einval("MASTER_ADDR", "MASTER_PORT alone");
	env_set("MASTER_ADDR", "127.0.0.1");
	env_set("MASTER_PORT", "port");
	expect_einval("MASTER_ADDR", "a port that is not a number");
	env_set("MASTER_PORT", "29500");
	unsetenv("TAGWIRE_RANK");
	env_set("OMPI_COMM_WORLD_RANK", "0");
	env_set("OMPI_COMM_WORLD_SIZE", "3");
	expect_einval("OMPI_COMM_WORLD_SIZE", "sizes that disagree");
}

static void test_bad_link_id(void **state)
{
	(void)state;
	env_set("TAGWIRE_PARTIES", "mem://a,mem://b");
	env_set("TAGWIRE_RANK", "0");
	char longid[202];
	memset(longid, 'i', 201);
	longid[201] = '\0';
	const char *const bad[] = { "a//b", "/a", "a/", "a:b", "a b", longid };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		env_set("TAGWIRE_LINK_ID", bad[i]);
		expect_einval("TAGWIRE_LINK_ID", bad[i]);
	}
}

static void test_null_args(void **state)
{
	(void)state;
	env_set("TAGWIRE_PARTIES", "mem://a,mem://b");
	env_set("TAGWIRE_RANK", "0");
	tw_desc *d = NULL;
	size_t rank = 5;
	TW_FAIL(tw_desc_from_env(NULL, &rank), TW_EINVAL);
	assert_int_equal(rank, 5);
	TW_FAIL(tw_desc_from_env(&d, NULL), TW_EINVAL);
	assert_null(d);
}

static void test_out_of_memory(void **state)
{
	(void)state;
	env_set("TAGWIRE_PARTIES", "mem://a,mem://b,mem://c,mem://d,mem://e");
	env_set("TAGWIRE_RANK", "3");
	env_set("TAGWIRE_SECRET", "s3cret");
	// Each allocation failing in turn: TW_ENOMEM (not a complaint about
	// the environment, which is fine), and outputs untouched.  The sweep
	// goes on past a wrong status so that the message lists them all.
	int wrong = 0;
	char first[128] = "";
	for (int n = 0;; n++) {
		assert_true(n < 64);
		tw_desc *d = (tw_desc *)0x1;
		size_t rank = 4242;
		failalloc_after(n);
		int status = tw_desc_from_env(&d, &rank);
		failalloc_never();
		if (status == TW_OK) {
			assert_int_equal(rank, 3);
			assert_int_equal(tw_desc_size(d), 5);
			tw_desc_free(d);
			break;
		}
		if (status != TW_ENOMEM && wrong++ == 0)
			snprintf(first, sizeof(first),
			    "allocation %d failing gave %s", n,
			    tw_err_name(status));
		assert_ptr_equal(d, (tw_desc *)0x1);
		assert_int_equal(rank, 4242);
	}
	if (wrong > 0)
		fail_msg("%d allocation failures not reported as TW_ENOMEM; "
		         "first: %s",
		    wrong, first);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_default_ids),
		T(test_named_ids),
		T(test_link_id),
		T(test_secret),
		T(test_tls),
		T(test_bad_parties),
		T(test_huge_parties),
		T(test_bad_rank),
		T(test_launcher_rank),
		T(test_root),
		T(test_root_torchrun),
		T(test_bad_root),
		T(test_bad_link_id),
		T(test_null_args),
		T(test_out_of_memory),
	};
#undef T
	return cmocka_run_group_tests_name("env", tests, NULL, NULL);
}
