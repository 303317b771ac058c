// Unit tests of logging (log.c): level names, the level filter, the
// pluggable handler and the stderr default, and the environment.
//
// The level is read from TAGWIRE_LOG / TAGWIRE_DEBUG once per process, so
// each environment case re-executes this binary (fork, then execve of
// /proc/self/exe with "child MODE" and the variables set) and reads the
// level the child saw from its exit status and its stderr from a pipe.
// Nothing waits with a sleep: the parent reads the pipe to its end and
// reaps the child.

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/log.h"
#include "testutil.h"

extern char **environ;

// ---------------------------------------------------------------------------
// A capturing handler
// ---------------------------------------------------------------------------

#define CAP_MAX 16

typedef struct cap_rec {
	int level;
	char subsys[32];
	char link_id[256];
	bool has_link;
	size_t rank;
	char msg[1024];
} cap_rec;

typedef struct capture {
	int n;
	cap_rec r[CAP_MAX];
} capture;

static void cap_handler(const tw_log_record *rec, void *arg)
{
	capture *c = arg;
	if (c->n >= CAP_MAX) {
		c->n++;
		return;
	}
	cap_rec *r = &c->r[c->n++];
	r->level = rec->level;
	snprintf(r->subsys, sizeof(r->subsys), "%s",
	    rec->subsys ? rec->subsys : "(null)");
	r->has_link = rec->link_id != NULL;
	snprintf(r->link_id, sizeof(r->link_id), "%s",
	    rec->link_id ? rec->link_id : "");
	r->rank = rec->rank;
	snprintf(r->msg, sizeof(r->msg), "%s", rec->msg ? rec->msg : "(null)");
}

static int setup(void **state)
{
	(void)state;
	tw_log_set_handler(NULL, NULL);
	return tw_log_set_level(TW_LOG_WARN);
}

// Leaves the process as the next test expects it: default handler, default
// level.
static int teardown(void **state)
{
	(void)state;
	tw_log_set_handler(NULL, NULL);
	return tw_log_set_level(TW_LOG_WARN);
}

// ---------------------------------------------------------------------------
// Level names and the level setter
// ---------------------------------------------------------------------------

static void test_parse_level(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		int level;
	} good[] = {
		{ "none", TW_LOG_NONE },
		{ "error", TW_LOG_ERROR },
		{ "warn", TW_LOG_WARN },
		{ "info", TW_LOG_INFO },
		{ "debug", TW_LOG_DEBUG },
		{ "trace", TW_LOG_TRACE },
		// Environment values are typed by people.
		{ "DEBUG", TW_LOG_DEBUG },
		{ "Trace", TW_LOG_TRACE },
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		int level = -42;
		TW_PASS(tw_log_parse_level(good[i].name, &level));
		assert_int_equal(level, good[i].level);
	}

	static const char *const bad[] = { "", "verbose", "warnx", " warn",
		"warn ", "err", "debug1", "5", "-1", "info\n", "tracee" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int level = -42;
		TW_FAIL(tw_log_parse_level(bad[i], &level), TW_EINVAL);
		// The output is left alone on failure.
		assert_int_equal(level, -42);
	}
	int level = -42;
	TW_FAIL(tw_log_parse_level(NULL, &level), TW_EINVAL);
	assert_int_equal(level, -42);
	TW_FAIL(tw_log_parse_level("warn", NULL), TW_EINVAL);
}

static void test_set_level(void **state)
{
	(void)state;
	for (int l = TW_LOG_NONE; l <= TW_LOG_TRACE; l++) {
		TW_PASS(tw_log_set_level(l));
		assert_int_equal(tw_log_level(), l);
	}
	TW_PASS(tw_log_set_level(TW_LOG_INFO));
	static const int bad[]
	    = { -1, -2, TW_LOG_TRACE + 1, 100, INT32_MIN, INT32_MAX };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		TW_FAIL(tw_log_set_level(bad[i]), TW_EINVAL);
		// A rejected level changes nothing.
		assert_int_equal(tw_log_level(), TW_LOG_INFO);
	}
}

// ---------------------------------------------------------------------------
// The handler and the filter
// ---------------------------------------------------------------------------

