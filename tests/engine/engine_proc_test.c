// The transfer engine (tagwire/engine.h) over tcp:// between processes.
// Every party is a forked child of the test (forked before this process
// makes any engine, so that it has no thread to lose); pipes carry the info
// blobs, the registration descriptors and the "go on" lines between the
// parties, so nothing waits on a sleep.  The parent only starts, kills and
// waits for children (each wait with a deadline) and runs ss / ip.
//
//   exact_sS_wW    (S in 1 4, W in 1 16) an acceptor and a connector: a
//                  WRITE, a READ and tagged sends both ways of 0 B, 1 B and
//                  4 KiB + 1 with 4 KiB chunks, then of 16 MiB with the
//                  default chunk, TW_OPT_STRIPES S and TW_OPT_WINDOW W;
//                  every byte checked, guard bytes around every target
//                  untouched, and a WRITE one byte past a registration
//                  fails with TW_EINVAL; the engine's counters add up.
//   sigkill_acceptor / sigkill_connector  heartbeats of 100 ms; a long
//                  transfer (WRITEs and READs of many GiB) and a pending
//                  tagged send and receive towards a peer that is killed
//                  with SIGKILL (the accepting or the connecting side) all
//                  fail with TW_EPEER less than 2 s after the kill (both
//                  times the timeout multiplier).
//   fanin          one acceptor, four connector processes, each WRITEs its
//                  own region of one registration and notifies; the
//                  acceptor checks each region as its notification arrives
//                  and every gap between regions afterwards.
//   shared_port_engine_first / shared_port_link_first  two processes, each
//                  with a link party and an engine listening on the same
//                  tcp:// address: link messages and engine WRITEs work,
//                  also after the link closed, and each process holds
//                  exactly one listening socket, on that port.
//   sskill         connections of an acceptor and a connector killed with
//                  `ss -K` every 100 ms while a stream of WRITEs and tagged
//                  sends runs until 5 kills hit (then the test tells it to
//                  end): every transfer succeeds and every byte is right
//                  (skipped without root or ss -K).
//   netns          three network namespaces on a bridge: the fanin test
//                  with an acceptor in one host and a connector in each of
//                  the two others (skipped without root or `ip netns`).
//
// usage: engine_proc_test CASE [small]   ("small" shrinks the big sizes,
// as does TW_TEST_TIMEOUT_MULTIPLIER > 1: sanitizer builds).

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "sskill.h"
#include "tcpconn/proccount.h"
#include "testdata.h"
#include "testutil.h"

#define KiB ((size_t)1024)
#define MiB (1024 * KiB)
#define GUARD 64
#define MAX_KIDS 8
#define MAX_FDS 64

static bool small_sizes;

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t scale(int64_t ms)
{
	return tw_test_scale_ms(ms);
}

static bool small(void)
{
	return small_sizes || scale(1) > 1;
}

// --- children ------------------------------------------------------------------

static const char *who = "parent";

// A child that fails says why and exits with status 1 (exit, not _exit,
// so that a sanitizer's checks at exit still run).
static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)))
__attribute__((noreturn));

