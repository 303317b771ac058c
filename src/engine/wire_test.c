// Tests of the transfer engine's bytes (engine/wire.c): the info blob, the
// memory descriptor and the frame header round-trip byte for byte; every
// way a blob can be wrong (truncated at any length, trailing bytes, magic,
// version, reserved fields, lengths, names, addresses, access bits, kinds,
// frame types, statuses, lengths on frames that carry none) is refused;
// and seeded random mutations of valid blobs either decode to something
// valid that encodes back to the same bytes, or are refused -- never a
// crash or a read outside the buffer (each input is a heap copy of exactly
// its length, so that AddressSanitizer sees one byte too far).

#include <string.h>

#include <tagwire/engine.h>

#include "engine/wire.h"
#include "testutil.h"

// --- helpers ---------------------------------------------------------------

static void set16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

static void set32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void set64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t rng_state;

static uint64_t rng(void)
{
	// xorshift64*: reproducible from the seed on every platform.
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * UINT64_C(2685821657736338717);
}

static void make_info(
    tw__eng_info *in, uint64_t instance, const char *name, const char *addr)
{
	memset(in, 0, sizeof(*in));
	in->instance = instance;
	snprintf(in->name, sizeof(in->name), "%s", name);
	snprintf(in->addr, sizeof(in->addr), "%s", addr);
}

// Encodes `in` into buf (TW_ENG_INFO_FIXED + 64 + 512 bytes at least).
static size_t info_blob(const tw__eng_info *in, unsigned char *buf)
{
	size_t n = tw__eng_info_size(in);
	assert_true(n > 0);
	tw__eng_info_encode(in, buf);
	return n;
}

// Decodes a heap copy of exactly buf[0..len).
static int info_dec(const unsigned char *buf, size_t len, tw__eng_info *out)
{
	unsigned char *copy = malloc(len > 0 ? len : 1);
	assert_non_null(copy);
	memcpy(copy, buf, len);
	int rv = tw__eng_info_decode(copy, len, out);
	free(copy);
	return rv;
}

static int desc_dec(const unsigned char *buf, size_t len, tw__eng_desc *out)
{
	unsigned char *copy = malloc(len > 0 ? len : 1);
	assert_non_null(copy);
	memcpy(copy, buf, len);
	int rv = tw__eng_desc_decode(copy, len, out);
	free(copy);
	return rv;
}

static int hdr_dec(const unsigned char *buf, size_t len, tw__eng_hdr *out)
{
	unsigned char *copy = malloc(len > 0 ? len : 1);
	assert_non_null(copy);
	memcpy(copy, buf, len);
	int rv = tw__eng_hdr_decode(copy, len, out);
	free(copy);
	return rv;
}

#define INFO_BUF (TW_ENG_INFO_FIXED + TW_ENG_NAME_MAX + TW_ENG_ADDR_MAX + 16)

// Rewrites the name and address of a blob with explicit lengths and bytes
// (which need not be valid); returns the new length.
static size_t info_raw(unsigned char *buf, const void *name, size_t nl,
    const void *addr, size_t al)
{
	memcpy(buf, TW_ENG_INFO_MAGIC, 4);
	set16(buf + 4, TW_ENG_INFO_VERSION);
	set16(buf + 6, 0);
	set64(buf + 8, 42);
	set16(buf + 16, (uint16_t)nl);
	set16(buf + 18, (uint16_t)al);
	memcpy(buf + TW_ENG_INFO_FIXED, name, nl);
	memcpy(buf + TW_ENG_INFO_FIXED + nl, addr, al);
	return TW_ENG_INFO_FIXED + nl + al;
}

// --- names -----------------------------------------------------------------

