// Tests of the tcp:// wire format: every record round-trips, every prefix
// of a valid record asks for more bytes, and hostile bytes (garbage, a
// wrong version, oversized lengths, an out-of-order sequence) are refused
// from the first byte that shows them, before anything is allocated.

#include <string.h>

#include "core/names.h"
#include "testutil.h"
#include "transport/tcp/tcp_proto.h"

static size_t make_hello(unsigned char *buf, size_t cap, const char *id,
    const char *addr, uint16_t flags)
{
	tw__tcp_hello h;
	memset(&h, 0, sizeof(h));
	h.flags = flags;
	h.rank = 3;
	h.stripe = 1;
	h.instance = UINT64_C(0x0102030405060708);
	h.session = UINT64_C(0x1112131415161718);
	h.received = 77;
	for (int i = 0; i < TW_TCP_NONCE_LEN; i++)
		h.nonce[i] = (unsigned char)(0xa0 + i);
	h.link_id = id;
	h.link_id_len = strlen(id);
	h.addr = addr;
	h.addr_len = strlen(addr);
	return tw__tcp_hello_encode(buf, cap, &h);
}

static void test_hello_roundtrip(void **state)
{
	unsigned char buf[TW_TCP_HELLO_MAX];
	size_t n = make_hello(
	    buf, sizeof(buf), "job/7", "127.0.0.1:4000", TW_TCP_CAP_SECRET);
	assert_int_equal(n, TW_TCP_HELLO_FIXED + 5 + 14);
	tw__tcp_hello h;
	const char *why = NULL;
	assert_int_equal(tw__tcp_hello_decode(buf, n, &h, &why), (int)n);
	assert_int_equal(h.version, TW_TCP_PROTO_VERSION);
	assert_int_equal(h.flags, TW_TCP_CAP_SECRET);
	assert_int_equal(h.rank, 3);
	assert_int_equal(h.stripe, 1);
	assert_true(h.instance == UINT64_C(0x0102030405060708));
	assert_int_equal(h.nonce[31], 0xa0 + 31);
	assert_int_equal(h.link_id_len, 5);
	assert_memory_equal(h.link_id, "job/7", 5);
	assert_memory_equal(h.addr, "127.0.0.1:4000", 14);
	// Bytes after the record belong to the next one.
	assert_int_equal(tw__tcp_hello_decode(buf, n, &h, &why), (int)n);

	// Every strict prefix is incomplete, never an error.
	for (size_t i = 0; i < n; i++)
		assert_int_equal(
		    tw__tcp_hello_decode(buf, i, &h, &why), TW_EAGAIN);

	// Encoding refuses what decoding would refuse, and short buffers.
	assert_int_equal(
	    make_hello(buf, n - 1, "job/7", "127.0.0.1:4000", 0), 0);
	assert_int_equal(make_hello(buf, sizeof(buf), "bad id", "a:1", 0), 0);
	assert_int_equal(make_hello(buf, sizeof(buf), "ok", "", 0), 0);
}

