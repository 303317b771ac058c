// tcp:// connections that break while both processes live: the connecting
// side dials again, both sides resume from the last frame the peer
// received, and no call fails; only a peer that stays unreachable for three
// heartbeat periods, or whose port refuses, fails calls with TW_EPEER.
//
// reconnect_kills_plain / _striped: three processes on 127.0.0.1 (ports of
// their own), one stripe, or TW_OPT_STRIPES 3 with 64 KiB chunks.  Each
// party streams COUNT (the size argument) numbered messages of 8 B to
// 256 KiB to each other party under three tags, with a sending and a
// receiving thread per (peer, tag); the receivers check every byte, and
// that each message of a (sender, tag) arrives once and in order.  This
// process meanwhile kills every established connection of the parties
// with `ss -K` every 150 ms and counts the sockets ss reports killed.
// Every tw_send, tw_recv, tw_link_wait_pending and the closing barrier
// must return TW_OK, and at least 5 of the kills must have killed
// something while the parties streamed, so that the test cannot pass
// without breaking connections.
//
// reconnect_then_sigkill: the same three processes, TW_OPT_HEARTBEAT_MS
// 300, each in a ping-pong of checked messages with each other party.
// After at least 3 kills, and once every pair completed a round trip since
// the last one, party 2 is killed with SIGKILL: parties 0 and 1 must get
// TW_EPEER from their calls towards it within 3 s (three heartbeats and a
// margin), and go on with round trips between themselves.
//
// The kills need `ss` with a kernel that destroys sockets on request
// (CONFIG_INET_DIAG_DESTROY) and CAP_NET_ADMIN: a probe on a loopback
// connection of this process skips the program (status 77) otherwise.
// TW_RECONNECT_KILL_MS sets the interval between kills (ms; 0 runs
// without kills, a check of the streaming and its checks alone).
//
// reconnect_kills_tls runs the plain test over TLS: every party presents
// the certificate named after its id (pN.pem), and each resumed connection
// makes a new TLS handshake on its new socket.  The certificates are made
// once per run by tests/tls/mkcerts.sh (tests/tls/certs.h), whose folder
// the parties get as an argument; without the openssl command the program
// skips (status 77).

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "parts.h"
#include "sskill.h"
#include "testdata.h"
#include "testutil.h"
#include "tf.h"
#include "tls/certs.h"

extern char **environ;

#define RC_PARTIES 3
#define RC_TAGS 3
#define RC_MAX ((size_t)256 << 10)
#define RC_HDR 24
#define RC_MAGIC UINT32_C(0x52434e4b)
#define RC_POOL ((size_t)512 << 10)
#define RC_CHUNK ((int64_t)64 << 10)
#define RC_COUNT 20000 // messages per ordered pair without a size argument
#define RC_MIN_KILLS 5 // kills that must land while the parties stream
#define RC_SIGKILL_KILLS 3 // kills before party 2 is killed for good
#define RC_HEARTBEAT_MS 300 // reconnect_then_sigkill
#define RC_DETECT_MS 3000 // three heartbeats of 300 ms, and a margin
#define RC_AFTER_LOSS 20 // round trips of parties 0 and 1 once 2 is gone

static uint64_t rc_mix(uint64_t x)
{
	x += UINT64_C(0x9e3779b97f4a7c15);
	x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
	return x ^ (x >> 31);
}

// --- killing connections ----------------------------------------------------------

// `ss -K` on the parties' connections (sskill.h), given 5 s (scaled).
static int rc_ss_kill(const unsigned *ports, size_t n, char *why, size_t cap)
{
	return tw_test_ss_kill(
	    ports, n, true, (int)tf_scale_ms(5000), why, cap);
}

// Skips the program unless `ss -K` kills sockets here.  Without the
// kernel's support or the capability, ss may succeed and kill nothing, so
// the probe looks at a connection of its own.
static void rc_probe_ss(void)
{
	static bool probed;
	if (probed)
		return;
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
	int n = rc_ss_kill(&port, 1, why, sizeof(why));
	if (n < 0)
		TW_SKIP_ALL("`ss -K` cannot kill connections here: %s", why);
	struct pollfd p[2]
	    = { { .fd = c, .events = POLLIN }, { .fd = s, .events = POLLIN } };
	bool killed = poll(p, 2, (int)tf_scale_ms(2000)) > 0;
	close(c);
	close(s);
	close(l);
	if (!killed)
		TW_SKIP_ALL("`ss -K` left a loopback connection alive (it "
		            "reported %d socket(s)): the kernel lacks "
		            "CONFIG_INET_DIAG_DESTROY or this process "
		            "CAP_NET_ADMIN",
		    n);
	probed = true;
}

static int64_t rc_interval_ms(void)
{
	const char *v = getenv("TW_RECONNECT_KILL_MS");
	if (v == NULL || *v == '\0')
		return 150;
	char *end;
	long ms = strtol(v, &end, 10);
	if (*end != '\0' || ms < 0)
		fail_msg("TW_RECONNECT_KILL_MS=%s: want a number of ms, 0 for "
		         "no kills",
		    v);
	return ms;
}

