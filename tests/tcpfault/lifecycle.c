// What a process holds of tcp:// between links, and a creation whose dial
// the network never answers.
//
// last_link_closes_port: two processes each open two links (a and b) on
// one address, exchange a message on each, and close them, while two
// strangers' connections to the port are in the middle of a handshake
// (one silent, one halfway through a HELLO): while b is open the port
// still accepts; once both are closed it refuses connections, and the
// process has the threads it had before the first link (/proc/self/task),
// none of them named tw-* (the library's; at least one was while the links
// were open, so the check can see them).  The same after a tw_link_create
// that failed with TW_EAUTH (the two hold different secrets) and after one
// that timed out (the peer never comes), each with a stranger's silent
// connection made during the creation.
//
// abort_during_create: tw_link_create against an address whose SYNs are
// dropped (a listening socket with a backlog of 0 whose accept queue is
// full, never accepted) returns TW_ETIMEDOUT at its connect timeout, not
// when the kernel gives up the connect (about 127 s with the default
// tcp_syn_retries).  A creation cannot be aborted (there is no link yet to
// abort), so the deadline is all that bounds it.

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "parts.h"
#include "testutil.h"
#include "tf.h"

// --- last_link_closes_port ----------------------------------------------------------

// The library joins its threads before the call returns, but the kernel
// wakes pthread_join when it clears the thread's id, a moment before it
// takes the thread out of /proc/self/task: a joined thread may still be
// listed (with its name) for that moment, longer on a loaded machine.  So
// the count is read again until it is right or CHECK_GONE_MS have passed;
// a thread the library really left behind stays listed and fails.
#define CHECK_GONE_MS 2000

static void check_gone(const char *when, int tasks_before, unsigned port)
{
	int named = -1, tasks;
	struct timespec t0, now;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		tasks = tf_count_tasks(&named);
		if (tasks < 0)
			tf_die("cannot read /proc/self/task");
		if (tasks == tasks_before && named == 0)
			break;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((now.tv_sec - t0.tv_sec) * 1000
		        + (now.tv_nsec - t0.tv_nsec) / 1000000
		    > CHECK_GONE_MS)
			tf_die("%s: %d threads (%d named tw-*), want %d and "
			       "none",
			    when, tasks, named, tasks_before);
		struct timespec ms = { 0, 1000000 };
		nanosleep(&ms, NULL); // polls the kernel's task list
	}
	int r = tf_port_refuses(port);
	if (r != 1)
		tf_die("%s: a connection to port %u was %s", when, port,
		    r == 0 ? "accepted" : "not refused (another error)");
}

static void exchange(tw_link *l, size_t me, const char *tag)
{
	tw_buf b = { 0 };
	char msg[32];
	snprintf(msg, sizeof(msg), "%s from %zu", tag, me);
	TF_OK(tw_send(l, 1 - me, tag, msg, strlen(msg) + 1));
	TF_OK(tw_recv(l, 1 - me, tag, &b));
	char want[32];
	snprintf(want, sizeof(want), "%s from %zu", tag, 1 - me);
	if (b.len != strlen(want) + 1 || memcmp(b.data, want, b.len) != 0)
		tf_die("%s: wrong message", tag);
	tw_buf_free(&b);
}

static void close_ok(tw_link *l, const char *what)
{
	int st = tw_link_close(l);
	if (st != TW_OK && st != TW_EPEER)
		tf_die("closing %s: %s", what, tw_err_name(st));
}

