// Unit tests of link descriptions (desc.c): ids, parties and addresses,
// options, the secret.
//
// Option defaults and ranges are written out again from the comments in
// include/tagwire/link.h, so that the test checks the documented contract
// and not the table the code validates against.
//
// Whether shm:// and tcp:// are built in depends on the build and on which
// transports exist yet.  The test asks once per scheme with a valid
// address (TW_OK when built in, TW_ENOTSUP when not) and holds every other
// address of that scheme to the answer.
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

typedef struct capture {
	int n;
	int level;
	char subsys[32];
	char msg[512];
} capture;

static capture cap;

static void cap_handler(const tw_log_record *rec, void *arg)
{
	(void)arg;
	cap.n++;
	cap.level = rec->level;
	snprintf(cap.subsys, sizeof(cap.subsys), "%s", rec->subsys);
	snprintf(cap.msg, sizeof(cap.msg), "%s", rec->msg);
}

static int setup(void **state)
{
	(void)state;
	memset(&cap, 0, sizeof(cap));
	// The default level: failures must be visible without debugging.
	tw_log_set_level(TW_LOG_WARN);
	return tw_log_set_handler(cap_handler, NULL);
}

static int teardown(void **state)
{
	(void)state;
	failalloc_never();
	return tw_log_set_handler(NULL, NULL);
}

static const char *rep(char c, size_t n)
{
	static char buf[4][1024];
	static int slot;
	char *b = buf[slot++ % 4];
	assert_true(n < sizeof(buf[0]));
	memset(b, c, n);
	b[n] = '\0';
	return b;
}

static tw_desc *desc_new(const char *id)
{
	tw_desc *d = tw_desc_new(id);
	assert_non_null(d);
	return d;
}

#define KiB ((int64_t)1024)
#define MiB (1024 * KiB)
#define GiB (1024 * MiB)

typedef struct documented {
	int opt;
	int64_t def, min, max; // max -1: not documented
} documented;

static const documented docs[] = {
	{ TW_OPT_RECV_TIMEOUT_MS, 60000, -1, -1 },
	{ TW_OPT_CONNECT_TIMEOUT_MS, 30000, 1, (int64_t)1 << 31 },
	{ TW_OPT_THROTTLE_WINDOW, 0, 0, (int64_t)1 << 31 },
	{ TW_OPT_CHUNK_SIZE, 1 * MiB, 4 * KiB, 1 * GiB },
	{ TW_OPT_STRIPES, 1, 1, 64 },
	{ TW_OPT_MAX_MSG_SIZE, 1 * GiB, 0, (int64_t)1 << 40 },
	{ TW_OPT_RECV_BUFFER, 64 * MiB, 4 * KiB, (int64_t)1 << 40 },
	{ TW_OPT_HEARTBEAT_MS, 1000, 0, 3600000 },
	{ TW_OPT_SHM_LOCAL, 0, 0, 1 },
	{ TW_OPT_WINDOW, 16, 1, 1024 },
};

#define N_DOCS (sizeof(docs) / sizeof(docs[0]))

static int64_t doc_max(const documented *o)
{
	// The receive timeout's ceiling is not documented; use the table's.
	return o->max >= 0 ? o->max : tw__opts[o->opt].max;
}

// ---------------------------------------------------------------------------
// Ids
// ---------------------------------------------------------------------------

static void test_new_valid(void **state)
{
	(void)state;
	static const char *const ids[] = { "root", "a", "a/b", "job-7.x_y/c" };
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		tw_desc *d = desc_new(ids[i]);
		assert_string_equal(tw__desc_link_id(d), ids[i]);
		assert_int_equal(tw_desc_size(d), 0);
		tw_desc_free(d);
	}
	// The longest id, and the id is copied.
	char id[TW_LINK_ID_MAX + 1];
	snprintf(id, sizeof(id), "%s", rep('i', TW_LINK_ID_MAX));
	tw_desc *d = desc_new(id);
	id[0] = 'X';
	assert_string_equal(tw__desc_link_id(d), rep('i', TW_LINK_ID_MAX));
	tw_desc_free(d);
	tw_desc_free(NULL);
	// Nothing of the above was worth a log line.
	assert_int_equal(cap.n, 0);
}