static void test_name_ok(void **state)
{
	(void)state;
	char name[TW_ENG_NAME_MAX + 2];
	assert_true(tw__eng_name_ok("a"));
	assert_true(tw__eng_name_ok("Engine-7.node_A"));
	memset(name, 'x', TW_ENG_NAME_MAX);
	name[TW_ENG_NAME_MAX] = '\0';
	assert_true(tw__eng_name_ok(name));
	name[TW_ENG_NAME_MAX] = 'x';
	name[TW_ENG_NAME_MAX + 1] = '\0';
	assert_false(tw__eng_name_ok(name));
	assert_false(tw__eng_name_ok(NULL));
	assert_false(tw__eng_name_ok(""));
	const char *bad[] = { "a b", "a/b", "a:b", "a@b", "a\tb", "é", "a\x7f",
		"a+b", "a,b", "~" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (tw__eng_name_ok(bad[i]))
			fail_msg("accepted name '%s'", bad[i]);
}

// --- info blob -------------------------------------------------------------

static void test_info_roundtrip(void **state)
{
	(void)state;
	char longname[TW_ENG_NAME_MAX + 1], longaddr[TW_ENG_ADDR_MAX + 1];
	memset(longname, 'N', TW_ENG_NAME_MAX);
	longname[TW_ENG_NAME_MAX] = '\0';
	memcpy(longaddr, "mem://", 6);
	memset(longaddr + 6, '~', TW_ENG_ADDR_MAX - 6);
	longaddr[TW_ENG_ADDR_MAX] = '\0';
	const struct {
		uint64_t instance;
		const char *name, *addr;
	} cases[] = {
		{ 1, "a", "tcp://h:1" },
		{ UINT64_MAX, "engine-0", "tcp://[::1]:65535" },
		{ UINT64_C(0x0102030405060708), "E.x_y", "mem://pool" },
		{ 7, longname, longaddr },
		{ 9, "n", "mem://!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		tw__eng_info in, out;
		unsigned char buf[INFO_BUF], again[INFO_BUF];
		make_info(
		    &in, cases[i].instance, cases[i].name, cases[i].addr);
		size_t nl = strlen(cases[i].name), al = strlen(cases[i].addr);
		size_t n = info_blob(&in, buf);
		assert_int_equal(n, TW_ENG_INFO_FIXED + nl + al);
		memset(&out, 0xa5, sizeof(out));
		TW_PASS(info_dec(buf, n, &out));
		assert_true(out.instance == cases[i].instance);
		assert_string_equal(out.name, cases[i].name);
		assert_string_equal(out.addr, cases[i].addr);
		assert_int_equal(tw__eng_info_size(&out), n);
		tw__eng_info_encode(&out, again);
		assert_memory_equal(buf, again, n);
	}

	// The layout, byte for byte.
	tw__eng_info in;
	unsigned char buf[INFO_BUF];
	make_info(&in, UINT64_C(0x1122334455667788), "ab", "mem://q");
	size_t n = info_blob(&in, buf);
	static const unsigned char want[] = { 'T', 'W', 'E', 'I', 1, 0, 0, 0,
		0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 2, 0, 7, 0,
		'a', 'b', 'm', 'e', 'm', ':', '/', '/', 'q' };
	assert_int_equal(n, sizeof(want));
	assert_memory_equal(buf, want, n);

	// The size is 0 for what the decoder would refuse.
	make_info(&in, 1, "", "tcp://h:1");
	assert_int_equal(tw__eng_info_size(&in), 0);
	make_info(&in, 1, "a b", "tcp://h:1");
	assert_int_equal(tw__eng_info_size(&in), 0);
	make_info(&in, 1, "a", "udp://h:1");
	assert_int_equal(tw__eng_info_size(&in), 0);
	make_info(&in, 1, "a", "tcp://");
	assert_int_equal(tw__eng_info_size(&in), 0);
	make_info(&in, 1, "a", "tcp://a b");
	assert_int_equal(tw__eng_info_size(&in), 0);
	make_info(&in, 1, "a", "");
	assert_int_equal(tw__eng_info_size(&in), 0);
	// Fields filled to the brim, without their terminating NUL.
	make_info(&in, 1, "a", "tcp://h:1");
	memset(in.name, 'n', sizeof(in.name));
	assert_int_equal(tw__eng_info_size(&in), 0);
	make_info(&in, 1, "a", "tcp://h:1");
	memcpy(in.addr, "tcp://", 6);
	memset(in.addr + 6, 'h', sizeof(in.addr) - 6);
	assert_int_equal(tw__eng_info_size(&in), 0);
}

static void test_info_hostile(void **state)
{
	(void)state;
	tw__eng_info in, out;
	unsigned char buf[INFO_BUF], v[INFO_BUF + 1];
	make_info(&in, UINT64_C(0xfeedface), "node-1", "tcp://10.0.0.1:4000");
	size_t n = info_blob(&in, buf);

	TW_FAIL(tw__eng_info_decode(NULL, n, &out), TW_EINVAL);
	TW_FAIL(tw__eng_info_decode(NULL, 0, &out), TW_EINVAL);

	// Truncated at every length, and one byte too many.
	for (size_t i = 0; i < n; i++)
		TW_FAIL(info_dec(buf, i, &out), TW_EINVAL);
	memcpy(v, buf, n);
	v[n] = 'x';
	TW_FAIL(info_dec(v, n + 1, &out), TW_EINVAL);
	v[n] = '\0';
	TW_FAIL(info_dec(v, n + 1, &out), TW_EINVAL);
	TW_PASS(info_dec(v, n, &out));

	// Magic, each byte.
	for (size_t i = 0; i < 4; i++) {
		memcpy(v, buf, n);
		v[i] ^= 0x20;
		TW_FAIL(info_dec(v, n, &out), TW_EINVAL);
	}
	memcpy(v, buf, n);
	memcpy(v, TW_ENG_DESC_MAGIC, 4);
	TW_FAIL(info_dec(v, n, &out), TW_EINVAL);

	// Version 0, 2 and one with the high byte set.
	const uint16_t versions[] = { 0, 2, 0x0101, 0xffff };
	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
		memcpy(v, buf, n);
		set16(v + 4, versions[i]);
		TW_FAIL(info_dec(v, n, &out), TW_EINVAL);
	}

	// The reserved u16 at 6.
	for (size_t i = 6; i < 8; i++) {
		memcpy(v, buf, n);
		v[i] = 1;
		TW_FAIL(info_dec(v, n, &out), TW_EINVAL);
	}

	// Instance 0; any other instance is fine.
	memcpy(v, buf, n);
	set64(v + 8, 0);
	TW_FAIL(info_dec(v, n, &out), TW_EINVAL);
	set64(v + 8, UINT64_C(1) << 63);
	TW_PASS(info_dec(v, n, &out));

	// Lengths that do not add up to the blob: each one off by one either
	// way, and shifted between name and address at the same total.
	const int deltas[] = { -1, 1 };
	for (size_t f = 16; f <= 18; f += 2)
		for (size_t d = 0; d < 2; d++) {
			memcpy(v, buf, n);
			set16(v + f, (uint16_t)(v[f] + deltas[d]));
			TW_FAIL(info_dec(v, n, &out), TW_EINVAL);
		}
	memcpy(v, buf, n);
	set16(v + 16, 7); // "node-1t", "cp://...": the scheme is gone
	set16(v + 18, 18);
	TW_FAIL(info_dec(v, n, &out), TW_EINVAL);
	memcpy(v, buf, n);
	set16(v + 16, 0xffff);
	set16(v + 18, 0xffff);
	TW_FAIL(info_dec(v, n, &out), TW_EINVAL);

	// Names: empty, too long, bad characters anywhere.
	const char *addr = "mem://x";
	size_t len = info_raw(v, "", 0, addr, 7);
	TW_FAIL(info_dec(v, len, &out), TW_EINVAL);
	char name[TW_ENG_NAME_MAX + 1];
	memset(name, 'n', sizeof(name));
	len = info_raw(v, name, TW_ENG_NAME_MAX, addr, 7);
	TW_PASS(info_dec(v, len, &out));
	assert_int_equal(strlen(out.name), TW_ENG_NAME_MAX);
	len = info_raw(v, name, TW_ENG_NAME_MAX + 1, addr, 7);
	TW_FAIL(info_dec(v, len, &out), TW_EINVAL);
	const unsigned char badc[]
	    = { 0, ' ', '/', ':', '@', '+', 0x7f, 0x80, 0xff, '\n' };
	for (size_t i = 0; i < sizeof(badc); i++)
		for (size_t at = 0; at < 3; at++) {
			char nm[3] = { 'a', 'b', 'c' };
			nm[at] = (char)badc[i];
			len = info_raw(v, nm, 3, addr, 7);
			if (info_dec(v, len, &out) != TW_EINVAL)
				fail_msg("accepted name byte 0x%02x at %zu",
				    badc[i], at);
		}

	// Addresses: empty, a scheme alone, other schemes, too long.
	const char *bad_addr[] = { "", "t", "tcp://", "mem://", "udp://h:1",
		"tcp:/h:1", "TCP://h:1", "tcp:h:1", "shm://x", " tcp://h:1",
		"mem:/x", "tcp//h:1" };
	for (size_t i = 0; i < sizeof(bad_addr) / sizeof(bad_addr[0]); i++) {
		len = info_raw(v, "a", 1, bad_addr[i], strlen(bad_addr[i]));
		if (info_dec(v, len, &out) != TW_EINVAL)
			fail_msg("accepted address '%s'", bad_addr[i]);
	}
	char la[TW_ENG_ADDR_MAX + 1];
	memcpy(la, "tcp://", 6);
	memset(la + 6, 'h', sizeof(la) - 6);
	len = info_raw(v, "a", 1, la, TW_ENG_ADDR_MAX);
	TW_PASS(info_dec(v, len, &out));
	assert_int_equal(strlen(out.addr), TW_ENG_ADDR_MAX);
	len = info_raw(v, "a", 1, la, TW_ENG_ADDR_MAX + 1);
	TW_FAIL(info_dec(v, len, &out), TW_EINVAL);

	// A non-printable byte anywhere in the address, scheme included.
	const unsigned char np[]
	    = { 0, 1, '\t', '\n', 0x1f, ' ', 0x7f, 0x80, 0xc3, 0xff };
	const char *good = "tcp://h:1";
	for (size_t i = 0; i < sizeof(np); i++)
		for (size_t at = 0; at < strlen(good); at++) {
			char a[16];
			memcpy(a, good, strlen(good));
			a[at] = (char)np[i];
			len = info_raw(v, "a", 1, a, strlen(good));
			if (info_dec(v, len, &out) != TW_EINVAL)
				fail_msg("accepted address byte 0x%02x at %zu",
				    np[i], at);
		}
	len = info_raw(v, "a", 1, good, strlen(good));
	TW_PASS(info_dec(v, len, &out));

	// A refused blob leaves *out alone.
	tw__eng_info before;
	memset(&before, 0x5a, sizeof(before));
	out = before;
	memcpy(v, buf, n);
	set64(v + 8, 0);
	TW_FAIL(info_dec(v, n, &out), TW_EINVAL);
	assert_memory_equal(&out, &before, sizeof(out));
}

// --- memory descriptor -----------------------------------------------------

static void test_desc_roundtrip(void **state)
{
	(void)state;
	const tw__eng_desc cases[] = {
		{ TW_MEM_HOST, 1, 1, 0, 1, 0 },
		{ TW_MEM_HOST, 2, 3, 4, 5, TW_ACCESS_READ },
		{ TW_MEM_HOST, 6, 7, 8, 9, TW_ACCESS_WRITE },
		{ TW_MEM_HOST, UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT64_MAX,
		    TW_ACCESS_READ | TW_ACCESS_WRITE },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		unsigned char buf[TW_ENG_DESC_SIZE], again[TW_ENG_DESC_SIZE];
		tw__eng_desc out;
		tw__eng_desc_encode(&cases[i], buf);
		memset(&out, 0xa5, sizeof(out));
		TW_PASS(desc_dec(buf, sizeof(buf), &out));
		assert_int_equal(out.kind, cases[i].kind);
		assert_true(out.instance == cases[i].instance);
		assert_true(out.id == cases[i].id);
		assert_true(out.key == cases[i].key);
		assert_true(out.len == cases[i].len);
		assert_int_equal(out.access, cases[i].access);
		tw__eng_desc_encode(&out, again);
		assert_memory_equal(buf, again, sizeof(buf));
	}

	// The layout, byte for byte.
	const tw__eng_desc d = { TW_MEM_HOST, UINT64_C(0x0807060504030201),
		UINT64_C(0x1817161514131211), UINT64_C(0x2827262524232221),
		UINT64_C(0x3837363534333231), 3 };
	static const unsigned char want[TW_ENG_DESC_SIZE]
	    = { 'T', 'W', 'M', 'D', 1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0x11,
		      0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x21, 0x22,
		      0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x31, 0x32, 0x33,
		      0x34, 0x35, 0x36, 0x37, 0x38, 3, 0, 0, 0, 0, 0, 0, 0 };
	unsigned char buf[TW_ENG_DESC_SIZE];
	tw__eng_desc_encode(&d, buf);
	assert_memory_equal(buf, want, sizeof(want));
}

static void test_desc_hostile(void **state)
{
	(void)state;
	const tw__eng_desc d = { TW_MEM_HOST, 11, 22, 33, 44,
		TW_ACCESS_READ | TW_ACCESS_WRITE };
	unsigned char buf[TW_ENG_DESC_SIZE], v[TW_ENG_DESC_SIZE + 1];
	tw__eng_desc out;
	tw__eng_desc_encode(&d, buf);
	TW_PASS(desc_dec(buf, sizeof(buf), &out));

	TW_FAIL(tw__eng_desc_decode(NULL, TW_ENG_DESC_SIZE, &out), TW_EINVAL);
	for (size_t i = 0; i < TW_ENG_DESC_SIZE; i++)
		TW_FAIL(desc_dec(buf, i, &out), TW_EINVAL);
	memcpy(v, buf, sizeof(buf));
	v[TW_ENG_DESC_SIZE] = 0;
	TW_FAIL(desc_dec(v, sizeof(v), &out), TW_EINVAL);

	for (size_t i = 0; i < 4; i++) {
		memcpy(v, buf, sizeof(buf));
		v[i] ^= 0x01;
		TW_FAIL(desc_dec(v, TW_ENG_DESC_SIZE, &out), TW_EINVAL);
	}
	memcpy(v, buf, sizeof(buf));
	memcpy(v, TW_ENG_INFO_MAGIC, 4);
	TW_FAIL(desc_dec(v, TW_ENG_DESC_SIZE, &out), TW_EINVAL);

	const uint16_t versions[] = { 0, 2, 0x0101, 0xffff };
	for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
		memcpy(v, buf, sizeof(buf));
		set16(v + 4, versions[i]);
		TW_FAIL(desc_dec(v, TW_ENG_DESC_SIZE, &out), TW_EINVAL);
	}

	// Kinds other than host (CUDA memory is not described to peers).
	const uint16_t kinds[] = { TW_MEM_CUDA, 2, 0x0100, 0xffff };
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		memcpy(v, buf, sizeof(buf));
		set16(v + 6, kinds[i]);
		TW_FAIL(desc_dec(v, TW_ENG_DESC_SIZE, &out), TW_EINVAL);
	}
	// The encoder writes the kind it is given; the decoder refuses it.
	tw__eng_desc cuda = d;
	cuda.kind = TW_MEM_CUDA;
	tw__eng_desc_encode(&cuda, v);
	assert_int_equal(v[6], TW_MEM_CUDA);
	assert_int_equal(v[7], 0);
	TW_FAIL(desc_dec(v, TW_ENG_DESC_SIZE, &out), TW_EINVAL);

	// Zero instance, id, length; a zero key is a key like any other.
	const size_t zero_bad[] = { 8, 16, 32 };
	for (size_t i = 0; i < 3; i++) {
		memcpy(v, buf, sizeof(buf));
		set64(v + zero_bad[i], 0);
		TW_FAIL(desc_dec(v, TW_ENG_DESC_SIZE, &out), TW_EINVAL);
	}
	memcpy(v, buf, sizeof(buf));
	set64(v + 24, 0);
	TW_PASS(desc_dec(v, TW_ENG_DESC_SIZE, &out));
	assert_true(out.key == 0);

	// Every access bit but READ and WRITE.
	for (int bit = 0; bit < 32; bit++) {
		uint32_t a = UINT32_C(1) << bit;
		memcpy(v, buf, sizeof(buf));
		set32(v + 40, a);
		int want = (a & ~(uint32_t)(TW_ACCESS_READ | TW_ACCESS_WRITE))
		    ? TW_EINVAL
		    : TW_OK;
		TW_FAIL(desc_dec(v, TW_ENG_DESC_SIZE, &out), want);
		set32(v + 40, a | TW_ACCESS_READ | TW_ACCESS_WRITE);
		TW_FAIL(desc_dec(v, TW_ENG_DESC_SIZE, &out), want);
	}
	memcpy(v, buf, sizeof(buf));
	set32(v + 40, 0);
	TW_PASS(desc_dec(v, TW_ENG_DESC_SIZE, &out));
	assert_int_equal(out.access, 0);

	// The reserved u32 at 44, each byte.
	for (size_t i = 44; i < 48; i++) {
		memcpy(v, buf, sizeof(buf));
		v[i] = 0x80;
		TW_FAIL(desc_dec(v, TW_ENG_DESC_SIZE, &out), TW_EINVAL);
	}

	tw__eng_desc before;
	memset(&before, 0x5a, sizeof(before));
	out = before;
	memcpy(v, buf, sizeof(buf));
	v[44] = 1;
	TW_FAIL(desc_dec(v, TW_ENG_DESC_SIZE, &out), TW_EINVAL);
	assert_memory_equal(&out, &before, sizeof(out));
}