static int connect_to(unsigned port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		tf_die("socket: %s", strerror(errno));
	struct sockaddr_in sa = { .sin_family = AF_INET,
		.sin_port = htons((uint16_t)port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

// A stranger that connects to the port while a creation runs, and holds
// the connection without a word: its handshake is in progress when the
// creation fails.
typedef struct holder {
	unsigned port;
	_Atomic int stop;
	int fd;
	pthread_t th;
} holder;

static void *holder_main(void *arg)
{
	holder *h = arg;
	while (!atomic_load(&h->stop) && (h->fd = connect_to(h->port)) < 0) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	return NULL;
}

static void holder_start(holder *h, unsigned port)
{
	h->port = port;
	h->fd = -1;
	atomic_store(&h->stop, 0);
	if (pthread_create(&h->th, NULL, holder_main, h) != 0)
		tf_die("pthread_create failed");
}

// Stops the thread (not its connection).  Whether it connected.
static bool holder_join(holder *h)
{
	atomic_store(&h->stop, 1);
	pthread_join(h->th, NULL);
	return h->fd >= 0;
}

static void *nothing_main(void *arg)
{
	return arg;
}

// closer RANK PORT0 PORT1 PORT_ABSENT
int role_closer(int argc, char **argv)
{
	tf_who = "closer";
	if (argc != 4)
		tf_die("usage: RANK PORT0 PORT1 ABSENT");
	size_t me = strtoul(argv[0], NULL, 10);
	unsigned ports[2] = { (unsigned)strtoul(argv[1], NULL, 10),
		(unsigned)strtoul(argv[2], NULL, 10) };
	unsigned absent = (unsigned)strtoul(argv[3], NULL, 10);
	unsigned mine = ports[me];
	// A runtime that starts a thread of its own with the first thread
	// of the process (ThreadSanitizer's background thread) has done so
	// before the count.
	pthread_t warm;
	if (pthread_create(&warm, NULL, nothing_main, NULL) != 0)
		tf_die("pthread_create failed");
	pthread_join(warm, NULL);
	int named;
	int before = tf_count_tasks(&named);
	if (before < 1 || named != 0)
		tf_die("before any link: %d threads, %d named tw-*", before,
		    named);

	int64_t cto = tf_scale_ms(20000), rto = tf_scale_ms(20000);
	tw_desc *da = tf_desc("a", ports, 2, cto, rto);
	tw_desc *db = tf_desc("b", ports, 2, cto, rto);
	tw_link *a = NULL, *b = NULL;
	TF_OK(tw_link_create(da, me, &a));
	TF_OK(tw_link_create(db, me, &b));
	exchange(a, me, "on-a");
	exchange(b, me, "on-b");
	int tasks = tf_count_tasks(&named);
	if (tasks <= before || named < 1)
		tf_die("with two links open: %d threads (%d named tw-*): the "
		       "library's threads cannot be seen",
		    tasks, named);
	TF_OK(tw_barrier(b, "before-close"));
	// Two strangers in the middle of a handshake when the links close:
	// one silent, one that sent the first bytes of a HELLO.
	int silent = connect_to(mine), partial = connect_to(mine);
	if (silent < 0 || partial < 0
	    || send(partial, "TWIR", 4, MSG_NOSIGNAL) != 4)
		tf_die("cannot connect to port %u", mine);
	close_ok(a, "a");
	if (tf_port_refuses(mine) != 0)
		tf_die("link b is open, but port %u does not accept", mine);
	close_ok(b, "b");
	check_gone("after closing both links", before, mine);
	close(silent);
	close(partial);

	// Both parties, different secrets: TW_EAUTH, at once for the party
	// that dials, at the connect timeout for the other.
	tw_desc *dc = tf_desc("c", ports, 2, tf_scale_ms(1000), rto);
	TF_OK(tw_desc_set_secret(dc, me == 0 ? "zero" : "one", 4 - me));
	tw_link *c = NULL;
	holder h;
	holder_start(&h, mine);
	int st = tw_link_create(dc, me, &c);
	holder_join(&h);
	if (st != TW_EAUTH)
		tf_die("link c, different secrets: %s, want TW_EAUTH",
		    tw_err_name(st));
	check_gone("after a creation failed with TW_EAUTH", before, mine);
	if (h.fd >= 0)
		close(h.fd);

	// A peer that never comes.
	unsigned pd[2];
	size_t rank = tf_addr_before(mine, absent) ? 0 : 1;
	pd[rank] = mine;
	pd[1 - rank] = absent;
	tw_desc *dd = tf_desc("d", pd, 2, tf_scale_ms(300), rto);
	tw_link *d = NULL;
	holder_start(&h, mine);
	st = tw_link_create(dd, rank, &d);
	if (!holder_join(&h))
		tf_die("the stranger never connected to port %u during a "
		       "creation of %lld ms",
		    mine, (long long)tf_scale_ms(300));
	if (st != TW_ETIMEDOUT)
		tf_die(
		    "link d, no peer: %s, want TW_ETIMEDOUT", tw_err_name(st));
	check_gone("after a creation timed out", before, mine);
	close(h.fd);
	tw_desc_free(da);
	tw_desc_free(db);
	tw_desc_free(dc);
	tw_desc_free(dd);
	return 0;
}

void test_last_link_closes_port(void **state)
{
	unsigned ports[3];
	assert_int_equal(tf_ports(ports, 3, NULL, 0), 0);
	char p[3][16];
	for (int i = 0; i < 3; i++)
		snprintf(p[i], sizeof(p[i]), "%u", ports[i]);
	pid_t pid[2];
	for (int r = 0; r < 2; r++) {
		const char *args[]
		    = { r == 0 ? "0" : "1", p[0], p[1], p[2], NULL };
		pid[r] = tf_spawn("closer", args, NULL, 0);
		assert_true(pid[r] > 0);
	}
	int64_t deadline = tf_now_ms() + tf_scale_ms(60000);
	char how[2][96];
	bool ok = true;
	for (int r = 0; r < 2; r++) {
		tf_end e = tf_wait(pid[r], deadline);
		tf_end_str(&e, how[r], sizeof(how[r]));
		ok = ok && e.done && e.exited && e.code == 0;
	}
	if (!ok)
		fail_msg("rank 0: %s; rank 1: %s", how[0], how[1]);
}

// --- abort_during_create -------------------------------------------------------------

typedef struct creator {
	tw_desc *d;
	int status;
	int64_t ms;
	int done_fd;
} creator;

static void *create_main(void *arg)
{
	creator *c = arg;
	int64_t t0 = tf_now_ms();
	tw_link *l = NULL;
	c->status = tw_link_create(c->d, 0, &l);
	c->ms = tf_now_ms() - t0;
	if (c->status == TW_OK)
		tw_link_close(l);
	(void)tf_say(c->done_fd, "done");
	return NULL;
}

static int connect_nb(unsigned port)
{
	int fd
	    = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = { .sin_family = AF_INET,
		.sin_port = htons((uint16_t)port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	assert_true(rc == 0 || errno == EINPROGRESS);
	return fd;
}

// Whether a non-blocking connect on fd completes within ms.
static bool completes(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	int rc = poll(&p, 1, ms);
	return rc > 0;
}

void test_abort_during_create(void **state)
{
	// The address that drops SYNs: backlog 0, so the accept queue is
	// full with one connection, which is never accepted.
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(lfd >= 0);
	struct sockaddr_in sa = { .sin_family = AF_INET,
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 0), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &len), 0);
	unsigned q = ntohs(sa.sin_port);
	int fill[4];
	size_t nfill = 0;
	bool dropping = false;
	while (nfill < 4 && !dropping) {
		fill[nfill] = connect_nb(q);
		// A connection that does not complete within 300 ms had its
		// SYN dropped (a completed one answers at once).
		dropping = !completes(fill[nfill], 300);
		nfill++;
	}
	if (!dropping) {
		for (size_t i = 0; i < nfill; i++)
			close(fill[i]);
		close(lfd);
		skip(); // this kernel accepts beyond the backlog
		return;
	}

	unsigned ports[2];
	do
		assert_int_equal(tf_ports(ports, 1, &q, 1), 0);
	while (!tf_addr_before(ports[0], q)); // rank 0 dials q
	ports[1] = q;
	int64_t timeout = 3000;
	creator c = { .d = tf_desc("syn", ports, 2, timeout, 1000) };
	int done[2];
	tf_pipe(done);
	c.done_fd = done[1];
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, create_main, &c), 0);
	char line[16];
	int64_t limit = timeout + tf_scale_ms(5000);
	int r = tf_hear(done[0], line, sizeof(line), tf_now_ms() + limit);
	if (r < 0)
		fail_msg("tw_link_create with a connect timeout of %lld ms "
		         "still blocked after %lld ms (a connect that "
		         "ignores the deadline waits for the kernel's "
		         "SYN retries, about 127 s)",
		    (long long)timeout, (long long)limit);
	pthread_join(th, NULL);
	printf("tw_link_create: %s after %lld ms (connect timeout %lld "
	       "ms)\n",
	    tw_err_name(c.status), (long long)c.ms, (long long)timeout);
	TW_FAIL(c.status, TW_ETIMEDOUT);
	assert_true(c.ms >= timeout - 20);
	assert_true(c.ms <= timeout + tf_scale_ms(1500));
	// The address still drops SYNs: the library's connects were never
	// answered.
	int probe = connect_nb(q);
	assert_false(completes(probe, 100));
	close(probe);
	for (size_t i = 0; i < nfill; i++)
		close(fill[i]);
	close(lfd);
	close(done[0]);
	close(done[1]);
	tw_desc_free(c.d);
}
