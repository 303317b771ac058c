// A process returns from main right after tw_link_create failed, and must
// exit cleanly: exit status 0, no signal, no sanitizer report.  Whatever
// the library still runs then (a handshake with a stranger, an I/O thread,
// a send blocked on a link left open) must not race the process's exit
// handlers (OpenSSL's among them).  Each test runs many children, a few at
// a time (PARALLEL), each with the helper process its case needs:
//
//   wrong_secret  the child holds another secret than its peer, a process
//                 that keeps calling tw_link_create; the child fails with
//                 TW_EAUTH (at once when it dials, at its connect timeout
//                 when it accepts: half of the children do each)
//   no_peer       the peer never comes; TW_ETIMEDOUT (half dial a port
//                 that refuses, half wait for a dial that never comes)
//   pending_send  the child first has a link up with a peer that never
//                 receives, and a thread whose tw_send_async of 2 MiB
//                 messages is held by flow control; then a second link's
//                 creation fails (TW_ETIMEDOUT) and main returns without
//                 closing the first (kept in a global: it is no leak)
//   stranger      the peer never comes, while a stranger process keeps
//                 connecting to the child's port: tw_link_create claiming
//                 the missing rank with a wrong secret, and bare
//                 connections that send garbage or nothing; TW_EAUTH
//
// ctest: tcpfault_exit_after_failed_create_<case>; the number of children
// is the program's size argument (200, fewer in sanitizer builds).

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "parts.h"
#include "testutil.h"
#include "tf.h"

#define CHILD_SECRET "secret-of-the-child"
#define PEER_SECRET "secret-of-the-peer"
#define PARALLEL 8
// A child whose own port another process took exits with this, and runs
// again with other ports, a few times at most.
#define EXIT_PORT_TAKEN 3
#define MAX_PORT_RETRIES 20
#define BULK ((size_t)2 << 20)

static unsigned uarg(const char *s)
{
	return (unsigned)strtoul(s, NULL, 10);
}

// A link of two parties at ports a and b: this party's rank is the order
// of its address.
static tw_desc *pair_desc(const char *id, unsigned self, unsigned peer,
    int64_t connect_ms, size_t *rank)
{
	unsigned ports[2];
	*rank = tf_addr_before(self, peer) ? 0 : 1;
	ports[*rank] = self;
	ports[1 - *rank] = peer;
	return tf_desc(id, ports, 2, connect_ms, tf_scale_ms(60000));
}

// --- the child ------------------------------------------------------------------

static tw_link *kept; // pending_send: the link left open at exit
static unsigned char bulk[BULK];
static _Atomic int sends_returned;
static _Atomic int send_failed;

static void *send_main(void *arg)
{
	size_t peer = (size_t)(uintptr_t)arg;
	for (int i = 0; i < 4; i++) {
		int st = tw_send_async(kept, peer, "bulk", bulk, sizeof(bulk));
		if (st != TW_OK) {
			atomic_store(&send_failed, st);
			return NULL;
		}
		atomic_fetch_add(&sends_returned, 1);
	}
	return NULL;
}

