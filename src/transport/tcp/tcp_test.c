// Tests of the tcp:// transport that the conformance suite cannot express:
// links that share one listening socket, a wrong secret at link level, and
// a peer killed with SIGKILL.  Parties of one test run on threads of this
// process, or in a forked child that reports on a pipe; ports come from
// listeners bound to port 0 and held by the test, which the links then
// share, so that no other process can take them in between.

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/sync.h"
#include "testdata.h"
#include "testutil.h"
#include "transport/tcp/tcp.h"
#include "transport/tcp/tcp_conn_int.h"
#include "transport/tcp/tcp_sock.h"

#define NPARTY 2

static tw__tcp_listener *held[NPARTY];
static char addrs[NPARTY][64];

static int setup(void **state)
{
	for (int i = 0; i < NPARTY; i++) {
		TW_PASS(tw__tcp_listener_get("tcp://127.0.0.1:0", &held[i]));
		snprintf(addrs[i], sizeof(addrs[i]), "tcp://%s",
		    tw__tcp_listener_name(held[i]));
	}
	return 0;
}

static int teardown(void **state)
{
	for (int i = 0; i < NPARTY; i++) {
		tw__tcp_listener_put(held[i]);
		held[i] = NULL;
	}
	return 0;
}

static tw_desc *make_desc(const char *id, const char *secret)
{
	tw_desc *d = tw_desc_new(id);
	assert_non_null(d);
	TW_PASS(tw_desc_add_party(d, "p0", addrs[0]));
	TW_PASS(tw_desc_add_party(d, "p1", addrs[1]));
	TW_PASS(
	    tw_desc_set(d, TW_OPT_CONNECT_TIMEOUT_MS, tw_test_scale_ms(5000)));
	TW_PASS(
	    tw_desc_set(d, TW_OPT_RECV_TIMEOUT_MS, tw_test_scale_ms(5000)));
	if (secret != NULL)
		TW_PASS(tw_desc_set_secret(d, secret, strlen(secret)));
	return d;
}

typedef struct party {
	tw_desc *d;
	size_t rank;
	int status;
	tw_link *l;
	pthread_t th;
} party;

static void *create_main(void *arg)
{
	party *p = arg;
	p->status = tw_link_create(p->d, p->rank, &p->l);
	return NULL;
}

// Creates a link of two parties on two threads.
static void create_pair(tw_desc *d0, tw_desc *d1, party *p)
{
	p[0] = (party) { .d = d0, .rank = 0 };
	p[1] = (party) { .d = d1, .rank = 1 };
	for (int i = 0; i < NPARTY; i++)
		assert_int_equal(
		    pthread_create(&p[i].th, NULL, create_main, &p[i]), 0);
	for (int i = 0; i < NPARTY; i++)
		pthread_join(p[i].th, NULL);
}

// A link of two parties without a secret, up: its description (the
// caller frees it) and the parties in p.
static tw_desc *up_pair(const char *id, party *p)
{
	tw_desc *d = make_desc(id, NULL);
	create_pair(d, d, p);
	TW_PASS(p[0].status);
	TW_PASS(p[1].status);
	return d;
}

static void exchange(tw_link *a, tw_link *b, const char *tag)
{
	tw_buf buf = { 0 };
	TW_PASS(tw_send(a, 1, tag, "ping", 4));
	TW_PASS(tw_recv(b, 0, tag, &buf));
	assert_int_equal(buf.len, 4);
	assert_memory_equal(buf.data, "ping", 4);
	tw_buf_free(&buf);
	TW_PASS(tw_send(b, 0, tag, "pong!", 5));
	TW_PASS(tw_recv(a, 1, tag, &buf));
	assert_int_equal(buf.len, 5);
	tw_buf_free(&buf);
}

// Two links created separately with the same addresses share the
// listeners: the process holds exactly one listening socket per address.
static void test_shared_listener(void **state)
{
	size_t before = tw__tcp_listener_count();
	assert_true(before >= NPARTY);
	tw_desc *da = make_desc("shared.a", NULL);
	tw_desc *db = make_desc("shared.b", NULL);
	party a[NPARTY], b[NPARTY];
	create_pair(da, da, a);
	TW_PASS(a[0].status);
	TW_PASS(a[1].status);
	create_pair(db, db, b);
	TW_PASS(b[0].status);
	TW_PASS(b[1].status);
	assert_int_equal(tw__tcp_listener_count(), before);
	exchange(a[0].l, a[1].l, "t");
	exchange(b[0].l, b[1].l, "t");
	// The same link id twice at one address is refused.
	tw_link *dup = NULL;
	TW_FAIL(tw_link_create(da, 0, &dup), TW_ESYS);
	for (int i = 0; i < NPARTY; i++) {
		tw_link_close(a[i].l);
		tw_link_close(b[i].l);
	}
	assert_int_equal(tw__tcp_listener_count(), before);
	tw_desc_free(da);
	tw_desc_free(db);
}

