// Rings and signals between processes, over POSIX shared memory.
//
// The test forks its helpers: a producer, a consumer, or a process that
// plays dead.  Readiness travels over pipes (a child writes one byte once it
// is attached, or once it is mid-stream), never over sleeps.  Children do
// not use cmocka; they report through their exit status, which the parent
// checks, and they bound every wait so that none outlives a failed parent.
// Segment names carry the parent's pid so that parallel ctest runs never
// meet, and every test ends by checking that it left nothing behind.

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif

#include "core/clock.h"
#include "ring/ring_layout.h"
#include "testutil.h"

#define NAME_PREFIX "tw-ring-test-"
#define MAX_CHILDREN 4

static char seg_name[64]; // the current test's segment
static pid_t children[MAX_CHILDREN];
static char last_log[512];

static void keep_log(const tw_log_record *rec, void *arg)
{
	(void)arg;
	snprintf(last_log, sizeof(last_log), "%s", rec->msg);
}

static int64_t wait_us(void)
{
	return tw_test_scale_ms(20000) * 1000;
}

static int setup(void **state)
{
	static int serial;
	snprintf(seg_name, sizeof(seg_name), "/" NAME_PREFIX "%d-%d",
	    (int)getpid(), serial++);
	memset(children, 0, sizeof(children));
	return 0;
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
	tw_log_set_handler(keep_log, NULL); // a missing name is fine here
	tw_shm_unlink(seg_name);
	tw_log_set_handler(NULL, NULL);
	return 0;
}

// Fails unless no segment of this process exists any more.
static void assert_no_segments(void)
{
	int fd = shm_open(seg_name, O_RDONLY, 0);
	if (fd >= 0)
		close(fd);
	assert_true(fd < 0 && errno == ENOENT);
	char prefix[48];
	snprintf(prefix, sizeof(prefix), NAME_PREFIX "%d-", (int)getpid());
	DIR *d = opendir("/dev/shm");
	if (d == NULL)
		return; // not Linux: the shm_open probe above is all we have
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
			fail_msg("segment /dev/shm/%s left behind", e->d_name);
	}
	closedir(d);
}

// In a child: report a failure and leave with `code`.
#define CHILD_CHECK(cond, code)                                               \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "child %d: %s failed (line %d)\n",    \
			    (int)getpid(), #cond, __LINE__);                  \
			_exit(code);                                          \
		}                                                             \
	} while (0)

struct child_ctx {
	int ready_fd; // write one byte here when ready
	int hold_fd; // blocks reading this when asked to play dead
	int arg;
};

typedef int (*child_func_t)(struct child_ctx *c);

static void child_ready(struct child_ctx *c)
{
	char b = 1;
	CHILD_CHECK(write(c->ready_fd, &b, 1) == 1, 90);
}

// Forks a child running `fn` and returns its pid; *ready_fd receives the
// read end of its readiness pipe, *hold_fd (if not NULL) the write end of a
// pipe that it may block on.
static pid_t spawn(child_func_t fn, int arg, int *ready_fd, int *hold_fd)
{
	int rp[2], hp[2];
	assert_int_equal(pipe(rp), 0);
	assert_int_equal(pipe(hp), 0);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
#if defined(__linux__)
		prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
		close(rp[0]);
		close(hp[1]); // so that a dead parent means EOF
		struct child_ctx c = { rp[1], hp[0], arg };
		_exit(fn(&c));
	}
	close(rp[1]);
	close(hp[0]);
	for (int i = 0; i < MAX_CHILDREN; i++) {
		if (children[i] == 0) {
			children[i] = pid;
			break;
		}
	}
	*ready_fd = rp[0];
	if (hold_fd != NULL)
		*hold_fd = hp[1];
	else
		close(hp[1]);
	return pid;
}

static void await_ready(int fd)
{
	char b;
	ssize_t got;
	do
		got = read(fd, &b, 1);
	while (got < 0 && errno == EINTR);
	if (got != 1)
		fail_msg("a child exited before it was ready");
}

