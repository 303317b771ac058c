// tcp_bench: tagwire's tcp:// link against raw TCP sockets on loopback,
// side by side in one run.
//
// Contenders (see README.md):
//   tagwire        a two-party tagwire link over tcp://127.0.0.1:PORT, public
//                  API only (tw_link_create, tw_send, tw_recv_into)
//   raw-blocking   one connected pair of TCP sockets, blocking, TCP_NODELAY
//   raw-busy-poll  the same pair, non-blocking, every wait a spin around
//                  recv() or send()
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
// after cfg.wait_s seconds, each rank arms a watchdog alarm, and the main
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
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <tagwire/tagwire.h>

#ifndef TW_BENCH_BUILD_TYPE
#define TW_BENCH_BUILD_TYPE "unknown"
#endif

#define KiB ((size_t)1024)
#define MiB (KiB * KiB)
#define MAX_ROUNDS 64
#define GRACE_S 5 // what the main process allows beyond a rank's own bounds
#define DRAIN_BYTES (64 * KiB) // raw rate receiver: bytes per recv()
#define TAG "b" // the tagwire tag of every message

// ---------------------------------------------------------------------------
// What is measured
// ---------------------------------------------------------------------------

enum { C_TW, C_BLOCK, C_POLL, C_COUNT };
static const char *const c_name[C_COUNT]
    = { "tagwire", "raw-blocking", "raw-busy-poll" };

enum { K_LAT, K_BW, K_RATE };
enum { S_LAT, S_BW, S_RATE, S_COUNT };
static const char *const s_name[S_COUNT] = { "lat", "bw", "rate" };

enum { W_LAT8, W_LAT4K, W_BW64K, W_BW1M, W_BW16M, W_RATE, W_COUNT };
static const struct workload {
	const char *name;
	int kind;
	int section;
	size_t size;
} wl[W_COUNT] = {
	{ "lat 8 B", K_LAT, S_LAT, 8 },
	{ "lat 4 KiB", K_LAT, S_LAT, 4 * KiB },
	{ "bw 64 KiB", K_BW, S_BW, 64 * KiB },
	{ "bw 1 MiB", K_BW, S_BW, MiB },
	{ "bw 16 MiB", K_BW, S_BW, 16 * MiB },
	{ "rate 8 B stream", K_RATE, S_RATE, 8 },
};

// The baseline of tagwire's ratio on workload w.  Latency is compared with
// the faster raw figure, the busy poller, because a fast small-message
// path spins before it sleeps; bandwidth and rate with the plain blocking
// loop, since a library cannot spend a spinning CPU per connection on a
// stream (and the peer table shows polling changes streaming little).
static int base_of(int w)
{
	return wl[w].kind == K_LAT ? C_POLL : C_BLOCK;
}

static struct config {
	int quick;
	int rounds;
	long lat_warm, lat_iters;
	size_t bw_total; // bytes per bandwidth measurement
	long rate_msgs;
	int wait_s; // the longest any single wait of a rank may last
	int watchdog_s; // alarm per rank and measurement
	const char *tsv;
} cfg;

// One test as both ranks run it.
struct test {
	int kind;
	size_t size; // message size
	long warm, iters; // lat: warm-up and timed round trips
	long count; // bw, rate: messages
};

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
static unsigned char *src_buf; // 16 MiB of pattern(i), inherited by rank 0

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void say(const char *s)
{
	ssize_t rc = write(2, s, strlen(s));
	(void)rc;
}

static void on_main_signal(int sig)
{
	(void)sig;
	say("tcp_bench: interrupted\n");
	for (int i = 0; i < 2; i++)
		if (watch_pid[i] > 0)
			kill((pid_t)watch_pid[i], SIGKILL);
	_exit(3);
}

static int pin_to(int cpu)
{
	if (cpu < 0)
		return 0;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set);
}

static unsigned char pattern(size_t i)
{
	return (unsigned char)(i * 131 + 7);
}

// Page-aligned memory, already touched, so no page fault lands in a timed
// loop.
static void *big_alloc(size_t n)
{
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	memset(p, 0, n);
	return p;
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
// known); nonzero once the wait has lasted cfg.wait_s.  The clock is read
// only every 1024 turns so that the loop stays a tight loop around the
// system call.  With both ranks on one CPU the poller yields, or it would
// spin away the time slice its peer needs.
static int spin_expired(int64_t *t0, unsigned *turns)
{
	if (share_cpu)
		sched_yield();
	if ((++*turns & 1023) != 0)
		return 0;
	int64_t now = now_ns();
	if (*t0 == 0)
		*t0 = now;
	return now - *t0 > (int64_t)cfg.wait_s * ns_per_s;
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
			    e, "send: no progress for %d s", cfg.wait_s);
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
			    e, "recv: nothing for %d s", cfg.wait_s);
	}
}