static void test_hello_hostile(void **state)
{
	unsigned char buf[TW_TCP_HELLO_MAX];
	tw__tcp_hello h;
	const char *why = NULL;
	size_t n = make_hello(buf, sizeof(buf), "root", "[::1]:9", 0);
	assert_true(n > 0);

	// Garbage is refused at its first byte.
	unsigned char g[1] = { 'G' };
	assert_int_equal(tw__tcp_hello_decode(g, 1, &h, &why), TW_EPROTO);
	assert_non_null(why);
	// 64 KiB of zeros.
	static unsigned char zeros[65536];
	assert_int_equal(
	    tw__tcp_hello_decode(zeros, sizeof(zeros), &h, &why), TW_EPROTO);

	// A wrong version, as soon as its two bytes are there.
	unsigned char v[TW_TCP_HELLO_MAX];
	memcpy(v, buf, n);
	v[5] = TW_TCP_PROTO_VERSION + 1;
	assert_int_equal(tw__tcp_hello_decode(v, 6, &h, &why), TW_EPROTO);
	assert_string_equal(why, "unsupported protocol version");

	// Lengths out of range, an invalid link id, NUL or spaces.
	memcpy(v, buf, n);
	v[14] = 0;
	assert_int_equal(tw__tcp_hello_decode(v, n, &h, &why), TW_EPROTO);
	v[14] = TW_LINK_ID_MAX + 1;
	assert_int_equal(tw__tcp_hello_decode(v, n, &h, &why), TW_EPROTO);
	memcpy(v, buf, n);
	v[15] = 0;
	assert_int_equal(tw__tcp_hello_decode(v, n, &h, &why), TW_EPROTO);
	memcpy(v, buf, n);
	v[TW_TCP_HELLO_FIXED + 1] = '\0';
	assert_int_equal(tw__tcp_hello_decode(v, n, &h, &why), TW_EPROTO);
	memcpy(v, buf, n);
	v[TW_TCP_HELLO_FIXED + 4] = ' ';
	assert_int_equal(tw__tcp_hello_decode(v, n, &h, &why), TW_EPROTO);
	memcpy(v, buf, n);
	memset(v + 16, 0, 8);
	assert_int_equal(tw__tcp_hello_decode(v, n, &h, &why), TW_EPROTO);
}

static void test_auth(void **state)
{
	unsigned char mac[TW_TCP_MAC_LEN], got[TW_TCP_MAC_LEN];
	unsigned char buf[TW_TCP_AUTH_LEN];
	const char *why = NULL;
	for (int i = 0; i < TW_TCP_MAC_LEN; i++)
		mac[i] = (unsigned char)i;
	assert_int_equal(tw__tcp_auth_encode(buf, sizeof(buf) - 1, mac), 0);
	assert_int_equal(
	    tw__tcp_auth_encode(buf, sizeof(buf), mac), TW_TCP_AUTH_LEN);
	assert_int_equal(
	    tw__tcp_auth_decode(buf, sizeof(buf), got, &why), TW_TCP_AUTH_LEN);
	assert_memory_equal(mac, got, TW_TCP_MAC_LEN);
	for (size_t i = 0; i < sizeof(buf); i++)
		assert_int_equal(
		    tw__tcp_auth_decode(buf, i, got, &why), TW_EAGAIN);
	buf[2] = 'X';
	assert_int_equal(tw__tcp_auth_decode(buf, 3, got, &why), TW_EPROTO);
}

static size_t make_hdr(unsigned char *buf, size_t cap, uint8_t type,
    const char *key, uint64_t len, uint64_t seq, uint64_t ack)
{
	tw__tcp_hdr h;
	memset(&h, 0, sizeof(h));
	h.type = type;
	h.slot = 7;
	h.len = len;
	h.seq = seq;
	h.ack = ack;
	h.rcvd = ack + 1;
	h.key = key;
	h.key_len = key ? strlen(key) : 0;
	return tw__tcp_hdr_encode(buf, cap, &h);
}