static void test_new_invalid(void **state)
{
	(void)state;
	const char *const bad[] = { "", rep('i', TW_LINK_ID_MAX + 1), "a//b",
		"/a", "a/", "/", "a:b", "a@b", "a!b", "a b" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int before = cap.n;
		tw_desc *d = tw_desc_new(bad[i]);
		if (d != NULL)
			fail_msg("id '%.40s' accepted", bad[i]);
		// "logged": the caller gets NULL only, so the log must say
		// why.
		assert_int_equal(cap.n, before + 1);
		assert_string_equal(cap.subsys, "desc");
		assert_true(cap.level <= TW_LOG_WARN);
	}
	int before = cap.n;
	assert_null(tw_desc_new(NULL));
	assert_int_equal(cap.n, before + 1);
}

// ---------------------------------------------------------------------------
// Parties
// ---------------------------------------------------------------------------

static void test_add_party(void **state)
{
	(void)state;
	tw_desc *d = desc_new("root");
	char id[8] = "alice", addr[32] = "mem://a";
	TW_PASS(tw_desc_add_party(d, id, addr));
	// Strings are copied.
	memcpy(id, "XXXXX", 5);
	memcpy(addr, "mem://Z", 7);
	TW_PASS(tw_desc_add_party(d, "bob", "mem://b"));
	TW_PASS(tw_desc_add_party(d, rep('c', TW_PARTY_ID_MAX), "mem://c"));
	assert_int_equal(tw_desc_size(d), 3);
	// Ranks are the order of the calls.
	const tw__party *p = tw__desc_parties(d);
	assert_string_equal(p[0].id, "alice");
	assert_string_equal(p[0].addr, "mem://a");
	assert_string_equal(p[1].id, "bob");
	assert_string_equal(p[1].addr, "mem://b");
	assert_string_equal(p[2].id, rep('c', TW_PARTY_ID_MAX));
	// Growing past the first allocation keeps everything.
	for (int i = 0; i < 20; i++) {
		char pid[32], paddr[48];
		snprintf(pid, sizeof(pid), "q%d", i);
		snprintf(paddr, sizeof(paddr), "mem://q%d", i);
		TW_PASS(tw_desc_add_party(d, pid, paddr));
	}
	assert_int_equal(tw_desc_size(d), 23);
	p = tw__desc_parties(d);
	assert_string_equal(p[0].id, "alice");
	assert_string_equal(p[22].id, "q19");
	assert_string_equal(p[22].addr, "mem://q19");
	tw_desc_free(d);
	assert_int_equal(tw_desc_size(NULL), 0);
}

static void test_add_party_bad_ids(void **state)
{
	(void)state;
	tw_desc *d = desc_new("root");
	TW_PASS(tw_desc_add_party(d, "x", "mem://x"));
	const char *const bad[] = { "", rep('p', TW_PARTY_ID_MAX + 1), "a b",
		"a/b", "a:b", "a=b", "a,b", "x" /* duplicate */ };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int status = tw_desc_add_party(d, bad[i], "mem://y");
		if (status != TW_EINVAL)
			fail_msg(
			    "id '%.40s': %s", bad[i], tw_err_name(status));
	}
	TW_FAIL(tw_desc_add_party(d, NULL, "mem://y"), TW_EINVAL);
	TW_FAIL(tw_desc_add_party(d, "y", NULL), TW_EINVAL);
	TW_FAIL(tw_desc_add_party(NULL, "y", "mem://y"), TW_EINVAL);
	// Nothing was added by a failed call.
	assert_int_equal(tw_desc_size(d), 1);
	// The same address twice under different ids is the caller's
	// business; the id is what must be unique.
	TW_PASS(tw_desc_add_party(d, "y", "mem://y"));
	assert_int_equal(tw_desc_size(d), 2);
	tw_desc_free(d);
}

static void test_add_party_schemes(void **state)
{
	(void)state;
	tw_desc *d = desc_new("root");
	// Unknown schemes, and things that are not addresses at all.
	static const char *const unknown[] = { "foo://x", "mem:/x", "mem:x",
		"", "x", "MEM://x", "mem//x", "http://h:1", " mem://x" };
	for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
		int status = tw_desc_add_party(d, "p", unknown[i]);
		if (status != TW_EINVAL)
			fail_msg("'%s': %s, want TW_EINVAL", unknown[i],
			    tw_err_name(status));
	}
	// Malformed mem:// addresses.
	char longname[600];
	snprintf(longname, sizeof(longname), "mem://%s", rep('m', 550));
	const char *const bad_mem[]
	    = { "mem://", "mem://a b", longname, "mem:///", "mem://a\n" };
	for (size_t i = 0; i < sizeof(bad_mem) / sizeof(bad_mem[0]); i++) {
		int status = tw_desc_add_party(d, "p", bad_mem[i]);
		if (status != TW_EINVAL)
			fail_msg("'%.40s': %s, want TW_EINVAL", bad_mem[i],
			    tw_err_name(status));
	}
	assert_int_equal(tw_desc_size(d), 0);
	tw_desc_free(d);
}

