// engine_bench: the transfer engine (tagwire/engine.h) against its
// baselines, in one run, round after round, the order of the contenders
// rotating from round to round:
//
//   eng-tcp  WRITE, READ and tagged send/recv between two processes (fork;
//            the info and memory blobs go over a socketpair) over
//            tcp://127.0.0.1 with TW_OPT_STRIPES 1, 2 and 4; baselines: one
//            raw TCP stream on loopback, blocking send/recv of the same
//            bytes, the receiver acknowledging each block with one byte
//            (raw-ack, comparable to a WRITE's completion), and the same
//            bytes streamed with one ack at the end (raw-stream).
//   eng-mem  the same between two engines of one process over mem://;
//            baseline: memcpy of the same size.
//
// Sizes 4 KiB, 64 KiB, 1 MiB and 16 MiB, one post per transfer, plus a
// batch: one transfer of 1024 WRITEs of 4 KiB (4 MiB).  Per figure: the
// bandwidth (bytes over the wall time of the loop, transfer create and free
// included), the average post time (the tw_xfer_post_* calls of one
// transfer) and the median completion time (first post to tw_xfer_wait's
// return).  Every transfer waits for the one before (one in flight).
//
// Unpinned by default; --pin puts the initiator (the main process, and
// memcpy) on the first allowed CPU and the target (the forked process) on
// the second; the two engines of mem:// share both CPUs.
//
// The TSV (--tsv) has the columns of bench/run.sh's comparison under the
// header "esection ..." that bench/merge.awk recognises; see README.md.
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <tagwire/engine.h>
#include <unistd.h>

#include "bench_util.h"

#define NSIZES 4
#define BATCH_N 1024
#define BATCH_SZ (4 * KiB)
#define BUF_BYTES (16 * MiB)
#define XFER_TIMEOUT_MS 60000
#define MAX_FIGS 8192

static const size_t sizes[NSIZES] = { 4 * KiB, 64 * KiB, MiB, 16 * MiB };
static const char *const size_names[NSIZES]
    = { "4 KiB", "64 KiB", "1 MiB", "16 MiB" };
#define BATCH_WL "bw 1024x4 KiB"

enum { OP_WRITE, OP_READ, OP_SEND, OP_COUNT };
static const char *const op_names[OP_COUNT] = { "write", "read", "send" };

enum { C_TCP1, C_TCP2, C_TCP4, C_RAW, C_MEM, C_MEMCPY, C_COUNT };
static const char *const c_names[C_COUNT] = { "tcp stripes 1", "tcp stripes 2",
	"tcp stripes 4", "raw tcp", "mem", "memcpy" };
static const int c_stripes[C_COUNT] = { 1, 2, 4, 0, 0, 0 };

static int rounds = 5;
static int quick;
static int cpu_a = -1, cpu_b = -1; // --pin; -1: unpinned
static size_t total_bytes = 256 * MiB; // per figure
static long max_iters = 20000;
static const char *tsv_path;
static int failures;
static char mem_seq_name[64];

// ---------------------------------------------------------------------------
// Figures
// ---------------------------------------------------------------------------

struct fig {
	char section[16], workload[32], contender[32], metric[16], unit[8];
	int round;
	double value;
};
static struct fig figs[MAX_FIGS];
static int nfigs;

static void add_fig(const char *sec, const char *wkl, const char *con,
    const char *metric, const char *unit, int round, double v)
{
	if (nfigs >= MAX_FIGS)
		return;
	struct fig *f = &figs[nfigs++];
	snprintf(f->section, sizeof(f->section), "%s", sec);
	snprintf(f->workload, sizeof(f->workload), "%s", wkl);
	snprintf(f->contender, sizeof(f->contender), "%s", con);
	snprintf(f->metric, sizeof(f->metric), "%s", metric);
	snprintf(f->unit, sizeof(f->unit), "%s", unit);
	f->round = round;
	f->value = v;
}

// The median over the rounds of one figure; NaN when not measured.
static double fig_median(
    const char *sec, const char *wkl, const char *con, const char *metric)
{
	double v[MAX_ROUNDS];
	int n = 0;
	for (int i = 0; i < nfigs && n < MAX_ROUNDS; i++) {
		struct fig *f = &figs[i];
		if (strcmp(f->section, sec) == 0
		    && strcmp(f->workload, wkl) == 0
		    && strcmp(f->contender, con) == 0
		    && strcmp(f->metric, metric) == 0)
			v[n++] = f->value;
	}
	return bench_median(v, n, NULL, NULL);
}

// The three figures of one loop.
struct result {
	double gbps, post_us, done_us;
};

static void add_result(const char *sec, const char *wkl, const char *con,
    int round, const struct result *r, int with_times)
{
	add_fig(sec, wkl, con, "bandwidth", "GB/s", round, r->gbps);
	if (with_times) {
		add_fig(sec, wkl, con, "post time", "us", round, r->post_us);
		add_fig(sec, wkl, con, "completion", "us", round, r->done_us);
	}
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

static unsigned char pat(size_t i, unsigned seed)
{
	return (unsigned char)(i * 131u + (i >> 8) * 7u + seed);
}

static void fill(unsigned char *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = pat(i, seed);
}

// Sample bytes of b[0..n) against the pattern: 0 when they match.
static int check(const unsigned char *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i += 4093)
		if (b[i] != pat(i, seed))
			return -1;
	return b[n - 1] == pat(n - 1, seed) ? 0 : -1;
}