static void test_secret(void **state)
{
	tw_desc *good = make_desc("sec.ok", "k1");
	party p[NPARTY];
	create_pair(good, good, p);
	TW_PASS(p[0].status);
	TW_PASS(p[1].status);
	exchange(p[0].l, p[1].l, "s");
	tw_link_close(p[0].l);
	tw_link_close(p[1].l);
	tw_desc_free(good);

	// Different secrets: both sides fail with TW_EAUTH.  The connecting
	// side learns it from the answer at once; the accepting side cannot
	// tell a misconfigured peer from a stranger claiming its rank (which
	// must not make it fail), so it waits for a peer that proves the
	// secret until its connect timeout, then reports TW_EAUTH rather than
	// TW_ETIMEDOUT.
	tw_desc *d0 = make_desc("sec.bad", "k1");
	tw_desc *d1 = make_desc("sec.bad", "k2");
	// Which party accepts depends on the ports: both wait the same.
	TW_PASS(tw_desc_set(d0, TW_OPT_CONNECT_TIMEOUT_MS, 1000));
	TW_PASS(tw_desc_set(d1, TW_OPT_CONNECT_TIMEOUT_MS, 1000));
	int64_t t0 = tw__now_ns();
	create_pair(d0, d1, p);
	TW_FAIL(p[0].status, TW_EAUTH);
	TW_FAIL(p[1].status, TW_EAUTH);
	int64_t dt = tw__now_ns() - t0;
	assert_true(dt >= 1000000000);
	assert_true(dt < tw_test_scale_ms(4000) * 1000000);
	tw_desc_free(d0);
	tw_desc_free(d1);
}

// The killed peer of test_sigkill, in a process of its own: the test
// binary runs again (fork and exec, since a forked copy of a process with
// threads may not start threads safely) with TW_TCP_TEST_CHILD set to
// "ADDR0 ADDR1 FD".
static int sigkill_child(const char *spec)
{
	int fd;
	if (sscanf(spec, "%63s %63s %d", addrs[0], addrs[1], &fd) != 3)
		return 10;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	tw_desc *d = make_desc("kill", NULL);
	tw_link *l;
	if (tw_link_create(d, 1, &l) != TW_OK)
		return 1;
	if (tw_send(l, 0, "last", "bye", 3) != TW_OK)
		return 2;
	if (tw_link_wait_pending(l) != TW_OK)
		return 3;
	char c = 'r';
	if (write(fd, &c, 1) != 1)
		return 4;
	for (;;)
		pause(); // killed by the parent
}

// A peer killed with SIGKILL: what it sent can still be received, then
// receives and sends return TW_EPEER at once, not at the timeout.
static void test_sigkill(void **state)
{
	tw_desc *d = make_desc("kill", NULL);
	int ready[2];
	assert_int_equal(pipe(ready), 0);
	char spec[200];
	snprintf(spec, sizeof(spec), "%s %s %d", addrs[0], addrs[1], ready[1]);
	// The child binds party 1's port itself: let go of it just before.
	tw__tcp_listener_put(held[1]);
	held[1] = NULL;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(ready[0]);
		setenv("TW_TCP_TEST_CHILD", spec, 1);
		execl("/proc/self/exe", "tcp_test", (char *)NULL);
		_exit(9);
	}
	close(ready[1]);
	tw_link *l;
	TW_PASS(tw_link_create(d, 0, &l));
	char c;
	assert_int_equal(read(ready[0], &c, 1), 1);
	close(ready[0]);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	tw_buf b = { 0 };
	TW_PASS(tw_recv(l, 1, "last", &b));
	assert_int_equal(b.len, 3);
	tw_buf_free(&b);
	int64_t t0 = tw__now_ns();
	TW_FAIL(tw_recv(l, 1, "more", &b), TW_EPEER);
	assert_true(tw__now_ns() - t0 < tw_test_scale_ms(4000) * 1000000);
	TW_FAIL(tw_send(l, 1, "x", "x", 1), TW_EPEER);
	tw_link_close(l);
	tw_desc_free(d);
}

// The library's warnings and errors, for tests that check a reason.
static char log_seen[4096];
static pthread_mutex_t log_mtx = PTHREAD_MUTEX_INITIALIZER;

static void log_keep(const tw_log_record *r, void *arg)
{
	(void)arg;
	if (r->level > TW_LOG_WARN)
		return;
	pthread_mutex_lock(&log_mtx);
	size_t n = strlen(log_seen);
	snprintf(log_seen + n, sizeof(log_seen) - n, "%s\n", r->msg);
	pthread_mutex_unlock(&log_mtx);
}

// Strangers knock on a live link's listener: garbage, a wrong version,
// 64 KiB of zeros, a handshake for a link that does not exist, and a
// party's handshake with a wrong rank.  Each is closed (one log line
// each), and the link keeps working.
static void test_strangers(void **state)
{
	party p[NPARTY];
	tw_desc *d = up_pair("strangers", p);
	static unsigned char zeros[65536];
	unsigned char wrong_version[] = { 'T', 'W', 'I', 'R', 0, 9 };
	struct {
		const void *bytes;
		size_t n;
	} junk[] = {
		{ "GET / HTTP/1.1\r\n\r\n", 18 },
		{ wrong_version, sizeof(wrong_version) },
		{ zeros, sizeof(zeros) },
	};
	char host[TW_TCP_ADDR_MAX + 1];
	uint16_t port;
	TW_PASS(tw__tcp_addr_parse(addrs[1], host, sizeof(host), &port));
	for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
		int fd;
		TW_PASS(tw__tcp_dial(
		    host, port, tw__now_ns() + 1000000000, NULL, &fd));
		const unsigned char *b = junk[i].bytes;
		size_t left = junk[i].n;
		while (left > 0) {
			ssize_t w = send(fd, b, left, MSG_NOSIGNAL);
			if (w <= 0)
				break; // closed on the first bad bytes
			b += w;
			left -= (size_t)w;
		}
		// The node closes the connection: EOF (or a reset) here.
		char c;
		assert_true(recv(fd, &c, 1, 0) <= 0);
		close(fd);
	}
	// Handshakes that are well formed but name no link here, or claim
	// the rank of the party that is already connected from another
	// process (the rank that dials the node, so that it is the "taken"
	// check that refuses it, which the log line tells).  Both are closed
	// unanswered.
	size_t claim = tw__tcp_dials(addrs[0], addrs[1]) ? 0 : 1;
	TW_PASS(
	    tw__tcp_addr_parse(addrs[1 - claim], host, sizeof(host), &port));
	const char *links[] = { "nosuchlink", "strangers" };
	for (size_t i = 0; i < 2; i++) {
		int fd;
		TW_PASS(tw__tcp_dial(
		    host, port, tw__now_ns() + 1000000000, NULL, &fd));
		tw__tcp_hs_self me = { .link_id = links[i],
			.rank = (uint32_t)claim,
			.instance = 5,
			.session = 9,
			.addr = "127.0.0.1:1" };
		tw__tcp_hs_peer peer;
		int64_t dl = tw__now_ns() + tw_test_scale_ms(12000) * 1000000;
		log_seen[0] = '\0';
		TW_PASS(tw_log_set_handler(log_keep, NULL));
		TW_FAIL(tw__tcp_handshake(fd, &me, dl, NULL, &peer), TW_EPEER);
		TW_PASS(tw_log_set_handler(NULL, NULL));
		pthread_mutex_lock(&log_mtx);
		bool taken = strstr(log_seen, "connected from another process")
		    != NULL;
		pthread_mutex_unlock(&log_mtx);
		assert_true(taken == (i == 1));
		close(fd);
	}
	exchange(p[0].l, p[1].l, "after");
	tw_link_close(p[0].l);
	tw_link_close(p[1].l);
	tw_desc_free(d);
}

