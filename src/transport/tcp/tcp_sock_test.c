// Tests of the tcp:// sockets: listeners shared per address (and port 0),
// bind failures, connecting with retries, a deadline and a cancel flag.
// The handshake is tested against a node in tcp_accept_test.c.  Only
// loopback addresses are used.  Waits are on descriptors and joins, never
// sleeps.

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
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

// A port nobody listens on, held by the returned socket: bound without
// SO_REUSEADDR and never listening, so that a connection to it is refused
// and no other program can take it while the test runs (a port bound once
// and closed could be a parallel test's listener by the time we dial).
static uint16_t dead_port(int *hold)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = { .sin_family = AF_INET,
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	*hold = fd;
	return ntohs(sa.sin_port);
}

static void test_dial_timeout_cancel(void **state)
{
	int hold;
	uint16_t port = dead_port(&hold);
	int fd = -1;
	int64_t t0 = tw__now_ns();
	TW_FAIL(tw__tcp_dial("127.0.0.1", port, t0 + 100000000, NULL, &fd),
	    TW_ETIMEDOUT);
	assert_true(tw__now_ns() - t0 >= 100000000);
	_Atomic int cancel = 1;
	TW_FAIL(
	    tw__tcp_dial("127.0.0.1", port, deadline_in(10000), &cancel, &fd),
	    TW_ECLOSED);
	close(hold);
}

// A listener whose accept queue is full: the kernel drops further SYNs,
// as a host that blackholes them does, and a blocking connect would wait
// for its retransmissions (about two minutes).  The dial still ends at its
// deadline, and at once when its cancel flag is set by another thread.
typedef struct canceller {
	_Atomic int flag;
	int64_t after_ns;
	pthread_t th;
} canceller;

static void *cancel_later(void *arg)
{
	canceller *c = arg;
	struct timespec ts = { 0, (long)c->after_ns };
	nanosleep(&ts, NULL); // the dial is waiting meanwhile (or done)
	atomic_store(&c->flag, 1);
	return NULL;
}

static void test_dial_blackhole(void **state)
{
	(void)state;
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(lfd >= 0);
	struct sockaddr_in sa = { .sin_family = AF_INET,
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 0), 0);
	socklen_t len = sizeof(sa);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &len), 0);
	uint16_t port = ntohs(sa.sin_port);
	// Fill the queue: connections that complete but are never accepted,
	// until one does not complete.
	int fill[8], nfill = 0;
	for (; nfill < 8; nfill++) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		assert_true(fd >= 0);
		fill[nfill] = fd;
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			continue;
		assert_int_equal(errno, EINPROGRESS);
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };
		if (poll(&pfd, 1, 200) == 0) {
			nfill++;
			break; // dropped: the queue is full
		}
	}
	assert_true(nfill < 8);
	int fd = -1;
	int64_t t0 = tw__now_ns();
	TW_FAIL(tw__tcp_dial("127.0.0.1", port, t0 + 300000000, NULL, &fd),
	    TW_ETIMEDOUT);
	int64_t dt = tw__now_ns() - t0;
	assert_true(dt >= 300000000 && dt < tw_test_scale_ms(2000) * 1000000);
	// The clock starts before the canceller does: its sleep may begin
	// before pthread_create returns (and did, under ThreadSanitizer).
	canceller c = { .after_ns = 200000000 };
	t0 = tw__now_ns();
	assert_int_equal(pthread_create(&c.th, NULL, cancel_later, &c), 0);
	TW_FAIL(
	    tw__tcp_dial("127.0.0.1", port, deadline_in(60000), &c.flag, &fd),
	    TW_ECLOSED);
	dt = tw__now_ns() - t0;
	pthread_join(c.th, NULL);
	assert_true(dt >= 200000000 && dt < tw_test_scale_ms(2000) * 1000000);
	for (int i = 0; i < nfill; i++)
		close(fill[i]);
	close(lfd);
}