static long iters_for(size_t bytes)
{
	long n = (long)(total_bytes / bytes);
	if (n < 4)
		n = 4;
	if (n > max_iters)
		n = max_iters;
	return n;
}

static long warm_for(long iters)
{
	long w = iters / 20;
	return w < 1 ? 1 : w > 200 ? 200 : w;
}

static int full_io(int fd, void *buf, size_t len, int out)
{
	char *p = buf;
	while (len > 0) {
		ssize_t n = out ? send(fd, p, len, MSG_NOSIGNAL)
		                : recv(fd, p, len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int put_blob(int fd, const void *b, size_t len)
{
	uint64_t l = len;
	return full_io(fd, &l, sizeof(l), 1) || full_io(fd, (void *)b, len, 1)
	    ? -1
	    : 0;
}

static int get_blob(int fd, tw_buf *out)
{
	uint64_t l;
	if (full_io(fd, &l, sizeof(l), 0) != 0 || l > MiB)
		return -1;
	out->data = malloc(l ? l : 1);
	out->len = l;
	if (out->data == NULL)
		return -1;
	return full_io(fd, out->data, l, 0);
}

static void fail(const char *where, const char *what, int rc)
{
	fprintf(stderr, "engine_bench: %s: %s: %s\n", where, what,
	    rc < 0 ? tw_strerror(rc) : "failed");
	failures++;
}

static int64_t cmp_i64_median(int64_t *v, long n)
{
	qsort(v, (size_t)n, sizeof(*v), bench_cmp_i64);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// ---------------------------------------------------------------------------
// The engine's loops (initiator side)
// ---------------------------------------------------------------------------

struct ends {
	tw_engine *e; // the initiator
	tw_peer peer;
	uint64_t src, rx; // local registrations (BUF_BYTES each)
	uint64_t rmem; // the target's buffer
	// mem:// only: the target engine, its peer number for e and its
	// buffer's registration, for the tagged receives.
	tw_engine *te;
	tw_peer tpeer;
	uint64_t tbuf;
};

// One post of op; batch: BATCH_N WRITEs of BATCH_SZ.
static int post(tw_xfer *x, const struct ends *d, int op, size_t size,
    int batch, uint64_t tag)
{
	if (batch) {
		for (size_t i = 0; i < BATCH_N; i++) {
			int rc = tw_xfer_post_write(x, d->src, i * BATCH_SZ,
			    d->rmem, i * BATCH_SZ, BATCH_SZ);
			if (rc != TW_OK)
				return rc;
		}
		return TW_OK;
	}
	switch (op) {
	case OP_WRITE:
		return tw_xfer_post_write(x, d->src, 0, d->rmem, 0, size);
	case OP_READ:
		return tw_xfer_post_read(x, d->rx, 0, d->rmem, 0, size);
	default:
		return tw_xfer_post_send(x, d->src, 0, size, tag);
	}
}

// warm + iters transfers of one op, one at a time.  With d->te (mem://)
// a tagged send gets its receive posted on the target engine first.
static int engine_loop(const struct ends *d, int op, size_t size, int batch,
    long warm, long iters, struct result *r)
{
	int64_t *done = malloc(sizeof(*done) * (size_t)iters);
	int64_t post_sum = 0, t_start = 0;
	int rc = TW_OK;
	const char *what = "tw_xfer_create";
	if (done == NULL)
		return TW_ENOMEM;
	for (long i = 0; i < warm + iters; i++) {
		if (i == warm)
			t_start = bench_now_ns();
		tw_xfer *rx = NULL, *x = NULL;
		if (op == OP_SEND && d->te != NULL) {
			what = "tw_xfer_create (recv)";
			if ((rc = tw_xfer_create(
			         d->te, d->tpeer, XFER_TIMEOUT_MS, &rx))
			    != TW_OK)
				break;
			what = "tw_xfer_post_recv";
			if ((rc = tw_xfer_post_recv(
			         rx, d->tbuf, 0, size, (uint64_t)i))
			    != TW_OK) {
				tw_xfer_free(rx);
				break;
			}
		}
		what = "tw_xfer_create";
		if ((rc = tw_xfer_create(d->e, d->peer, XFER_TIMEOUT_MS, &x))
		    != TW_OK) {
			tw_xfer_free(rx);
			break;
		}
		int64_t t0 = bench_now_ns();
		rc = post(x, d, op, size, batch, (uint64_t)i);
		int64_t t1 = bench_now_ns();
		what = "tw_xfer_post";
		if (rc == TW_OK) {
			what = "tw_xfer_wait";
			rc = tw_xfer_wait(x, XFER_TIMEOUT_MS);
		}
		if (rc == TW_OK && rx != NULL) {
			what = "tw_xfer_wait (recv)";
			rc = tw_xfer_wait(rx, XFER_TIMEOUT_MS);
		}
		int64_t t2 = bench_now_ns();
		tw_xfer_free(x);
		tw_xfer_free(rx);
		if (rc != TW_OK)
			break;
		if (i >= warm) {
			post_sum += t1 - t0;
			done[i - warm] = t2 - t0;
		}
	}
	if (rc != TW_OK) {
		fprintf(stderr, "engine_bench: %s %s: %s\n", op_names[op],
		    what, tw_strerror(rc));
		free(done);
		return rc;
	}
	int64_t wall = bench_now_ns() - t_start;
	size_t bytes = batch ? BATCH_N * BATCH_SZ : size;
	r->gbps = (double)bytes * (double)iters / (double)wall;
	r->post_us = (double)post_sum / (double)iters / 1e3;
	r->done_us = (double)cmp_i64_median(done, iters) / 1e3;
	free(done);
	return TW_OK;
}

// ---------------------------------------------------------------------------
// tcp://: the target process
// ---------------------------------------------------------------------------

enum { CMD_CHECK = 1, CMD_RECV, CMD_QUIT, CMD_RAW_ACK, CMD_RAW_STREAM };

struct cmd {
	int32_t op;
	uint32_t seed;
	uint64_t size;
	int64_t count;
};

static int send_cmd(int fd, int op, size_t size, long count, unsigned seed)
{
	struct cmd c = { op, seed, size, count };
	return full_io(fd, &c, sizeof(c), 1);
}

static int get_status(int fd)
{
	int32_t st;
	if (full_io(fd, &st, sizeof(st), 0) != 0)
		return -1;
	return st;
}

static int put_status(int fd, int st)
{
	int32_t s = st;
	return full_io(fd, &s, sizeof(s), 1);
}

// The target: an engine that listens, one buffer registered for READ and
// WRITE; answers the initiator's commands on fd.  The exit status.
static int target_main(int fd, int stripes)
{
	tw_engine *e = NULL;
	tw_buf info = { 0 }, desc = { 0 };
	uint64_t id;
	tw_peer peer;
	unsigned char *buf = bench_big_alloc(BUF_BYTES, 0);
	int rc;
	if (buf == NULL)
		return 3;
	fill(buf, BUF_BYTES, 0x5a);
	if ((rc = tw_engine_new("target", &e)) != TW_OK
	    || (rc = tw_engine_set(e, TW_OPT_STRIPES, stripes)) != TW_OK
	    || (rc = tw_engine_listen(e, "tcp://127.0.0.1:0")) != TW_OK
	    || (rc = tw_engine_info(e, &info)) != TW_OK
	    || (rc = tw_mem_register(e, buf, BUF_BYTES, TW_MEM_HOST,
	            TW_ACCESS_READ | TW_ACCESS_WRITE, &id))
	        != TW_OK
	    || (rc = tw_mem_pack(e, id, &desc)) != TW_OK) {
		fprintf(stderr, "engine_bench target: setup: %s\n",
		    tw_strerror(rc));
		return 3;
	}
	if (put_blob(fd, info.data, info.len) != 0
	    || put_blob(fd, desc.data, desc.len) != 0)
		return 3;
	if ((rc = tw_engine_accept(e, "initiator", 30000, &peer)) != TW_OK) {
		fprintf(stderr, "engine_bench target: accept: %s\n",
		    tw_strerror(rc));
		return 3;
	}
	for (;;) {
		struct cmd c;
		if (full_io(fd, &c, sizeof(c), 0) != 0)
			return 3;
		int st = 0;
		if (c.op == CMD_QUIT)
			break;
		if (c.op == CMD_CHECK) {
			st = check(buf, c.size, c.seed);
			fill(buf, c.size, 0x5a);
		} else if (c.op == CMD_RECV) {
			for (int64_t i = 0; i < c.count && st == 0; i++) {
				tw_xfer *x;
				rc = tw_xfer_create(
				    e, peer, XFER_TIMEOUT_MS, &x);
				if (rc == TW_OK) {
					rc = tw_xfer_post_recv(
					    x, id, 0, c.size, (uint64_t)i);
					if (rc == TW_OK)
						rc = tw_xfer_wait(
						    x, XFER_TIMEOUT_MS);
					tw_xfer_free(x);
				}
				if (rc != TW_OK) {
					fprintf(stderr,
					    "engine_bench target: recv %lld: "
					    "%s\n",
					    (long long)i, tw_strerror(rc));
					st = rc;
				}
			}
		}
		if (put_status(fd, st) != 0)
			return 3;
	}
	tw_buf_free(&info);
	tw_buf_free(&desc);
	tw_engine_free(e);
	return 0;
}

// Confines this thread, and the threads it starts, to CPUs A and B; a
// no-op when unpinned.
static int pin_pair(void)
{
	if (cpu_a < 0)
		return 0;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu_a, &set);
	CPU_SET(cpu_b, &set);
	return sched_setaffinity(0, sizeof(set), &set);
}

static pid_t fork_child(int *fd, int (*fn)(int fd, int arg), int arg)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		return -1;
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		close(sv[0]);
		if (bench_pin(cpu_b) != 0)
			perror("sched_setaffinity");
		_exit(fn(sv[1], arg));
	}
	close(sv[1]);
	*fd = sv[0];
	return pid;
}

static int reap_child(pid_t pid)
{
	int st;
	for (int i = 0; i < 1000; i++) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
		usleep(10000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	return -1;
}

// One round of the engine over tcp:// with `stripes` connections.
static void run_tcp(int c, int round, unsigned char *src, unsigned char *rx)
{
	int stripes = c_stripes[c];
	char con[OP_COUNT][32];
	for (int op = 0; op < OP_COUNT; op++)
		snprintf(
		    con[op], sizeof(con[op]), "%s s%d", op_names[op], stripes);
	int fd = -1;
	pid_t pid = fork_child(&fd, target_main, stripes);
	if (pid < 0) {
		fail(c_names[c], "fork", 0);
		return;
	}
	struct ends d = { 0 };
	tw_buf info = { 0 }, desc = { 0 };
	int rc;
	const char *what = "setup";
	if (get_blob(fd, &info) != 0 || get_blob(fd, &desc) != 0) {
		fail(c_names[c], "the target's blobs", 0);
		goto out;
	}
	if ((rc = tw_engine_new("initiator", &d.e)) != TW_OK
	    || (rc = tw_engine_set(d.e, TW_OPT_STRIPES, stripes)) != TW_OK
	    || (what = "tw_engine_connect",
	           rc = tw_engine_connect(d.e, info.data, info.len, &d.peer))
	        != TW_OK
	    || (what = "tw_mem_unpack",
	           rc
	           = tw_mem_unpack(d.e, d.peer, desc.data, desc.len, &d.rmem))
	        != TW_OK
	    || (what = "tw_mem_register",
	           rc = tw_mem_register(
	               d.e, src, BUF_BYTES, TW_MEM_HOST, 0, &d.src))
	        != TW_OK
	    || (rc = tw_mem_register(
	            d.e, rx, BUF_BYTES, TW_MEM_HOST, 0, &d.rx))
	        != TW_OK) {
		fail(c_names[c], what, rc);
		goto out;
	}
	for (int s = 0; s < NSIZES; s++) {
		size_t size = sizes[s];
		char wkl[32];
		snprintf(wkl, sizeof(wkl), "bw %s", size_names[s]);
		long iters = iters_for(size), warm = warm_for(iters);
		for (int op = 0; op < OP_COUNT; op++) {
			struct result r;
			if (op == OP_SEND
			    && send_cmd(fd, CMD_RECV, size, warm + iters, 0)
			        != 0) {
				fail(c_names[c], "the target", 0);
				goto out;
			}
			if (op == OP_READ)
				memset(rx, 0, size);
			rc = engine_loop(&d, op, size, 0, warm, iters, &r);
			if (op == OP_SEND && get_status(fd) != 0) {
				fail(con[op], "the target's receives", 0);
				goto out;
			}
			if (rc != TW_OK) {
				fail(con[op], wkl, rc);
				goto out;
			}
			// Data: the target checks WRITE and send, then
			// refills; READ brings the refill back.
			if (op == OP_READ) {
				if (check(rx, size, 0x5a) != 0) {
					fail(con[op], "wrong bytes read", 0);
					goto out;
				}
			} else if (send_cmd(fd, CMD_CHECK, size, 0, 0) != 0
			    || get_status(fd) != 0) {
				fail(con[op], "wrong bytes at the target", 0);
				goto out;
			}
			add_result("eng-tcp", wkl, con[op], round, &r, 1);
			printf("  %-14s %-7s %-6s %8.3f GB/s  post %8.2f us  "
			       "done %9.1f us\n",
			    c_names[c], size_names[s], op_names[op], r.gbps,
			    r.post_us, r.done_us);
		}
	}
	{
		struct result r;
		long iters = iters_for(BATCH_N * BATCH_SZ);
		rc = engine_loop(
		    &d, OP_WRITE, 0, 1, warm_for(iters), iters, &r);
		if (rc != TW_OK) {
			fail(con[OP_WRITE], BATCH_WL, rc);
			goto out;
		}
		if (send_cmd(fd, CMD_CHECK, BATCH_N * BATCH_SZ, 0, 0) != 0
		    || get_status(fd) != 0) {
			fail(con[OP_WRITE], "batch: wrong bytes at the target",
			    0);
			goto out;
		}
		add_result("eng-tcp", BATCH_WL, con[OP_WRITE], round, &r, 1);
		printf(
		    "  %-14s 1024x4K write  %8.3f GB/s  post %8.2f us  done "
		    "%9.1f us\n",
		    c_names[c], r.gbps, r.post_us, r.done_us);
	}
	send_cmd(fd, CMD_QUIT, 0, 0, 0);
out:
	tw_engine_free(d.e);
	tw_buf_free(&info);
	tw_buf_free(&desc);
	close(fd);
	if (reap_child(pid) != 0)
		fail(c_names[c], "the target process did not exit cleanly", 0);
}

// ---------------------------------------------------------------------------
// Raw TCP
// ---------------------------------------------------------------------------

static int raw_child(int fd, int port)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET,
		.sin_port = htons((uint16_t)port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int one = 1;
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(s, (struct sockaddr *)&a, sizeof(a)) != 0)
		return 3;
	unsigned char *buf = bench_big_alloc(BUF_BYTES, 0);
	if (buf == NULL)
		return 3;
	for (;;) {
		struct cmd c;
		if (full_io(fd, &c, sizeof(c), 0) != 0)
			return 3;
		if (c.op == CMD_QUIT)
			break;
		int st = 0;
		char ack = 1;
		memset(buf, 0, c.size);
		for (int64_t i = 0; i < c.count && st == 0; i++) {
			st = full_io(s, buf, c.size, 0);
			if (st == 0 && c.op == CMD_RAW_ACK)
				st = full_io(s, &ack, 1, 1);
		}
		if (st == 0 && c.op == CMD_RAW_STREAM)
			st = full_io(s, &ack, 1, 1);
		if (st == 0)
			st = check(buf, c.size, 0);
		if (put_status(fd, st) != 0)
			return 3;
	}
	close(s);
	return 0;
}

static void run_raw(int round, unsigned char *src)
{
	int ls = socket(AF_INET, SOCK_STREAM, 0), s = -1, fd = -1;
	struct sockaddr_in a = { .sin_family = AF_INET,
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof(a)) != 0
	    || listen(ls, 1) != 0
	    || getsockname(ls, (struct sockaddr *)&a, &al) != 0) {
		fail("raw tcp", "listen", 0);
		if (ls >= 0)
			close(ls);
		return;
	}
	pid_t pid = fork_child(&fd, raw_child, ntohs(a.sin_port));
	if (pid < 0 || (s = accept(ls, NULL, NULL)) < 0) {
		fail("raw tcp", "fork/accept", 0);
		close(ls);
		return;
	}
	close(ls);
	int one = 1;
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	for (int sz = 0; sz < NSIZES; sz++) {
		size_t size = sizes[sz];
		char wkl[32];
		snprintf(wkl, sizeof(wkl), "bw %s", size_names[sz]);
		long iters = iters_for(size), warm = warm_for(iters);
		for (int mode = 0; mode < 2; mode++) {
			int ack_each = mode == 0;
			if (send_cmd(fd,
			        ack_each ? CMD_RAW_ACK : CMD_RAW_STREAM, size,
			        warm + iters, 0)
			    != 0) {
				fail("raw tcp", "the receiver", 0);
				goto out;
			}
			int64_t *done = malloc(sizeof(*done) * (size_t)iters);
			int64_t t_start = 0;
			char ack;
			int st = done == NULL ? -1 : 0;
			// raw-stream: the warm-up is its own stream, so that
			// the timed part starts on an idle connection.
			for (long i = 0; i < warm + iters && st == 0; i++) {
				if (i == warm)
					t_start = bench_now_ns();
				int64_t t0 = bench_now_ns();
				st = full_io(s, src, size, 1);
				if (st == 0 && ack_each)
					st = full_io(s, &ack, 1, 0);
				if (i >= warm)
					done[i - warm] = bench_now_ns() - t0;
			}
			if (st == 0 && !ack_each)
				st = full_io(s, &ack, 1, 0);
			int64_t wall = bench_now_ns() - t_start;
			if (st != 0 || get_status(fd) != 0) {
				free(done);
				fail("raw tcp", "transfer or wrong bytes", 0);
				goto out;
			}
			struct result r = {
				.gbps
				= (double)size * (double)iters / (double)wall,
				.done_us = ack_each
				    ? (double)cmp_i64_median(done, iters) / 1e3
				    : NAN,
			};
			free(done);
			add_result("eng-tcp", wkl,
			    ack_each ? "raw-ack" : "raw-stream", round, &r, 0);
			if (ack_each)
				add_fig("eng-tcp", wkl, "raw-ack",
				    "completion", "us", round, r.done_us);
			printf("  %-14s %-7s %-6s %8.3f GB/s%s", "raw tcp",
			    size_names[sz], ack_each ? "ack" : "stream",
			    r.gbps, ack_each ? "" : "\n");
			if (ack_each)
				printf("                  done %9.1f us\n",
				    r.done_us);
		}
	}
	send_cmd(fd, CMD_QUIT, 0, 0, 0);
out:
	close(s);
	close(fd);
	if (reap_child(pid) != 0)
		fail("raw tcp", "the receiver did not exit cleanly", 0);
}