// --- the parties, as this process sees them -------------------------------------

typedef struct rc_party {
	pid_t pid;
	int fd; // the read end of its report pipe
	char buf[1024];
	size_t len;
	bool eof, reaped, judged;
	bool may_die; // killed on purpose
	tf_end end;
} rc_party;

struct rc_run;
typedef void (*rc_on_line)(struct rc_run *r, size_t who, const char *line);

typedef struct rc_run {
	rc_party p[RC_PARTIES];
	unsigned ports[RC_PARTIES];
	rc_on_line on_line;
	char fail[1024]; // the first failure
	int ticks, hits, sockets; // ss runs, those that killed, sockets
	int64_t first_kill_ms, last_kill_ms;
} rc_run;

static void rc_failf(rc_run *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void rc_failf(rc_run *r, const char *fmt, ...)
{
	if (r->fail[0] != '\0')
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->fail, sizeof(r->fail), fmt, ap);
	va_end(ap);
	printf("FAILED: %s\n", r->fail);
	fflush(stdout);
}

// What the kills had done by now, for failure messages.
static const char *rc_kills_str(const rc_run *r, char *buf, size_t cap)
{
	if (r->hits == 0)
		snprintf(buf, cap, "no kill yet");
	else
		snprintf(buf, cap,
		    "after %d kill(s) of %d socket(s), the first %lld ms "
		    "and the last %lld ms before",
		    r->hits, r->sockets,
		    (long long)(tf_now_ms() - r->first_kill_ms),
		    (long long)(tf_now_ms() - r->last_kill_ms));
	return buf;
}

static void rc_line(rc_run *r, size_t who, const char *line)
{
	if (strncmp(line, "fail ", 5) == 0) {
		char k[160];
		rc_failf(r, "p%zu: %s (%s)", who, line + 5,
		    rc_kills_str(r, k, sizeof(k)));
		return;
	}
	r->on_line(r, who, line);
}

// Reads what the parties said and reaps those that ended, for at most
// wait_ms.  A party that ends otherwise than with status 0 (and was not
// killed on purpose) is a failure.
static void rc_pump(rc_run *r, int64_t wait_ms)
{
	struct pollfd p[RC_PARTIES];
	nfds_t n = 0;
	size_t who[RC_PARTIES];
	for (size_t i = 0; i < RC_PARTIES; i++) {
		if (r->p[i].eof)
			continue;
		p[n] = (struct pollfd) { .fd = r->p[i].fd, .events = POLLIN };
		who[n++] = i;
	}
	if (wait_ms > 50)
		wait_ms = 50; // children that end are reaped without a pipe
	if (wait_ms < 0)
		wait_ms = 0;
	int pr = n > 0 ? poll(p, n, (int)wait_ms) : 0;
	for (nfds_t k = 0; pr > 0 && k < n; k++) {
		if (p[k].revents == 0)
			continue;
		rc_party *q = &r->p[who[k]];
		ssize_t got = read(
		    q->fd, q->buf + q->len, sizeof(q->buf) - 1 - q->len);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			q->eof = true;
			continue;
		}
		q->len += (size_t)got;
		char *nl;
		while ((nl = memchr(q->buf, '\n', q->len)) != NULL) {
			*nl = '\0';
			rc_line(r, who[k], q->buf);
			size_t used = (size_t)(nl + 1 - q->buf);
			memmove(q->buf, nl + 1, q->len - used);
			q->len -= used;
		}
		if (q->len == sizeof(q->buf) - 1)
			q->len = 0; // a line that long is garbage
	}
	for (size_t i = 0; i < RC_PARTIES; i++) {
		rc_party *q = &r->p[i];
		if (!q->reaped) {
			int st;
			if (waitpid(q->pid, &st, WNOHANG) == q->pid) {
				q->reaped = true;
				q->end = (tf_end) { .done = true,
					.exited = WIFEXITED(st),
					.code
					= WIFEXITED(st) ? WEXITSTATUS(st) : 0,
					.sig
					= WIFSIGNALED(st) ? WTERMSIG(st) : 0 };
			}
		}
		// Judged once its pipe is drained, so that its last words
		// come before the bare exit status.
		if (q->reaped && q->eof && !q->judged) {
			q->judged = true;
			if (!q->may_die
			    && !(q->end.exited && q->end.code == 0)) {
				char how[96], k[160];
				rc_failf(r, "p%zu ended with %s (%s)", i,
				    tf_end_str(&q->end, how, sizeof(how)),
				    rc_kills_str(r, k, sizeof(k)));
			}
		}
	}
}

