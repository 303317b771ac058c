// Messages longer than a chunk, striped or not, and the acknowledgements
// and credit that go with them.
//
// striped_acks_no_heartbeat_s3 / _s1: two processes, TW_OPT_HEARTBEAT_MS=0
// (so no periodic frame carries an ack), TW_OPT_CHUNK_SIZE=64 KiB and
// TW_OPT_STRIPES 3 (messages of 64 KiB to 1 MiB, in chunks over three
// connections) or 1 (messages of 256 KiB to 2 MiB, which travel as chunks
// on one connection).  The receiver checks every message; the sender's
// tw_link_wait_pending after the last one, and both tw_link_close calls,
// must return TW_OK within 2 s (scaled): the receiver holds acks back
// while a chunked message is incomplete, and must send them once it is.
//
// stripes_mixed_stream: three processes, 3 stripes, 64 KiB chunks,
// TW_OPT_RECV_BUFFER 8 MiB; each party streams to both others messages of
// 8 B to 256 KiB under three tags (a quarter with tw_send_async), and
// receives from both others (half with tw_recv_into), with a sending and
// a receiving thread per (peer, tag): several threads take one peer's
// messages at once, and report the credit they free in whatever order
// they run.  Each message carries its sender, receiver, tag and sequence
// number, and bytes that depend on them: every byte is checked, and so is
// the order per (sender, tag), since each receiving thread takes the
// messages of its tag in their sequence.  The run is repeated five times
// in the test; the size argument is the number of messages per ordered
// pair.

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parts.h"
#include "testdata.h"
#include "testutil.h"
#include "tf.h"

#define CHUNK ((int64_t)64 << 10)

static uint64_t mix(uint64_t x)
{
	x += UINT64_C(0x9e3779b97f4a7c15);
	x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
	return x ^ (x >> 31);
}

static void close_timed(tw_link *l, const char *who)
{
	int64_t t0 = tf_now_ms();
	int st = tw_link_close(l);
	int64_t ms = tf_now_ms() - t0;
	if (st != TW_OK)
		tf_die("%s: tw_link_close: %s after %lld ms", who,
		    tw_err_name(st), (long long)ms);
	if (ms > tf_scale_ms(2000))
		tf_die("%s: tw_link_close took %lld ms", who, (long long)ms);
}

// --- striped_acks_no_heartbeat ----------------------------------------------------

#define ACKS_COUNT 32

static size_t acks_len(uint32_t i, size_t lo, size_t hi)
{
	return lo + (size_t)(mix(i) % (hi - lo + 1));
}

