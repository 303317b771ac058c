// Long transfers and liveness: heartbeats must pass while a connection
// carries one huge message or a long stream, and an abort must stop a huge
// send between two of its pieces.
//
// big_message_heartbeat: two processes with TW_OPT_HEARTBEAT_MS=100; one
// tw_send of TW_BIG_BYTES (the program's size argument: 2 GiB, 256 MiB in
// sanitizer builds; the environment variable overrides it), which the peer
// receives with tw_recv_into into its own buffer and checks whole.  Each
// side holds one buffer of that size.  Every call returns TW_OK: no side
// declares the other gone while the message is on its way.
//
// big_message_abort: a sender thread in a tw_send of that size to a peer
// that receives, heartbeats off (so that only the abort can stop it); once 32 MiB of it have reached the receiver (the bytes
// its TCP sockets received, watched by a helper thread) it tells the
// sender over a pipe, and
// the sender calls tw_link_abort.  tw_send must return TW_ECLOSED within
// 1 s (scaled) of the abort (TW_OK would mean that the whole message went
// first: the test would prove nothing, so it fails), and the receiver's
// tw_recv returns TW_EPEER with no message, not a part of one, and does
// not hang.  big_message_abort_into: the same with a receiver in
// tw_recv_into with a buffer of the message's size, in which tcp://
// assembles the message as it comes until the sender gives it up.
//
// busy_peer_heartbeat: three processes on one link, TW_OPT_HEARTBEAT_MS=100.
// P1 streams at least TW_BUSY_BYTES (1 GiB, 128 MiB in sanitizer builds)
// to P0 in messages of a quarter of that (at most 256 MiB), and for at
// least 2 s, each checked; P2 is idle
// meanwhile, in a tw_recv from P0 that waits for the stream's end.  Then
// P0 tells P2, P2 sends a message that P0 receives, and no call failed:
// P0's busy connection did not keep its heartbeats with P2 from passing.

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "parts.h"
#include "testutil.h"
#include "tf.h"

#define SEED 0xb16
#define HEARTBEAT_MS 100

static uint64_t size_or_env(const char *env, const char *arg)
{
	const char *e = getenv(env);
	uint64_t v = tf_parse_size(e != NULL ? e : arg);
	if (v == 0)
		tf_die("bad size '%s'", e != NULL ? e : arg);
	return v;
}

static tw_desc *big_desc(const char *id, const unsigned *ports, size_t n,
    uint64_t max_msg, int64_t heartbeat_ms)
{
	tw_desc *d
	    = tf_desc(id, ports, n, tf_scale_ms(30000), tf_scale_ms(120000));
	TF_OK(tw_desc_set(d, TW_OPT_HEARTBEAT_MS, heartbeat_ms));
	TF_OK(tw_desc_set(d, TW_OPT_MAX_MSG_SIZE, (int64_t)max_msg));
	return d;
}

static void parse_ports(char **argv, unsigned *ports, size_t n)
{
	for (size_t i = 0; i < n; i++)
		ports[i] = (unsigned)strtoul(argv[i], NULL, 10);
}

static void *big_alloc(uint64_t len)
{
	void *p = malloc(len);
	if (p == NULL)
		tf_die("cannot allocate %" PRIu64 " bytes", len);
	return p;
}

static void close_ok(tw_link *l)
{
	int st = tw_link_close(l);
	if (st != TW_OK && st != TW_EPEER)
		tf_die("tw_link_close: %s", tw_err_name(st));
}

// --- big_message_heartbeat ------------------------------------------------------