// One run of ss -K over every party's connections.
static void rc_tick(rc_run *r)
{
	char why[700];
	int n = rc_ss_kill(r->ports, RC_PARTIES, why, sizeof(why));
	if (n < 0) {
		rc_failf(r, "%s", why);
		return;
	}
	r->ticks++;
	if (n > 0) {
		int64_t now = tf_now_ms();
		if (r->hits++ == 0)
			r->first_kill_ms = now;
		r->last_kill_ms = now;
		r->sockets += n;
	}
}

// Starts the parties: role with the three ports, then extra (a party's
// rank replaces "R", its report pipe "FD").
static void rc_start(
    rc_run *r, rc_on_line on_line, const char *role, const char *const *extra)
{
	memset(r, 0, sizeof(*r));
	r->on_line = on_line;
	assert_int_equal(tf_ports(r->ports, RC_PARTIES, NULL, 0), 0);
	char p[RC_PARTIES][16];
	for (int i = 0; i < RC_PARTIES; i++)
		snprintf(p[i], sizeof(p[i]), "%u", r->ports[i]);
	for (int i = 0; i < RC_PARTIES; i++) {
		int fds[2];
		tf_pipe(fds);
		char rank[8], fd[16];
		snprintf(rank, sizeof(rank), "%d", i);
		snprintf(fd, sizeof(fd), "%d", fds[1]);
		const char *args[24] = { p[0], p[1], p[2] };
		size_t n = 3;
		for (size_t k = 0; extra[k] != NULL && n + 1 < 24; k++)
			args[n++] = strcmp(extra[k], "R") == 0 ? rank
			    : strcmp(extra[k], "FD") == 0      ? fd
			                                       : extra[k];
		args[n] = NULL;
		r->p[i].pid = tf_spawn(role, args, &fds[1], 1);
		assert_true(r->p[i].pid > 0);
		close(fds[1]);
		r->p[i].fd = fds[0];
	}
}

// Waits until every party ended and was judged, or the deadline: then
// the rest are killed.  Once one failed, the others are killed at once
// (they would wait for it until their own timeouts).
static void rc_finish(rc_run *r, int64_t deadline_ms)
{
	for (;;) {
		bool all = true;
		for (size_t i = 0; i < RC_PARTIES; i++)
			all = all && r->p[i].judged;
		if (all)
			break;
		bool late = tf_now_ms() >= deadline_ms;
		if (late || r->fail[0] != '\0') {
			for (size_t i = 0; i < RC_PARTIES; i++) {
				if (r->p[i].reaped)
					continue;
				if (late && r->fail[0] == '\0')
					rc_failf(r,
					    "p%zu still running at its "
					    "deadline",
					    i);
				r->p[i].may_die = true;
				kill(r->p[i].pid, SIGKILL);
			}
		}
		rc_pump(r, 50);
	}
	for (size_t i = 0; i < RC_PARTIES; i++)
		close(r->p[i].fd);
}

// --- the parties' end -----------------------------------------------------------

static int rc_fd = -1; // the report pipe
static const char *const rc_names[RC_PARTIES] = { "p0", "p1", "p2" };
static tw_link *rc_link;
static uint32_t rc_me;

static void rc_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)))
__attribute__((noreturn));

static void rc_die(const char *fmt, ...)
{
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	tf_say(rc_fd, "fail %s", msg);
	tf_die("%s", msg);
}

