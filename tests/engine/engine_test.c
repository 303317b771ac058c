// Semantics of the transfer engine (tagwire/engine.h) over mem:// and
// tcp:// within one process: every test runs once per transport (argv[1]).

#include <poll.h>
#include <pthread.h>
#include <stdbool.h>

#include "testutil.h"

static const char *transport = "mem";
static unsigned seq;

typedef struct pair {
	tw_engine *a, *b; // a listens and accepts; b connects
	tw_peer ab, ba; // a's number for b, b's number for a
} pair;

static void listen_addr(char *buf, size_t cap)
{
	if (strcmp(transport, "tcp") == 0)
		snprintf(buf, cap, "tcp://127.0.0.1:0");
	else
		snprintf(buf, cap, "mem://eng%u", ++seq);
}

// Options applied to both engines before they listen or connect.
typedef struct opts {
	int64_t stripes, chunk, window, max_msg, heartbeat;
} opts;

static void apply(tw_engine *e, const opts *o)
{
	if (o == NULL)
		return;
	if (o->stripes)
		TW_PASS(tw_engine_set(e, TW_OPT_STRIPES, o->stripes));
	if (o->chunk)
		TW_PASS(tw_engine_set(e, TW_OPT_CHUNK_SIZE, o->chunk));
	if (o->window)
		TW_PASS(tw_engine_set(e, TW_OPT_WINDOW, o->window));
	if (o->max_msg)
		TW_PASS(tw_engine_set(e, TW_OPT_MAX_MSG_SIZE, o->max_msg));
	if (o->heartbeat)
		TW_PASS(tw_engine_set(e, TW_OPT_HEARTBEAT_MS, o->heartbeat));
}

static void pair_open(pair *p, const opts *o)
{
	char addr[64];
	listen_addr(addr, sizeof(addr));
	TW_PASS(tw_engine_new("alpha", &p->a));
	TW_PASS(tw_engine_new("beta", &p->b));
	apply(p->a, o);
	apply(p->b, o);
	TW_PASS(tw_engine_listen(p->a, addr));
	tw_buf info = { 0 };
	TW_PASS(tw_engine_info(p->a, &info));
	TW_PASS(tw_engine_connect(p->b, info.data, info.len, &p->ba));
	tw_buf_free(&info);
	TW_PASS(tw_engine_accept(p->a, "beta", 10000, &p->ab));
	assert_string_equal(tw_engine_peer_name(p->a, p->ab), "beta");
	assert_string_equal(tw_engine_peer_name(p->b, p->ba), "alpha");
}

static void pair_close(pair *p)
{
	tw_engine_free(p->b);
	tw_engine_free(p->a);
}

static void fill(unsigned char *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (unsigned char)(seed + i * 131 + (i >> 8));
}

// Registers buf on e and hands the peer a remote id for it.
static uint64_t share(tw_engine *e, void *buf, size_t n, unsigned access,
    tw_engine *other, tw_peer other_to_e, uint64_t *rid)
{
	uint64_t id;
	TW_PASS(tw_mem_register(e, buf, n, TW_MEM_HOST, access, &id));
	tw_buf d = { 0 };
	TW_PASS(tw_mem_pack(e, id, &d));
	TW_PASS(tw_mem_unpack(other, other_to_e, d.data, d.len, rid));
	tw_buf_free(&d);
	return id;
}

static void test_write_read(void **state)
{
	(void)state;
	pair p;
	opts o = { .chunk = 4096, .window = 4 };
	pair_open(&p, &o);
	size_t n = 1 << 20;
	unsigned char *src = malloc(n), *dst = calloc(1, n + 64);
	unsigned char *back = calloc(1, n);
	fill(src, n, 7);
	memset(dst, 0xAB, n + 64);
	uint64_t rid;
	uint64_t tid = share(
	    p.a, dst, n, TW_ACCESS_READ | TW_ACCESS_WRITE, p.b, p.ba, &rid);
	uint64_t sid, bid;
	TW_PASS(tw_mem_register(p.b, src, n, TW_MEM_HOST, 0, &sid));
	TW_PASS(tw_mem_register(p.b, back, n, TW_MEM_HOST, 0, &bid));
	tw_xfer *x;
	TW_PASS(tw_xfer_create(p.b, p.ba, 10000, &x));
	TW_PASS(tw_xfer_post_write(x, sid, 0, rid, 0, n));
	TW_PASS(tw_xfer_wait(x, 10000));
	assert_memory_equal(src, dst, n);
	for (size_t i = n; i < n + 64; i++)
		assert_int_equal(dst[i], 0xAB);
	tw_xfer_free(x);
	TW_PASS(tw_xfer_create(p.b, p.ba, 10000, &x));
	TW_PASS(tw_xfer_post_read(x, bid, 0, rid, 0, n));
	TW_PASS(tw_xfer_wait(x, 10000));
	assert_memory_equal(src, back, n);
	tw_xfer_stats st;
	TW_PASS(tw_engine_stats(p.b, p.ba, &st));
	assert_int_equal(st.xfers_done, 2); // the WRITE and the READ
	assert_int_equal(st.bytes_sent, n);
	assert_int_equal(st.bytes_recv, n);
	tw_xfer_free(x);
	TW_PASS(tw_mem_deregister(p.a, tid));
	pair_close(&p);
	free(src);
	free(dst);
	free(back);
}