// --- frame header ----------------------------------------------------------

// Frames whose len may be non-zero: those followed by data, and those
// whose len counts bytes (READ: wanted, WACK/SACK: taken, RDATA).
static bool sized_type(uint8_t t)
{
	return t == TW_ENG_WRITE || t == TW_ENG_WACK || t == TW_ENG_READ
	    || t == TW_ENG_RDATA || t == TW_ENG_SDATA || t == TW_ENG_SACK
	    || t == TW_ENG_NOTIFY;
}

static void test_hdr_roundtrip(void **state)
{
	(void)state;
	for (uint8_t t = TW_ENG_HELLO; t <= TW_ENG_TYPE_MAX; t++)
		for (int st = TW_ENOTSUP; st <= 0; st++) {
			tw__eng_hdr h = { .type = t,
				.status = (int16_t)st,
				.len = sized_type(t) ? UINT32_MAX - t : 0,
				.a = UINT64_C(0x0102030405060708) + t,
				.b = UINT64_MAX,
				.c = 0,
				.d = (uint64_t)st };
			unsigned char buf[TW_ENG_HDR_SIZE];
			unsigned char again[TW_ENG_HDR_SIZE];
			tw__eng_hdr out;
			tw__eng_hdr_encode(&h, buf);
			memset(&out, 0xa5, sizeof(out));
			TW_PASS(hdr_dec(buf, sizeof(buf), &out));
			assert_int_equal(out.type, t);
			assert_int_equal(out.status, st);
			assert_int_equal(out.len, h.len);
			assert_true(out.a == h.a && out.b == h.b
			    && out.c == h.c && out.d == h.d);
			tw__eng_hdr_encode(&out, again);
			assert_memory_equal(buf, again, sizeof(buf));
		}

	// The layout, byte for byte.
	const tw__eng_hdr h = { .type = TW_ENG_CTS,
		.status = TW_ETRUNC,
		.len = 0,
		.a = UINT64_C(0x0807060504030201),
		.b = UINT64_C(0x1817161514131211),
		.c = UINT64_C(0x2827262524232221),
		.d = UINT64_C(0x3837363534333231) };
	static const unsigned char want[TW_ENG_HDR_SIZE] = { 7, 0, 0xf5, 0xff,
		0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x12, 0x13, 0x14,
		0x15, 0x16, 0x17, 0x18, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26,
		0x27, 0x28, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38 };
	unsigned char buf[TW_ENG_HDR_SIZE];
	tw__eng_hdr_encode(&h, buf);
	assert_memory_equal(buf, want, sizeof(want));
	const tw__eng_hdr w = { .type = TW_ENG_WRITE, .len = 0x0a0b0c0d };
	tw__eng_hdr_encode(&w, buf);
	assert_int_equal(buf[0], 2);
	assert_memory_equal(buf + 4, "\x0d\x0c\x0b\x0a", 4);

	// The type numbers are part of the protocol.
	assert_int_equal(TW_ENG_HELLO, 1);
	assert_int_equal(TW_ENG_WRITE, 2);
	assert_int_equal(TW_ENG_WACK, 3);
	assert_int_equal(TW_ENG_READ, 4);
	assert_int_equal(TW_ENG_RDATA, 5);
	assert_int_equal(TW_ENG_RTS, 6);
	assert_int_equal(TW_ENG_CTS, 7);
	assert_int_equal(TW_ENG_SDATA, 8);
	assert_int_equal(TW_ENG_SACK, 9);
	assert_int_equal(TW_ENG_SCANCEL, 10);
	assert_int_equal(TW_ENG_RCANCEL, 11);
	assert_int_equal(TW_ENG_NOTIFY, 12);
	assert_int_equal(TW_ENG_TYPE_MAX, 12);
}