// ---------------------------------------------------------------------------
// mem:// and memcpy
// ---------------------------------------------------------------------------

static void run_mem(
    int round, unsigned char *src, unsigned char *rx, unsigned char *tbuf)
{
	struct ends d = { 0 };
	tw_buf info = { 0 }, desc = { 0 };
	const char *what = "setup";
	int rc;
	char addr[96];
	static unsigned seq;
	snprintf(addr, sizeof(addr), "mem://%s-%u", mem_seq_name, ++seq);
	fill(tbuf, BUF_BYTES, 0x5a);
	// Both engines start their threads from this one, whatever side
	// they serve, so no thread can be put on a side's CPU: pinned, they
	// share CPUs A and B, placed by the scheduler.
	if (pin_pair() != 0)
		perror("sched_setaffinity");
	if ((rc = tw_engine_new("target", &d.te)) != TW_OK
	    || (rc = tw_engine_new("initiator", &d.e)) != TW_OK
	    || (what = "tw_engine_listen", rc = tw_engine_listen(d.te, addr))
	        != TW_OK
	    || (rc = tw_engine_info(d.te, &info)) != TW_OK
	    || (what = "tw_engine_connect",
	           rc = tw_engine_connect(d.e, info.data, info.len, &d.peer))
	        != TW_OK
	    || (what = "tw_engine_accept",
	           rc = tw_engine_accept(d.te, "initiator", 10000, &d.tpeer))
	        != TW_OK
	    || (what = "tw_mem_register",
	           rc = tw_mem_register(d.te, tbuf, BUF_BYTES, TW_MEM_HOST,
	               TW_ACCESS_READ | TW_ACCESS_WRITE, &d.tbuf))
	        != TW_OK
	    || (rc = tw_mem_pack(d.te, d.tbuf, &desc)) != TW_OK
	    || (rc = tw_mem_unpack(d.e, d.peer, desc.data, desc.len, &d.rmem))
	        != TW_OK
	    || (rc = tw_mem_register(
	            d.e, src, BUF_BYTES, TW_MEM_HOST, 0, &d.src))
	        != TW_OK
	    || (rc = tw_mem_register(
	            d.e, rx, BUF_BYTES, TW_MEM_HOST, 0, &d.rx))
	        != TW_OK) {
		fail("mem", what, rc);
		goto out;
	}
	for (int s = 0; s < NSIZES; s++) {
		size_t size = sizes[s];
		char wkl[32];
		snprintf(wkl, sizeof(wkl), "bw %s", size_names[s]);
		long iters = iters_for(size), warm = warm_for(iters);
		for (int op = 0; op < OP_COUNT; op++) {
			struct result r;
			if (op == OP_READ)
				memset(rx, 0, size);
			rc = engine_loop(&d, op, size, 0, warm, iters, &r);
			if (rc != TW_OK) {
				fail("mem", op_names[op], rc);
				goto out;
			}
			int bad = op == OP_READ ? check(rx, size, 0x5a)
			                        : check(tbuf, size, 0);
			if (op != OP_READ)
				fill(tbuf, size, 0x5a);
			if (bad) {
				fail("mem", "wrong bytes", 0);
				goto out;
			}
			add_result("eng-mem", wkl, op_names[op], round, &r, 1);
			printf("  %-14s %-7s %-6s %8.3f GB/s  post %8.2f us  "
			       "done %9.1f us\n",
			    "mem", size_names[s], op_names[op], r.gbps,
			    r.post_us, r.done_us);
		}
	}
	{
		struct result r;
		long iters = iters_for(BATCH_N * BATCH_SZ);
		rc = engine_loop(
		    &d, OP_WRITE, 0, 1, warm_for(iters), iters, &r);
		if (rc != TW_OK || check(tbuf, BATCH_N * BATCH_SZ, 0) != 0) {
			fail("mem", "batch", rc);
			goto out;
		}
		fill(tbuf, BATCH_N * BATCH_SZ, 0x5a);
		add_result("eng-mem", BATCH_WL, "write", round, &r, 1);
		printf(
		    "  %-14s 1024x4K write  %8.3f GB/s  post %8.2f us  done "
		    "%9.1f us\n",
		    "mem", r.gbps, r.post_us, r.done_us);
	}
out:
	tw_engine_free(d.e);
	tw_engine_free(d.te);
	tw_buf_free(&info);
	tw_buf_free(&desc);
	// Back to CPU A alone, for memcpy and the initiators to come.
	if (bench_pin(cpu_a) != 0)
		perror("sched_setaffinity");
}