static void test_send_recv(void **state)
{
	(void)state;
	pair p;
	pair_open(&p, NULL);
	size_t n = 3 << 20;
	unsigned char *src = malloc(n), *dst = calloc(1, n);
	fill(src, n, 3);
	uint64_t sid, did;
	TW_PASS(tw_mem_register(p.b, src, n, TW_MEM_HOST, 0, &sid));
	TW_PASS(tw_mem_register(p.a, dst, n, TW_MEM_HOST, 0, &did));
	tw_xfer *xs, *xr;
	TW_PASS(tw_xfer_create(p.b, p.ba, 10000, &xs));
	TW_PASS(tw_xfer_post_send(xs, sid, 0, n, 42));
	TW_PASS(tw_xfer_notify(xs, "done", 4));
	TW_PASS(tw_xfer_create(p.a, p.ab, 10000, &xr));
	TW_PASS(tw_xfer_post_recv(xr, did, 0, n, 42));
	TW_PASS(tw_xfer_wait(xr, 10000));
	TW_PASS(tw_xfer_wait(xs, 10000));
	assert_memory_equal(src, dst, n);
	tw_peer from;
	tw_buf m = { 0 };
	TW_PASS(tw_notify_recv(p.a, &from, &m, 10000));
	assert_int_equal(from, p.ab);
	assert_int_equal(m.len, 4);
	assert_memory_equal(m.data, "done", 4);
	tw_buf_free(&m);
	tw_xfer_free(xs);
	tw_xfer_free(xr);
	pair_close(&p);
	free(src);
	free(dst);
}

static void test_options_and_errors(void **state)
{
	(void)state;
	tw_engine *e;
	TW_FAIL(tw_engine_new("bad name", &e), TW_EINVAL);
	TW_FAIL(tw_engine_new("", &e), TW_EINVAL);
	TW_FAIL(tw_engine_new(NULL, &e), TW_EINVAL);
	TW_PASS(tw_engine_new("solo", &e));
	TW_FAIL(tw_engine_set(e, TW_OPT_STRIPES, 0), TW_EINVAL);
	TW_FAIL(tw_engine_set(e, TW_OPT_STRIPES, 65), TW_EINVAL);
	TW_FAIL(tw_engine_set(e, TW_OPT_WINDOW, 0), TW_EINVAL);
	TW_FAIL(tw_engine_set(e, TW_OPT_CHUNK_SIZE, 100), TW_EINVAL);
	TW_FAIL(tw_engine_set(e, TW_OPT_HEARTBEAT_MS, 5), TW_EINVAL);
	TW_FAIL(tw_engine_set(e, TW_OPT_RECV_BUFFER, 1 << 20), TW_EINVAL);
	TW_PASS(tw_engine_set(e, TW_OPT_WINDOW, 16));
	tw_buf b = { 0 };
	TW_FAIL(tw_engine_info(e, &b), TW_EINVAL); // not listening
	tw_peer pr;
	TW_FAIL(tw_engine_accept(e, "x", 0, &pr), TW_EINVAL);
	TW_FAIL(tw_engine_listen(e, "udp://x"), TW_EINVAL);
	// A listen that failed leaves the options open.
	TW_PASS(tw_engine_set(e, TW_OPT_WINDOW, 16));
	char addr[64];
	listen_addr(addr, sizeof(addr));
	TW_PASS(tw_engine_listen(e, addr));
	TW_FAIL(tw_engine_listen(e, addr), TW_EINVAL);
	TW_FAIL(tw_engine_set(e, TW_OPT_WINDOW, 8), TW_EINVAL); // too late
	TW_FAIL(tw_engine_set_secret(e, "k", 1), TW_EINVAL);
	TW_FAIL(tw_engine_accept(e, "nobody", 0, &pr), TW_ETIMEDOUT);
	TW_FAIL(tw_engine_accept(e, "nobody", 50, &pr), TW_ETIMEDOUT);
	// Connecting to oneself is refused.
	TW_PASS(tw_engine_info(e, &b));
	TW_FAIL(tw_engine_connect(e, b.data, b.len, &pr), TW_EINVAL);
	// Garbage and every truncation of the blob.
	for (size_t n = 0; n < b.len; n++)
		TW_FAIL(tw_engine_connect(e, b.data, n, &pr), TW_EINVAL);
	TW_FAIL(tw_engine_connect(e, "garbage", 7, &pr), TW_EINVAL);
	TW_FAIL(tw_engine_connect(e, NULL, 0, &pr), TW_EINVAL);
	tw_buf_free(&b);
	char mem[64];
	uint64_t id;
	TW_FAIL(tw_mem_register(e, mem, sizeof(mem), TW_MEM_CUDA, 0, &id),
	    TW_ENOTSUP);
	TW_FAIL(tw_mem_register(e, mem, 0, TW_MEM_HOST, 0, &id), TW_EINVAL);
	TW_FAIL(tw_mem_register(e, NULL, 8, TW_MEM_HOST, 0, &id), TW_EINVAL);
	TW_FAIL(tw_mem_register(e, mem, 8, TW_MEM_HOST, 4, &id), TW_EINVAL);
	TW_FAIL(tw_mem_register(e, mem, 8, 7, 0, &id), TW_EINVAL);
	TW_PASS(tw_mem_register(e, mem, sizeof(mem), TW_MEM_HOST, 3, &id));
	TW_FAIL(tw_mem_deregister(e, id + 100), TW_EINVAL);
	TW_FAIL(tw_mem_pack(e, id + 100, &b), TW_EINVAL);
	TW_FAIL(tw_mem_unpack(e, 1, "x", 1, &id), TW_EINVAL);
	tw_xfer *x;
	TW_FAIL(tw_xfer_create(e, 77, 0, &x), TW_EINVAL);
	TW_FAIL(tw_engine_notify(e, 77, "x", 1), TW_EINVAL);
	TW_FAIL(tw_engine_disconnect(e, 77), TW_EINVAL);
	tw_xfer_stats st;
	TW_FAIL(tw_engine_stats(e, 77, &st), TW_EINVAL);
	assert_null(tw_engine_peer_name(e, 77));
	TW_FAIL(tw_notify_recv(e, &pr, &b, 0), TW_ETIMEDOUT);
	TW_PASS(tw_mem_deregister(e, id));
	TW_FAIL(tw_mem_deregister(e, id), TW_EINVAL);
	tw_engine_free(e);
	tw_engine_free(NULL);
}