static void test_hdr_roundtrip(void **state)
{
	unsigned char buf[TW_TCP_HDR_LEN + TW_KEY_MAX];
	tw__tcp_hdr h;
	const char *why = NULL;
	size_t n
	    = make_hdr(buf, sizeof(buf), TW_TCP_F_DATA, "root:x", 1000, 5, 4);
	assert_int_equal(n, TW_TCP_HDR_LEN + 6);
	assert_int_equal(tw__tcp_hdr_decode(buf, n, 1000, &h, &why), (int)n);
	assert_int_equal(h.type, TW_TCP_F_DATA);
	assert_int_equal(h.slot, 7);
	assert_true(h.len == 1000 && h.seq == 5 && h.ack == 4 && h.rcvd == 5);
	assert_int_equal(h.key_len, 6);
	assert_memory_equal(h.key, "root:x", 6);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(
		    tw__tcp_hdr_decode(buf, i, 1000, &h, &why), TW_EAGAIN);

	// An ack is never ahead of what was received.
	tw__tcp_hdr bad
	    = { .type = TW_TCP_F_ACK, .seq = 1, .ack = 3, .rcvd = 2 };
	n = tw__tcp_hdr_encode(buf, sizeof(buf), &bad);
	TW_FAIL(tw__tcp_hdr_decode(buf, n, 0, &h, &why), TW_EPROTO);

	// Control frames carry no key.
	n = make_hdr(buf, sizeof(buf), TW_TCP_F_PING, NULL, 0, 1, 0);
	assert_int_equal(tw__tcp_hdr_decode(buf, n, 0, &h, &why), (int)n);
	assert_null(h.key);

	// OPEN carries a link id and (rank, size, window, largest message,
	// proof).
	n = make_hdr(
	    buf, sizeof(buf), TW_TCP_F_OPEN, "a/b", TW_TCP_OPEN_LEN, 2, 0);
	assert_int_equal(tw__tcp_hdr_decode(buf, n, 0, &h, &why), (int)n);
	unsigned char open[TW_TCP_OPEN_LEN];
	tw__tcp_open o
	    = { .rank = 1, .size = 3, .window = 4096, .max_msg = 1u << 30 },
	    d;
	memset(o.proof, 0xA5, sizeof(o.proof));
	tw__tcp_open_encode(open, &o);
	TW_PASS(tw__tcp_open_decode(open, sizeof(open), &d));
	assert_true(d.rank == 1 && d.size == 3 && d.window == 4096
	    && d.max_msg == 1u << 30);
	assert_memory_equal(d.proof, o.proof, sizeof(o.proof));
	o.rank = 3; // not a party of 3
	tw__tcp_open_encode(open, &o);
	TW_FAIL(tw__tcp_open_decode(open, sizeof(open), &d), TW_EPROTO);
	o.rank = 0;
	o.window = 0; // no window
	tw__tcp_open_encode(open, &o);
	TW_FAIL(tw__tcp_open_decode(open, sizeof(open), &d), TW_EPROTO);
	TW_FAIL(tw__tcp_open_decode(open, 4, &d), TW_EPROTO);
	// An OPEN of another length is refused by the header decoder.
	n = make_hdr(buf, sizeof(buf), TW_TCP_F_OPEN, "a/b", 8, 2, 0);
	TW_FAIL(tw__tcp_hdr_decode(buf, n, 0, &h, &why), TW_EPROTO);

	// CREDIT carries exactly one counter and no key.
	n = make_hdr(
	    buf, sizeof(buf), TW_TCP_F_CREDIT, NULL, TW_TCP_CREDIT_LEN, 3, 0);
	assert_int_equal(tw__tcp_hdr_decode(buf, n, 0, &h, &why), (int)n);
	unsigned char credit[TW_TCP_CREDIT_LEN];
	uint64_t taken = 0;
	tw__tcp_credit_encode(credit, UINT64_C(0x0102030405060708));
	TW_PASS(tw__tcp_credit_decode(credit, sizeof(credit), &taken));
	assert_true(taken == UINT64_C(0x0102030405060708));
	TW_FAIL(tw__tcp_credit_decode(credit, 7, &taken), TW_EPROTO);
	n = make_hdr(buf, sizeof(buf), TW_TCP_F_CREDIT, NULL, 9, 3, 0);
	TW_FAIL(tw__tcp_hdr_decode(buf, n, 0, &h, &why), TW_EPROTO);
	n = make_hdr(buf, sizeof(buf), TW_TCP_F_UNBIND, "k:t", 0, 3, 0);
	if (n > 0)
		TW_FAIL(tw__tcp_hdr_decode(buf, n, 0, &h, &why), TW_EPROTO);
	n = make_hdr(buf, sizeof(buf), TW_TCP_F_CREDIT_REQ, NULL, 0, 3, 0);
	assert_int_equal(tw__tcp_hdr_decode(buf, n, 0, &h, &why), (int)n);

	// STRIPED: a key and (id, total); CHUNK: no key, a prefix and bytes.
	n = make_hdr(buf, sizeof(buf), TW_TCP_F_STRIPED, "k:t",
	    TW_TCP_STRIPED_LEN, 3, 0);
	assert_int_equal(tw__tcp_hdr_decode(buf, n, 0, &h, &why), (int)n);
	n = make_hdr(buf, sizeof(buf), TW_TCP_F_STRIPED, NULL,
	    TW_TCP_STRIPED_LEN, 3, 0);
	TW_FAIL(tw__tcp_hdr_decode(buf, n, 0, &h, &why), TW_EPROTO);
	tw__tcp_chunk ck = { .id = 7, .total = 10000, .offset = 4096 }, ckd;
	unsigned char striped[TW_TCP_STRIPED_LEN], prefix[TW_TCP_CHUNK_PREFIX];
	tw__tcp_striped_encode(striped, &ck);
	TW_PASS(tw__tcp_striped_decode(striped, sizeof(striped), &ckd));
	assert_true(ckd.id == 7 && ckd.total == 10000 && ckd.offset == 0);
	tw__tcp_chunk_encode(prefix, &ck);
	TW_PASS(tw__tcp_chunk_decode(prefix, sizeof(prefix), &ckd));
	assert_true(ckd.id == 7 && ckd.total == 10000 && ckd.offset == 4096);
	ck.offset = 10000; // past the end
	tw__tcp_chunk_encode(prefix, &ck);
	TW_FAIL(tw__tcp_chunk_decode(prefix, sizeof(prefix), &ckd), TW_EPROTO);
	ck.total = 0; // an empty striped message
	tw__tcp_striped_encode(striped, &ck);
	TW_FAIL(
	    tw__tcp_striped_decode(striped, sizeof(striped), &ckd), TW_EPROTO);
	n = make_hdr(buf, sizeof(buf), TW_TCP_F_CHUNK, NULL, 100, 3, 0);
	assert_int_equal(tw__tcp_hdr_decode(buf, n, 1000, &h, &why), (int)n);
	// A chunk must carry bytes beyond its prefix, and within the limit.
	n = make_hdr(
	    buf, sizeof(buf), TW_TCP_F_CHUNK, NULL, TW_TCP_CHUNK_PREFIX, 3, 0);
	TW_FAIL(tw__tcp_hdr_decode(buf, n, 1000, &h, &why), TW_EPROTO);
	n = make_hdr(buf, sizeof(buf), TW_TCP_F_CHUNK, NULL,
	    1000 + TW_TCP_CHUNK_PREFIX, 3, 0);
	assert_int_equal(tw__tcp_hdr_decode(buf, n, 1000, &h, &why), (int)n);
	n = make_hdr(buf, sizeof(buf), TW_TCP_F_CHUNK, NULL,
	    1001 + TW_TCP_CHUNK_PREFIX, 3, 0);
	TW_FAIL(tw__tcp_hdr_decode(buf, n, 1000, &h, &why), TW_EPROTO);

	// CANCEL carries a message id and no key.
	n = make_hdr(
	    buf, sizeof(buf), TW_TCP_F_CANCEL, NULL, TW_TCP_CANCEL_LEN, 3, 0);
	assert_int_equal(tw__tcp_hdr_decode(buf, n, 0, &h, &why), (int)n);
	n = make_hdr(buf, sizeof(buf), TW_TCP_F_CANCEL, NULL, 4, 3, 0);
	TW_FAIL(tw__tcp_hdr_decode(buf, n, 0, &h, &why), TW_EPROTO);
	unsigned char cancel[TW_TCP_CANCEL_LEN];
	uint64_t id = 0;
	tw__tcp_cancel_encode(cancel, 0x0102030405060708);
	TW_PASS(tw__tcp_cancel_decode(cancel, sizeof(cancel), &id));
	assert_true(id == 0x0102030405060708);
	TW_FAIL(tw__tcp_cancel_decode(cancel, 7, &id), TW_EPROTO);

	// A key longer than any key is refused by the encoder.
	char long_key[TW_KEY_MAX + 1];
	memset(long_key, 'k', TW_KEY_MAX);
	long_key[TW_KEY_MAX] = '\0';
	assert_int_equal(
	    make_hdr(buf, sizeof(buf), TW_TCP_F_DATA, long_key, 0, 1, 0), 0);
}