static void run_memcpy(int round, unsigned char *src, unsigned char *dst)
{
	for (int s = 0; s < NSIZES; s++) {
		size_t size = sizes[s];
		char wkl[32];
		snprintf(wkl, sizeof(wkl), "bw %s", size_names[s]);
		long iters = iters_for(size), warm = warm_for(iters);
		int64_t *done = malloc(sizeof(*done) * (size_t)iters);
		if (done == NULL) {
			fail("memcpy", "malloc", 0);
			return;
		}
		int64_t t_start = 0;
		for (long i = 0; i < warm + iters; i++) {
			if (i == warm)
				t_start = bench_now_ns();
			int64_t t0 = bench_now_ns();
			memcpy(dst, src, size);
			__asm__ volatile("" : : "r"(dst) : "memory");
			if (i >= warm)
				done[i - warm] = bench_now_ns() - t0;
		}
		int64_t wall = bench_now_ns() - t_start;
		struct result r = { .gbps
			= (double)size * (double)iters / (double)wall,
			.done_us = (double)cmp_i64_median(done, iters) / 1e3 };
		free(done);
		add_result("eng-mem", wkl, "memcpy", round, &r, 0);
		add_fig("eng-mem", wkl, "memcpy", "completion", "us", round,
		    r.done_us);
		printf("  %-14s %-7s        %8.3f GB/s  done %9.1f us\n",
		    "memcpy", size_names[s], r.gbps, r.done_us);
	}
}