static void test_bad_descriptors(void **state)
{
	(void)state;
	pair p;
	pair_open(&p, NULL);
	unsigned char target[256], src[256];
	memset(target, 0x5A, sizeof(target));
	fill(src, sizeof(src), 1);
	uint64_t tid, sid, rid;
	TW_PASS(tw_mem_register(
	    p.a, target, sizeof(target), TW_MEM_HOST, TW_ACCESS_WRITE, &tid));
	TW_PASS(tw_mem_register(p.b, src, sizeof(src), TW_MEM_HOST, 0, &sid));
	tw_buf d = { 0 };
	TW_PASS(tw_mem_pack(p.a, tid, &d));
	for (size_t n = 0; n < d.len; n++)
		TW_FAIL(tw_mem_unpack(p.b, p.ba, d.data, n, &rid), TW_EINVAL);
	// A descriptor of another engine than the peer's.
	TW_FAIL(tw_mem_unpack(p.a, p.ab, d.data, d.len, &rid), TW_EINVAL);
	// Mutations: refused, or a remote id whose WRITE the target refuses
	// unless it still names exactly the registration.
	unsigned char *m = malloc(d.len);
	srand(12345);
	unsigned accepted = 0;
	for (int i = 0; i < 2000; i++) {
		memcpy(m, d.data, d.len);
		int flips = 1 + rand() % 3;
		for (int f = 0; f < flips; f++)
			m[rand() % d.len] ^= (unsigned char)(1 + rand() % 255);
		int st = tw_mem_unpack(p.b, p.ba, m, d.len, &rid);
		if (st == TW_EINVAL)
			continue;
		TW_PASS(st);
		if (accepted++ > 40)
			continue; // enough transfers: the rest only decode
		tw_xfer *x;
		TW_PASS(tw_xfer_create(p.b, p.ba, 10000, &x));
		TW_PASS(tw_xfer_post_write(x, sid, 0, rid, 0, 16));
		int r = tw_xfer_wait(x, 10000);
		// Instance, id and key: what the target checks.
		bool same
		    = memcmp(m + 8, (unsigned char *)d.data + 8, 24) == 0;
		if (!same)
			TW_FAIL(r, TW_EINVAL);
		tw_xfer_free(x);
	}
	free(m);
	tw_buf_free(&d);
	TW_PASS(tw_mem_deregister(p.a, tid));
	pair_close(&p);
}

