// Tests of the accepting side of tcp:// handshakes, against a real node:
// a link is being created at the node's address (rank 1) and waits for a
// rank 0 that the test plays with a raw socket, so that every handshake
// goes through the node's I/O thread.  Proper handshakes with and without
// a secret; wrong and missing secrets; a link the node does not have;
// strangers that send garbage, a wrong version, 64 KiB of zeros, their
// bytes too slowly, or nothing at all; more connections from one address
// than the node serves at once; and a listener out of descriptors, which
// must pause rather than spin.  Every hostile peer finds its connection
// closed within the node's bounds, and the node serves a proper party
// afterwards.  Waits are on descriptors and joins; the one timed window
// (the descriptor test) measures CPU use, it synchronises nothing.

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/clock.h"
#include "testutil.h"
#include "transport/tcp/tcp.h"
#include "transport/tcp/tcp_sock.h"

static int64_t ms_ns(int64_t ms)
{
	return tw_test_scale_ms(ms) * 1000000;
}

// A link at the node (rank 1) waiting for rank 0, on a thread.
typedef struct node_link {
	tw__tcp_listener *held; // keeps the port for the node
	char addr[64];
	tw_desc *d;
	int status;
	tw_link *l;
	pthread_t th;
} node_link;

static void *create_main(void *arg)
{
	node_link *n = arg;
	n->status = tw_link_create(n->d, 1, &n->l);
	return NULL;
}

// Starts link "acc" (with `secret`, NULL for none) at a node, waiting up
// to connect_ms for its rank 0, which the test plays: its address sorts
// first, so it connects.
static void node_start(node_link *n, const char *secret, int64_t connect_ms)
{
	memset(n, 0, sizeof(*n));
	TW_PASS(tw__tcp_listener_get("tcp://127.0.0.1:0", &n->held));
	snprintf(n->addr, sizeof(n->addr), "tcp://%s",
	    tw__tcp_listener_name(n->held));
	n->d = tw_desc_new("acc");
	assert_non_null(n->d);
	TW_PASS(tw_desc_add_party(n->d, "raw", "tcp://127.0.0.1:1"));
	TW_PASS(tw_desc_add_party(n->d, "node", n->addr));
	TW_PASS(tw_desc_set(
	    n->d, TW_OPT_CONNECT_TIMEOUT_MS, tw_test_scale_ms(connect_ms)));
	if (secret != NULL)
		TW_PASS(tw_desc_set_secret(n->d, secret, strlen(secret)));
	assert_int_equal(pthread_create(&n->th, NULL, create_main, n), 0);
}

// Joins the link's creation, which fails: its rank 0 never opened it.
static void node_stop(node_link *n)
{
	pthread_join(n->th, NULL);
	assert_int_not_equal(n->status, TW_OK);
	tw_desc_free(n->d);
	tw__tcp_listener_put(n->held);
}

static int dial(const node_link *n, int *fd)
{
	return tw__tcp_dial("127.0.0.1", tw__tcp_listener_port(n->held),
	    tw__now_ns() + ms_ns(5000), NULL, fd);
}

// A proper connecting handshake as rank 0 of `link`.
static int dial_hs(const node_link *n, const char *link, const char *secret,
    tw__tcp_hs_peer *peer)
{
	int fd;
	TW_PASS(dial(n, &fd));
	tw__tcp_hs_self me = { .link_id = link,
		.rank = 0,
		.instance = 99,
		.session = 4242,
		.addr = "127.0.0.1:1",
		.secret = secret,
		.secret_len = secret ? strlen(secret) : 0 };
	int status = tw__tcp_handshake(
	    fd, &me, tw__now_ns() + ms_ns(5000), NULL, peer);
	close(fd);
	return status;
}

// Whether the node closed fd within `ms`: EOF or a reset.
static bool closed_within(int fd, int64_t ms)
{
	int64_t deadline = tw__now_ns() + ms_ns(ms);
	for (bool once = true;; once = false) {
		int64_t left = (deadline - tw__now_ns()) / 1000000;
		if (left <= 0 && !once)
			return false;
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		if (poll(&pfd, 1, left > 0 ? (int)left : 0) != 1)
			continue;
		char buf[512];
		ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
			return true;
	}
}