// big_send PORT0 PORT1 SIZE (rank 0)
int role_big_send(int argc, char **argv)
{
	tf_who = "big sender";
	unsigned ports[2];
	parse_ports(argv, ports, 2);
	uint64_t len = tf_parse_size(argv[2]);
	unsigned char *buf = big_alloc(len);
	tf_fill_blocks(buf, len, SEED);
	tw_desc *d = big_desc("big", ports, 2, len, HEARTBEAT_MS);
	tw_link *l = NULL;
	TF_OK(tw_link_create(d, 0, &l));
	int64_t t0 = tf_now_ms();
	TF_OK(tw_send(l, 1, "big", buf, len));
	int64_t ms = tf_now_ms() - t0;
	tw_buf ok = { 0 };
	TF_OK(tw_recv(l, 1, "ok", &ok));
	if (ok.len != 2 || memcmp(ok.data, "ok", 2) != 0)
		tf_die("wrong answer");
	tw_buf_free(&ok);
	TF_OK(tw_send(l, 1, "bye", "bye", 3));
	printf("sent %" PRIu64 " MiB in one message in %lld ms (%lld "
	       "heartbeat periods)\n",
	    len >> 20, (long long)ms, (long long)(ms / HEARTBEAT_MS));
	close_ok(l);
	tw_desc_free(d);
	free(buf);
	return 0;
}

// big_recv PORT0 PORT1 SIZE (rank 1)
int role_big_recv(int argc, char **argv)
{
	tf_who = "big receiver";
	unsigned ports[2];
	parse_ports(argv, ports, 2);
	uint64_t len = tf_parse_size(argv[2]);
	unsigned char *buf = big_alloc(len);
	tw_desc *d = big_desc("big", ports, 2, len, HEARTBEAT_MS);
	tw_link *l = NULL;
	TF_OK(tw_link_create(d, 1, &l));
	size_t got = 0;
	TF_OK(tw_recv_into(l, 0, "big", buf, len, &got));
	if (got != len)
		tf_die("received %zu bytes, want %" PRIu64, got, len);
	size_t bad = tf_check_blocks(buf, len, SEED);
	if (bad != SIZE_MAX)
		tf_die("wrong bytes in the block at offset %zu", bad);
	TF_OK(tw_send(l, 0, "ok", "ok", 2));
	tw_buf bye = { 0 };
	TF_OK(tw_recv(l, 0, "bye", &bye));
	tw_buf_free(&bye);
	close_ok(l);
	tw_desc_free(d);
	free(buf);
	return 0;
}

// Runs the roles of a test on fresh ports (ports[i] for rank i), with a
// pipe from the role of rank `from` to that of rank `to` when from >= 0,
// and waits for all of them.
static void run_parties(const char *const *roles, size_t n, const char *size,
    int from, int to, int64_t limit_ms)
{
	unsigned ports[3];
	assert_true(n <= 3);
	assert_int_equal(tf_ports(ports, n, NULL, 0), 0);
	char p[3][16];
	for (size_t i = 0; i < n; i++)
		snprintf(p[i], sizeof(p[i]), "%u", ports[i]);
	int fds[2] = { -1, -1 };
	char sfd[2][16];
	if (from >= 0) {
		tf_pipe(fds);
		snprintf(sfd[0], sizeof(sfd[0]), "%d", fds[0]);
		snprintf(sfd[1], sizeof(sfd[1]), "%d", fds[1]);
	}
	pid_t pid[3];
	for (size_t i = 0; i < n; i++) {
		const char *args[8];
		size_t k = 0;
		for (size_t j = 0; j < n; j++)
			args[k++] = p[j];
		args[k++] = size;
		int keep = -1;
		if ((int)i == from)
			keep = fds[1];
		if ((int)i == to)
			keep = fds[0];
		if (keep >= 0)
			args[k++] = (int)i == from ? sfd[1] : sfd[0];
		args[k] = NULL;
		pid[i] = tf_spawn(roles[i], args, &keep, keep >= 0 ? 1 : 0);
		assert_true(pid[i] > 0);
	}
	if (from >= 0) {
		close(fds[0]);
		close(fds[1]);
	}
	char why[512];
	if (!tf_wait_all(
	        pid, roles, n, tf_now_ms() + limit_ms, why, sizeof(why)))
		fail_msg("%s", why);
}