// Every one-sided request outside what a registration grants fails the
// initiator's transfer with TW_EINVAL and leaves the target's bytes alone.
static void test_violations(void **state)
{
	(void)state;
	pair p;
	pair_open(&p, NULL);
	enum { N = 4096, G = 64 };
	unsigned char *ro = malloc(N + 2 * G), *wo = malloc(N + 2 * G);
	memset(ro, 0x11, N + 2 * G);
	memset(wo, 0x22, N + 2 * G);
	unsigned char src[2 * N], dst[2 * N];
	fill(src, sizeof(src), 9);
	uint64_t rro, rwo, sid, did;
	uint64_t ro_id
	    = share(p.a, ro + G, N, TW_ACCESS_READ, p.b, p.ba, &rro);
	uint64_t wo_id
	    = share(p.a, wo + G, N, TW_ACCESS_WRITE, p.b, p.ba, &rwo);
	TW_PASS(tw_mem_register(p.b, src, sizeof(src), TW_MEM_HOST, 0, &sid));
	TW_PASS(tw_mem_register(p.b, dst, sizeof(dst), TW_MEM_HOST, 0, &did));
	struct {
		int write;
		uint64_t rid;
		size_t roff, len;
	} bad[] = {
		{ 1, 0, 0, 16 }, // WRITE to read-only
		{ 0, 1, 0, 16 }, // READ from write-only
		{ 1, 1, N - 8, 16 }, // past the end
		{ 1, 1, N, 1 },
		{ 1, 1, 0, N + 1 },
		{ 1, 1, SIZE_MAX - 4, 8 }, // offset wraps
		{ 0, 0, N - 1, 2 },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		tw_xfer *x;
		TW_PASS(tw_xfer_create(p.b, p.ba, 10000, &x));
		uint64_t r = bad[i].rid ? rwo : rro;
		if (bad[i].write)
			TW_PASS(tw_xfer_post_write(
			    x, sid, 0, r, bad[i].roff, bad[i].len));
		else
			TW_PASS(tw_xfer_post_read(
			    x, did, 0, r, bad[i].roff, bad[i].len));
		TW_FAIL(tw_xfer_wait(x, 10000), TW_EINVAL);
		tw_xfer_free(x);
	}
	for (size_t i = 0; i < N + 2 * G; i++) {
		assert_int_equal(ro[i], 0x11);
		assert_int_equal(wo[i], 0x22);
	}
	// Local ranges are checked at post time.
	tw_xfer *x;
	TW_PASS(tw_xfer_create(p.b, p.ba, 10000, &x));
	TW_FAIL(tw_xfer_post_write(x, sid, sizeof(src), rwo, 0, 1), TW_EINVAL);
	TW_FAIL(tw_xfer_post_write(x, sid + 99, 0, rwo, 0, 1), TW_EINVAL);
	TW_FAIL(tw_xfer_post_write(x, sid, 0, rwo + 99, 0, 1), TW_EINVAL);
	TW_FAIL(tw_xfer_post_send(x, sid, 1, sizeof(src), 1), TW_EINVAL);
	tw_xfer_free(x);
	// Deregistered on the target: refused, nothing touched.
	TW_PASS(tw_mem_deregister(p.a, wo_id));
	TW_PASS(tw_xfer_create(p.b, p.ba, 10000, &x));
	TW_PASS(tw_xfer_post_write(x, sid, 0, rwo, 0, 16));
	TW_FAIL(tw_xfer_wait(x, 10000), TW_EINVAL);
	tw_xfer_free(x);
	for (size_t i = 0; i < N + 2 * G; i++)
		assert_int_equal(wo[i], 0x22);
	TW_PASS(tw_mem_deregister(p.a, ro_id));
	pair_close(&p);
	free(ro);
	free(wo);
}

// Tagged sends and receives of many sizes over one pair.
static void tagged_sizes(const opts *o, const size_t *sizes, size_t nsizes)
{
	pair p;
	pair_open(&p, o);
	size_t max = 0;
	for (size_t i = 0; i < nsizes; i++)
		max = sizes[i] > max ? sizes[i] : max;
	unsigned char *src = malloc(max + 1), *dst = malloc(max + 1);
	uint64_t sid, did;
	TW_PASS(tw_mem_register(p.b, src, max + 1, TW_MEM_HOST, 0, &sid));
	TW_PASS(tw_mem_register(p.a, dst, max + 1, TW_MEM_HOST, 0, &did));
	for (size_t i = 0; i < nsizes; i++) {
		size_t n = sizes[i];
		fill(src, n, (unsigned)i);
		memset(dst, 0xEE, max + 1);
		tw_xfer *xs, *xr;
		TW_PASS(tw_xfer_create(p.a, p.ab, 60000, &xr));
		TW_PASS(tw_xfer_post_recv(xr, did, 0, n, 1000 + i));
		TW_PASS(tw_xfer_create(p.b, p.ba, 60000, &xs));
		TW_PASS(tw_xfer_post_send(xs, sid, 0, n, 1000 + i));
		TW_PASS(tw_xfer_wait(xs, 60000));
		TW_PASS(tw_xfer_wait(xr, 60000));
		assert_memory_equal(src, dst, n);
		assert_int_equal(dst[n], 0xEE);
		tw_xfer_free(xs);
		tw_xfer_free(xr);
	}
	pair_close(&p);
	free(src);
	free(dst);
}

static void test_tagged_sizes(void **state)
{
	(void)state;
	const size_t small[] = { 0, 1, 4095, 4096, 4097, 100000 };
	const size_t big[] = { 1 << 20, 64 << 20 };
	for (int stripes = 1; stripes <= 4; stripes += 3) {
		for (int window = 1; window <= 16; window += 15) {
			opts o = { .stripes = stripes,
				.window = window,
				.chunk = 4096 };
			tagged_sizes(&o, small, 6);
		}
		opts o = { .stripes = stripes, .window = 16 };
		tagged_sizes(&o, big, 2);
	}
	// 64 MiB in 4 KiB chunks: 16384 of them, packed (16 MiB under the
	// sanitizers' slowdown).
	const size_t many[]
	    = { tw_test_scale_ms(1) > 1 ? 16 << 20 : 64 << 20 };
	opts o = { .stripes = 4, .window = 16, .chunk = 4096 };
	tagged_sizes(&o, many, 1);
}