static void test_handler_records(void **state)
{
	(void)state;
	capture cap = { 0 };
	TW_PASS(tw_log_set_handler(cap_handler, &cap));
	TW_PASS(tw_log_set_level(TW_LOG_TRACE));

	TW_LOG(TW_LOG_ERROR, "test", "hello %d %s", 42, "world");
	assert_int_equal(cap.n, 1);
	assert_int_equal(cap.r[0].level, TW_LOG_ERROR);
	assert_string_equal(cap.r[0].subsys, "test");
	assert_string_equal(cap.r[0].msg, "hello 42 world");
	// A line of no link says so.
	assert_false(cap.r[0].has_link);
	assert_true(cap.r[0].rank == SIZE_MAX);

	TW_LOGL(TW_LOG_INFO, "link", "root/child", 3, "rank line");
	assert_int_equal(cap.n, 2);
	assert_int_equal(cap.r[1].level, TW_LOG_INFO);
	assert_string_equal(cap.r[1].subsys, "link");
	assert_true(cap.r[1].has_link);
	assert_string_equal(cap.r[1].link_id, "root/child");
	assert_int_equal(cap.r[1].rank, 3);
	assert_string_equal(cap.r[1].msg, "rank line");

	// Every level reaches the handler as itself.
	TW_WARN("w", "a");
	TW_INFO("i", "b");
	TW_DEBUG("d", "c");
	TW_LOG(TW_LOG_TRACE, "t", "d");
	assert_int_equal(cap.n, 6);
	assert_int_equal(cap.r[2].level, TW_LOG_WARN);
	assert_int_equal(cap.r[3].level, TW_LOG_INFO);
	assert_int_equal(cap.r[4].level, TW_LOG_DEBUG);
	assert_int_equal(cap.r[5].level, TW_LOG_TRACE);
	assert_string_equal(cap.r[5].subsys, "t");
}

static void test_handler_arg_swap(void **state)
{
	(void)state;
	capture a = { 0 }, b = { 0 };
	TW_PASS(tw_log_set_handler(cap_handler, &a));
	TW_ERROR("x", "first");
	TW_PASS(tw_log_set_handler(cap_handler, &b));
	TW_ERROR("x", "second");
	// Each line went to the argument installed at the time, only there.
	assert_int_equal(a.n, 1);
	assert_int_equal(b.n, 1);
	assert_string_equal(a.r[0].msg, "first");
	assert_string_equal(b.r[0].msg, "second");
}

// ---------------------------------------------------------------------------
// Changing the handler while other threads log
// ---------------------------------------------------------------------------

// The state of one installed handler, freed as soon as another replaced
// it.  `calls` sits past the bytes the allocator reuses in a free block,
// so that a late call in a build without sanitizers is counted (below)
// rather than crashing.
typedef struct swap_state {
	unsigned long gen;
	char pad[48];
	_Atomic unsigned long calls;
} swap_state;

#define SWAP_THREADS 3
#define SWAP_ROUNDS 2000

static _Atomic unsigned long swap_replaced; // states up to this gen
static _Atomic unsigned long swap_late; // calls that outlived their state
static _Atomic int swap_stop;

static void swap_handler(const tw_log_record *rec, void *arg)
{
	(void)rec;
	swap_state *st = arg;
	unsigned long gen = st->gen;
	// Lets the setting thread run while this call is in progress: a
	// set_handler that does not wait for it returns now, and the state
	// is freed under this call.
	sched_yield();
	if (gen <= atomic_load(&swap_replaced))
		atomic_fetch_add(&swap_late, 1);
	atomic_fetch_add(&st->calls, 1);
}

static void *swap_logger(void *arg)
{
	(void)arg;
	while (!atomic_load_explicit(&swap_stop, memory_order_acquire))
		TW_ERROR("swap", "a line");
	return NULL;
}

static swap_state *swap_new(unsigned long gen)
{
	swap_state *st = calloc(1, sizeof(*st));
	assert_non_null(st);
	st->gen = gen;
	return st;
}

// Threads log all the time while the handler's state is replaced and
// freed at once, SWAP_ROUNDS times: once set_handler has returned, no
// call of the handler it replaced may be running (ASan: a use after free;
// TSan: a race with free; any build: swap_late).
static void test_handler_swap_frees(void **state)
{
	(void)state;
	swap_state *cur = swap_new(1);
	TW_PASS(tw_log_set_handler(swap_handler, cur));
	pthread_t th[SWAP_THREADS];
	for (int i = 0; i < SWAP_THREADS; i++)
		assert_int_equal(
		    pthread_create(&th[i], NULL, swap_logger, NULL), 0);
	for (unsigned long gen = 2; gen <= SWAP_ROUNDS + 1; gen++) {
		// Every handler is called before it is replaced.
		while (atomic_load(&cur->calls) == 0)
			sched_yield();
		swap_state *next = swap_new(gen);
		TW_PASS(tw_log_set_handler(swap_handler, next));
		atomic_store(&swap_replaced, gen - 1);
		free(cur);
		cur = next;
	}
	atomic_store_explicit(&swap_stop, 1, memory_order_release);
	for (int i = 0; i < SWAP_THREADS; i++)
		pthread_join(th[i], NULL);
	TW_PASS(tw_log_set_handler(NULL, NULL));
	free(cur);
	assert_int_equal(atomic_load(&swap_late), 0);
}

