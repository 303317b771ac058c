// Logging: the level filter, the stderr handler and the pluggable one.
//
// The level is read from the environment once, on first use; after that a
// disabled line costs a relaxed load.
//
// Handlers.  tw_log_set_handler returns only once no call of the handler
// it replaced is in progress, so that the application may free that
// handler's state.  A lock around every call would give that, but would
// also serialise the calls of all threads and let a slow handler hold up
// every logging thread.  Instead the handler in force sits in one of two
// slots, each with a count of the lines dispatching through it: a line
// counts itself in the slot `log_cur` names, then checks that log_cur
// still names it (else it uncounts itself and starts over), and only then
// reads the slot.  A setter fills the other slot, points log_cur at it,
// and waits until the old slot's count is zero: a line that counted itself
// there later finds log_cur moved and never calls the old handler.  All of
// that is sequentially consistent, so a line that nobody competes with
// costs two atomic additions and two loads, as the lock did.  Setters take
// turns (log_set_mtx), so a slot is written only when no line can read it.

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/log.h"

_Atomic int tw__log_cur_level = -1;

// A slot on a cache line of its own.
typedef struct log_slot {
	_Alignas(64) _Atomic(tw_log_handler_func_t) fn; // NULL: stderr
	void *_Atomic arg;
	_Atomic unsigned long calls; // lines counted in this slot now
} log_slot;

static log_slot log_slots[2];
static _Atomic unsigned log_cur; // the slot in force
static _Atomic int log_waiting; // a setter waits for a count to reach zero
static pthread_mutex_t log_set_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t log_wait_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t log_wait_cv = PTHREAD_COND_INITIALIZER;
// This thread's handler calls in progress, per slot (they nest when a
// handler logs).
static _Thread_local unsigned long log_depth[2];

static const char *const level_names[]
    = { "none", "error", "warn", "info", "debug", "trace" };

int tw_log_parse_level(const char *name, int *level)
{
	if (name == NULL || level == NULL)
		return TW_EINVAL;
	for (int i = 0; i <= TW_LOG_TRACE; i++) {
		if (strcasecmp(name, level_names[i]) == 0) {
			*level = i;
			return TW_OK;
		}
	}
	if (strcasecmp(name, "warning") == 0) {
		*level = TW_LOG_WARN;
		return TW_OK;
	}
	return TW_EINVAL;
}

void tw__log_init(void)
{
	int level = TW_LOG_WARN;
	const char *dbg = getenv("TAGWIRE_DEBUG");
	const char *env = getenv("TAGWIRE_LOG");
	int bad = 0;
	if (dbg != NULL && strcmp(dbg, "1") == 0)
		level = TW_LOG_DEBUG;
	if (env != NULL && *env != '\0'
	    && tw_log_parse_level(env, &level) != 0)
		bad = 1;
	int expect = -1;
	atomic_compare_exchange_strong_explicit(&tw__log_cur_level, &expect,
	    level, memory_order_relaxed, memory_order_relaxed);
	if (bad)
		TW_WARN("log",
		    "TAGWIRE_LOG has an unknown level '%.32s' (want "
		    "error, warn, info, debug or trace); using warn",
		    env);
}

int tw_log_set_level(int level)
{
	if (level < TW_LOG_NONE || level > TW_LOG_TRACE)
		return TW_EINVAL;
	atomic_store_explicit(&tw__log_cur_level, level, memory_order_relaxed);
	return TW_OK;
}

int tw_log_level(void)
{
	if (atomic_load_explicit(&tw__log_cur_level, memory_order_relaxed) < 0)
		tw__log_init();
	return atomic_load_explicit(&tw__log_cur_level, memory_order_relaxed);
}

// Uncounts a line; the last one out wakes a waiting setter.  The setter
// announces itself before it looks at the count and we look for it after
// we changed the count, so one of the two sees the other.
static void log_leave(unsigned i)
{
	if (atomic_fetch_sub(&log_slots[i].calls, 1) == 1
	    && atomic_load(&log_waiting) != 0) {
		pthread_mutex_lock(&log_wait_mtx);
		pthread_cond_broadcast(&log_wait_cv);
		pthread_mutex_unlock(&log_wait_mtx);
	}
}