void test_big_message_heartbeat(void **state)
{
	static const char *const roles[] = { "big_send", "big_recv" };
	char size[32];
	snprintf(size, sizeof(size), "%" PRIu64,
	    size_or_env("TW_BIG_BYTES", tf_size_arg));
	run_parties(roles, 2, size, -1, -1, tf_scale_ms(240000));
}

// --- big_message_abort -------------------------------------------------------------

typedef struct big_tx {
	tw_link *l;
	const void *buf;
	uint64_t len;
	int status;
	int64_t returned_at;
	int done_fd;
} big_tx;

static void *big_tx_main(void *arg)
{
	big_tx *t = arg;
	t->status = tw_send(t->l, 1, "big", t->buf, t->len);
	t->returned_at = tf_now_ms();
	(void)tf_say(t->done_fd, "done");
	return NULL;
}

// abort_send PORT0 PORT1 SIZE PROGRESS_FD (rank 0)
int role_abort_send(int argc, char **argv)
{
	tf_who = "aborting sender";
	unsigned ports[2];
	parse_ports(argv, ports, 2);
	uint64_t len = tf_parse_size(argv[2]);
	int progress = atoi(argv[3]);
	// Zeros never written: its pages are the kernel's zero page, so the
	// message costs no memory on this side.
	void *buf = calloc(1, len);
	if (buf == NULL)
		tf_die("cannot allocate %" PRIu64 " bytes", len);
	tw_desc *d = big_desc("abort", ports, 2, len, 0);
	tw_link *l = NULL;
	TF_OK(tw_link_create(d, 0, &l));
	int done[2];
	tf_pipe(done);
	big_tx t = { .l = l, .buf = buf, .len = len, .done_fd = done[1] };
	pthread_t th;
	if (pthread_create(&th, NULL, big_tx_main, &t) != 0)
		tf_die("pthread_create failed");
	char line[16];
	if (tf_hear(
	        progress, line, sizeof(line), tf_now_ms() + tf_scale_ms(60000))
	    < 0)
		tf_die("the receiver never reported progress");
	int64_t t_abort = tf_now_ms();
	tw_link_abort(l);
	int64_t bound = tf_scale_ms(1000);
	if (tf_hear(done[0], line, sizeof(line),
	        t_abort + bound + tf_scale_ms(10000))
	    < 0)
		tf_die("tw_send still blocked %lld ms after tw_link_abort",
		    (long long)(bound + tf_scale_ms(10000)));
	pthread_join(th, NULL);
	int64_t ms = t.returned_at - t_abort;
	printf("tw_send returned %s %lld ms after tw_link_abort\n",
	    tw_err_name(t.status), (long long)ms);
	if (t.status == TW_OK)
		tf_die("tw_send returned TW_OK: the whole message went before "
		       "the abort, which then proves nothing");
	if (t.status != TW_ECLOSED)
		tf_die("tw_send returned %s, want TW_ECLOSED",
		    tw_err_name(t.status));
	if (ms > bound)
		tf_die("tw_send returned %lld ms after tw_link_abort, more "
		       "than %lld",
		    (long long)ms, (long long)bound);
	(void)tw_link_close(l);
	tw_desc_free(d);
	free(buf);
	close(done[0]);
	close(done[1]);
	return 0;
}

// Bytes this process's TCP sockets have received (TCP_INFO of every socket
// among its descriptors): the message's progress towards the receiver,
// whichever thread of the library reads it.  (/proc/self/io's rchar would
// not do: recv and recvmsg on sockets do not count there.)
static uint64_t tcp_received(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (d == NULL)
		tf_die("cannot read /proc/self/fd");
	uint64_t sum = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		int fd = atoi(e->d_name);
		struct stat st;
		if (e->d_name[0] == '.' || fd == dirfd(d)
		    || fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode))
			continue;
		struct tcp_info ti;
		socklen_t len = sizeof(ti);
		memset(&ti, 0, sizeof(ti));
		if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0
		    && len >= offsetof(struct tcp_info, tcpi_bytes_received)
		            + sizeof(ti.tcpi_bytes_received))
			sum += ti.tcpi_bytes_received;
	}
	closedir(d);
	return sum;
}