// A handler that tries to change the handler (refused: it would wait for
// itself) and logs a line of its own (a nested call).
static int reentry_rv = TW_OK;

static void reentrant_handler(const tw_log_record *rec, void *arg)
{
	reentry_rv = tw_log_set_handler(NULL, NULL);
	if (strcmp(rec->msg, "outer") == 0)
		TW_ERROR("r", "inner");
	cap_handler(rec, arg);
}

static void test_handler_reentry(void **state)
{
	(void)state;
	capture cap = { 0 };
	TW_PASS(tw_log_set_handler(reentrant_handler, &cap));
	TW_ERROR("r", "outer");
	assert_int_equal(reentry_rv, TW_EINVAL);
	assert_int_equal(cap.n, 2);
	assert_string_equal(cap.r[0].msg, "inner");
	assert_string_equal(cap.r[1].msg, "outer");
	// Still installed, and nothing counts as running any more: this
	// returns.
	TW_ERROR("r", "again");
	assert_int_equal(cap.n, 3);
	TW_PASS(tw_log_set_handler(NULL, NULL));
}

// A handler call in progress in another thread when the process forks
// never ends in the child: the child must still be able to change the
// handler.
static pthread_mutex_t held_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t held_cv = PTHREAD_COND_INITIALIZER;
static int held_in, held_go;

static void held_handler(const tw_log_record *rec, void *arg)
{
	(void)rec;
	(void)arg;
	pthread_mutex_lock(&held_mtx);
	held_in = 1;
	pthread_cond_broadcast(&held_cv);
	while (!held_go)
		pthread_cond_wait(&held_cv, &held_mtx);
	pthread_mutex_unlock(&held_mtx);
}

static void *held_logger(void *arg)
{
	(void)arg;
	TW_ERROR("held", "a line");
	return NULL;
}

static void test_handler_fork(void **state)
{
	(void)state;
	TW_PASS(tw_log_set_handler(held_handler, NULL));
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, held_logger, NULL), 0);
	pthread_mutex_lock(&held_mtx);
	while (!held_in)
		pthread_cond_wait(&held_cv, &held_mtx);
	pthread_mutex_unlock(&held_mtx);
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		alarm(10); // a set_handler that waits forever fails
		_exit(tw_log_set_handler(NULL, NULL) == TW_OK ? 0 : 1);
	}
	int st = 0;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	pthread_mutex_lock(&held_mtx);
	held_go = 1;
	pthread_cond_broadcast(&held_cv);
	pthread_mutex_unlock(&held_mtx);
	pthread_join(th, NULL);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_level_filter(void **state)
{
	(void)state;
	capture cap = { 0 };
	TW_PASS(tw_log_set_handler(cap_handler, &cap));

	TW_PASS(tw_log_set_level(TW_LOG_WARN));
	TW_DEBUG("f", "debug");
	TW_INFO("f", "info");
	assert_int_equal(cap.n, 0);
	TW_WARN("f", "warn");
	TW_ERROR("f", "error");
	assert_int_equal(cap.n, 2);
	assert_string_equal(cap.r[0].msg, "warn");
	assert_string_equal(cap.r[1].msg, "error");

	// NONE silences even errors.
	cap.n = 0;
	TW_PASS(tw_log_set_level(TW_LOG_NONE));
	TW_ERROR("f", "error");
	TW_LOGL(TW_LOG_ERROR, "f", "root", 0, "error");
	assert_int_equal(cap.n, 0);

	// ERROR lets errors through and nothing else.
	TW_PASS(tw_log_set_level(TW_LOG_ERROR));
	TW_WARN("f", "warn");
	TW_ERROR("f", "error");
	assert_int_equal(cap.n, 1);
	assert_int_equal(cap.r[0].level, TW_LOG_ERROR);

	// DEBUG stops just short of TRACE.
	cap.n = 0;
	TW_PASS(tw_log_set_level(TW_LOG_DEBUG));
	TW_LOG(TW_LOG_TRACE, "f", "trace");
	TW_DEBUG("f", "debug");
	assert_int_equal(cap.n, 1);
	assert_string_equal(cap.r[0].msg, "debug");
}

