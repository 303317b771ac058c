// peer_common.h: the workloads shared by the peer programs (zmq_peer,
// nng_peer, mpi_peer, ucx_peer), so that every library runs exactly the
// same tests and prints its figures in the same TSV format.
//
// A peer program supplies a blocking send and a blocking receive of one
// message; run_tests() drives the workloads on top of them.  Side A sends
// first and keeps the time, side B answers.  One invocation of a program
// is one round: it runs every test once and prints one TSV row per figure:
//
//   contender  transport  test  size  round  value  unit
//
// test is lat (one-way median), lat_p99, bw or rate; unit is us, GBps or
// Mps.  The programs without a launcher of their own (all but mpi_peer)
// fork: the parent is side A, the child side B, and a socketpair carries
// the connection details and the final handshake.
//
// Every wait is bounded: the socketpair waits time out after OOB_WAIT_S
// seconds and each process arms a watchdog alarm (--watchdog) that ends it
// should a library call block for good.

#ifndef PEER_COMMON_H
#define PEER_COMMON_H

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

// The clock, the choice of CPUs, the pinning and the number parsing are
// those of ring_bench and tcp_bench.
#include "../bench_util.h"

#define MAX_MSG (16 * MiB) // the largest message of any test
#define OOB_WAIT_S 30 // the longest a socketpair wait may last
#define REAP_WAIT_S 30 // the longest the parent waits for the child

// What to measure, from the command line.
struct peer_cfg {
	const char *contender; // zmq, nng, openmpi, ucx
	const char *transport; // tcp or shm
	int round; // printed in the round column
	long lat_warm; // warm-up round trips per latency figure
	long lat_iters; // timed round trips per latency figure
	size_t bw_bytes; // bytes streamed per bandwidth figure
	long rate_msgs; // messages per rate figure
	unsigned watchdog_s; // alarm per process
	int cpu_a, cpu_b; // CPUs of side A and side B, -1 = unpinned
};

// One blocking message channel between side A and side B.
struct peer_ops {
	// Sends len bytes from buf as one message; 0 on success.
	int (*send)(void *ctx, const void *buf, size_t len);
	// Receives one message of exactly len bytes into buf; 0 on success.
	int (*recv)(void *ctx, void *buf, size_t len);
	void *ctx;
};

static inline unsigned char pattern(size_t i)
{
	return (unsigned char)(i * 131u + (i >> 12) * 7u + 1u);
}

// An allocation of len bytes with every page touched.
static inline unsigned char *peer_alloc(size_t len)
{
	unsigned char *p = malloc(len);
	if (p != NULL)
		memset(p, 0, len);
	return p;
}

static void peer_usage(FILE *f, const char *prog, const char *transports)
{
	fprintf(f,
	    "usage: %s [--transport %s] [--round N] [--lat-iters N]\n"
	    "          [--lat-warm N] [--bw-mib N] [--rate-msgs N] "
	    "[--watchdog S] [--no-pin]\n"
	    "  --transport T   the transport label and, where the program "
	    "chooses it, the transport\n"
	    "  --round N       the value of the round column (default 1)\n"
	    "  --lat-iters N   timed round trips per latency figure "
	    "(default 20000)\n"
	    "  --lat-warm N    warm-up round trips (default 2000)\n"
	    "  --bw-mib N      MiB streamed per bandwidth figure (default "
	    "1024)\n"
	    "  --rate-msgs N   8-byte messages per rate figure (default "
	    "2000000)\n"
	    "  --watchdog S    each process ends itself after S seconds "
	    "(default 600)\n"
	    "  --no-pin        leave both sides to the scheduler (default: "
	    "side A on the first allowed CPU, side B on the second)\n",
	    prog, transports);
}

static long peer_number(const char *prog, const char *s, long lo, long hi)
{
	return bench_parse_long(prog, s, NULL, lo, hi, NULL);
}