// Counts a line in the slot in force and returns that slot.
static unsigned log_enter(void)
{
	for (;;) {
		unsigned i = atomic_load(&log_cur);
		atomic_fetch_add(&log_slots[i].calls, 1);
		if (atomic_load(&log_cur) == i)
			return i;
		// A setter moved on meanwhile: it may be waiting for us.
		log_leave(i);
	}
}

int tw_log_set_handler(tw_log_handler_func_t fn, void *arg)
{
	// From inside a handler the wait below would wait for itself.
	if (log_depth[0] + log_depth[1] != 0)
		return TW_EINVAL;
	pthread_mutex_lock(&log_set_mtx);
	unsigned old = atomic_load_explicit(&log_cur, memory_order_relaxed),
	         next = !old;
	atomic_store_explicit(&log_slots[next].fn, fn, memory_order_relaxed);
	atomic_store_explicit(&log_slots[next].arg, arg, memory_order_relaxed);
	atomic_store(&log_cur, next);
	atomic_store(&log_waiting, 1);
	pthread_mutex_lock(&log_wait_mtx);
	while (atomic_load(&log_slots[old].calls) != 0)
		pthread_cond_wait(&log_wait_cv, &log_wait_mtx);
	pthread_mutex_unlock(&log_wait_mtx);
	atomic_store(&log_waiting, 0);
	pthread_mutex_unlock(&log_set_mtx);
	return TW_OK;
}

// In a child of fork only the forking thread goes on: calls that other
// threads had in progress will never end, and a lock they held would never
// be released.
static void log_atfork_child(void)
{
	for (int i = 0; i < 2; i++)
		atomic_store(&log_slots[i].calls, log_depth[i]);
	atomic_store(&log_waiting, 0);
	pthread_mutex_init(&log_set_mtx, NULL);
	pthread_mutex_init(&log_wait_mtx, NULL);
	pthread_cond_init(&log_wait_cv, NULL);
}

__attribute__((constructor)) static void log_setup(void)
{
	pthread_atfork(NULL, NULL, log_atfork_child);
}

static void log_stderr(const tw_log_record *rec, const char *func, int line)
{
	struct timespec ts;
	struct tm tm;
	char when[32];
	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof(when), "%H:%M:%S", &tm);
	char who[96] = "";
	if (rec->link_id != NULL)
		snprintf(
		    who, sizeof(who), " [%.64s#%zu]", rec->link_id, rec->rank);
	// One fprintf per line keeps lines of different threads whole.  At
	// debug level a line names its process too: the parties of one job
	// often share a terminal, and their lines interleave.
	if (atomic_load_explicit(&tw__log_cur_level, memory_order_relaxed)
	    >= TW_LOG_DEBUG)
		fprintf(stderr,
		    "%s.%06ld tagwire %-5s %s%s: %s (%s:%d pid %ld)\n", when,
		    ts.tv_nsec / 1000, level_names[rec->level], rec->subsys,
		    who, rec->msg, func, line, (long)getpid());
	else
		fprintf(stderr, "%s.%06ld tagwire %-5s %s%s: %s\n", when,
		    ts.tv_nsec / 1000, level_names[rec->level], rec->subsys,
		    who, rec->msg);
}

void tw__log_write(int level, const char *subsys, const char *link_id,
    size_t rank, const char *func, int line, const char *fmt, ...)
{
	int saved = errno; // so that "%m" and the caller's errno survive
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	errno = saved;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	tw_log_record rec = { level, subsys, link_id, rank, msg };
	unsigned i = log_enter();
	tw_log_handler_func_t fn
	    = atomic_load_explicit(&log_slots[i].fn, memory_order_relaxed);
	void *arg
	    = atomic_load_explicit(&log_slots[i].arg, memory_order_relaxed);
	log_depth[i]++;
	if (fn != NULL)
		fn(&rec, arg);
	else
		log_stderr(&rec, func, line);
	log_depth[i]--;
	log_leave(i);
	errno = saved;
}