// The short copy copies exactly n bytes at every length around its
// thresholds, from any alignment, and nothing around them.
static void test_copy_short(void **state)
{
	(void)state;
	unsigned char src[80], dst[80];
	for (size_t i = 0; i < sizeof(src); i++)
		src[i] = (unsigned char)(i * 7 + 1);
	for (size_t off = 0; off < 8; off++) {
		for (size_t n = 0; n <= 64; n++) {
			memset(dst, 0xee, sizeof(dst));
			tw__tcp_copy_short(dst + off, src + 8 - off, n);
			for (size_t i = 0; i < sizeof(dst); i++) {
				bool in = i >= off && i < off + n;
				unsigned char want
				    = in ? src[8 - off + (i - off)] : 0xee;
				if (dst[i] != want)
					fail_msg("n %zu off %zu: byte %zu", n,
					    off, i);
			}
		}
	}
	tw__tcp_copy_short(dst, NULL, 0);
}

static void test_hdr_hostile(void **state)
{
	unsigned char buf[TW_TCP_HDR_LEN + TW_KEY_MAX];
	unsigned char v[sizeof(buf)];
	tw__tcp_hdr h;
	const char *why = NULL;
	size_t n = make_hdr(buf, sizeof(buf), TW_TCP_F_DATA, "k:t", 10, 1, 0);

	// Unknown type and flags are refused from their byte.
	memcpy(v, buf, n);
	v[0] = 0;
	assert_int_equal(tw__tcp_hdr_decode(v, 1, 100, &h, &why), TW_EPROTO);
	v[0] = 200;
	assert_int_equal(tw__tcp_hdr_decode(v, 1, 100, &h, &why), TW_EPROTO);
	memcpy(v, buf, n);
	v[1] = 1;
	assert_int_equal(tw__tcp_hdr_decode(v, 2, 100, &h, &why), TW_EPROTO);

	// A payload of 2^63 bytes, or just over the limit, is refused
	// before its key has arrived: nothing is allocated for it.
	memcpy(v, buf, n);
	memset(v + 8, 0, 8);
	v[8] = 0x80;
	assert_int_equal(
	    tw__tcp_hdr_decode(v, TW_TCP_HDR_LEN, UINT64_MAX - 1, &h, &why),
	    TW_EAGAIN);
	assert_int_equal(
	    tw__tcp_hdr_decode(v, TW_TCP_HDR_LEN, 1u << 20, &h, &why),
	    TW_EPROTO);
	assert_string_equal(why, "payload length out of range");
	assert_int_equal(tw__tcp_hdr_decode(buf, n, 9, &h, &why), TW_EPROTO);

	// Key lengths: too long for the type, missing, or a NUL inside.
	memcpy(v, buf, n);
	v[2] = 0xff;
	v[3] = 0xff;
	assert_int_equal(tw__tcp_hdr_decode(v, 4, 100, &h, &why), TW_EPROTO);
	memcpy(v, buf, n);
	v[3] = 0;
	assert_int_equal(tw__tcp_hdr_decode(v, 4, 100, &h, &why), TW_EPROTO);
	memcpy(v, buf, n);
	v[TW_TCP_HDR_LEN + 1] = '\0';
	assert_int_equal(tw__tcp_hdr_decode(v, n, 100, &h, &why), TW_EPROTO);
	// A control frame with a key or a payload, a zero sequence number.
	n = make_hdr(buf, sizeof(buf), TW_TCP_F_ACK, NULL, 0, 1, 0);
	memcpy(v, buf, n);
	v[15] = 1;
	assert_int_equal(tw__tcp_hdr_decode(v, n, 100, &h, &why), TW_EPROTO);
	memcpy(v, buf, n);
	v[23] = 0;
	assert_int_equal(tw__tcp_hdr_decode(v, n, 100, &h, &why), TW_EPROTO);
	// An OPEN whose key is not a link id.
	n = make_hdr(
	    buf, sizeof(buf), TW_TCP_F_OPEN, "a:b", TW_TCP_OPEN_LEN, 1, 0);
	assert_int_equal(tw__tcp_hdr_decode(buf, n, 0, &h, &why), TW_EPROTO);
}