static void test_batch_and_fifo(void **state)
{
	(void)state;
	pair p;
	opts o = { .chunk = 4096, .window = 16 };
	pair_open(&p, &o);
	enum { K = 256, S = 4096 };
	unsigned char *src = malloc(K * S), *dst = malloc(K * S);
	unsigned char *tgt = malloc(K * S);
	fill(src, K * S, 77);
	memset(dst, 0, K * S);
	memset(tgt, 0, K * S);
	uint64_t sid, did, rid;
	TW_PASS(tw_mem_register(p.b, src, K * S, TW_MEM_HOST, 0, &sid));
	TW_PASS(tw_mem_register(p.a, dst, K * S, TW_MEM_HOST, 0, &did));
	share(p.a, tgt, K * S, TW_ACCESS_WRITE, p.b, p.ba, &rid);
	// 256 WRITEs in one transfer.
	tw_xfer *x;
	TW_PASS(tw_xfer_create(p.b, p.ba, 30000, &x));
	for (int i = 0; i < K; i++)
		TW_PASS(tw_xfer_post_write(
		    x, sid, (size_t)i * S, rid, (size_t)(K - 1 - i) * S, S));
	TW_PASS(tw_xfer_wait(x, 30000));
	for (int i = 0; i < K; i++)
		assert_memory_equal(
		    src + (size_t)i * S, tgt + (size_t)(K - 1 - i) * S, S);
	tw_xfer_free(x);
	// 256 sends under one tag, posted before any receive: matched first
	// posted first, so receive i gets send i.
	tw_xfer *xs, *xr;
	TW_PASS(tw_xfer_create(p.b, p.ba, 30000, &xs));
	for (int i = 0; i < K; i++)
		TW_PASS(tw_xfer_post_send(xs, sid, (size_t)i * S, S, 5));
	TW_PASS(tw_xfer_create(p.a, p.ab, 30000, &xr));
	for (int i = 0; i < K; i++)
		TW_PASS(tw_xfer_post_recv(xr, did, (size_t)i * S, S, 5));
	TW_PASS(tw_xfer_wait(xr, 30000));
	TW_PASS(tw_xfer_wait(xs, 30000));
	assert_memory_equal(src, dst, K * S);
	tw_xfer_free(xs);
	tw_xfer_free(xr);
	pair_close(&p);
	free(src);
	free(dst);
	free(tgt);
}

static void test_length_mismatch(void **state)
{
	(void)state;
	pair p;
	pair_open(&p, NULL);
	unsigned char a[128], b[128];
	uint64_t sid, did;
	fill(a, sizeof(a), 4);
	TW_PASS(tw_mem_register(p.b, a, sizeof(a), TW_MEM_HOST, 0, &sid));
	TW_PASS(tw_mem_register(p.a, b, sizeof(b), TW_MEM_HOST, 0, &did));
	tw_xfer *xs, *xr;
	TW_PASS(tw_xfer_create(p.b, p.ba, 10000, &xs));
	TW_PASS(tw_xfer_post_send(xs, sid, 0, 100, 9));
	TW_PASS(tw_xfer_create(p.a, p.ab, 10000, &xr));
	TW_PASS(tw_xfer_post_recv(xr, did, 0, 64, 9));
	TW_FAIL(tw_xfer_wait(xr, 10000), TW_ETRUNC);
	TW_FAIL(tw_xfer_wait(xs, 10000), TW_ETRUNC);
	tw_xfer_free(xs);
	tw_xfer_free(xr);
	// The tag pairs again afterwards.
	TW_PASS(tw_xfer_create(p.b, p.ba, 10000, &xs));
	TW_PASS(tw_xfer_post_send(xs, sid, 0, 64, 9));
	TW_PASS(tw_xfer_create(p.a, p.ab, 10000, &xr));
	TW_PASS(tw_xfer_post_recv(xr, did, 0, 64, 9));
	TW_PASS(tw_xfer_wait(xr, 10000));
	TW_PASS(tw_xfer_wait(xs, 10000));
	assert_memory_equal(a, b, 64);
	tw_xfer_free(xs);
	tw_xfer_free(xr);
	pair_close(&p);
}