typedef struct lone {
	tw_desc *d;
	int status;
	tw_link *l;
	pthread_t th;
} lone;

static void *lone_main(void *arg)
{
	lone *o = arg;
	o->status = tw_link_create(o->d, 1, &o->l);
	return NULL;
}

// A connection to the party at addrs[1] that has passed the handshake as
// rank 0 of link "lone" (process `instance`), its main connection or
// stripe `stripe`: a raw peer's socket.
static int lone_dial_stripe(uint64_t instance, uint16_t stripe)
{
	char host[TW_TCP_ADDR_MAX + 1];
	uint16_t port;
	TW_PASS(tw__tcp_addr_parse(addrs[1], host, sizeof(host), &port));
	int fd;
	TW_PASS(
	    tw__tcp_dial(host, port, tw__now_ns() + 5000000000LL, NULL, &fd));
	tw__tcp_hs_self me = { .link_id = "lone",
		.rank = 0,
		.stripe = stripe,
		.instance = instance,
		.session = instance + 1,
		.addr = "127.0.0.1:1" };
	tw__tcp_hs_peer peer;
	TW_PASS(tw__tcp_handshake(fd, &me,
	    tw__now_ns() + tw_test_scale_ms(12000) * 1000000, NULL, &peer));
	return fd;
}

static int lone_dial(uint64_t instance)
{
	return lone_dial_stripe(instance, 0);
}

// Frames that no party sends, each on a connection whose handshake went
// well: a length of 2^63, an invalid key, garbage, a frame out of order,
// an OPEN of the wrong size, an ack of frames never sent, unknown flags.  Each closes its
// connection (one log line), nothing reaches any link, and the node goes
// on serving the link that was up before.
static void test_bad_frames(void **state)
{
	party p[NPARTY];
	tw_desc *d = up_pair("frames", p);
	// A link at p1 that waits for a rank 0 which the raw socket plays
	// (its address sorts first: rank 0 dials).
	lone o = { .d = tw_desc_new("lone") };
	assert_non_null(o.d);
	TW_PASS(tw_desc_add_party(o.d, "raw", "tcp://127.0.0.1:1"));
	TW_PASS(tw_desc_add_party(o.d, "p1", addrs[1]));
	TW_PASS(tw_desc_set(
	    o.d, TW_OPT_CONNECT_TIMEOUT_MS, tw_test_scale_ms(3000)));
	assert_int_equal(pthread_create(&o.th, NULL, lone_main, &o), 0);
	enum { NBAD = 7 };
	for (int i = 0; i < NBAD; i++) {
		unsigned char buf[256];
		memset(buf, 0, sizeof(buf));
		tw__tcp_hdr h = { .type = TW_TCP_F_DATA,
			.len = 3,
			.seq = 1,
			.key = "lone:t",
			.key_len = 6 };
		size_t n = 0;
		switch (i) {
		case 0: // 2^63
			h.len = UINT64_C(1) << 63;
			n = tw__tcp_hdr_encode(buf, sizeof(buf), &h);
			break;
		case 1: // a key with a NUL in it
			h.key = "lone:t\0t";
			h.key_len = 8;
			n = tw__tcp_hdr_encode(buf, sizeof(buf), &h) + 3;
			break;
		case 2: // garbage
			n = (size_t)snprintf((char *)buf, sizeof(buf), "%s",
			    "\xff garbage garbage garbage garbage");
			break;
		case 3: // out of order
			h.seq = 7;
			n = tw__tcp_hdr_encode(buf, sizeof(buf), &h) + 3;
			break;
		case 4: { // an OPEN claiming another number of parties
			tw__tcp_open op
			    = { .rank = 0, .size = 3, .window = 4096 };
			h.type = TW_TCP_F_OPEN;
			h.key = "lone";
			h.key_len = 4;
			h.len = TW_TCP_OPEN_LEN;
			n = tw__tcp_hdr_encode(buf, sizeof(buf), &h);
			tw__tcp_open_encode(buf + n, &op);
			n += TW_TCP_OPEN_LEN;
			break;
		}
		case 5: { // an ack of frames never sent
			h.type = TW_TCP_F_ACK;
			h.key = NULL;
			h.key_len = 0;
			h.len = 0;
			h.ack = 99;
			n = tw__tcp_hdr_encode(buf, sizeof(buf), &h);
			break;
		}
		default: // flags that no version defines
			h.type = TW_TCP_F_PING;
			h.key = NULL;
			h.key_len = 0;
			h.len = 0;
			n = tw__tcp_hdr_encode(buf, sizeof(buf), &h);
			buf[1] = 1;
			break;
		}
		int fd = lone_dial(77);
		assert_int_equal(send(fd, buf, n, MSG_NOSIGNAL), (ssize_t)n);
		// Closed by the node: EOF (or a reset) here, never an answer.
		char c;
		ssize_t r;
		while ((r = recv(fd, &c, 1, 0)) > 0)
			;
		assert_true(r <= 0);
		close(fd);
	}
	// The link that was up still works, and nothing was delivered.
	exchange(p[0].l, p[1].l, "after");
	size_t len;
	TW_FAIL(tw_probe(p[1].l, 0, "t", &len), TW_EAGAIN);
	tw_link_close(p[0].l);
	tw_link_close(p[1].l);
	pthread_join(o.th, NULL);
	// The lone link never got its rank 0.
	assert_int_not_equal(o.status, TW_OK);
	tw_desc_free(o.d);
	tw_desc_free(d);
}

