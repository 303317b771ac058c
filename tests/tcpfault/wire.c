// tcp:// fault tests that speak the wire themselves, as a stranger or as a
// fake peer, with the library's record encoders and its HMAC
// (internal: transport/tcp/tcp_proto.h and tcp_auth.h); the parties use
// the public API.  Program tcpfault_wire, ctest entries tcpfault_NAME.
//
// stranger_claims_rank: rank 1 of a link with a secret is created first
// and waits (rank 0's address sorts first: rank 0 dials).  A stranger
// connects claiming rank 0 with a wrong secret (its proof fails), another
// claiming it without one; each is closed.  Then the real rank 0 arrives:
// both creations succeed and a message passes.  A stranger must not make
// a party's creation fail.
//
// stranger_claims_rank_alone: the same stranger, and the real rank 0 never
// comes: rank 1 gets TW_EAUTH (not TW_ETIMEDOUT) at its connect timeout,
// not before.
//
// reset_before_open: a fake peer listens at the address of the rank that
// the real party dials, answers the handshake, and resets the connection
// (SO_LINGER {1, 0}, then close) at once, or once the OPEN that follows
// starts to arrive, or once the OPEN's header is in; 50 times, each with a
// new party process, so that every moment of the race is hit.  No OPEN
// ever answers, so tw_link_create cannot succeed; it dials again after
// each reset (the peer may be restarting) and must return an error within
// its connect timeout (plus 1 s, scaled), never hang.  The timeout is
// short, since each run spends all of it.

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "parts.h"
#include "testutil.h"
#include "tf.h"
#include "transport/tcp/tcp_auth.h"
#include "transport/tcp/tcp_proto.h"

const char *tf_size_arg = "0";

#define SECRET "the-link-secret"

// --- bytes on a socket ---------------------------------------------------------

static int dial_port(unsigned port, int64_t deadline_ms)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
		.sin_port = htons((uint16_t)port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	for (;;) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_true(fd >= 0);
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return fd;
		close(fd);
		if (tf_now_ms() > deadline_ms)
			return -1;
		struct pollfd none;
		poll(&none, 0, 5); // the party has not bound its port yet
	}
}

