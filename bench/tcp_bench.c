// tcp_bench: tagwire's tcp:// link against raw TCP sockets on loopback,
// side by side in one run.
//
// Contenders (see README.md):
//   tagwire        a two-party tagwire link over tcp://127.0.0.1:PORT, public
//                  API only (tw_link_create, tw_send, tw_recv_into)
//   raw-blocking   one connected pair of TCP sockets, blocking, TCP_NODELAY
//   raw-busy-poll  the same pair, non-blocking, every wait a spin around
//                  recv() or send()
//   tagwire-tls    with --tls only: the tagwire link again, with TLS
//                  (tw_desc_set_tls, certificates made at run time by
//                  tests/tls/mkcerts.sh in a temporary folder), measured
//                  right after the plaintext link and reported as
//                  TLS / plaintext ratios
//
// Workloads (the definitions of the peer table): lat = ping-pong, one-way =
// round trip / 2, median and p99; bw = N messages of S bytes, then a 1-byte
// ack, GB/s = 1e9 B/s; rate = 8-byte messages one way, one send call each,
// one ack at the end.
//
// Every measurement forks two fresh processes: rank 0 sends and keeps the
// time, pinned to the first CPU; rank 1 receives, pinned to the second.
// The main process only coordinates.  It never creates a link itself, so no
// thread left over from an earlier link can share a CPU with a later
// measurement, a fork never copies a process that has library threads, and
// the main process can kill both ranks when one of them hangs.  Each round
// measures every workload with the contenders in turn (tagwire,
// raw-blocking, raw-busy-poll, tagwire, ...), so the figures of one
// comparison are taken seconds apart.  The report gives the medians over
// the rounds and the ratios of tagwire's figures to a baseline of the same
// run: raw-busy-poll for latency (the fastest a socket gets there),
// raw-blocking for bandwidth and rate (the plain send/recv loop a library
// that does not spend a CPU per connection can be held to).
//
// Every wait is bounded: each socket wait and each tagwire call gives up
// after tcfg.wait_s seconds, each rank arms a watchdog alarm, and the main
// process kills both ranks when a measurement overruns.  A tagwire link
// that fails is reported with its status and dropped; the raw baselines
// still run.

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <tagwire/tagwire.h>

#include "bench_util.h"

#define GRACE_S 5 // what the main process allows beyond a rank's own bounds
#define DRAIN_BYTES (64 * KiB) // raw rate receiver: bytes per recv()
#define TAG "b" // the tagwire tag of every message

// ---------------------------------------------------------------------------
// What is measured
// ---------------------------------------------------------------------------

enum { C_TW, C_BLOCK, C_POLL, C_TLS, C_COUNT };
static const char *const c_name[C_COUNT]
    = { "tagwire", "raw-blocking", "raw-busy-poll", "tagwire-tls" };
// The order of a workload's measurements: TLS right after plaintext, so
// that the two figures of its ratio are taken seconds apart.
static const int c_order[C_COUNT] = { C_TW, C_TLS, C_BLOCK, C_POLL };
// The contenders of the main table, whose ratios are to the raw sockets.
#define C_MAIN 3

static int is_link(int c)
{
	return c == C_TW || c == C_TLS;
}

// The baseline of tagwire's ratio on workload w.  Latency is compared with
// the faster raw figure, the busy poller, because a fast small-message
// path spins before it sleeps; bandwidth and rate with the plain blocking
// loop, since a library cannot spend a spinning CPU per connection on a
// stream (and the peer table shows polling changes streaming little).
static int base_of(int w)
{
	return wl[w].kind == K_LAT ? C_POLL : C_BLOCK;
}

static struct bench_opts cfg;
static struct tcp_cfg {
	int wait_s; // the longest any single wait of a rank may last
	int watchdog_s; // alarm per rank and measurement
} tcfg;

// Results: NaN where nothing was measured.
static double res[C_COUNT][W_COUNT][MAX_ROUNDS]; // µs, GB/s, M msg/s
static double res_p99[C_COUNT][W_COUNT][MAX_ROUNDS]; // lat only, µs
// Involuntary context switches of both ranks during the timed part: how
// often something else took a CPU away (or, for tagwire, how often the
// link's own threads took turns on the rank's CPU).
static long preempt[C_COUNT][W_COUNT][MAX_ROUNDS];
static int c_on[C_COUNT]; // contender still measured at all
static char c_why[C_COUNT][448]; // why it is off
static int w_on[C_COUNT][W_COUNT]; // workload still measured
static char w_why[C_COUNT][W_COUNT][448];
static int failures;
static int close_hung[C_COUNT]; // a rank hung after reporting its figure

#ifndef TW_MKCERTS
#error "TW_MKCERTS: the path of tests/tls/mkcerts.sh, set by CMake"
#endif
static int tls_on; // --tls
static char certs_dir[256]; // mkcerts.sh's folder, "" when none was made
// rm -rf certs_dir, ready before any signal: the handler may only exec.
static char *rm_argv[4] = { "rm", "-rf", certs_dir, NULL };

// What went wrong in the current section, printed after its line so that
// the figures of a round stay on one line.
static char notes[8192];

__attribute__((format(printf, 1, 2))) static void note(const char *fmt, ...)
{
	size_t n = strlen(notes);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(notes + n, sizeof(notes) - n, fmt, ap);
	va_end(ap);
}

// ---------------------------------------------------------------------------
// Process plumbing
// ---------------------------------------------------------------------------

static int cpu_a = -1, cpu_b = -1; // -1: unpinned
static int share_cpu; // both ranks on one CPU: busy pollers must yield
static pid_t main_pid;
static volatile sig_atomic_t watch_pid[2]; // ranks to kill on an interrupt
static unsigned char
    *src_buf; // 16 MiB of bench_pattern(i), inherited by rank 0