// acks PORT0 PORT1 STRIPES RANK: rank 0 sends, rank 1 receives.
int role_acks(int argc, char **argv)
{
	unsigned ports[2] = { (unsigned)strtoul(argv[0], NULL, 10),
		(unsigned)strtoul(argv[1], NULL, 10) };
	int stripes = atoi(argv[2]);
	size_t me = strtoul(argv[3], NULL, 10);
	tf_who = me == 0 ? "sender" : "receiver";
	// Longer than a chunk; with one connection, longer than a frame.
	size_t lo = stripes > 1 ? (size_t)CHUNK + 1 : ((size_t)256 << 10) + 1;
	size_t hi = stripes > 1 ? (size_t)1 << 20 : (size_t)2 << 20;
	tw_desc *d = tf_desc(
	    "acks", ports, 2, tf_scale_ms(20000), tf_scale_ms(30000));
	TF_OK(tw_desc_set(d, TW_OPT_HEARTBEAT_MS, 0));
	TF_OK(tw_desc_set(d, TW_OPT_STRIPES, stripes));
	TF_OK(tw_desc_set(d, TW_OPT_CHUNK_SIZE, CHUNK));
	tw_link *l = NULL;
	TF_OK(tw_link_create(d, me, &l));
	unsigned char *buf = malloc(hi);
	if (buf == NULL)
		tf_die("out of memory");
	if (me == 0) {
		for (uint32_t i = 0; i < ACKS_COUNT; i++) {
			size_t len = acks_len(i, lo, hi);
			tf_fill_blocks(buf, len, i);
			TF_OK(i % 2 == 0 ? tw_send(l, 1, "m", buf, len)
			                 : tw_send_async(l, 1, "m", buf, len));
		}
		int64_t t0 = tf_now_ms();
		int st = tw_link_wait_pending(l);
		int64_t ms = tf_now_ms() - t0;
		printf("tw_link_wait_pending: %s after %lld ms\n",
		    tw_err_name(st), (long long)ms);
		if (st != TW_OK)
			tf_die("tw_link_wait_pending: %s after %lld ms",
			    tw_err_name(st), (long long)ms);
		if (ms > tf_scale_ms(2000))
			tf_die("tw_link_wait_pending took %lld ms",
			    (long long)ms);
		TF_OK(tw_send(l, 1, "done", "done", 4));
	} else {
		for (uint32_t i = 0; i < ACKS_COUNT; i++) {
			size_t len = acks_len(i, lo, hi), got = 0;
			TF_OK(tw_recv_into(l, 0, "m", buf, hi, &got));
			if (got != len
			    || tf_check_blocks(buf, got, i) != SIZE_MAX)
				tf_die("message %u: %zu bytes, wrong", i, got);
		}
		// Idle until the sender's wait returned: its acks cannot
		// ride on anything this side sends.
		tw_buf b = { 0 };
		TF_OK(tw_recv(l, 0, "done", &b));
		tw_buf_free(&b);
	}
	close_timed(l, tf_who);
	free(buf);
	tw_desc_free(d);
	return 0;
}

static void run_acks(const char *stripes)
{
	unsigned ports[2];
	assert_int_equal(tf_ports(ports, 2, NULL, 0), 0);
	char p[2][16];
	for (int i = 0; i < 2; i++)
		snprintf(p[i], sizeof(p[i]), "%u", ports[i]);
	pid_t pid[2];
	for (int r = 0; r < 2; r++) {
		const char *args[]
		    = { p[0], p[1], stripes, r == 0 ? "0" : "1", NULL };
		pid[r] = tf_spawn("acks", args, NULL, 0);
		assert_true(pid[r] > 0);
	}
	static const char *const names[] = { "sender", "receiver" };
	char why[512];
	if (!tf_wait_all(pid, names, 2, tf_now_ms() + tf_scale_ms(90000), why,
	        sizeof(why)))
		fail_msg("%s", why);
}

void test_striped_acks_no_heartbeat_s3(void **state)
{
	run_acks("3");
}

void test_striped_acks_no_heartbeat_s1(void **state)
{
	run_acks("1");
}

// --- stripes_mixed_stream -----------------------------------------------------------

#define MIX_PARTIES 3
#define MIX_TAGS 3
#define MIX_MAX ((size_t)256 << 10)
#define MIX_HDR 24
#define MIX_MAGIC UINT32_C(0x4d495853)
// The bytes after a message's header are a window of this pattern, at an
// offset that depends on the message.
#define MIX_POOL ((size_t)512 << 10)

static unsigned char pool[MIX_POOL];
static uint32_t mix_count; // messages per ordered pair
static tw_link *mix_link;
static size_t mix_me;

typedef struct mshape {
	size_t len;
	uint32_t tag;
	bool async, into;
	size_t off;
} mshape;

static mshape mix_shape(uint32_t s, uint32_t r, uint32_t k)
{
	uint64_t h = mix(((uint64_t)s << 48) ^ ((uint64_t)r << 40) ^ k);
	mshape m;
	// Sizes spread evenly over the powers of two from 8 B to 256 KiB.
	size_t base = (size_t)8 << (h % 16);
	m.len = base + (size_t)((h >> 8) % base);
	if (m.len > MIX_MAX)
		m.len = MIX_MAX;
	m.tag = (uint32_t)((h >> 32) % MIX_TAGS);
	m.async = ((h >> 40) & 3) == 0;
	m.into = ((h >> 42) & 1) == 0;
	m.off = (size_t)((h >> 20) % (MIX_POOL - MIX_MAX));
	return m;
}