typedef struct watcher {
	int fd;
	uint64_t from;
	_Atomic int64_t said_at; // 0 until it told the sender
} watcher;

// Tells the sender once 32 MiB more have reached this process.
static void *watch_main(void *arg)
{
	watcher *w = arg;
	int64_t deadline = tf_now_ms() + tf_scale_ms(60000);
	while (tcp_received() < w->from + ((uint64_t)32 << 20)) {
		if (tf_now_ms() > deadline)
			return NULL; // the receiver's tw_recv fails then
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	atomic_store(&w->said_at, tf_now_ms());
	(void)tf_say(w->fd, "progress");
	return NULL;
}

// abort_recv[_into] PORT0 PORT1 SIZE PROGRESS_FD (rank 1).  With `into`,
// the receive is a tw_recv_into with a buffer of the message's size: over
// tcp:// the message is being assembled in it when the abort comes.
static int abort_recv(char **argv, bool into)
{
	tf_who = into ? "receiver (into its buffer) of the aborted message"
	              : "receiver of the aborted message";
	unsigned ports[2];
	parse_ports(argv, ports, 2);
	uint64_t len = tf_parse_size(argv[2]);
	tw_desc *d = big_desc("abort", ports, 2, len, 0);
	tw_link *l = NULL;
	TF_OK(tw_link_create(d, 1, &l));
	unsigned char *mine = into ? big_alloc(len) : NULL;
	watcher w = { .fd = atoi(argv[3]), .from = tcp_received() };
	pthread_t th;
	if (pthread_create(&th, NULL, watch_main, &w) != 0)
		tf_die("pthread_create failed");
	tw_buf b = { 0 };
	size_t got = 0;
	int st = into ? tw_recv_into(l, 0, "big", mine, (size_t)len, &got)
	              : tw_recv(l, 0, "big", &b);
	int64_t now = tf_now_ms();
	pthread_join(th, NULL);
	int64_t said = atomic_load(&w.said_at);
	if (said == 0)
		tf_die("the receive returned %s (%zu bytes) before 32 MiB "
		       "arrived",
		    tw_err_name(st), into ? got : b.len);
	printf("the receive returned %s %lld ms after the sender was told\n",
	    tw_err_name(st), (long long)(now - said));
	if (st != TW_EPEER)
		tf_die("the receive returned %s (%zu bytes), want TW_EPEER",
		    tw_err_name(st), into ? got : b.len);
	if (b.data != NULL || b.len != 0 || got != 0)
		tf_die("the receive left %zu bytes", into ? got : b.len);
	if (now - said > tf_scale_ms(5000))
		tf_die(
		    "the receive returned %lld ms after the sender was told",
		    (long long)(now - said));
	(void)tw_link_close(l);
	tw_desc_free(d);
	free(mine);
	return 0;
}

int role_abort_recv(int argc, char **argv)
{
	(void)argc;
	return abort_recv(argv, false);
}

int role_abort_recv_into(int argc, char **argv)
{
	(void)argc;
	return abort_recv(argv, true);
}

static void run_abort(const char *receiver)
{
	const char *const roles[] = { "abort_send", receiver };
	char size[32];
	snprintf(size, sizeof(size), "%" PRIu64,
	    size_or_env("TW_BIG_BYTES", tf_size_arg));
	run_parties(roles, 2, size, 1, 0, tf_scale_ms(180000));
}

void test_big_message_abort(void **state)
{
	(void)state;
	run_abort("abort_recv");
}

void test_big_message_abort_into(void **state)
{
	(void)state;
	run_abort("abort_recv_into");
}

// --- busy_peer_heartbeat --------------------------------------------------------------

// Messages of a quarter of the stream, at most 256 MiB: each takes a
// connection for longer than a heartbeat period unless it travels in
// pieces.
#define BUSY_MSG_MAX ((uint64_t)256 << 20)
#define BUSY_MIN_MS 2000

// busy PORT0 PORT1 PORT2 SIZE RANK
int role_busy(int argc, char **argv)
{
	unsigned ports[3];
	parse_ports(argv, ports, 3);
	uint64_t total = tf_parse_size(argv[3]);
	size_t me = strtoul(argv[4], NULL, 10);
	static const char *const who[]
	    = { "P0 (receives the stream)", "P1 (streams)", "P2 (idle)" };
	tf_who = who[me];
	size_t msg
	    = (size_t)(total / 4 < BUSY_MSG_MAX ? total / 4 : BUSY_MSG_MAX);
	if (msg == 0)
		tf_die("a stream of %" PRIu64 " bytes is too short", total);
	tw_desc *d = big_desc("busy", ports, 3, msg, HEARTBEAT_MS);
	tw_link *l = NULL;
	TF_OK(tw_link_create(d, me, &l));
	tw_buf b = { 0 };
	if (me == 1) {
		unsigned char *buf = big_alloc(msg);
		uint64_t sent = 0;
		int64_t t0 = tf_now_ms();
		for (uint32_t i = 0;
		     sent < total || tf_now_ms() - t0 < BUSY_MIN_MS; i++) {
			tf_fill_blocks(buf, msg, i);
			TF_OK(tw_send(l, 0, "more", "more", 4));
			TF_OK(tw_send(l, 0, "s", buf, msg));
			sent += msg;
		}
		TF_OK(tw_send(l, 0, "more", "end", 3));
		free(buf);
	} else if (me == 0) {
		unsigned char *buf = big_alloc(msg);
		uint64_t got_bytes = 0;
		int64_t t0 = tf_now_ms();
		for (uint32_t i = 0;; i++) {
			TF_OK(tw_recv(l, 1, "more", &b));
			bool end = b.len == 3;
			tw_buf_free(&b);
			if (end)
				break;
			size_t got = 0;
			TF_OK(tw_recv_into(l, 1, "s", buf, msg, &got));
			if (got != msg
			    || tf_check_blocks(buf, got, i) != SIZE_MAX)
				tf_die("message %u of the stream is wrong", i);
			got_bytes += got;
		}
		int64_t ms = tf_now_ms() - t0;
		printf("P0 received %" PRIu64 " MiB from P1 in %lld ms (%lld "
		       "heartbeat periods)\n",
		    got_bytes >> 20, (long long)ms,
		    (long long)(ms / HEARTBEAT_MS));
		TF_OK(tw_send(l, 2, "go", "go", 2));
		TF_OK(tw_recv(l, 2, "final", &b));
		if (b.len != 5 || memcmp(b.data, "hello", 5) != 0)
			tf_die("wrong final message from P2");
		tw_buf_free(&b);
		free(buf);
	} else {
		TF_OK(tw_recv(l, 0, "go", &b));
		tw_buf_free(&b);
		TF_OK(tw_send(l, 0, "final", "hello", 5));
	}
	TF_OK(tw_barrier(l, "end"));
	close_ok(l);
	tw_desc_free(d);
	return 0;
}

void test_busy_peer_heartbeat(void **state)
{
	unsigned ports[3];
	assert_int_equal(tf_ports(ports, 3, NULL, 0), 0);
	char p[3][16];
	for (size_t i = 0; i < 3; i++)
		snprintf(p[i], sizeof(p[i]), "%u", ports[i]);
	char size[32];
	snprintf(size, sizeof(size), "%" PRIu64,
	    size_or_env("TW_BUSY_BYTES", tf_size_arg));
	pid_t pid[3];
	for (size_t i = 0; i < 3; i++) {
		char r[4];
		snprintf(r, sizeof(r), "%zu", i);
		const char *args[] = { p[0], p[1], p[2], size, r, NULL };
		pid[i] = tf_spawn("busy", args, NULL, 0);
		assert_true(pid[i] > 0);
	}
	static const char *const names[] = { "P0", "P1", "P2" };
	char why[512];
	if (!tf_wait_all(pid, names, 3, tf_now_ms() + tf_scale_ms(180000), why,
	        sizeof(why)))
		fail_msg("%s", why);
}