static void test_hdr_has_data(void **state)
{
	(void)state;
	for (uint8_t t = TW_ENG_HELLO; t <= TW_ENG_TYPE_MAX; t++) {
		tw__eng_hdr h = { .type = t };
		bool want = t == TW_ENG_WRITE || t == TW_ENG_SDATA
		    || t == TW_ENG_NOTIFY || t == TW_ENG_RDATA;
		if (tw__eng_hdr_has_data(&h) != want)
			fail_msg("type %u: has_data %d", t, !want);
		h.status = TW_EINVAL;
		want = want && t != TW_ENG_RDATA;
		if (tw__eng_hdr_has_data(&h) != want)
			fail_msg(
			    "type %u with an error: has_data %d", t, !want);
	}
	// An RDATA that carries an error carries no data.
	for (int st = TW_ENOTSUP; st < 0; st++) {
		tw__eng_hdr h
		    = { .type = TW_ENG_RDATA, .status = (int16_t)st };
		assert_false(tw__eng_hdr_has_data(&h));
	}
}

static void test_hdr_hostile(void **state)
{
	(void)state;
	const tw__eng_hdr h
	    = { .type = TW_ENG_SDATA, .len = 4096, .a = 1, .b = 2, .c = 3 };
	unsigned char buf[TW_ENG_HDR_SIZE], v[TW_ENG_HDR_SIZE + 1];
	tw__eng_hdr out;
	tw__eng_hdr_encode(&h, buf);
	TW_PASS(hdr_dec(buf, sizeof(buf), &out));

	TW_FAIL(tw__eng_hdr_decode(NULL, TW_ENG_HDR_SIZE, &out), TW_EPROTO);
	for (size_t i = 0; i < TW_ENG_HDR_SIZE; i++)
		TW_FAIL(hdr_dec(buf, i, &out), TW_EPROTO);
	memcpy(v, buf, sizeof(buf));
	v[TW_ENG_HDR_SIZE] = 0;
	TW_FAIL(hdr_dec(v, sizeof(v), &out), TW_EPROTO);

	// Unknown types.
	const unsigned types[] = { 0, TW_ENG_TYPE_MAX + 1, 0x7f, 0x80, 0xff };
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		// Nothing else wrong: no length, no status.
		memset(v, 0, sizeof(v));
		v[0] = (unsigned char)types[i];
		TW_FAIL(hdr_dec(v, TW_ENG_HDR_SIZE, &out), TW_EPROTO);
	}

	// Flags: any unknown bit.
	for (unsigned pad = 2; pad < 256; pad++) {
		memcpy(v, buf, sizeof(buf));
		v[1] = (unsigned char)pad;
		TW_FAIL(hdr_dec(v, TW_ENG_HDR_SIZE, &out), TW_EPROTO);
	}
	// INLINE only on frames that carry data.
	for (uint8_t t = TW_ENG_HELLO; t <= TW_ENG_TYPE_MAX; t++) {
		tw__eng_hdr x = { .type = t, .flags = TW_ENG_F_INLINE };
		tw__eng_hdr_encode(&x, v);
		int want = tw__eng_hdr_has_data(&x) ? TW_OK : TW_EPROTO;
		if (hdr_dec(v, TW_ENG_HDR_SIZE, &out) != want)
			fail_msg(
			    "type %u INLINE: want %s", t, tw_err_name(want));
	}

	// Statuses: positive ones and those below the last code, on every
	// type.
	const int bad_status[]
	    = { 1, 2, 0x7fff, TW_ENOTSUP - 1, -100, -32768 };
	for (uint8_t t = TW_ENG_HELLO; t <= TW_ENG_TYPE_MAX; t++)
		for (size_t i = 0; i < sizeof(bad_status) / sizeof(int); i++) {
			tw__eng_hdr x
			    = { .type = t, .status = (int16_t)bad_status[i] };
			tw__eng_hdr_encode(&x, v);
			if (hdr_dec(v, TW_ENG_HDR_SIZE, &out) != TW_EPROTO)
				fail_msg("type %u: accepted status %d", t,
				    bad_status[i]);
		}

	// A length on a frame that carries neither data nor a length.
	const uint32_t lens[] = { 1, 40, 0x80000000u, UINT32_MAX };
	for (uint8_t t = TW_ENG_HELLO; t <= TW_ENG_TYPE_MAX; t++)
		for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
			tw__eng_hdr x = { .type = t, .len = lens[i] };
			tw__eng_hdr_encode(&x, v);
			int want = sized_type(t) ? TW_OK : TW_EPROTO;
			if (hdr_dec(v, TW_ENG_HDR_SIZE, &out) != want)
				fail_msg("type %u len %u: want %s", t,
				    (unsigned)lens[i], tw_err_name(want));
		}

	tw__eng_hdr before;
	memset(&before, 0x5a, sizeof(before));
	out = before;
	memcpy(v, buf, sizeof(buf));
	v[1] = 2;
	TW_FAIL(hdr_dec(v, TW_ENG_HDR_SIZE, &out), TW_EPROTO);
	assert_memory_equal(&out, &before, sizeof(out));
}