static bool v4_loopback(const char *ip)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	assert_int_equal(inet_pton(AF_INET, ip, &a.sin_addr), 1);
	return tw__tcp_addr_is_loopback((const struct sockaddr *)&a);
}

static bool v6_loopback(const char *ip)
{
	struct sockaddr_in6 a = { .sin6_family = AF_INET6 };
	assert_int_equal(inet_pton(AF_INET6, ip, &a.sin6_addr), 1);
	return tw__tcp_addr_is_loopback((const struct sockaddr *)&a);
}

// Which peers count as on the loopback interface: all of 127.0.0.0/8, ::1
// and 127.0.0.0/8 mapped into IPv6; nothing else.
static void test_loopback_addrs(void **state)
{
	(void)state;
	assert_true(v4_loopback("127.0.0.1"));
	assert_true(v4_loopback("127.255.3.9"));
	assert_false(v4_loopback("126.255.255.255"));
	assert_false(v4_loopback("128.0.0.1"));
	assert_false(v4_loopback("10.0.0.1"));
	assert_false(v4_loopback("0.0.0.0"));
	assert_true(v6_loopback("::1"));
	assert_true(v6_loopback("::ffff:127.0.0.1"));
	assert_false(v6_loopback("::ffff:10.0.0.1"));
	assert_false(v6_loopback("::"));
	assert_false(v6_loopback("::2"));
	assert_false(v6_loopback("2001:db8::1"));
	struct sockaddr_un u = { .sun_family = AF_UNIX };
	assert_false(tw__tcp_addr_is_loopback((const struct sockaddr *)&u));
}

static int sndbuf(int fd)
{
	int v = 0;
	socklen_t len = sizeof(v);
	assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, &len), 0);
	return v;
}

// A loopback connection gets no Nagle and the send buffer of
// TW_TCP_LOOPBACK_SNDBUF on both sides (Linux doubles what it is given,
// up to net.core.wmem_max); a socket to anything else keeps its buffer.
static void test_tune_loopback(void **state)
{
	(void)state;
	tw__tcp_listener *l;
	TW_PASS(tw__tcp_listener_get("tcp://127.0.0.1:0", &l));
	int fd = -1;
	TW_PASS(tw__tcp_dial("127.0.0.1", tw__tcp_listener_port(l),
	    deadline_in(10000), NULL, &fd));
	struct pollfd p = { .fd = tw__tcp_listener_fd(l), .events = POLLIN };
	assert_int_equal(poll(&p, 1, (int)tw_test_scale_ms(10000)), 1);
	int afd = accept(tw__tcp_listener_fd(l), NULL, NULL);
	assert_true(afd >= 0);
	tw__tcp_sock_tune(afd);
	int want = 2 * TW_TCP_LOOPBACK_SNDBUF;
	FILE *f = fopen("/proc/sys/net/core/wmem_max", "r");
	int wmax = 0;
	if (f != NULL) {
		if (fscanf(f, "%d", &wmax) == 1 && 2 * wmax < want)
			want = 2 * wmax;
		fclose(f);
	}
	int one = 0;
	socklen_t len = sizeof(one);
	for (int i = 0; i < 2; i++) {
		int s = i == 0 ? fd : afd;
		assert_int_equal(sndbuf(s), want);
		assert_int_equal(
		    getsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, &len), 0);
		assert_int_equal(one, 1);
	}
	close(afd);
	close(fd);
	tw__tcp_listener_put(l);
	// Not an internet socket: left as it is.
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	int before = sndbuf(sv[0]);
	tw__tcp_sock_tune(sv[0]);
	assert_int_equal(sndbuf(sv[0]), before);
	close(sv[0]);
	close(sv[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_listener_shared),
		cmocka_unit_test(test_listener_in_use),
		cmocka_unit_test(test_dial_timeout_cancel),
		cmocka_unit_test(test_dial_blackhole),
		cmocka_unit_test(test_loopback_addrs),
		cmocka_unit_test(test_tune_loopback),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