static int setup(void **state)
{
	(void)state;
	// Short waits, so that what a stranger runs into shows quickly.
	tw__tcp_accept_set_waits(
	    ms_ns(300), ms_ns(600), tw_test_scale_ms(200) * 1000000);
	return 0;
}

static void test_handshake(void **state)
{
	(void)state;
	node_link n;
	node_start(&n, NULL, 1000);
	tw__tcp_hs_peer peer;
	TW_PASS(dial_hs(&n, "acc", NULL, &peer));
	assert_int_equal(peer.rank, 1);
	assert_string_equal(peer.link_id, "acc");
	assert_string_equal(peer.addr, tw__tcp_listener_name(n.held));
	// A link the node does not have: the connection closes unanswered
	// once the node stopped waiting for that link.
	TW_FAIL(dial_hs(&n, "other", NULL, &peer), TW_EPEER);
	node_stop(&n);
}

static void test_handshake_secret(void **state)
{
	(void)state;
	node_link n;
	node_start(&n, "s3cret", 1000);
	tw__tcp_hs_peer peer;
	TW_PASS(dial_hs(&n, "acc", "s3cret", &peer));
	TW_FAIL(dial_hs(&n, "acc", "wrong", &peer), TW_EAUTH);
	// A stranger without the secret is refused too.
	TW_FAIL(dial_hs(&n, "acc", NULL, &peer), TW_EAUTH);
	node_stop(&n);
	// Whoever failed to prove the secret for its rank: the link reports
	// TW_EAUTH at its timeout, not TW_ETIMEDOUT.
	assert_int_equal(n.status, TW_EAUTH);

	node_start(&n, NULL, 1000);
	TW_FAIL(dial_hs(&n, "acc", "s3cret", &peer), TW_EAUTH);
	node_stop(&n);
}

// A raw stranger: connects, writes `n` bytes of `bytes`, and half-closes
// unless `linger` (then it stays open and silent).
static int stranger(
    const node_link *nl, const void *bytes, size_t n, bool linger)
{
	int fd;
	TW_PASS(dial(nl, &fd));
	const unsigned char *p = bytes;
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w <= 0)
			break; // the node closed on the first bad byte
		p += w;
		n -= (size_t)w;
	}
	if (!linger)
		shutdown(fd, SHUT_WR);
	return fd;
}

static void test_hostile(void **state)
{
	(void)state;
	node_link n;
	node_start(&n, NULL, 1500);
	static unsigned char zeros[65536];
	unsigned char wrong_version[]
	    = { 'T', 'W', 'I', 'R', 0, TW_TCP_PROTO_VERSION + 1, 0, 0 };
	unsigned char slow[]
	    = { 'T', 'W', 'I', 'R', 0, TW_TCP_PROTO_VERSION, 0, 0, 0, 0 };
	int fds[6] = {
		stranger(&n, "GET / HTTP/1.1\r\n\r\n", 18, false),
		stranger(&n, wrong_version, sizeof(wrong_version), false),
		stranger(&n, zeros, sizeof(zeros), false),
		stranger(&n, "", 0, false),
		stranger(&n, slow, sizeof(slow), true), // then nothing
		stranger(&n, "", 0, true), // not even a first byte
	};
	// Refused from their first bad bytes, at EOF, or when the node's
	// waits (300 ms for a first byte, 600 ms in all) ran out.
	for (int i = 0; i < 6; i++)
		assert_true(closed_within(fds[i], 3000));
	// And a proper party is still served.
	tw__tcp_hs_peer peer;
	TW_PASS(dial_hs(&n, "acc", NULL, &peer));
	for (int i = 0; i < 6; i++)
		close(fds[i]);
	node_stop(&n);
}

