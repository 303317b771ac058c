// Unit tests of the rendezvous messages (rdv_wire.c): what is encoded
// decodes to the same fields, and every malformed variant -- each
// truncation, a byte too many, bad magic, version, type, lengths, counts,
// characters, statuses -- is TW_EPROTO without reading past the buffer.

#include <string.h>

#include "link/rdv_wire.h"
#include "testutil.h"

static tw__rdv_hello sample_hello(void)
{
	tw__rdv_hello h = { .size = 4, .rank = 3 };
	snprintf(h.link_id, sizeof(h.link_id), "job/7");
	snprintf(h.addr, sizeof(h.addr), "tcp://[::1]:40123");
	return h;
}

// Every strict prefix of buf fails both decoders.
static void expect_prefixes_refused(const tw_buf *b)
{
	for (size_t n = 0; n < b->len; n++) {
		unsigned char *cut = malloc(n > 0 ? n : 1);
		assert_non_null(cut);
		memcpy(cut, b->data, n);
		tw__rdv_hello h;
		tw__rdv_reply r;
		TW_FAIL(tw__rdv_hello_decode(cut, n, &h), TW_EPROTO);
		TW_FAIL(tw__rdv_reply_decode(cut, n, &r), TW_EPROTO);
		free(cut);
	}
}

// buf with one more byte fails `decode`.
static void expect_longer_refused(const tw_buf *b, bool hello)
{
	unsigned char *more = malloc(b->len + 1);
	assert_non_null(more);
	memcpy(more, b->data, b->len);
	more[b->len] = 'x';
	tw__rdv_hello h;
	tw__rdv_reply r;
	if (hello)
		TW_FAIL(tw__rdv_hello_decode(more, b->len + 1, &h), TW_EPROTO);
	else
		TW_FAIL(tw__rdv_reply_decode(more, b->len + 1, &r), TW_EPROTO);
	free(more);
}

static void test_hello(void **state)
{
	(void)state;
	tw__rdv_hello h = sample_hello(), back;
	tw_buf b;
	TW_PASS(tw__rdv_hello_encode(&h, &b));
	TW_PASS(tw__rdv_hello_decode(b.data, b.len, &back));
	assert_int_equal(back.size, 4);
	assert_int_equal(back.rank, 3);
	assert_string_equal(back.link_id, "job/7");
	assert_string_equal(back.addr, "tcp://[::1]:40123");
	// A hello is not a reply, and the other way round.
	tw__rdv_reply r;
	TW_FAIL(tw__rdv_reply_decode(b.data, b.len, &r), TW_EPROTO);
	expect_prefixes_refused(&b);
	expect_longer_refused(&b, true);

	// Each field out of range, patched into the encoding.
	unsigned char *p = b.data;
	size_t offs[] = { 0, 4, 5, 6 }; // magic, version, type, reserved
	for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
		p[offs[i]] ^= 0x40;
		TW_FAIL(tw__rdv_hello_decode(p, b.len, &back), TW_EPROTO);
		p[offs[i]] ^= 0x40;
	}
	p[12] = 4; // rank 4 of 4
	TW_FAIL(tw__rdv_hello_decode(p, b.len, &back), TW_EPROTO);
	p[12] = 3;
	memset(p + 8, 0, 4); // size 0
	TW_FAIL(tw__rdv_hello_decode(p, b.len, &back), TW_EPROTO);
	memset(p + 8, 0xff, 4); // size past the limit
	TW_FAIL(tw__rdv_hello_decode(p, b.len, &back), TW_EPROTO);
	p[8] = 4;
	memset(p + 9, 0, 3);
	p[18] = '\n'; // a control character in the link id
	TW_FAIL(tw__rdv_hello_decode(p, b.len, &back), TW_EPROTO);
	p[18] = 'j';
	TW_PASS(tw__rdv_hello_decode(p, b.len, &back));
	tw_buf_free(&b);

	// Encoding refuses what could not be decoded.
	h.addr[0] = '\0';
	TW_FAIL(tw__rdv_hello_encode(&h, &b), TW_EINVAL);
}

static void test_roster(void **state)
{
	(void)state;
	char *addrs[3]
	    = { "tcp://10.0.0.1:29500", "tcp://10.0.0.2:1", "tcp://h:65535" };
	tw_buf b;
	TW_PASS(tw__rdv_roster_encode(addrs, 3, &b));
	tw__rdv_reply r;
	TW_PASS(tw__rdv_reply_decode(b.data, b.len, &r));
	assert_int_equal(r.status, TW_OK);
	assert_int_equal(r.size, 3);
	for (int i = 0; i < 3; i++)
		assert_string_equal(r.addrs[i], addrs[i]);
	tw__rdv_reply_free(&r);
	assert_null(r.addrs);
	tw__rdv_hello h;
	TW_FAIL(tw__rdv_hello_decode(b.data, b.len, &h), TW_EPROTO);
	expect_prefixes_refused(&b);
	expect_longer_refused(&b, false);
	// A count larger than the bytes could hold.
	unsigned char *p = b.data;
	p[8] = 200;
	TW_FAIL(tw__rdv_reply_decode(p, b.len, &r), TW_EPROTO);
	p[8] = 0;
	TW_FAIL(tw__rdv_reply_decode(p, b.len, &r), TW_EPROTO);
	p[8] = 3;
	p[12] = 0; // an empty address
	p[13] = 0;
	TW_FAIL(tw__rdv_reply_decode(p, b.len, &r), TW_EPROTO);
	tw_buf_free(&b);

	TW_FAIL(tw__rdv_roster_encode(addrs, 0, &b), TW_EINVAL);
	char *empty[1] = { "" };
	TW_FAIL(tw__rdv_roster_encode(empty, 1, &b), TW_EINVAL);
}

static void test_refuse(void **state)
{
	(void)state;
	tw_buf b;
	TW_PASS(tw__rdv_refuse_encode(TW_EINVAL, "rank 2 expects 3", &b));
	tw__rdv_reply r;
	TW_PASS(tw__rdv_reply_decode(b.data, b.len, &r));
	assert_int_equal(r.status, TW_EINVAL);
	assert_string_equal(r.why, "rank 2 expects 3");
	assert_null(r.addrs);
	expect_prefixes_refused(&b);
	expect_longer_refused(&b, false);
	unsigned char *p = b.data;
	memset(p + 8, 0, 4); // TW_OK is not a refusal
	TW_FAIL(tw__rdv_reply_decode(p, b.len, &r), TW_EPROTO);
	p[8] = 5; // nor a positive status
	TW_FAIL(tw__rdv_reply_decode(p, b.len, &r), TW_EPROTO);
	tw_buf_free(&b);
	TW_FAIL(tw__rdv_refuse_encode(TW_OK, "x", &b), TW_EINVAL);
	TW_FAIL(tw__rdv_refuse_encode(TW_EINVAL, "", &b), TW_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hello),
		cmocka_unit_test(test_roster),
		cmocka_unit_test(test_refuse),
	};
	return cmocka_run_group_tests_name("rdv_wire", tests, NULL, NULL);
}