// A notification reaches the target after all its transfer's data.
static void test_notify_after_data(void **state)
{
	(void)state;
	pair p;
	pair_open(&p, NULL);
	size_t n = 16 << 20;
	unsigned char *src = malloc(n), *tgt = calloc(1, n);
	fill(src, n, 21);
	uint64_t sid, rid;
	share(p.a, tgt, n, TW_ACCESS_WRITE, p.b, p.ba, &rid);
	TW_PASS(tw_mem_register(p.b, src, n, TW_MEM_HOST, 0, &sid));
	tw_xfer *x;
	TW_PASS(tw_xfer_create(p.b, p.ba, 30000, &x));
	for (size_t off = 0; off < n; off += n / 4)
		TW_PASS(tw_xfer_post_write(x, sid, off, rid, off, n / 4));
	TW_PASS(tw_xfer_notify(x, "ready", 5));
	TW_FAIL(tw_xfer_post_write(x, sid, 0, rid, 0, 1), TW_EINVAL);
	TW_FAIL(tw_xfer_notify(x, "again", 5), TW_EINVAL);
	tw_peer from;
	tw_buf m = { 0 };
	TW_PASS(tw_notify_recv(p.a, &from, &m, 30000));
	// The data was in place when the notification could be received.
	assert_memory_equal(src, tgt, n);
	assert_int_equal(m.len, 5);
	tw_buf_free(&m);
	TW_PASS(tw_xfer_wait(x, 30000));
	// Repost: the same posts again, and the notification again.
	memset(tgt, 0, n);
	fill(src, n, 22);
	TW_PASS(tw_xfer_repost(x));
	TW_PASS(tw_notify_recv(p.a, &from, &m, 30000));
	assert_memory_equal(src, tgt, n);
	tw_buf_free(&m);
	TW_PASS(tw_xfer_wait(x, 30000));
	// Standalone notifications arrive in order, any length up to the max.
	for (int i = 0; i < 50; i++) {
		char msg[32];
		int len = snprintf(msg, sizeof(msg), "note %d", i);
		TW_PASS(tw_engine_notify(p.b, p.ba, msg, (size_t)len));
	}
	TW_PASS(tw_engine_notify(p.b, p.ba, NULL, 0));
	for (int i = 0; i < 50; i++) {
		char msg[32];
		int len = snprintf(msg, sizeof(msg), "note %d", i);
		TW_PASS(tw_notify_recv(p.a, &from, &m, 10000));
		assert_int_equal(m.len, (size_t)len);
		assert_memory_equal(m.data, msg, (size_t)len);
		tw_buf_free(&m);
	}
	TW_PASS(tw_notify_recv(p.a, &from, &m, 10000));
	assert_int_equal(m.len, 0);
	tw_buf_free(&m);
	// Over the receiver's TW_OPT_MAX_MSG_SIZE (1 MiB by default).
	char *big = calloc(1, (1 << 20) + 1);
	TW_FAIL(tw_engine_notify(p.b, p.ba, big, (1 << 20) + 1), TW_ETOOBIG);
	TW_PASS(tw_engine_notify(p.b, p.ba, big, 1 << 20));
	TW_PASS(tw_notify_recv(p.a, &from, &m, 10000));
	assert_int_equal(m.len, 1 << 20);
	tw_buf_free(&m);
	free(big);
	tw_xfer_free(x);
	pair_close(&p);
	free(src);
	free(tgt);
}

static void test_timeouts_and_cancel(void **state)
{
	(void)state;
	pair p;
	pair_open(&p, NULL);
	unsigned char a[64], b[64];
	fill(a, sizeof(a), 8);
	memset(b, 0, sizeof(b));
	uint64_t sid, did;
	TW_PASS(tw_mem_register(p.b, a, sizeof(a), TW_MEM_HOST, 0, &sid));
	TW_PASS(tw_mem_register(p.a, b, sizeof(b), TW_MEM_HOST, 0, &did));
	// A receive nobody sends to: TW_EAGAIN while it runs, then
	// TW_ETIMEDOUT at its deadline.
	tw_xfer *xr;
	TW_PASS(tw_xfer_create(p.a, p.ab, 200, &xr));
	TW_PASS(tw_xfer_post_recv(xr, did, 0, 64, 3));
	TW_FAIL(tw_xfer_wait(xr, 0), TW_EAGAIN);
	TW_FAIL(tw_xfer_wait(xr, 10000), TW_ETIMEDOUT);
	TW_FAIL(tw_xfer_test(xr), TW_ETIMEDOUT);
	TW_FAIL(tw_xfer_post_recv(xr, did, 0, 64, 3), TW_EINVAL);
	tw_xfer_free(xr);
	// A send that timed out is cancelled on both sides: the next send of
	// the tag pairs with the next receive.
	tw_xfer *xs;
	TW_PASS(tw_xfer_create(p.b, p.ba, 200, &xs));
	TW_PASS(tw_xfer_post_send(xs, sid, 0, 32, 4));
	TW_FAIL(tw_xfer_wait(xs, 10000), TW_ETIMEDOUT);
	tw_xfer_free(xs);
	TW_PASS(tw_xfer_create(p.b, p.ba, 10000, &xs));
	TW_PASS(tw_xfer_post_send(xs, sid, 0, 64, 4));
	TW_PASS(tw_xfer_create(p.a, p.ab, 10000, &xr));
	TW_PASS(tw_xfer_post_recv(xr, did, 0, 64, 4));
	TW_PASS(tw_xfer_wait(xr, 10000));
	TW_PASS(tw_xfer_wait(xs, 10000));
	assert_memory_equal(a, b, 64);
	tw_xfer_free(xs);
	tw_xfer_free(xr);
	// A transfer with no posts is finished at once.
	TW_PASS(tw_xfer_create(p.a, p.ab, -1, &xr));
	assert_int_equal(tw_xfer_test(xr), 1);
	TW_FAIL(tw_xfer_post_recv(xr, did, 0, 1, 1), TW_EINVAL);
	tw_xfer_free(xr);
	pair_close(&p);
}