// A suppressed line must not even evaluate its formatting work: the level
// check comes first, so a disabled line is nearly free.
static int side_effects;
static int count_call(void)
{
	return ++side_effects;
}

static void test_filter_before_format(void **state)
{
	(void)state;
	capture cap = { 0 };
	TW_PASS(tw_log_set_handler(cap_handler, &cap));
	TW_PASS(tw_log_set_level(TW_LOG_WARN));
	side_effects = 0;
	TW_DEBUG("f", "%d", count_call());
	assert_int_equal(side_effects, 0);
	TW_ERROR("f", "%d", count_call());
	assert_int_equal(side_effects, 1);
	assert_string_equal(cap.r[0].msg, "1");
}

static void test_errno_kept(void **state)
{
	(void)state;
	capture cap = { 0 };
	TW_PASS(tw_log_set_handler(cap_handler, &cap));
	// "%m" prints the caller's errno, and logging does not clobber it.
	errno = ENOENT;
	TW_ERROR("f", "open failed: %m");
	assert_int_equal(errno, ENOENT);
	assert_int_equal(cap.n, 1);
	assert_non_null(strstr(cap.r[0].msg, strerror(ENOENT)));
}

static void test_long_line(void **state)
{
	(void)state;
	capture cap = { 0 };
	TW_PASS(tw_log_set_handler(cap_handler, &cap));
	char big[2000];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	// A line longer than the formatting buffer is cut, not overflowed
	// (ASan watches the stack buffer).
	TW_ERROR("f", "%s", big);
	assert_int_equal(cap.n, 1);
	size_t n = strlen(cap.r[0].msg);
	assert_true(n > 0 && n < sizeof(big) - 1);
	assert_int_equal(cap.r[0].msg[0], 'x');
}

// Runs `fn` with stderr redirected into a temporary file and returns what
// was written (malloc'd, NUL-terminated).
static char *capture_stderr(void (*fn)(void))
{
	char path[] = "/tmp/tw_log_test_XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	fflush(stderr);
	int saved = dup(2);
	assert_true(saved >= 0);
	assert_true(dup2(fd, 2) == 2);
	fn();
	fflush(stderr);
	assert_true(dup2(saved, 2) == 2);
	close(saved);
	off_t size = lseek(fd, 0, SEEK_END);
	assert_true(size >= 0);
	char *text = calloc(1, (size_t)size + 1);
	assert_non_null(text);
	assert_int_equal(pread(fd, text, (size_t)size, 0), size);
	close(fd);
	return text;
}

static void log_two_lines(void)
{
	TW_ERROR("subsysA", "plain line %d", 7);
	TW_LOGL(TW_LOG_WARN, "subsysB", "root/kid", 2, "link line");
}

static void test_null_handler_restores_stderr(void **state)
{
	(void)state;
	capture cap = { 0 };
	TW_PASS(tw_log_set_handler(cap_handler, &cap));
	TW_PASS(tw_log_set_handler(NULL, NULL));
	TW_PASS(tw_log_set_level(TW_LOG_WARN));
	char *text = capture_stderr(log_two_lines);
	// Nothing reached the handler that was replaced...
	assert_int_equal(cap.n, 0);
	// ...and stderr got both lines with level, subsys, text, and the
	// link id and rank for the link line.
	assert_non_null(strstr(text, "tagwire"));
	assert_non_null(strstr(text, "error"));
	assert_non_null(strstr(text, "subsysA"));
	assert_non_null(strstr(text, "plain line 7"));
	assert_non_null(strstr(text, "warn"));
	assert_non_null(strstr(text, "subsysB"));
	assert_non_null(strstr(text, "root/kid"));
	assert_non_null(strstr(text, "#2"));
	assert_non_null(strstr(text, "link line"));
	// One line each.
	int lines = 0;
	for (char *p = text; *p != '\0'; p++)
		lines += *p == '\n';
	assert_int_equal(lines, 2);
	free(text);
}