static void die(const char *fmt, ...)
{
	char msg[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s: FAIL: %s\n", who, msg);
	fflush(stderr);
	exit(1);
}

#define CK(cond)                                                              \
	do {                                                                  \
		if (!(cond))                                                  \
			die("line %d: %s", __LINE__, #cond), (void)0;         \
	} while (0)

#define CK_OK(expr)                                                           \
	do {                                                                  \
		int ck_rv_ = (expr);                                          \
		if (ck_rv_ != TW_OK)                                          \
			die("line %d: %s: got %s, want TW_OK", __LINE__,      \
			    #expr, tw_err_name(ck_rv_));                      \
	} while (0)

#define CK_IS(expr, want)                                                     \
	do {                                                                  \
		int ck_rv_ = (expr);                                          \
		if (ck_rv_ != (want))                                         \
			die("line %d: %s: got %s, want %s", __LINE__, #expr,  \
			    tw_err_name(ck_rv_), tw_err_name(want));          \
	} while (0)

// Descriptors made for a test (pipes): a child keeps the ones it is
// given and closes the others, so that a reader sees EOF once the
// writer's process is gone.
static int fds[MAX_FDS];
static size_t nfds;
static pid_t kids[MAX_KIDS];
static const char *kid_names[MAX_KIDS];
static size_t nkids;

static void chan(int p[2])
{
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	assert_true(nfds + 2 <= MAX_FDS);
	fds[nfds++] = p[0];
	fds[nfds++] = p[1];
}

static bool in_list(int fd, const int *keep, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (keep[i] == fd)
			return true;
	return false;
}

// Closes the test's descriptors but keep[0..n).
static void close_but(const int *keep, size_t n)
{
	size_t m = 0;
	for (size_t i = 0; i < nfds; i++) {
		if (in_list(fds[i], keep, n))
			fds[m++] = fds[i];
		else
			close(fds[i]);
	}
	nfds = m;
}

typedef void (*child_fn)(void *arg);

// Forks child `name` running fn(arg) with the descriptors keep[0..n);
// it dies with this process.  The child exits 0 once fn returns.
static pid_t spawn(
    const char *name, child_fn fn, void *arg, const int *keep, size_t n)
{
	assert_true(nkids < MAX_KIDS);
	fflush(NULL);
	pid_t parent = getpid();
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		who = name;
		close_but(keep, n);
		fn(arg);
		fflush(NULL);
		exit(0);
	}
	kid_names[nkids] = name;
	kids[nkids++] = pid;
	return pid;
}

static void kill_kids(void)
{
	for (size_t i = 0; i < nkids; i++)
		if (kids[i] > 0) {
			kill(kids[i], SIGKILL);
			while (waitpid(kids[i], NULL, 0) < 0 && errno == EINTR)
				;
			kids[i] = 0;
		}
	nkids = 0;
}

static void block_sigchld(void)
{
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGCHLD);
	sigprocmask(SIG_BLOCK, &s, NULL);
}

// Waits for every child until timeout_ms; the first that ends otherwise
// than with status 0 (or the deadline) kills the others.  Fails the test
// naming each child that did not exit with 0.  `expect_killed` names a
// child that this process killed on purpose (reaped already: pid 0).
static void wait_kids(int64_t timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	char why[1024] = "";
	bool bad = false;
	size_t left = 0;
	for (size_t i = 0; i < nkids; i++)
		left += kids[i] > 0;
	while (left > 0) {
		for (size_t i = 0; i < nkids; i++) {
			if (kids[i] <= 0)
				continue;
			int st;
			pid_t r = waitpid(kids[i], &st, WNOHANG);
			if (r != kids[i])
				continue;
			kids[i] = 0;
			left--;
			if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
				continue;
			size_t used = strlen(why);
			if (WIFEXITED(st))
				snprintf(why + used, sizeof(why) - used,
				    "%s exited with %d; ", kid_names[i],
				    WEXITSTATUS(st));
			else
				snprintf(why + used, sizeof(why) - used,
				    "%s killed by signal %d (%s); ",
				    kid_names[i], WTERMSIG(st),
				    strsignal(WTERMSIG(st)));
			if (!bad)
				for (size_t k = 0; k < nkids; k++)
					if (kids[k] > 0)
						kill(kids[k], SIGKILL);
			bad = true;
		}
		if (left == 0)
			break;
		int64_t rest = deadline - now_ms();
		if (rest <= 0) {
			size_t used = strlen(why);
			for (size_t i = 0; i < nkids; i++)
				if (kids[i] > 0) {
					snprintf(why + used,
					    sizeof(why) - used,
					    "%s still running after %lld ms "
					    "(killed); ",
					    kid_names[i],
					    (long long)timeout_ms);
					used = strlen(why);
				}
			kill_kids();
			bad = true;
			break;
		}
		sigset_t s;
		sigemptyset(&s);
		sigaddset(&s, SIGCHLD);
		struct timespec ts
		    = { rest / 1000, (long)(rest % 1000) * 1000000L };
		if (ts.tv_sec > 0) // wake now and then anyway
			ts = (struct timespec) { 0, 200 * 1000000L };
		(void)sigtimedwait(&s, NULL, &ts);
	}
	nkids = 0;
	if (bad)
		fail_msg("%s", why);
}

static int teardown(void **state)
{
	(void)state;
	kill_kids();
	close_but(NULL, 0);
	return 0;
}

// --- messages on pipes: a 32-bit length, then the bytes ------------------------

static int put_raw(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n > 0) {
		ssize_t w = write(fd, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

// 0, -1 at EOF or error, -2 at the deadline.
static int get_raw(int fd, void *p, size_t n, int64_t deadline)
{
	char *c = p;
	while (n > 0) {
		int64_t rest = deadline - now_ms();
		if (rest <= 0)
			return -2;
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		int pr = poll(&pf, 1, (int)rest);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr == 0)
			return -2;
		ssize_t r = read(fd, c, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		c += r;
		n -= (size_t)r;
	}
	return 0;
}

static void put(int fd, const void *p, size_t n)
{
	uint32_t len = (uint32_t)n;
	if (put_raw(fd, &len, sizeof(len)) != 0 || put_raw(fd, p, n) != 0)
		die("writing %zu bytes to the pipe: %s", n, strerror(errno));
}

static void put_str(int fd, const char *s)
{
	put(fd, s, strlen(s));
}

// The next message, within timeout_ms (scaled here); malloc'd, with a NUL
// after it.
static char *get(int fd, size_t *n, int64_t timeout_ms)
{
	int64_t deadline = now_ms() + scale(timeout_ms);
	uint32_t len;
	int rc = get_raw(fd, &len, sizeof(len), deadline);
	char *b = NULL;
	if (rc == 0) {
		b = malloc((size_t)len + 1);
		CK(b != NULL);
		rc = get_raw(fd, b, len, deadline);
		b[len] = '\0';
	}
	if (rc != 0)
		die("reading the pipe: %s",
		    rc == -2 ? "nothing within the deadline"
		             : "the writer is gone");
	if (n != NULL)
		*n = len;
	return b;
}

static void expect(int fd, const char *want)
{
	char *got = get(fd, NULL, 30000);
	if (strcmp(got, want) != 0)
		die("pipe: got '%s', want '%s'", got, want);
	free(got);
}

// --- byte patterns that depend on position and seed -----------------------------

static uint64_t mix64(uint64_t x)
{
	x += UINT64_C(0x9e3779b97f4a7c15);
	x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
	return x ^ (x >> 31);
}

static void pat_fill(void *buf, size_t len, uint32_t seed)
{
	unsigned char *p = buf;
	uint64_t s = (uint64_t)seed << 40;
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t v = mix64(s ^ (i / 8));
		memcpy(p + i, &v, 8);
	}
	if (i < len) {
		uint64_t v = mix64(s ^ (i / 8));
		memcpy(p + i, &v, len - i);
	}
}

// The first byte that is not tw pat_fill(seed)'s, or SIZE_MAX.
static size_t pat_check(const void *buf, size_t len, uint32_t seed)
{
	const unsigned char *p = buf;
	uint64_t s = (uint64_t)seed << 40;
	for (size_t i = 0; i < len; i += 8) {
		uint64_t v = mix64(s ^ (i / 8));
		size_t n = len - i < 8 ? len - i : 8;
		if (memcmp(p + i, &v, n) != 0) {
			const unsigned char *w = (const unsigned char *)&v;
			for (size_t k = 0; k < n; k++)
				if (p[i + k] != w[k])
					return i + k;
		}
	}
	return SIZE_MAX;
}

// The first byte of buf[0..len) that is not `b`, or SIZE_MAX.
static size_t all_of(const void *buf, size_t len, unsigned char b)
{
	const unsigned char *p = buf;
	for (size_t i = 0; i < len; i++)
		if (p[i] != b)
			return i;
	return SIZE_MAX;
}

static void ck_pat(const char *what, const void *buf, size_t len, uint32_t s)
{
	size_t bad = pat_check(buf, len, s);
	if (bad != SIZE_MAX)
		die("%s: byte %zu of %zu is wrong (0x%02x)", what, bad, len,
		    ((const unsigned char *)buf)[bad]);
}

static void ck_all(
    const char *what, const void *buf, size_t len, unsigned char b)
{
	size_t bad = all_of(buf, len, b);
	if (bad != SIZE_MAX)
		die("%s: byte %zu of %zu is 0x%02x, want 0x%02x", what, bad,
		    len, ((const unsigned char *)buf)[bad], b);
}

// A buffer of GUARD bytes 0xAB, `len` bytes `fill`, GUARD bytes 0xAB;
// returns the middle.
static unsigned char *guarded(size_t len, unsigned char fill)
{
	unsigned char *b = malloc(len + 2 * GUARD);
	CK(b != NULL);
	memset(b, 0xAB, GUARD);
	memset(b + GUARD, fill, len);
	memset(b + GUARD + len, 0xAB, GUARD);
	return b + GUARD;
}

static void ck_guards(const char *what, const unsigned char *mid, size_t len)
{
	char w[128];
	snprintf(w, sizeof(w), "%s: guard before", what);
	ck_all(w, mid - GUARD, GUARD, 0xAB);
	snprintf(w, sizeof(w), "%s: guard after", what);
	ck_all(w, mid + len, GUARD, 0xAB);
}

static void unguard(unsigned char *mid)
{
	free(mid - GUARD);
}

// --- engines ---------------------------------------------------------------------

typedef struct cfg {
	int64_t stripes, window, chunk, heartbeat; // 0: the default
} cfg;

static tw_engine *eng_new(const char *name, const cfg *c)
{
	tw_engine *e;
	CK_OK(tw_engine_new(name, &e));
	if (c->stripes)
		CK_OK(tw_engine_set(e, TW_OPT_STRIPES, c->stripes));
	if (c->window)
		CK_OK(tw_engine_set(e, TW_OPT_WINDOW, c->window));
	if (c->chunk)
		CK_OK(tw_engine_set(e, TW_OPT_CHUNK_SIZE, c->chunk));
	if (c->heartbeat)
		CK_OK(tw_engine_set(e, TW_OPT_HEARTBEAT_MS, c->heartbeat));
	CK_OK(tw_engine_set(e, TW_OPT_CONNECT_TIMEOUT_MS, scale(15000)));
	return e;
}

// Listens at addr and sends the info blob to each fd of out[0..n).
static void eng_listen_tell(
    tw_engine *e, const char *addr, const int *out, size_t n)
{
	CK_OK(tw_engine_listen(e, addr));
	tw_buf info = { 0 };
	CK_OK(tw_engine_info(e, &info));
	for (size_t i = 0; i < n; i++)
		put(out[i], info.data, info.len);
	tw_buf_free(&info);
}

static tw_peer eng_connect_from(tw_engine *e, int in, const char *peer_name)
{
	size_t n;
	char *info = get(in, &n, 30000);
	tw_peer p;
	CK_OK(tw_engine_connect(e, info, n, &p));
	free(info);
	CK(p != 0);
	CK(strcmp(tw_engine_peer_name(e, p), peer_name) == 0);
	return p;
}

static tw_peer eng_accept(tw_engine *e, const char *name)
{
	tw_peer p;
	CK_OK(tw_engine_accept(e, name, scale(15000), &p));
	CK(p != 0);
	CK(strcmp(tw_engine_peer_name(e, p), name) == 0);
	return p;
}

static void pack_tell(tw_engine *e, uint64_t id, int out)
{
	tw_buf d = { 0 };
	CK_OK(tw_mem_pack(e, id, &d));
	put(out, d.data, d.len);
	tw_buf_free(&d);
}

static uint64_t unpack_from(tw_engine *e, tw_peer p, int in)
{
	size_t n;
	char *d = get(in, &n, 30000);
	uint64_t rid;
	CK_OK(tw_mem_unpack(e, p, d, n, &rid));
	free(d);
	return rid;
}

// One transfer of a single post, waited for; returns its status.
enum { K_WRITE, K_READ, K_SEND, K_RECV };

static tw_xfer *xfer_post(tw_engine *e, tw_peer p, int kind, uint64_t id,
    size_t off, uint64_t rid, size_t roff, size_t len, uint64_t tag)
{
	tw_xfer *x;
	CK_OK(tw_xfer_create(e, p, scale(30000), &x));
	switch (kind) {
	case K_WRITE:
		CK_OK(tw_xfer_post_write(x, id, off, rid, roff, len));
		break;
	case K_READ:
		CK_OK(tw_xfer_post_read(x, id, off, rid, roff, len));
		break;
	case K_SEND:
		CK_OK(tw_xfer_post_send(x, id, off, len, tag));
		break;
	default:
		CK_OK(tw_xfer_post_recv(x, id, off, len, tag));
		break;
	}
	return x;
}

static int xfer_finish(tw_xfer *x)
{
	int rv = tw_xfer_wait(x, scale(40000));
	tw_xfer_free(x);
	return rv;
}

// --- exact: byte-exact transfers of every size ------------------------------------

typedef struct exact_arg {
	cfg c;
	const size_t *sizes;
	size_t nsizes;
	int a2b[2], b2a[2];
} exact_arg;

static uint32_t seed_of(size_t k, int what)
{
	return (uint32_t)(1000 * (k + 1) + what);
}

// The peer's word that it is done with our memory (or that it may now
// read it) comes over a pipe, which ThreadSanitizer cannot see across
// processes.  A call that takes the engine's lock orders the main thread's
// accesses with those of the engine's threads, as receiving a notification
// would; the bytes themselves are ordered by the protocol either way.
static void engine_sync(tw_engine *e, tw_peer p)
{
	tw_xfer_stats st;
	CK_OK(tw_engine_stats(e, p, &st));
}

static void exact_acceptor(void *v)
{
	exact_arg *a = v;
	int out = a->a2b[1], in = a->b2a[0];
	tw_engine *e = eng_new("acc", &a->c);
	eng_listen_tell(e, "tcp://127.0.0.1:0", &out, 1);
	tw_peer p = eng_accept(e, "con");
	uint64_t sum = 0;
	for (size_t k = 0; k < a->nsizes; k++) {
		size_t n = a->sizes[k], reg = n ? n : 1;
		sum += n;
		// WRITE target, then READ source.
		unsigned char *t = guarded(reg, 0xCD);
		uint64_t tid;
		CK_OK(tw_mem_register(e, t, reg, TW_MEM_HOST,
		    TW_ACCESS_READ | TW_ACCESS_WRITE, &tid));
		pack_tell(e, tid, out);
		expect(in, "written");
		engine_sync(e, p);
		ck_pat("WRITE target", t, n, seed_of(k, 1));
		ck_all("WRITE target past the length", t + n, reg - n, 0xCD);
		ck_guards("WRITE target", t, reg);
		pat_fill(t, n, seed_of(k, 2));
		engine_sync(e, p);
		put_str(out, "readable");
		expect(in, "read");
		ck_pat("READ source after the READ", t, n, seed_of(k, 2));
		ck_guards("READ source", t, reg);
		// Tagged from the connector: the receive is posted first.
		unsigned char *r = guarded(reg, 0xCD);
		uint64_t rid;
		CK_OK(tw_mem_register(e, r, reg, TW_MEM_HOST, 0, &rid));
		tw_xfer *x = xfer_post(e, p, K_RECV, rid, 0, 0, 0, n, 100 + k);
		put_str(out, "recv posted");
		CK_OK(xfer_finish(x));
		ck_pat("tagged receive", r, n, seed_of(k, 3));
		ck_all("tagged receive past the length", r + n, reg - n, 0xCD);
		ck_guards("tagged receive", r, reg);
		// Tagged to the connector: the send is posted first.
		unsigned char *s = guarded(reg, 0xCD);
		pat_fill(s, n, seed_of(k, 4));
		uint64_t sid;
		CK_OK(tw_mem_register(e, s, reg, TW_MEM_HOST, 0, &sid));
		x = xfer_post(e, p, K_SEND, sid, 0, 0, 0, n, 200 + k);
		put_str(out, "send posted");
		CK_OK(xfer_finish(x));
		expect(in, "next");
		CK_OK(tw_mem_deregister(e, tid));
		CK_OK(tw_mem_deregister(e, rid));
		CK_OK(tw_mem_deregister(e, sid));
		ck_guards("WRITE target at the end", t, reg);
		unguard(t);
		unguard(r);
		unguard(s);
	}
	// Here: the WRITEs and tagged sends received, the READs and tagged
	// sends sent; this side ran the receives and sends (2 per size).
	tw_xfer_stats st;
	CK_OK(tw_engine_stats(e, p, &st));
	// Received: at least the good WRITEs and the tagged receives; the
	// chunks of the rejected WRITEs that lay inside the registration
	// may count too (the target applied them).
	if (st.bytes_recv < 2 * sum || st.bytes_sent != 2 * sum
	    || st.xfers_done != 2 * a->nsizes || st.xfers_failed != 0)
		die("acceptor stats: done %" PRIu64 " failed %" PRIu64
		    " sent %" PRIu64 " recv %" PRIu64 "; want %zu, 0, %" PRIu64
		    ", at least %" PRIu64,
		    st.xfers_done, st.xfers_failed, st.bytes_sent,
		    st.bytes_recv, 2 * a->nsizes, 2 * sum, 2 * sum);
	put_str(out, "bye");
	expect(in, "bye");
	tw_engine_free(e);
}

static void exact_connector(void *v)
{
	exact_arg *a = v;
	int out = a->b2a[1], in = a->a2b[0];
	tw_engine *e = eng_new("con", &a->c);
	tw_peer p = eng_connect_from(e, in, "acc");
	uint64_t sum = 0;
	size_t failed = 0;
	for (size_t k = 0; k < a->nsizes; k++) {
		size_t n = a->sizes[k], reg = n ? n : 1;
		sum += n;
		uint64_t rt = unpack_from(e, p, in);
		// The source is one byte longer than the target: a WRITE of
		// n + 1 bytes, or of n bytes at offset 1, passes the check
		// here and must fail there, leaving the guards alone (the
		// acceptor checks them after the good WRITE).
		unsigned char *src = malloc(reg + 1);
		CK(src != NULL);
		pat_fill(src, reg + 1, seed_of(k, 1));
		uint64_t sid;
		CK_OK(tw_mem_register(e, src, reg + 1, TW_MEM_HOST, 0, &sid));
		tw_xfer *x
		    = xfer_post(e, p, K_WRITE, sid, 0, rt, 0, reg + 1, 0);
		CK_IS(xfer_finish(x), TW_EINVAL);
		x = xfer_post(e, p, K_WRITE, sid, 0, rt, 1, reg, 0);
		CK_IS(xfer_finish(x), TW_EINVAL);
		failed += 2;
		x = xfer_post(e, p, K_WRITE, sid, 0, rt, 0, n, 0);
		CK_OK(xfer_finish(x));
		put_str(out, "written");
		expect(in, "readable");
		unsigned char *d = guarded(reg, 0xCD);
		uint64_t did;
		CK_OK(tw_mem_register(e, d, reg, TW_MEM_HOST, 0, &did));
		x = xfer_post(e, p, K_READ, did, 0, rt, 0, n, 0);
		CK_OK(xfer_finish(x));
		ck_pat("READ", d, n, seed_of(k, 2));
		ck_all("READ past the length", d + n, reg - n, 0xCD);
		ck_guards("READ", d, reg);
		put_str(out, "read");
		expect(in, "recv posted");
		unsigned char *s = guarded(reg, 0xCD);
		pat_fill(s, n, seed_of(k, 3));
		uint64_t ssid;
		CK_OK(tw_mem_register(e, s, reg, TW_MEM_HOST, 0, &ssid));
		x = xfer_post(e, p, K_SEND, ssid, 0, 0, 0, n, 100 + k);
		CK_OK(xfer_finish(x));
		expect(in, "send posted");
		unsigned char *r = guarded(reg, 0xCD);
		uint64_t rid;
		CK_OK(tw_mem_register(e, r, reg, TW_MEM_HOST, 0, &rid));
		x = xfer_post(e, p, K_RECV, rid, 0, 0, 0, n, 200 + k);
		CK_OK(xfer_finish(x));
		ck_pat("tagged receive", r, n, seed_of(k, 4));
		ck_all("tagged receive past the length", r + n, reg - n, 0xCD);
		ck_guards("tagged receive", r, reg);
		put_str(out, "next");
		CK_OK(tw_mem_deregister(e, sid));
		CK_OK(tw_mem_deregister(e, did));
		CK_OK(tw_mem_deregister(e, ssid));
		CK_OK(tw_mem_deregister(e, rid));
		free(src);
		unguard(d);
		unguard(s);
		unguard(r);
	}
	expect(in, "bye");
	tw_xfer_stats st;
	CK_OK(tw_engine_stats(e, p, &st));
	if (st.bytes_sent != 2 * sum || st.bytes_recv != 2 * sum
	    || st.xfers_done != 4 * a->nsizes || st.xfers_failed != failed)
		die("connector stats: done %" PRIu64 " failed %" PRIu64
		    " sent %" PRIu64 " recv %" PRIu64
		    "; want %zu, %zu, %" PRIu64 ", %" PRIu64,
		    st.xfers_done, st.xfers_failed, st.bytes_sent,
		    st.bytes_recv, 4 * a->nsizes, failed, 2 * sum, 2 * sum);
	put_str(out, "bye");
	tw_engine_free(e);
}

static void exact_run(int64_t stripes, int64_t window, int64_t chunk,
    const size_t *sizes, size_t nsizes)
{
	exact_arg a
	    = { .c = { .stripes = stripes, .window = window, .chunk = chunk },
		      .sizes = sizes,
		      .nsizes = nsizes };
	chan(a.a2b);
	chan(a.b2a);
	int ka[] = { a.a2b[1], a.b2a[0] }, kb[] = { a.b2a[1], a.a2b[0] };
	int64_t t0 = now_ms();
	spawn("acceptor", exact_acceptor, &a, ka, 2);
	spawn("connector", exact_connector, &a, kb, 2);
	close_but(NULL, 0);
	wait_kids(scale(60000));
	printf("stripes %lld window %lld chunk %lld: %zu size(s) in %lld ms\n",
	    (long long)stripes, (long long)window, (long long)chunk, nsizes,
	    (long long)(now_ms() - t0));
}

static void exact(int64_t stripes, int64_t window)
{
	static const size_t small_set[] = { 0, 1, 4 * KiB + 1 };
	static const size_t big_set[] = { 16 * MiB };
	block_sigchld();
	exact_run(stripes, window, 4 * KiB, small_set, 3);
	exact_run(stripes, window, 0, big_set, 1);
}

static void test_exact_s1_w1(void **state)
{
	(void)state;
	exact(1, 1);
}

static void test_exact_s1_w16(void **state)
{
	(void)state;
	exact(1, 16);
}

static void test_exact_s4_w1(void **state)
{
	(void)state;
	exact(4, 1);
}

static void test_exact_s4_w16(void **state)
{
	(void)state;
	exact(4, 16);
}

// --- sigkill: a peer killed during a long transfer ---------------------------------

// Both scale with the timeout multiplier: a sanitizer build on two busy
// CPUs can leave a live peer silent for three unscaled heartbeats, and the
// survivor then loses the connection before the kill.
#define HEARTBEAT_MS 100
#define DETECT_MS 2000

typedef struct kill_arg {
	bool kill_acceptor;
	size_t region;
	int info[2]; // acceptor -> connector
	int desc[2]; // victim -> survivor
	int s2p[2]; // survivor -> parent: "going", then its fail time
	int p2s[2]; // parent -> survivor: the kill time
} kill_arg;

// The victim: registers a region the survivor WRITEs and READs, and
// waits to be killed.
static void kill_victim(tw_engine *e, tw_peer p, kill_arg *a)
{
	(void)p;
	unsigned char *t = malloc(a->region);
	CK(t != NULL);
	memset(t, 0x11, a->region);
	uint64_t id;
	CK_OK(tw_mem_register(e, t, a->region, TW_MEM_HOST,
	    TW_ACCESS_READ | TW_ACCESS_WRITE, &id));
	pack_tell(e, id, a->desc[1]);
	// Killed while reading: the survivor never writes here.
	char c;
	while (read(a->s2p[0], &c, 1) != 0) // never: a pipe nobody writes
		;
	die("not killed");
}

static void kill_survivor(tw_engine *e, tw_peer p, kill_arg *a)
{
	uint64_t rid = unpack_from(e, p, a->desc[0]);
	unsigned char *s = malloc(a->region);
	CK(s != NULL);
	pat_fill(s, a->region, 7);
	unsigned char *d = malloc(a->region);
	CK(d != NULL);
	uint64_t sid, did;
	CK_OK(tw_mem_register(e, s, a->region, TW_MEM_HOST, 0, &sid));
	CK_OK(tw_mem_register(e, d, a->region, TW_MEM_HOST, 0, &did));
	// GiBs: WRITEs of the region's first half and READs of its
	// second (never the same bytes at once), no deadline.
	tw_xfer *big, *send, *recv;
	CK_OK(tw_xfer_create(e, p, -1, &big));
	size_t half = a->region / 2;
	// Far more than moves before the kill, yet quick to post and fail.
	size_t posts = 1024;
	for (size_t i = 0; i < posts; i++) {
		if (i % 2 == 0)
			CK_OK(tw_xfer_post_write(big, sid, 0, rid, 0, half));
		else
			CK_OK(tw_xfer_post_read(big, did, 0, rid, half, half));
	}
	// A send and a receive that the victim never matches.
	CK_OK(tw_xfer_create(e, p, -1, &send));
	CK_OK(tw_xfer_post_send(send, sid, 0, 4096, 77));
	CK_OK(tw_xfer_create(e, p, -1, &recv));
	CK_OK(tw_xfer_post_recv(recv, did, 0, 4096, 78));
	// A small WRITE of its own shows that the path is live.
	tw_xfer *probe = xfer_post(e, p, K_WRITE, sid, 0, rid, 0, 4096, 0);
	CK_OK(xfer_finish(probe));
	CK_IS(tw_xfer_test(big), 0);
	CK_IS(tw_xfer_test(send), 0);
	CK_IS(tw_xfer_test(recv), 0);
	put_str(a->s2p[1], "going");
	int rv = tw_xfer_wait(big, scale(20000));
	int64_t t_big = now_ms();
	int rs = tw_xfer_wait(send, scale(20000));
	int64_t t_send = now_ms();
	int rr = tw_xfer_wait(recv, scale(20000));
	int64_t t_recv = now_ms();
	char *k = get(a->p2s[0], NULL, 30000);
	int64_t t_kill = strtoll(k, NULL, 10);
	free(k);
	printf("%s: TW_EPEER after %lld ms (big transfer), %lld ms (send), "
	       "%lld ms (receive)\n",
	    who, (long long)(t_big - t_kill), (long long)(t_send - t_kill),
	    (long long)(t_recv - t_kill));
	fflush(stdout);
	if (rv != TW_EPEER || rs != TW_EPEER || rr != TW_EPEER)
		die("after the kill: big transfer %s, send %s, receive %s; "
		    "want TW_EPEER for each",
		    tw_err_name(rv), tw_err_name(rs), tw_err_name(rr));
	int64_t bound = scale(DETECT_MS);
	if (t_big - t_kill > bound || t_send - t_kill > bound
	    || t_recv - t_kill > bound)
		die("TW_EPEER came later than %lld ms after the kill",
		    (long long)bound);
	CK_IS(tw_xfer_test(big), TW_EPEER);
	CK_IS(tw_engine_notify(e, p, "x", 1), TW_EPEER);
	tw_xfer_free(big);
	tw_xfer_free(send);
	tw_xfer_free(recv);
	tw_xfer_stats st;
	CK_OK(tw_engine_stats(e, p, &st));
	CK(st.xfers_failed >= 3);
	int64_t t0 = now_ms();
	tw_engine_free(e);
	int64_t freed = now_ms() - t0;
	if (freed > scale(5000))
		die("tw_engine_free took %lld ms", (long long)freed);
	free(s);
	free(d);
}

static void kill_acceptor_role(void *v)
{
	kill_arg *a = v;
	cfg c = { .heartbeat = scale(HEARTBEAT_MS), .stripes = 2 };
	tw_engine *e = eng_new("acc", &c);
	eng_listen_tell(e, "tcp://127.0.0.1:0", &a->info[1], 1);
	tw_peer p = eng_accept(e, "con");
	if (a->kill_acceptor)
		kill_victim(e, p, a);
	else
		kill_survivor(e, p, a);
}

static void kill_connector_role(void *v)
{
	kill_arg *a = v;
	cfg c = { .heartbeat = scale(HEARTBEAT_MS), .stripes = 2 };
	tw_engine *e = eng_new("con", &c);
	tw_peer p = eng_connect_from(e, a->info[0], "acc");
	if (a->kill_acceptor)
		kill_survivor(e, p, a);
	else
		kill_victim(e, p, a);
}

static void sigkill_run(bool kill_acceptor)
{
	block_sigchld();
	kill_arg a = { .kill_acceptor = kill_acceptor,
		.region = small() ? 16 * MiB : 64 * MiB };
	chan(a.info);
	chan(a.desc);
	chan(a.s2p);
	chan(a.p2s);
	// The victim blocks reading s2p[0], which the survivor's "going"
	// line goes to the parent on... so it gets its own never-written
	// end: a pipe whose write end only the parent holds.
	int idle[2];
	chan(idle);
	int vic_keep[] = { 0, 0, 0 }, sur_keep[] = { 0, 0, 0, 0 };
	kill_arg va = a, sa = a;
	va.s2p[0] = idle[0];
	vic_keep[0] = kill_acceptor ? a.info[1] : a.info[0];
	vic_keep[1] = a.desc[1];
	vic_keep[2] = idle[0];
	sur_keep[0] = kill_acceptor ? a.info[0] : a.info[1];
	sur_keep[1] = a.desc[0];
	sur_keep[2] = a.s2p[1];
	sur_keep[3] = a.p2s[0];
	pid_t victim;
	if (kill_acceptor) {
		victim = spawn(
		    "acceptor (victim)", kill_acceptor_role, &va, vic_keep, 3);
		spawn("connector (survivor)", kill_connector_role, &sa,
		    sur_keep, 4);
	} else {
		spawn("acceptor (survivor)", kill_acceptor_role, &sa, sur_keep,
		    4);
		victim = spawn("connector (victim)", kill_connector_role, &va,
		    vic_keep, 3);
	}
	int mine[] = { a.s2p[0], a.p2s[1], idle[1] };
	close_but(mine, 3);
	uint32_t len;
	char line[16];
	int rc = get_raw(a.s2p[0], &len, sizeof(len), now_ms() + scale(30000));
	if (rc == 0 && len < sizeof(line))
		rc = get_raw(a.s2p[0], line, len, now_ms() + scale(1000));
	if (rc != 0 || len != 5 || memcmp(line, "going", 5) != 0) {
		wait_kids(scale(1000));
		fail_msg("the survivor never said it was going");
	}
	assert_int_equal(kill(victim, SIGKILL), 0);
	int st;
	while (waitpid(victim, &st, 0) < 0 && errno == EINTR)
		;
	int64_t t_kill = now_ms();
	for (size_t i = 0; i < nkids; i++)
		if (kids[i] == victim)
			kids[i] = 0;
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	char msg[32];
	snprintf(msg, sizeof(msg), "%lld", (long long)t_kill);
	assert_int_equal(put_raw(a.p2s[1], &(uint32_t) { strlen(msg) }, 4), 0);
	assert_int_equal(put_raw(a.p2s[1], msg, strlen(msg)), 0);
	wait_kids(scale(30000));
}

static void test_sigkill_acceptor(void **state)
{
	(void)state;
	sigkill_run(true);
}

static void test_sigkill_connector(void **state)
{
	(void)state;
	sigkill_run(false);
}

// --- fanin: one acceptor, several connector processes ------------------------------

#define FAN_MAX 4
#define FAN_GAP 4096

typedef struct fan_arg {
	size_t nconn;
	size_t region;
	char listen[64];
	const char *netns[FAN_MAX + 1]; // acceptor, connectors; or NULL
	int info[FAN_MAX][2]; // acceptor -> connector i: info, desc
	int done[FAN_MAX][2]; // connector i -> acceptor: "done"
	size_t me; // the connector's index
	int64_t stripes;
} fan_arg;

static size_t fan_off(const fan_arg *a, size_t i)
{
	return FAN_GAP + i * (a->region + FAN_GAP);
}

static size_t fan_total(const fan_arg *a)
{
	return fan_off(a, a->nconn);
}

static void enter_netns(const char *name)
{
	if (name == NULL)
		return;
	char path[256];
	snprintf(path, sizeof(path), "/run/netns/%s", name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		die("open %s: %s", path, strerror(errno));
	if (setns(fd, CLONE_NEWNET) != 0)
		die("setns %s: %s", path, strerror(errno));
	close(fd);
}

static void fan_acceptor(void *v)
{
	fan_arg *a = v;
	enter_netns(a->netns[0]);
	cfg c = { .stripes = a->stripes };
	tw_engine *e = eng_new("acc", &c);
	int outs[FAN_MAX];
	for (size_t i = 0; i < a->nconn; i++)
		outs[i] = a->info[i][1];
	eng_listen_tell(e, a->listen, outs, a->nconn);
	size_t total = fan_total(a);
	unsigned char *t = guarded(total, 0xCD);
	uint64_t id;
	CK_OK(tw_mem_register(
	    e, t, total, TW_MEM_HOST, TW_ACCESS_READ | TW_ACCESS_WRITE, &id));
	for (size_t i = 0; i < a->nconn; i++)
		pack_tell(e, id, outs[i]);
	tw_peer peers[FAN_MAX];
	for (size_t i = 0; i < a->nconn; i++) {
		char name[32];
		snprintf(name, sizeof(name), "c%zu", i);
		peers[i] = eng_accept(e, name);
		for (size_t k = 0; k < i; k++)
			CK(peers[k] != peers[i]);
	}
	bool seen[FAN_MAX] = { false };
	for (size_t got = 0; got < a->nconn; got++) {
		tw_peer from;
		tw_buf m = { 0 };
		CK_OK(tw_notify_recv(e, &from, &m, scale(30000)));
		size_t i = 0;
		while (i < a->nconn && peers[i] != from)
			i++;
		CK(i < a->nconn);
		CK(!seen[i]);
		seen[i] = true;
		char want[40];
		snprintf(want, sizeof(want), "c%zu wrote", i);
		CK(m.len == strlen(want) && memcmp(m.data, want, m.len) == 0);
		tw_buf_free(&m);
		// The notification comes after its transfer's data.
		char what[32];
		snprintf(what, sizeof(what), "region of c%zu", i);
		ck_pat(what, t + fan_off(a, i), a->region, (uint32_t)(i + 1));
	}
	for (size_t i = 0; i <= a->nconn; i++) {
		char what[32];
		snprintf(what, sizeof(what), "gap %zu", i);
		size_t start = i == 0 ? 0 : fan_off(a, i - 1) + a->region;
		ck_all(what, t + start, FAN_GAP, 0xCD);
	}
	ck_guards("fan-in target", t, total);
	for (size_t i = 0; i < a->nconn; i++) {
		tw_xfer_stats st;
		CK_OK(tw_engine_stats(e, peers[i], &st));
		if (st.bytes_recv != a->region)
			die("stats of c%zu: %" PRIu64 " bytes received, want "
			    "%zu",
			    i, st.bytes_recv, a->region);
		CK_OK(tw_engine_notify(e, peers[i], "bye", 3));
	}
	// Every connector has what it needs before this engine goes.
	for (size_t i = 0; i < a->nconn; i++)
		expect(a->done[i][0], "done");
	CK_OK(tw_mem_deregister(e, id));
	ck_guards("fan-in target at the end", t, total);
	tw_engine_free(e);
	unguard(t);
}

static void fan_connector(void *v)
{
	fan_arg *a = v;
	enter_netns(a->netns[a->me + 1]);
	cfg c = { .stripes = a->stripes, .window = 8, .chunk = 256 * KiB };
	char name[32];
	snprintf(name, sizeof(name), "c%zu", a->me);
	tw_engine *e = eng_new(name, &c);
	int in = a->info[a->me][0];
	tw_peer p = eng_connect_from(e, in, "acc");
	uint64_t rid = unpack_from(e, p, in);
	unsigned char *s = malloc(a->region), *back = guarded(a->region, 0);
	CK(s != NULL);
	pat_fill(s, a->region, (uint32_t)(a->me + 1));
	uint64_t sid, bid;
	CK_OK(tw_mem_register(e, s, a->region, TW_MEM_HOST, 0, &sid));
	CK_OK(tw_mem_register(e, back, a->region, TW_MEM_HOST, 0, &bid));
	size_t off = fan_off(a, a->me);
	tw_xfer *x = xfer_post(e, p, K_WRITE, sid, 0, rid, off, a->region, 0);
	char note[16];
	snprintf(note, sizeof(note), "c%zu wrote", a->me);
	CK_OK(tw_xfer_notify(x, note, strlen(note)));
	CK_OK(xfer_finish(x));
	x = xfer_post(e, p, K_READ, bid, 0, rid, off, a->region, 0);
	CK_OK(xfer_finish(x));
	ck_pat("read back", back, a->region, (uint32_t)(a->me + 1));
	ck_guards("read back", back, a->region);
	tw_peer from;
	tw_buf m = { 0 };
	CK_OK(tw_notify_recv(e, &from, &m, scale(30000)));
	CK(from == p && m.len == 3 && memcmp(m.data, "bye", 3) == 0);
	tw_buf_free(&m);
	put_str(a->done[a->me][1], "done");
	CK_OK(tw_mem_deregister(e, sid));
	CK_OK(tw_mem_deregister(e, bid));
	tw_engine_free(e);
	free(s);
	unguard(back);
}

static void fan_run(fan_arg *a)
{
	block_sigchld();
	for (size_t i = 0; i < a->nconn; i++) {
		chan(a->info[i]);
		chan(a->done[i]);
	}
	int keep[2 * FAN_MAX];
	for (size_t i = 0; i < a->nconn; i++) {
		keep[2 * i] = a->info[i][1];
		keep[2 * i + 1] = a->done[i][0];
	}
	int64_t t0 = now_ms();
	spawn("acceptor", fan_acceptor, a, keep, 2 * a->nconn);
	static char names[FAN_MAX][40];
	static fan_arg args[FAN_MAX];
	for (size_t i = 0; i < a->nconn; i++) {
		args[i] = *a;
		args[i].me = i;
		snprintf(names[i], sizeof(names[i]), "connector %zu", i);
		int kc[] = { a->info[i][0], a->done[i][1] };
		spawn(names[i], fan_connector, &args[i], kc, 2);
	}
	close_but(NULL, 0);
	wait_kids(scale(60000));
	printf("%zu connectors x %zu MiB in %lld ms\n", a->nconn,
	    a->region / MiB, (long long)(now_ms() - t0));
}

static void test_fanin(void **state)
{
	(void)state;
	fan_arg a = { .nconn = 4,
		.region = small() ? 4 * MiB : 32 * MiB,
		.stripes = 2,
		.listen = "tcp://127.0.0.1:0" };
	fan_run(&a);
}

// --- shared_port: a link and an engine on one tcp:// address ------------------------

#define SHARED_BULK (1 * MiB)
#define SHARED_REGION (8 * MiB)

typedef struct shared_arg {
	bool engine_first;
	unsigned ports[2];
	int info[2]; // party 0 -> party 1: info, desc
	int back[2]; // party 1 -> party 0: desc
	size_t rank;
} shared_arg;

static void listen_count(const char *when, unsigned port)
{
	pc_snap s;
	CK(pc_snap_self(&s) == 0);
	CK(!s.truncated);
	size_t n = pc_count_state(&s, PC_TCP_LISTEN);
	unsigned lport = 0;
	for (size_t i = 0; i < s.n; i++)
		if (s.s[i].state == PC_TCP_LISTEN)
			lport = s.s[i].lport;
	printf("%s: %s: %zu listening socket(s) (port %u), %zu "
	       "established\n",
	    who, when, n, lport, pc_count_state(&s, PC_TCP_ESTABLISHED));
	fflush(stdout);
	if (n != 1 || lport != port)
		die("%s: %zu listening sockets (last on port %u); want 1, on "
		    "port %u",
		    when, n, lport, port);
}

static void shared_party(void *v)
{
	shared_arg *a = v;
	size_t me = a->rank, other = 1 - me;
	char addr[2][64];
	for (size_t i = 0; i < 2; i++)
		snprintf(addr[i], sizeof(addr[i]), "tcp://127.0.0.1:%u",
		    a->ports[i]);
	tw_desc *d = tw_desc_new("engine.shared");
	CK(d != NULL);
	CK_OK(tw_desc_add_party(d, "p0", addr[0]));
	CK_OK(tw_desc_add_party(d, "p1", addr[1]));
	CK_OK(tw_desc_set(d, TW_OPT_CONNECT_TIMEOUT_MS, scale(15000)));
	CK_OK(tw_desc_set(d, TW_OPT_RECV_TIMEOUT_MS, scale(15000)));
	cfg c = { .stripes = 2 };
	tw_engine *e = eng_new(me == 0 ? "e0" : "e1", &c);
	tw_link *l = NULL;
	if (a->engine_first)
		CK_OK(tw_engine_listen(e, addr[me]));
	CK_OK(tw_link_create(d, me, &l));
	if (!a->engine_first)
		CK_OK(tw_engine_listen(e, addr[me]));
	listen_count("link and engine up", a->ports[me]);
	// Messages over the link.
	unsigned char *m = malloc(SHARED_BULK);
	CK(m != NULL);
	pat_fill(m, SHARED_BULK, (uint32_t)(50 + me));
	CK_OK(tw_send(l, other, "bulk", m, SHARED_BULK));
	tw_buf got = { 0 };
	CK_OK(tw_recv(l, other, "bulk", &got));
	CK(got.len == SHARED_BULK);
	ck_pat("link message", got.data, got.len, (uint32_t)(50 + other));
	tw_buf_free(&got);
	free(m);
	// The engines: 0 accepts, 1 connects; each WRITEs into the other.
	unsigned char *t = guarded(SHARED_REGION, 0xCD);
	unsigned char *s = malloc(SHARED_REGION);
	CK(s != NULL);
	uint64_t tid, sid;
	CK_OK(tw_mem_register(
	    e, t, SHARED_REGION, TW_MEM_HOST, TW_ACCESS_WRITE, &tid));
	CK_OK(tw_mem_register(e, s, SHARED_REGION, TW_MEM_HOST, 0, &sid));
	tw_peer p;
	uint64_t rid;
	if (me == 0) {
		tw_buf info = { 0 };
		CK_OK(tw_engine_info(e, &info));
		put(a->info[1], info.data, info.len);
		tw_buf_free(&info);
		pack_tell(e, tid, a->info[1]);
		p = eng_accept(e, "e1");
		rid = unpack_from(e, p, a->back[0]);
	} else {
		p = eng_connect_from(e, a->info[0], "e0");
		rid = unpack_from(e, p, a->info[0]);
		pack_tell(e, tid, a->back[1]);
	}
	for (int round = 0; round < 2; round++) {
		uint32_t mine = (uint32_t)(60 + 10 * round + me);
		uint32_t theirs = (uint32_t)(60 + 10 * round + other);
		pat_fill(s, SHARED_REGION, mine);
		tw_xfer *x = xfer_post(
		    e, p, K_WRITE, sid, 0, rid, 0, SHARED_REGION, 0);
		CK_OK(tw_xfer_notify(x, "w", 1));
		CK_OK(xfer_finish(x));
		tw_peer from;
		tw_buf n = { 0 };
		CK_OK(tw_notify_recv(e, &from, &n, scale(30000)));
		CK(from == p && n.len == 1);
		tw_buf_free(&n);
		ck_pat("engine WRITE", t, SHARED_REGION, theirs);
		ck_guards("engine WRITE", t, SHARED_REGION);
		if (round == 0) {
			CK_OK(tw_barrier(l, "counted"));
			listen_count(
			    "after link and engine traffic", a->ports[me]);
			// Nobody closes before both have counted.
			CK_OK(tw_barrier(l, "closing"));
			int rv = tw_link_close(l);
			CK(rv == TW_OK || rv == TW_EPEER);
			l = NULL;
			listen_count("link closed, engine up", a->ports[me]);
		}
	}
	// Both checked round 2's WRITE before either engine goes.
	if (me == 1) {
		put_str(a->back[1], "end");
		expect(a->info[0], "end");
	} else {
		expect(a->back[0], "end");
		put_str(a->info[1], "end");
	}
	CK_OK(tw_mem_deregister(e, tid));
	CK_OK(tw_mem_deregister(e, sid));
	tw_engine_free(e);
	tw_desc_free(d);
	unguard(t);
	free(s);
}

static void shared_run(bool engine_first)
{
	block_sigchld();
	shared_arg a = { .engine_first = engine_first };
	do {
		a.ports[0] = tw_test_free_port();
		a.ports[1] = tw_test_free_port();
	} while (a.ports[0] == a.ports[1]);
	assert_true(a.ports[0] != 0 && a.ports[1] != 0);
	chan(a.info);
	chan(a.back);
	shared_arg a0 = a, a1 = a;
	a0.rank = 0;
	a1.rank = 1;
	int k0[] = { a.info[1], a.back[0] }, k1[] = { a.info[0], a.back[1] };
	spawn("party 0", shared_party, &a0, k0, 2);
	spawn("party 1", shared_party, &a1, k1, 2);
	close_but(NULL, 0);
	wait_kids(scale(60000));
}

static void test_shared_port_engine_first(void **state)
{
	(void)state;
	shared_run(true);
}

static void test_shared_port_link_first(void **state)
{
	(void)state;
	shared_run(false);
}

// --- sskill: connections killed during a stream -------------------------------------

#define SK_SLOTS 4
#define SK_KILL_MS 100
#define SK_MIN_KILLS 3
#define SK_STOP_KILLS 5 // the first may come before the stream began
#define SK_MIN_COUNT (2 * SK_SLOTS)
#define SK_MAX_COUNT 4096 // a bound, should the kills never come

typedef struct sk_arg {
	size_t len; // bytes of each post
	// stop: the parent tells the connector that enough kills hit, and
	// the stream ends; the connector then tells the acceptor how many
	// transfers there were ("end N", a notification of its own).
	int info[2], desc[2], end[2], stop[2];
} sk_arg;

static uint32_t sk_seed(size_t k, int what)
{
	return (uint32_t)(k * 2 + (size_t)what + 1);
}

// The target: SK_SLOTS slots that WRITEs land in and SK_SLOTS receive
// buffers; transfer k uses slot k % SK_SLOTS.  Once transfer k's
// notification came, its slot is checked, its receive waited for and
// checked, the receive of transfer k + SK_SLOTS posted, and "k" sent
// back, so that the sender may reuse the slot.  The stream ends with the
// count that "end N" gives; the receives posted beyond it are cancelled.
static void sk_acceptor(void *v)
{
	sk_arg *a = v;
	cfg c = { .stripes = 2, .window = 4, .chunk = 256 * KiB };
	tw_engine *e = eng_new("acc", &c);
	eng_listen_tell(e, "tcp://127.0.0.1:0", &a->info[1], 1);
	size_t tot = SK_SLOTS * a->len;
	unsigned char *w = guarded(tot, 0xCD), *r = guarded(tot, 0xCD);
	uint64_t wid, rid;
	CK_OK(tw_mem_register(e, w, tot, TW_MEM_HOST, TW_ACCESS_WRITE, &wid));
	CK_OK(tw_mem_register(e, r, tot, TW_MEM_HOST, 0, &rid));
	pack_tell(e, wid, a->desc[1]);
	tw_peer p = eng_accept(e, "con");
	tw_xfer *recv[SK_SLOTS];
	for (size_t k = 0; k < SK_SLOTS; k++)
		recv[k] = xfer_post(
		    e, p, K_RECV, rid, k * a->len, 0, 0, a->len, k);
	size_t done = 0, count = SK_MAX_COUNT;
	bool *seen = calloc(SK_MAX_COUNT, 1);
	CK(seen != NULL);
	while (done < count) {
		tw_peer from;
		tw_buf m = { 0 };
		CK_OK(tw_notify_recv(e, &from, &m, scale(30000)));
		CK(from == p && m.len > 0 && m.len < 24);
		char num[24];
		memcpy(num, m.data, m.len);
		num[m.len] = '\0';
		tw_buf_free(&m);
		if (strncmp(num, "end ", 4) == 0) {
			count = strtoull(num + 4, NULL, 10);
			CK(count >= SK_MIN_COUNT && count <= SK_MAX_COUNT
			    && count >= done);
			continue;
		}
		size_t k = strtoull(num, NULL, 10);
		CK(k < count && !seen[k]);
		seen[k] = true;
		size_t slot = k % SK_SLOTS;
		char what[48];
		snprintf(what, sizeof(what), "WRITE %zu", k);
		ck_pat(what, w + slot * a->len, a->len, sk_seed(k, 0));
		int rv = tw_xfer_wait(recv[slot], scale(30000));
		if (rv != TW_OK)
			die("receive %zu: %s", k, tw_err_name(rv));
		tw_xfer_free(recv[slot]);
		snprintf(what, sizeof(what), "tagged send %zu", k);
		ck_pat(what, r + slot * a->len, a->len, sk_seed(k, 1));
		recv[slot] = k + SK_SLOTS < SK_MAX_COUNT
		    ? xfer_post(e, p, K_RECV, rid, slot * a->len, 0, 0, a->len,
		        k + SK_SLOTS)
		    : NULL;
		CK_OK(tw_engine_notify(e, p, num, strlen(num)));
		done++;
	}
	ck_guards("WRITE slots", w, tot);
	ck_guards("receive slots", r, tot);
	tw_xfer_stats st;
	CK_OK(tw_engine_stats(e, p, &st));
	CK(st.xfers_failed == 0);
	for (size_t i = 0; i < SK_SLOTS; i++)
		tw_xfer_free(recv[i]); // of transfers beyond the end
	printf("%s: %zu transfers checked\n", who, count);
	expect(a->end[0], "end"); // the connector has every ack
	tw_engine_free(e);
	unguard(w);
	unguard(r);
	free(seen);
}

static void sk_connector(void *v)
{
	sk_arg *a = v;
	cfg c = { .stripes = 2, .window = 4, .chunk = 256 * KiB };
	tw_engine *e = eng_new("con", &c);
	tw_peer p = eng_connect_from(e, a->info[0], "acc");
	uint64_t rw = unpack_from(e, p, a->desc[0]);
	size_t tot = SK_SLOTS * 2 * a->len;
	unsigned char *s = malloc(tot);
	CK(s != NULL);
	uint64_t sid;
	CK_OK(tw_mem_register(e, s, tot, TW_MEM_HOST, 0, &sid));
	tw_xfer *x[SK_SLOTS] = { NULL };
	size_t acked = 0; // "k" lines back, in any order: count them
	bool *ack = calloc(SK_MAX_COUNT, 1);
	CK(ack != NULL);
	int64_t t0 = now_ms();
	size_t count = 0;
	for (size_t k = 0; k < SK_MAX_COUNT; k++, count++) {
		struct pollfd stop = { .fd = a->stop[0], .events = POLLIN };
		if (k >= SK_MIN_COUNT && poll(&stop, 1, 0) > 0)
			break;
		size_t slot = k % SK_SLOTS;
		if (k >= SK_SLOTS) {
			// The slot is free once its previous transfer is
			// done here and was checked there.
			CK_OK(tw_xfer_wait(x[slot], scale(30000)));
			tw_xfer_free(x[slot]);
			while (!ack[k - SK_SLOTS]) {
				tw_peer from;
				tw_buf m = { 0 };
				CK_OK(tw_notify_recv(
				    e, &from, &m, scale(30000)));
				char num[24];
				CK(m.len > 0 && m.len < sizeof(num));
				memcpy(num, m.data, m.len);
				num[m.len] = '\0';
				tw_buf_free(&m);
				size_t j = strtoull(num, NULL, 10);
				CK(j < count && !ack[j]);
				ack[j] = true;
				acked++;
			}
		}
		unsigned char *ws = s + slot * 2 * a->len, *ts = ws + a->len;
		pat_fill(ws, a->len, sk_seed(k, 0));
		pat_fill(ts, a->len, sk_seed(k, 1));
		CK_OK(tw_xfer_create(e, p, scale(60000), &x[slot]));
		CK_OK(tw_xfer_post_write(x[slot], sid, slot * 2 * a->len, rw,
		    slot * a->len, a->len));
		CK_OK(tw_xfer_post_send(
		    x[slot], sid, slot * 2 * a->len + a->len, a->len, k));
		char num[24];
		snprintf(num, sizeof(num), "%zu", k);
		CK_OK(tw_xfer_notify(x[slot], num, strlen(num)));
	}
	char end[32];
	snprintf(end, sizeof(end), "end %zu", count);
	CK_OK(tw_engine_notify(e, p, end, strlen(end)));
	for (size_t k = 0; k < SK_SLOTS; k++) {
		int rv = tw_xfer_wait(x[k], scale(30000));
		if (rv != TW_OK)
			die("transfer of slot %zu: %s", k, tw_err_name(rv));
		tw_xfer_free(x[k]);
	}
	while (acked < count) {
		tw_peer from;
		tw_buf m = { 0 };
		CK_OK(tw_notify_recv(e, &from, &m, scale(30000)));
		tw_buf_free(&m);
		acked++;
	}
	int64_t ms = now_ms() - t0;
	tw_xfer_stats st;
	CK_OK(tw_engine_stats(e, p, &st));
	printf("%s: %zu transfers, %" PRIu64 " MiB sent in %lld ms, %" PRIu64
	       " done, %" PRIu64 " failed\n",
	    who, count, st.bytes_sent / MiB, (long long)ms, st.xfers_done,
	    st.xfers_failed);
	fflush(stdout);
	CK(st.xfers_failed == 0);
	CK(st.xfers_done == count);
	CK(st.bytes_sent == (uint64_t)count * 2 * a->len);
	put_str(a->end[1], "end");
	tw_engine_free(e);
	free(s);
	free(ack);
}

// Skips the program unless `ss -K` kills sockets here (as
// tests/tcpfault/reconnect.c probes it).
static void sk_probe(void)
{
	if (geteuid() != 0)
		TW_SKIP_ALL("needs root (CAP_NET_ADMIN) for `ss -K`");
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET,
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	assert_true(l >= 0);
	assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(l, 1), 0);
	assert_int_equal(getsockname(l, (struct sockaddr *)&sa, &len), 0);
	unsigned port = ntohs(sa.sin_port);
	int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(c >= 0);
	assert_int_equal(connect(c, (struct sockaddr *)&sa, sizeof(sa)), 0);
	int s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	assert_true(s >= 0);
	char why[700];
	int n = tw_test_ss_kill(
	    &port, 1, true, (int)scale(5000), why, sizeof(why));
	if (n < 0)
		TW_SKIP_ALL("`ss -K` cannot kill connections here: %s", why);
	struct pollfd p[2]
	    = { { .fd = c, .events = POLLIN }, { .fd = s, .events = POLLIN } };
	bool killed = poll(p, 2, (int)scale(2000)) > 0;
	close(c);
	close(s);
	close(l);
	if (!killed)
		TW_SKIP_ALL("`ss -K` left a loopback connection alive: the "
		            "kernel lacks CONFIG_INET_DIAG_DESTROY or this "
		            "process CAP_NET_ADMIN");
}

static unsigned port_of_info(const char *info, size_t n)
{
	// The info blob holds the address "tcp://127.0.0.1:PORT".
	const char *pre = "tcp://127.0.0.1:";
	size_t pl = strlen(pre);
	for (size_t i = 0; i + pl < n; i++)
		if (memcmp(info + i, pre, pl) == 0)
			return (unsigned)strtoul(info + i + pl, NULL, 10);
	return 0;
}

static void test_sskill(void **state)
{
	(void)state;
	sk_probe();
	block_sigchld();
	// The stream lasts until SK_STOP_KILLS kills SK_KILL_MS apart hit a
	// connection, however fast this machine moves it.
	sk_arg a = { .len = 4 * MiB };
	chan(a.info);
	chan(a.desc);
	chan(a.end);
	chan(a.stop);
	// The parent reads the acceptor's info (for its port) and passes it
	// on to the connector.
	int relay[2];
	chan(relay);
	sk_arg aa = a, ca = a;
	ca.info[0] = relay[0];
	int ka[] = { a.info[1], a.desc[1], a.end[0] },
	    kc[] = { relay[0], a.desc[0], a.end[1], a.stop[0] };
	spawn("acceptor", sk_acceptor, &aa, ka, 3);
	spawn("connector", sk_connector, &ca, kc, 4);
	int mine[] = { a.info[0], relay[1], a.stop[1] };
	close_but(mine, 3);
	uint32_t len;
	char info[1024];
	int64_t dl = now_ms() + scale(30000);
	assert_int_equal(get_raw(a.info[0], &len, 4, dl), 0);
	assert_true(len < sizeof(info));
	assert_int_equal(get_raw(a.info[0], info, len, dl), 0);
	unsigned port = port_of_info(info, len);
	assert_true(port != 0);
	assert_int_equal(put_raw(relay[1], &len, 4), 0);
	assert_int_equal(put_raw(relay[1], info, len), 0);
	// Kill every SK_KILL_MS until both children ended.
	int64_t t0 = now_ms(), deadline = t0 + scale(120000);
	int ticks = 0, hits = 0, socks = 0;
	bool ended = false;
	while (!ended && now_ms() < deadline) {
		char why[700];
		int n = tw_test_ss_kill(
		    &port, 1, true, (int)scale(5000), why, sizeof(why));
		if (n < 0)
			fail_msg("%s", why);
		ticks++;
		hits += n > 0;
		socks += n;
		if (hits == SK_STOP_KILLS && n > 0) {
			// The connector may have ended (SK_MAX_COUNT): then
			// the write fails with EPIPE, and the count says it.
			signal(SIGPIPE, SIG_IGN);
			(void)!write(a.stop[1], "s", 1);
		}
		// Paces the kills (not a synchronisation): SK_KILL_MS apart,
		// or less once a child ended (ss's own exits also wake it).
		int64_t tick_end = now_ms() + SK_KILL_MS;
		for (;;) {
			ended = true;
			for (size_t i = 0; i < nkids; i++) {
				if (kids[i] <= 0)
					continue;
				siginfo_t si = { 0 };
				if (waitid(P_PID, (id_t)kids[i], &si,
				        WEXITED | WNOHANG | WNOWAIT)
				        != 0
				    || si.si_pid == 0)
					ended = false;
			}
			int64_t rest = tick_end - now_ms();
			if (ended || rest <= 0)
				break;
			sigset_t s;
			sigemptyset(&s);
			sigaddset(&s, SIGCHLD);
			struct timespec ts = { 0, (long)rest * 1000000L };
			(void)sigtimedwait(&s, NULL, &ts);
		}
	}
	printf("%d ss -K runs in %lld ms, %d killed %d socket(s)\n", ticks,
	    (long long)(now_ms() - t0), hits, socks);
	wait_kids(scale(30000));
	if (hits < SK_MIN_KILLS)
		fail_msg("only %d kill(s) hit a connection while the stream "
		         "ran; want %d",
		    hits, SK_MIN_KILLS);
}

// --- netns: three hosts -----------------------------------------------------------------

static char ns_names[4][32];
static size_t ns_made;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	char full[600];
	snprintf(full, sizeof(full), "%s >/dev/null 2>&1", cmd);
	int rc = system(full);
	return rc == 0 ? 0 : -1;
}

static void ns_cleanup(void)
{
	kill_kids();
	for (size_t i = 0; i < ns_made; i++)
		if (sh("ip netns delete %s", ns_names[i]) != 0)
			fprintf(stderr, "cannot delete network namespace %s\n",
			    ns_names[i]);
	ns_made = 0;
}

static int ns_teardown(void **state)
{
	ns_cleanup();
	return teardown(state);
}

static void ns_skip(const char *why)
{
	ns_cleanup();
	TW_SKIP_ALL("%s", why);
}

static void test_netns(void **state)
{
	(void)state;
	if (geteuid() != 0)
		TW_SKIP_ALL("needs root to create network namespaces");
	if (sh("ip netns list") != 0)
		TW_SKIP_ALL("no `ip netns` (iproute2)");
	unsigned id = (unsigned)getpid();
	const char *role[4] = { "hub", "h0", "h1", "h2" };
	for (size_t i = 0; i < 4; i++) {
		snprintf(
		    ns_names[i], sizeof(ns_names[i]), "twe%u-%s", id, role[i]);
		if (sh("ip netns add %s", ns_names[i]) != 0)
			ns_skip("cannot create a network namespace");
		ns_made++;
		assert_int_equal(
		    sh("ip -n %s link set lo up", ns_names[i]), 0);
	}
	if (sh("ip -n %s link add br0 type bridge", ns_names[0]) != 0)
		ns_skip("cannot create a bridge");
	assert_int_equal(sh("ip -n %s link set br0 up", ns_names[0]), 0);
	for (size_t i = 1; i < 4; i++) {
		if (sh("ip -n %s link add veth%zu type veth peer name eth0 "
		       "netns %s",
		        ns_names[0], i, ns_names[i])
		    != 0)
			ns_skip("cannot create a veth pair");
		assert_int_equal(sh("ip -n %s link set veth%zu master br0 up",
		                     ns_names[0], i),
		    0);
		assert_int_equal(
		    sh("ip -n %s addr add 10.79.0.%zu/24 dev eth0",
		        ns_names[i], i),
		    0);
		assert_int_equal(
		    sh("ip -n %s link set eth0 up", ns_names[i]), 0);
	}
	fan_arg a = { .nconn = 2,
		.region = small() ? 4 * MiB : 32 * MiB,
		.stripes = 2,
		.listen = "tcp://10.79.0.1:0" };
	a.netns[0] = ns_names[1];
	a.netns[1] = ns_names[2];
	a.netns[2] = ns_names[3];
	fan_run(&a);
	ns_cleanup();
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_exact_s1_w1, teardown),
		cmocka_unit_test_teardown(test_exact_s1_w16, teardown),
		cmocka_unit_test_teardown(test_exact_s4_w1, teardown),
		cmocka_unit_test_teardown(test_exact_s4_w16, teardown),
		cmocka_unit_test_teardown(test_sigkill_acceptor, teardown),
		cmocka_unit_test_teardown(test_sigkill_connector, teardown),
		cmocka_unit_test_teardown(test_fanin, teardown),
		cmocka_unit_test_teardown(
		    test_shared_port_engine_first, teardown),
		cmocka_unit_test_teardown(
		    test_shared_port_link_first, teardown),
		cmocka_unit_test_teardown(test_sskill, teardown),
		cmocka_unit_test_teardown(test_netns, ns_teardown),
	};
	if (argc < 2) {
		fprintf(stderr, "usage: %s CASE [small]\n", argv[0]);
		return 1;
	}
	small_sizes = argc > 2 && strcmp(argv[2], "small") == 0;
	if (tw_test_select(
	        tests, sizeof(tests) / sizeof(tests[0]), "test_", argv[1])
	    != 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