static long threads_now(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[128];
	long n = -1;
	while (f != NULL && fgets(line, sizeof(line), f) != NULL)
		if (strncmp(line, "Threads:", 8) == 0)
			n = strtol(line + 8, NULL, 10);
	if (f != NULL)
		fclose(f);
	return n;
}

// A flood of strangers that connect and then say nothing: at most
// TW_TCP_HS_MAX of them hold a handshake thread (the rest are closed at
// once, with one log line), so threads and memory stay bounded, and the
// link keeps working meanwhile.
static void test_flood(void **state)
{
	party p[NPARTY];
	tw_desc *d = up_pair("flood", p);
	long base = threads_now();
	assert_true(base > 0);
	enum { N = TW_TCP_HS_MAX + 64 };
	static int fds[N];
	char host[TW_TCP_ADDR_MAX + 1];
	uint16_t port;
	TW_PASS(tw__tcp_addr_parse(addrs[1], host, sizeof(host), &port));
	for (int i = 0; i < N; i++)
		TW_PASS(tw__tcp_dial(
		    host, port, tw__now_ns() + 5000000000LL, NULL, &fds[i]));
	// The ones beyond the limit see their connection closed.
	int closed = 0;
	int64_t deadline = tw__now_ns() + tw_test_scale_ms(10000) * 1000000;
	static bool seen[N];
	while (closed < N - TW_TCP_HS_MAX && tw__now_ns() < deadline) {
		for (int i = 0; i < N; i++) {
			struct pollfd pfd = { .fd = fds[i], .events = POLLIN };
			char c;
			if (!seen[i] && poll(&pfd, 1, 0) == 1
			    && recv(fds[i], &c, 1, MSG_DONTWAIT) <= 0) {
				seen[i] = true;
				closed++;
			}
		}
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	assert_true(closed >= N - TW_TCP_HS_MAX);
	long peak = threads_now();
	assert_true(peak <= base + TW_TCP_HS_MAX);
	exchange(p[0].l, p[1].l, "flooded");
	for (int i = 0; i < N; i++) {
		close(fds[i]);
		seen[i] = false;
	}
	tw_link_close(p[0].l);
	tw_link_close(p[1].l);
	tw_desc_free(d);
}

// A take that races with the receiver's handling of a CREDIT_REQ: the
// handler clears `due` and then reads what the application took, and a
// take stores its count and then reads `due` (tcp.c, on_taken), so one
// of the two sees the other and a starved sender always gets its credit.
// The hook takes a message on the receiving link right after the handler
// read the count and waits for that take to return (a take that goes on
// to grant credit waits for the handler's lock instead; then the hook
// gives up after 200 ms).  Without the handler's early clearing of `due`,
// the take would see the old `due` and grant nothing, the handler would
// grant nothing from the count it read, and the sender's fifth message
// would wait for its receive timeout.
enum { CR_WINDOW = 4 * 4096, CR_TIMEOUT_MS = 5000 };
static struct {
	pthread_mutex_t mtx;
	pthread_cond_t cv;
	tw_link *rx;
	bool go, done;
	int calls;
} cr;

static void *cr_taker(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&cr.mtx);
	while (!cr.go)
		pthread_cond_wait(&cr.cv, &cr.mtx);
	pthread_mutex_unlock(&cr.mtx);
	tw_buf b = { 0 };
	int rv = tw_recv(cr.rx, 0, "c", &b);
	tw_buf_free(&b);
	pthread_mutex_lock(&cr.mtx);
	cr.done = rv == TW_OK;
	pthread_cond_broadcast(&cr.cv);
	pthread_mutex_unlock(&cr.mtx);
	return NULL;
}