// Parses the command line; transports lists the accepted --transport
// values separated by '|', the first being the default.
static void peer_args(struct peer_cfg *cfg, const char *contender,
    const char *transports, int argc, char **argv)
{
	const char *prog = argv[0];
	static char first[16];
	size_t fl = strcspn(transports, "|");
	snprintf(first, sizeof(first), "%.*s", (int)fl, transports);
	memset(cfg, 0, sizeof(*cfg));
	cfg->contender = contender;
	cfg->transport = first;
	cfg->round = 1;
	cfg->lat_warm = 2000;
	cfg->lat_iters = 20000;
	cfg->bw_bytes = 1024 * MiB;
	cfg->rate_msgs = 2000000;
	cfg->watchdog_s = 600;
	int no_pin = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			peer_usage(stdout, prog, transports);
			exit(0);
		}
		if (strcmp(a, "--no-pin") == 0) {
			no_pin = 1;
			continue;
		}
		if (v == NULL) {
			peer_usage(stderr, prog, transports);
			exit(2);
		}
		i++;
		if (strcmp(a, "--transport") == 0) {
			const char *p = transports;
			size_t vl = strlen(v);
			int ok = 0;
			while (*p != '\0') {
				size_t l = strcspn(p, "|");
				if (l == vl && strncmp(p, v, l) == 0)
					ok = 1;
				p += l + (p[l] == '|');
			}
			if (!ok) {
				fprintf(stderr, "%s: transport must be %s\n",
				    prog, transports);
				exit(2);
			}
			cfg->transport = v;
		} else if (strcmp(a, "--round") == 0) {
			cfg->round = (int)peer_number(prog, v, 1, 1000000);
		} else if (strcmp(a, "--lat-iters") == 0) {
			cfg->lat_iters = peer_number(prog, v, 1, 100000000);
		} else if (strcmp(a, "--lat-warm") == 0) {
			cfg->lat_warm = peer_number(prog, v, 0, 100000000);
		} else if (strcmp(a, "--bw-mib") == 0) {
			cfg->bw_bytes
			    = (size_t)peer_number(prog, v, 16, 1L << 20) * MiB;
		} else if (strcmp(a, "--rate-msgs") == 0) {
			cfg->rate_msgs = peer_number(prog, v, 1, 1000000000);
		} else if (strcmp(a, "--watchdog") == 0) {
			cfg->watchdog_s
			    = (unsigned)peer_number(prog, v, 1, 86400);
		} else {
			peer_usage(stderr, prog, transports);
			exit(2);
		}
	}
	bench_cpus(&cfg->cpu_a, &cfg->cpu_b);
	if (no_pin)
		cfg->cpu_a = cfg->cpu_b = -1;
}

static void peer_emit(const struct peer_cfg *cfg, const char *test,
    size_t size, double value, const char *unit)
{
	printf("%s\t%s\t%s\t%zu\t%d\t%.6g\t%s\n", cfg->contender,
	    cfg->transport, test, size, cfg->round, value, unit);
	fflush(stdout);
}

// The q-quantile (0 < q <= 1, nearest rank) of n sorted values.
static int64_t quantile(const int64_t *v, long n, double q)
{
	long k = (long)(q * (double)n + 0.999999) - 1;
	if (k < 0)
		k = 0;
	if (k >= n)
		k = n - 1;
	return v[k];
}

// ---------------------------------------------------------------------------
// The workloads
// ---------------------------------------------------------------------------