// Removes the certificates' folder; fork, execv and waitpid are
// async-signal-safe, so the interrupt handler can call it too.
static void certs_remove(void)
{
	if (certs_dir[0] == '\0' || getpid() != main_pid)
		return;
	pid_t pid = fork();
	if (pid == 0) {
		execv("/bin/rm", rm_argv);
		_exit(127);
	}
	if (pid > 0)
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
}

static void on_main_signal(int sig)
{
	(void)sig;
	bench_say("tcp_bench: interrupted\n");
	for (int i = 0; i < 2; i++)
		if (watch_pid[i] > 0)
			kill((pid_t)watch_pid[i], SIGKILL);
	certs_remove();
	_exit(3);
}

// Makes the certificates of parties p0 and p1 (and their CA) with
// mkcerts.sh in a fresh temporary folder, removed at exit.  0, or -1 with
// why.
static int certs_make(char *why, size_t len)
{
	const char *tmp = getenv("TMPDIR");
	char dir[sizeof(certs_dir)];
	snprintf(dir, sizeof(dir), "%s/tcp_bench-certs.XXXXXX",
	    tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL) {
		snprintf(why, len, "mkdtemp %s: %s", dir, strerror(errno));
		return -1;
	}
	memcpy(certs_dir, dir, sizeof(dir));
	atexit(certs_remove);
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		// Its chatter would break up the report.
		int null = open("/dev/null", O_WRONLY);
		if (null >= 0)
			dup2(null, 1);
		execl("/bin/sh", "sh", TW_MKCERTS, certs_dir, (char *)NULL);
		_exit(127);
	}
	int st = 0;
	if (pid < 0 || waitpid(pid, &st, 0) != pid) {
		snprintf(why, len, "cannot run %s: %s", TW_MKCERTS,
		    strerror(errno));
		return -1;
	}
	if (WIFEXITED(st) && WEXITSTATUS(st) == 77) {
		snprintf(why, len,
		    "the openssl command is not installed (it makes the "
		    "certificates)");
		return -1;
	}
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		snprintf(why, len, "%s %s failed (status 0x%x)", TW_MKCERTS,
		    certs_dir, (unsigned)st);
		return -1;
	}
	return 0;
}

// ---------------------------------------------------------------------------
// Endpoints: one message of n bytes over a socket or a link
// ---------------------------------------------------------------------------

struct ep {
	int c;
	int fd; // raw sockets
	tw_link *link; // tagwire
	size_t peer;
	int code; // tagwire status of a failed setup
	char err[256]; // what failed
};

static const int64_t ns_per_s = 1000000000;

__attribute__((format(printf, 2, 3))) static int ep_fail(
    struct ep *e, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->err, sizeof(e->err), fmt, ap);
	va_end(ap);
	return -1;
}

static int tw_fail(struct ep *e, const char *call, size_t n, int rc)
{
	return ep_fail(e, "%s of %zu bytes: %s (%s)", call, n, tw_err_name(rc),
	    tw_strerror(rc));
}

// One more turn of a busy-poll wait that started at *t0 (0: not yet
// known); nonzero once the wait has lasted tcfg.wait_s.  The clock is read
// only every 1024 turns so that the loop stays a tight loop around the
// system call.  With both ranks on one CPU the poller yields, or it would
// spin away the time slice its peer needs.
static int spin_expired(int64_t *t0, unsigned *turns)
{
	if (share_cpu)
		sched_yield();
	if ((++*turns & 1023) != 0)
		return 0;
	int64_t now = bench_now_ns();
	if (*t0 == 0)
		*t0 = now;
	return now - *t0 > (int64_t)tcfg.wait_s * ns_per_s;
}

static int raw_send(struct ep *e, const void *buf, size_t n)
{
	const unsigned char *p = buf;
	int64_t t0 = 0;
	unsigned turns = 0;
	while (n > 0) {
		// MSG_NOSIGNAL: a peer that died is an error, not a SIGPIPE.
		ssize_t k = send(e->fd, p, n, MSG_NOSIGNAL);
		if (k > 0) {
			p += k;
			n -= (size_t)k;
		} else if (k < 0 && errno == EINTR) {
			continue;
		} else if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			return ep_fail(e, "send: %s", strerror(errno));
		} else if (e->c == C_BLOCK || spin_expired(&t0, &turns)) {
			// Blocking: SO_SNDTIMEO expired.
			return ep_fail(
			    e, "send: no progress for %d s", tcfg.wait_s);
		}
	}
	return 0;
}

// Receives between 1 and n bytes; *got is how many.
static int raw_recv_some(struct ep *e, void *buf, size_t n, size_t *got)
{
	int64_t t0 = 0;
	unsigned turns = 0;
	for (;;) {
		ssize_t k = recv(e->fd, buf, n, 0);
		if (k > 0) {
			*got = (size_t)k;
			return 0;
		}
		if (k == 0)
			return ep_fail(
			    e, "recv: the peer closed the connection");
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return ep_fail(e, "recv: %s", strerror(errno));
		if (e->c == C_BLOCK || spin_expired(&t0, &turns))
			return ep_fail(
			    e, "recv: nothing for %d s", tcfg.wait_s);
	}
}

static int ep_send(void *ctx, const void *buf, size_t n)
{
	struct ep *e = ctx;
	if (!is_link(e->c))
		return raw_send(e, buf, n);
	int rc = tw_send(e->link, e->peer, TAG, buf, n);
	return rc == TW_OK ? 0 : tw_fail(e, "tw_send", n, rc);
}

// Receives one message of exactly n bytes.
static int ep_recv(void *ctx, void *buf, size_t n)
{
	struct ep *e = ctx;
	size_t got;
	if (is_link(e->c)) {
		int rc = tw_recv_into(e->link, e->peer, TAG, buf, n, &got);
		if (rc != TW_OK)
			return tw_fail(e, "tw_recv_into", n, rc);
		if (got != n)
			return ep_fail(e,
			    "tw_recv_into: %zu bytes, expected %zu", got, n);
		return 0;
	}
	unsigned char *p = buf;
	for (size_t off = 0; off < n; off += got)
		if (raw_recv_some(e, p + off, n - off, &got) != 0)
			return -1;
	return 0;
}