static void cr_hook(void)
{
	pthread_mutex_lock(&cr.mtx);
	cr.calls++;
	if (cr.calls == 1) {
		cr.go = true;
		pthread_cond_broadcast(&cr.cv);
		int64_t until = tw__now_ns() + 200 * INT64_C(1000000);
		while (!cr.done
		    && tw__cond_wait_until(&cr.cv, &cr.mtx, until)
		        != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&cr.mtx);
}

static void test_credit_race(void **state)
{
	(void)state;
	party p[NPARTY];
	pthread_mutex_init(&cr.mtx, NULL);
	tw__cond_init(&cr.cv);
	tw_desc *d = make_desc("credit", NULL);
	TW_PASS(tw_desc_set(d, TW_OPT_RECV_BUFFER, CR_WINDOW));
	TW_PASS(tw_desc_set(d, TW_OPT_RECV_TIMEOUT_MS, CR_TIMEOUT_MS));
	create_pair(d, d, p);
	TW_PASS(p[0].status);
	TW_PASS(p[1].status);
	// Half the window taken: the receiver grants it, and a take then
	// grants credit itself only from the next half on (`due`).  Its
	// "ok" comes after that CREDIT, on the same connection.
	for (int i = 0; i < 2; i++)
		TW_PASS(tw_send(p[0].l, 1, "c", &i, sizeof(i)));
	for (int i = 0; i < 2; i++) {
		int v = -1;
		size_t len = 0;
		TW_PASS(tw_recv_into(p[1].l, 0, "c", &v, sizeof(v), &len));
		assert_int_equal(v, i);
	}
	TW_PASS(tw_send(p[1].l, 0, "ok", NULL, 0));
	tw_buf b = { 0 };
	TW_PASS(tw_recv(p[0].l, 1, "ok", &b));
	tw_buf_free(&b);
	cr.rx = p[1].l;
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, cr_taker, NULL), 0);
	atomic_store(&tw__tcp_credit_req_hook, cr_hook);
	// The window holds four small messages; the fifth asks for credit.
	for (int i = 2; i < 7; i++)
		TW_PASS(tw_send(p[0].l, 1, "c", &i, sizeof(i)));
	atomic_store(&tw__tcp_credit_req_hook, NULL);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_true(cr.done);
	assert_int_equal(cr.calls, 1);
	for (int i = 3; i < 7; i++) {
		int v = -1;
		size_t len = 0;
		TW_PASS(tw_recv_into(p[1].l, 0, "c", &v, sizeof(v), &len));
		assert_int_equal(v, i);
	}
	tw_link_close(p[0].l);
	tw_link_close(p[1].l);
	tw_desc_free(d);
	pthread_cond_destroy(&cr.cv);
	pthread_mutex_destroy(&cr.mtx);
}

// --- a peer that gives up a message being placed -------------------------------

// A raw socket that plays rank 0 of a link: frames it writes and reads.
typedef struct raw_peer {
	int fd;
	uint64_t seq; // the last frame it sent
} raw_peer;

// Writes all of buf to the non-blocking socket, waiting for room.
static void raw_write(int fd, const void *buf, size_t n)
{
	const unsigned char *b = buf;
	int64_t deadline = tw__now_ns() + tw_test_scale_ms(10000) * 1000000;
	while (n > 0) {
		ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			int64_t left = (deadline - tw__now_ns()) / 1000000;
			assert_true(left > 0);
			struct pollfd pfd = { .fd = fd, .events = POLLOUT };
			(void)poll(&pfd, 1, (int)left);
			continue;
		}
		assert_true(w > 0);
		b += w;
		n -= (size_t)w;
	}
}

// Sends a frame of the link's slot 0 (ack and received 0: the raw peer
// confirms nothing, which the other side may keep waiting for).
static void raw_send(raw_peer *r, uint8_t type, const char *key,
    const void *pre, size_t npre, const void *pay, size_t npay)
{
	unsigned char hdr[TW_TCP_HDR_LEN + TW_KEY_MAX];
	tw__tcp_hdr h = { .type = type,
		.len = npre + npay,
		.seq = ++r->seq,
		.key = key,
		.key_len = key != NULL ? strlen(key) : 0 };
	size_t n = tw__tcp_hdr_encode(hdr, sizeof(hdr), &h);
	assert_true(n > 0);
	raw_write(r->fd, hdr, n);
	raw_write(r->fd, pre, npre);
	raw_write(r->fd, pay, npay);
}

static void raw_read(int fd, void *buf, size_t n)
{
	unsigned char *b = buf;
	int64_t deadline = tw__now_ns() + tw_test_scale_ms(10000) * 1000000;
	while (n > 0) {
		int64_t left = (deadline - tw__now_ns()) / 1000000;
		assert_true(left > 0);
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		if (poll(&pfd, 1, (int)left) != 1)
			continue;
		ssize_t r = recv(fd, b, n, 0);
		assert_true(r > 0);
		b += r;
		n -= (size_t)r;
	}
}

// Reads one frame, whose payload may be 64 bytes at most, into *h (its
// key is not kept) and pay.
static void raw_next(raw_peer *r, tw__tcp_hdr *h, unsigned char pay[64])
{
	unsigned char buf[TW_TCP_HDR_LEN + TW_KEY_MAX];
	raw_read(r->fd, buf, TW_TCP_HDR_LEN);
	size_t klen = (size_t)buf[2] << 8 | buf[3];
	assert_true(klen < TW_KEY_MAX);
	raw_read(r->fd, buf + TW_TCP_HDR_LEN, klen);
	const char *why = NULL;
	int n = tw__tcp_hdr_decode(
	    buf, TW_TCP_HDR_LEN + klen, TW_TCP_FRAME_MAX, h, &why);
	assert_int_equal(n, (int)(TW_TCP_HDR_LEN + klen));
	assert_true(h->len <= 64);
	raw_read(r->fd, pay, (size_t)h->len);
	h->key = NULL;
}

// Reads frames until one of `type`; its payload, of `cap` bytes, goes
// to out.
static void raw_wait(raw_peer *r, uint8_t type, void *out, size_t cap)
{
	for (;;) {
		tw__tcp_hdr h;
		unsigned char pay[64];
		raw_next(r, &h, pay);
		if (h.type == type) {
			assert_int_equal(h.len, cap);
			memcpy(out, pay, cap);
			return;
		}
	}
}