static void forget_child(pid_t pid)
{
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (children[i] == pid)
			children[i] = 0;
}

// Waits for a child and returns its exit code (-signal when killed).
static int reap(pid_t pid)
{
	int st;
	pid_t got;
	do
		got = waitpid(pid, &st, 0);
	while (got < 0 && errno == EINTR);
	assert_int_equal(got, pid);
	forget_child(pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

// Maps the current segment and attaches a ring in it (child side).
static tw_ring *child_attach(size_t *size, void **mem, int role)
{
	tw_ring *r = NULL;
	CHILD_CHECK(tw_shm_open(seg_name, size, mem) == TW_OK, 80);
	CHILD_CHECK(tw_ring_attach(*mem, *size, &r) == TW_OK, 81);
	CHILD_CHECK(tw_ring_set_role(r, role) == TW_OK, 82);
	return r;
}

struct seg {
	void *mem;
	size_t size;
	tw_ring *r;
};

static void seg_make(
    struct seg *s, uint32_t lanes, uint32_t slots, uint32_t max_msg)
{
	s->size = tw_ring_bytes(lanes, slots, max_msg);
	TW_PASS(tw_shm_create(seg_name, s->size, &s->mem));
	TW_PASS(tw_ring_init(s->mem, s->size, lanes, slots, max_msg));
	TW_PASS(tw_ring_attach(s->mem, s->size, &s->r));
}

static void seg_done(struct seg *s)
{
	tw_ring_detach(s->r);
	TW_PASS(tw_shm_close(s->mem, s->size));
	TW_PASS(tw_shm_unlink(seg_name));
	assert_no_segments();
}

static void pattern(unsigned char *p, size_t n, uint32_t seq, uint32_t lane)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(seq * 29 + lane * 101 + i);
}

static size_t msg_len(uint32_t seq, uint32_t max_msg)
{
	return (seq * 13u) % (max_msg + 1);
}

static void test_shm_api(void **state)
{
	char long_name[220];
	void *mem = NULL, *mem2 = NULL;
	size_t size = 0;
	memset(long_name, 'n', sizeof(long_name));
	long_name[201] = '\0';
	tw_log_set_handler(keep_log, NULL);

	static const char *const bad[]
	    = { "", "/", "a/b", "/a/b", "//x", "x/" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		TW_FAIL(tw_shm_create(bad[i], 64, &mem), TW_EINVAL);
		TW_FAIL(tw_shm_open(bad[i], &size, &mem), TW_EINVAL);
		TW_FAIL(tw_shm_unlink(bad[i]), TW_EINVAL);
	}
	TW_FAIL(tw_shm_create(NULL, 64, &mem), TW_EINVAL);
	TW_FAIL(tw_shm_open(NULL, &size, &mem), TW_EINVAL);
	TW_FAIL(tw_shm_unlink(NULL), TW_EINVAL);
	TW_FAIL(tw_shm_create(long_name, 64, &mem), TW_EINVAL);
	TW_FAIL(tw_shm_create(seg_name, 0, &mem), TW_EINVAL);
	TW_FAIL(tw_shm_create(seg_name, SIZE_MAX, &mem), TW_EINVAL);
	TW_FAIL(tw_shm_create(seg_name, 64, NULL), TW_EINVAL);
	TW_FAIL(tw_shm_open(seg_name, NULL, &mem), TW_EINVAL);
	TW_FAIL(tw_shm_open(seg_name, &size, NULL), TW_EINVAL);
	TW_FAIL(tw_shm_close(NULL, 64), TW_EINVAL);
	assert_null(mem);

	// Absent: a system error, logged with its reason.
	last_log[0] = '\0';
	TW_FAIL(tw_shm_open(seg_name, &size, &mem), TW_ESYS);
	assert_non_null(strstr(last_log, seg_name));
	assert_non_null(strstr(last_log, strerror(ENOENT)));
	last_log[0] = '\0';
	TW_FAIL(tw_shm_unlink(seg_name), TW_ESYS);
	assert_non_null(strstr(last_log, strerror(ENOENT)));

	// Created with and opened without the slash: one segment, shared.
	TW_PASS(tw_shm_create(seg_name, 4096 + 100, &mem));
	assert_int_equal((uintptr_t)mem % 64, 0);
	memset(mem, 0x5a, 4096 + 100);
	TW_PASS(tw_shm_open(seg_name + 1, &size, &mem2));
	assert_int_equal(size, 4096 + 100);
	assert_true(mem2 != mem);
	assert_int_equal(((unsigned char *)mem2)[4096 + 99], 0x5a);
	((unsigned char *)mem2)[7] = 0x11;
	assert_int_equal(((unsigned char *)mem)[7], 0x11);
	// Creation is exclusive.
	last_log[0] = '\0';
	TW_FAIL(tw_shm_create(seg_name, 64, &mem2), TW_ESYS);
	assert_non_null(strstr(last_log, strerror(EEXIST)));
	TW_FAIL(tw_shm_close(mem, 0), TW_EINVAL);
	TW_PASS(tw_shm_close(mem, 4096 + 100));
	TW_PASS(tw_shm_close(mem2, size));
	TW_PASS(tw_shm_unlink(seg_name));

	// Too small to be a segment of ours.
	TW_PASS(tw_shm_create(seg_name, 16, &mem));
	TW_FAIL(tw_shm_open(seg_name, &size, &mem2), TW_EPROTO);
	TW_PASS(tw_shm_close(mem, 16));
	TW_PASS(tw_shm_unlink(seg_name));

	// A size that cannot be mapped fails, and leaves no segment behind.
	last_log[0] = '\0';
	TW_FAIL(tw_shm_create(seg_name, (size_t)1 << 62, &mem), TW_ESYS);
	assert_true(last_log[0] != '\0');
	assert_no_segments();

	// The longest name accepted.
	long_name[0] = '/';
	snprintf(long_name + 1, 40, NAME_PREFIX "%d-", (int)getpid());
	long_name[strlen(long_name)] = 'n';
	long_name[201] = '\0';
	TW_PASS(tw_shm_create(long_name, 64, &mem));
	TW_PASS(tw_shm_open(long_name, &size, &mem2));
	TW_PASS(tw_shm_close(mem, 64));
	TW_PASS(tw_shm_close(mem2, size));
	TW_PASS(tw_shm_unlink(long_name));
	tw_log_set_handler(NULL, NULL);
	assert_no_segments();
}

#define EXCHANGE_COUNT 100000
#define EXCHANGE_LANES 2
#define EXCHANGE_MAX 200

static int exchange_producer(struct child_ctx *c)
{
	size_t size;
	void *mem;
	tw_ring *r = child_attach(&size, &mem, 0);
	child_ready(c);
	unsigned char buf[EXCHANGE_MAX];
	uint32_t seq[EXCHANGE_LANES] = { 0 };
	for (uint32_t k = 0; k < EXCHANGE_COUNT; k++) {
		// An uneven mix of lanes, so that recv_any meets both
		// busy and idle lanes.
		uint32_t lane = (k * 7 / 3) % EXCHANGE_LANES;
		uint32_t s = seq[lane]++;
		size_t n = msg_len(s, EXCHANGE_MAX);
		pattern(buf, n, s, lane);
		int status = tw_ring_send(r, lane, lane + 1000, buf, n,
		    ((uint64_t)lane << 32) | s, wait_us());
		CHILD_CHECK(status == TW_OK, 10);
	}
	tw_ring_detach(r);
	tw_shm_close(mem, size);
	return 0;
}

static int exchange_consumer(struct child_ctx *c)
{
	size_t size;
	void *mem;
	tw_ring *r = child_attach(&size, &mem, 1);
	child_ready(c);
	unsigned char buf[EXCHANGE_MAX], want[EXCHANGE_MAX];
	uint32_t seq[EXCHANGE_LANES] = { 0 };
	for (uint32_t k = 0; k < EXCHANGE_COUNT; k++) {
		uint32_t lane, route;
		uint64_t corr;
		size_t n;
		int status = tw_ring_recv_any(
		    r, &lane, buf, sizeof(buf), &n, &route, &corr, wait_us());
		CHILD_CHECK(status == TW_OK, 20);
		CHILD_CHECK(lane < EXCHANGE_LANES, 21);
		uint32_t s = seq[lane]++;
		CHILD_CHECK(route == lane + 1000, 22);
		CHILD_CHECK(corr == (((uint64_t)lane << 32) | s), 23);
		CHILD_CHECK(n == msg_len(s, EXCHANGE_MAX), 24);
		pattern(want, n, s, lane);
		CHILD_CHECK(memcmp(buf, want, n) == 0, 25);
	}
	CHILD_CHECK(tw_ring_recv_any(r, &(uint32_t) { 0 }, buf, sizeof(buf),
	                NULL, NULL, NULL, 0)
	        == TW_ETIMEDOUT,
	    26);
	tw_ring_detach(r);
	tw_shm_close(mem, size);
	return 0;
}

static void test_exchange(void **state)
{
	struct seg s;
	seg_make(&s, EXCHANGE_LANES, 8, EXCHANGE_MAX);
	int cfd, pfd;
	pid_t cons = spawn(exchange_consumer, 0, &cfd, NULL);
	await_ready(cfd);
	pid_t prod = spawn(exchange_producer, 0, &pfd, NULL);
	await_ready(pfd);
	assert_int_equal(reap(prod), 0);
	assert_int_equal(reap(cons), 0);
	close(cfd);
	close(pfd);
	// Everything sent was taken, as the indices in the segment show.
	unsigned char buf[8];
	uint32_t lane;
	TW_FAIL(tw_ring_recv_any(
	            s.r, &lane, buf, sizeof(buf), NULL, NULL, NULL, 0),
	    TW_ETIMEDOUT);
	seg_done(&s);
}

#define KILL_AFTER 1000

// Sends an endless numbered stream; ready once KILL_AFTER went out.
static int endless_producer(struct child_ctx *c)
{
	size_t size;
	void *mem;
	tw_ring *r = child_attach(&size, &mem, 0);
	unsigned char buf[64];
	for (uint32_t s = 0;; s++) {
		size_t n = msg_len(s, 64);
		pattern(buf, n, s, 0);
		int status = tw_ring_send(r, 0, s, buf, n, s, wait_us());
		if (c->arg && status == TW_EPEER)
			return 0; // the consumer died, as expected
		CHILD_CHECK(status == TW_OK, 30);
		if (s + 1 == KILL_AFTER)
			child_ready(c);
	}
}

// Takes the numbered stream in order until the producer is gone.  With
// arg = 1 it stops after KILL_AFTER messages and waits to be killed.
static int stream_consumer(struct child_ctx *c)
{
	size_t size;
	void *mem;
	tw_ring *r = child_attach(&size, &mem, 1);
	if (!c->arg)
		child_ready(c);
	unsigned char buf[64], want[64];
	for (uint32_t s = 0;; s++) {
		size_t n;
		uint32_t route;
		int status = tw_ring_recv(
		    r, 0, buf, sizeof(buf), &n, &route, NULL, wait_us());
		if (!c->arg && status == TW_EPEER) {
			CHILD_CHECK(s >= KILL_AFTER, 40);
			return 0;
		}
		CHILD_CHECK(status == TW_OK, 41);
		CHILD_CHECK(route == s, 42);
		CHILD_CHECK(n == msg_len(s, 64), 43);
		pattern(want, n, s, 0);
		CHILD_CHECK(memcmp(buf, want, n) == 0, 44);
		if (c->arg && s + 1 == KILL_AFTER) {
			child_ready(c);
			// Play dead: block until killed (or the parent
			// goes, which closes the pipe).
			char b;
			ssize_t rv = read(c->hold_fd, &b, 1);
			(void)rv;
			return 45;
		}
	}
}

static void test_producer_killed(void **state)
{
	struct seg s;
	seg_make(&s, 1, 4, 64);
	int cfd, pfd;
	pid_t cons = spawn(stream_consumer, 0, &cfd, NULL);
	await_ready(cfd);
	pid_t prod = spawn(endless_producer, 0, &pfd, NULL);
	await_ready(pfd); // mid-stream
	assert_int_equal(kill(prod, SIGKILL), 0);
	assert_int_equal(reap(prod), -SIGKILL);
	int64_t t0 = tw__now_ns();
	// The consumer drains what was sent, blocks, and sees the producer
	// gone: it exits 0 only if its wait ended with TW_EPEER.
	assert_int_equal(reap(cons), 0);
	int64_t took_ms = (tw__now_ns() - t0) / 1000000;
	assert_true(took_ms < tw_test_scale_ms(3000));
	close(cfd);
	close(pfd);
	seg_done(&s);
}

static void test_consumer_killed(void **state)
{
	struct seg s;
	seg_make(&s, 1, 4, 64);
	int cfd, pfd, hold;
	pid_t cons = spawn(stream_consumer, 1, &cfd, &hold);
	pid_t prod = spawn(endless_producer, 1, &pfd, NULL);
	await_ready(cfd); // took KILL_AFTER messages, stopped consuming
	assert_int_equal(kill(cons, SIGKILL), 0);
	assert_int_equal(reap(cons), -SIGKILL);
	int64_t t0 = tw__now_ns();
	// The producer fills the lane, blocks, and sees the consumer gone.
	assert_int_equal(reap(prod), 0);
	int64_t took_ms = (tw__now_ns() - t0) / 1000000;
	assert_true(took_ms < tw_test_scale_ms(3000));
	close(cfd);
	close(pfd);
	close(hold);
	seg_done(&s);
}

// arg = 1: a consumer that expects 10 messages then TW_EPEER.
// arg = 0: a producer that fills its lane and expects TW_EPEER.
static int abort_peer(struct child_ctx *c)
{
	size_t size;
	void *mem;
	tw_ring *r = child_attach(&size, &mem, c->arg);
	child_ready(c);
	unsigned char buf[8] = { 0 };
	if (c->arg) {
		for (uint32_t i = 0; i < 10; i++) {
			uint32_t route;
			int status = tw_ring_recv(r, 0, buf, sizeof(buf), NULL,
			    &route, NULL, wait_us());
			CHILD_CHECK(status == TW_OK && route == i, 50);
		}
		CHILD_CHECK(tw_ring_recv(r, 0, buf, sizeof(buf), NULL, NULL,
		                NULL, wait_us())
		        == TW_EPEER,
		    51);
	} else {
		int status;
		uint32_t sent = 0;
		while (
		    (status = tw_ring_send(r, 0, sent, buf, 1, 0, wait_us()))
		    == TW_OK)
			sent++;
		CHILD_CHECK(status == TW_EPEER && sent >= 2, 52);
	}
	return 0;
}

// Waits (yielding, not sleeping) until *count is non-zero: the process
// that owns it has announced itself as a sleeper.
static void await_sleeper(uint32_t *count)
{
	int64_t give_up = tw__now_ns() + tw_test_scale_ms(10000) * 1000000;
	while (__atomic_load_n(count, __ATOMIC_SEQ_CST) == 0) {
		if (tw__now_ns() > give_up)
			fail_msg("the child never went to sleep");
		sched_yield();
	}
}

static void test_peer_abort(void **state)
{
	// This process produces 10 messages and aborts while it stays alive,
	// so only the flag can end the consumer's wait; the messages queued
	// before the abort are still delivered.
	struct seg s;
	seg_make(&s, 1, 2, 8);
	TW_PASS(tw_ring_set_role(s.r, 0));
	int fd;
	pid_t child = spawn(abort_peer, 1, &fd, NULL);
	await_ready(fd);
	close(fd);
	for (uint32_t i = 0; i < 10; i++)
		TW_PASS(tw_ring_send(s.r, 0, i, "m", 1, 0, wait_us()));
	tw_ring_abort(s.r, 0);
	assert_int_equal(reap(child), 0);

	// Again with the roles swapped: a producer process asleep on a full
	// lane, and this process, the consumer, aborts.
	tw_ring_detach(s.r);
	TW_PASS(tw_ring_init(s.mem, s.size, 1, 2, 8));
	TW_PASS(tw_ring_attach(s.mem, s.size, &s.r));
	TW_PASS(tw_ring_set_role(s.r, 1));
	child = spawn(abort_peer, 0, &fd, NULL);
	await_ready(fd);
	close(fd);
	struct tw_ring_lane *lane0
	    = (struct tw_ring_lane *)((unsigned char *)s.mem
	        + TW_RING_HDR_SIZE);
	await_sleeper(&lane0->prod_sleepers);
	tw_ring_abort(s.r, 1);
	assert_int_equal(reap(child), 0);
	seg_done(&s);
}

#define SIGNAL_ROUNDS 2000

// Answers every value of sig[0] on sig[1], then waits for a change of the
// high half of sig[2] only.
static int signal_peer(struct child_ctx *c)
{
	size_t size;
	void *mem;
	CHILD_CHECK(tw_shm_open(seg_name, &size, &mem) == TW_OK, 60);
	uint64_t *sig = mem;
	child_ready(c);
	for (uint64_t i = 1; i <= SIGNAL_ROUNDS; i++) {
		CHILD_CHECK(
		    tw_signal_wait(&sig[0], i, wait_us()) == TW_OK, 61);
		CHILD_CHECK(tw_signal_notify(&sig[1], i) == TW_OK, 62);
	}
	CHILD_CHECK(
	    tw_signal_wait(&sig[2], UINT64_C(3) << 32, wait_us()) == TW_OK,
	    63);
	tw_shm_close(mem, size);
	return 0;
}

static void test_signal(void **state)
{
	size_t size = 4096;
	void *mem;
	TW_PASS(tw_shm_create(seg_name, size, &mem));
	uint64_t *sig = mem;
	int fd;
	pid_t child = spawn(signal_peer, 0, &fd, NULL);
	await_ready(fd);
	close(fd);
	int64_t t0 = tw__now_ns();
	for (uint64_t i = 1; i <= SIGNAL_ROUNDS; i++) {
		TW_PASS(tw_signal_notify(&sig[0], i));
		TW_PASS(tw_signal_wait(&sig[1], i, wait_us()));
	}
	// Each round needs a wake-up across processes; lost ones would cost
	// a 20 ms sleep slice each, 40 s in all.
	assert_true((tw__now_ns() - t0) / 1000000 < tw_test_scale_ms(20000));
	for (uint64_t i = 1; i <= 3; i++)
		TW_PASS(tw_signal_notify(&sig[2], i << 32));
	assert_int_equal(reap(child), 0);
	assert_true(sig[1] == SIGNAL_ROUNDS);
	TW_PASS(tw_shm_close(mem, size));
	TW_PASS(tw_shm_unlink(seg_name));
	assert_no_segments();
}

#define T(name)                                                               \
	{                                                                     \
#name, test_##name, setup, teardown, NULL                     \
	}

int main(int argc, char **argv)
{
	static const struct CMUnitTest tests[]
	    = { T(shm_api), T(exchange), T(producer_killed),
		      T(consumer_killed), T(peer_abort), T(signal) };
	size_t count = sizeof(tests) / sizeof(tests[0]);
	if (argc > 1 && tw_test_select(tests, count, "", argv[1]) != 0)
		return 1;
	// Shared memory may be missing (no /dev/shm in a container).
	char probe[64];
	void *mem;
	snprintf(
	    probe, sizeof(probe), "/" NAME_PREFIX "%d-probe", (int)getpid());
	tw_log_set_handler(keep_log, NULL);
	if (tw_shm_create(probe, 64, &mem) != TW_OK)
		TW_SKIP_ALL(
		    "POSIX shared memory is not available: %s", last_log);
	tw_shm_close(mem, 64);
	tw_shm_unlink(probe);
	tw_log_set_handler(NULL, NULL);
	return _cmocka_run_group_tests("ring_proc", tests, count, NULL, NULL);
}