// Receives `count` messages of `size` bytes into buf (cap bytes).  A link
// delivers messages, one receive each; a socket delivers a byte stream,
// which the raw receiver drains in reads of up to `cap` bytes, as any
// stream reader would: only the sender makes one call per message.
static int ep_drain(
    void *ctx, unsigned char *buf, size_t cap, long count, size_t size)
{
	struct ep *e = ctx;
	if (is_link(e->c)) {
		for (long i = 0; i < count; i++)
			if (ep_recv(e, buf, size) != 0)
				return -1;
		return 0;
	}
	size_t got;
	for (size_t left = (size_t)count * size; left > 0; left -= got)
		if (raw_recv_some(e, buf, left < cap ? left : cap, &got) != 0)
			return -1;
	return 0;
}

// ---------------------------------------------------------------------------
// Setting up the connection or the link of one measurement
// ---------------------------------------------------------------------------

// What the main process hands both ranks of one measurement.
struct plan {
	int c;
	struct test t;
	int listen_fd; // raw: rank 1 accepts here
	int port[2]; // raw: port[1] is the listener's; tagwire: rank i's
	int res_fd; // each rank writes its record here
};

static int set_nonblock(int fd, int on)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -1;
	return fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}

static struct sockaddr_in loopback(int port)
{
	struct sockaddr_in sa;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return sa;
}

// Waits up to tcfg.wait_s for `events` on fd.
static int wait_fd(int fd, short events)
{
	struct pollfd p = { .fd = fd, .events = events };
	int64_t end = bench_now_ns() + (int64_t)tcfg.wait_s * ns_per_s;
	for (;;) {
		int64_t left = end - bench_now_ns();
		if (left <= 0)
			return -1;
		int n = poll(&p, 1, (int)(left / 1000000) + 1);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -1;
	}
}

static int raw_open(struct ep *e, const struct plan *pl, int rank)
{
	if (rank == 1) {
		if (wait_fd(pl->listen_fd, POLLIN) != 0)
			return ep_fail(e,
			    "accept: nobody connected within %d s",
			    tcfg.wait_s);
		e->fd = accept(pl->listen_fd, NULL, NULL);
		if (e->fd < 0)
			return ep_fail(e, "accept: %s", strerror(errno));
	} else {
		// Non-blocking connect, so that even this wait is bounded.
		struct sockaddr_in sa = loopback(pl->port[1]);
		e->fd = socket(AF_INET, SOCK_STREAM, 0);
		if (e->fd < 0)
			return ep_fail(e, "socket: %s", strerror(errno));
		if (set_nonblock(e->fd, 1) != 0)
			return ep_fail(e, "fcntl: %s", strerror(errno));
		if (connect(e->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
			if (errno != EINPROGRESS)
				return ep_fail(
				    e, "connect: %s", strerror(errno));
			int err = 0;
			socklen_t len = sizeof(err);
			if (wait_fd(e->fd, POLLOUT) != 0)
				return ep_fail(e, "connect: no answer in %d s",
				    tcfg.wait_s);
			if (getsockopt(e->fd, SOL_SOCKET, SO_ERROR, &err, &len)
			        != 0
			    || err != 0)
				return ep_fail(e, "connect: %s",
				    strerror(err ? err : errno));
		}
	}
	int one = 1;
	if (setsockopt(e->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))
	    != 0)
		return ep_fail(e, "TCP_NODELAY: %s", strerror(errno));
	if (e->c == C_POLL)
		return set_nonblock(e->fd, 1) == 0
		    ? 0
		    : ep_fail(e, "fcntl: %s", strerror(errno));
	// Blocking, but never forever: a send or recv that makes no progress
	// for wait_s returns EAGAIN.
	struct timeval tv = { .tv_sec = tcfg.wait_s };
	if (set_nonblock(e->fd, 0) != 0
	    || setsockopt(e->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0
	    || setsockopt(e->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv))
	        != 0)
		return ep_fail(e, "socket options: %s", strerror(errno));
	return 0;
}

static int link_open(struct ep *e, const struct plan *pl, int rank)
{
	char addr[2][64];
	for (int i = 0; i < 2; i++)
		snprintf(addr[i], sizeof(addr[i]), "tcp://127.0.0.1:%d",
		    pl->port[i]);
	const char *step = "tw_desc_new";
	int rc = TW_ENOMEM;
	tw_desc *d = tw_desc_new("tcpbench");
	if (d != NULL) {
		step = "tw_desc_add_party";
		rc = tw_desc_add_party(d, "p0", addr[0]);
		if (rc == TW_OK)
			rc = tw_desc_add_party(d, "p1", addr[1]);
	}
	if (rc == TW_OK) {
		step = "tw_desc_set";
		int64_t ms = (int64_t)tcfg.wait_s * 1000;
		rc = tw_desc_set(d, TW_OPT_RECV_TIMEOUT_MS, ms);
		if (rc == TW_OK)
			rc = tw_desc_set(d, TW_OPT_CONNECT_TIMEOUT_MS, ms);
	}
	if (rc == TW_OK && e->c == C_TLS) {
		step = "tw_desc_set_tls";
		char cert[320], key[320], ca[320];
		snprintf(cert, sizeof(cert), "%s/p%d.pem", certs_dir, rank);
		snprintf(key, sizeof(key), "%s/p%d.key", certs_dir, rank);
		snprintf(ca, sizeof(ca), "%s/ca.pem", certs_dir);
		rc = tw_desc_set_tls(d, cert, key, ca);
	}
	if (rc == TW_OK) {
		step = "tw_link_create";
		rc = tw_link_create(d, (size_t)rank, &e->link);
	}
	tw_desc_free(d);
	if (rc == TW_OK)
		return 0;
	e->link = NULL;
	e->code = rc;
	return ep_fail(e, "%s (rank %d of %s, %s): %s (%s)", step, rank,
	    addr[0], addr[1], tw_err_name(rc), tw_strerror(rc));
}