static void test_rx_order(void **state)
{
	tw__tcp_rx st;
	tw__tcp_hdr h;
	const char *why = NULL;
	tw__tcp_rx_init(&st);
	memset(&h, 0, sizeof(h));
	h.seq = 1;
	h.ack = 0;
	TW_PASS(tw__tcp_rx_step(&st, &h, 0, &why));
	h.seq = 2;
	h.ack = 3;
	// The peer acknowledges three frames while we sent two.
	TW_FAIL(tw__tcp_rx_step(&st, &h, 2, &why), TW_EPROTO);
	h.ack = 2;
	h.rcvd = 3; // received three while we sent two
	TW_FAIL(tw__tcp_rx_step(&st, &h, 2, &why), TW_EPROTO);
	assert_string_equal(why, "reception of frames never sent");
	h.rcvd = 2;
	TW_PASS(tw__tcp_rx_step(&st, &h, 2, &why));
	h.seq = 3;
	h.rcvd = 1; // reception never goes back
	TW_FAIL(tw__tcp_rx_step(&st, &h, 2, &why), TW_EPROTO);
	assert_string_equal(why, "reception went backwards");
	h.rcvd = 2;
	h.ack = 1;
	TW_FAIL(tw__tcp_rx_step(&st, &h, 2, &why), TW_EPROTO);
	h.seq = 4;
	h.ack = 2;
	TW_FAIL(tw__tcp_rx_step(&st, &h, 2, &why), TW_EPROTO);
	assert_string_equal(why, "sequence number out of order");
	h.seq = 2;
	TW_FAIL(tw__tcp_rx_step(&st, &h, 2, &why), TW_EPROTO);

	// A resumed stream goes on after the last frame handled; what the
	// peer acknowledged stays.
	tw__tcp_rx_resume(&st, 2);
	h.seq = 3;
	h.ack = 2;
	h.rcvd = 2;
	TW_PASS(tw__tcp_rx_step(&st, &h, 2, &why));
	h.seq = 4;
	h.ack = 1;
	TW_FAIL(tw__tcp_rx_step(&st, &h, 2, &why), TW_EPROTO);
}

