// Semantics of the transfer engine (tagwire/engine.h) over mem:// and
// tcp:// within one process: every test runs once per transport (argv[1]).

#include <poll.h>
#include <pthread.h>

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

int main(int argc, char **argv)
{
	if (argc > 1)
		transport = argv[1];
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_write_read),
		cmocka_unit_test(test_send_recv),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