// TW_OK when `addr` (valid) is accepted, i.e. its transport is built in;
// fails the test on anything but TW_OK or TW_ENOTSUP.
static bool scheme_built(const char *addr)
{
	tw_desc *d = desc_new("probe");
	int status = tw_desc_add_party(d, "p", addr);
	tw_desc_free(d);
	if (status != TW_OK && status != TW_ENOTSUP)
		fail_msg("valid address '%s': %s, want TW_OK or TW_ENOTSUP",
		    addr, tw_err_name(status));
	return status == TW_OK;
}

static void check_scheme(const char *scheme, const char *first_valid,
    const char *const *valid, size_t nvalid, const char *const *bad,
    size_t nbad)
{
	bool built = scheme_built(first_valid);
	print_message("%s:// is %sbuilt in\n", scheme, built ? "" : "not ");
	tw_desc *d = desc_new("root");
	for (size_t i = 0; i < nvalid; i++) {
		char id[32];
		snprintf(id, sizeof(id), "v%zu", i);
		int status = tw_desc_add_party(d, id, valid[i]);
		if (status != (built ? TW_OK : TW_ENOTSUP))
			fail_msg("'%s': %s", valid[i], tw_err_name(status));
	}
	for (size_t i = 0; i < nbad; i++) {
		int status = tw_desc_add_party(d, "b", bad[i]);
		// Without the transport, a malformed address may be
		// reported either way; with it, it is malformed.
		bool ok
		    = status == TW_EINVAL || (!built && status == TW_ENOTSUP);
		if (!ok)
			fail_msg("'%s': %s", bad[i], tw_err_name(status));
	}
	assert_int_equal(tw_desc_size(d), built ? nvalid : 0);
	tw_desc_free(d);
}

static void test_add_party_shm(void **state)
{
	(void)state;
	static const char *const valid[] = { "shm://x", "shm://seg-1.a_b" };
	static const char *const bad[] = { "shm://", "shm://a b" };
	check_scheme("shm", "shm://x", valid, 2, bad, 2);
}

static void test_add_party_tcp(void **state)
{
	(void)state;
	static const char *const valid[]
	    = { "tcp://h:1", "tcp://127.0.0.1:5000", "tcp://[::1]:80",
		      "tcp://host.example.com:65535" };
	static const char *const bad[]
	    = { "tcp://", "tcp://h", "tcp://h:", "tcp://:1", "tcp://h:abc",
		      "tcp://h:65536", "tcp://h:-1", "tcp://[::1:80" };
	check_scheme("tcp", "tcp://h:1", valid, 4, bad, 8);
}

static void test_add_party_ucx(void **state)
{
	(void)state;
	// ucx:// is a scheme tagwire knows but does not carry yet.
	tw_desc *d = desc_new("root");
	int status = tw_desc_add_party(d, "u", "ucx://x");
	if (status != TW_OK && status != TW_ENOTSUP)
		fail_msg("ucx://x: %s", tw_err_name(status));
	if (status == TW_ENOTSUP) {
		// ...and the log says so.
		assert_true(cap.n > 0);
		assert_non_null(strstr(cap.msg, "not built in"));
	}
	tw_desc_free(d);
}

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

static void test_get_defaults(void **state)
{
	(void)state;
	tw_desc *d = desc_new("root");
	for (size_t i = 0; i < N_DOCS; i++) {
		int64_t v = -12345;
		TW_PASS(tw_desc_get(d, docs[i].opt, &v));
		if (v != docs[i].def)
			fail_msg("option %d: default %lld, documented %lld",
			    docs[i].opt, (long long)v, (long long)docs[i].def);
	}
	// Every option of the enum is covered above.
	assert_int_equal(N_DOCS, TW_OPT_COUNT);
	int64_t v = -12345;
	TW_FAIL(tw_desc_get(d, -1, &v), TW_EINVAL);
	TW_FAIL(tw_desc_get(d, TW_OPT_COUNT, &v), TW_EINVAL);
	TW_FAIL(tw_desc_get(d, 99, &v), TW_EINVAL);
	assert_int_equal(v, -12345);
	TW_FAIL(tw_desc_get(d, TW_OPT_STRIPES, NULL), TW_EINVAL);
	TW_FAIL(tw_desc_get(NULL, TW_OPT_STRIPES, &v), TW_EINVAL);
	tw_desc_free(d);
}