// --- random mutations ------------------------------------------------------

#define MUTATIONS 2000

// Feeds buf[0..len) to every decoder; whatever decodes must be valid and
// encode back to the same bytes.  Returns the number that accepted it.
static int check_all(const unsigned char *buf, size_t len)
{
	int ok = 0;
	tw__eng_info info;
	int rv = info_dec(buf, len, &info);
	if (rv == TW_OK) {
		ok++;
		unsigned char again[INFO_BUF];
		assert_true(info.instance != 0);
		assert_true(tw__eng_name_ok(info.name));
		assert_true(strncmp(info.addr, "tcp://", 6) == 0
		    || strncmp(info.addr, "mem://", 6) == 0);
		assert_int_equal(tw__eng_info_size(&info), len);
		tw__eng_info_encode(&info, again);
		assert_memory_equal(again, buf, len);
	} else {
		assert_int_equal(rv, TW_EINVAL);
	}

	tw__eng_desc desc;
	rv = desc_dec(buf, len, &desc);
	if (rv == TW_OK) {
		ok++;
		unsigned char again[TW_ENG_DESC_SIZE];
		assert_int_equal(len, TW_ENG_DESC_SIZE);
		assert_int_equal(desc.kind, TW_MEM_HOST);
		assert_true(
		    desc.instance != 0 && desc.id != 0 && desc.len != 0);
		assert_int_equal(desc.access
		        & ~(uint32_t)(TW_ACCESS_READ | TW_ACCESS_WRITE),
		    0);
		tw__eng_desc_encode(&desc, again);
		assert_memory_equal(again, buf, len);
	} else {
		assert_int_equal(rv, TW_EINVAL);
	}

	tw__eng_hdr hdr;
	rv = hdr_dec(buf, len, &hdr);
	if (rv == TW_OK) {
		ok++;
		unsigned char again[TW_ENG_HDR_SIZE];
		assert_int_equal(len, TW_ENG_HDR_SIZE);
		assert_true(
		    hdr.type >= TW_ENG_HELLO && hdr.type <= TW_ENG_TYPE_MAX);
		assert_true(hdr.status <= 0 && hdr.status >= TW_ENOTSUP);
		assert_true(hdr.len == 0 || sized_type(hdr.type));
		tw__eng_hdr_encode(&hdr, again);
		assert_memory_equal(again, buf, len);
	} else {
		assert_int_equal(rv, TW_EPROTO);
	}
	return ok;
}