// Freed in flight: the engine never touches the memory again and goes on
// working; a registration in use cannot be deregistered.
static void test_free_in_flight(void **state)
{
	(void)state;
	pair p;
	opts o = { .chunk = 4096, .window = 1 };
	pair_open(&p, &o);
	size_t n = 8 << 20;
	unsigned char *src = malloc(n), *tgt = calloc(1, n), *back = malloc(n);
	fill(src, n, 31);
	uint64_t sid, rid, bid;
	uint64_t tid = share(p.a, tgt, n, 3, p.b, p.ba, &rid);
	TW_PASS(tw_mem_register(p.b, src, n, TW_MEM_HOST, 0, &sid));
	TW_PASS(tw_mem_register(p.b, back, n, TW_MEM_HOST, 0, &bid));
	for (int i = 0; i < 20; i++) {
		tw_xfer *x;
		TW_PASS(tw_xfer_create(p.b, p.ba, 30000, &x));
		if (i % 2)
			TW_PASS(tw_xfer_post_write(x, sid, 0, rid, 0, n));
		else
			TW_PASS(tw_xfer_post_read(x, bid, 0, rid, 0, n));
		TW_FAIL(tw_mem_deregister(p.b, i % 2 ? sid : bid), TW_EAGAIN);
		tw_xfer_free(x);
		// Freed: the memory may go at once.
		TW_PASS(tw_mem_deregister(p.b, i % 2 ? sid : bid));
		memset(back, 0x77, n);
		if (i % 2)
			TW_PASS(tw_mem_register(
			    p.b, src, n, TW_MEM_HOST, 0, &sid));
		else
			TW_PASS(tw_mem_register(
			    p.b, back, n, TW_MEM_HOST, 0, &bid));
	}
	// back stays as the last loop left it: no late READ reply landed.
	for (size_t i = 0; i < n; i += 4093)
		assert_int_equal(back[i], 0x77);
	tw_xfer *x;
	TW_PASS(tw_xfer_create(p.b, p.ba, 30000, &x));
	TW_PASS(tw_xfer_post_write(x, sid, 0, rid, 0, n));
	TW_PASS(tw_xfer_wait(x, 30000));
	assert_memory_equal(src, tgt, n);
	tw_xfer_free(x);
	TW_PASS(tw_mem_deregister(p.a, tid));
	pair_close(&p);
	free(src);
	free(tgt);
	free(back);
}

static bool readable(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	return poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN);
}

static void test_fd_and_reap(void **state)
{
	(void)state;
	pair p;
	pair_open(&p, NULL);
	int fd = tw_engine_fd(p.b);
	assert_true(fd >= 0);
	assert_false(readable(fd));
	unsigned char src[4096], tgt[4096];
	fill(src, sizeof(src), 2);
	uint64_t sid, rid;
	share(p.a, tgt, sizeof(tgt), TW_ACCESS_WRITE, p.b, p.ba, &rid);
	TW_PASS(tw_mem_register(p.b, src, sizeof(src), TW_MEM_HOST, 0, &sid));
	tw_xfer *x[3];
	for (int i = 0; i < 3; i++) {
		TW_PASS(tw_xfer_create(p.b, p.ba, 10000, &x[i]));
		TW_PASS(tw_xfer_post_write(x[i], sid, 0, rid, 0, sizeof(src)));
	}
	// Waiting reports done but leaves the transfer to reap.
	TW_PASS(tw_xfer_wait(x[0], 10000));
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	tw_xfer *got[8];
	size_t n = 0, total = 0;
	while (total < 3) {
		assert_int_equal(poll(&pfd, 1, 10000), 1);
		TW_PASS(tw_engine_reap(p.b, got + total, 8 - total, &n));
		total += n;
	}
	assert_int_equal(total, 3);
	TW_PASS(tw_engine_reap(p.b, got, 8, &n));
	assert_int_equal(n, 0); // each once
	assert_false(readable(fd));
	for (int i = 0; i < 3; i++) {
		bool seen = false;
		for (int j = 0; j < 3; j++)
			seen |= got[j] == x[i];
		assert_true(seen);
		assert_int_equal(tw_xfer_test(x[i]), 1);
	}
	// Repost takes it out; it comes back once done.
	TW_PASS(tw_xfer_repost(x[1]));
	TW_PASS(tw_xfer_wait(x[1], 10000));
	assert_int_equal(poll(&pfd, 1, 10000), 1);
	TW_PASS(tw_engine_reap(p.b, got, 8, &n));
	assert_int_equal(n, 1);
	assert_ptr_equal(got[0], x[1]);
	// A notification makes the peer's fd readable.
	int fa = tw_engine_fd(p.a);
	assert_false(readable(fa));
	TW_PASS(tw_engine_notify(p.b, p.ba, "n", 1));
	struct pollfd pa = { .fd = fa, .events = POLLIN };
	assert_int_equal(poll(&pa, 1, 10000), 1);
	tw_buf m = { 0 };
	tw_peer from;
	TW_PASS(tw_notify_recv(p.a, &from, &m, 0));
	tw_buf_free(&m);
	assert_false(readable(fa));
	for (int i = 0; i < 3; i++)
		tw_xfer_free(x[i]);
	pair_close(&p);
}

typedef struct poster {
	pair *p;
	uint64_t sid, rid;
	size_t slot, n;
	int status;
} poster;

static void *post_thread(void *arg)
{
	poster *t = arg;
	for (int i = 0; i < 50 && t->status == TW_OK; i++) {
		tw_xfer *x;
		t->status = tw_xfer_create(t->p->b, t->p->ba, 30000, &x);
		if (t->status != TW_OK)
			break;
		for (size_t k = 0; k < 4 && t->status == TW_OK; k++)
			t->status = tw_xfer_post_write(x, t->sid,
			    t->slot * t->n + k * (t->n / 4), t->rid,
			    t->slot * t->n + k * (t->n / 4), t->n / 4);
		if (t->status == TW_OK)
			t->status = tw_xfer_wait(x, 30000);
		tw_xfer_free(x);
	}
	return NULL;
}