// ---------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------

static void print_ratio_line(const char *label, double num, double den)
{
	if (isnan(num) || isnan(den) || den == 0)
		printf("  %-44s %8.3f / %8.3f = n/a\n", label, num, den);
	else
		printf("  %-44s %8.3f / %8.3f = %.3f\n", label, num, den,
		    num / den);
}

static void report(void)
{
	printf("\nMedians over %d round(s): bandwidth GB/s | average post "
	       "time us | median completion us\n\n",
	    rounds);
	const char *secs[2] = { "eng-tcp", "eng-mem" };
	for (int k = 0; k < 2; k++) {
		const char *cons_tcp[] = { "write s1", "read s1", "send s1",
			"write s2", "read s2", "send s2", "write s4",
			"read s4", "send s4", "raw-ack", "raw-stream" };
		const char *cons_mem[] = { "write", "read", "send", "memcpy" };
		const char **cons = k == 0 ? cons_tcp : cons_mem;
		int nc = k == 0 ? 11 : 4;
		printf("%s\n", secs[k]);
		printf("  %-12s %-14s %10s %10s %11s\n", "contender", "size",
		    "GB/s", "post us", "done us");
		for (int c = 0; c < nc; c++)
			for (int s = 0; s <= NSIZES; s++) {
				char wkl[32];
				if (s < NSIZES)
					snprintf(wkl, sizeof(wkl), "bw %s",
					    size_names[s]);
				else
					snprintf(
					    wkl, sizeof(wkl), "%s", BATCH_WL);
				double bw = fig_median(
				    secs[k], wkl, cons[c], "bandwidth");
				if (isnan(bw))
					continue;
				printf("  %-12s %-14s %10.3f %10.2f %11.1f\n",
				    cons[c], wkl + 3, bw,
				    fig_median(
				        secs[k], wkl, cons[c], "post time"),
				    fig_median(
				        secs[k], wkl, cons[c], "completion"));
			}
		printf("\n");
	}
	printf("Ratios of medians (bandwidth):\n");
	for (int s = 2; s < NSIZES; s++) {
		char wkl[32], lbl[96];
		snprintf(wkl, sizeof(wkl), "bw %s", size_names[s]);
		const char *ops[] = { "write", "read", "send" };
		for (int st = 1; st <= 4; st *= 2)
			for (int o = 0; o < 3; o++) {
				char con[32];
				snprintf(
				    con, sizeof(con), "%s s%d", ops[o], st);
				snprintf(lbl, sizeof(lbl),
				    "tcp %s %s / raw-ack", con, size_names[s]);
				print_ratio_line(lbl,
				    fig_median(
				        "eng-tcp", wkl, con, "bandwidth"),
				    fig_median("eng-tcp", wkl, "raw-ack",
				        "bandwidth"));
			}
		snprintf(lbl, sizeof(lbl), "raw-stream %s / raw-ack",
		    size_names[s]);
		print_ratio_line(lbl,
		    fig_median("eng-tcp", wkl, "raw-stream", "bandwidth"),
		    fig_median("eng-tcp", wkl, "raw-ack", "bandwidth"));
	}
	for (int s = 0; s < NSIZES; s++) {
		char wkl[32], lbl[96];
		snprintf(wkl, sizeof(wkl), "bw %s", size_names[s]);
		for (int o = 0; o < 3; o++) {
			snprintf(lbl, sizeof(lbl), "mem %s %s / memcpy",
			    op_names[o], size_names[s]);
			print_ratio_line(lbl,
			    fig_median(
			        "eng-mem", wkl, op_names[o], "bandwidth"),
			    fig_median("eng-mem", wkl, "memcpy", "bandwidth"));
		}
	}
	for (int st = 1; st <= 4; st *= 2) {
		char con[32], lbl[96];
		snprintf(con, sizeof(con), "write s%d", st);
		snprintf(lbl, sizeof(lbl), "tcp %s 1024x4 KiB / 1 MiB", con);
		print_ratio_line(lbl,
		    fig_median("eng-tcp", BATCH_WL, con, "bandwidth"),
		    fig_median("eng-tcp", "bw 1 MiB", con, "bandwidth"));
	}
	print_ratio_line("mem write 1024x4 KiB / 1 MiB",
	    fig_median("eng-mem", BATCH_WL, "write", "bandwidth"),
	    fig_median("eng-mem", "bw 1 MiB", "write", "bandwidth"));
}

