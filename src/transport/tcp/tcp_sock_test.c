// Tests of the tcp:// sockets: listeners shared per address (and port 0),
// bind failures, connecting with retries and a deadline, and the handshake
// with and without a secret — including strangers that send garbage, a
// wrong version, 64 KiB of zeros, a wrong or missing secret, or their bytes
// too slowly.  Every hostile peer is refused with a status (and a log
// line), and the listener keeps accepting afterwards.  Only loopback
// addresses are used.  Waits are on descriptors and joins, never sleeps.

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/clock.h"
#include "testutil.h"
#include "transport/tcp/tcp_sock.h"

static int64_t deadline_in(int64_t ms)
{
	return tw__now_ns() + tw_test_scale_ms(ms) * 1000000;
}

static void test_listener_shared(void **state)
{
	size_t before = tw__tcp_listener_count();
	tw__tcp_listener *a, *b, *c;
	TW_PASS(tw__tcp_listener_get("tcp://127.0.0.1:0", &a));
	uint16_t port = tw__tcp_listener_port(a);
	assert_true(port != 0);
	char addr[64], name[64];
	snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%u", (unsigned)port);
	snprintf(name, sizeof(name), "127.0.0.1:%u", (unsigned)port);
	assert_string_equal(tw__tcp_listener_name(a), name);
	// A second link naming the bound address shares the socket.
	TW_PASS(tw__tcp_listener_get(addr, &b));
	assert_ptr_equal(a, b);
	assert_int_equal(tw__tcp_listener_count(), before + 1);
	// Another port 0 is another socket.
	TW_PASS(tw__tcp_listener_get("tcp://127.0.0.1:0", &c));
	assert_ptr_not_equal(a, c);
	assert_int_equal(tw__tcp_listener_count(), before + 2);
	tw__tcp_listener_put(c);
	tw__tcp_listener_put(b);
	assert_int_equal(tw__tcp_listener_count(), before + 1);
	int fd = tw__tcp_listener_fd(a);
	tw__tcp_listener_put(a);
	assert_int_equal(tw__tcp_listener_count(), before);
	// The socket closed with the last reference.
	assert_int_equal(fcntl(fd, F_GETFD), -1);

	TW_PASS(tw__tcp_listener_get("tcp://[::1]:0", &a));
	snprintf(name, sizeof(name), "[::1]:%u",
	    (unsigned)tw__tcp_listener_port(a));
	assert_string_equal(tw__tcp_listener_name(a), name);
	tw__tcp_listener_put(a);
	TW_FAIL(tw__tcp_listener_get("tcp://127.0.0.1", &a), TW_EINVAL);
}

static void test_listener_in_use(void **state)
{
	// Another socket of this process holds the port: binding it is
	// TW_ESYS (and a log line naming the address).
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = { .sin_family = AF_INET,
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 1), 0);
	socklen_t len = sizeof(sa);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	char addr[64];
	snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%u",
	    (unsigned)ntohs(sa.sin_port));
	tw__tcp_listener *l;
	TW_FAIL(tw__tcp_listener_get(addr, &l), TW_ESYS);
	close(fd);
}

// A port nobody listens on (bound once, then closed; nothing else of this
// test binds meanwhile).
static uint16_t dead_port(void)
{
	tw__tcp_listener *l;
	TW_PASS(tw__tcp_listener_get("tcp://127.0.0.1:0", &l));
	uint16_t port = tw__tcp_listener_port(l);
	tw__tcp_listener_put(l);
	return port;
}

static void test_dial_timeout_cancel(void **state)
{
	uint16_t port = dead_port();
	int fd = -1;
	int64_t t0 = tw__now_ns();
	TW_FAIL(tw__tcp_dial("127.0.0.1", port, t0 + 100000000, NULL, &fd),
	    TW_ETIMEDOUT);
	assert_true(tw__now_ns() - t0 >= 100000000);
	int cancel = 1;
	TW_FAIL(
	    tw__tcp_dial("127.0.0.1", port, deadline_in(10000), &cancel, &fd),
	    TW_ECLOSED);
}

// The accepting side, on its own thread.
typedef struct acceptor {
	tw__tcp_listener *l;
	const char *secret; // of the link "acc"
	int64_t hs_ms;
	int status;
	tw__tcp_hs_peer peer;
	int conns; // how many to take
	int statuses[8];
	pthread_t th;
} acceptor;

static int acc_lookup(
    void *arg, const tw__tcp_hs_peer *peer, tw__tcp_hs_self *self)
{
	acceptor *a = arg;
	if (strcmp(peer->link_id, "acc") != 0)
		return TW_EPEER; // no such link here
	self->link_id = "acc";
	self->rank = 0;
	self->instance = 77;
	self->addr = tw__tcp_listener_name(a->l);
	self->secret = a->secret;
	self->secret_len = a->secret ? strlen(a->secret) : 0;
	return TW_OK;
}

static void *acc_main(void *arg)
{
	acceptor *a = arg;
	int lfd = tw__tcp_listener_fd(a->l);
	for (int i = 0; i < a->conns; i++) {
		struct pollfd pfd = { .fd = lfd, .events = POLLIN };
		if (poll(&pfd, 1, (int)tw_test_scale_ms(10000)) != 1) {
			a->statuses[i] = TW_ETIMEDOUT;
			continue;
		}
		int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			a->statuses[i] = TW_ESYS;
			continue;
		}
		a->statuses[i] = tw__tcp_handshake(
		    fd, NULL, acc_lookup, a, deadline_in(a->hs_ms), &a->peer);
		close(fd);
	}
	return NULL;
}