// At debug level a line names where it was logged and its process (the
// parties of one job interleave on one terminal); below, neither.
static void test_stderr_debug_where(void **state)
{
	(void)state;
	TW_PASS(tw_log_set_handler(NULL, NULL));
	char pid[32];
	snprintf(pid, sizeof(pid), " pid %ld)", (long)getpid());
	TW_PASS(tw_log_set_level(TW_LOG_DEBUG));
	char *text = capture_stderr(log_two_lines);
	assert_non_null(strstr(text, "(log_two_lines:"));
	assert_non_null(strstr(text, pid));
	free(text);
	TW_PASS(tw_log_set_level(TW_LOG_WARN));
	text = capture_stderr(log_two_lines);
	assert_null(strstr(text, "log_two_lines"));
	assert_null(strstr(text, " pid "));
	free(text);
}

static void test_stderr_respects_level(void **state)
{
	(void)state;
	TW_PASS(tw_log_set_handler(NULL, NULL));
	TW_PASS(tw_log_set_level(TW_LOG_NONE));
	char *text = capture_stderr(log_two_lines);
	assert_string_equal(text, "");
	free(text);
}

// ---------------------------------------------------------------------------
// The environment, through child processes
// ---------------------------------------------------------------------------

// What a child reports: its level in the exit status, offset so that a
// crash or an exit(1) from elsewhere cannot pass for a level.
#define CHILD_BASE 40

typedef struct child_result {
	int level; // -1 when the child did not exit normally with a level
	char err[4096]; // its stderr
} child_result;

// Runs this binary as "child MODE" with TAGWIRE_LOG and TAGWIRE_DEBUG
// removed from the environment and `vars` ("NAME=value", NULL-terminated)
// added.
static void run_child(
    const char *mode, const char *const *vars, child_result *res)
{
	size_t n = 0, nv = 0;
	while (environ[n] != NULL)
		n++;
	while (vars != NULL && vars[nv] != NULL)
		nv++;
	char **envp = calloc(n + nv + 1, sizeof(*envp));
	assert_non_null(envp);
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], "TAGWIRE_LOG=", 12) != 0
		    && strncmp(environ[i], "TAGWIRE_DEBUG=", 14) != 0)
			envp[k++] = environ[i];
	for (size_t i = 0; i < nv; i++)
		envp[k++] = (char *)vars[i];
	envp[k] = NULL;

	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		dup2(pfd[1], 2);
		close(pfd[0]);
		close(pfd[1]);
		char *argv[] = { "log_test", "child", (char *)mode, NULL };
		execve("/proc/self/exe", argv, envp);
		_exit(127);
	}
	close(pfd[1]);
	free(envp);
	size_t got = 0;
	for (;;) {
		ssize_t r
		    = read(pfd[0], res->err + got, sizeof(res->err) - 1 - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
		if (got == sizeof(res->err) - 1) {
			// Drain the rest so the child never blocks on a full
			// pipe.
			char sink[256];
			while (read(pfd[0], sink, sizeof(sink)) > 0) { }
			break;
		}
	}
	res->err[got] = '\0';
	close(pfd[0]);
	int st = 0;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	res->level = -1;
	if (WIFEXITED(st) && WEXITSTATUS(st) >= CHILD_BASE
	    && WEXITSTATUS(st) <= CHILD_BASE + TW_LOG_TRACE)
		res->level = WEXITSTATUS(st) - CHILD_BASE;
	else
		print_error(
		    "child %s: status %#x, stderr:\n%s\n", mode, st, res->err);
}

// The child side.  Modes:
//   level   - report the level the environment gives
//   once    - report the level after changing TAGWIRE_LOG in-process
//             (must be the level read first)
//   setfirst - set INFO before anything reads the environment, then report
//   override - read the environment, then set TRACE, then report
static int child_main(const char *mode)
{
	int level;
	if (strcmp(mode, "level") == 0) {
		level = tw_log_level();
	} else if (strcmp(mode, "once") == 0) {
		level = tw_log_level();
		setenv("TAGWIRE_LOG", "trace", 1);
		unsetenv("TAGWIRE_DEBUG");
		if (tw_log_level() != level)
			return 2;
		// A line at a suppressed level must not trigger a re-read.
		TW_LOG(TW_LOG_TRACE, "f", "x");
		level = tw_log_level();
	} else if (strcmp(mode, "setfirst") == 0) {
		if (tw_log_set_level(TW_LOG_INFO) != TW_OK)
			return 2;
		level = tw_log_level();
	} else if (strcmp(mode, "override") == 0) {
		(void)tw_log_level();
		if (tw_log_set_level(TW_LOG_TRACE) != TW_OK)
			return 2;
		level = tw_log_level();
	} else {
		return 3;
	}
	if (level < TW_LOG_NONE || level > TW_LOG_TRACE)
		return 4;
	return CHILD_BASE + level;
}