static void write_tsv(int argc, char **argv)
{
	FILE *f = bench_open_tsv("engine_bench", tsv_path);
	if (f == NULL) {
		failures++;
		return;
	}
	fprintf(f, "# engine_bench");
	for (int i = 1; i < argc; i++)
		fprintf(f, " %s", argv[i]);
	fprintf(f,
	    "\n# tagwire %s; rounds %d; %zu MiB per figure (at most "
	    "%ld transfers)\n",
	    tw_version(), rounds, total_bytes / MiB, max_iters);
	fprintf(
	    f, "esection\tworkload\tcontender\tmetric\tunit\tround\tvalue\n");
	for (int i = 0; i < nfigs; i++) {
		struct fig *g = &figs[i];
		if (isnan(g->value))
			continue;
		fprintf(f, "%s\t%s\t%s\t%s\t%s\t%d\t%.6g\n", g->section,
		    g->workload, g->contender, g->metric, g->unit, g->round,
		    g->value);
	}
	fclose(f);
}

static void usage(FILE *f)
{
	fprintf(f,
	    "usage: engine_bench [--quick] [--rounds N] [--bw-mib N] "
	    "[--only LIST] [--tsv FILE] [--pin]\n"
	    "  --quick      2 rounds, 32 MiB and at most 2000 transfers per "
	    "figure\n"
	    "  --rounds N   rounds (default 5)\n"
	    "  --bw-mib N   MiB moved per figure (default 256), at most 20000 "
	    "transfers\n"
	    "  --only LIST  contenders out of tcp1,tcp2,tcp4,raw,mem,memcpy\n"
	    "  --tsv FILE   every figure as TSV (bench/merge.awk reads it)\n"
	    "  --pin        initiator on the first allowed CPU, target on the "
	    "second (default: unpinned)\n");
}