static int ep_open(struct ep *e, const struct plan *pl, int rank)
{
	memset(e, 0, sizeof(*e));
	e->c = pl->c;
	e->fd = -1;
	e->peer = (size_t)(1 - rank);
	e->code = TW_OK;
	return is_link(e->c) ? link_open(e, pl, rank) : raw_open(e, pl, rank);
}

static void ep_close(struct ep *e)
{
	if (e->link != NULL)
		tw_link_close(e->link);
	e->link = NULL;
	if (e->fd >= 0)
		close(e->fd);
	e->fd = -1;
}

// ---------------------------------------------------------------------------
// The two ranks of each test
// ---------------------------------------------------------------------------

// What a rank reports to the main process: one write of less than
// PIPE_BUF bytes, so the records of the two ranks never interleave.
struct rec {
	int rank;
	int ok; // 1: this rank's part succeeded
	int setup; // 1: failed before the connection or link existed
	int hung; // 1: the watchdog expired
	int code; // tagwire status of a failed setup
	double v, p99; // rank 0: the figure (one-way µs, GB/s, M msg/s)
	long nivcsw; // involuntary context switches in the timed part
	char why[256];
};

static struct rec alarm_rec; // written by the watchdog
static int res_fd = -1;

static void on_rank_alarm(int sig)
{
	(void)sig;
	ssize_t rc = write(res_fd, &alarm_rec, sizeof(alarm_rec));
	(void)rc;
	_exit(125);
}

// Rank 0: sends and keeps the time.
static int run_rank0(struct ep *e, const struct test *t, struct rec *r)
{
	// Rank 0 receives whole messages only in lat; otherwise the ack.
	unsigned char *rx
	    = bench_big_alloc(t->kind == K_LAT ? t->size : 64, 0);
	int64_t *stamps
	    = bench_big_alloc(sizeof(int64_t) * (size_t)(t->iters + 1), 0);
	if (rx == NULL || stamps == NULL)
		return ep_fail(e, "out of memory");
	struct bench_io io = { ep_send, ep_recv, ep_drain, e };
	return bench_send_side(
	    &io, t, src_buf, rx, stamps, &r->v, &r->p99, &r->nivcsw);
}

// Rank 1: echoes (lat) or receives everything, then acks (bw, rate).
static int run_rank1(struct ep *e, const struct test *t, struct rec *r)
{
	size_t cap = t->size > DRAIN_BYTES ? t->size : DRAIN_BYTES;
	unsigned char *buf = bench_big_alloc(cap, 0);
	if (buf == NULL)
		return ep_fail(e, "out of memory");
	struct bench_io io = { ep_send, ep_recv, ep_drain, e };
	int rc = bench_recv_side(&io, t, buf, cap, &r->nivcsw);
	if (rc == BENCH_RECV_DATA)
		return ep_fail(e, "received wrong bytes");
	return rc == 0 ? 0 : -1;
}

// The life of one rank: pin, connect, run, report, close.  Never returns.
__attribute__((noreturn)) static void rank_main(
    const struct plan *pl, int rank)
{
	// Dies with the main process; the check after it covers a main
	// process that died before the call.
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != main_pid)
		_exit(126);
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGPIPE, SIG_IGN);
	res_fd = pl->res_fd;
	memset(&alarm_rec, 0, sizeof(alarm_rec));
	alarm_rec.rank = rank;
	alarm_rec.hung = 1;
	snprintf(alarm_rec.why, sizeof(alarm_rec.why),
	    "watchdog: rank %d still busy after %d s", rank, tcfg.watchdog_s);
	signal(SIGALRM, on_rank_alarm);
	alarm((unsigned)tcfg.watchdog_s);

	struct rec r;
	memset(&r, 0, sizeof(r));
	r.rank = rank;
	r.v = r.p99 = NAN;
	struct ep e;
	int rc;
	// Pinned before tagwire starts any thread, so its threads inherit
	// the CPU.
	if (bench_pin(rank == 0 ? cpu_a : cpu_b) != 0) {
		memset(&e, 0, sizeof(e));
		e.fd = -1;
		rc = ep_fail(&e, "sched_setaffinity: %s", strerror(errno));
		r.setup = 1;
	} else {
		if (rank == 0 && pl->listen_fd >= 0)
			close(pl->listen_fd);
		rc = ep_open(&e, pl, rank);
		r.setup = rc != 0;
		if (rank == 1 && pl->listen_fd >= 0)
			close(pl->listen_fd);
	}
	if (rc == 0)
		rc = rank == 0 ? run_rank0(&e, &pl->t, &r)
		               : run_rank1(&e, &pl->t, &r);
	r.ok = rc == 0;
	r.code = e.code;
	if (rc != 0)
		snprintf(r.why, sizeof(r.why), "%s", e.err);
	// Report before closing: the figure is taken, and a close that
	// misbehaves must not cost it.
	ssize_t wr = write(res_fd, &r, sizeof(r));
	(void)wr;
	ep_close(&e);
	_exit(rc == 0 ? 0 : 1);
}

// ---------------------------------------------------------------------------
// The main process's side of one measurement
// ---------------------------------------------------------------------------

// Ports handed to tagwire so far: a later measurement never reuses one, so
// a rank never meets what an earlier round left on it.
static int used_port[4096];
static size_t n_used;

static int port_used(int p)
{
	size_t n = n_used < 4096 ? n_used : 4096;
	for (size_t i = 0; i < n; i++)
		if (used_port[i] == p)
			return 1;
	return 0;
}