static void expect_opt(const tw_desc *d, int opt, int64_t want)
{
	int64_t v;
	TW_PASS(tw_desc_get(d, opt, &v));
	if (v != want)
		fail_msg("option %d is %lld, want %lld", opt, (long long)v,
		    (long long)want);
}

static void test_set_ranges(void **state)
{
	(void)state;
	tw_desc *d = desc_new("root");
	for (size_t i = 0; i < N_DOCS; i++) {
		int opt = docs[i].opt;
		int64_t lo = docs[i].min, hi = doc_max(&docs[i]);
		TW_PASS(tw_desc_set(d, opt, lo));
		expect_opt(d, opt, lo);
		TW_PASS(tw_desc_set(d, opt, hi));
		expect_opt(d, opt, hi);
		// Out of range is refused, with a log line, and changes
		// nothing.
		int before = cap.n;
		TW_FAIL(tw_desc_set(d, opt, lo - 1), TW_EINVAL);
		TW_FAIL(tw_desc_set(d, opt, hi + 1), TW_EINVAL);
		TW_FAIL(tw_desc_set(d, opt, INT64_MIN), TW_EINVAL);
		TW_FAIL(tw_desc_set(d, opt, INT64_MAX), TW_EINVAL);
		assert_int_equal(cap.n, before + 4);
		expect_opt(d, opt, hi);
	}
	tw_desc_free(d);
}

static void test_set_special(void **state)
{
	(void)state;
	tw_desc *d = desc_new("root");
	// The receive timeout: -1 = forever, 0 = poll; -2 means nothing.
	TW_PASS(tw_desc_set(d, TW_OPT_RECV_TIMEOUT_MS, -1));
	TW_PASS(tw_desc_set(d, TW_OPT_RECV_TIMEOUT_MS, 0));
	TW_FAIL(tw_desc_set(d, TW_OPT_RECV_TIMEOUT_MS, -2), TW_EINVAL);
	expect_opt(d, TW_OPT_RECV_TIMEOUT_MS, 0);
	// Heartbeat: 0 = off, else at least 10 ms.
	TW_PASS(tw_desc_set(d, TW_OPT_HEARTBEAT_MS, 0));
	for (int64_t v = 1; v <= 9; v++)
		TW_FAIL(tw_desc_set(d, TW_OPT_HEARTBEAT_MS, v), TW_EINVAL);
	expect_opt(d, TW_OPT_HEARTBEAT_MS, 0);
	TW_PASS(tw_desc_set(d, TW_OPT_HEARTBEAT_MS, 10));
	expect_opt(d, TW_OPT_HEARTBEAT_MS, 10);
	// Unknown options, whatever the value.
	static const int bad[] = { -1, 99, TW_OPT_COUNT, INT32_MIN };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		TW_FAIL(tw_desc_set(d, bad[i], 0), TW_EINVAL);
		TW_FAIL(tw_desc_set(d, bad[i], 1), TW_EINVAL);
	}
	TW_FAIL(tw_desc_set(NULL, TW_OPT_STRIPES, 2), TW_EINVAL);
	// Options are per description.
	tw_desc *e = desc_new("other");
	TW_PASS(tw_desc_set(d, TW_OPT_STRIPES, 7));
	expect_opt(e, TW_OPT_STRIPES, 1);
	tw_desc_free(e);
	tw_desc_free(d);
}

// ---------------------------------------------------------------------------
// The secret
// ---------------------------------------------------------------------------

static void expect_secret(const tw_desc *d, const void *want, size_t len)
{
	size_t n = 99;
	const void *s = tw__desc_secret(d, &n);
	assert_int_equal(n, len);
	if (len == 0)
		return;
	assert_non_null(s);
	assert_memory_equal(s, want, len);
}