static void acc_start(acceptor *a, const char *secret, int conns)
{
	memset(a, 0, sizeof(*a));
	TW_PASS(tw__tcp_listener_get("tcp://127.0.0.1:0", &a->l));
	a->secret = secret;
	a->conns = conns;
	a->hs_ms = 5000;
	assert_int_equal(pthread_create(&a->th, NULL, acc_main, a), 0);
}

static void acc_join(acceptor *a)
{
	pthread_join(a->th, NULL);
	tw__tcp_listener_put(a->l);
}

static int dial_hs(
    acceptor *a, const char *link, const char *secret, tw__tcp_hs_peer *peer)
{
	int fd;
	TW_PASS(tw__tcp_dial("127.0.0.1", tw__tcp_listener_port(a->l),
	    deadline_in(5000), NULL, &fd));
	tw__tcp_hs_self me = { .link_id = link,
		.rank = 1,
		.instance = 99,
		.addr = "127.0.0.1:1",
		.secret = secret,
		.secret_len = secret ? strlen(secret) : 0 };
	int status
	    = tw__tcp_handshake(fd, &me, NULL, NULL, deadline_in(5000), peer);
	close(fd);
	return status;
}

static void test_handshake(void **state)
{
	acceptor a;
	tw__tcp_hs_peer peer;
	acc_start(&a, NULL, 2);
	TW_PASS(dial_hs(&a, "acc", NULL, &peer));
	assert_int_equal(peer.rank, 0);
	assert_true(peer.instance == 77);
	assert_string_equal(peer.link_id, "acc");
	assert_string_equal(peer.addr, tw__tcp_listener_name(a.l));
	// A link the acceptor does not have: refused there; here the
	// connection closes before an answer.
	TW_FAIL(dial_hs(&a, "other", NULL, &peer), TW_EPEER);
	acc_join(&a);
	TW_PASS(a.statuses[0]);
	assert_int_equal(a.peer.rank, 1);
	TW_FAIL(a.statuses[1], TW_EPEER);
}

static void test_handshake_secret(void **state)
{
	acceptor a;
	tw__tcp_hs_peer peer;
	acc_start(&a, "s3cret", 3);
	TW_PASS(dial_hs(&a, "acc", "s3cret", &peer));
	TW_FAIL(dial_hs(&a, "acc", "wrong", &peer), TW_EAUTH);
	// A stranger without the secret, and one with a secret the link
	// does not have, are refused on both sides.
	TW_FAIL(dial_hs(&a, "acc", NULL, &peer), TW_EAUTH);
	acc_join(&a);
	TW_PASS(a.statuses[0]);
	TW_FAIL(a.statuses[1], TW_EAUTH);
	TW_FAIL(a.statuses[2], TW_EAUTH);

	acc_start(&a, NULL, 1);
	TW_FAIL(dial_hs(&a, "acc", "s3cret", &peer), TW_EAUTH);
	acc_join(&a);
	TW_FAIL(a.statuses[0], TW_EAUTH);
}

// A raw stranger: connects, writes `n` bytes of `bytes`, and half-closes
// unless `linger` (then it keeps the connection open and silent).
static void stranger(
    acceptor *a, const void *bytes, size_t n, bool linger, int *out_fd)
{
	int fd;
	TW_PASS(tw__tcp_dial("127.0.0.1", tw__tcp_listener_port(a->l),
	    deadline_in(5000), NULL, &fd));
	const unsigned char *p = bytes;
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w <= 0)
			break; // the acceptor closed on the first bad byte
		p += w;
		n -= (size_t)w;
	}
	if (!linger)
		shutdown(fd, SHUT_WR);
	*out_fd = fd;
}

static void test_hostile(void **state)
{
	acceptor a;
	acc_start(&a, NULL, 6);
	a.hs_ms = 300; // the slowloris below runs into this
	int fds[6];
	static unsigned char zeros[65536];
	unsigned char wrong_version[]
	    = { 'T', 'W', 'I', 'R', 0, TW_TCP_PROTO_VERSION + 1, 0, 0 };
	unsigned char slow[]
	    = { 'T', 'W', 'I', 'R', 0, TW_TCP_PROTO_VERSION, 0, 0, 0, 0 };
	stranger(&a, "GET / HTTP/1.1\r\n\r\n", 18, false, &fds[0]);
	stranger(&a, wrong_version, sizeof(wrong_version), false, &fds[1]);
	stranger(&a, zeros, sizeof(zeros), false, &fds[2]);
	stranger(&a, slow, sizeof(slow), true, &fds[3]);
	stranger(&a, "", 0, false, &fds[4]);
	// And a proper party is still served.
	tw__tcp_hs_peer peer;
	TW_PASS(dial_hs(&a, "acc", NULL, &peer));
	fds[5] = -1;
	acc_join(&a);
	TW_FAIL(a.statuses[0], TW_EPROTO);
	TW_FAIL(a.statuses[1], TW_EPROTO);
	TW_FAIL(a.statuses[2], TW_EPROTO);
	TW_FAIL(a.statuses[3], TW_ETIMEDOUT);
	TW_FAIL(a.statuses[4], TW_EPEER);
	TW_PASS(a.statuses[5]);
	for (int i = 0; i < 5; i++)
		close(fds[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_listener_shared),
		cmocka_unit_test(test_listener_in_use),
		cmocka_unit_test(test_dial_timeout_cancel),
		cmocka_unit_test(test_handshake),
		cmocka_unit_test(test_handshake_secret),
		cmocka_unit_test(test_hostile),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