static void test_mutations(void **state)
{
	(void)state;
	unsigned char seeds[3][INFO_BUF];
	size_t seed_len[3];
	tw__eng_info in;
	make_info(&in, 0x1234, "mutant", "tcp://127.0.0.1:9");
	seed_len[0] = info_blob(&in, seeds[0]);
	const tw__eng_desc d = { TW_MEM_HOST, 5, 6, 7, 8, TW_ACCESS_READ };
	tw__eng_desc_encode(&d, seeds[1]);
	seed_len[1] = TW_ENG_DESC_SIZE;
	const tw__eng_hdr h = { .type = TW_ENG_RDATA, .len = 3, .a = 9 };
	tw__eng_hdr_encode(&h, seeds[2]);
	seed_len[2] = TW_ENG_HDR_SIZE;

	rng_state = UINT64_C(0x9e3779b97f4a7c15);
	int accepted = 0, refused = 0;
	for (int iter = 0; iter < MUTATIONS; iter++) {
		unsigned char v[INFO_BUF + 64];
		size_t which = (size_t)(rng() % 3);
		size_t len = seed_len[which];
		memcpy(v, seeds[which], len);
		int edits = 1 + (int)(rng() % 4);
		for (int e = 0; e < edits; e++) {
			uint64_t r = rng();
			size_t at = len > 0 ? (size_t)(r >> 8) % len : 0;
			switch (r % 7) {
			case 0: // flip a bit
				if (len > 0)
					v[at] ^= (unsigned char)(1u
					    << ((r >> 40) % 8));
				break;
			case 1: // a random byte
				if (len > 0)
					v[at] = (unsigned char)(r >> 40);
				break;
			case 2: // an interesting byte
			{
				static const unsigned char odd[] = { 0, 1,
					0x7f, 0x80, 0xff, ' ', '/', 0xf4 };
				if (len > 0)
					v[at] = odd[(r >> 40) % sizeof(odd)];
				break;
			}
			case 3: // truncate
				len = len > 0 ? (size_t)(r >> 40) % len : 0;
				break;
			case 4: // append bytes
			{
				size_t more = 1 + (size_t)(r >> 40) % 8;
				if (len + more <= sizeof(v)) {
					for (size_t k = 0; k < more; k++)
						v[len + k] = (unsigned char)(r
						    >> (8 * k));
					len += more;
				}
				break;
			}
			case 5: // a random 16-bit field at an even offset
				if (len >= 2) {
					at &= ~(size_t)1;
					if (at + 2 > len)
						at = len - 2;
					set16(v + at, (uint16_t)(r >> 40));
				}
				break;
			default: // zero a 64-bit field
				if (len >= 16) {
					at = 8
					    * (1
					        + (size_t)(r >> 40)
					            % (len / 8 - 1));
					if (at + 8 <= len)
						memset(v + at, 0, 8);
				}
				break;
			}
		}
		if (check_all(v, len) > 0)
			accepted++;
		else
			refused++;
	}
	// The mutations must exercise both outcomes to mean anything.
	assert_true(accepted > 50);
	assert_true(refused > 50);

	// The seeds themselves decode as exactly one kind each.
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(check_all(seeds[i], seed_len[i]), 1);
}