// More silent connections from one address than the node serves at once:
// the excess is closed at once (not when a first-byte wait ends), and the
// node keeps going.
static void test_per_source(void **state)
{
	(void)state;
	tw__tcp_accept_set_waits(ms_ns(5000), ms_ns(10000), 0);
	node_link n;
	node_start(&n, NULL, 1500);
	enum { N = TW_TCP_HS_PER_SOURCE + 8 };
	int fds[N];
	for (int i = 0; i < N; i++)
		fds[i] = stranger(&n, "", 0, true);
	// Within a window well short of the first-byte wait.
	int closed = 0;
	int64_t until = tw__now_ns() + 1000000000;
	for (int i = 0; i < N; i++) {
		int64_t left = (until - tw__now_ns()) / 1000000;
		closed += closed_within(fds[i], left > 0 ? left : 0);
	}
	assert_int_equal(closed, N - TW_TCP_HS_PER_SOURCE);
	for (int i = 0; i < N; i++)
		close(fds[i]);
	// Their slots free again as they go.
	tw__tcp_hs_peer peer;
	TW_PASS(dial_hs(&n, "acc", NULL, &peer));
	node_stop(&n);
	setup(NULL);
}

// The descriptor test runs in a process of its own (the test binary again,
// with TW_ACCEPT_TEST_CHILD set): it lowers its descriptor limit.
static int emfile_child(void)
{
	// The node's link lives for its connect timeout, which the whole test
	// must fit in.  Connections it accepts wait for their first byte
	// longer than the test runs: a short wait would close them while the
	// test still dials, give their descriptors back to this process and
	// let the dials go on, for seconds, past the link's life.
	tw__tcp_accept_set_waits(
	    ms_ns(30000), ms_ns(60000), tw_test_scale_ms(200) * 1000000);
	node_link n;
	node_start(&n, NULL, 3000);
	// The node is up once it answers.
	tw__tcp_hs_peer peer;
	if (dial_hs(&n, "acc", NULL, &peer) != TW_OK)
		return 14;
	// Connect to the node until this process has no descriptor left:
	// the kernel completes the connections, the node cannot accept them.
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	int base = dup(0);
	close(base);
	rl.rlim_cur = (rlim_t)base + 16;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		return 10;
	int fds[64], nfd = 0;
	while (nfd < 64) {
		int fd;
		if (tw__tcp_dial("127.0.0.1", tw__tcp_listener_port(n.held),
		        tw__now_ns() + 1000000000, NULL, &fd)
		    != TW_OK)
			break;
		fds[nfd++] = fd;
	}
	if (nfd == 64)
		return 11; // never ran out
	// A listener that spins on EMFILE burns a CPU for the whole window.
	struct rusage r0, r1;
	getrusage(RUSAGE_SELF, &r0);
	struct timespec window = { 0, 500000000 };
	nanosleep(&window, NULL);
	getrusage(RUSAGE_SELF, &r1);
	int64_t used = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) * 1000000
	    + (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec)
	    + (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) * 1000000
	    + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec);
	fprintf(stderr,
	    "cpu over a 500 ms window without descriptors: %lld us\n",
	    (long long)used);
	for (int i = 0; i < nfd; i++)
		close(fds[i]);
	rl.rlim_cur = rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	// With descriptors again, the node accepts.
	int status = dial_hs(&n, "acc", NULL, &peer);
	node_stop(&n);
	if (status != TW_OK) {
		fprintf(stderr, "handshake after the pause: %s\n",
		    tw_err_name(status));
		return 12;
	}
	return used < 250000 ? 0 : 13;
}

static void test_emfile(void **state)
{
	(void)state;
	char self[4096];
	ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
	assert_true(len > 0);
	self[len] = '\0';
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		setenv("TW_ACCEPT_TEST_CHILD", "emfile", 1);
		char *argv[] = { self, NULL };
		execv(self, argv);
		_exit(127);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	if (getenv("TW_ACCEPT_TEST_CHILD") != NULL) {
		setup(NULL);
		return emfile_child();
	}
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_handshake),
		cmocka_unit_test(test_handshake_secret),
		cmocka_unit_test(test_hostile),
		cmocka_unit_test(test_per_source),
		cmocka_unit_test(test_emfile),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
