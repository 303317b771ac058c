// Unit tests of TW_OPT_SHM_LOCAL's messages (shml_wire.c) and of the two
// host checks beside them (shmlocal.c): a hello encodes and decodes to the
// same fields, every truncation and another version are TW_EPROTO, bytes a
// later version appends are ignored; verdicts are one byte, 0 or 1; the
// host id follows TAGWIRE_HOST_ID; a probe is seen only with its token.

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "link/link_int.h"
#include "link/shml_wire.h"
#include "platform/posix/shm.h"
#include "testutil.h"

static tw__shml_hello sample(void)
{
	tw__shml_hello h = { .nonce = UINT64_C(0x0123456789abcdef) };
	for (int i = 0; i < TW_SHML_HOST_LEN; i++)
		h.host[i] = (uint8_t)(i * 7);
	for (int i = 0; i < TW_SHML_TOKEN_LEN; i++)
		h.token[i] = (uint8_t)(200 - i);
	return h;
}

static void test_hello_roundtrip(void **state)
{
	(void)state;
	tw__shml_hello h = sample(), got;
	uint8_t buf[TW_SHML_HELLO_LEN + 4] = { 0 };
	tw__shml_hello_encode(&h, buf);
	assert_int_equal(buf[0], TW_SHML_VERSION);
	// Little-endian nonce right after the host.
	assert_int_equal(buf[1 + TW_SHML_HOST_LEN], 0xef);
	TW_PASS(tw__shml_hello_decode(buf, TW_SHML_HELLO_LEN, &got));
	assert_memory_equal(&got.host, &h.host, sizeof(h.host));
	assert_true(got.nonce == h.nonce);
	assert_memory_equal(&got.token, &h.token, sizeof(h.token));
	// A later version may append; version 1's fields read the same.
	memset(&got, 0, sizeof(got));
	TW_PASS(tw__shml_hello_decode(buf, sizeof(buf), &got));
	assert_true(got.nonce == h.nonce);
}

static void test_hello_refused(void **state)
{
	(void)state;
	tw__shml_hello h = sample(), got;
	uint8_t buf[TW_SHML_HELLO_LEN];
	tw__shml_hello_encode(&h, buf);
	for (size_t n = 0; n < sizeof(buf); n++) {
		uint8_t *cut = malloc(n > 0 ? n : 1);
		assert_non_null(cut);
		memcpy(cut, buf, n);
		TW_FAIL(tw__shml_hello_decode(cut, n, &got), TW_EPROTO);
		free(cut);
	}
	buf[0] = TW_SHML_VERSION + 1;
	TW_FAIL(tw__shml_hello_decode(buf, sizeof(buf), &got), TW_EPROTO);
	buf[0] = 0;
	TW_FAIL(tw__shml_hello_decode(buf, sizeof(buf), &got), TW_EPROTO);
	TW_FAIL(tw__shml_hello_decode(NULL, sizeof(buf), &got), TW_EPROTO);
}

static void test_verdict(void **state)
{
	(void)state;
	int yes = -1;
	uint8_t b[2] = { 1, 0 };
	TW_PASS(tw__shml_verdict_decode(b, 1, &yes));
	assert_int_equal(yes, 1);
	TW_PASS(tw__shml_verdict_decode(b + 1, 1, &yes));
	assert_int_equal(yes, 0);
	TW_FAIL(tw__shml_verdict_decode(b, 0, &yes), TW_EPROTO);
	TW_FAIL(tw__shml_verdict_decode(b, 2, &yes), TW_EPROTO);
	b[0] = 2;
	TW_FAIL(tw__shml_verdict_decode(b, 1, &yes), TW_EPROTO);
	TW_FAIL(tw__shml_verdict_decode(NULL, 1, &yes), TW_EPROTO);
}

static void test_host_id(void **state)
{
	(void)state;
	uint8_t a[TW_SHML_HOST_LEN], b[TW_SHML_HOST_LEN], c[TW_SHML_HOST_LEN];
	unsetenv("TAGWIRE_HOST_ID");
	tw__shml_host_id(a);
	tw__shml_host_id(b);
	assert_memory_equal(a, b, sizeof(a)); // stable within a process
	setenv("TAGWIRE_HOST_ID", "rack-1/host-7", 1);
	tw__shml_host_id(b);
	assert_memory_not_equal(a, b, sizeof(a));
	setenv("TAGWIRE_HOST_ID", "rack-1/host-8", 1);
	tw__shml_host_id(c);
	assert_memory_not_equal(b, c, sizeof(b));
	setenv("TAGWIRE_HOST_ID", "", 1); // empty: as if unset
	tw__shml_host_id(c);
	assert_memory_equal(a, c, sizeof(a));
	unsetenv("TAGWIRE_HOST_ID");
}

static void test_probe(void **state)
{
	(void)state;
	tw__shml_hello h = sample();
	h.nonce ^= (uint64_t)getpid() << 16; // unique to this run
	assert_false(tw__shml_probe_sees(&h)); // no such segment
	char name[40];
	snprintf(
	    name, sizeof(name), "tw-h%016llx", (unsigned long long)h.nonce);
	void *mem = NULL;
	TW_PASS(tw_shm_create(name, 64, &mem));
	memcpy(mem, h.token, sizeof(h.token));
	assert_true(tw__shml_probe_sees(&h));
	h.token[5] ^= 1; // another run's segment under that name
	assert_false(tw__shml_probe_sees(&h));
	tw_shm_close(mem, 64);
	tw_shm_unlink(name);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hello_roundtrip),
		cmocka_unit_test(test_hello_refused),
		cmocka_unit_test(test_verdict),
		cmocka_unit_test(test_host_id),
		cmocka_unit_test(test_probe),
	};
	return cmocka_run_group_tests_name("shml_wire", tests, NULL, NULL);
}