static void test_secret(void **state)
{
	(void)state;
	tw_desc *d = desc_new("root");
	expect_secret(d, NULL, 0);
	unsigned char key[1025];
	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (unsigned char)(i * 7 + 1);

	TW_PASS(tw_desc_set_secret(d, key, 1));
	expect_secret(d, key, 1);
	TW_PASS(tw_desc_set_secret(d, key, 1024));
	// Copied: the caller may wipe its key.
	unsigned char copy[1024];
	memcpy(copy, key, sizeof(copy));
	memset(key, 0, 1024);
	expect_secret(d, copy, 1024);
	memcpy(key, copy, sizeof(copy));

	// Too long, or no key with a length: refused, old secret kept.
	TW_FAIL(tw_desc_set_secret(d, key, 1025), TW_EINVAL);
	TW_FAIL(tw_desc_set_secret(d, NULL, 5), TW_EINVAL);
	TW_FAIL(tw_desc_set_secret(d, key, SIZE_MAX), TW_EINVAL);
	expect_secret(d, copy, 1024);
	TW_FAIL(tw_desc_set_secret(NULL, key, 1), TW_EINVAL);

	// Length 0 removes it, with or without a pointer.
	TW_PASS(tw_desc_set_secret(d, NULL, 0));
	expect_secret(d, NULL, 0);
	TW_PASS(tw_desc_set_secret(d, key, 3));
	TW_PASS(tw_desc_set_secret(d, key, 0));
	expect_secret(d, NULL, 0);
	tw_desc_free(d);
}

// ---------------------------------------------------------------------------
// Out of memory
// ---------------------------------------------------------------------------

static void test_out_of_memory(void **state)
{
	(void)state;
	failalloc_after(0);
	tw_desc *d = tw_desc_new("root");
	failalloc_never();
	assert_null(d);

	// Each allocation of add_party failing in turn: TW_ENOMEM, nothing
	// added, and the description still usable.  The first party and the
	// fifth are the ones that grow the array in today's code, but any
	// count must behave.
	for (size_t prefill = 0; prefill <= 8; prefill++) {
		for (int n = 0;; n++) {
			assert_true(n < 32);
			d = desc_new("root");
			for (size_t i = 0; i < prefill; i++) {
				char id[32];
				snprintf(id, sizeof(id), "f%zu", i);
				TW_PASS(tw_desc_add_party(d, id, "mem://f"));
			}
			failalloc_after(n);
			int status = tw_desc_add_party(d, "new", "mem://n");
			failalloc_never();
			if (status == TW_OK) {
				assert_int_equal(tw_desc_size(d), prefill + 1);
				tw_desc_free(d);
				break;
			}
			TW_FAIL(status, TW_ENOMEM);
			assert_int_equal(tw_desc_size(d), prefill);
			TW_PASS(tw_desc_add_party(d, "new", "mem://n"));
			assert_string_equal(
			    tw__desc_parties(d)[prefill].id, "new");
			tw_desc_free(d);
		}
	}

	d = desc_new("root");
	unsigned char key[8] = "secret!";
	TW_PASS(tw_desc_set_secret(d, key, 7));
	failalloc_after(0);
	int status = tw_desc_set_secret(d, "other", 5);
	failalloc_never();
	TW_FAIL(status, TW_ENOMEM);
	expect_secret(d, key, 7); // the old secret stays
	tw_desc_free(d);
}