// 0, -1 at EOF or on error, -2 at the deadline.
static int read_exact(int fd, void *buf, size_t n, int64_t deadline_ms)
{
	unsigned char *p = buf;
	while (n > 0) {
		int64_t left = deadline_ms - tf_now_ms();
		if (left <= 0)
			return -2;
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		if (poll(&pfd, 1, (int)left) <= 0)
			continue;
		ssize_t r = recv(fd, p, n, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static int write_all(int fd, const void *buf, size_t n)
{
	const unsigned char *p = buf;
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

// Reads one HELLO into buf (TW_TCP_HELLO_MAX bytes) and decodes it.
static int read_hello(
    int fd, unsigned char *buf, tw__tcp_hello *h, int64_t deadline_ms)
{
	if (read_exact(fd, buf, TW_TCP_HELLO_FIXED, deadline_ms) != 0)
		return -1;
	size_t total = TW_TCP_HELLO_FIXED + buf[14] + buf[15];
	if (read_exact(fd, buf + TW_TCP_HELLO_FIXED,
	        total - TW_TCP_HELLO_FIXED, deadline_ms)
	    != 0)
		return -1;
	const char *why = NULL;
	return tw__tcp_hello_decode(buf, total, h, &why) > 0 ? 0 : -1;
}

typedef struct me {
	const char *link;
	uint32_t rank;
	uint16_t flags;
	uint64_t instance;
	uint64_t session; // a dialer's own; an acceptor echoes the dialer's
	unsigned char nonce[TW_TCP_NONCE_LEN];
	char addr[64];
} me;

static void me_init(
    me *m, const char *link, uint32_t rank, uint16_t flags, unsigned port)
{
	m->link = link;
	m->rank = rank;
	m->flags = flags;
	assert_int_equal(tw__tcp_random(&m->instance, sizeof(m->instance)), 0);
	m->instance |= 1;
	m->session = m->instance ^ 0x5a5a;
	assert_int_equal(tw__tcp_random(m->nonce, sizeof(m->nonce)), 0);
	snprintf(m->addr, sizeof(m->addr), "127.0.0.1:%u", port);
}

static int send_hello(int fd, const me *m)
{
	tw__tcp_hello h = { .flags = m->flags,
		.rank = m->rank,
		.instance = m->instance,
		.session = m->session,
		.link_id = m->link,
		.link_id_len = strlen(m->link),
		.addr = m->addr,
		.addr_len = strlen(m->addr) };
	memcpy(h.nonce, m->nonce, sizeof(h.nonce));
	unsigned char buf[TW_TCP_HELLO_MAX];
	size_t n = tw__tcp_hello_encode(buf, sizeof(buf), &h);
	assert_true(n > 0);
	return write_all(fd, buf, n);
}

// Whether the peer closes (or resets) the connection before the deadline;
// what it sends meanwhile is read and dropped.
static bool closed_by_peer(int fd, int64_t deadline_ms)
{
	for (;;) {
		int64_t left = deadline_ms - tf_now_ms();
		if (left <= 0)
			return false;
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		if (poll(&pfd, 1, (int)left) <= 0)
			continue;
		char buf[512];
		ssize_t r = recv(fd, buf, sizeof(buf), 0);
		if (r == 0 || (r < 0 && errno != EINTR))
			return true;
	}
}

// --- stranger_claims_rank ----------------------------------------------------------

// claim_party PORT0 PORT1 RANK TIMEOUT_MS REPORT_FD: reports "STATUS MS"
// of its tw_link_create; when the link is up, rank 0 sends a message that
// rank 1 checks.
static int role_claim_party(int argc, char **argv)
{
	unsigned ports[2] = { (unsigned)strtoul(argv[0], NULL, 10),
		(unsigned)strtoul(argv[1], NULL, 10) };
	size_t rank = strtoul(argv[2], NULL, 10);
	int64_t timeout = strtoll(argv[3], NULL, 10);
	int report = atoi(argv[4]);
	tf_who = rank == 0 ? "rank 0" : "rank 1";
	tw_desc *d = tf_desc("claim", ports, 2, timeout, tf_scale_ms(10000));
	TF_OK(tw_desc_set_secret(d, SECRET, sizeof(SECRET) - 1));
	tw_link *l = NULL;
	int64_t t0 = tf_now_ms();
	int st = tw_link_create(d, rank, &l);
	if (tf_say(report, "%d %lld", st, (long long)(tf_now_ms() - t0)) != 0)
		tf_die("cannot report");
	if (st == TW_OK) {
		tw_buf b = { 0 };
		if (rank == 0) {
			TF_OK(tw_send(l, 1, "m", "real", 4));
		} else {
			TF_OK(tw_recv(l, 0, "m", &b));
			if (b.len != 4 || memcmp(b.data, "real", 4) != 0)
				tf_die("wrong message from rank 0");
			tw_buf_free(&b);
		}
		TF_OK(tw_barrier(l, "end"));
		st = tw_link_close(l);
		if (st != TW_OK && st != TW_EPEER)
			tf_die("tw_link_close: %s", tw_err_name(st));
	}
	tw_desc_free(d);
	return 0;
}

// A stranger at rank 1's port claims rank 0, with a wrong secret
// (with_secret) or none; rank 1 must close the connection.  False when
// nothing listens there (rank 1's creation ended, or never began).
static bool stranger(unsigned port0, unsigned port1, bool with_secret)
{
	int64_t deadline = tf_now_ms() + tf_scale_ms(10000);
	int fd = dial_port(port1, deadline);
	if (fd < 0)
		return false;
	me m;
	me_init(&m, "claim", 0, with_secret ? TW_TCP_CAP_SECRET : 0, port0);
	assert_int_equal(send_hello(fd, &m), 0);
	if (with_secret) {
		unsigned char buf[TW_TCP_HELLO_MAX];
		tw__tcp_hello h;
		if (read_hello(fd, buf, &h, deadline) != 0)
			fail_msg("rank 1 did not answer the stranger's "
			         "handshake");
		assert_int_equal(h.rank, 1);
		unsigned char theirs[TW_TCP_AUTH_LEN];
		if (read_exact(fd, theirs, sizeof(theirs), deadline) != 0)
			fail_msg("rank 1 sent no proof");
		// A proof, bound to this connection's nonces, of another
		// secret.
		static const char wrong[] = "not-the-link-secret";
		unsigned char mac[TW_TCP_MAC_LEN], rec[TW_TCP_AUTH_LEN];
		assert_int_equal(
		    tw__tcp_auth_proof(wrong, sizeof(wrong) - 1, h.nonce,
		        m.nonce, m.instance, 0, "claim", 5, mac),
		    0);
		assert_true(tw__tcp_auth_encode(rec, sizeof(rec), mac) > 0);
		assert_int_equal(write_all(fd, rec, sizeof(rec)), 0);
	}
	if (!closed_by_peer(fd, tf_now_ms() + tf_scale_ms(5000)))
		fail_msg("rank 1 kept the connection of a stranger %s",
		    with_secret ? "with a wrong secret" : "without a secret");
	close(fd);
	return true;
}

static pid_t spawn_party(
    const unsigned *ports, size_t rank, int64_t timeout, int report_fd)
{
	char p0[16], p1[16], r[4], t[24], fd[16];
	snprintf(p0, sizeof(p0), "%u", ports[0]);
	snprintf(p1, sizeof(p1), "%u", ports[1]);
	snprintf(r, sizeof(r), "%zu", rank);
	snprintf(t, sizeof(t), "%lld", (long long)timeout);
	snprintf(fd, sizeof(fd), "%d", report_fd);
	const char *args[] = { p0, p1, r, t, fd, NULL };
	pid_t pid = tf_spawn("claim_party", args, &report_fd, 1);
	assert_true(pid > 0);
	return pid;
}

static void hear_status(
    int fd, const char *who, int64_t deadline, int *st, long long *ms)
{
	char line[64];
	if (tf_hear(fd, line, sizeof(line), deadline) < 0
	    || sscanf(line, "%d %lld", st, ms) != 2)
		fail_msg("%s did not report its tw_link_create", who);
	printf("%s: tw_link_create: %s after %lld ms\n", who, tw_err_name(*st),
	    *ms);
}

static void test_stranger_claims_rank(void **state)
{
	unsigned ports[2];
	assert_int_equal(tf_ports(ports, 2, NULL, 0), 0);
	int r1[2], r0[2];
	tf_pipe(r1);
	tf_pipe(r0);
	int64_t timeout = tf_scale_ms(10000);
	pid_t pids[2];
	pids[1] = spawn_party(ports, 1, timeout, r1[1]);
	close(r1[1]);
	int64_t deadline = tf_now_ms() + timeout + tf_scale_ms(5000);
	int st0, st1;
	long long ms0, ms1;
	for (int i = 0; i < 2; i++) {
		if (stranger(ports[0], ports[1], i == 0))
			continue;
		hear_status(r1[0], "rank 1", deadline, &st1, &ms1);
		fail_msg("rank 1's tw_link_create ended (%s after %lld ms) "
		         "before the real rank 0 came: a stranger made it "
		         "fail",
		    tw_err_name(st1), ms1);
	}
	pids[0] = spawn_party(ports, 0, timeout, r0[1]);
	close(r0[1]);
	hear_status(r1[0], "rank 1", deadline, &st1, &ms1);
	hear_status(r0[0], "rank 0", deadline, &st0, &ms0);
	static const char *const names[] = { "rank 0", "rank 1" };
	char why[256];
	bool ok = tf_wait_all(pids, names, 2, tf_now_ms() + tf_scale_ms(20000),
	    why, sizeof(why));
	close(r0[0]);
	close(r1[0]);
	TW_PASS(st1);
	TW_PASS(st0);
	if (!ok)
		fail_msg("%s", why);
}

static void test_stranger_claims_rank_alone(void **state)
{
	unsigned ports[2];
	assert_int_equal(tf_ports(ports, 2, NULL, 0), 0);
	int r1[2];
	tf_pipe(r1);
	int64_t timeout = tf_scale_ms(1500);
	pid_t pid = spawn_party(ports, 1, timeout, r1[1]);
	close(r1[1]);
	if (!stranger(ports[0], ports[1], true))
		fail_msg("rank 1 never listened on port %u", ports[1]);
	int st;
	long long ms;
	hear_status(r1[0], "rank 1", tf_now_ms() + timeout + tf_scale_ms(5000),
	    &st, &ms);
	tf_end e = tf_wait(pid, tf_now_ms() + tf_scale_ms(10000));
	close(r1[0]);
	TW_FAIL(st, TW_EAUTH);
	assert_true(ms >= timeout - 20);
	assert_true(ms <= timeout + tf_scale_ms(1500));
	char how[96];
	if (!(e.done && e.exited && e.code == 0))
		fail_msg("rank 1: %s", tf_end_str(&e, how, sizeof(how)));
}

// --- reset_before_open -------------------------------------------------------------

#define RESET_RUNS 50

// open_party PORT_SELF PORT_FAKE TIMEOUT_MS REPORT_FD [RANK]: rank 0 (or
// RANK) of a link whose rank 1 is the fake (or the real party); reports
// "STATUS MS".  Once up, rank 0 sends a message that rank 1 checks.
static int role_open_party(int argc, char **argv)
{
	tf_who = "party";
	unsigned ports[2] = { (unsigned)strtoul(argv[0], NULL, 10),
		(unsigned)strtoul(argv[1], NULL, 10) };
	int64_t timeout = strtoll(argv[2], NULL, 10);
	size_t rank = argc > 4 ? (size_t)atoi(argv[4]) : 0;
	tw_desc *d = tf_desc("rst", ports, 2, timeout, tf_scale_ms(10000));
	tw_link *l = NULL;
	int64_t t0 = tf_now_ms();
	int st = tw_link_create(d, rank, &l);
	if (st == TW_OK && rank == 0)
		st = tw_send(l, 1, "up", "yes", 3);
	tw_buf b = { 0 };
	if (st == TW_OK && rank == 1 && (st = tw_recv(l, 0, "up", &b)) == TW_OK
	    && (b.len != 3 || memcmp(b.data, "yes", 3) != 0))
		st = TW_EPROTO;
	tw_buf_free(&b);
	if (tf_say(atoi(argv[3]), "%d %lld", st, (long long)(tf_now_ms() - t0))
	    != 0)
		tf_die("cannot report");
	if (l != NULL)
		tw_link_close(l);
	tw_desc_free(d);
	return 0;
}

static void reset(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

// The fake's side of one connection: the handshake, then a reset at the
// moment `when` says.
static void fake_one(int fd, unsigned port, int when)
{
	int64_t deadline = tf_now_ms() + tf_scale_ms(2000);
	unsigned char buf[TW_TCP_HELLO_MAX];
	tw__tcp_hello h;
	if (read_hello(fd, buf, &h, deadline) == 0) {
		char link[256];
		snprintf(
		    link, sizeof(link), "%.*s", (int)h.link_id_len, h.link_id);
		me m;
		me_init(&m, link, 1, 0, port);
		m.session = h.session;
		(void)send_hello(fd, &m);
		unsigned char hdr[TW_TCP_HDR_LEN];
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		if (when == 1) // as the OPEN starts to arrive
			(void)poll(&pfd, 1, (int)tf_scale_ms(2000));
		else if (when == 2) // once its header is in
			(void)read_exact(fd, hdr, sizeof(hdr), deadline);
	}
	reset(fd);
}

static void test_reset_before_open(void **state)
{
	int64_t timeout = tf_scale_ms(300);
	int statuses[16] = { 0 };
	int64_t worst = 0;
	for (int run = 0; run < RESET_RUNS; run++) {
		int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_true(lfd >= 0);
		struct sockaddr_in sa = { .sin_family = AF_INET,
			.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		socklen_t len = sizeof(sa);
		assert_int_equal(
		    bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
		assert_int_equal(listen(lfd, 16), 0);
		assert_int_equal(
		    getsockname(lfd, (struct sockaddr *)&sa, &len), 0);
		unsigned ports[2] = { 0, ntohs(sa.sin_port) };
		do // the party's address sorts first: it dials the fake
			assert_int_equal(tf_ports(ports, 1, &ports[1], 1), 0);
		while (!tf_addr_before(ports[0], ports[1]));
		int rep[2];
		tf_pipe(rep);
		char p0[16], p1[16], t[24], fd[16];
		snprintf(p0, sizeof(p0), "%u", ports[0]);
		snprintf(p1, sizeof(p1), "%u", ports[1]);
		snprintf(t, sizeof(t), "%lld", (long long)timeout);
		snprintf(fd, sizeof(fd), "%d", rep[1]);
		const char *args[] = { p0, p1, t, fd, NULL };
		pid_t pid = tf_spawn("open_party", args, &rep[1], 1);
		assert_true(pid > 0);
		close(rep[1]);

		// Every connection the party makes gets the same treatment,
		// until it reports.
		int64_t deadline = tf_now_ms() + timeout + tf_scale_ms(5000);
		int accepted = 0;
		char line[64] = "";
		bool reported = false, gone = false;
		while (!reported && !gone && tf_now_ms() < deadline) {
			struct pollfd p[2] = { { .fd = lfd, .events = POLLIN },
				{ .fd = rep[0], .events = POLLIN } };
			if (poll(p, 2, 100) <= 0)
				continue;
			if (p[0].revents & POLLIN) {
				int cfd
				    = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
				if (cfd >= 0) {
					accepted++;
					fake_one(cfd, ports[1], run % 3);
				}
			}
			if (p[1].revents & (POLLIN | POLLHUP)) {
				int r = tf_hear(rep[0], line, sizeof(line),
				    tf_now_ms() + 1000);
				reported = r >= 0;
				gone = r == -1; // it ended without a word
			}
		}
		close(lfd);
		close(rep[0]);
		tf_end e = tf_wait(pid, tf_now_ms() + tf_scale_ms(10000));
		char how[96];
		if (gone)
			fail_msg("run %d: the party ended before its "
			         "tw_link_create returned: %s",
			    run, tf_end_str(&e, how, sizeof(how)));
		if (!reported)
			fail_msg(
			    "run %d: tw_link_create still running %lld ms "
			    "after it began (connect timeout %lld ms)",
			    run, (long long)(timeout + tf_scale_ms(5000)),
			    (long long)timeout);
		int st;
		long long ms;
		assert_int_equal(sscanf(line, "%d %lld", &st, &ms), 2);
		if (!(e.done && e.exited && e.code == 0))
			fail_msg("run %d: party: %s", run,
			    tf_end_str(&e, how, sizeof(how)));
		if (accepted == 0)
			fail_msg(
			    "run %d: the party never dialed the fake", run);
		if (st == TW_OK)
			fail_msg("run %d: tw_link_create succeeded, but no "
			         "peer ever opened the link",
			    run);
		if (ms > timeout + tf_scale_ms(1000))
			fail_msg("run %d: tw_link_create returned %s after "
			         "%lld ms (connect timeout %lld ms)",
			    run, tw_err_name(st), ms, (long long)timeout);
		statuses[-st < 16 ? -st : 15]++;
		worst = ms > worst ? ms : worst;
	}
	printf("%d runs, slowest %lld ms:", RESET_RUNS, (long long)worst);
	for (int i = 0; i < 16; i++)
		if (statuses[i] > 0)
			printf(" %s x%d", tw_err_name(-i), statuses[i]);
	printf("\n");
}

// A peer that restarts while the link is being created: its first
// connections are reset right after the handshake (its old process, played
// by the fake), then its new process listens at the same address.  The
// party dials again after each reset, and the link comes up.
static void test_reset_then_peer(void **state)
{
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(lfd >= 0);
	int one = 1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sa = { .sin_family = AF_INET,
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 16), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &len), 0);
	unsigned ports[2] = { 0, ntohs(sa.sin_port) };
	do // the party's address sorts first: it dials the peer
		assert_int_equal(tf_ports(ports, 1, &ports[1], 1), 0);
	while (!tf_addr_before(ports[0], ports[1]));
	int rep0[2], rep1[2];
	tf_pipe(rep0);
	tf_pipe(rep1);
	char p0[16], p1[16], t[24], fd0[16], fd1[16];
	snprintf(p0, sizeof(p0), "%u", ports[0]);
	snprintf(p1, sizeof(p1), "%u", ports[1]);
	snprintf(t, sizeof(t), "%lld", (long long)tf_scale_ms(10000));
	snprintf(fd0, sizeof(fd0), "%d", rep0[1]);
	snprintf(fd1, sizeof(fd1), "%d", rep1[1]);
	const char *args0[] = { p0, p1, t, fd0, "0", NULL };
	pid_t pids[2];
	pids[0] = tf_spawn("open_party", args0, &rep0[1], 1);
	assert_true(pids[0] > 0);
	close(rep0[1]);
	// Its old process: three connections reset, at each moment.
	for (int k = 0; k < 3; k++) {
		struct pollfd pfd = { .fd = lfd, .events = POLLIN };
		if (poll(&pfd, 1, (int)tf_scale_ms(10000)) != 1)
			fail_msg(
			    "the party stopped dialing after %d resets", k);
		int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		assert_true(cfd >= 0);
		fake_one(cfd, ports[1], k);
	}
	close(lfd);
	// Its new process.
	const char *args1[] = { p0, p1, t, fd1, "1", NULL };
	pids[1] = tf_spawn("open_party", args1, &rep1[1], 1);
	assert_true(pids[1] > 0);
	close(rep1[1]);
	char line[64];
	int st;
	long long ms;
	int64_t deadline = tf_now_ms() + tf_scale_ms(20000);
	assert_true(tf_hear(rep0[0], line, sizeof(line), deadline) >= 0);
	assert_int_equal(sscanf(line, "%d %lld", &st, &ms), 2);
	TW_PASS(st);
	assert_true(tf_hear(rep1[0], line, sizeof(line), deadline) >= 0);
	assert_int_equal(sscanf(line, "%d %lld", &st, &ms), 2);
	TW_PASS(st);
	static const char *const names[] = { "party", "peer" };
	char why[256];
	bool ok = tf_wait_all(pids, names, 2, tf_now_ms() + tf_scale_ms(20000),
	    why, sizeof(why));
	close(rep0[0]);
	close(rep1[0]);
	if (!ok)
		fail_msg("%s", why);
}

int main(int argc, char **argv)
{
	static const tf_role roles[] = {
		{ "claim_party", role_claim_party },
		{ "open_party", role_open_party },
	};
	int handled;
	int rc = tf_run_role(
	    argc, argv, roles, sizeof(roles) / sizeof(roles[0]), &handled);
	if (handled)
		return rc;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stranger_claims_rank),
		cmocka_unit_test(test_stranger_claims_rank_alone),
		cmocka_unit_test(test_reset_before_open),
		cmocka_unit_test(test_reset_then_peer),
	};
	if (argc < 2) {
		fprintf(stderr, "usage: %s TEST\n", argv[0]);
		return 1;
	}
	if (tw_test_select(
	        tests, sizeof(tests) / sizeof(tests[0]), "test_", argv[1])
	    != 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