// Rank 0 of link "lone" on a raw socket (its address sorts first: it
// dials), rank 1 a link of this process (o->l), without heartbeats: the
// raw socket answers nothing it is not told to.
static void raw_link_up(lone *o, raw_peer *r)
{
	*o = (lone) { .d = tw_desc_new("lone") };
	assert_non_null(o->d);
	TW_PASS(tw_desc_add_party(o->d, "raw", "tcp://127.0.0.1:1"));
	TW_PASS(tw_desc_add_party(o->d, "p1", addrs[1]));
	TW_PASS(tw_desc_set(
	    o->d, TW_OPT_CONNECT_TIMEOUT_MS, tw_test_scale_ms(10000)));
	TW_PASS(tw_desc_set(o->d, TW_OPT_HEARTBEAT_MS, 0));
	assert_int_equal(pthread_create(&o->th, NULL, lone_main, o), 0);
	*r = (raw_peer) { .fd = lone_dial(91) };
	tw__tcp_open op = {
		.rank = 0, .size = 2, .window = 64 << 20, .max_msg = 64 << 20
	};
	unsigned char opb[TW_TCP_OPEN_LEN];
	tw__tcp_open_encode(opb, &op);
	raw_send(r, TW_TCP_F_OPEN, "lone", opb, sizeof(opb), NULL, 0);
	char key[TW_KEY_MAX];
	tw__key_ctl(key, "lone", "hello");
	raw_send(r, TW_TCP_F_DATA, key, NULL, 0, NULL, 0);
	raw_wait(r, TW_TCP_F_OPEN, opb, sizeof(opb));
	assert_int_equal(pthread_join(o->th, NULL), 0);
	TW_PASS(o->status);
}

static void raw_link_down(lone *o, raw_peer *r)
{
	close(r->fd);
	tw_link_abort(o->l);
	tw_link_close(o->l);
	tw_desc_free(o->d);
}

static struct {
	pthread_mutex_t mtx;
	pthread_cond_t cv;
	bool posted;
} cp;

static void cp_hook(void)
{
	pthread_mutex_lock(&cp.mtx);
	cp.posted = true;
	pthread_cond_broadcast(&cp.cv);
	pthread_mutex_unlock(&cp.mtx);
}

enum { CP_TOTAL = 1 << 20 };

typedef struct cp_recv {
	tw_link *l;
	unsigned char *buf;
	size_t len;
	int status;
} cp_recv;

static void *cp_recv_main(void *arg)
{
	cp_recv *c = arg;
	c->status = tw_recv_into_timed(
	    c->l, 0, "t", c->buf, CP_TOTAL, tw_test_scale_ms(20000), &c->len);
	return NULL;
}

// A long message is being assembled in the buffer of the receive that
// waits for it (placed: its first chunk is there) when its sender gives
// it up (CANCEL).  Nothing more of it reaches that buffer (a late chunk
// is skipped), the receive goes on waiting and gets the next message of
// its tag, and the whole cost of the message given up comes back to the
// sender as credit.
static void test_cancel_placed(void **state)
{
	(void)state;
	pthread_mutex_init(&cp.mtx, NULL);
	tw__cond_init(&cp.cv);
	lone o;
	raw_peer r;
	raw_link_up(&o, &r);
	char key[TW_KEY_MAX];

	unsigned char *buf = malloc(CP_TOTAL);
	unsigned char *msg = malloc(TW_TCP_FRAME_MAX);
	assert_true(buf != NULL && msg != NULL);
	memset(buf, 0xee, CP_TOTAL);
	tw_test_fill(msg, TW_TCP_FRAME_MAX, 7, 0, 1);
	cp_recv rc = { .l = o.l, .buf = buf };
	atomic_store(&tw__tcp_post_hook, cp_hook);
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, cp_recv_main, &rc), 0);
	// The receive reads the connection itself from now on.
	int64_t until = tw__now_ns() + tw_test_scale_ms(10000) * 1000000;
	pthread_mutex_lock(&cp.mtx);
	while (!cp.posted
	    && tw__cond_wait_until(&cp.cv, &cp.mtx, until) != ETIMEDOUT)
		;
	bool posted = cp.posted;
	pthread_mutex_unlock(&cp.mtx);
	atomic_store(&tw__tcp_post_hook, NULL);
	assert_true(posted);

	tw__key_msg(key, "lone", "t");
	tw__tcp_chunk ck = { .id = 1, .total = CP_TOTAL };
	unsigned char pre[TW_TCP_CHUNK_PREFIX];
	tw__tcp_striped_encode(pre, &ck);
	raw_send(&r, TW_TCP_F_STRIPED, key, pre, TW_TCP_STRIPED_LEN, NULL, 0);
	tw__tcp_chunk_encode(pre, &ck);
	raw_send(
	    &r, TW_TCP_F_CHUNK, NULL, pre, sizeof(pre), msg, TW_TCP_FRAME_MAX);
	unsigned char cancel[TW_TCP_CANCEL_LEN];
	tw__tcp_cancel_encode(cancel, 1);
	raw_send(&r, TW_TCP_F_CANCEL, NULL, cancel, sizeof(cancel), NULL, 0);
	// A chunk of it that was on its way (over a stripe, in life) is
	// skipped.
	ck.offset = TW_TCP_FRAME_MAX;
	tw__tcp_chunk_encode(pre, &ck);
	raw_send(
	    &r, TW_TCP_F_CHUNK, NULL, pre, sizeof(pre), msg, TW_TCP_FRAME_MAX);
	raw_send(&r, TW_TCP_F_DATA, key, "new", 3, NULL, 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	TW_PASS(rc.status);
	assert_int_equal(rc.len, 3);
	assert_memory_equal(buf, "new", 3);
	// The chunk had been read into the buffer (placed); nothing came
	// after it there.
	assert_memory_equal(buf + 3, msg + 3, TW_TCP_FRAME_MAX - 3);
	for (size_t i = TW_TCP_FRAME_MAX; i < CP_TOTAL; i++)
		if (buf[i] != 0xee)
			fail_msg("byte %zu of the buffer was written", i);
	// Asked, the receiver grants what it took and what it dropped.
	raw_send(&r, TW_TCP_F_CREDIT_REQ, NULL, NULL, 0, NULL, 0);
	unsigned char cr8[TW_TCP_CREDIT_LEN];
	raw_wait(&r, TW_TCP_F_CREDIT, cr8, sizeof(cr8));
	uint64_t taken = 0;
	TW_PASS(tw__tcp_credit_decode(cr8, sizeof(cr8), &taken));
	assert_int_equal(taken, tw__msg_cost(CP_TOTAL) + tw__msg_cost(3));
	free(msg);
	free(buf);
	raw_link_down(&o, &r);
	pthread_cond_destroy(&cp.cv);
	pthread_mutex_destroy(&cp.mtx);
}