// Writes message (s, r, k) into buf (MIX_MAX bytes); returns its length.
static size_t mix_make(uint32_t s, uint32_t r, uint32_t k, unsigned char *buf)
{
	mshape m = mix_shape(s, r, k);
	uint32_t hdr[MIX_HDR / 4]
	    = { MIX_MAGIC, s, r, m.tag, k, (uint32_t)m.len };
	unsigned char full[MIX_HDR];
	memcpy(full, hdr, sizeof(full));
	size_t h = m.len < MIX_HDR ? m.len : MIX_HDR;
	memcpy(buf, full, h);
	memcpy(buf + h, pool + m.off, m.len - h);
	return m.len;
}

static const char *const mix_tags[MIX_TAGS] = { "t0", "t1", "t2" };

// A sending or receiving thread: one per (peer, tag) and direction, so
// that the messages of one peer are sent and taken by several threads at
// once (credit is reported by whichever thread took a message).
typedef struct mthread {
	uint32_t peer, tag;
	pthread_t th;
} mthread;

static void *mix_send_main(void *arg)
{
	const mthread *t = arg;
	uint32_t to = t->peer;
	unsigned char *buf = malloc(MIX_MAX);
	if (buf == NULL)
		tf_die("out of memory");
	for (uint32_t k = 0; k < mix_count; k++) {
		mshape m = mix_shape((uint32_t)mix_me, to, k);
		if (m.tag != t->tag)
			continue;
		size_t len = mix_make((uint32_t)mix_me, to, k, buf);
		int st = m.async
		    ? tw_send_async(mix_link, to, mix_tags[m.tag], buf, len)
		    : tw_send(mix_link, to, mix_tags[m.tag], buf, len);
		if (st != TW_OK)
			tf_die("message %u to p%u (%zu bytes, tag %u, %s): %s",
			    k, to, len, m.tag, m.async ? "async" : "sync",
			    tw_err_name(st));
	}
	free(buf);
	return NULL;
}

static void *mix_recv_main(void *arg)
{
	const mthread *t = arg;
	uint32_t from = t->peer;
	unsigned char *want = malloc(MIX_MAX), *got = malloc(MIX_MAX);
	if (want == NULL || got == NULL)
		tf_die("out of memory");
	for (uint32_t k = 0; k < mix_count; k++) {
		mshape m = mix_shape(from, (uint32_t)mix_me, k);
		if (m.tag != t->tag)
			continue;
		size_t len = mix_make(from, (uint32_t)mix_me, k, want);
		size_t n = 0;
		tw_buf b = { 0 };
		int st;
		if (m.into) {
			st = tw_recv_into(
			    mix_link, from, mix_tags[m.tag], got, MIX_MAX, &n);
		} else {
			st = tw_recv(mix_link, from, mix_tags[m.tag], &b);
			n = b.len;
			if (st == TW_OK && n <= MIX_MAX)
				memcpy(got, b.data, n);
			tw_buf_free(&b);
		}
		if (st != TW_OK)
			tf_die("message %u from p%u (tag %u): %s", k, from,
			    m.tag, tw_err_name(st));
		if (n >= MIX_HDR && memcmp(got, want, MIX_HDR) != 0) {
			uint32_t h[MIX_HDR / 4];
			memcpy(h, got, sizeof(h));
			tf_die("from p%u tag %u: got message %u of p%u to p%u "
			       "(tag %u, %u bytes), want message %u",
			    from, m.tag, h[4], h[1], h[2], h[3], h[5], k);
		}
		if (n != len || memcmp(got, want, len) != 0)
			tf_die("message %u from p%u (tag %u): %zu bytes, want "
			       "%zu, or wrong bytes",
			    k, from, m.tag, n, len);
	}
	free(want);
	free(got);
	return NULL;
}