// Ping-pong of size bytes: one-way latency = round trip / 2, median and
// p99 over lat_iters round trips after lat_warm warm-up round trips.
static int test_lat(const struct peer_cfg *cfg, const struct peer_ops *ops,
    int side_a, size_t size, unsigned char *buf, int64_t *rt)
{
	long total = cfg->lat_warm + cfg->lat_iters;
	for (long i = 0; i < total; i++) {
		if (side_a) {
			int64_t t0 = bench_now_ns();
			if (ops->send(ops->ctx, buf, size) != 0
			    || ops->recv(ops->ctx, buf, size) != 0)
				return -1;
			if (i >= cfg->lat_warm)
				rt[i - cfg->lat_warm] = bench_now_ns() - t0;
		} else {
			if (ops->recv(ops->ctx, buf, size) != 0
			    || ops->send(ops->ctx, buf, size) != 0)
				return -1;
		}
	}
	if (side_a) {
		qsort(rt, (size_t)cfg->lat_iters, sizeof(*rt), bench_cmp_i64);
		peer_emit(cfg, "lat", size,
		    (double)quantile(rt, cfg->lat_iters, 0.5) / 2e3, "us");
		peer_emit(cfg, "lat_p99", size,
		    (double)quantile(rt, cfg->lat_iters, 0.99) / 2e3, "us");
	}
	return 0;
}

// Side A sends n messages of size bytes, side B receives each in full and
// answers with one 1-byte ack at the end.  Returns the elapsed time on
// side A in *ns.
static int stream(const struct peer_ops *ops, int side_a, size_t size, long n,
    unsigned char *buf, unsigned char *ack, int64_t *ns)
{
	int64_t t0 = bench_now_ns();
	for (long i = 0; i < n; i++) {
		int rc = side_a ? ops->send(ops->ctx, buf, size)
		                : ops->recv(ops->ctx, buf, size);
		if (rc != 0)
			return -1;
	}
	if (side_a ? ops->recv(ops->ctx, ack, 1) : ops->send(ops->ctx, ack, 1))
		return -1;
	*ns = bench_now_ns() - t0;
	return 0;
}

// Streaming bandwidth: bw_bytes in messages of size bytes, GB/s = 1e9 B/s.
// Two warm-up messages and an ack come first.  Side B checks sample bytes
// of the last message.
static int test_bw(const struct peer_cfg *cfg, const struct peer_ops *ops,
    int side_a, size_t size, unsigned char *buf, unsigned char *ack)
{
	long n = (long)(cfg->bw_bytes / size);
	int64_t ns;
	if (n < 1)
		n = 1;
	if (!side_a)
		memset(buf, 0, size);
	if (stream(ops, side_a, size, 2, buf, ack, &ns) != 0
	    || stream(ops, side_a, size, n, buf, ack, &ns) != 0)
		return -1;
	if (side_a) {
		peer_emit(cfg, "bw", size,
		    (double)n * (double)size / (double)ns, "GBps");
		return 0;
	}
	for (size_t i = 0; i < size; i += 4093)
		if (buf[i] != pattern(i)) {
			fprintf(stderr,
			    "%s: bw %zu B: byte %zu is wrong on receipt\n",
			    cfg->contender, size, i);
			return -1;
		}
	return 0;
}

// Message rate: rate_msgs messages of 8 bytes one way, one send call
// each, one ack at the end; millions of messages per second.
static int test_rate(const struct peer_cfg *cfg, const struct peer_ops *ops,
    int side_a, unsigned char *buf, unsigned char *ack)
{
	int64_t ns;
	if (stream(ops, side_a, 8, cfg->rate_msgs, buf, ack, &ns) != 0)
		return -1;
	if (side_a)
		peer_emit(cfg, "rate", 8,
		    (double)cfg->rate_msgs * 1e3 / (double)ns, "Mps");
	return 0;
}