static void test_threads(void **state)
{
	(void)state;
	pair p;
	pair_open(&p, NULL);
	enum { T = 4 };
	size_t n = 256 << 10;
	unsigned char *src = malloc(T * n), *tgt = calloc(1, T * n);
	fill(src, T * n, 13);
	uint64_t sid, rid;
	share(p.a, tgt, T * n, TW_ACCESS_WRITE, p.b, p.ba, &rid);
	TW_PASS(tw_mem_register(p.b, src, T * n, TW_MEM_HOST, 0, &sid));
	poster t[T];
	pthread_t th[T];
	for (int i = 0; i < T; i++) {
		t[i] = (poster) {
			.p = &p, .sid = sid, .rid = rid, .slot = i, .n = n
		};
		assert_int_equal(
		    pthread_create(&th[i], NULL, post_thread, &t[i]), 0);
	}
	for (int i = 0; i < T; i++) {
		pthread_join(th[i], NULL);
		TW_PASS(t[i].status);
	}
	assert_memory_equal(src, tgt, T * n);
	tw_xfer_stats st;
	TW_PASS(tw_engine_stats(p.b, p.ba, &st));
	assert_int_equal(st.xfers_done, T * 50);
	assert_int_equal(st.bytes_sent, (uint64_t)T * 50 * n);
	pair_close(&p);
	free(src);
	free(tgt);
}

// The peer disconnects: transfers in flight there fail with TW_EPEER,
// never hang; the accept lookup gives the same peer.
static void test_disconnect(void **state)
{
	(void)state;
	pair p;
	pair_open(&p, NULL);
	tw_peer again;
	TW_PASS(tw_engine_accept(p.a, "beta", 0, &again));
	assert_int_equal(again, p.ab);
	unsigned char b[64];
	uint64_t did;
	TW_PASS(tw_mem_register(p.a, b, sizeof(b), TW_MEM_HOST, 0, &did));
	tw_xfer *xr;
	TW_PASS(tw_xfer_create(p.a, p.ab, -1, &xr));
	TW_PASS(tw_xfer_post_recv(xr, did, 0, 64, 1));
	// What was queued before the disconnect still arrives.
	TW_PASS(tw_engine_notify(p.b, p.ba, "bye", 3));
	TW_PASS(tw_engine_disconnect(p.b, p.ba));
	TW_FAIL(tw_engine_disconnect(p.b, p.ba), TW_EINVAL);
	TW_FAIL(tw_xfer_wait(xr, 10000), TW_EPEER);
	tw_buf m = { 0 };
	tw_peer from;
	TW_PASS(tw_notify_recv(p.a, &from, &m, 10000));
	assert_int_equal(m.len, 3);
	assert_memory_equal(m.data, "bye", 3);
	tw_buf_free(&m);
	tw_xfer_free(xr);
	tw_xfer *x;
	TW_FAIL(tw_xfer_create(p.b, p.ba, 0, &x), TW_EINVAL);
	pair_close(&p);
}

static void test_wrong_secret(void **state)
{
	(void)state;
	if (strcmp(transport, "tcp") != 0)
		return; // mem:// parties share a process: nothing to prove
	tw_engine *a, *b;
	TW_PASS(tw_engine_new("alpha", &a));
	TW_PASS(tw_engine_new("beta", &b));
	TW_PASS(tw_engine_set_secret(a, "right", 5));
	TW_PASS(tw_engine_set_secret(b, "wrong", 5));
	TW_PASS(tw_engine_set(b, TW_OPT_CONNECT_TIMEOUT_MS, 3000));
	TW_PASS(tw_engine_listen(a, "tcp://127.0.0.1:0"));
	tw_buf info = { 0 };
	TW_PASS(tw_engine_info(a, &info));
	tw_peer pr;
	TW_FAIL(tw_engine_connect(b, info.data, info.len, &pr), TW_EAUTH);
	TW_FAIL(tw_engine_accept(a, "beta", 0, &pr), TW_ETIMEDOUT);
	tw_buf_free(&info);
	tw_engine_free(b);
	tw_engine_free(a);
}

int main(int argc, char **argv)
{
	if (argc > 1)
		transport = argv[1];
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_options_and_errors),
		cmocka_unit_test(test_write_read),
		cmocka_unit_test(test_send_recv),
		cmocka_unit_test(test_bad_descriptors),
		cmocka_unit_test(test_violations),
		cmocka_unit_test(test_tagged_sizes),
		cmocka_unit_test(test_batch_and_fifo),
		cmocka_unit_test(test_length_mismatch),
		cmocka_unit_test(test_notify_after_data),
		cmocka_unit_test(test_timeouts_and_cancel),
		cmocka_unit_test(test_free_in_flight),
		cmocka_unit_test(test_fd_and_reap),
		cmocka_unit_test(test_threads),
		cmocka_unit_test(test_disconnect),
		cmocka_unit_test(test_wrong_secret),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