// mix PORT0 PORT1 PORT2 COUNT RANK RUN
int role_mix(int argc, char **argv)
{
	unsigned ports[MIX_PARTIES];
	for (int i = 0; i < MIX_PARTIES; i++)
		ports[i] = (unsigned)strtoul(argv[i], NULL, 10);
	mix_count = (uint32_t)strtoul(argv[3], NULL, 10);
	mix_me = strtoul(argv[4], NULL, 10);
	static const char *const who[] = { "p0", "p1", "p2" };
	tf_who = who[mix_me % MIX_PARTIES];
	tw_test_fill(pool, sizeof(pool), 3, 1, 4);
	char id[32];
	snprintf(id, sizeof(id), "mix.%s", argv[5]);
	tw_desc *d = tf_desc(
	    id, ports, MIX_PARTIES, tf_scale_ms(20000), tf_scale_ms(60000));
	TF_OK(tw_desc_set(d, TW_OPT_STRIPES, 3));
	TF_OK(tw_desc_set(d, TW_OPT_CHUNK_SIZE, CHUNK));
	TF_OK(tw_desc_set(d, TW_OPT_RECV_BUFFER, (int64_t)8 << 20));
	TF_OK(tw_link_create(d, mix_me, &mix_link));
	mthread tx[MIX_PARTIES][MIX_TAGS], rx[MIX_PARTIES][MIX_TAGS];
	for (uint32_t j = 0; j < MIX_PARTIES; j++) {
		for (uint32_t g = 0; j != mix_me && g < MIX_TAGS; g++) {
			tx[j][g] = (mthread) { .peer = j, .tag = g };
			rx[j][g] = (mthread) { .peer = j, .tag = g };
			if (pthread_create(
			        &tx[j][g].th, NULL, mix_send_main, &tx[j][g])
			        != 0
			    || pthread_create(&rx[j][g].th, NULL,
			           mix_recv_main, &rx[j][g])
			        != 0)
				tf_die("pthread_create failed");
		}
	}
	for (uint32_t j = 0; j < MIX_PARTIES; j++) {
		for (uint32_t g = 0; j != mix_me && g < MIX_TAGS; g++) {
			pthread_join(tx[j][g].th, NULL);
			pthread_join(rx[j][g].th, NULL);
		}
	}
	TF_OK(tw_link_wait_pending(mix_link));
	TF_OK(tw_barrier(mix_link, "end"));
	int st = tw_link_close(mix_link);
	if (st != TW_OK && st != TW_EPEER)
		tf_die("tw_link_close: %s", tw_err_name(st));
	tw_desc_free(d);
	return 0;
}

void test_stripes_mixed_stream(void **state)
{
	const char *count = tf_size_arg;
	assert_true(tf_parse_size(count) > 0);
	int failed = 0;
	char first[600] = "";
	for (int run = 0; run < 5; run++) {
		unsigned ports[MIX_PARTIES];
		assert_int_equal(tf_ports(ports, MIX_PARTIES, NULL, 0), 0);
		char p[MIX_PARTIES][16], srun[8];
		for (int i = 0; i < MIX_PARTIES; i++)
			snprintf(p[i], sizeof(p[i]), "%u", ports[i]);
		snprintf(srun, sizeof(srun), "%d", run);
		pid_t pid[MIX_PARTIES];
		int64_t t0 = tf_now_ms();
		for (int r = 0; r < MIX_PARTIES; r++) {
			char rank[4];
			snprintf(rank, sizeof(rank), "%d", r);
			const char *args[]
			    = { p[0], p[1], p[2], count, rank, srun, NULL };
			pid[r] = tf_spawn("mix", args, NULL, 0);
			assert_true(pid[r] > 0);
		}
		static const char *const names[] = { "p0", "p1", "p2" };
		char why[512];
		bool ok = tf_wait_all(pid, names, MIX_PARTIES,
		    tf_now_ms() + tf_scale_ms(120000), why, sizeof(why));
		printf("run %d: %s in %.1f s\n", run + 1, ok ? "ok" : "FAILED",
		    (double)(tf_now_ms() - t0) / 1000);
		fflush(stdout);
		if (!ok && failed++ == 0)
			snprintf(
			    first, sizeof(first), "run %d: %s", run + 1, why);
	}
	if (failed > 0)
		fail_msg("%d of 5 runs failed; the first, %s", failed, first);
}