// The link of a raw peer, and a message of LM_TOTAL bytes (two chunks)
// for tag `tag` of it, filled with the pattern of `seed` and announced
// (STRIPED, id 1); *announced: that frame's number.  The chunks follow
// with long_msg_chunk.
enum { LM_TOTAL = 2 * TW_TCP_FRAME_MAX };

static unsigned char *long_msg_up(
    lone *o, raw_peer *r, uint32_t seed, const char *tag, uint64_t *announced)
{
	raw_link_up(o, r);
	unsigned char *msg = malloc(LM_TOTAL);
	assert_non_null(msg);
	tw_test_fill(msg, LM_TOTAL, seed, 0, 1);
	char key[TW_KEY_MAX];
	tw__key_msg(key, "lone", tag);
	tw__tcp_chunk ck = { .id = 1, .total = LM_TOTAL };
	unsigned char pre[TW_TCP_CHUNK_PREFIX];
	tw__tcp_striped_encode(pre, &ck);
	raw_send(r, TW_TCP_F_STRIPED, key, pre, TW_TCP_STRIPED_LEN, NULL, 0);
	*announced = r->seq;
	return msg;
}

// Sends chunk i (0 or 1) of long_msg_up's message msg.
static void long_msg_chunk(raw_peer *r, const unsigned char *msg, int i)
{
	tw__tcp_chunk ck = { .id = 1,
		.total = LM_TOTAL,
		.offset = (uint64_t)i * TW_TCP_FRAME_MAX };
	unsigned char pre[TW_TCP_CHUNK_PREFIX];
	tw__tcp_chunk_encode(pre, &ck);
	raw_send(r, TW_TCP_F_CHUNK, NULL, pre, sizeof(pre), msg + ck.offset,
	    TW_TCP_FRAME_MAX);
}

// long_msg_up, its first chunk, and a PING: the sender asks for the ack
// that the hold on acks keeps short of the announcement.
static unsigned char *long_msg_asked(
    lone *o, raw_peer *r, uint32_t seed, const char *tag, uint64_t *announced)
{
	unsigned char *msg = long_msg_up(o, r, seed, tag, announced);
	long_msg_chunk(r, msg, 0);
	raw_send(r, TW_TCP_F_PING, NULL, NULL, 0, NULL, 0);
	return msg;
}

// Receives long_msg_up's message msg (freed) under `tag`, whole, and takes
// the link down.
static void long_msg_taken(
    lone *o, raw_peer *r, const char *tag, unsigned char *msg)
{
	tw_buf b = { 0 };
	TW_PASS(tw_recv(o->l, 0, tag, &b));
	assert_int_equal(b.len, LM_TOTAL);
	assert_memory_equal(b.data, msg, LM_TOTAL);
	tw_buf_free(&b);
	free(msg);
	raw_link_down(o, r);
}

// The chunk that completes a long message counts as handled before the
// message can be taken: the ACK that the end of the hold on acks sends
// (the sender asked with a PING meanwhile) confirms it, and acknowledges
// it, so that the sender's ring lets it go.  Before, that ACK stopped one
// frame short, and the sender kept the chunk until the next frame.
static void test_last_chunk_acked(void **state)
{
	(void)state;
	lone o;
	raw_peer r;
	uint64_t announced;
	unsigned char *msg = long_msg_asked(&o, &r, 8, "u", &announced);
	long_msg_chunk(&r, msg, 1);
	uint64_t last = r.seq;
	// The acks stay short of the announcement while the message is
	// incomplete; the first that passes it covers the last chunk.
	tw__tcp_hdr h;
	unsigned char pay[64];
	do
		raw_next(&r, &h, pay);
	while (h.ack < announced);
	assert_int_equal(h.rcvd, last);
	assert_int_equal(h.ack, last);
	long_msg_taken(&o, &r, "u", msg);
}

static _Atomic uint64_t delivered_ack; // what the hook saw, plus one

static void delivered_hook(tcp_conn *main)
{
	atomic_store(&delivered_ack, tw__tcp_conn_ack_out(main) + 1);
}