// Runs every test once, in this order: lat 8 B and 4 KiB, bw 64 KiB, 1 MiB
// and 16 MiB, rate 8 B.  Side A prints the figures.  0 on success.
static int run_tests(
    const struct peer_cfg *cfg, const struct peer_ops *ops, int side_a)
{
	static const size_t lat_sizes[] = { 8, 4 * KiB };
	static const size_t bw_sizes[] = { 64 * KiB, MiB, 16 * MiB };
	unsigned char *buf = peer_alloc(MAX_MSG);
	unsigned char ack[8] = { 1 };
	int64_t *rt
	    = side_a ? malloc(sizeof(*rt) * (size_t)cfg->lat_iters) : NULL;
	int rc = -1;
	if (buf == NULL || (side_a && rt == NULL)) {
		fprintf(stderr, "%s: out of memory\n", cfg->contender);
		goto out;
	}
	for (size_t i = 0; i < MAX_MSG; i++)
		buf[i] = pattern(i);
	for (size_t k = 0; k < sizeof(lat_sizes) / sizeof(*lat_sizes); k++)
		if (test_lat(cfg, ops, side_a, lat_sizes[k], buf, rt) != 0)
			goto fail;
	for (size_t k = 0; k < sizeof(bw_sizes) / sizeof(*bw_sizes); k++)
		if (test_bw(cfg, ops, side_a, bw_sizes[k], buf, ack) != 0)
			goto fail;
	if (test_rate(cfg, ops, side_a, buf, ack) != 0)
		goto fail;
	rc = 0;
	goto out;
fail:
	fprintf(stderr, "%s (%s, side %c): a send or receive failed\n",
	    cfg->contender, cfg->transport, side_a ? 'A' : 'B');
out:
	free(rt);
	free(buf);
	return rc;
}

#ifndef PEER_NO_FORK
// ---------------------------------------------------------------------------
// Two processes by fork, with a socketpair beside the library's channel
// ---------------------------------------------------------------------------

// Waits until fd is readable (events POLLIN) or writable, OOB_WAIT_S at
// most.  0 when ready.
static int oob_wait(int fd, short events)
{
	struct pollfd p = { .fd = fd, .events = events };
	for (;;) {
		int rc = poll(&p, 1, OOB_WAIT_S * 1000);
		if (rc > 0)
			return 0;
		if (rc == 0) {
			fprintf(stderr,
			    "peer: the other process did not "
			    "answer within %d s\n",
			    OOB_WAIT_S);
			return -1;
		}
		if (errno != EINTR)
			return -1;
	}
}