// A root instead of parties: the size it gives, its addresses, and what
// it excludes.
static void test_root(void **state)
{
	(void)state;
	tw_desc *d = desc_new("root");
	const char *bind = "unset";
	assert_null(tw__desc_root(d, &bind));
	TW_PASS(tw_desc_set_root(d, "tcp://127.0.0.1:7000", 4, NULL));
	assert_int_equal(tw_desc_size(d), 4);
	assert_string_equal(tw__desc_root(d, &bind), "tcp://127.0.0.1:7000");
	assert_null(bind);
	TW_PASS(
	    tw_desc_set_root(d, "tcp://[::1]:7001", 65536, "tcp://[::1]:0"));
	assert_int_equal(tw_desc_size(d), 65536);
	assert_string_equal(tw__desc_root(d, &bind), "tcp://[::1]:7001");
	assert_string_equal(bind, "tcp://[::1]:0");
	TW_PASS(tw_desc_set_root(d, "tcp://host-a.example:1", 1, "tcp://b:9"));
	TW_FAIL(tw_desc_add_party(d, "p0", "tcp://127.0.0.1:7000"), TW_EINVAL);
	tw_link *l = (tw_link *)0x1;
	TW_FAIL(tw_link_create_with_channels(d, 0, NULL, &l), TW_EINVAL);
	assert_ptr_equal(l, (tw_link *)0x1);
	// Refused values leave the root as it was.
	static const char *const bad_root[] = { NULL, "mem://r", "shm://r",
		"tcp://127.0.0.1:0", "tcp://127.0.0.1", "tcp://0.0.0.0:5",
		"tcp://[::]:5", "tcp://a b:5", "tcp://127.0.0.1:65536" };
	for (size_t i = 0; i < sizeof(bad_root) / sizeof(bad_root[0]); i++)
		TW_FAIL(tw_desc_set_root(d, bad_root[i], 2, NULL), TW_EINVAL);
	static const char *const bad_bind[]
	    = { "mem://r", "tcp://0.0.0.0:0", "tcp://[::]:0", "tcp://x" };
	for (size_t i = 0; i < sizeof(bad_bind) / sizeof(bad_bind[0]); i++)
		TW_FAIL(
		    tw_desc_set_root(d, "tcp://127.0.0.1:5", 2, bad_bind[i]),
		    TW_EINVAL);
	TW_FAIL(tw_desc_set_root(d, "tcp://127.0.0.1:5", 0, NULL), TW_EINVAL);
	TW_FAIL(
	    tw_desc_set_root(d, "tcp://127.0.0.1:5", 65537, NULL), TW_EINVAL);
	TW_FAIL(
	    tw_desc_set_root(NULL, "tcp://127.0.0.1:5", 2, NULL), TW_EINVAL);
	assert_string_equal(tw__desc_root(d, &bind), "tcp://host-a.example:1");
	assert_string_equal(bind, "tcp://b:9");
	assert_int_equal(tw_desc_size(d), 1);
	tw_desc_free(d);

	// Parties first: no root.
	d = desc_new("root");
	TW_PASS(tw_desc_add_party(d, "a", "tcp://127.0.0.1:7000"));
	TW_FAIL(
	    tw_desc_set_root(d, "tcp://127.0.0.1:7000", 2, NULL), TW_EINVAL);
	assert_null(tw__desc_root(d, NULL));
	tw_desc_free(d);

	// Out of memory: refused whole.
	for (int n = 0;; n++) {
		assert_true(n < 8);
		d = desc_new("root");
		failalloc_after(n);
		int status = tw_desc_set_root(d, "tcp://h:1", 3, "tcp://b:0");
		failalloc_never();
		if (status == TW_OK) {
			tw_desc_free(d);
			break;
		}
		TW_FAIL(status, TW_ENOMEM);
		assert_null(tw__desc_root(d, NULL));
		assert_int_equal(tw_desc_size(d), 0);
		tw_desc_free(d);
	}
}

static void test_tls(void **state)
{
	(void)state;
	tw_desc *d = desc_new("root");
	assert_null(tw__desc_tls(d));
	TW_PASS(tw_desc_set_tls(d, "a.pem", "a.key", "ca.pem"));
	const char *const *f = tw__desc_tls(d);
	assert_string_equal(f[0], "a.pem");
	assert_string_equal(f[1], "a.key");
	assert_string_equal(f[2], "ca.pem");
	// Again: replaced.  A missing or empty path: refused, files kept.
	TW_PASS(tw_desc_set_tls(d, "b.pem", "b.key", "ca2.pem"));
	TW_FAIL(tw_desc_set_tls(d, NULL, "x", "y"), TW_EINVAL);
	TW_FAIL(tw_desc_set_tls(d, "x", "", "y"), TW_EINVAL);
	TW_FAIL(tw_desc_set_tls(d, "x", "y", NULL), TW_EINVAL);
	TW_FAIL(tw_desc_set_tls(NULL, "x", "y", "z"), TW_EINVAL);
	f = tw__desc_tls(d);
	assert_string_equal(f[0], "b.pem");
	assert_string_equal(f[2], "ca2.pem");
	// Out of memory half way: the old files stay.
	for (int k = 0; k < 3; k++) {
		failalloc_after(k);
		int status = tw_desc_set_tls(d, "c.pem", "c.key", "ca3.pem");
		failalloc_never();
		TW_FAIL(status, TW_ENOMEM);
		assert_string_equal(tw__desc_tls(d)[1], "b.key");
	}
	tw_desc_free(d);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_new_valid),
		T(test_new_invalid),
		T(test_add_party),
		T(test_add_party_bad_ids),
		T(test_add_party_schemes),
		T(test_add_party_shm),
		T(test_add_party_tcp),
		T(test_add_party_ucx),
		T(test_get_defaults),
		T(test_set_ranges),
		T(test_set_special),
		T(test_secret),
		T(test_tls),
		T(test_root),
		T(test_out_of_memory),
	};
#undef T
	return cmocka_run_group_tests_name("desc", tests, NULL, NULL);
}