// Packs: frames back to back, inline data after its header, bulk data
// announced only by the last frame.
static void test_pack(void **state)
{
	(void)state;
	unsigned char b[4 * TW_ENG_HDR_SIZE + 16];
	size_t n = 0;
	tw__eng_hdr w = { .type = TW_ENG_WRITE,
		.flags = TW_ENG_F_INLINE,
		.len = 8,
		.a = 1 };
	tw__eng_hdr_encode(&w, b);
	memcpy(b + TW_ENG_HDR_SIZE, "ABCDEFGH", 8);
	n = TW_ENG_HDR_SIZE + 8;
	tw__eng_hdr a = { .type = TW_ENG_WACK, .len = 8, .a = 2 };
	tw__eng_hdr_encode(&a, b + n);
	n += TW_ENG_HDR_SIZE;
	tw__eng_hdr s = { .type = TW_ENG_SDATA, .len = 1 << 20, .a = 3 };
	tw__eng_hdr_encode(&s, b + n);
	n += TW_ENG_HDR_SIZE;

	size_t at = 0;
	tw__eng_hdr h;
	const unsigned char *inl;
	TW_PASS(tw__eng_pack_next(b, n, &at, &h, &inl));
	assert_int_equal(h.type, TW_ENG_WRITE);
	assert_ptr_equal(inl, b + TW_ENG_HDR_SIZE);
	TW_PASS(tw__eng_pack_next(b, n, &at, &h, &inl));
	assert_int_equal(h.type, TW_ENG_WACK);
	assert_null(inl);
	TW_PASS(tw__eng_pack_next(b, n, &at, &h, &inl));
	assert_int_equal(h.type, TW_ENG_SDATA); // bulk: the next message
	assert_null(inl);
	assert_int_equal(at, n);
	TW_FAIL(tw__eng_pack_next(b, n, &at, &h, &inl), TW_EAGAIN);

	// Every truncation: a short header or inline data past the end.
	for (size_t cut = 1; cut < TW_ENG_HDR_SIZE + 8; cut++) {
		at = 0;
		TW_FAIL(tw__eng_pack_next(b, cut, &at, &h, &inl), TW_EPROTO);
		assert_int_equal(at, 0);
	}
	// Bulk data announced by a frame that is not the last.
	memcpy(b + n, b, TW_ENG_HDR_SIZE);
	at = 2 * TW_ENG_HDR_SIZE + 8;
	TW_FAIL(tw__eng_pack_next(b, n + TW_ENG_HDR_SIZE, &at, &h, &inl),
	    TW_EPROTO);
	// A header that does not decode.
	b[TW_ENG_HDR_SIZE + 8] = 0;
	at = TW_ENG_HDR_SIZE + 8;
	TW_FAIL(tw__eng_pack_next(b, n, &at, &h, &inl), TW_EPROTO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_name_ok),
		cmocka_unit_test(test_info_roundtrip),
		cmocka_unit_test(test_info_hostile),
		cmocka_unit_test(test_desc_roundtrip),
		cmocka_unit_test(test_desc_hostile),
		cmocka_unit_test(test_hdr_roundtrip),
		cmocka_unit_test(test_hdr_has_data),
		cmocka_unit_test(test_hdr_hostile),
		cmocka_unit_test(test_pack),
		cmocka_unit_test(test_mutations),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