static int ep_send(struct ep *e, const void *buf, size_t n)
{
	if (e->c != C_TW)
		return raw_send(e, buf, n);
	int rc = tw_send(e->link, e->peer, TAG, buf, n);
	return rc == TW_OK ? 0 : tw_fail(e, "tw_send", n, rc);
}

// Receives one message of exactly n bytes.
static int ep_recv(struct ep *e, void *buf, size_t n)
{
	size_t got;
	if (e->c == C_TW) {
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
    struct ep *e, unsigned char *buf, size_t cap, long count, size_t size)
{
	if (e->c == C_TW) {
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

// Waits up to cfg.wait_s for `events` on fd.
static int wait_fd(int fd, short events)
{
	struct pollfd p = { .fd = fd, .events = events };
	int64_t end = now_ns() + (int64_t)cfg.wait_s * ns_per_s;
	for (;;) {
		int64_t left = end - now_ns();
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
			    cfg.wait_s);
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
				    cfg.wait_s);
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
	struct timeval tv = { .tv_sec = cfg.wait_s };
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
		int64_t ms = (int64_t)cfg.wait_s * 1000;
		rc = tw_desc_set(d, TW_OPT_RECV_TIMEOUT_MS, ms);
		if (rc == TW_OK)
			rc = tw_desc_set(d, TW_OPT_CONNECT_TIMEOUT_MS, ms);
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
	return e->c == C_TW ? link_open(e, pl, rank) : raw_open(e, pl, rank);
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

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

static long nivcsw_now(void)
{
	struct rusage ru;
	return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_nivcsw : 0;
}

// Rank 0: sends and keeps the time.  Fills r->v (one-way median in µs,
// GB/s or M msg/s) and r->p99 (lat only).
static int run_rank0(struct ep *e, const struct test *t, struct rec *r)
{
	unsigned char one = 1;
	// Rank 0 receives whole messages only in lat; otherwise the ack.
	unsigned char *rx = big_alloc(t->kind == K_LAT ? t->size : 64);
	int64_t *stamps = big_alloc(sizeof(int64_t) * (size_t)(t->iters + 1));
	if (rx == NULL || stamps == NULL)
		return ep_fail(e, "out of memory");
	// The sync exchange: both sides are connected and ready once it is
	// done, so the clock starts only after it.
	if (ep_send(e, &one, 1) != 0 || ep_recv(e, &one, 1) != 0)
		return -1;
	long cs0 = nivcsw_now();
	if (t->kind == K_LAT) {
		for (long i = 0; i < t->warm; i++)
			if (ep_send(e, src_buf, t->size) != 0
			    || ep_recv(e, rx, t->size) != 0)
				return -1;
		stamps[0] = now_ns();
		for (long i = 0; i < t->iters; i++) {
			if (ep_send(e, src_buf, t->size) != 0
			    || ep_recv(e, rx, t->size) != 0)
				return -1;
			stamps[i + 1] = now_ns();
		}
		r->nivcsw = nivcsw_now() - cs0;
		for (long i = 0; i < t->iters; i++)
			stamps[i] = stamps[i + 1] - stamps[i];
		size_t n = (size_t)t->iters;
		qsort(stamps, n, sizeof(*stamps), cmp_i64);
		double med = n % 2
		    ? (double)stamps[n / 2]
		    : 0.5 * (double)(stamps[n / 2 - 1] + stamps[n / 2]);
		size_t k = (size_t)ceil(0.99 * (double)n) - 1;
		r->v = med / 2 / 1e3;
		r->p99 = (double)stamps[k] / 2 / 1e3;
		return 0;
	}
	int64_t t0 = now_ns();
	for (long i = 0; i < t->count; i++)
		if (ep_send(e, src_buf, t->size) != 0)
			return -1;
	if (ep_recv(e, &one, 1) != 0)
		return -1;
	double secs = (double)(now_ns() - t0) / 1e9;
	r->nivcsw = nivcsw_now() - cs0;
	if (t->kind == K_BW)
		r->v = (double)t->count * (double)t->size / secs / 1e9;
	else
		r->v = (double)t->count / secs / 1e6;
	return 0;
}

// Rank 1: echoes (lat) or receives everything, then acks (bw, rate).
static int run_rank1(struct ep *e, const struct test *t, struct rec *r)
{
	unsigned char one = 1;
	size_t cap = t->size > DRAIN_BYTES ? t->size : DRAIN_BYTES;
	unsigned char *buf = big_alloc(cap);
	if (buf == NULL)
		return ep_fail(e, "out of memory");
	if (ep_recv(e, &one, 1) != 0 || ep_send(e, &one, 1) != 0)
		return -1;
	long cs0 = nivcsw_now();
	if (t->kind == K_LAT) {
		for (long i = 0; i < t->warm + t->iters; i++)
			if (ep_recv(e, buf, t->size) != 0
			    || ep_send(e, buf, t->size) != 0)
				return -1;
	} else if (t->kind == K_BW) {
		for (long i = 0; i < t->count; i++)
			if (ep_recv(e, buf, t->size) != 0)
				return -1;
		if (ep_send(e, &one, 1) != 0)
			return -1;
		// Sample bytes of the last message: the figure counts only
		// if the bytes arrived intact.
		size_t s = t->size;
		if (buf[0] != pattern(0) || buf[s / 2] != pattern(s / 2)
		    || buf[s - 1] != pattern(s - 1))
			return ep_fail(e, "received wrong bytes");
	} else {
		if (ep_drain(e, buf, cap, t->count, t->size) != 0
		    || ep_send(e, &one, 1) != 0)
			return -1;
	}
	r->nivcsw = nivcsw_now() - cs0;
	return 0;
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
	    "watchdog: rank %d still busy after %d s", rank, cfg.watchdog_s);
	signal(SIGALRM, on_rank_alarm);
	alarm((unsigned)cfg.watchdog_s);

	struct rec r;
	memset(&r, 0, sizeof(r));
	r.rank = rank;
	r.v = r.p99 = NAN;
	struct ep e;
	int rc;
	// Pinned before tagwire starts any thread, so its threads inherit
	// the CPU.
	if (pin_to(rank == 0 ? cpu_a : cpu_b) != 0) {
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
		if (now_ns() >= end)
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
		int64_t left = end - now_ns();
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
	if (c == C_TW) {
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
	    = now_ns() + (int64_t)(cfg.watchdog_s + GRACE_S) * ns_per_s;
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
	int64_t reap_end = now_ns() + (int64_t)grace * ns_per_s;
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
	    cfg.watchdog_s + GRACE_S);
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
	if (rc == M_DROP && c == C_TW && code == TW_ESYS)
		rc = measure_once(c, t, v, p99, pre, why, len, &code);
	if (rc != M_OK)
		*v = *p99 = NAN;
	return rc;
}

static struct test make_test(int w)
{
	struct test t = { .kind = wl[w].kind, .size = wl[w].size };
	if (t.kind == K_LAT) {
		t.warm = cfg.lat_warm;
		t.iters = cfg.lat_iters;
	} else if (t.kind == K_BW) {
		t.count = (long)(cfg.bw_total / t.size);
	} else {
		t.count = cfg.rate_msgs;
	}
	return t;
}

// ---------------------------------------------------------------------------
// Statistics and the report
// ---------------------------------------------------------------------------

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

// Median of the non-NaN values of v[0..n), NaN when there are none; the
// smallest and largest go to *lo and *hi when not NULL.
static double median(const double *v, int n, double *lo, double *hi)
{
	double tmp[MAX_ROUNDS];
	int k = 0;
	for (int i = 0; i < n; i++)
		if (!isnan(v[i]))
			tmp[k++] = v[i];
	if (lo != NULL)
		*lo = *hi = NAN;
	if (k == 0)
		return NAN;
	qsort(tmp, (size_t)k, sizeof(*tmp), cmp_double);
	if (lo != NULL) {
		*lo = tmp[0];
		*hi = tmp[k - 1];
	}
	return k % 2 ? tmp[k / 2] : 0.5 * (tmp[k / 2 - 1] + tmp[k / 2]);
}

static void fmt_num(char *out, size_t len, double v)
{
	if (isnan(v))
		snprintf(out, len, "–");
	else if (v >= 100)
		snprintf(out, len, "%.0f", v);
	else if (v >= 10)
		snprintf(out, len, "%.1f", v);
	else
		snprintf(out, len, "%.2f", v);
}

// The ratio of medians num/den, with the range of the per-round ratios:
// each per-round ratio divides two figures taken seconds apart, so its
// range shows how far the machine drifted during the run.
static void fmt_ratio(
    char *out, size_t len, const double *num, const double *den, int n)
{
	double per[MAX_ROUNDS], lo, hi;
	for (int i = 0; i < n; i++)
		per[i] = num[i] / den[i];
	median(per, n, &lo, &hi);
	double r = median(num, n, NULL, NULL) / median(den, n, NULL, NULL);
	char a[16], b[16], c[16];
	fmt_num(a, sizeof(a), r);
	fmt_num(b, sizeof(b), lo);
	fmt_num(c, sizeof(c), hi);
	if (isnan(r))
		snprintf(out, len, "–");
	else
		snprintf(out, len, "%s (%s–%s)", a, b, c);
}

// Prints one table cell of `width` characters (UTF-8 aware), right aligned
// or left aligned, followed by its separator.
static void cell(const char *s, int width, int right)
{
	int n = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		n += (*p & 0xC0) != 0x80;
	int pad = width > n ? width - n : 0;
	if (right)
		printf(" %*s%s |", pad, "", s);
	else
		printf(" %s%*s |", s, pad, "");
}

// Column widths: workload, unit, figures, ratio, baseline.
enum { WID_NAME = 24, WID_UNIT = 4, WID_NUM = 13, WID_RATIO = 18 };

static void print_row(const char *name, const char *unit,
    double (*v)[W_COUNT][MAX_ROUNDS], int w)
{
	char t[64];
	int n = cfg.rounds;
	printf("|");
	cell(name, WID_NAME, 0);
	cell(unit, WID_UNIT, 0);
	for (int c = 0; c < C_COUNT; c++) {
		fmt_num(t, sizeof(t), median(v[c][w], n, NULL, NULL));
		cell(t, WID_NUM, 1);
	}
	fmt_ratio(t, sizeof(t), v[C_TW][w], v[base_of(w)][w], n);
	cell(t, WID_RATIO, 1);
	cell(c_name[base_of(w)], WID_NUM, 0);
	printf("\n");
}

static void print_table(void)
{
	printf("\n## Results: medians of %d rounds; tagwire/baseline = "
	       "tagwire / raw-busy-poll for latency, tagwire / raw-blocking "
	       "for bandwidth and rate; ratio of the medians (range of the "
	       "per-round ratios)\n\n|",
	    cfg.rounds);
	cell("workload", WID_NAME, 0);
	cell("unit", WID_UNIT, 0);
	for (int c = 0; c < C_COUNT; c++)
		cell(c_name[c], WID_NUM, 1);
	cell("tagwire/baseline", WID_RATIO, 1);
	cell("baseline", WID_NUM, 0);
	printf("\n|---|---|---:|---:|---:|---:|---|\n");
	for (int w = 0; w < W_COUNT; w++) {
		char name[64];
		if (wl[w].kind == K_LAT) {
			snprintf(name, sizeof(name), "%s one-way median",
			    wl[w].name);
			print_row(name, "µs", res, w);
			snprintf(
			    name, sizeof(name), "%s one-way p99", wl[w].name);
			print_row(name, "µs", res_p99, w);
		} else if (wl[w].kind == K_BW) {
			print_row(wl[w].name, "GB/s", res, w);
		} else {
			print_row(wl[w].name, "M/s", res, w);
		}
	}
	printf("\nA latency ratio above 1, or a bandwidth or rate ratio "
	       "below 1, means tagwire is slower than the raw socket.\n");
	printf("\nPreemptions (involuntary context switches of both ranks "
	       "during the timed part, summed over the rounds; a busy poller "
	       "that is preempted waits for the scheduler; tagwire also "
	       "counts its own threads taking turns on a rank's CPU):\n");
	for (int w = 0; w < W_COUNT; w++) {
		printf("  %-16s", wl[w].name);
		for (int c = 0; c < C_COUNT; c++) {
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
	FILE *f = fopen(path, "w");
	if (f == NULL) {
		fprintf(stderr, "tcp_bench: cannot write %s: %s\n", path,
		    strerror(errno));
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
	struct test t = make_test(w);
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
		for (int c = 0; c < C_COUNT; c++) {
			run_one(c, w, r);
			fflush(stdout);
		}
		double q = res[C_TW][w][r] / res[base_of(w)][w][r];
		if (!isnan(q))
			printf(" (ratio %.2f)", q);
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
	    "[--cpus A,B] [--bw-mib N]\n"
	    "  --quick       fewer iterations, for a smoke run\n"
	    "  --rounds N    rounds (default 5, quick 2)\n"
	    "  --tsv FILE    also write every figure as TSV\n"
	    "  --cpus A,B    pin rank 0 to CPU A and rank 1 to CPU B "
	    "(default: the\n"
	    "                first two allowed CPUs)\n"
	    "  --bw-mib N    MiB per bandwidth measurement (default 1024, "
	    "quick 64)\n");
}

static long parse_long(const char *s, char **end, long lo, long hi)
{
	char *e;
	errno = 0;
	long v = strtol(s, &e, 10);
	if (errno != 0 || e == s || (end == NULL && *e != '\0') || v < lo
	    || v > hi) {
		fprintf(stderr, "tcp_bench: bad number '%s'\n", s);
		usage(stderr);
		exit(2);
	}
	if (end != NULL)
		*end = e;
	return v;
}

// The load averages of /proc/loadavg (1, 5 and 15 minutes), or "unknown".
static void load_avg(char *out, size_t len)
{
	snprintf(out, len, "unknown");
	FILE *f = fopen("/proc/loadavg", "r");
	if (f == NULL)
		return;
	double l1, l5, l15;
	if (fscanf(f, "%lf %lf %lf", &l1, &l5, &l15) == 3)
		snprintf(out, len, "%.2f %.2f %.2f", l1, l5, l15);
	fclose(f);
}

static void cpu_model(char *out, size_t len)
{
	snprintf(out, len, "unknown");
	FILE *f = fopen("/proc/cpuinfo", "r");
	if (f == NULL)
		return;
	char line[512];
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, "model name", 10) != 0)
			continue;
		char *p = strchr(line, ':');
		if (p == NULL)
			continue;
		p += 1 + strspn(p + 1, " \t");
		p[strcspn(p, "\n")] = '\0';
		snprintf(out, len, "%s", p);
		break;
	}
	fclose(f);
}

int main(int argc, char **argv)
{
	int rounds = -1;
	long bw_mib = -1;
	int want_a = -1, want_b = -1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		int more = i + 1 < argc;
		if (strcmp(a, "--quick") == 0) {
			cfg.quick = 1;
		} else if (strcmp(a, "--tsv") == 0 && more) {
			cfg.tsv = argv[++i];
		} else if (strcmp(a, "--rounds") == 0 && more) {
			rounds
			    = (int)parse_long(argv[++i], NULL, 1, MAX_ROUNDS);
		} else if (strcmp(a, "--bw-mib") == 0 && more) {
			bw_mib = parse_long(argv[++i], NULL, 16, 1L << 20);
		} else if (strcmp(a, "--cpus") == 0 && more) {
			char *e;
			want_a = (int)parse_long(
			    argv[++i], &e, 0, CPU_SETSIZE - 1);
			if (*e != ',') {
				fprintf(
				    stderr, "tcp_bench: --cpus wants A,B\n");
				return 2;
			}
			want_b
			    = (int)parse_long(e + 1, NULL, 0, CPU_SETSIZE - 1);
		} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	cfg.rounds = rounds > 0 ? rounds : cfg.quick ? 2 : 5;
	cfg.lat_warm = cfg.quick ? 200 : 2000;
	cfg.lat_iters = cfg.quick ? 2000 : 20000;
	cfg.bw_total = (size_t)(bw_mib > 0 ? bw_mib
	                       : cfg.quick ? 64
	                                   : 1024)
	    * MiB;
	// One 8-byte send() costs about 5 µs on loopback, so the raw
	// senders need about a second per 200,000 messages.
	cfg.rate_msgs = cfg.quick ? 100000 : 2000000;
	// Short waits in a smoke run: a broken link should cost seconds.
	cfg.wait_s = cfg.quick ? 10 : 30;
	cfg.watchdog_s = cfg.quick ? 60 : 180;

	// The ranks pin themselves (before tagwire starts any thread); the
	// main process only waits and stays unpinned.
	cpu_set_t allowed;
	CPU_ZERO(&allowed);
	int n_allowed = 0;
	if (sched_getaffinity(0, sizeof(allowed), &allowed) == 0) {
		for (int c = 0; c < CPU_SETSIZE; c++) {
			if (!CPU_ISSET(c, &allowed))
				continue;
			if (n_allowed == 0)
				cpu_a = c;
			else if (n_allowed == 1)
				cpu_b = c;
			n_allowed++;
		}
	}
	if (want_a >= 0) {
		if (!CPU_ISSET(want_a, &allowed)
		    || !CPU_ISSET(want_b, &allowed)) {
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
		cpu_a = cpu_b = -1;
		share_cpu = 1;
	}

	main_pid = getpid();
	signal(SIGINT, on_main_signal);
	signal(SIGTERM, on_main_signal);
	signal(SIGPIPE, SIG_IGN);

	// The source of every send, made before the forks: rank 0 inherits
	// it with its page tables and only reads it.
	src_buf = big_alloc(16 * MiB);
	if (src_buf == NULL) {
		fprintf(stderr, "tcp_bench: out of memory\n");
		return 1;
	}
	for (size_t i = 0; i < 16 * MiB; i++)
		src_buf[i] = pattern(i);

	for (int c = 0; c < C_COUNT; c++) {
		c_on[c] = 1;
		for (int w = 0; w < W_COUNT; w++) {
			w_on[c][w] = 1;
			for (int r = 0; r < MAX_ROUNDS; r++)
				res[c][w][r] = res_p99[c][w][r] = NAN;
		}
	}

	// Machine facts.
	char model[256], cmd[512] = "", load[64], pin[160];
	struct utsname un;
	if (uname(&un) != 0)
		snprintf(un.release, sizeof(un.release), "unknown");
	cpu_model(model, sizeof(model));
	load_avg(load, sizeof(load));
	for (int i = 0; i < argc; i++) {
		size_t l = strlen(cmd);
		snprintf(
		    cmd + l, sizeof(cmd) - l, "%s%s", i ? " " : "", argv[i]);
	}
	if (cpu_a < 0)
		snprintf(pin, sizeof(pin),
		    "unpinned: only %d CPU allowed (the busy poller yields "
		    "while it polls)",
		    n_allowed);
	else
		snprintf(pin, sizeof(pin),
		    "rank 0 (sender, timer) on CPU %d, rank 1 (receiver) on "
		    "CPU %d%s",
		    cpu_a, cpu_b,
		    share_cpu ? " (one CPU: the busy poller yields)" : "");
	printf("# tcp_bench: tagwire's tcp:// link vs raw TCP sockets on "
	       "loopback\n"
	       "# command: %s\n"
	       "# tagwire %s, build %s, compiler %s\n"
	       "# machine: nproc %ld (%d allowed), CPU \"%s\", kernel %s\n"
	       "# load average at the start (1, 5, 15 min): %s\n"
	       "# pinning: %s; both ranks are forked afresh for every "
	       "measurement\n"
	       "# sockets: 127.0.0.1, TCP_NODELAY, default buffer sizes; "
	       "tagwire: default options, timeouts %d s\n"
	       "# rounds %d%s; lat %ld round trips after %ld warm-up; bw %zu "
	       "MiB per measurement%s; rate %ld messages\n"
	       "# ratios: tagwire / raw-busy-poll for latency, tagwire / "
	       "raw-blocking for bandwidth and rate\n\n",
	    cmd, tw_version(), TW_BENCH_BUILD_TYPE, __VERSION__,
	    sysconf(_SC_NPROCESSORS_ONLN), n_allowed, model, un.release, load,
	    pin, cfg.wait_s, cfg.rounds,
	    cfg.quick ? " (--quick: a smoke run, figures are rough)" : "",
	    cfg.lat_iters, cfg.lat_warm, cfg.bw_total / MiB,
	    cfg.bw_total < 1024 * MiB
	        ? " (less than the 1 GiB of the peer table)"
	        : "",
	    cfg.rate_msgs);
	fflush(stdout);

	for (int r = 0; r < cfg.rounds; r++)
		for (int sec = 0; sec < S_COUNT; sec++)
			run_section(sec, r);
	print_table();
	load_avg(load, sizeof(load));
	printf("\nLoad average at the end (1, 5, 15 min): %s.  The benchmark "
	       "itself keeps up to 2 CPUs busy; well above that, other "
	       "processes competed for the CPUs, which hurts the busy "
	       "poller most.\n",
	    load);
	if (cfg.tsv != NULL)
		write_tsv(cfg.tsv);
	if (failures != 0)
		printf("\n%d failure(s): see the messages above\n", failures);
	return failures != 0 ? 1 : 0;
}