// The acks pass a long message before it is delivered, not after: a
// receiver that takes the message and closes its link at once sends an
// UNBIND whose ack covers the message.  When the hold on acks ended after
// the delivery, such an UNBIND acknowledged only what came before the
// announcement, and the sender's tw_link_wait_pending failed with
// TW_EPEER (seen in the conformance case large, striped, on one CPU).
static void test_acked_before_delivery(void **state)
{
	(void)state;
	lone o;
	raw_peer r;
	atomic_store(&delivered_ack, 0);
	atomic_store(&tw__tcp_sx_deliver_hook, delivered_hook);
	uint64_t announced;
	unsigned char *msg = long_msg_up(&o, &r, 9, "v", &announced);
	long_msg_chunk(&r, msg, 0);
	long_msg_chunk(&r, msg, 1);
	uint64_t last = r.seq;
	tw_buf b = { 0 };
	TW_PASS(tw_recv(o.l, 0, "v", &b));
	atomic_store(&tw__tcp_sx_deliver_hook, NULL);
	assert_int_equal(b.len, LM_TOTAL);
	assert_memory_equal(b.data, msg, LM_TOTAL);
	tw_buf_free(&b);
	// As the message was delivered, the ack already covered it.
	uint64_t seen = atomic_load(&delivered_ack);
	assert_true(seen != 0);
	assert_true(seen - 1 >= announced);
	assert_int_equal(seen - 1, last);
	// And so does the UNBIND of a link closed at once.
	tw_link_close(o.l);
	o.l = NULL;
	tw__tcp_hdr h;
	unsigned char pay[64];
	do
		raw_next(&r, &h, pay);
	while (h.type != TW_TCP_F_UNBIND);
	assert_int_equal(h.ack, last);
	free(msg);
	close(r.fd);
	tw_desc_free(o.d);
}

static _Atomic int hook_fd = -1; // the raw peer's socket
static _Atomic int unread_at_delivery; // bytes waiting in it then

static void unread_hook(tcp_conn *main)
{
	(void)main;
	int n = -1;
	if (ioctl(atomic_load(&hook_fd), FIONREAD, &n) != 0)
		n = -1;
	atomic_store(&unread_at_delivery, n);
}

// The ACK that the end of the hold on acks sends to a sender that asked
// goes out once the message it confirms is in the mailbox, not before:
// tw_link_wait_pending promises that its messages arrived.  With the ACK
// sent as the hold ended, before the delivery, a receiver that learnt
// from the sender that all had arrived could find the last message
// missing (seen once in the conformance case wait_pending_long).
static void test_ack_after_delivery(void **state)
{
	(void)state;
	lone o;
	raw_peer r;
	uint64_t announced;
	unsigned char *msg = long_msg_asked(&o, &r, 10, "w", &announced);
	tw__tcp_hdr h;
	unsigned char pay[64];
	do
		raw_next(&r, &h, pay);
	while (h.type != TW_TCP_F_PONG);
	assert_true(h.ack < announced);
	atomic_store(&hook_fd, r.fd);
	atomic_store(&unread_at_delivery, -1);
	atomic_store(&tw__tcp_sx_deliver_hook, unread_hook);
	long_msg_chunk(&r, msg, 1);
	uint64_t last = r.seq;
	do
		raw_next(&r, &h, pay);
	while (h.ack < last);
	atomic_store(&tw__tcp_sx_deliver_hook, NULL);
	assert_int_equal(h.type, TW_TCP_F_ACK);
	// Nothing had been sent back when the message was delivered.
	assert_int_equal(atomic_load(&unread_at_delivery), 0);
	long_msg_taken(&o, &r, "w", msg);
}

// --- a peer whose stripe ends before its main connection ------------------

// The raw peer's stripe ends, and a connect to its listening address
// (port 1) is refused, as for a process that is gone or closing, while
// its main connection is still up: the frames that come after on the main
// connection are delivered, and the main connection's own end fails the
// peer.  When the stripe's refusal failed the peer at once, what the main
// connection still held unread was lost (seen as a last UNBIND's ack
// missing when a striped peer closed).
static void test_stripe_end_waits_for_main(void **state)
{
	(void)state;
	lone o;
	raw_peer r;
	raw_link_up(&o, &r);
	raw_peer st = { .fd = lone_dial_stripe(91, 1) };
	// Answered on the stripe: the link reads it.
	raw_send(&st, TW_TCP_F_PING, NULL, NULL, 0, NULL, 0);
	tw__tcp_hdr h;
	unsigned char pay[64];
	do
		raw_next(&st, &h, pay);
	while (h.type != TW_TCP_F_PONG);
	uint64_t refused = atomic_load(&tw__tcp_resume_refused);
	close(st.fd);
	// The resumer probes the port (every 100 ms) and finds it refusing.
	int64_t until = tw__now_ns() + tw_test_scale_ms(10000) * 1000000;
	while (atomic_load(&tw__tcp_resume_refused) == refused
	    && tw__now_ns() < until) {
		struct timespec ts = { .tv_nsec = 5000000 };
		nanosleep(&ts, NULL);
	}
	assert_true(atomic_load(&tw__tcp_resume_refused) > refused);
	char key[TW_KEY_MAX];
	tw__key_msg(key, "lone", "last");
	raw_send(&r, TW_TCP_F_DATA, key, "end", 3, NULL, 0);
	tw_buf b = { 0 };
	TW_PASS(tw_recv(o.l, 0, "last", &b));
	assert_int_equal(b.len, 3);
	assert_memory_equal(b.data, "end", 3);
	tw_buf_free(&b);
	// Then the main connection ends: TW_EPEER at once, not at the
	// receive timeout.
	shutdown(r.fd, SHUT_WR);
	int64_t t0 = tw__now_ns();
	TW_FAIL(tw_recv(o.l, 0, "more", &b), TW_EPEER);
	assert_true(tw__now_ns() - t0 < tw_test_scale_ms(4000) * 1000000);
	raw_link_down(&o, &r);
}

int main(void)
{
	const char *child = getenv("TW_TCP_TEST_CHILD");
	if (child != NULL)
		return sigkill_child(child);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(
		    test_shared_listener, setup, teardown),
		cmocka_unit_test_setup_teardown(test_secret, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sigkill, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flood, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_cancel_placed, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_last_chunk_acked, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_acked_before_delivery, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_ack_after_delivery, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_bad_frames, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_strangers, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_credit_race, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_stripe_end_waits_for_main, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