static void expect_env_level(const char *const *vars, int want)
{
	child_result res;
	run_child("level", vars, &res);
	if (res.level != want)
		fail_msg("env %s %s: level %d, want %d",
		    vars && vars[0] ? vars[0] : "(none)",
		    vars && vars[0] && vars[1] ? vars[1] : "", res.level,
		    want);
}

static void test_env_default(void **state)
{
	(void)state;
	expect_env_level(NULL, TW_LOG_WARN);
	// Set but empty is the same as unset.
	const char *const empty[] = { "TAGWIRE_LOG=", NULL };
	expect_env_level(empty, TW_LOG_WARN);
}

static void test_env_log_names(void **state)
{
	(void)state;
	static const struct {
		const char *var;
		int level;
	} cases[] = {
		{ "TAGWIRE_LOG=error", TW_LOG_ERROR },
		{ "TAGWIRE_LOG=warn", TW_LOG_WARN },
		{ "TAGWIRE_LOG=info", TW_LOG_INFO },
		{ "TAGWIRE_LOG=debug", TW_LOG_DEBUG },
		{ "TAGWIRE_LOG=trace", TW_LOG_TRACE },
		{ "TAGWIRE_LOG=none", TW_LOG_NONE },
		{ "TAGWIRE_LOG=DEBUG", TW_LOG_DEBUG },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *const vars[] = { cases[i].var, NULL };
		expect_env_level(vars, cases[i].level);
	}
}

static void test_env_debug(void **state)
{
	(void)state;
	const char *const one[] = { "TAGWIRE_DEBUG=1", NULL };
	expect_env_level(one, TW_LOG_DEBUG);
	// Only "1" switches debugging on.
	const char *const zero[] = { "TAGWIRE_DEBUG=0", NULL };
	expect_env_level(zero, TW_LOG_WARN);
	const char *const empty[] = { "TAGWIRE_DEBUG=", NULL };
	expect_env_level(empty, TW_LOG_WARN);
	// An explicit level is more specific than the debug switch.
	const char *const both[]
	    = { "TAGWIRE_DEBUG=1", "TAGWIRE_LOG=error", NULL };
	expect_env_level(both, TW_LOG_ERROR);
}

static void test_env_bad_name(void **state)
{
	(void)state;
	const char *const vars[] = { "TAGWIRE_LOG=loud", NULL };
	child_result res;
	run_child("level", vars, &res);
	// A typo falls back to the default and says so on stderr, naming
	// the variable and the value, instead of failing silently.
	assert_int_equal(res.level, TW_LOG_WARN);
	assert_non_null(strstr(res.err, "TAGWIRE_LOG"));
	assert_non_null(strstr(res.err, "loud"));
}

static void test_env_read_once(void **state)
{
	(void)state;
	const char *const vars[] = { "TAGWIRE_LOG=error", NULL };
	child_result res;
	run_child("once", vars, &res);
	assert_int_equal(res.level, TW_LOG_ERROR);
}

static void test_env_set_level_wins(void **state)
{
	(void)state;
	const char *const vars[] = { "TAGWIRE_LOG=error", NULL };
	child_result res;
	// Set before the first read: the environment must not override it
	// later.
	run_child("setfirst", vars, &res);
	assert_int_equal(res.level, TW_LOG_INFO);
	// Set after the first read.
	run_child("override", vars, &res);
	assert_int_equal(res.level, TW_LOG_TRACE);
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "child") == 0)
		return child_main(argv[2]);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(
		    test_parse_level, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_set_level, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_handler_records, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_handler_arg_swap, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_handler_swap_frees, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_handler_reentry, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_handler_fork, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_level_filter, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_filter_before_format, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_errno_kept, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_long_line, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_null_handler_restores_stderr, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_stderr_respects_level, setup, teardown),
		cmocka_unit_test_setup_teardown(
		    test_stderr_debug_where, setup, teardown),
		cmocka_unit_test(test_env_default),
		cmocka_unit_test(test_env_log_names),
		cmocka_unit_test(test_env_debug),
		cmocka_unit_test(test_env_bad_name),
		cmocka_unit_test(test_env_read_once),
		cmocka_unit_test(test_env_set_level_wins),
	};
	return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
