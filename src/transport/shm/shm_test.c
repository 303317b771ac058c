// Tests of the shm:// transport that the conformance suite cannot express:
// the frame decoder, peers that die or misbehave, segments left behind, and
// large messages over both of their paths.
//
// Parties are forked children that do not use cmocka: they report through
// their exit status (77 = this system cannot run the check), and they
// bound every wait, so that none outlives a failed parent
// (PR_SET_PDEATHSIG).  Readiness travels over pipes, never over sleeps.
// Link ids carry the parent's pid, so parallel ctest runs never meet, and
// every test ends by listing /dev/shm for the segments its links use.

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/names.h"
#include "platform/posix/shm.h"
#include "ring/ring_layout.h"
#include "testutil.h"
#include "transport/shm/shm.h"
#include "transport/shm/shm_frame.h"
#include "transport/shm/shm_seg.h"

#define MAX_PARTIES 3
#define MAX_CHILDREN 12

static char link_id[64];
static char addrs[MAX_PARTIES][80];
static pid_t children[MAX_CHILDREN];

static int setup(void **state)
{
	static int serial;
	snprintf(
	    link_id, sizeof(link_id), "shmtest%d.%d", (int)getpid(), serial++);
	for (int i = 0; i < MAX_PARTIES; i++)
		snprintf(
		    addrs[i], sizeof(addrs[i]), "shm://%s.p%d", link_id, i);
	memset(children, 0, sizeof(children));
	return 0;
}

// The segment of the pair (lo, hi) of this test's link.
static void pair_name(int lo, int hi, char *out)
{
	tw__shm_seg_name(out, link_id, addrs[lo], addrs[hi]);
}

static bool seg_exists(const char *name)
{
	int fd = shm_open(name, O_RDONLY, 0);
	if (fd >= 0)
		close(fd);
	return fd >= 0;
}

// Runs after every test, failed or not: no child and no segment survives.
static int teardown(void **state)
{
	for (int i = 0; i < MAX_CHILDREN; i++) {
		if (children[i] > 0) {
			kill(children[i], SIGKILL);
			waitpid(children[i], NULL, 0);
			children[i] = 0;
		}
	}
	char name[TW_SHM_SEG_NAME_LEN];
	for (int i = 0; i < MAX_PARTIES; i++)
		for (int j = i + 1; j < MAX_PARTIES; j++) {
			pair_name(i, j, name);
			shm_unlink(name);
		}
	return 0;
}

// Fails if /dev/shm still lists a segment of this test's link.
static void assert_no_segments(void)
{
	char want[MAX_PARTIES * MAX_PARTIES][TW_SHM_SEG_NAME_LEN];
	int n = 0;
	for (int i = 0; i < MAX_PARTIES; i++)
		for (int j = i + 1; j < MAX_PARTIES; j++)
			pair_name(i, j, want[n++]);
	DIR *d = opendir("/dev/shm");
	if (d == NULL) {
		for (int k = 0; k < n; k++)
			assert_false(seg_exists(want[k]));
		return;
	}
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		for (int k = 0; k < n; k++)
			if (strcmp(e->d_name, want[k] + 1) == 0)
				fail_msg("segment /dev/shm/%s left behind",
				    e->d_name);
	closedir(d);
}

// --- children ----------------------------------------------------------------

#define CHK(cond)                                                             \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "child %d line %d: %s failed\n",      \
			    (int)getpid(), __LINE__, #cond);                  \
			return 1;                                             \
		}                                                             \
	} while (0)

#define CHK_RV(expr, want)                                                    \
	do {                                                                  \
		int rv_ = (expr);                                             \
		if (rv_ != (want)) {                                          \
			fprintf(stderr,                                       \
			    "child %d line %d: %s: got %s, "                  \
			    "want %s\n",                                      \
			    (int)getpid(), __LINE__, #expr, tw_err_name(rv_), \
			    tw_err_name(want));                               \
			return 1;                                             \
		}                                                             \
	} while (0)

typedef struct child {
	int rank;
	int arg;
	int ready_fd; // the child writes a byte here when ready
	int go_fd; // and reads one here when told to go on
} child;

typedef int (*child_fn)(child *c);

static void child_ready(child *c)
{
	char b = 1;
	if (write(c->ready_fd, &b, 1) != 1)
		_exit(90);
}

static bool child_wait_go(child *c)
{
	char b;
	return read(c->go_fd, &b, 1) == 1;
}

typedef struct proc {
	pid_t pid;
	int ready_fd; // read end
	int go_fd; // write end
} proc;

static proc spawn(child_fn fn, int rank, int arg)
{
	int rp[2], gp[2];
	assert_int_equal(pipe(rp), 0);
	assert_int_equal(pipe(gp), 0);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(rp[0]);
		close(gp[1]);
		child c = { rank, arg, rp[1], gp[0] };
		_exit(fn(&c));
	}
	close(rp[1]);
	close(gp[0]);
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (children[i] == 0) {
			children[i] = pid;
			break;
		}
	return (proc) { pid, rp[0], gp[1] };
}

static void proc_wait_ready(proc *p)
{
	char b;
	assert_int_equal(read(p->ready_fd, &b, 1), 1);
}

static void proc_go(proc *p)
{
	char b = 1;
	assert_int_equal(write(p->go_fd, &b, 1), 1);
}