static void test_addr_parse(void **state)
{
	char host[TW_TCP_ADDR_MAX + 1];
	uint16_t port = 0;
	TW_PASS(tw__tcp_addr_parse(
	    "tcp://127.0.0.1:4000", host, sizeof(host), &port));
	assert_string_equal(host, "127.0.0.1");
	assert_int_equal(port, 4000);
	TW_PASS(
	    tw__tcp_addr_parse("tcp://[::1]:0", host, sizeof(host), &port));
	assert_string_equal(host, "::1");
	assert_int_equal(port, 0);
	TW_PASS(tw__tcp_addr_parse(
	    "tcp://node-3.example:65535", host, sizeof(host), &port));
	assert_string_equal(host, "node-3.example");
	const char *bad[]
	    = { "tcp://", "tcp://host", "tcp://host:", "tcp://:80",
		      "tcp://host:65536", "tcp://host:12a", "tcp://[::1:80",
		      "tcp://[::1]80", "tcp://::1:80", "tcp://h st:1",
		      "mem://a", "tcp://[zz]:1", "tcp://h:123456" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (tw__tcp_addr_parse(bad[i], host, sizeof(host), &port)
		    != TW_EINVAL)
			fail_msg("accepted %s", bad[i]);
	TW_FAIL(
	    tw__tcp_addr_parse(NULL, host, sizeof(host), &port), TW_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hello_roundtrip),
		cmocka_unit_test(test_hello_hostile),
		cmocka_unit_test(test_auth),
		cmocka_unit_test(test_hdr_roundtrip),
		cmocka_unit_test(test_hdr_hostile),
		cmocka_unit_test(test_copy_short),
		cmocka_unit_test(test_rx_order),
		cmocka_unit_test(test_addr_parse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