// Two free loopback ports for a tagwire link.  Each is drawn by binding
// port 0 on a probe socket; the probes stay open until both are drawn (so
// they differ) and are closed before the ranks start, which leaves nothing
// behind (a socket that never connected has no TIME_WAIT).
static int probe_ports(int *port, char *why, size_t len)
{
	int fds[16], nf = 0, got = 0;
	while (got < 2 && nf < 16) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		if (fd < 0)
			break;
		fds[nf++] = fd;
		struct sockaddr_in sa = loopback(0);
		socklen_t sl = sizeof(sa);
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0
		    || getsockname(fd, (struct sockaddr *)&sa, &sl) != 0)
			break;
		int p = ntohs(sa.sin_port);
		if (!port_used(p))
			port[got++] = p;
	}
	int err = errno;
	for (int i = 0; i < nf; i++)
		close(fds[i]);
	if (got < 2) {
		snprintf(why, len, "no free port: %s", strerror(err));
		return -1;
	}
	for (int i = 0; i < 2; i++)
		used_port[n_used++ % 4096] = port[i];
	return 0;
}

// A listening socket on a free loopback port for the raw contenders.  It
// is made before the fork, so rank 0 can connect at once.
static int raw_listener(int *port, char *why, size_t len)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = loopback(0);
	socklen_t sl = sizeof(sa);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0
	    || listen(fd, 1) != 0
	    || getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
		snprintf(why, len, "listener: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	*port = ntohs(sa.sin_port);
	return fd;
}

static void describe_exit(char *out, size_t len, int st)
{
	if (WIFEXITED(st))
		snprintf(out, len, "exited with status %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(out, len, "killed by signal %d (%s)", WTERMSIG(st),
		    strsignal(WTERMSIG(st)));
	else
		snprintf(out, len, "ended with wait status %d", st);
}

// Waits for `pid` until `end`, then kills it.  Returns its wait status;
// *killed says whether this function had to kill it.
static int reap(pid_t pid, int64_t end, int *killed)
{
	int st = 0;
	*killed = 0;
	for (;;) {
		pid_t w = waitpid(pid, &st, WNOHANG);
		if (w == pid)
			return st;
		if (w < 0 && errno != EINTR)
			return 0;
		if (bench_now_ns() >= end)
			break;
		struct timespec ms = { 0, 1000000 };
		nanosleep(&ms, NULL);
	}
	*killed = 1;
	kill(pid, SIGKILL);
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	return st;
}