// Waits for a child and returns its exit status (128 + signal if killed).
static int proc_reap(proc *p)
{
	int st;
	assert_int_equal(waitpid(p->pid, &st, 0), p->pid);
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (children[i] == p->pid)
			children[i] = 0;
	close(p->ready_fd);
	close(p->go_fd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void proc_expect_ok(proc *p)
{
	int st = proc_reap(p);
	if (st == 77)
		skip();
	assert_int_equal(st, 0);
}

// Like proc_wait_ready, for a child whose step must end within `ms`: one
// that is still blocked then, or that exits first, fails the test rather
// than hanging it.
static void proc_wait_ready_within(proc *p, int64_t ms)
{
	struct pollfd pfd = { p->ready_fd, POLLIN, 0 };
	if (poll(&pfd, 1, (int)ms) == 0)
		fail_msg("child %d still blocked after %lld ms", (int)p->pid,
		    (long long)ms);
	char b;
	if (read(p->ready_fd, &b, 1) != 1)
		fail_msg("child %d exited with status %d before it was ready",
		    (int)p->pid, proc_reap(p));
}

static tw_desc *desc_make(int n, int64_t connect_ms, int64_t recv_buffer)
{
	tw_desc *d = tw_desc_new(link_id);
	for (int i = 0; i < n; i++) {
		char id[16];
		snprintf(id, sizeof(id), "p%d", i);
		tw_desc_add_party(d, id, addrs[i]);
	}
	tw_desc_set(d, TW_OPT_CONNECT_TIMEOUT_MS, connect_ms);
	tw_desc_set(d, TW_OPT_RECV_TIMEOUT_MS, tw_test_scale_ms(30000));
	if (recv_buffer > 0)
		tw_desc_set(d, TW_OPT_RECV_BUFFER, recv_buffer);
	return d;
}

static int link_make(
    int n, int rank, int64_t connect_ms, int64_t recv_buffer, tw_link **out)
{
	tw_desc *d = desc_make(n, connect_ms, recv_buffer);
	int rv = tw_link_create(d, (size_t)rank, out);
	tw_desc_free(d);
	return rv;
}

// A party of a test whose messages cross in chunks through the ring (no
// single copy): its link, as rank `rank` of two, and a buffer of `size`
// bytes.  0, or 1 after a failed check.
static int ring_party_up(
    int rank, size_t size, tw_link **l, unsigned char **buf)
{
	setenv("TAGWIRE_SHM_CMA", "0", 1);
	CHK_RV(link_make(2, rank, tw_test_scale_ms(20000), 0, l), TW_OK);
	CHK((*buf = malloc(size)) != NULL);
	return 0;
}

static double now_ms(void)
{
	return (double)tw__now_ns() / 1e6;
}

static void fill(unsigned char *p, size_t n, uint32_t seed)
{
	uint32_t x = seed * 2654435761u + 1;
	for (size_t i = 0; i < n; i++) {
		x = x * 1103515245u + 12345u;
		p[i] = (unsigned char)(x >> 16);
	}
}

static bool check(const unsigned char *p, size_t n, uint32_t seed)
{
	uint32_t x = seed * 2654435761u + 1;
	for (size_t i = 0; i < n; i++) {
		x = x * 1103515245u + 12345u;
		if (p[i] != (unsigned char)(x >> 16))
			return false;
	}
	return true;
}

// Log lines of a child, kept for checks.
static pthread_mutex_t log_mtx = PTHREAD_MUTEX_INITIALIZER;
static char log_text[8192];

static void log_keep(const tw_log_record *rec, void *arg)
{
	pthread_mutex_lock(&log_mtx);
	size_t used = strlen(log_text);
	snprintf(log_text + used, sizeof(log_text) - used, "%s\n", rec->msg);
	pthread_mutex_unlock(&log_mtx);
}

static bool log_has(const char *s)
{
	pthread_mutex_lock(&log_mtx);
	bool has = strstr(log_text, s) != NULL;
	pthread_mutex_unlock(&log_mtx);
	return has;
}

// --- frames: the pure decoder --------------------------------------------------

static int decode_step(tw__shm_rx *st, uint32_t type, uint64_t seq,
    const void *buf, size_t n, tw__shm_frame *f)
{
	const char *why = NULL;
	int rv = tw__shm_frame_decode(type, seq, buf, n, f, &why);
	if (rv == TW_OK)
		rv = tw__shm_rx_step(st, f, &why);
	if (rv < 0)
		assert_non_null(why);
	return rv;
}

static void t_frames(void **state)
{
	unsigned char b[256];
	tw__shm_rx st;
	tw__shm_frame f;
	tw__shm_rx_init(&st, 1000);

	// A message in one frame.
	size_t n = tw__shm_put_data(b, sizeof(b), "ns:t", 4, 3, "abc", 3);
	assert_int_equal(n, TW_SHM_DATA_HDR + 4 + 3);
	assert_int_equal(
	    decode_step(&st, TW_SHM_F_DATA, 1, b, n, &f), TW_SHM_RX_FIRST);
	assert_false(st.in_msg);
	assert_int_equal(f.key_len, 4);
	assert_memory_equal(f.key, "ns:t", 4);
	assert_memory_equal(f.data, "abc", 3);

	// A message in three frames, then a cancelled one.
	n = tw__shm_put_data(b, sizeof(b), "k", 1, 10, "0123", 4);
	assert_int_equal(
	    decode_step(&st, TW_SHM_F_DATA, 2, b, n, &f), TW_SHM_RX_FIRST);
	assert_true(st.in_msg);
	assert_int_equal(
	    decode_step(&st, TW_SHM_F_CONT, 2, "45", 2, &f), TW_SHM_RX_CONT);
	assert_int_equal(st.got, 6);
	assert_int_equal(
	    decode_step(&st, TW_SHM_F_CONT, 2, "6789", 4, &f), TW_SHM_RX_CONT);
	assert_false(st.in_msg);
	n = tw__shm_put_data(b, sizeof(b), "k", 1, 10, "0", 1);
	assert_int_equal(
	    decode_step(&st, TW_SHM_F_DATA, 3, b, n, &f), TW_SHM_RX_FIRST);
	assert_int_equal(decode_step(&st, TW_SHM_F_CANCEL, 3, NULL, 0, &f),
	    TW_SHM_RX_CANCEL);
	assert_int_equal(decode_step(&st, TW_SHM_F_CLOSE_NS, 4, "a/b", 3, &f),
	    TW_SHM_RX_CLOSE_NS);
	n = tw__shm_put_large(b, sizeof(b), "k", 1, 100000, 0x1234);
	tw__shm_rx_init(&st, 1 << 20);
	assert_int_equal(
	    decode_step(&st, TW_SHM_F_LARGE, 1, b, n, &f), TW_SHM_RX_LARGE);
	assert_int_equal(f.total, 100000);
	assert_int_equal(f.addr, 0x1234);
	n = tw__shm_put_hello(b, sizeof(b), TW_SHM_PROTO_VERSION, 42, 7, 9);
	assert_int_equal(
	    decode_step(&st, TW_SHM_F_HELLO, 2, b, n, &f), TW_SHM_RX_HELLO);
	assert_int_equal(f.pid, 42);

	// What a broken or hostile peer might write.
	tw__shm_rx_init(&st, 1000);
	n = tw__shm_put_data(b, sizeof(b), "k", 1, 1, "x", 1);
	assert_int_equal(decode_step(&st, TW_SHM_F_DATA, 2, b, n, &f),
	    TW_EPROTO); // gap
	tw__shm_rx_init(&st, 1000);
	assert_int_equal(decode_step(&st, TW_SHM_F_CONT, 1, "x", 1, &f),
	    TW_EPROTO); // continuation of nothing
	assert_int_equal(decode_step(&st, 99, 1, b, n, &f), TW_EPROTO);
	assert_int_equal(decode_step(&st, 0, 1, b, n, &f), TW_EPROTO);
	n = tw__shm_put_data(b, sizeof(b), "k", 1, 5000, "x", 1);
	assert_int_equal(decode_step(&st, TW_SHM_F_DATA, 1, b, n, &f),
	    TW_EPROTO); // over the size limit
	tw__shm_rx_init(&st, 1000);
	n = tw__shm_put_data(b, sizeof(b), "k", 1, 2, "x", 1);
	assert_int_equal(
	    decode_step(&st, TW_SHM_F_DATA, 1, b, n, &f), TW_SHM_RX_FIRST);
	assert_int_equal(decode_step(&st, TW_SHM_F_CONT, 1, "yz", 2, &f),
	    TW_EPROTO); // more than the total
	tw__shm_rx_init(&st, 1000);
	n = tw__shm_put_data(b, sizeof(b), "k", 1, 2, "x", 1);
	decode_step(&st, TW_SHM_F_DATA, 1, b, n, &f);
	assert_int_equal(decode_step(&st, TW_SHM_F_DATA, 2, b, n, &f),
	    TW_EPROTO); // new message while one is in progress
	tw__shm_rx_init(&st, 1000);
	n = tw__shm_put_data(b, sizeof(b), "k", 1, 1, "x", 1);
	uint16_t bad_len = 60000;
	memcpy(b, &bad_len, 2);
	assert_int_equal(decode_step(&st, TW_SHM_F_DATA, 1, b, n, &f),
	    TW_EPROTO); // key past the end
	n = tw__shm_put_data(b, sizeof(b), "a\0b", 3, 0, NULL, 0);
	assert_int_equal(decode_step(&st, TW_SHM_F_DATA, 1, b, n, &f),
	    TW_EPROTO); // NUL in the key
	n = tw__shm_put_data(b, sizeof(b), "k", 1, 0, "x", 1);
	assert_int_equal(decode_step(&st, TW_SHM_F_DATA, 1, b, n, &f),
	    TW_EPROTO); // payload beyond total
	assert_int_equal(decode_step(&st, TW_SHM_F_DATA, 1, b, 5, &f),
	    TW_EPROTO); // short header
	n = tw__shm_put_hello(b, sizeof(b), 7, 42, 0, 0);
	assert_int_equal(decode_step(&st, TW_SHM_F_HELLO, 1, b, n, &f),
	    TW_EPROTO); // version
	assert_int_equal(
	    decode_step(&st, TW_SHM_F_CANCEL, 1, "x", 1, &f), TW_EPROTO);
	assert_int_equal(
	    decode_step(&st, TW_SHM_F_CLOSE_NS, 1, "", 0, &f), TW_EPROTO);
	memset(b, 'n', sizeof(b));
	assert_int_equal(
	    decode_step(&st, TW_SHM_F_ABORT_NS, 1, b, TW_LINK_ID_MAX + 1, &f),
	    TW_EPROTO);
	n = tw__shm_put_large(b, sizeof(b), "k", 1, 0, 1);
	assert_int_equal(decode_step(&st, TW_SHM_F_LARGE, 1, b, n, &f),
	    TW_EPROTO); // empty large message
	assert_int_equal(decode_step(&st, TW_SHM_F_LARGE, 1, b, n + 1, &f),
	    TW_EPROTO); // trailing byte

	// A first frame decoded in two pieces, header and key apart from a
	// payload placed where the message goes.
	const char *why = NULL;
	n = tw__shm_put_data(b, sizeof(b), "ns:t", 4, 10, NULL, 0);
	assert_int_equal(
	    tw__shm_frame_decode_split(5, b, n, "0123456", 7, &f, &why),
	    TW_OK);
	assert_true(f.type == TW_SHM_F_DATA && f.seq == 5 && f.total == 10
	    && f.key_len == 4 && f.data_len == 7);
	assert_memory_equal(f.key, "ns:t", 4);
	assert_memory_equal(f.data, "0123456", 7);
	assert_int_equal(
	    tw__shm_frame_decode_split(5, b, n, NULL, 0, &f, &why), TW_OK);
	assert_true(f.data_len == 0);
	assert_int_equal(
	    tw__shm_frame_decode_split(5, b, n, "0123456789a", 11, &f, &why),
	    TW_EPROTO); // more than the total
	assert_int_equal(
	    tw__shm_frame_decode_split(5, b, n, NULL, 3, &f, &why), TW_EPROTO);
	n = tw__shm_put_data(b, sizeof(b), "ns:t", 4, 10, "01", 2);
	assert_int_equal(
	    tw__shm_frame_decode_split(5, b, n, "234", 3, &f, &why),
	    TW_EPROTO); // payload on both sides
	assert_int_equal(
	    tw__shm_frame_decode_split(5, b, 5, "234", 3, &f, &why),
	    TW_EPROTO); // short header
	n = tw__shm_put_data(b, sizeof(b), "a\0b", 3, 10, NULL, 0);
	assert_int_equal(
	    tw__shm_frame_decode_split(5, b, n, "234", 3, &f, &why),
	    TW_EPROTO); // NUL in the key

	// Encoders refuse what does not fit.
	assert_int_equal(tw__shm_put_data(b, 12, "key", 3, 1, "x", 1), 0);
	assert_int_equal(tw__shm_put_hello(b, 10, 1, 1, 1, 1), 0);

	// Segment names: fixed format, order of the pair matters.
	char n1[TW_SHM_SEG_NAME_LEN], n2[TW_SHM_SEG_NAME_LEN];
	tw__shm_seg_name(n1, "root", "shm://a", "shm://b");
	tw__shm_seg_name(n2, "root", "shm://b", "shm://a");
	assert_int_equal(strlen(n1), TW_SHM_SEG_NAME_LEN - 1);
	assert_memory_equal(n1, "/tw-", 4);
	assert_string_not_equal(n1, n2);
	tw__shm_seg_name(n2, "root", "shm://a", "shm://b");
	assert_string_equal(n1, n2);
}

// --- a peer killed mid-stream ----------------------------------------------------

static int killed_sender(child *c)
{
	tw_link *l;
	CHK_RV(link_make(2, 0, tw_test_scale_ms(20000), 4096, &l), TW_OK);
	unsigned char buf[100] = { 0 };
	for (uint32_t i = 0;; i++) {
		memcpy(buf, &i, sizeof(i));
		if (tw_send_async(l, 1, "s", buf, sizeof(buf)) != TW_OK)
			break;
	}
	return 0; // killed long before
}

typedef struct blocked_send {
	tw_link *l;
	int rv;
	double done_ms;
} blocked_send;

static void *blocked_sender(void *a)
{
	blocked_send *bs = a;
	unsigned char buf[1024] = { 0 };
	while ((bs->rv = tw_send(bs->l, 0, "b", buf, sizeof(buf))) == TW_OK)
		;
	bs->done_ms = now_ms();
	return NULL;
}

static int killed_receiver(child *c)
{
	tw_link *l;
	CHK_RV(link_make(2, 1, tw_test_scale_ms(20000), 4096, &l), TW_OK);
	// A thread sends to the victim until the ring to it is full.
	blocked_send bs = { l, TW_OK, 0 };
	pthread_t th;
	CHK(pthread_create(&th, NULL, blocked_sender, &bs) == 0);
	tw_buf b = { 0 };
	for (uint32_t i = 0; i < 200; i++) {
		CHK_RV(tw_recv(l, 0, "s", &b), TW_OK);
		uint32_t v;
		memcpy(&v, b.data, sizeof(v));
		CHK(b.len == 100 && v == i);
		tw_buf_free(&b);
	}
	child_ready(c);
	CHK(child_wait_go(c)); // the sender is dead now
	double t0 = now_ms();
	int rv;
	uint32_t next = 200;
	while ((rv = tw_recv(l, 0, "s", &b)) == TW_OK) {
		uint32_t v;
		memcpy(&v, b.data, sizeof(v));
		CHK(v == next++); // what it delivered arrives, in order
		tw_buf_free(&b);
	}
	double dt = now_ms() - t0;
	CHK_RV(rv, TW_EPEER);
	// The receive timeout is 30 s: the death must be noticed at once.
	CHK(dt < tw_test_scale_ms(2000));
	CHK_RV(tw_send(l, 0, "x", "y", 1), TW_EPEER);
	pthread_join(th, NULL);
	CHK_RV(bs.rv, TW_EPEER);
	CHK(bs.done_ms - t0 < tw_test_scale_ms(2000));
	int st = tw_link_close(l);
	CHK(st == TW_OK || st == TW_EPEER);
	return 0;
}

static void t_peer_killed(void **state)
{
	proc a = spawn(killed_sender, 0, 0);
	proc b = spawn(killed_receiver, 1, 0);
	proc_wait_ready(&b);
	kill(a.pid, SIGKILL);
	assert_int_equal(proc_reap(&a), 128 + SIGKILL);
	proc_go(&b);
	proc_expect_ok(&b);
	assert_no_segments();
}

// --- nothing left in /dev/shm ----------------------------------------------------

static int mesh_party(child *c)
{
	tw_link *l;
	int n = 3;
	CHK_RV(link_make(n, c->rank, tw_test_scale_ms(20000), 0, &l), TW_OK);
	CHK_RV(tw_barrier(l, "up"), TW_OK);
	// Every pair is attached: every name is gone already, so that a
	// crash from here on leaves nothing behind.
	char name[TW_SHM_SEG_NAME_LEN];
	for (int i = 0; i < n; i++)
		for (int j = i + 1; j < n; j++) {
			pair_name(i, j, name);
			CHK(!seg_exists(name));
		}
	size_t next = (size_t)(c->rank + 1) % 3,
	       prev = (size_t)(c->rank + 2) % 3;
	uint32_t v = (uint32_t)c->rank;
	CHK_RV(tw_send(l, next, "ring", &v, sizeof(v)), TW_OK);
	tw_buf b = { 0 };
	CHK_RV(tw_recv(l, prev, "ring", &b), TW_OK);
	CHK(b.len == 4 && *(uint32_t *)b.data == prev);
	tw_buf_free(&b);
	CHK_RV(tw_barrier(l, "down"), TW_OK);
	CHK_RV(tw_link_close(l), TW_OK);
	return 0;
}

static void t_no_leftovers(void **state)
{
	proc p[3];
	for (int i = 0; i < 3; i++)
		p[i] = spawn(mesh_party, i, 0);
	for (int i = 0; i < 3; i++)
		proc_expect_ok(&p[i]);
	assert_no_segments();
}

// --- a creator that crashes before its peer comes ---------------------------------

// Rank 0 of a two-party link whose rank 1 is not there yet: it creates the
// segment and waits for the hello.  arg: 1 = expect a successful link.
static int lone_creator(child *c)
{
	tw_link *l;
	int rv = link_make(2, 0, tw_test_scale_ms(30000), 0, &l);
	if (c->arg == 0)
		return 0; // killed before
	CHK_RV(rv, TW_OK);
	CHK_RV(tw_send(l, 1, "hi", "hello", 5), TW_OK);
	CHK_RV(tw_link_close(l), TW_OK);
	return 0;
}

// A second process claiming rank 0's address while it is alive.
static int intruder(child *c)
{
	tw_link *l = NULL;
	double t0 = now_ms();
	CHK_RV(link_make(2, 0, tw_test_scale_ms(5000), 0, &l), TW_ESYS);
	CHK(l == NULL && now_ms() - t0 < tw_test_scale_ms(2000));
	return 0;
}

// Rank 1.  arg 0: alone (connect times out); 1: the link comes up.
static int late_peer(child *c)
{
	tw_link *l = NULL;
	if (c->arg == 0) {
		CHK_RV(link_make(2, 1, 300, 0, &l), TW_ETIMEDOUT);
		return 0;
	}
	CHK_RV(link_make(2, 1, tw_test_scale_ms(30000), 0, &l), TW_OK);
	tw_buf b = { 0 };
	CHK_RV(tw_recv(l, 0, "hi", &b), TW_OK);
	CHK(b.len == 5 && memcmp(b.data, "hello", 5) == 0);
	tw_buf_free(&b);
	CHK_RV(tw_link_close(l), TW_OK);
	return 0;
}

// Waits until the pair's segment exists (and, if pid != 0, was created by
// that process), for at most 20 s.
static void wait_segment(const char *name, pid_t pid)
{
	int64_t deadline = tw__deadline_ms(tw_test_scale_ms(20000));
	while (tw__now_ns() < deadline) {
		int fd = shm_open(name, O_RDONLY, 0);
		if (fd >= 0) {
			struct tw_shm_seg_hdr h = { 0 };
			ssize_t r = pread(fd, &h, sizeof(h), 0);
			close(fd);
			if (r == (ssize_t)sizeof(h)
			    && h.state == TW_SHM_STATE_READY
			    && (pid == 0 || h.creator_pid == (uint32_t)pid))
				return;
		}
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	fail_msg("segment %s never appeared", name);
}

static void t_creator_crash(void **state)
{
	char name[TW_SHM_SEG_NAME_LEN];
	pair_name(0, 1, name);

	// The address is in use while its creator lives.
	proc a = spawn(lone_creator, 0, 0);
	wait_segment(name, a.pid);
	proc in = spawn(intruder, 0, 0);
	assert_int_equal(proc_reap(&in), 0);

	// The creator dies: its segment stays, and the peer that comes
	// later removes it.
	kill(a.pid, SIGKILL);
	assert_int_equal(proc_reap(&a), 128 + SIGKILL);
	assert_true(seg_exists(name));
	proc b = spawn(late_peer, 1, 0);
	assert_int_equal(proc_reap(&b), 0);
	assert_no_segments();

	// Crash again; this time a new creator replaces the stale segment
	// and the link comes up.
	a = spawn(lone_creator, 0, 0);
	wait_segment(name, a.pid);
	kill(a.pid, SIGKILL);
	assert_int_equal(proc_reap(&a), 128 + SIGKILL);
	assert_true(seg_exists(name));
	proc a2 = spawn(lone_creator, 0, 1);
	wait_segment(name, a2.pid);
	b = spawn(late_peer, 1, 1);
	assert_int_equal(proc_reap(&a2), 0);
	assert_int_equal(proc_reap(&b), 0);
	assert_no_segments();
}

// A creator killed after it made the segment and before it stored its pid
// leaves a segment whose header is all zeros: what this child leaves when
// it is killed.  The peer that comes later, or a new creator, removes it.
// arg 1: the segment is made as the transport makes it, under the lock
// that tells a slow creator from a dead one (kept until it is killed);
// arg 0: without that lock.
static int pidless_creator(child *c)
{
	char name[TW_SHM_SEG_NAME_LEN];
	pair_name(0, 1, name);
	void *mem;
	int lock_fd;
	if (c->arg)
		CHK_RV(tw__shm_create_locked(name,
		           tw__shm_seg_size(TW_SHM_SLOTS, TW_SHM_MAX_MSG),
		           &mem, &lock_fd),
		    TW_OK);
	else
		CHK_RV(
		    tw_shm_create(name,
		        tw__shm_seg_size(TW_SHM_SLOTS, TW_SHM_MAX_MSG), &mem),
		    TW_OK);
	child_ready(c);
	child_wait_go(c); // killed before
	return 0;
}

static proc pidless_start(const char *name, int locked)
{
	proc a = spawn(pidless_creator, 0, locked);
	proc_wait_ready(&a);
	assert_true(seg_exists(name));
	return a;
}

static void pidless_kill(proc *a)
{
	kill(a->pid, SIGKILL);
	assert_int_equal(proc_reap(a), 128 + SIGKILL);
}

static void pidless_crash(const char *name)
{
	proc a = pidless_start(name, 0);
	pidless_kill(&a);
	assert_true(seg_exists(name));
}

static void t_creator_no_pid(void **state)
{
	char name[TW_SHM_SEG_NAME_LEN];
	pair_name(0, 1, name);

	pidless_crash(name);
	proc b = spawn(late_peer, 1, 0);
	assert_int_equal(proc_reap(&b), 0);
	assert_false(seg_exists(name));

	pidless_crash(name);
	proc a = spawn(lone_creator, 0, 1);
	wait_segment(name, a.pid);
	b = spawn(late_peer, 1, 1);
	assert_int_equal(proc_reap(&a), 0);
	assert_int_equal(proc_reap(&b), 0);
	assert_no_segments();
}

// A creator that has made the segment but not yet stored its pid, and is
// alive: its segment is not stale.  Its peer waits for it and a second
// creator finds the address in use; once it is dead, its peer removes it.
static void t_creator_slow(void **state)
{
	char name[TW_SHM_SEG_NAME_LEN];
	pair_name(0, 1, name);
	proc a = pidless_start(name, 1);
	proc in = spawn(intruder, 0, 0);
	assert_int_equal(proc_reap(&in), 0);
	proc b = spawn(late_peer, 1, 0);
	assert_int_equal(proc_reap(&b), 0);
	assert_true(seg_exists(name));

	pidless_kill(&a);
	assert_true(seg_exists(name));
	b = spawn(late_peer, 1, 0);
	assert_int_equal(proc_reap(&b), 0);
	assert_no_segments();
}

// Receives read the ring themselves only where each party of the link can
// have a CPU (shm.c); with one CPU there is nothing to test here.
static bool two_cpus(void)
{
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof(set), &set) == 0
	    && CPU_COUNT(&set) < 2) {
		fprintf(
		    stderr, "skipped: one usable CPU, receives never spin\n");
		return false;
	}
	return true;
}

// --- a peer that writes garbage -----------------------------------------------------

enum {
	CORRUPT_FRAME = 0,
	CORRUPT_RING = 1,
	LEAVE_UNREAD = 2,
	WRONG_LANE = 3,
	CONT_OVERRUN = 4,
	WANTED_BAD_SEQ = 5,
	WANTED_OVERFULL = 6,
	OTHER_GEOMETRY = 7,
};

static uint64_t fake_probe = 0x5eed;

// Puts a DATA frame of message `seq` into `lane`: `len` of `total` bytes
// under `key`, built in buf (TW_SHM_MAX_MSG bytes), which keeps it, *n
// bytes long, for changes.  Returns tw_ring_send's status.
static int fake_data(tw_ring *out, uint32_t lane, unsigned char *buf,
    const char *key, uint64_t total, const char *data, size_t len,
    uint64_t seq, size_t *n)
{
	*n = tw__shm_put_data(
	    buf, TW_SHM_MAX_MSG, key, strlen(key), total, data, len);
	return tw_ring_send(out, lane, TW_SHM_F_DATA, buf, *n, seq, 0);
}

// Plays rank 0 by hand over the segment layout: hello, one good message,
// then (on go) a malformed frame or corrupt ring indices.
static int fake_peer(child *c)
{
	char name[TW_SHM_SEG_NAME_LEN];
	pair_name(0, 1, name);
	size_t size = tw__shm_seg_size(TW_SHM_SLOTS, TW_SHM_MAX_MSG);
	void *mem;
	int lock_fd;
	// Created as the transport creates it: unmarked only under the lock,
	// or the victim may take it for a dead creator's.  The victim may
	// still find the name between its creation and the lock and remove
	// it as a dead creator's (TW_EAGAIN): then, like the transport, try
	// again.
	int64_t create_by = tw__deadline_ms(tw_test_scale_ms(20000));
	int created;
	while ((created = tw__shm_create_locked(name, size, &mem, &lock_fd))
	    == TW_EAGAIN) {
		CHK(tw__now_ns() < create_by);
		tw__shm_nap(1000000);
	}
	CHK_RV(created, TW_OK);
	// OTHER_GEOMETRY lays the rings' bytes out as half the slots of
	// twice the size, which only the rings' own headers tell.
	uint32_t slots = TW_SHM_SLOTS, msg = TW_SHM_MAX_MSG;
	if (c->arg == OTHER_GEOMETRY) {
		slots /= 2;
		msg = (TW_SHM_MAX_MSG + TW_RING_SLOT_HDR) * 2
		    - TW_RING_SLOT_HDR;
	}
	CHK(tw_ring_bytes(TW_SHM_LANES, slots, msg)
	    == tw_ring_bytes(TW_SHM_LANES, TW_SHM_SLOTS, TW_SHM_MAX_MSG));
	struct tw_shm_seg_hdr *h = mem;
	__atomic_store_n(
	    &h->creator_pid, (uint32_t)getpid(), __ATOMIC_SEQ_CST);
	tw__shm_unlock(lock_fd);
	h->version = TW_SHM_SEG_VERSION;
	h->seg_size = size;
	h->ring_off[0] = tw__shm_ring_off(0, TW_SHM_SLOTS, TW_SHM_MAX_MSG);
	h->ring_off[1] = tw__shm_ring_off(1, TW_SHM_SLOTS, TW_SHM_MAX_MSG);
	h->ring_size = tw__shm_ring_size(TW_SHM_SLOTS, TW_SHM_MAX_MSG);
	unsigned char *base = mem;
	tw_ring *out, *in;
	for (int s = 0; s < 2; s++)
		CHK_RV(tw_ring_init(base
		               + tw__shm_ring_off(
		                   s, TW_SHM_SLOTS, TW_SHM_MAX_MSG),
		           tw__shm_ring_size(TW_SHM_SLOTS, TW_SHM_MAX_MSG),
		           TW_SHM_LANES, slots, msg),
		    TW_OK);
	CHK_RV(tw_ring_attach(
	           base + tw__shm_ring_off(0, TW_SHM_SLOTS, TW_SHM_MAX_MSG),
	           tw__shm_ring_size(TW_SHM_SLOTS, TW_SHM_MAX_MSG), &out),
	    TW_OK);
	CHK_RV(tw_ring_attach(
	           base + tw__shm_ring_off(1, TW_SHM_SLOTS, TW_SHM_MAX_MSG),
	           tw__shm_ring_size(TW_SHM_SLOTS, TW_SHM_MAX_MSG), &in),
	    TW_OK);
	tw_ring_set_role(out, 0);
	tw_ring_set_role(in, 1);
	h->pid[0] = (uint32_t)getpid();
	__atomic_store_n(&h->magic, TW_SHM_SEG_MAGIC, __ATOMIC_SEQ_CST);
	__atomic_store_n(&h->state, TW_SHM_STATE_READY, __ATOMIC_RELEASE);
	if (c->arg == OTHER_GEOMETRY) {
		child_wait_go(c); // the victim has refused it
		tw_ring_detach(out);
		tw_ring_detach(in);
		tw_shm_close(mem, size);
		CHK_RV(tw_shm_unlink(name), TW_OK);
		return 0;
	}

	static unsigned char buf[TW_SHM_MAX_MSG];
	size_t n = tw__shm_put_hello(buf, sizeof(buf), TW_SHM_PROTO_VERSION,
	    (uint32_t)getpid(), (uint64_t)(uintptr_t)&fake_probe, fake_probe);
	CHK_RV(
	    tw_ring_send(out, TW_SHM_LANE_CTL, TW_SHM_F_HELLO, buf, n, 1, 0),
	    TW_OK);
	size_t got;
	uint32_t route;
	int64_t wait_us = tw_test_scale_ms(20000) * 1000;
	CHK_RV(tw_ring_recv(in, TW_SHM_LANE_CTL, buf, sizeof(buf), &got,
	           &route, NULL, wait_us),
	    TW_OK);
	CHK(route == TW_SHM_F_HELLO);
	// What a real receiver answers to a hello: no single-copy reads.
	__atomic_store_n(&h->cma[1], TW_SHM_CMA_NO, __ATOMIC_RELEASE);
	char key[TW_KEY_MAX];
	tw__key_msg(key, link_id, "t");
	CHK_RV(fake_data(out, TW_SHM_LANE_DATA, buf, key, 2, "ok", 2, 1, &n),
	    TW_OK);
	CHK(child_wait_go(c)); // the good message has arrived
	if (c->arg == LEAVE_UNREAD) {
		// Closes as a party closes, without reading what came.
		uint32_t zero = 0;
		__atomic_compare_exchange_n(&h->gone[0], &zero,
		    TW_SHM_GONE_CLOSED, false, __ATOMIC_SEQ_CST,
		    __ATOMIC_SEQ_CST);
		tw_ring_abort(out, 0);
		tw_ring_abort(in, 1);
		tw_ring_detach(out);
		tw_ring_detach(in);
		tw_shm_close(mem, size);
		return 0;
	}
	if (c->arg == CORRUPT_FRAME) {
		uint16_t bad = 60000; // a key longer than the frame
		memcpy(buf, &bad, sizeof(bad));
		CHK_RV(tw_ring_send(
		           out, TW_SHM_LANE_DATA, TW_SHM_F_DATA, buf, n, 2, 0),
		    TW_OK);
	} else if (c->arg == CONT_OVERRUN) {
		// A message of 100 bytes, then a continuation of it with the
		// right number but far more bytes than are left: it must fail
		// the peer, not land past the message's memory.
		CHK_RV(fake_data(out, TW_SHM_LANE_DATA, buf, key, 100,
		           "0123456789", 10, 2, &n),
		    TW_OK);
		memset(buf, 'x', 16000);
		CHK_RV(tw_ring_send(out, TW_SHM_LANE_DATA, TW_SHM_F_CONT, buf,
		           16000, 2, 0),
		    TW_OK);
	} else if (c->arg == WRONG_LANE) {
		// The very key the victim waits for, in the control lane.
		CHK_RV(fake_data(
		           out, TW_SHM_LANE_CTL, buf, key, 2, "no", 2, 2, &n),
		    TW_OK);
	} else if (c->arg == WANTED_BAD_SEQ) {
		// That key, whole, in the right lane, but numbered 3 where 2
		// is due.
		CHK_RV(fake_data(
		           out, TW_SHM_LANE_DATA, buf, key, 2, "no", 2, 3, &n),
		    TW_OK);
	} else if (c->arg == WANTED_OVERFULL) {
		// That key, numbered right, with two payload bytes of a
		// message said to hold one.
		CHK_RV(fake_data(
		           out, TW_SHM_LANE_DATA, buf, key, 1, "no", 2, 2, &n),
		    TW_OK);
	} else {
		// The sequence word of the data lane's next slot (message 1)
		// made neither that message's nor the previous lap's.
		size_t stride
		    = (TW_SHM_MAX_MSG + TW_RING_SLOT_HDR + 63) / 64 * 64;
		struct tw_ring_slot *slot = (struct tw_ring_slot *)(base
		    + tw__shm_ring_off(0, TW_SHM_SLOTS, TW_SHM_MAX_MSG)
		    + TW_RING_HDR_SIZE + TW_SHM_LANES * TW_RING_LANE_SIZE
		    + ((size_t)TW_SHM_LANE_DATA * TW_SHM_SLOTS + 1) * stride);
		__atomic_store_n(&slot->seq, 2 + 1000, __ATOMIC_SEQ_CST);
		__atomic_add_fetch(
		    &((struct tw_ring_hdr *)(base
		          + tw__shm_ring_off(0, TW_SHM_SLOTS, TW_SHM_MAX_MSG)))
		         ->data_seq,
		    1, __ATOMIC_SEQ_CST);
	}
	// The peer gives up on us and says so in the segment.
	int64_t deadline = tw__deadline_ms(tw_test_scale_ms(20000));
	while (__atomic_load_n(&h->gone[1], __ATOMIC_ACQUIRE)
	    != TW_SHM_GONE_FAILED) {
		CHK(tw__now_ns() < deadline);
		tw_signal_wait(&h->dir[0].copied, 1, 1000);
	}
	tw_ring_detach(out);
	tw_ring_detach(in);
	tw_shm_close(mem, size);
	return 0;
}

static int victim(child *c)
{
	tw_log_set_handler(log_keep, NULL);
	tw_link *l;
	CHK_RV(link_make(2, 1, tw_test_scale_ms(20000), 0, &l), TW_OK);
	tw_buf b = { 0 };
	CHK_RV(tw_recv(l, 0, "t", &b), TW_OK);
	CHK(b.len == 2 && memcmp(b.data, "ok", 2) == 0);
	tw_buf_free(&b);
	child_ready(c);
	double t0 = now_ms();
	CHK_RV(tw_recv(l, 0, "t", &b), TW_EPEER);
	CHK(now_ms() - t0 < tw_test_scale_ms(2000));
	CHK_RV(tw_send(l, 0, "t", "x", 1), TW_EPEER);
	CHK(log_has("TW_EPROTO"));
	int st = tw_link_close(l);
	CHK(st == TW_OK || st == TW_EPEER);
	tw_log_set_handler(NULL, NULL);
	return 0;
}

// Runs the fake peer (doing `how` once told to) against a victim: the
// fake goes on once the victim is ready, and both must exit 0.
static void against_fake(int how, child_fn victim_fn, int victim_arg)
{
	proc f = spawn(fake_peer, 0, how);
	proc v = spawn(victim_fn, 1, victim_arg);
	proc_wait_ready(&v);
	proc_go(&f);
	assert_int_equal(proc_reap(&v), 0);
	assert_int_equal(proc_reap(&f), 0);
	assert_no_segments();
}

static void t_corrupt_frame(void **state)
{
	against_fake(CORRUPT_FRAME, victim, 0);
}

// Polls (timeout 0) so that its own thread reads the ring while it waits
// for the key, with that key posted: the frame that brings the key in the
// wrong lane must still be refused.  Exits 0, or POLLED_ELSEWHERE when all
// went right but the progress thread read the frame (it may, while the
// polling thread is descheduled).
#define POLLED_ELSEWHERE 3
static int polling_victim(child *c)
{
	tw_log_set_handler(log_keep, NULL);
	tw_link *l;
	CHK_RV(link_make(2, 1, tw_test_scale_ms(20000), 0, &l), TW_OK);
	char buf[8];
	size_t n = 0;
	CHK_RV(tw_recv_into(l, 0, "t", buf, sizeof(buf), &n), TW_OK);
	CHK(n == 2 && memcmp(buf, "ok", 2) == 0);
	CHK_RV(tw_link_set_recv_timeout(l, 0), TW_OK);
	uint64_t inline0 = tw__shm_frames_read_inline;
	child_ready(c);
	int64_t give_up = tw__deadline_ms(tw_test_scale_ms(20000));
	int rv;
	while ((rv = tw_recv_into(l, 0, "t", buf, sizeof(buf), &n))
	    == TW_ETIMEDOUT)
		CHK(tw__now_ns() < give_up);
	CHK_RV(rv, TW_EPEER);
	CHK(log_has("TW_EPROTO"));
	bool mine = tw__shm_frames_read_inline > inline0;
	int st = tw_link_close(l);
	CHK(st == TW_OK || st == TW_EPEER);
	tw_log_set_handler(NULL, NULL);
	return mine ? 0 : POLLED_ELSEWHERE;
}

// The fake peer does `how`, and the victim must refuse the frame both
// when its progress thread reads it and when the thread that waits for the
// frame's key, its buffer posted, reads it itself.
static void refused_inline(int how)
{
	against_fake(how, victim, 0);
	if (!two_cpus())
		skip();
	// Every run must refuse the frame; at least one must have read it in
	// the polling thread, or the check under test never ran.
	for (int run = 0; run < 20; run++) {
		proc f = spawn(fake_peer, 0, how);
		proc v = spawn(polling_victim, 1, 0);
		proc_wait_ready(&v);
		proc_go(&f);
		int st = proc_reap(&v);
		assert_int_equal(proc_reap(&f), 0);
		assert_no_segments();
		if (st == 0)
			return;
		assert_int_equal(st, POLLED_ELSEWHERE);
	}
	fail_msg("the progress thread read the frame in every run");
}

static void t_wrong_lane(void **state)
{
	refused_inline(WRONG_LANE);
}

// A whole small message of the key that a thread waits for takes a short
// way into that thread's buffer (rx_whole_wanted): it must check what the
// general way checks.
static void t_wanted_bad_seq(void **state)
{
	refused_inline(WANTED_BAD_SEQ);
}

static void t_wanted_overfull(void **state)
{
	refused_inline(WANTED_OVERFULL);
}

// A segment of the right size whose rings hold other slots than the
// link's: the joiner refuses it.  (Were they smaller, a frame built for a
// slot of the link's size would run past the one it was put in.)
static int layout_victim(child *c)
{
	tw_log_set_handler(log_keep, NULL);
	tw_link *l = NULL;
	int st = link_make(2, 1, tw_test_scale_ms(3000), 0, &l);
	CHK(st != TW_OK && l == NULL);
	CHK(log_has("unexpected layout (2 lanes of 16 slots"));
	tw_log_set_handler(NULL, NULL);
	child_ready(c);
	return 0;
}

static void t_other_geometry(void **state)
{
	against_fake(OTHER_GEOMETRY, layout_victim, 0);
}

static void t_corrupt_ring(void **state)
{
	against_fake(CORRUPT_RING, victim, 0);
}

static void t_cont_overrun(void **state)
{
	against_fake(CONT_OVERRUN, victim, 0);
}

// --- a peer that leaves without reading ------------------------------------
//
// The fake peer sends one message and closes without reading anything.
// The victim's throttle window makes it ack that message through the ring,
// so its close finds an ack the peer never took: lost to nobody, so the
// close returns TW_OK.  A data message the peer never took makes it
// TW_EPEER.  (Which of the two a real peer leaves behind depends on
// whether its reader ran before it closed.)

static int unread_victim(child *c)
{
	tw_desc *d = desc_make(2, tw_test_scale_ms(20000), 0);
	tw_desc_set(d, TW_OPT_THROTTLE_WINDOW, 1);
	tw_link *l;
	CHK_RV(tw_link_create(d, 1, &l), TW_OK);
	tw_desc_free(d);
	tw_buf b = { 0 };
	CHK_RV(tw_recv(l, 0, "t", &b), TW_OK); // acked through the ring
	CHK(b.len == 2 && memcmp(b.data, "ok", 2) == 0);
	tw_buf_free(&b);
	if (c->arg)
		CHK_RV(tw_send_async(l, 0, "t", "x", 1), TW_OK);
	child_ready(c);
	// Waits for the peer, which leaves once told to.
	CHK_RV(tw_link_close(l), c->arg ? TW_EPEER : TW_OK);
	return 0;
}

static void t_left_ack_unread(void **state)
{
	against_fake(LEAVE_UNREAD, unread_victim, 0);
}

static void t_left_data_unread(void **state)
{
	against_fake(LEAVE_UNREAD, unread_victim, 1);
}

// --- large messages -------------------------------------------------------------------

static const size_t large_sizes[]
    = { 64 * 1024, 1024 * 1024 + 7, 8 * 1024 * 1024 + 3, 100 * 1024 };
enum { N_LARGE = sizeof(large_sizes) / sizeof(large_sizes[0]) };
// Twice what a lane of the ring holds (32 slots of 32 KiB): the chunked
// send of it cannot end before the receiver reads.
#define WITHDRAWN_SIZE (2 * 1024 * 1024)

// arg 0: the single-copy path, asked for from 64 KiB on; 1: the ring,
// asked for; 2: the default, as measured (shm_pick.h), where the first
// TW_SHM_PICK_PROBE - 1 runs of each size class take the ring, and these
// few messages are all in them.
static void large_env(child *c)
{
	if (c->arg == 2)
		unsetenv("TAGWIRE_SHM_CMA");
	else
		setenv("TAGWIRE_SHM_CMA", c->arg ? "0" : "1", 1);
}

static int large_sender(child *c)
{
	large_env(c);
	tw_link *l;
	CHK_RV(link_make(2, 0, tw_test_scale_ms(20000), 4096, &l), TW_OK);
	unsigned char *buf = malloc(8 * 1024 * 1024 + 3);
	CHK(buf != NULL);
	for (uint32_t i = 0; i < N_LARGE; i++) {
		fill(buf, large_sizes[i], i);
		CHK_RV(tw_send(l, 1, "big", buf, large_sizes[i]), TW_OK);
		memset(buf, 0, large_sizes[i]); // the buffer is ours again
	}
	fill(buf, 300000, 77);
	CHK_RV(tw_send_async(l, 1, "async", buf, 300000), TW_OK);
	memset(buf, 0, 300000);

	// The receiver holds two messages back (its buffer is 4 KiB): a large
	// send times out, and must be withdrawn rather than delivered later.
	CHK_RV(tw_send(l, 1, "fill", buf, 4096), TW_OK);
	CHK_RV(tw_send(l, 1, "fill", buf, 4096), TW_OK);
	CHK_RV(tw_link_set_recv_timeout(l, 300), TW_OK);
	fill(buf, WITHDRAWN_SIZE, 99);
	double t0 = now_ms();
	CHK_RV(tw_send(l, 1, "late", buf, WITHDRAWN_SIZE), TW_ETIMEDOUT);
	CHK(now_ms() - t0 >= 290);
	memset(buf, 0xee, WITHDRAWN_SIZE); // what a reader must never see
	child_ready(c);
	CHK_RV(tw_link_set_recv_timeout(l, tw_test_scale_ms(30000)), TW_OK);
	CHK_RV(tw_send(l, 1, "marker", "m", 1), TW_OK);
	fill(buf, WITHDRAWN_SIZE, 100);
	CHK_RV(tw_send(l, 1, "late", buf, WITHDRAWN_SIZE), TW_OK);
	CHK_RV(tw_link_close(l), TW_OK);
	free(buf);
	return 0;
}

static int large_receiver(child *c)
{
	large_env(c);
	tw_log_set_handler(log_keep, NULL);
	tw_log_set_level(TW_LOG_INFO);
	tw_link *l;
	CHK_RV(link_make(2, 1, tw_test_scale_ms(20000), 4096, &l), TW_OK);
	tw_buf b = { 0 };
	for (uint32_t i = 0; i < N_LARGE; i++) {
		CHK_RV(tw_recv(l, 0, "big", &b), TW_OK);
		CHK(b.len == large_sizes[i] && check(b.data, b.len, i));
		tw_buf_free(&b);
	}
	CHK_RV(tw_recv(l, 0, "async", &b), TW_OK);
	CHK(b.len == 300000 && check(b.data, b.len, 77));
	tw_buf_free(&b);
	CHK(child_wait_go(c)); // the sender's large send has timed out
	for (int i = 0; i < 2; i++) {
		CHK_RV(tw_recv(l, 0, "fill", &b), TW_OK);
		CHK(b.len == 4096);
		tw_buf_free(&b);
	}
	CHK_RV(tw_recv(l, 0, "marker", &b), TW_OK);
	tw_buf_free(&b);
	CHK_RV(tw_recv(l, 0, "late", &b), TW_OK);
	CHK(b.len == WITHDRAWN_SIZE && check(b.data, b.len, 100));
	tw_buf_free(&b);
	size_t len;
	int rv = tw_probe(l, 0, "late", &len); // nothing more: the sender
	CHK(rv == TW_EAGAIN || rv == TW_EPEER); // may have closed by now
	uint64_t copied = atomic_load_explicit(
	    &tw__shm_large_copied, memory_order_relaxed);
	int st = tw_link_close(l);
	CHK(st == TW_OK || st == TW_EPEER);
	if (c->arg != 0) {
		CHK(copied == 0); // forced through the ring, or first runs
	} else if (copied == 0) {
		if (log_has("process_vm_readv")) {
			fprintf(stderr, "process_vm_readv is not available\n");
			return 77;
		}
		CHK(copied > 0);
	} else {
		// Every synchronous message of 64 KiB or more: the four
		// above and the resent one.
		CHK(copied == N_LARGE + 1);
	}
	return 0;
}

static void large(int mode)
{
	proc s = spawn(large_sender, 0, mode);
	proc r = spawn(large_receiver, 1, mode);
	proc_wait_ready(&s);
	proc_go(&r);
	assert_int_equal(proc_reap(&s), 0);
	proc_expect_ok(&r);
	assert_no_segments();
}

static void t_large_cma(void **state)
{
	large(0);
}

// A receiver whose last act on a link is to take a large message and close
// at once: the sender, waiting for the copy to be marked, may see the
// receiver gone first, and must still return TW_OK, since the message was
// delivered.  Each round is a link of its own (the race is the last
// message's), LAST_ROUNDS of them, while one busy process per CPU competes
// for the CPUs: the window is between two loads of the sender, and only a
// sender preempted there meets it.
#define LAST_ROUNDS 300
#define LAST_SIZE (256 * 1024)

static int last_link(int rank, int round, tw_link **out)
{
	setenv("TAGWIRE_SHM_CMA", "1", 1); // the single-copy path's race
	char id[96];
	snprintf(id, sizeof(id), "%s.r%d", link_id, round);
	tw_desc *d = tw_desc_new(id);
	for (int i = 0; i < 2; i++) {
		char pid[16], addr[128];
		snprintf(pid, sizeof(pid), "p%d", i);
		snprintf(addr, sizeof(addr), "shm://%s.p%d", id, i);
		tw_desc_add_party(d, pid, addr);
	}
	tw_desc_set(d, TW_OPT_CONNECT_TIMEOUT_MS, tw_test_scale_ms(20000));
	tw_desc_set(d, TW_OPT_RECV_TIMEOUT_MS, tw_test_scale_ms(20000));
	int rv = tw_link_create(d, (size_t)rank, out);
	tw_desc_free(d);
	return rv;
}

static int last_sender(child *c)
{
	(void)c;
	unsigned char *buf = malloc(LAST_SIZE);
	CHK(buf != NULL);
	for (int k = 0; k < LAST_ROUNDS; k++) {
		tw_link *l;
		CHK_RV(last_link(0, k, &l), TW_OK);
		fill(buf, LAST_SIZE, (uint32_t)k);
		CHK_RV(tw_send(l, 1, "last", buf, LAST_SIZE), TW_OK);
		int st = tw_link_close(l);
		CHK(st == TW_OK || st == TW_EPEER);
	}
	free(buf);
	return 0;
}

static int last_receiver(child *c)
{
	(void)c;
	for (int k = 0; k < LAST_ROUNDS; k++) {
		tw_link *l;
		CHK_RV(last_link(1, k, &l), TW_OK);
		tw_buf b = { 0 };
		CHK_RV(tw_recv(l, 0, "last", &b), TW_OK);
		CHK(b.len == LAST_SIZE && check(b.data, b.len, (uint32_t)k));
		tw_buf_free(&b);
		int st = tw_link_close(l);
		CHK(st == TW_OK || st == TW_EPEER);
	}
	return 0;
}

// Keeps a CPU busy until its go pipe has a byte or is closed.
static int busy(child *c)
{
	fcntl(c->go_fd, F_SETFL, O_NONBLOCK);
	for (;;) {
		char b;
		ssize_t n = read(c->go_fd, &b, 1);
		if (n >= 0 || errno != EAGAIN)
			return 0;
	}
}

static void t_large_last(void **state)
{
	(void)state;
	enum { MAX_BUSY = 8 };
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	int nbusy = cpus < 1 ? 1 : cpus > MAX_BUSY ? MAX_BUSY : (int)cpus;
	proc hogs[MAX_BUSY];
	for (int i = 0; i < nbusy; i++)
		hogs[i] = spawn(busy, 2 + i, 0);
	proc s = spawn(last_sender, 0, 0);
	proc r = spawn(last_receiver, 1, 0);
	int ss = proc_reap(&s), rs = proc_reap(&r);
	for (int i = 0; i < nbusy; i++) {
		proc_go(&hogs[i]);
		assert_int_equal(proc_reap(&hogs[i]), 0);
	}
	assert_int_equal(ss, 0);
	assert_int_equal(rs, 0);
}

static void t_large_chunked(void **state)
{
	large(1);
}

static void t_large_default(void **state)
{
	large(2);
}

// --- choosing between the ring and the single copy ------------------------

// One send of `len` bytes as the chooser says, taking `ns_ring` or
// `ns_single` nanoseconds per byte; returns the way taken.
static int pick_send(
    tw__shm_pick *p, size_t len, int64_t ns_ring, int64_t ns_single)
{
	int way = tw__shm_pick_way(p, len);
	tw__shm_pick_note(p, len, way,
	    (int64_t)len * (way == TW_SHM_PICK_RING ? ns_ring : ns_single));
	return way;
}

// Sends `runs` runs of `len` bytes; counts the single copies in *single.
static void pick_runs(tw__shm_pick *p, size_t len, unsigned runs,
    int64_t ns_ring, int64_t ns_single, unsigned *single)
{
	size_t run = TW_SHM_PICK_RUN_BYTES / len;
	if (run < 2)
		run = 2;
	*single = 0;
	for (size_t i = 0; i < runs * run; i++)
		*single += pick_send(p, len, ns_ring, ns_single)
		    == TW_SHM_PICK_SINGLE;
}

static void t_pick(void **state)
{
	(void)state;
	const size_t k64 = 64 * 1024, m1 = 1024 * 1024;
	assert_int_equal(tw__shm_pick_class(k64 - 1), -1);
	assert_int_equal(tw__shm_pick_class(k64), 0);
	assert_int_equal(tw__shm_pick_class(2 * k64 - 1), 0);
	assert_int_equal(tw__shm_pick_class(2 * k64), 1);
	assert_int_equal(
	    tw__shm_pick_class(TW_SHM_PICK_TOP - 1), TW_SHM_PICK_CLASSES - 2);
	assert_int_equal(
	    tw__shm_pick_class(TW_SHM_PICK_TOP), TW_SHM_PICK_CLASSES - 1);
	assert_int_equal(
	    tw__shm_pick_class(SIZE_MAX), TW_SHM_PICK_CLASSES - 1);

	tw__shm_pick p = { 0 };
	assert_int_equal(tw__shm_pick_way(&p, k64 - 1), TW_SHM_PICK_RING);

	// The ring first: runs of 32 sends of 64 KiB (2 MiB), whose second
	// half makes one sample at the run's end, even while the single copy
	// would be the faster.
	for (int i = 0; i < 32; i++) {
		assert_int_equal(pick_send(&p, k64, 2, 1), TW_SHM_PICK_RING);
		assert_int_equal(
		    p.samples[TW_SHM_PICK_RING][0], i < 31 ? 0 : 1);
	}
	assert_int_equal(p.ps_per_byte[TW_SHM_PICK_RING][0], 2000);
	unsigned single;
	pick_runs(&p, k64, TW_SHM_PICK_PROBE - 2, 2, 1, &single);
	assert_int_equal(single, 0);
	assert_int_equal(
	    p.samples[TW_SHM_PICK_RING][0], TW_SHM_PICK_PROBE - 1);
	// Then the single copy warms up, its runs one after the other.
	for (int i = 0; i < 32; i++)
		assert_int_equal(pick_send(&p, k64, 2, 1), TW_SHM_PICK_SINGLE);
	assert_int_equal(p.samples[TW_SHM_PICK_SINGLE][0], 1);
	pick_runs(&p, k64, TW_SHM_PICK_WARM - 1, 2, 1, &single);
	assert_int_equal(single, (TW_SHM_PICK_WARM - 1) * 32);
	assert_int_equal(p.samples[TW_SHM_PICK_SINGLE][0], TW_SHM_PICK_WARM);
	assert_int_equal(p.ps_per_byte[TW_SHM_PICK_SINGLE][0], 1000);

	// Then the faster way, the other one run in TW_SHM_PICK_PROBE.
	pick_runs(&p, k64, TW_SHM_PICK_PROBE, 2, 1, &single);
	assert_int_equal(single, (TW_SHM_PICK_PROBE - 1) * 32);
	assert_int_equal(p.samples[TW_SHM_PICK_RING][0], TW_SHM_PICK_PROBE);
	// Classes are apart: 1 MiB still warms up, in runs of two.
	assert_int_equal(pick_send(&p, m1, 1, 3), TW_SHM_PICK_RING);
	assert_int_equal(pick_send(&p, m1, 1, 3), TW_SHM_PICK_RING);
	assert_int_equal(p.samples[TW_SHM_PICK_RING][4], 1);
	// So is the last, open-ended class.
	assert_int_equal(
	    pick_send(&p, TW_SHM_PICK_TOP * 4, 1, 3), TW_SHM_PICK_RING);
	assert_int_equal(p.runs[TW_SHM_PICK_CLASSES - 1], 1);

	// One run of the faster way that lost its CPU (ten times as slow)
	// counts as twice the average: the way is kept.
	for (int i = 0; i < 32; i++)
		assert_int_equal(
		    pick_send(&p, k64, 2, 10), TW_SHM_PICK_SINGLE);
	assert_int_equal(p.ps_per_byte[TW_SHM_PICK_SINGLE][0], 1250);
	pick_runs(&p, k64, 8, 2, 1, &single);
	assert_int_equal(single, 8 * 32);

	// The machine changes: the ring is now the faster.  The next probe
	// of the ring finds it so, and it is kept from then on.
	pick_runs(&p, k64, TW_SHM_PICK_PROBE, 1, 3, &single);
	pick_runs(&p, k64, TW_SHM_PICK_PROBE, 1, 3, &single);
	assert_int_equal(single, 32);

	// What is not a sample is ignored: a negative time, a size below
	// the range, a way other than the run's.
	tw__shm_pick q = p;
	tw__shm_pick_note(&p, k64, TW_SHM_PICK_RING, -1);
	tw__shm_pick_note(&p, k64 - 1, TW_SHM_PICK_RING, 5);
	tw__shm_pick_note(&p, k64, 7, 5);
	assert_memory_equal(&p, &q, sizeof(p));
}

// --- messages of several frames ------------------------------------------------

// A message of several frames is assembled where it ends up, the receiving
// application's buffer (tw_recv_into) or memory of its own (tw_recv): its
// continuation frames go there straight from the ring, never through the
// reader's slot buffer.  The receiver counts exactly the continuation
// frames of what it received, and every byte is right.
static const size_t placed_sizes[]
    = { TW_SHM_MAX_MSG * 3 + 5, 100000, 1024 * 1024 + 1, 40000 };
enum { N_PLACED = sizeof(placed_sizes) / sizeof(placed_sizes[0]) };
#define PLACED_MAX (1024 * 1024 + 1)

// The continuation frames of a message of `len` bytes under a key of
// `klen` (shm.c, tx_chunked): the first frame holds what fits after its
// header and the key.
static uint64_t cont_frames(size_t len, size_t klen)
{
	size_t first = TW_SHM_MAX_MSG - TW_SHM_DATA_HDR - klen;
	if (len <= first)
		return 0;
	return (len - first + TW_SHM_MAX_MSG - 1) / TW_SHM_MAX_MSG;
}

static int placed_sender(child *c)
{
	tw_link *l;
	unsigned char *buf;
	CHK(ring_party_up(0, PLACED_MAX, &l, &buf) == 0);
	CHK(child_wait_go(c)); // the receiver counts from now on
	for (uint32_t i = 0; i < N_PLACED; i++) {
		fill(buf, placed_sizes[i], 200 + i);
		CHK_RV(tw_send(l, 1, "p", buf, placed_sizes[i]), TW_OK);
	}
	// The receiver closes once it has everything, maybe first.
	int st = tw_link_close(l);
	CHK(st == TW_OK || st == TW_EPEER);
	free(buf);
	return 0;
}

static int placed_receiver(child *c)
{
	tw_link *l;
	unsigned char *buf;
	CHK(ring_party_up(1, PLACED_MAX, &l, &buf) == 0);
	uint64_t before = atomic_load(&tw__shm_frames_placed), want = 0;
	child_ready(c);
	for (uint32_t i = 0; i < N_PLACED; i++) {
		want += cont_frames(placed_sizes[i], strlen(link_id) + 2);
		if (i % 2 == 0) {
			size_t n = 0;
			memset(buf, 0, PLACED_MAX);
			CHK_RV(tw_recv_into(l, 0, "p", buf, PLACED_MAX, &n),
			    TW_OK);
			CHK(n == placed_sizes[i] && check(buf, n, 200 + i));
		} else {
			tw_buf b = { 0 };
			CHK_RV(tw_recv(l, 0, "p", &b), TW_OK);
			CHK(b.len == placed_sizes[i]
			    && check(b.data, b.len, 200 + i));
			tw_buf_free(&b);
		}
	}
	CHK(want > N_PLACED);
	CHK(atomic_load(&tw__shm_frames_placed) - before == want);
	int st = tw_link_close(l);
	CHK(st == TW_OK || st == TW_EPEER);
	free(buf);
	return 0;
}

static void t_placed(void **state)
{
	(void)state;
	proc s = spawn(placed_sender, 0, 0);
	proc r = spawn(placed_receiver, 1, 0);
	proc_wait_ready(&r);
	proc_go(&s);
	assert_int_equal(proc_reap(&r), 0);
	assert_int_equal(proc_reap(&s), 0);
	assert_no_segments();
}

// The first frame of a message that a receiving thread waits for in
// tw_recv_into goes straight from the ring into its buffer, header and key
// read apart (from 256 payload bytes on; smaller ones are copied through
// the reader's slot buffer): single-frame messages from one byte up, the
// largest first frame, one continuation byte more, several frames.  Each
// message is sent once the receiver asked for it, so that it mostly finds
// the receiver reading the ring itself (when the progress thread reads it
// instead, the message goes through the mailbox): every byte must be
// right, nothing written past the message, and, within a bound, first
// frames placed.
static size_t first_sizes(uint32_t i)
{
	size_t cap = TW_SHM_MAX_MSG - TW_SHM_DATA_HDR - (strlen(link_id) + 2);
	const size_t sizes[] = { 1, 100, 4096, cap, cap + 1, cap * 3 + 5 };
	return sizes[i % (sizeof(sizes) / sizeof(sizes[0]))];
}
#define FIRST_MIN_MSGS 12
#define FIRST_MAX_MSGS 3000
#define FIRST_MAX (TW_SHM_MAX_MSG * 3 + 5)
#define FIRST_CANARY 64

static int first_sender(child *c)
{
	tw_link *l;
	unsigned char *buf;
	CHK(ring_party_up(0, FIRST_MAX, &l, &buf) == 0);
	for (uint32_t i = 0;; i++) {
		tw_buf b = { 0 };
		CHK_RV(tw_recv(l, 1, "go", &b), TW_OK);
		bool more = b.len == 1 && ((char *)b.data)[0] == 'y';
		tw_buf_free(&b);
		if (!more)
			break;
		fill(buf, first_sizes(i), 300 + i);
		CHK_RV(tw_send(l, 1, "f", buf, first_sizes(i)), TW_OK);
	}
	int st = tw_link_close(l);
	CHK(st == TW_OK || st == TW_EPEER);
	free(buf);
	return 0;
}

static int first_receiver(child *c)
{
	tw_link *l;
	unsigned char *buf;
	CHK(ring_party_up(1, FIRST_MAX + FIRST_CANARY, &l, &buf) == 0);
	uint64_t before = atomic_load(&tw__shm_firsts_placed), placed = 0;
	uint32_t i = 0;
	for (; i < FIRST_MAX_MSGS && (i < FIRST_MIN_MSGS || placed == 0);
	     i++) {
		size_t len = first_sizes(i), n = 0;
		memset(buf, 0xa5, len + FIRST_CANARY);
		CHK_RV(tw_send(l, 0, "go", "y", 1), TW_OK);
		CHK_RV(tw_recv_into(l, 0, "f", buf, len, &n), TW_OK);
		CHK(n == len && check(buf, n, 300 + i));
		for (size_t k = 0; k < FIRST_CANARY; k++)
			CHK(buf[len + k] == 0xa5);
		placed = atomic_load(&tw__shm_firsts_placed) - before;
	}
	CHK_RV(tw_send(l, 0, "go", "n", 1), TW_OK);
	CHK(placed > 0 && placed <= i);
	int st = tw_link_close(l);
	CHK(st == TW_OK || st == TW_EPEER);
	free(buf);
	return 0;
}

static void t_first_placed(void **state)
{
	(void)state;
	if (!two_cpus())
		skip();
	proc s = spawn(first_sender, 0, 0);
	proc r = spawn(first_receiver, 1, 0);
	assert_int_equal(proc_reap(&r), 0);
	assert_int_equal(proc_reap(&s), 0);
	assert_no_segments();
}

// --- a reader that sleeps on the ring -----------------------------------------

// A receiver whose spin ends before its message comes sleeps on the ring
// and stays its reader: the message's frames wake it and go straight into
// its buffer, first frame included, never through the progress thread and
// the mailbox.  Each message is sent only once the receiver sleeps: a
// thread of the receiver sees the count of such sleeps move and tells the
// sender.
#define NAP_ROUNDS 4
#define NAP_SIZE (TW_SHM_MAX_MSG * 2 + 100) // three frames

static int nap_sender(child *c)
{
	(void)c;
	tw_link *l;
	unsigned char *buf;
	CHK(ring_party_up(0, NAP_SIZE, &l, &buf) == 0);
	for (uint32_t k = 0; k < NAP_ROUNDS; k++) {
		tw_buf b = { 0 };
		CHK_RV(tw_recv(l, 1, "go", &b), TW_OK);
		tw_buf_free(&b);
		fill(buf, NAP_SIZE, 500 + k);
		CHK_RV(tw_send(l, 1, "m", buf, NAP_SIZE), TW_OK);
	}
	int st = tw_link_close(l);
	CHK(st == TW_OK || st == TW_EPEER);
	free(buf);
	return 0;
}

struct nap_teller {
	tw_link *l;
	_Atomic uint32_t round; // the receive under way, from 1
	_Atomic uint64_t naps; // the count of sleeps before it began
	int status;
};

static void *nap_tell(void *arg)
{
	struct nap_teller *t = arg;
	for (uint32_t k = 1; k <= NAP_ROUNDS; k++) {
		while (atomic_load(&t->round) != k)
			sched_yield();
		uint64_t naps = atomic_load(&t->naps);
		while (atomic_load(&tw__shm_reader_naps) == naps)
			sched_yield();
		if ((t->status = tw_send(t->l, 0, "go", "y", 1)) != TW_OK)
			break;
	}
	return NULL;
}

static int nap_receiver(child *c)
{
	(void)c;
	struct nap_teller t = { .status = TW_OK };
	unsigned char *buf;
	CHK(ring_party_up(1, NAP_SIZE, &t.l, &buf) == 0);
	pthread_t th;
	CHK(pthread_create(&th, NULL, nap_tell, &t) == 0);
	uint64_t firsts = atomic_load(&tw__shm_firsts_placed);
	uint64_t placed = atomic_load(&tw__shm_frames_placed);
	uint64_t inline_ = tw__shm_frames_read_inline;
	for (uint32_t k = 0; k < NAP_ROUNDS; k++) {
		memset(buf, 0, NAP_SIZE);
		atomic_store(&t.naps, atomic_load(&tw__shm_reader_naps));
		atomic_store(&t.round, k + 1);
		size_t n = 0;
		CHK_RV(tw_recv_into(t.l, 0, "m", buf, NAP_SIZE, &n), TW_OK);
		CHK(n == NAP_SIZE && check(buf, n, 500 + k));
	}
	CHK(pthread_join(th, NULL) == 0);
	CHK_RV(t.status, TW_OK);
	CHK(atomic_load(&tw__shm_firsts_placed) - firsts == NAP_ROUNDS);
	CHK(atomic_load(&tw__shm_frames_placed) - placed == 2 * NAP_ROUNDS);
	CHK(tw__shm_frames_read_inline - inline_ >= 3 * NAP_ROUNDS);
	int st = tw_link_close(t.l);
	CHK(st == TW_OK || st == TW_EPEER);
	free(buf);
	return 0;
}

static void t_reader_naps(void **state)
{
	(void)state;
	if (!two_cpus())
		skip(); // one CPU: nobody spins, the progress thread reads
	proc s = spawn(nap_sender, 0, 0);
	proc r = spawn(nap_receiver, 1, 0);
	assert_int_equal(proc_reap(&r), 0);
	assert_int_equal(proc_reap(&s), 0);
	assert_no_segments();
}

// --- closing towards a peer that does not receive -------------------------------

// The receiver's buffer is 4 KiB and its application never receives: its
// progress thread holds a message back, and the ring fills up behind it.
// The sender's wait_pending must end at its receive timeout, and each of
// its closes at that bound (arg 0) or at the connect timeout when the
// receive timeout is forever (arg 1), with TW_ETIMEDOUT.  A child link's
// close also tries to tell the peer through the full ring, for at most a
// second (shm.c, SHM_CTL_TIMEOUT_NS).  The peer fills the other direction
// the same way, so that the sender's own progress thread is held back when
// its close stops it.
#define UNREAD_MSG 4096
#define UNREAD_MAX_MSGS 1000

static int64_t unread_bound_ms(int forever)
{
	return tw_test_scale_ms(forever ? 2000 : 500);
}

static int unread_sender(child *c)
{
	int64_t bound = unread_bound_ms(c->arg);
	int64_t slack = tw_test_scale_ms(1500);
	tw_link *l, *sub;
	CHK_RV(link_make(2, 0, c->arg ? bound : tw_test_scale_ms(20000),
	           UNREAD_MSG, &l),
	    TW_OK);
	CHK_RV(tw_link_spawn(l, "c", &sub), TW_OK);
	static unsigned char buf[UNREAD_MSG];
	fill(buf, sizeof(buf), 1);
	// Fill the ring: sends succeed until it is full, then time out.
	CHK_RV(tw_link_set_recv_timeout(sub, 100), TW_OK);
	int rv = TW_OK;
	int sent = 0;
	while (sent < UNREAD_MAX_MSGS
	    && (rv = (sent % 2 ? tw_send_async : tw_send)(
	            sub, 1, "u", buf, sizeof(buf)))
	        == TW_OK)
		sent++;
	CHK_RV(rv, TW_ETIMEDOUT);
	// Far more than the 4 KiB the receiver may hold.
	CHK(sent >= (int)TW_SHM_SLOTS);

	CHK_RV(tw_link_set_recv_timeout(sub, c->arg ? -1 : bound), TW_OK);
	CHK_RV(tw_link_set_recv_timeout(l, c->arg ? -1 : bound), TW_OK);
	double t0 = now_ms(), dt;
	if (!c->arg) {
		CHK_RV(tw_link_wait_pending(sub), TW_ETIMEDOUT);
		dt = now_ms() - t0;
		CHK(dt >= (double)bound - 1 && dt < (double)(bound + slack));
		t0 = now_ms();
	}
	CHK_RV(tw_link_close(sub), TW_ETIMEDOUT);
	dt = now_ms() - t0;
	CHK(dt >= (double)bound - 1 && dt < (double)(bound + 1000 + slack));
	// The messages are the channel's, whichever link sent them: the
	// root's close waits for them too.
	t0 = now_ms();
	CHK_RV(tw_link_close(l), TW_ETIMEDOUT);
	dt = now_ms() - t0;
	CHK(dt >= (double)bound - 1 && dt < (double)(bound + slack));
	child_ready(c);
	return 0;
}

static int unread_peer(child *c)
{
	tw_link *l, *sub;
	CHK_RV(link_make(2, 1,
	           c->arg ? unread_bound_ms(1) : tw_test_scale_ms(20000),
	           UNREAD_MSG, &l),
	    TW_OK);
	CHK_RV(tw_link_spawn(l, "c", &sub), TW_OK);
	// The sender does not receive either: its progress thread, which its
	// close must stop, holds one of these back.
	static unsigned char buf[UNREAD_MSG];
	fill(buf, sizeof(buf), 2);
	CHK_RV(tw_link_set_recv_timeout(sub, 100), TW_OK);
	int rv = TW_OK;
	for (int i = 0; i < UNREAD_MAX_MSGS && rv == TW_OK; i++)
		rv = tw_send_async(sub, 0, "v", buf, sizeof(buf));
	CHK_RV(rv, TW_ETIMEDOUT);
	CHK(child_wait_go(c)); // the sender has closed, nothing was received
	double t0 = now_ms();
	int st = tw_link_close(sub);
	CHK(st == TW_OK || st == TW_EPEER);
	st = tw_link_close(l);
	CHK(st == TW_OK || st == TW_EPEER);
	CHK(now_ms() - t0 < tw_test_scale_ms(1500));
	return 0;
}

static void close_unread(int forever)
{
	proc a = spawn(unread_sender, 0, forever);
	proc b = spawn(unread_peer, 1, forever);
	// An unbounded close never gets there.
	proc_wait_ready_within(&a, tw_test_scale_ms(30000));
	proc_go(&b);
	assert_int_equal(proc_reap(&a), 0);
	assert_int_equal(proc_reap(&b), 0);
	assert_no_segments();
}

static void t_close_unread(void **state)
{
	close_unread(0);
}

static void t_close_unread_forever(void **state)
{
	close_unread(1);
}

// --- the reader role ------------------------------------------------------

#define PINGS 2000

// Ping-pong: each side's receives find the reply on its way and take it
// from the ring themselves.  Then a message that nobody polls for must still
// reach the mailbox: the progress thread takes the ring back after the
// application thread stopped reading (wait_pending needs that).
static int pinger(child *c)
{
	alarm(60); // a progress thread that never comes back hangs below
	tw_link *l;
	CHK_RV(link_make(2, 0, tw_test_scale_ms(20000), 0, &l), TW_OK);
	uint32_t v = 0;
	for (uint32_t i = 0; i < PINGS; i++) {
		CHK_RV(tw_send(l, 1, "ping", &i, sizeof(i)), TW_OK);
		size_t n = 0;
		CHK_RV(tw_recv_into(l, 1, "pong", &v, sizeof(v), &n), TW_OK);
		CHK(n == sizeof(v) && v == i + 1);
	}
	CHK(tw__shm_frames_read_inline > 0); // this thread's own
	CHK_RV(tw_send(l, 1, "unpolled", "u", 1), TW_OK);
	CHK_RV(tw_link_wait_pending(l), TW_OK);
	child_ready(c);
	CHK_RV(tw_link_close(l), TW_OK);
	return 0;
}

static int ponger(child *c)
{
	tw_link *l;
	CHK_RV(link_make(2, 1, tw_test_scale_ms(20000), 0, &l), TW_OK);
	for (uint32_t i = 0; i < PINGS; i++) {
		uint32_t v = 0;
		size_t n = 0;
		CHK_RV(tw_recv_into(l, 0, "ping", &v, sizeof(v), &n), TW_OK);
		CHK(n == sizeof(v) && v == i);
		v++;
		CHK_RV(tw_send(l, 0, "pong", &v, sizeof(v)), TW_OK);
	}
	CHK(tw__shm_frames_read_inline > 0); // this thread's own
	CHK(child_wait_go(c)); // not receiving until the pinger says so
	tw_buf b = { 0 };
	CHK_RV(tw_recv(l, 0, "unpolled", &b), TW_OK);
	CHK(b.len == 1 && memcmp(b.data, "u", 1) == 0);
	tw_buf_free(&b);
	int st = tw_link_close(l);
	CHK(st == TW_OK || st == TW_EPEER);
	return 0;
}

static void t_reader_role(void **state)
{
	if (!two_cpus())
		skip();
	proc a = spawn(pinger, 0, 0);
	proc b = spawn(ponger, 1, 0);
	proc_wait_ready(&a); // its unpolled message is in b's mailbox
	proc_go(&b);
	assert_int_equal(proc_reap(&a), 0);
	assert_int_equal(proc_reap(&b), 0);
	assert_no_segments();
}

// A receive into the application's buffer takes the message's first frames
// straight into that buffer; one that gives up before the message is
// complete (here: every receive polls, timeout 0) must leave it whole for
// the next receive.  Messages of 2 MiB chunked through the ring, every byte
// checked, until one was moved (a progress thread that runs while the
// polling thread is descheduled takes whole messages itself).
#define MOVED_MAX 200
#define MOVED_SIZE (2u * 1024 * 1024)

static int moved_sender(child *c)
{
	tw_link *l;
	unsigned char *buf;
	CHK(ring_party_up(0, MOVED_SIZE, &l, &buf) == 0);
	tw_buf b = { 0 };
	CHK_RV(tw_recv(l, 1, "go", &b), TW_OK);
	tw_buf_free(&b);
	for (uint32_t i = 0;; i++) {
		fill(buf, MOVED_SIZE, i);
		CHK_RV(tw_send(l, 1, "big", buf, MOVED_SIZE), TW_OK);
		CHK_RV(tw_recv(l, 1, "more", &b), TW_OK);
		bool more = b.len == 1 && ((char *)b.data)[0] == 'y';
		tw_buf_free(&b);
		if (!more)
			break;
	}
	free(buf);
	CHK_RV(tw_link_close(l), TW_OK);
	return 0;
}

static int moved_receiver(child *c)
{
	tw_link *l;
	CHK_RV(link_make(2, 1, tw_test_scale_ms(20000), 0, &l), TW_OK);
	unsigned char *buf = malloc(MOVED_SIZE);
	CHK(buf != NULL);
	CHK_RV(tw_link_set_recv_timeout(l, 0), TW_OK);
	size_t n = 0;
	CHK_RV(tw_recv_into(l, 0, "big", buf, MOVED_SIZE, &n), TW_ETIMEDOUT);
	CHK_RV(tw_send(l, 0, "go", NULL, 0), TW_OK);
	uint64_t moved = 0;
	for (uint32_t i = 0; i < MOVED_MAX && moved == 0; i++) {
		memset(buf, 0, MOVED_SIZE);
		int rv;
		while ((rv = tw_recv_into(l, 0, "big", buf, MOVED_SIZE, &n))
		    == TW_ETIMEDOUT)
			;
		CHK_RV(rv, TW_OK);
		CHK(n == MOVED_SIZE && check(buf, n, i));
		moved = atomic_load_explicit(
		    &tw__shm_direct_moved, memory_order_relaxed);
		CHK_RV(
		    tw_send(l, 0, "more", moved == 0 ? "y" : "n", 1), TW_OK);
	}
	// Each message is 256 frames and each poll takes at most 64.
	CHK(moved > 0);
	free(buf);
	CHK_RV(tw_link_set_recv_timeout(l, tw_test_scale_ms(30000)), TW_OK);
	int st = tw_link_close(l);
	CHK(st == TW_OK || st == TW_EPEER);
	return 0;
}

static void t_direct_moved(void **state)
{
	if (!two_cpus())
		skip();
	proc a = spawn(moved_sender, 0, 0);
	proc b = spawn(moved_receiver, 1, 0);
	assert_int_equal(proc_reap(&b), 0);
	assert_int_equal(proc_reap(&a), 0);
	assert_no_segments();
}

// The other way round: a message that another thread began to assemble in
// memory of its own (the progress thread, which held the ring when the
// application came to read) moves into the buffer of the application
// thread that then takes the ring for it, and its rest lands there
// (tw__shm_direct_adopted).  The receiver's progress thread, having put
// the first frame of a 4 MiB message (eight times the ring) into memory of
// its own, waits in a test hook until the application thread waits for
// the ring, which it does only then.  Messages until one was adopted (an
// application thread that found the ring still held after its spin waits
// in the mailbox instead), every byte checked.
#define ADOPT_MAX 50
#define ADOPT_SIZE (4u * 1024 * 1024)

static int adopt_sender(child *c)
{
	tw_link *l;
	unsigned char *buf;
	CHK(ring_party_up(0, ADOPT_SIZE, &l, &buf) == 0);
	tw_buf b = { 0 };
	for (uint32_t i = 0;; i++) {
		CHK_RV(tw_recv(l, 1, "more", &b), TW_OK);
		bool more = b.len == 1 && ((char *)b.data)[0] == 'y';
		tw_buf_free(&b);
		if (!more)
			break;
		fill(buf, ADOPT_SIZE, i);
		CHK_RV(tw_send(l, 1, "big", buf, ADOPT_SIZE), TW_OK);
	}
	free(buf);
	CHK_RV(tw_link_close(l), TW_OK);
	return 0;
}

static _Atomic int adopt_begun;
static int64_t adopt_wait_ns;

static void adopt_hook(const char *key, const _Atomic int *readers)
{
	// Keys travel with their link's namespace before a colon.
	const char *k = strrchr(key, ':');
	if (k == NULL || strcmp(k + 1, "big") != 0)
		return;
	atomic_store(&adopt_begun, 1);
	int64_t end = tw__now_ns() + adopt_wait_ns;
	while (atomic_load(readers) == 0 && tw__now_ns() < end)
		sched_yield();
}

static int adopt_receiver(child *c)
{
	// Set before the link's threads exist, and left set: this process
	// ends with the test.
	adopt_wait_ns = tw_test_scale_ms(10000) * 1000000;
	tw__shm_own_begun_hook = adopt_hook;
	tw_link *l;
	CHK_RV(link_make(2, 1, tw_test_scale_ms(20000), 0, &l), TW_OK);
	unsigned char *buf = malloc(ADOPT_SIZE);
	CHK(buf != NULL);
	uint64_t adopted = 0, before = atomic_load(&tw__shm_direct_adopted);
	for (uint32_t i = 0; i < ADOPT_MAX && adopted == 0; i++) {
		atomic_store(&adopt_begun, 0);
		CHK_RV(tw_send(l, 0, "more", "y", 1), TW_OK);
		int64_t end = tw__now_ns() + adopt_wait_ns;
		while (!atomic_load(&adopt_begun) && tw__now_ns() < end)
			sched_yield();
		CHK(atomic_load(&adopt_begun));
		memset(buf, 0, ADOPT_SIZE);
		size_t n = 0;
		CHK_RV(tw_recv_into(l, 0, "big", buf, ADOPT_SIZE, &n), TW_OK);
		CHK(n == ADOPT_SIZE && check(buf, n, i));
		adopted = atomic_load(&tw__shm_direct_adopted) - before;
	}
	CHK(adopted > 0);
	CHK_RV(tw_send(l, 0, "more", "n", 1), TW_OK);
	free(buf);
	int st = tw_link_close(l);
	CHK(st == TW_OK || st == TW_EPEER);
	return 0;
}

static void t_direct_adopted(void **state)
{
	if (!two_cpus())
		skip(); // one CPU: nobody spins, the progress thread reads
	proc a = spawn(adopt_sender, 0, 0);
	proc b = spawn(adopt_receiver, 1, 0);
	assert_int_equal(proc_reap(&b), 0);
	assert_int_equal(proc_reap(&a), 0);
	assert_no_segments();
}

#define CASE(name) cmocka_unit_test_setup_teardown(t_##name, setup, teardown)

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		CASE(frames),
		CASE(pick),
		CASE(peer_killed),
		CASE(no_leftovers),
		CASE(creator_crash),
		CASE(creator_no_pid),
		CASE(creator_slow),
		CASE(corrupt_frame),
		CASE(corrupt_ring),
		CASE(cont_overrun),
		CASE(wrong_lane),
		CASE(wanted_bad_seq),
		CASE(wanted_overfull),
		CASE(other_geometry),
		CASE(large_cma),
		CASE(large_chunked),
		CASE(large_default),
		CASE(large_last),
		CASE(placed),
		CASE(first_placed),
		CASE(reader_naps),
		CASE(reader_role),
		CASE(direct_moved),
		CASE(direct_adopted),
		CASE(close_unread),
		CASE(close_unread_forever),
		CASE(left_ack_unread),
		CASE(left_data_unread),
	};
	size_t count = sizeof(tests) / sizeof(tests[0]);
	if (argc > 1 && tw_test_select(tests, count, "t_", argv[1]) != 0)
		return 1;
	return cmocka_run_group_tests_name("shm", tests, NULL, NULL);
}