// Moves len bytes from buf to fd (out) or from fd into buf.
static int oob_io(int fd, void *buf, size_t len, int out)
{
	char *p = buf;
	while (len > 0) {
		if (oob_wait(fd, out ? POLLOUT : POLLIN) != 0)
			return -1;
		ssize_t n = out ? write(fd, p, len) : read(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int oob_write(int fd, const void *buf, size_t len)
{
	return oob_io(fd, (void *)buf, len, 1);
}

static int oob_read(int fd, void *buf, size_t len)
{
	return oob_io(fd, buf, len, 0);
}

// A length-prefixed blob over the socketpair (connection details).
static int oob_send_blob(int fd, const void *buf, size_t len)
{
	uint64_t l = len;
	return oob_write(fd, &l, sizeof(l)) || oob_write(fd, buf, len) ? -1
	                                                               : 0;
}

// Receives a blob into a fresh allocation (*out, to free) of *len bytes
// plus a terminating NUL.
static int oob_recv_blob(int fd, void **out, size_t *len)
{
	uint64_t l;
	if (oob_read(fd, &l, sizeof(l)) != 0 || l > 1 << 20)
		return -1;
	char *p = malloc((size_t)l + 1);
	if (p == NULL)
		return -1;
	if (oob_read(fd, p, (size_t)l) != 0) {
		free(p);
		return -1;
	}
	p[l] = '\0';
	*out = p;
	*len = (size_t)l;
	return 0;
}

// Connection details as a string, for side B to receive with
// oob_recv_str.
static inline int oob_send_str(int fd, const char *s)
{
	return oob_send_blob(fd, s, strlen(s));
}

// A string from oob_send_str into out (len bytes, truncated if need be).
static inline int oob_recv_str(int fd, char *out, size_t len)
{
	void *blob;
	size_t n;
	if (oob_recv_blob(fd, &blob, &n) != 0)
		return -1;
	snprintf(out, len, "%s", (char *)blob);
	free(blob);
	return 0;
}

// One side of a forked pair: sets up the library (connection details go
// over the socketpair fd), runs run_tests() and tears down.  0 on success.
typedef int (*peer_side_fn)(const struct peer_cfg *cfg, int side_a, int fd);

// Waits for the child, REAP_WAIT_S at most, then kills it.  Its exit
// status, or -1 when it did not exit cleanly.
static int reap(pid_t pid)
{
	for (int i = 0; i < REAP_WAIT_S * 100; i++) {
		int st;
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
		if (r < 0 && errno != EINTR)
			return -1;
		struct timespec ts = { 0, 10000000 };
		nanosleep(&ts, NULL);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	fprintf(
	    stderr, "peer: the child did not exit within %d s\n", REAP_WAIT_S);
	return -1;
}

static volatile pid_t child_pid;

// Side B exits with status 0 only after the final handshake, so any other
// end of it means side A would wait for it in vain: give up at once.
static void on_child(int sig)
{
	siginfo_t si;
	(void)sig;
	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, (id_t)child_pid, &si, WEXITED | WNOHANG | WNOWAIT)
	        != 0
	    || si.si_pid == 0)
		return;
	if (si.si_code == CLD_EXITED && si.si_status == 0)
		return;
	bench_say("peer: side B ended early, giving up\n");
	_exit(1);
}

// Forks side B, pins each side to its CPU before the library starts any
// thread, runs fn in both processes and returns the exit status (0 when
// both sides succeeded).
static int peer_fork_run(const struct peer_cfg *cfg, peer_side_fn fn)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
		perror("socketpair");
		return 1;
	}
	// SIGCHLD stays blocked until child_pid is known.
	sigset_t chld, old;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, &old);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_child;
	sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
	sigaction(SIGCHLD, &sa, NULL);
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid < 0) {
		perror("fork");
		return 1;
	}
	if (pid == 0) {
		signal(SIGCHLD, SIG_DFL);
		sigprocmask(SIG_SETMASK, &old, NULL);
		close(sv[0]);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		alarm(cfg->watchdog_s);
		if (bench_pin(cfg->cpu_b) != 0)
			perror("sched_setaffinity");
		_exit(fn(cfg, 0, sv[1]) == 0 ? 0 : 1);
	}
	close(sv[1]);
	child_pid = pid;
	sigprocmask(SIG_SETMASK, &old, NULL);
	alarm(cfg->watchdog_s);
	if (bench_pin(cfg->cpu_a) != 0)
		perror("sched_setaffinity");
	int rc = fn(cfg, 1, sv[0]);
	close(sv[0]);
	if (rc != 0) { // side B may wait for side A for good
		signal(SIGCHLD, SIG_DFL);
		kill(pid, SIGKILL);
	}
	int child = reap(pid);
	if (child != 0)
		fprintf(stderr, "%s (%s): side B failed\n", cfg->contender,
		    cfg->transport);
	return rc == 0 && child == 0 ? 0 : 1;
}

// The handshake after the tests: side A tells side B that it has
// received everything, so that side B does not tear its connection down
// while its last message may still be queued.
static int peer_finish(int side_a, int fd)
{
	char b = 'F';
	return side_a ? oob_write(fd, &b, 1) : oob_read(fd, &b, 1);
}

// The tests over ops once the library is set up, then the handshake.
static int peer_serve(
    const struct peer_cfg *cfg, const struct peer_ops *ops, int side_a, int fd)
{
	int rc = run_tests(cfg, ops, side_a);
	return rc == 0 ? peer_finish(side_a, fd) : rc;
}

// Reports the library call `what` that failed on this side, and why.
static void peer_failed(const char *what, int side_a, const char *why)
{
	fprintf(stderr, "%s (side %c): %s\n", what, side_a ? 'A' : 'B', why);
}
#endif // PEER_NO_FORK

#endif