// The pending_send case's first link, with a thread in tw_send_async.
static void start_pending(unsigned self, unsigned peer)
{
	size_t rank;
	tw_desc *d = pair_desc("l1", self, peer, tf_scale_ms(20000), &rank);
	TF_OK(tw_link_create(d, rank, &kept));
	tw_desc_free(d);
	pthread_t th;
	if (pthread_create(&th, NULL, send_main, (void *)(uintptr_t)(1 - rank))
	    != 0)
		tf_die("pthread_create failed");
	pthread_detach(th);
	// The first message fits the peer's window, the next ones wait for
	// credit that never comes: once the first returned, the thread is
	// in the library, or about to be.
	int64_t deadline = tf_now_ms() + tf_scale_ms(10000);
	while (atomic_load(&sends_returned) < 1) {
		if (atomic_load(&send_failed) != 0)
			tf_die("tw_send_async: %s",
			    tw_err_name(atomic_load(&send_failed)));
		if (tf_now_ms() > deadline)
			tf_die("the first tw_send_async did not return");
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
}

// exit_child CASE PORT_SELF PORT_PEER PORT_ABSENT TIMEOUT_MS
int role_exit_child(int argc, char **argv)
{
	tf_who = "child";
	if (argc != 5)
		tf_die("usage: CASE SELF PEER ABSENT TIMEOUT_MS");
	char c = argv[0][0];
	unsigned self = uarg(argv[1]), peer = uarg(argv[2]);
	unsigned absent = uarg(argv[3]);
	int64_t timeout = strtoll(argv[4], NULL, 10);
	tw_log_set_level(TW_LOG_NONE);

	int want = c == 'a' || c == 'd' ? TW_EAUTH : TW_ETIMEDOUT;
	size_t rank;
	tw_desc *d;
	if (c == 'c') {
		start_pending(self, peer);
		d = pair_desc("l2", self, absent, timeout, &rank);
	} else {
		d = pair_desc(
		    "l", self, c == 'b' ? absent : peer, timeout, &rank);
	}
	if (c == 'a' || c == 'd')
		TF_OK(tw_desc_set_secret(
		    d, CHILD_SECRET, sizeof(CHILD_SECRET) - 1));
	tw_link *l = NULL;
	int st = tw_link_create(d, rank, &l);
	tw_desc_free(d);
	if (st == TW_OK)
		tf_die(
		    "tw_link_create succeeded (want %s)", tw_err_name(want));
	if (st == TW_ESYS)
		return EXIT_PORT_TAKEN; // another process took its port
	if (st != want) {
		fprintf(stderr, "child: tw_link_create: %s, want %s\n",
		    tw_err_name(st), tw_err_name(want));
		return 2;
	}
	return 0; // right after the failure, the pending link left open
}

// --- the helpers ------------------------------------------------------------------

// exit_retry_peer PORT_SELF PORT_CHILD READY_FD: creates the link with
// another secret than the child's, again and again, until killed.
int role_exit_retry_peer(int argc, char **argv)
{
	tf_who = "retrying peer";
	if (argc != 3)
		tf_die("usage: SELF CHILD READY_FD");
	tw_log_set_level(TW_LOG_NONE);
	size_t rank;
	tw_desc *d = pair_desc(
	    "l", uarg(argv[0]), uarg(argv[1]), tf_scale_ms(2000), &rank);
	TF_OK(tw_desc_set_secret(d, PEER_SECRET, sizeof(PEER_SECRET) - 1));
	if (tf_say(atoi(argv[2]), "ready") != 0)
		tf_die("cannot report");
	for (;;) {
		tw_link *l = NULL;
		if (tw_link_create(d, rank, &l) == TW_OK)
			tw_link_close(l);
	}
}

// exit_idle_peer PORT_SELF PORT_CHILD READY_FD: the link up with a
// window of 1 MiB, and never a receive, until killed.
int role_exit_idle_peer(int argc, char **argv)
{
	tf_who = "idle peer";
	if (argc != 3)
		tf_die("usage: SELF CHILD READY_FD");
	tw_log_set_level(TW_LOG_NONE);
	size_t rank;
	tw_desc *d = pair_desc(
	    "l1", uarg(argv[0]), uarg(argv[1]), tf_scale_ms(20000), &rank);
	TF_OK(tw_desc_set(d, TW_OPT_RECV_BUFFER, (int64_t)1 << 20));
	if (tf_say(atoi(argv[2]), "ready") != 0)
		tf_die("cannot report");
	tw_link *l = NULL;
	TF_OK(tw_link_create(d, rank, &l));
	for (;;)
		pause();
}

static void pause_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

// exit_stranger PORT_SELF PORT_CHILD READY_FD: the missing rank's party
// with a wrong secret (its address sorts first: it dials the child), in
// turn with bare connections that send garbage or nothing, until killed.
int role_exit_stranger(int argc, char **argv)
{
	tf_who = "stranger";
	if (argc != 3)
		tf_die("usage: SELF CHILD READY_FD");
	tw_log_set_level(TW_LOG_NONE);
	unsigned child = uarg(argv[1]);
	size_t rank;
	tw_desc *d = pair_desc("l", uarg(argv[0]), child, 100, &rank);
	TF_OK(tw_desc_set_secret(d, "not-the-secret", 14));
	if (tf_say(atoi(argv[2]), "ready") != 0)
		tf_die("cannot report");
	struct sockaddr_in sa = { .sin_family = AF_INET,
		.sin_port = htons((uint16_t)child),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	static const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	                           "TWIR\0\3\0\0 and more bytes after it";
	for (unsigned i = 0;; i++) {
		if (i % 3 == 0) {
			tw_link *l = NULL;
			if (tw_link_create(d, rank, &l) == TW_OK)
				tw_link_close(l);
			continue;
		}
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			tf_die("socket: %s", strerror(errno));
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			if (i % 3 == 1)
				(void)send(
				    fd, junk, sizeof(junk), MSG_NOSIGNAL);
		} else {
			pause_ms(1); // not listening yet (or any more)
		}
		close(fd);
	}
}

// --- the parent -------------------------------------------------------------------

typedef struct job {
	bool busy;
	int idx;
	pid_t child, helper;
	unsigned ports[3];
	int64_t deadline;
} job;

typedef struct tally {
	int done, failed, retried;
	char first[10][200];
} tally;

static const char *helper_role(char c)
{
	switch (c) {
	case 'a':
		return "exit_retry_peer";
	case 'c':
		return "exit_idle_peer";
	case 'd':
		return "exit_stranger";
	default:
		return NULL;
	}
}

// Starts job j: its helper (ready before the child starts), then the child.
static void start_job(job *j, char c, int idx, const job *all, size_t n)
{
	unsigned avoid[PARALLEL * 3];
	size_t navoid = 0;
	for (size_t i = 0; i < n; i++)
		for (int k = 0; all[i].busy && k < 3; k++)
			avoid[navoid++] = all[i].ports[k];
	assert_int_equal(tf_ports(j->ports, 3, avoid, navoid), 0);
	// ports[0] < ports[1] by address.  The child takes the second in
	// the stranger case (the stranger claims the rank that dials), and
	// either otherwise, in turn.
	bool second = c == 'd' || idx % 2 == 1;
	unsigned self = j->ports[second ? 1 : 0];
	unsigned other = j->ports[second ? 0 : 1];
	unsigned absent = j->ports[2];
	if (c == 'b') // the peer that never comes sorts on either side
		absent = other;
	// Long enough, for a child that accepts, to see its helper's dial
	// come (whose process has started already) on a loaded machine.
	int64_t timeout = c == 'a' || c == 'd' ? tf_scale_ms(1000)
	    : c == 'b'                         ? tf_scale_ms(200)
	                                       : tf_scale_ms(300);
	char s_self[16], s_other[16], s_absent[16], s_timeout[24], s_fd[16];
	snprintf(s_self, sizeof(s_self), "%u", self);
	snprintf(s_other, sizeof(s_other), "%u", other);
	snprintf(s_absent, sizeof(s_absent), "%u", absent);
	snprintf(s_timeout, sizeof(s_timeout), "%lld", (long long)timeout);
	j->helper = -1;
	const char *hrole = helper_role(c);
	if (hrole != NULL) {
		int rd[2];
		tf_pipe(rd);
		snprintf(s_fd, sizeof(s_fd), "%d", rd[1]);
		const char *hargs[] = { s_other, s_self, s_fd, NULL };
		j->helper = tf_spawn(hrole, hargs, &rd[1], 1);
		assert_true(j->helper > 0);
		close(rd[1]);
		char line[64];
		int r = tf_hear(rd[0], line, sizeof(line),
		    tf_now_ms() + tf_scale_ms(10000));
		close(rd[0]);
		if (r < 0)
			fail_msg("job %d: the %s did not start", idx, hrole);
	}
	char s_case[2] = { c, '\0' };
	const char *cargs[]
	    = { s_case, s_self, s_other, s_absent, s_timeout, NULL };
	j->child = tf_spawn("exit_child", cargs, NULL, 0);
	assert_true(j->child > 0);
	j->idx = idx;
	j->deadline = tf_now_ms() + timeout + tf_scale_ms(15000);
	j->busy = true;
}

// Ends job j; returns false when it must run again: another process took
// a port it was given (the free-port helper cannot reserve them).
static bool end_job(job *j, tally *t, const tf_end *e, char c)
{
	if (j->helper > 0) {
		kill(j->helper, SIGKILL);
		while (waitpid(j->helper, NULL, 0) < 0 && errno == EINTR)
			;
	}
	j->busy = false;
	if (e->done && e->exited && e->code == EXIT_PORT_TAKEN
	    && t->retried < MAX_PORT_RETRIES) {
		t->retried++;
		return false;
	}
	t->done++;
	if (e->done && e->exited && e->code == 0)
		return true;
	char how[96];
	if (t->failed < 10)
		snprintf(t->first[t->failed], sizeof(t->first[0]),
		    "child %d (case %c, port %u): %s", j->idx, c, j->ports[0],
		    tf_end_str(e, how, sizeof(how)));
	t->failed++;
	return true;
}

static void run_case(char c)
{
	int count = (int)tf_parse_size(tf_size_arg);
	assert_true(count > 0);
	job jobs[PARALLEL] = { 0 };
	tally t = { 0 };
	int started = 0;
	int64_t t0 = tf_now_ms();
	while (t.done < count) {
		bool moved = false;
		for (size_t i = 0; i < PARALLEL; i++) {
			job *j = &jobs[i];
			if (!j->busy && started < count) {
				start_job(j, c, started++, jobs, PARALLEL);
				moved = true;
				continue;
			}
			if (!j->busy)
				continue;
			int st;
			pid_t r = waitpid(j->child, &st, WNOHANG);
			tf_end e = { 0 };
			if (r == j->child) {
				e.done = true;
				e.exited = WIFEXITED(st);
				e.code = e.exited ? WEXITSTATUS(st) : 0;
				e.sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
			} else if (tf_now_ms() > j->deadline) {
				e = tf_wait(j->child, 0);
				e.done = false;
			} else {
				continue;
			}
			if (!end_job(j, &t, &e, c))
				started--; // again, with other ports
			moved = true;
		}
		if (!moved)
			pause_ms(2);
	}
	printf("case %c: %d children in %.1f s, %d failed, %d ran again "
	       "(a port taken by another process)\n",
	    c, count, (double)(tf_now_ms() - t0) / 1000, t.failed, t.retried);
	for (int i = 0; i < t.failed && i < 10; i++)
		printf("  %s\n", t.first[i]);
	fflush(stdout);
	if (t.failed > 0)
		fail_msg("%d of %d children did not exit cleanly after a "
		         "failed tw_link_create",
		    t.failed, count);
}

void test_exit_after_failed_create_wrong_secret(void **state)
{
	run_case('a');
}

void test_exit_after_failed_create_no_peer(void **state)
{
	run_case('b');
}

void test_exit_after_failed_create_pending_send(void **state)
{
	run_case('c');
}

void test_exit_after_failed_create_stranger(void **state)
{
	run_case('d');
}