int main(int argc, char **argv)
{
	int only = (1 << C_COUNT) - 1, rounds_set = 0, pin = 0;
	long bw_mib = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--quick") == 0) {
			quick = 1;
		} else if (strcmp(a, "--pin") == 0) {
			pin = 1;
		} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (i + 1 < argc && strcmp(a, "--rounds") == 0) {
			rounds = (int)bench_parse_long("engine_bench",
			    argv[++i], NULL, 1, MAX_ROUNDS, usage);
			rounds_set = 1;
		} else if (i + 1 < argc && strcmp(a, "--bw-mib") == 0) {
			bw_mib = bench_parse_long("engine_bench", argv[++i],
			    NULL, 4, 1 << 20, usage);
		} else if (i + 1 < argc && strcmp(a, "--tsv") == 0) {
			tsv_path = argv[++i];
		} else if (i + 1 < argc && strcmp(a, "--only") == 0) {
			const char *keys[C_COUNT] = { "tcp1", "tcp2", "tcp4",
				"raw", "mem", "memcpy" };
			char *list = strdup(argv[++i]), *save = NULL;
			only = 0;
			for (char *t = strtok_r(list, ",", &save); t != NULL;
			     t = strtok_r(NULL, ",", &save)) {
				int c;
				for (c = 0; c < C_COUNT; c++)
					if (strcmp(t, keys[c]) == 0)
						break;
				if (c == C_COUNT) {
					usage(stderr);
					return 2;
				}
				only |= 1 << c;
			}
			free(list);
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (quick) {
		total_bytes = 32 * MiB;
		max_iters = 2000;
		if (!rounds_set)
			rounds = 2;
	}
	if (bw_mib > 0)
		total_bytes = (size_t)bw_mib * MiB;
	// Before any engine starts a thread, so that they inherit the CPU.
	if (pin && bench_cpus(&cpu_a, &cpu_b) < 2) {
		fprintf(
		    stderr, "engine_bench: --pin needs two allowed CPUs\n");
		return 2;
	}
	if (bench_pin(cpu_a) != 0) {
		fprintf(stderr, "engine_bench: sched_setaffinity: %s\n",
		    strerror(errno));
		return 1;
	}
	snprintf(
	    mem_seq_name, sizeof(mem_seq_name), "engbench%d", (int)getpid());
	signal(SIGPIPE, SIG_IGN);
	tw_log_set_level(TW_LOG_WARN);

	unsigned char *src = bench_big_alloc(BUF_BYTES, 1);
	unsigned char *rx = bench_big_alloc(BUF_BYTES, 1);
	unsigned char *tbuf = bench_big_alloc(BUF_BYTES, 1);
	if (src == NULL || rx == NULL || tbuf == NULL) {
		fprintf(stderr, "engine_bench: out of memory\n");
		return 1;
	}
	fill(src, BUF_BYTES, 0);

	char load[64];
	bench_load_avg(load, sizeof(load));
	printf("engine_bench: the transfer engine against raw TCP and "
	       "memcpy\n");
	char pinning[96] = "unpinned";
	if (cpu_a >= 0)
		snprintf(pinning, sizeof(pinning),
		    "initiator on CPU %d, target on CPU %d (mem://: both "
		    "engines on both)",
		    cpu_a, cpu_b);
	printf("tagwire %s, build %s, nproc %ld, load %s; %s\n", tw_version(),
	    TW_BENCH_BUILD_TYPE, sysconf(_SC_NPROCESSORS_ONLN), load, pinning);
	printf("rounds %d; %zu MiB per figure, at most %ld transfers (+5%% "
	       "warm-up); engine defaults: chunk 1 MiB, window 4; one "
	       "transfer in flight\n\n",
	    rounds, total_bytes / MiB, max_iters);

	for (int r = 1; r <= rounds; r++) {
		printf("round %d/%d\n", r, rounds);
		for (int k = 0; k < C_COUNT; k++) {
			int c = (k + r - 1) % C_COUNT;
			if (!(only & (1 << c)))
				continue;
			int64_t t0 = bench_now_ns();
			switch (c) {
			case C_TCP1:
			case C_TCP2:
			case C_TCP4:
				run_tcp(c, r, src, rx);
				break;
			case C_RAW:
				run_raw(r, src);
				break;
			case C_MEM:
				run_mem(r, src, rx, tbuf);
				break;
			default:
				run_memcpy(r, src, tbuf);
				break;
			}
			printf("  (%s: %.1f s)\n", c_names[c],
			    (double)(bench_now_ns() - t0) / 1e9);
			fflush(stdout);
		}
	}
	report();
	if (tsv_path != NULL)
		write_tsv(argc, argv);
	bench_load_avg(load, sizeof(load));
	printf("\nload at the end: %s\n", load);
	return bench_status(failures);
}