#define RC_OK(expr)                                                           \
	do {                                                                  \
		int rc_rv_ = (expr);                                          \
		if (rc_rv_ != TW_OK)                                          \
			rc_die("%s: %s", #expr, tw_err_name(rc_rv_));         \
	} while (0)

// TLS with this party's certificate from the folder of mkcerts.sh; dir
// "-" leaves the link on plain tcp://.
static void rc_secure(tw_desc *d, const char *dir)
{
	if (strcmp(dir, "-") == 0)
		return;
	const char *me = rc_names[rc_me % RC_PARTIES];
	char cert[512], key[512], ca[512], f[16];
	snprintf(f, sizeof(f), "%s.pem", me);
	tw_cert_path(cert, sizeof(cert), dir, f);
	snprintf(f, sizeof(f), "%s.key", me);
	tw_cert_path(key, sizeof(key), dir, f);
	tw_cert_path(ca, sizeof(ca), dir, "ca.pem");
	RC_OK(tw_desc_set_tls(d, cert, key, ca));
}

static tw_desc *rc_desc(const char *id, char **argv, int64_t recv_ms)
{
	unsigned ports[RC_PARTIES];
	for (int i = 0; i < RC_PARTIES; i++)
		ports[i] = (unsigned)strtoul(argv[i], NULL, 10);
	return tf_desc(
	    id, ports, RC_PARTIES, tf_scale_ms(20000), tf_scale_ms(recv_ms));
}

// --- streaming ------------------------------------------------------------------

static unsigned char rc_pool[RC_POOL];
static uint32_t rc_count; // messages per ordered pair

typedef struct rshape {
	size_t len;
	uint32_t tag;
	bool async, into;
	size_t off;
} rshape;

static rshape rc_shape(uint32_t s, uint32_t r, uint32_t k)
{
	uint64_t h = rc_mix(((uint64_t)s << 48) ^ ((uint64_t)r << 40) ^ k);
	rshape m;
	// Sizes spread evenly over the powers of two from 8 B to 256 KiB.
	size_t base = (size_t)8 << (h % 16);
	m.len = base + (size_t)((h >> 8) % base);
	if (m.len > RC_MAX)
		m.len = RC_MAX;
	m.tag = (uint32_t)((h >> 32) % RC_TAGS);
	m.async = ((h >> 40) & 3) == 0;
	m.into = ((h >> 42) & 1) == 0;
	m.off = (size_t)((h >> 20) % (RC_POOL - RC_MAX));
	return m;
}

// Writes message (s, r, k) into buf (RC_MAX bytes); returns its length.
// A message shorter than its header carries the header's first bytes,
// which still tell the sender and receiver apart.
static size_t rc_make(uint32_t s, uint32_t r, uint32_t k, unsigned char *buf)
{
	rshape m = rc_shape(s, r, k);
	uint32_t hdr[RC_HDR / 4]
	    = { RC_MAGIC, s, r, m.tag, k, (uint32_t)m.len };
	unsigned char full[RC_HDR];
	memcpy(full, hdr, sizeof(full));
	size_t h = m.len < RC_HDR ? m.len : RC_HDR;
	memcpy(buf, full, h);
	memcpy(buf + h, rc_pool + m.off, m.len - h);
	return m.len;
}

static const char *const rc_tags[RC_TAGS] = { "t0", "t1", "t2" };

// A sending or a receiving thread of one (peer, tag).
typedef struct rthread {
	uint32_t peer, tag;
	uint64_t msgs, bytes;
	pthread_t th;
} rthread;

static void *rc_send_main(void *arg)
{
	rthread *t = arg;
	uint32_t to = t->peer;
	unsigned char *buf = malloc(RC_MAX);
	if (buf == NULL)
		rc_die("out of memory");
	for (uint32_t k = 0; k < rc_count; k++) {
		rshape m = rc_shape(rc_me, to, k);
		if (m.tag != t->tag)
			continue;
		size_t len = rc_make(rc_me, to, k, buf);
		int st = m.async
		    ? tw_send_async(rc_link, to, rc_tags[m.tag], buf, len)
		    : tw_send(rc_link, to, rc_tags[m.tag], buf, len);
		if (st != TW_OK)
			rc_die("message %u to p%u (%zu bytes, tag %u, %s): %s",
			    k, to, len, m.tag,
			    m.async ? "tw_send_async" : "tw_send",
			    tw_err_name(st));
		t->msgs++;
		t->bytes += len;
	}
	free(buf);
	return NULL;
}

static void *rc_recv_main(void *arg)
{
	rthread *t = arg;
	uint32_t from = t->peer;
	unsigned char *want = malloc(RC_MAX), *got = malloc(RC_MAX);
	if (want == NULL || got == NULL)
		rc_die("out of memory");
	for (uint32_t k = 0; k < rc_count; k++) {
		rshape m = rc_shape(from, rc_me, k);
		if (m.tag != t->tag)
			continue;
		size_t len = rc_make(from, rc_me, k, want);
		size_t n = 0;
		tw_buf b = { 0 };
		int st;
		if (m.into) {
			st = tw_recv_into(
			    rc_link, from, rc_tags[m.tag], got, RC_MAX, &n);
		} else {
			st = tw_recv(rc_link, from, rc_tags[m.tag], &b);
			n = b.len;
			if (st == TW_OK && n <= RC_MAX)
				memcpy(got, b.data, n);
			tw_buf_free(&b);
		}
		if (st != TW_OK)
			rc_die("message %u from p%u (tag %u, %s): %s", k, from,
			    m.tag, m.into ? "tw_recv_into" : "tw_recv",
			    tw_err_name(st));
		if (n >= RC_HDR && memcmp(got, want, RC_HDR) != 0) {
			uint32_t h[RC_HDR / 4];
			memcpy(h, got, sizeof(h));
			rc_die("from p%u tag %u: got message %u of p%u to p%u "
			       "(tag %u, %u bytes), want message %u: lost, "
			       "repeated or out of order",
			    from, m.tag, h[4], h[1], h[2], h[3], h[5], k);
		}
		if (n != len || memcmp(got, want, len) != 0)
			rc_die("message %u from p%u (tag %u): %zu bytes, want "
			       "%zu, or wrong bytes",
			    k, from, m.tag, n, len);
		t->msgs++;
		t->bytes += len;
	}
	free(want);
	free(got);
	return NULL;
}

// rc_stream PORT0 PORT1 PORT2 COUNT RANK STRIPES FD CERTS
// (CERTS the folder of mkcerts.sh, "-" for plain tcp://).
int role_rc_stream(int argc, char **argv)
{
	rc_count = (uint32_t)strtoul(argv[3], NULL, 10);
	rc_me = (uint32_t)strtoul(argv[4], NULL, 10);
	int stripes = atoi(argv[5]);
	rc_fd = atoi(argv[6]);
	tf_who = rc_names[rc_me % RC_PARTIES];
	tw_test_fill(rc_pool, sizeof(rc_pool), 5, 2, 7);
	tw_desc *d = rc_desc("rc", argv, 30000);
	TF_OK(tw_desc_set(d, TW_OPT_STRIPES, stripes));
	TF_OK(tw_desc_set(d, TW_OPT_CHUNK_SIZE, RC_CHUNK));
	TF_OK(tw_desc_set(d, TW_OPT_RECV_BUFFER, (int64_t)8 << 20));
	// A broken connection must be resumed within three heartbeats
	// (3 s by default).  Kills every 150 ms can keep each new
	// connection from resuming for that long when the test runs slower
	// (under ThreadSanitizer one did): the window scales as the test's
	// other timeouts do.
	TF_OK(tw_desc_set(d, TW_OPT_HEARTBEAT_MS, tf_scale_ms(1000)));
	rc_secure(d, argv[7]);
	RC_OK(tw_link_create(d, rc_me, &rc_link));
	// Kills start once every party is up: a connection killed during
	// the handshake is a failure of tw_link_create, not a reconnection.
	RC_OK(tw_barrier(rc_link, "up"));
	tf_say(rc_fd, "up");
	int64_t t0 = tf_now_ms();
	rthread tx[RC_PARTIES][RC_TAGS], rx[RC_PARTIES][RC_TAGS];
	for (uint32_t j = 0; j < RC_PARTIES; j++) {
		for (uint32_t g = 0; j != rc_me && g < RC_TAGS; g++) {
			tx[j][g] = (rthread) { .peer = j, .tag = g };
			rx[j][g] = (rthread) { .peer = j, .tag = g };
			if (pthread_create(
			        &tx[j][g].th, NULL, rc_send_main, &tx[j][g])
			        != 0
			    || pthread_create(
			           &rx[j][g].th, NULL, rc_recv_main, &rx[j][g])
			        != 0)
				rc_die("pthread_create failed");
		}
	}
	uint64_t sent = 0, recvd = 0, bytes = 0;
	for (uint32_t j = 0; j < RC_PARTIES; j++) {
		for (uint32_t g = 0; j != rc_me && g < RC_TAGS; g++) {
			pthread_join(tx[j][g].th, NULL);
			pthread_join(rx[j][g].th, NULL);
			sent += tx[j][g].msgs;
			recvd += rx[j][g].msgs;
			bytes += rx[j][g].bytes;
		}
	}
	RC_OK(tw_link_wait_pending(rc_link));
	tf_say(rc_fd, "done %" PRIu64 " %" PRIu64 " %" PRIu64 " %lld", sent,
	    recvd, bytes, (long long)(tf_now_ms() - t0));
	RC_OK(tw_barrier(rc_link, "end"));
	// A party that left the barrier first may close before the others
	// heard its last frames.
	int st = tw_link_close(rc_link);
	if (st != TW_OK && st != TW_EPEER)
		rc_die("tw_link_close: %s", tw_err_name(st));
	tw_desc_free(d);
	return 0;
}

typedef struct rc_stream_view {
	bool up[RC_PARTIES], done[RC_PARTIES];
	uint64_t sent, recvd, bytes;
	int64_t ms; // the slowest party's streaming time
} rc_stream_view;

static rc_stream_view rc_sv;

static void rc_stream_line(rc_run *r, size_t who, const char *line)
{
	unsigned long long s, v, b;
	long long ms;
	if (strcmp(line, "up") == 0) {
		rc_sv.up[who] = true;
	} else if (sscanf(line, "done %llu %llu %llu %lld", &s, &v, &b, &ms)
	    == 4) {
		rc_sv.done[who] = true;
		rc_sv.sent += s;
		rc_sv.recvd += v;
		rc_sv.bytes += b;
		if (ms > rc_sv.ms)
			rc_sv.ms = ms;
	} else {
		rc_failf(r, "p%zu said '%s'", who, line);
	}
}

static bool rc_all(const bool *v)
{
	for (size_t i = 0; i < RC_PARTIES; i++)
		if (!v[i])
			return false;
	return true;
}

static void run_kills(int stripes, bool tls)
{
	rc_probe_ss();
	// Made after the probe, so that a skip for ss makes nothing.
	const char *certs = tls ? tw_certs_make() : "-";
	int64_t every = rc_interval_ms();
	uint64_t count = tf_parse_size(tf_size_arg);
	if (count == 0)
		count = RC_COUNT;
	assert_true(count <= UINT32_MAX);
	char scount[24], sstripes[8];
	snprintf(scount, sizeof(scount), "%" PRIu64, count);
	snprintf(sstripes, sizeof(sstripes), "%d", stripes);
	const char *extra[] = { scount, "R", sstripes, "FD", certs, NULL };
	memset(&rc_sv, 0, sizeof(rc_sv));
	rc_run r;
	rc_start(&r, rc_stream_line, "rc_stream", extra);
	int64_t t0 = tf_now_ms();
	int64_t up_by = t0 + tf_scale_ms(30000);
	while (r.fail[0] == '\0' && !rc_all(rc_sv.up) && tf_now_ms() < up_by)
		rc_pump(&r, 50);
	if (r.fail[0] == '\0' && !rc_all(rc_sv.up))
		rc_failf(&r, "the parties were not all up within 30 s");
	int64_t ts = tf_now_ms();
	int64_t done_by = ts + tf_scale_ms(120000), next = ts + every;
	while (r.fail[0] == '\0' && !rc_all(rc_sv.done)) {
		int64_t now = tf_now_ms();
		if (now >= done_by) {
			rc_failf(&r,
			    "the parties did not finish streaming "
			    "within 120 s");
			break;
		}
		if (every > 0 && now >= next) {
			rc_tick(&r);
			next += every;
			if (next < now)
				next = now + every;
			continue;
		}
		rc_pump(&r, every > 0 ? next - now : 50);
	}
	int64_t streamed = tf_now_ms() - ts;
	rc_finish(&r, tf_now_ms() + tf_scale_ms(30000));
	int done = 0;
	for (size_t i = 0; i < RC_PARTIES; i++)
		done += rc_sv.done[i];
	printf("kills: %d of %d ss -K runs (every %lld ms) killed %d "
	       "socket(s) while the parties streamed\n"
	       "messages: %" PRIu64 " sent, %" PRIu64
	       " received and checked (%.1f MiB) by the %d of %d parties "
	       "that finished, %" PRIu64 " expected; streaming: %.1f s\n",
	    r.hits, r.ticks, (long long)every, r.sockets, rc_sv.sent,
	    rc_sv.recvd, (double)rc_sv.bytes / (1 << 20), done, RC_PARTIES,
	    count * RC_PARTIES * (RC_PARTIES - 1), (double)streamed / 1000);
	fflush(stdout);
	if (r.fail[0] != '\0')
		fail_msg("%s", r.fail);
	assert_int_equal(rc_sv.recvd, count * RC_PARTIES * (RC_PARTIES - 1));
	if (every > 0 && r.hits < RC_MIN_KILLS)
		fail_msg("only %d kill(s) while the parties streamed, want at "
		         "least %d: the run proves nothing (a larger size "
		         "argument streams longer)",
		    r.hits, RC_MIN_KILLS);
}

void test_reconnect_kills_plain(void **state)
{
	run_kills(1, false);
}

void test_reconnect_kills_striped(void **state)
{
	run_kills(3, false);
}

void test_reconnect_kills_tls(void **state)
{
	run_kills(1, true);
}

// --- reconnect_then_sigkill -------------------------------------------------------

#define RC_CHAT_MAX ((size_t)4096)
#define RC_CHAT_HDR 24

static atomic_bool rc_lost2; // this party's calls towards p2 failed

// Message k of a ping-pong from s to r; `more` says whether s wants
// another round (the pair stops after the first round neither wants).
static size_t rc_chat_make(
    uint32_t s, uint32_t r, uint32_t k, uint32_t more, unsigned char *buf)
{
	uint64_t h = rc_mix(((uint64_t)s << 40) ^ ((uint64_t)r << 32) ^ k);
	size_t len = RC_CHAT_HDR + (size_t)(h % (RC_CHAT_MAX - RC_CHAT_HDR));
	uint32_t hdr[RC_CHAT_HDR / 4]
	    = { RC_MAGIC, s, r, k, (uint32_t)len, more };
	memcpy(buf, hdr, sizeof(hdr));
	tw_test_fill(buf + RC_CHAT_HDR, len - RC_CHAT_HDR,
	    tw_test_pattern_seed(s, r, k), 0, 0);
	return len;
}

typedef struct rchat {
	uint32_t peer;
	pthread_t th;
	uint32_t rounds, after_loss;
} rchat;

static void *rc_chat_main(void *arg)
{
	rchat *c = arg;
	uint32_t j = c->peer;
	unsigned char out[RC_CHAT_MAX], in[RC_CHAT_MAX], want[RC_CHAT_MAX];
	int64_t said = 0;
	// Only parties 0 and 1 stop, together, once both lost p2 and went
	// on for a while; the others run until p2 is killed.
	bool stops = rc_me != 2 && j != 2;
	for (uint32_t k = 0;; k++) {
		bool lost = atomic_load(&rc_lost2);
		uint32_t more
		    = !(stops && lost && c->after_loss >= RC_AFTER_LOSS);
		size_t len = rc_chat_make(rc_me, j, k, more, out), n = 0;
		const char *what = "tw_send";
		int st = tw_send(rc_link, j, "c", out, len);
		if (st == TW_OK) {
			what = "tw_recv_into";
			st = tw_recv_into(rc_link, j, "c", in, sizeof(in), &n);
		}
		if (st != TW_OK && j == 2) {
			tf_say(rc_fd, "lost %s %lld %s %u", tw_err_name(st),
			    (long long)tf_now_ms(), what, k);
			atomic_store(&rc_lost2, true);
			return NULL;
		}
		if (st != TW_OK)
			rc_die("round trip %u with p%u, %s: %s", k, j, what,
			    tw_err_name(st));
		uint32_t peer_more = 0;
		if (n >= RC_CHAT_HDR)
			memcpy(&peer_more, in + 20, 4);
		size_t wlen = rc_chat_make(j, rc_me, k, peer_more, want);
		if (n != wlen || memcmp(in, want, n) != 0) {
			uint32_t h[RC_CHAT_HDR / 4] = { 0 };
			memcpy(h, in, n < sizeof(h) ? n : sizeof(h));
			rc_die(
			    "round trip %u with p%u: got %zu bytes, message "
			    "%u of p%u to p%u, want %zu bytes of message "
			    "%u: lost, repeated, out of order or wrong",
			    k, j, n, h[3], h[1], h[2], wlen, k);
		}
		c->rounds = k + 1;
		if (lost)
			c->after_loss++;
		int64_t now = tf_now_ms();
		if (now - said >= 100) {
			tf_say(rc_fd, "rt %u %u %lld", j, k, (long long)now);
			said = now;
		}
		if (!more && !peer_more)
			return NULL;
	}
}

// rc_chat PORT0 PORT1 PORT2 RANK FD
int role_rc_chat(int argc, char **argv)
{
	rc_me = (uint32_t)strtoul(argv[3], NULL, 10);
	rc_fd = atoi(argv[4]);
	tf_who = rc_names[rc_me % RC_PARTIES];
	tw_desc *d = rc_desc("rcchat", argv, 20000);
	TF_OK(tw_desc_set(d, TW_OPT_HEARTBEAT_MS, RC_HEARTBEAT_MS));
	RC_OK(tw_link_create(d, rc_me, &rc_link));
	RC_OK(tw_barrier(rc_link, "up"));
	tf_say(rc_fd, "up");
	rchat c[RC_PARTIES];
	for (uint32_t j = 0; j < RC_PARTIES; j++) {
		c[j] = (rchat) { .peer = j };
		if (j != rc_me
		    && pthread_create(&c[j].th, NULL, rc_chat_main, &c[j])
		        != 0)
			rc_die("pthread_create failed");
	}
	for (uint32_t j = 0; j < RC_PARTIES; j++)
		if (j != rc_me)
			pthread_join(c[j].th, NULL);
	// Only parties 0 and 1 get here, with p2 gone.
	uint32_t other = 1 - rc_me;
	tf_say(rc_fd, "done %u %u", c[other].rounds, c[other].after_loss);
	int st = tw_link_close(rc_link);
	if (st != TW_OK && st != TW_EPEER)
		rc_die("tw_link_close: %s", tw_err_name(st));
	tw_desc_free(d);
	return 0;
}

typedef struct rc_chat_view {
	bool up[RC_PARTIES], done[RC_PARTIES];
	int64_t rt_ms[RC_PARTIES]
	             [RC_PARTIES]; // last round trip seen by i with j
	int64_t killed_ms; // when p2 was SIGKILLed, 0 before
	int64_t lost_ms[RC_PARTIES]; // when i's calls towards p2 failed
	unsigned rounds[RC_PARTIES], after[RC_PARTIES];
} rc_chat_view;

static rc_chat_view rc_cv;

static void rc_chat_line(rc_run *r, size_t who, const char *line)
{
	unsigned j, k, a;
	long long t;
	char st[32], what[32];
	if (strcmp(line, "up") == 0) {
		rc_cv.up[who] = true;
	} else if (sscanf(line, "rt %u %u %lld", &j, &k, &t) == 3
	    && j < RC_PARTIES) {
		rc_cv.rt_ms[who][j] = t;
	} else if (sscanf(line, "lost %31s %lld %31s %u", st, &t, what, &k)
	    == 4) {
		char kb[160];
		if (rc_cv.killed_ms == 0)
			rc_failf(r,
			    "p%zu: round trip %u with p2, %s: %s while p2 "
			    "was alive (%s)",
			    who, k, what, st, rc_kills_str(r, kb, sizeof(kb)));
		else if (strcmp(st, "TW_EPEER") != 0)
			rc_failf(r,
			    "p%zu: round trip %u with p2, %s: %s %lld ms "
			    "after p2 was killed, want TW_EPEER",
			    who, k, what, st, t - rc_cv.killed_ms);
		else
			rc_cv.lost_ms[who] = t;
	} else if (sscanf(line, "done %u %u", &k, &a) == 2) {
		rc_cv.done[who] = true;
		rc_cv.rounds[who] = k;
		rc_cv.after[who] = a;
	} else {
		rc_failf(r, "p%zu said '%s'", who, line);
	}
}

// Whether every pair completed a round trip since `since`; else the
// first pair that did not, in *a and *b.
static bool rc_all_flowed(int64_t since, size_t *a, size_t *b)
{
	for (size_t i = 0; i < RC_PARTIES; i++)
		for (size_t j = 0; j < RC_PARTIES; j++)
			if (i != j && rc_cv.rt_ms[i][j] <= since) {
				*a = i;
				*b = j;
				return false;
			}
	return true;
}

void test_reconnect_then_sigkill(void **state)
{
	rc_probe_ss();
	int64_t every = rc_interval_ms();
	const char *extra[] = { "R", "FD", NULL };
	memset(&rc_cv, 0, sizeof(rc_cv));
	rc_run r;
	rc_start(&r, rc_chat_line, "rc_chat", extra);
	int64_t t0 = tf_now_ms(), up_by = t0 + tf_scale_ms(30000);
	while (r.fail[0] == '\0' && !rc_all(rc_cv.up) && tf_now_ms() < up_by)
		rc_pump(&r, 50);
	if (r.fail[0] == '\0' && !rc_all(rc_cv.up))
		rc_failf(&r, "the parties were not all up within 30 s");
	int64_t kills_by = tf_now_ms() + tf_scale_ms(10000);
	int64_t next = tf_now_ms() + every;
	while (every > 0 && r.fail[0] == '\0' && r.hits < RC_SIGKILL_KILLS) {
		int64_t now = tf_now_ms();
		if (now >= kills_by) {
			rc_failf(&r,
			    "%d of %d ss -K runs killed something "
			    "within 10 s, want %d",
			    r.hits, r.ticks, RC_SIGKILL_KILLS);
			break;
		}
		if (now >= next) {
			rc_tick(&r);
			next = now + every;
			continue;
		}
		rc_pump(&r, next - now);
	}
	// Traffic must flow again on every pair before p2 goes, so that the
	// TW_EPEER expected next cannot be one of the kills.
	int64_t since = every > 0 ? r.last_kill_ms : t0;
	int64_t flow_by = tf_now_ms() + tf_scale_ms(5000);
	size_t a = 0, b = 0;
	while (r.fail[0] == '\0' && !rc_all_flowed(since, &a, &b)) {
		if (tf_now_ms() >= flow_by) {
			char kb[160];
			rc_failf(&r,
			    "p%zu completed no round trip with p%zu within "
			    "5 s (%s)",
			    a, b, rc_kills_str(&r, kb, sizeof(kb)));
			break;
		}
		rc_pump(&r, 50);
	}
	if (r.fail[0] == '\0') {
		// Stamped first: a party may hear of the death before kill()
		// returns here.
		rc_cv.killed_ms = tf_now_ms();
		r.p[2].may_die = true;
		kill(r.p[2].pid, SIGKILL);
	}
	rc_finish(&r, tf_now_ms() + tf_scale_ms(20000));
	printf("kills: %d of %d ss -K runs (every %lld ms) killed %d "
	       "socket(s) before p2 was killed\n",
	    r.hits, r.ticks, (long long)every, r.sockets);
	for (size_t i = 0; rc_cv.killed_ms != 0 && i < 2; i++) {
		if (rc_cv.lost_ms[i] != 0)
			printf("p%zu: TW_EPEER from p2 %lld ms after its "
			       "SIGKILL",
			    i,
			    (long long)(rc_cv.lost_ms[i] - rc_cv.killed_ms));
		else
			printf(
			    "p%zu: no TW_EPEER from p2 after its SIGKILL", i);
		printf("; %u round trips with p%zu, %u of them after\n",
		    rc_cv.rounds[i], 1 - i, rc_cv.after[i]);
	}
	fflush(stdout);
	if (r.fail[0] != '\0')
		fail_msg("%s", r.fail);
	for (size_t i = 0; i < 2; i++) {
		if (rc_cv.lost_ms[i] == 0 || !rc_cv.done[i])
			fail_msg("p%zu ended without reporting the loss of p2 "
			         "and its round trips after it",
			    i);
		int64_t ms = rc_cv.lost_ms[i] - rc_cv.killed_ms;
		if (ms > tf_scale_ms(RC_DETECT_MS))
			fail_msg("p%zu got TW_EPEER from p2 %lld ms after its "
			         "SIGKILL, want < %lld (heartbeat %d ms)",
			    i, (long long)ms,
			    (long long)tf_scale_ms(RC_DETECT_MS),
			    RC_HEARTBEAT_MS);
		if (rc_cv.after[i] < RC_AFTER_LOSS)
			fail_msg(
			    "p%zu: %u round trips with p%zu after p2 went, "
			    "want %d",
			    i, rc_cv.after[i], 1 - i, RC_AFTER_LOSS);
	}
	if (every > 0 && r.hits < RC_SIGKILL_KILLS)
		fail_msg("only %d kill(s) before p2 was killed, want %d",
		    r.hits, RC_SIGKILL_KILLS);
}