// Reads the ranks' records until both are in, one reports a failure, both
// have exited (end of file) or `end` passes.  Returns the rank whose
// failure arrived first, or -1.
static int collect(int fd, struct rec *got, int *have, int64_t end)
{
	unsigned char acc[2 * sizeof(struct rec)];
	size_t filled = 0;
	while (!(have[0] && have[1])) {
		int64_t left = end - bench_now_ns();
		if (left <= 0)
			return -1;
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int n = poll(&p, 1, (int)(left / 1000000) + 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			continue;
		ssize_t k = read(fd, acc + filled, sizeof(acc) - filled);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1; // both ranks are gone
		filled += (size_t)k;
		while (filled >= sizeof(struct rec)) {
			struct rec r;
			memcpy(&r, acc, sizeof(r));
			filled -= sizeof(r);
			memmove(acc, acc + sizeof(r), filled);
			if (r.rank < 0 || r.rank > 1)
				continue;
			got[r.rank] = r;
			have[r.rank] = 1;
			if (!r.ok)
				return r.rank;
		}
	}
	return -1;
}

// What went wrong in one measurement.
enum { M_OK = 0, M_FAIL = -1, M_DROP = -2 };

// One measurement of contender c on test t: forks both ranks, collects
// their records, reaps them.  Returns M_OK with the figures; M_FAIL with
// `why` when the test failed; M_DROP when the contender cannot be measured
// at all (its connection or link never formed, or a rank hung), so that a
// broken contender costs one timeout, not one per workload and round.
static int measure_once(int c, const struct test *t, double *v, double *p99,
    long *pre, char *why, size_t len, int *setup_code)
{
	struct plan pl;
	memset(&pl, 0, sizeof(pl));
	pl.c = c;
	pl.t = *t;
	pl.listen_fd = -1;
	*setup_code = TW_OK;
	if (is_link(c)) {
		if (probe_ports(pl.port, why, len) != 0)
			return M_DROP;
	} else if ((pl.listen_fd = raw_listener(&pl.port[1], why, len)) < 0) {
		return M_DROP;
	}
	int pfd[2];
	if (pipe(pfd) != 0) {
		snprintf(why, len, "pipe: %s", strerror(errno));
		if (pl.listen_fd >= 0)
			close(pl.listen_fd);
		return M_FAIL;
	}
	pl.res_fd = pfd[1];
	pid_t pid[2] = { -1, -1 };
	int fork_err = 0;
	fflush(NULL); // nothing buffered may be written twice
	for (int rank = 1; rank >= 0; rank--) { // the acceptor first
		pid[rank] = fork();
		if (pid[rank] == 0) {
			close(pfd[0]);
			rank_main(&pl, rank);
		}
		if (pid[rank] < 0) {
			fork_err = errno;
			break;
		}
		watch_pid[rank] = pid[rank];
	}
	close(pfd[1]);
	if (pl.listen_fd >= 0)
		close(pl.listen_fd);

	struct rec got[2];
	int have[2] = { 0, 0 };
	int first_bad = -1;
	int forked = pid[0] > 0 && pid[1] > 0;
	int64_t end
	    = bench_now_ns() + (int64_t)(tcfg.watchdog_s + GRACE_S) * ns_per_s;
	if (forked)
		first_bad = collect(pfd[0], got, have, end);
	close(pfd[0]);
	int ok = forked && have[0] && have[1] && got[0].ok && got[1].ok;

	// A rank that is done is still closing; with nothing left to flush
	// after the last ack that is quick, and a rank still there after
	// GRACE_S would steal CPU from the next measurement, so it is killed.
	// Once a contender's close has hung, the benchmark no longer waits
	// for it (the failure is reported once).  A rank of a failed
	// measurement is killed at once.
	int st[2] = { 0, 0 }, killed[2] = { 0, 0 }, exited[2] = { 0, 0 };
	int grace = ok && !close_hung[c] ? GRACE_S : 0;
	int64_t reap_end = bench_now_ns() + (int64_t)grace * ns_per_s;
	for (int i = 0; i < 2; i++) {
		if (pid[i] <= 0)
			continue;
		// Whoever already exited by itself tells how; see below.
		exited[i] = waitpid(pid[i], &st[i], WNOHANG) == pid[i];
		if (!exited[i])
			st[i] = reap(pid[i], reap_end, &killed[i]);
		watch_pid[i] = 0;
	}

	if (ok) {
		*v = got[0].v;
		*p99 = got[0].p99;
		*pre = got[0].nivcsw + got[1].nivcsw;
		for (int i = 0; i < 2 && grace > 0; i++) {
			if (st[i] == 0 && !killed[i])
				continue;
			char how[96];
			if (killed[i])
				snprintf(how, sizeof(how),
				    "did not exit within %d s (killed)",
				    GRACE_S);
			else
				describe_exit(how, sizeof(how), st[i]);
			note("  ! %s: rank %d %s after reporting its figure; "
			     "figure kept%s\n",
			    c_name[c], i, how,
			    killed[i] ? ", later ranks are not waited for"
			              : "");
			close_hung[c] |= killed[i];
			failures++;
		}
		return M_OK;
	}
	if (!forked) {
		snprintf(why, len, "fork: %s", strerror(fork_err));
		return M_FAIL;
	}
	if (first_bad >= 0) {
		const struct rec *b = &got[first_bad];
		int o = 1 - first_bad;
		snprintf(why, len, "rank %d: %s", first_bad, b->why);
		// The other rank may have died first (and caused this).
		if (!have[o] && exited[o] && st[o] != 0) {
			char how[96];
			size_t l = strlen(why);
			describe_exit(how, sizeof(how), st[o]);
			snprintf(why + l, len - l, "; rank %d %s", o, how);
		} else if (!have[o] && !exited[o]) {
			size_t l = strlen(why);
			snprintf(why + l, len - l,
			    "; rank %d had not finished (killed)", o);
		}
		*setup_code = b->setup ? b->code : TW_OK;
		return b->setup || b->hung ? M_DROP : M_FAIL;
	}
	// No failure was reported: a rank died, or the ranks overran.
	for (int i = 0; i < 2; i++) {
		if (have[i] || !exited[i])
			continue;
		char how[96];
		describe_exit(how, sizeof(how), st[i]);
		snprintf(why, len, "rank %d %s without a result", i, how);
		return M_FAIL;
	}
	snprintf(why, len, "no result within %d s: both ranks killed",
	    tcfg.watchdog_s + GRACE_S);
	return M_DROP;
}

static int measure(int c, const struct test *t, double *v, double *p99,
    long *pre, char *why, size_t len)
{
	int code;
	*v = *p99 = NAN;
	*pre = 0;
	int rc = measure_once(c, t, v, p99, pre, why, len, &code);
	// A port drawn free can be taken by someone else before tagwire
	// binds it; that is no fault of the link, so draw new ports once.
	if (rc == M_DROP && is_link(c) && code == TW_ESYS)
		rc = measure_once(c, t, v, p99, pre, why, len, &code);
	if (rc != M_OK)
		*v = *p99 = NAN;
	return rc;
}

// ---------------------------------------------------------------------------
// Statistics and the report
// ---------------------------------------------------------------------------

// Column widths of the figures, the ratio and the baseline.
enum { WID_NUM = 13, WID_RATIO = 18 };

static void print_row(const char *name, const char *unit, bench_figs *v, int w)
{
	char t[64];
	int n = cfg.rounds;
	bench_row_start(name, unit);
	for (int c = 0; c < C_MAIN; c++) {
		bench_fmt_num(
		    t, sizeof(t), bench_median(v[c][w], n, NULL, NULL));
		bench_cell(t, WID_NUM, 1);
	}
	bench_fmt_ratio(t, sizeof(t), v[C_TW][w], v[base_of(w)][w], n);
	bench_cell(t, WID_RATIO, 1);
	bench_cell(c_name[base_of(w)], WID_NUM, 0);
	printf("\n");
}

static void print_tls_row(
    const char *name, const char *unit, bench_figs *v, int w)
{
	char t[64];
	int n = cfg.rounds;
	bench_row_start(name, unit);
	const int c2[2] = { C_TW, C_TLS };
	for (int i = 0; i < 2; i++) {
		bench_fmt_num(
		    t, sizeof(t), bench_median(v[c2[i]][w], n, NULL, NULL));
		bench_cell(t, WID_NUM, 1);
	}
	bench_fmt_ratio(t, sizeof(t), v[C_TLS][w], v[C_TW][w], n);
	bench_cell(t, WID_RATIO, 1);
	printf("\n");
}

// TLS against plaintext: the same link, the same workloads, the same run.
static void print_tls_table(void)
{
	printf("\n## TLS / plaintext: medians of %d rounds; tls/plain = "
	       "tagwire-tls / tagwire; ratio of the medians (range of the "
	       "per-round ratios)\n\n",
	    cfg.rounds);
	bench_row_start("workload", "unit");
	bench_cell(c_name[C_TW], WID_NUM, 1);
	bench_cell(c_name[C_TLS], WID_NUM, 1);
	bench_cell("tls/plain", WID_RATIO, 1);
	printf("\n|---|---|---:|---:|---:|\n");
	bench_print_rows(res, res_p99, print_tls_row);
	printf("\nA latency ratio above 1, or a bandwidth or rate ratio "
	       "below 1, means TLS is slower than plaintext.\n");
}

static void print_table(void)
{
	printf("\n## Results: medians of %d rounds; tagwire/baseline = "
	       "tagwire / raw-busy-poll for latency, tagwire / raw-blocking "
	       "for bandwidth and rate; ratio of the medians (range of the "
	       "per-round ratios)\n\n",
	    cfg.rounds);
	bench_row_start("workload", "unit");
	for (int c = 0; c < C_MAIN; c++)
		bench_cell(c_name[c], WID_NUM, 1);
	bench_cell("tagwire/baseline", WID_RATIO, 1);
	bench_cell("baseline", WID_NUM, 0);
	printf("\n|---|---|---:|---:|---:|---:|---|\n");
	bench_print_rows(res, res_p99, print_row);
	printf("\nA latency ratio above 1, or a bandwidth or rate ratio "
	       "below 1, means tagwire is slower than the raw socket.\n");
	if (tls_on)
		print_tls_table();
	printf("\nPreemptions (involuntary context switches of both ranks "
	       "during the timed part, summed over the rounds; a busy poller "
	       "that is preempted waits for the scheduler; tagwire also "
	       "counts its own threads taking turns on a rank's CPU):\n");
	for (int w = 0; w < W_COUNT; w++) {
		printf("  %-16s", wl[w].name);
		for (int c = 0; c < C_COUNT; c++) {
			if (c == C_TLS && !tls_on)
				continue;
			long sum = 0;
			int any = 0;
			for (int r = 0; r < cfg.rounds; r++) {
				sum += preempt[c][w][r];
				any |= !isnan(res[c][w][r]);
			}
			if (any)
				printf(" %s %ld;", c_name[c], sum);
			else
				printf(" %s –;", c_name[c]);
		}
		printf("\n");
	}
	for (int c = 0; c < C_COUNT; c++) {
		if (c_why[c][0] != '\0')
			printf("\n%s: %s\n", c_name[c], c_why[c]);
		if (close_hung[c])
			printf("\n%s: a rank did not exit within %d s after "
			       "reporting its figure (killed); figures kept, "
			       "later ranks killed once they reported\n",
			    c_name[c], GRACE_S);
		for (int w = 0; w < W_COUNT; w++)
			if (w_why[c][w][0] != '\0')
				printf("\n%s, %s: %s\n", c_name[c], wl[w].name,
				    w_why[c][w]);
	}
}

// The TSV: one header line, then one line per figure of one measurement:
// contender, transport, test, size (bytes), round, value, unit.  A latency
// measurement gives two lines (lat-median, lat-p99); what was not measured
// has no line.
static void write_tsv(const char *path)
{
	FILE *f = bench_open_tsv("tcp_bench", path);
	if (f == NULL) {
		failures++;
		return;
	}
	fprintf(f, "contender\ttransport\ttest\tsize\tround\tvalue\tunit\n");
	for (int r = 0; r < cfg.rounds; r++)
		for (int w = 0; w < W_COUNT; w++)
			for (int c = 0; c < C_COUNT; c++) {
				double v = res[c][w][r];
				const char *test = wl[w].kind == K_LAT
				    ? "lat-median"
				    : wl[w].kind == K_BW ? "bw"
				                         : "rate";
				const char *unit = wl[w].kind == K_LAT ? "us"
				    : wl[w].kind == K_BW               ? "GB/s"
				                                       : "M/s";
				if (isnan(v))
					continue;
				fprintf(f, "%s\ttcp\t%s\t%zu\t%d\t%.4f\t%s\n",
				    c_name[c], test, wl[w].size, r + 1, v,
				    unit);
				if (wl[w].kind == K_LAT)
					fprintf(f,
					    "%s\ttcp\tlat-p99\t%zu\t%d\t%.4f\t"
					    "us\n",
					    c_name[c], wl[w].size, r + 1,
					    res_p99[c][w][r]);
			}
	if (fclose(f) != 0) {
		fprintf(stderr, "tcp_bench: cannot write %s: %s\n", path,
		    strerror(errno));
		failures++;
	}
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

// Measures contender c on workload w in round r and prints the figure.
static void run_one(int c, int w, int r)
{
	if (!c_on[c] || !w_on[c][w])
		return;
	struct test t = bench_test(&cfg, w);
	char why[288];
	int rc = measure(c, &t, &res[c][w][r], &res_p99[c][w][r],
	    &preempt[c][w][r], why, sizeof(why));
	if (rc == M_OK) {
		printf(" %s %.3g", c_name[c], res[c][w][r]);
		return;
	}
	printf(" %s FAILED", c_name[c]);
	failures++;
	int drop = rc == M_DROP;
	note("  ! %s, %s, round %d: %s; %s\n", c_name[c], wl[w].name, r + 1,
	    why,
	    drop ? "dropped for the rest of the run" : "workload dropped");
	if (drop) {
		snprintf(c_why[c], sizeof(c_why[c]),
		    "FAILED in round %d (%s), not measured after it: %s",
		    r + 1, wl[w].name, why);
		c_on[c] = 0;
	} else {
		snprintf(w_why[c][w], sizeof(w_why[c][w]),
		    "FAILED in round %d, not measured after it: %s", r + 1,
		    why);
		w_on[c][w] = 0;
	}
}

// One section of round r: every workload of the section with the
// contenders in turn, and tagwire's ratio of that round.
static void run_section(int sec, int r)
{
	printf("round %d/%d %-4s |", r + 1, cfg.rounds, s_name[sec]);
	fflush(stdout);
	for (int w = 0; w < W_COUNT; w++) {
		if (wl[w].section != sec)
			continue;
		printf(" %s:", wl[w].name);
		for (int i = 0; i < C_COUNT; i++) {
			run_one(c_order[i], w, r);
			fflush(stdout);
		}
		double q = res[C_TW][w][r] / res[base_of(w)][w][r];
		if (!isnan(q))
			printf(" (ratio %.2f)", q);
		q = res[C_TLS][w][r] / res[C_TW][w][r];
		if (!isnan(q))
			printf(" (tls/plain %.2f)", q);
		printf(" |");
	}
	printf("\n%s", notes);
	notes[0] = '\0';
	fflush(stdout);
}

static void usage(FILE *f)
{
	fprintf(f,
	    "usage: tcp_bench [--quick] [--rounds N] [--tsv FILE] "
	    "[--cpus A,B | --no-pin] [--bw-mib N] [--tls]\n"
	    "  --quick       fewer iterations, for a smoke run\n"
	    "  --rounds N    rounds (default 5, quick 2)\n"
	    "  --tsv FILE    also write every figure as TSV\n"
	    "  --cpus A,B    pin rank 0 to CPU A and rank 1 to CPU B "
	    "(default: the\n"
	    "                first two allowed CPUs)\n"
	    "  --no-pin      leave both ranks to the scheduler\n"
	    "  --bw-mib N    MiB per bandwidth measurement (default 1024, "
	    "quick 64)\n"
	    "  --tls         measure the tagwire link with TLS too, and "
	    "print\n"
	    "                TLS / plaintext ratios (needs the openssl "
	    "command)\n");
}

static int want_a = -1, want_b = -1; // --cpus A,B
static int no_pin; // --no-pin

// The options of tcp_bench alone: --cpus A,B, --no-pin and --tls.
static int tcp_opt(int argc, char **argv, int *i)
{
	if (strcmp(argv[*i], "--no-pin") == 0) {
		no_pin = 1;
		return 1;
	}
	if (strcmp(argv[*i], "--tls") == 0) {
		tls_on = 1;
		return 1;
	}
	if (strcmp(argv[*i], "--cpus") != 0 || *i + 1 >= argc)
		return 0;
	char *e;
	want_a = (int)bench_parse_long(
	    "tcp_bench", argv[++*i], &e, 0, CPU_SETSIZE - 1, usage);
	if (*e != ',') {
		fprintf(stderr, "tcp_bench: --cpus wants A,B\n");
		exit(2);
	}
	want_b = (int)bench_parse_long(
	    "tcp_bench", e + 1, NULL, 0, CPU_SETSIZE - 1, usage);
	return 1;
}

int main(int argc, char **argv)
{
	// One 8-byte send() costs about 5 µs on loopback, so the raw
	// senders need about a second per 200,000 messages.
	bench_args(&cfg, "tcp_bench", argc, argv, tcp_opt, usage, 100000);
	// Short waits in a smoke run: a broken link should cost seconds.
	tcfg.wait_s = cfg.quick ? 10 : 30;
	tcfg.watchdog_s = cfg.quick ? 60 : 180;

	// The ranks pin themselves (before tagwire starts any thread); the
	// main process only waits and stays unpinned.
	int n_allowed = bench_cpus(&cpu_a, &cpu_b);
	if (want_a >= 0) {
		if (!bench_cpu_allowed(want_a) || !bench_cpu_allowed(want_b)) {
			fprintf(stderr,
			    "tcp_bench: --cpus %d,%d: not both allowed "
			    "(%d CPUs allowed)\n",
			    want_a, want_b, n_allowed);
			return 2;
		}
		cpu_a = want_a;
		cpu_b = want_b;
		share_cpu = want_a == want_b;
	} else if (n_allowed < 2) {
		share_cpu = 1;
	}
	if (no_pin)
		cpu_a = cpu_b = -1;

	main_pid = getpid();
	signal(SIGINT, on_main_signal);
	signal(SIGTERM, on_main_signal);
	signal(SIGPIPE, SIG_IGN);

	// The source of every send, made before the forks: rank 0 inherits
	// it with its page tables and only reads it.
	src_buf = bench_big_alloc(16 * MiB, 0);
	if (src_buf == NULL) {
		fprintf(stderr, "tcp_bench: out of memory\n");
		return 1;
	}
	for (size_t i = 0; i < 16 * MiB; i++)
		src_buf[i] = bench_pattern(i);

	for (int c = 0; c < C_COUNT; c++) {
		c_on[c] = c != C_TLS || tls_on;
		for (int w = 0; w < W_COUNT; w++) {
			w_on[c][w] = 1;
			for (int r = 0; r < MAX_ROUNDS; r++)
				res[c][w][r] = res_p99[c][w][r] = NAN;
		}
	}

	char facts[2048], load[64];
	bench_facts(facts, sizeof(facts), argc, argv, tw_version(), n_allowed,
	    cpu_a >= 0, "busy poller");
	if (cpu_a >= 0)
		bench_append(facts, sizeof(facts),
		    "rank 0 (sender, timer) on CPU %d, rank 1 (receiver) on "
		    "CPU %d%s",
		    cpu_a, cpu_b,
		    share_cpu ? " (one CPU: the busy poller yields)" : "");
	bench_append(facts, sizeof(facts),
	    "; both ranks are forked afresh for every measurement\n"
	    "# sockets: 127.0.0.1, TCP_NODELAY, default buffer sizes; "
	    "tagwire: default options, timeouts %d s\n",
	    tcfg.wait_s);
	if (tls_on) {
		char why[400];
		if (certs_make(why, sizeof(why)) != 0) {
			snprintf(c_why[C_TLS], sizeof(c_why[C_TLS]),
			    "not measured: %s", why);
			c_on[C_TLS] = 0;
			failures++;
		}
		bench_append(facts, sizeof(facts),
		    "# tagwire-tls: the same link with tw_desc_set_tls "
		    "(P-256 certificates made by mkcerts.sh)%s\n",
		    c_on[C_TLS] ? "" : "; NOT MEASURED, see the end");
	}
	bench_print_facts("# tcp_bench: tagwire's tcp:// link vs raw TCP "
	                  "sockets on loopback\n",
	    facts, sizeof(facts), &cfg,
	    "# ratios: tagwire / raw-busy-poll for latency, tagwire / "
	    "raw-blocking for bandwidth and rate\n");
	bench_run(cfg.rounds, run_section, print_table, load, sizeof(load),
	    "busy poller");
	if (cfg.tsv != NULL)
		write_tsv(cfg.tsv);
	return bench_status(failures);
}
