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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/log.h"

int tw__log_cur_level = -1;

// Every field is atomic; a slot on a cache line of its own.
typedef struct log_slot {
	_Alignas(64) tw_log_handler_func_t fn; // NULL: the stderr handler
	void *arg;
	unsigned long calls; // lines counted in this slot now
} log_slot;

static log_slot log_slots[2];
static unsigned log_cur; // the slot in force
static int log_waiting; // a setter waits for a count to reach zero
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
	__atomic_compare_exchange_n(&tw__log_cur_level, &expect, level, 0,
	    __ATOMIC_RELAXED, __ATOMIC_RELAXED);
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
	__atomic_store_n(&tw__log_cur_level, level, __ATOMIC_RELAXED);
	return TW_OK;
}

int tw_log_level(void)
{
	if (__atomic_load_n(&tw__log_cur_level, __ATOMIC_RELAXED) < 0)
		tw__log_init();
	return __atomic_load_n(&tw__log_cur_level, __ATOMIC_RELAXED);
}

// Uncounts a line; the last one out wakes a waiting setter.  The setter
// announces itself before it looks at the count and we look for it after
// we changed the count, so one of the two sees the other.
static void log_leave(unsigned i)
{
	if (__atomic_sub_fetch(&log_slots[i].calls, 1, __ATOMIC_SEQ_CST) == 0
	    && __atomic_load_n(&log_waiting, __ATOMIC_SEQ_CST) != 0) {
		pthread_mutex_lock(&log_wait_mtx);
		pthread_cond_broadcast(&log_wait_cv);
		pthread_mutex_unlock(&log_wait_mtx);
	}
}

// Counts a line in the slot in force and returns that slot.
static unsigned log_enter(void)
{
	for (;;) {
		unsigned i = __atomic_load_n(&log_cur, __ATOMIC_SEQ_CST);
		__atomic_add_fetch(&log_slots[i].calls, 1, __ATOMIC_SEQ_CST);
		if (__atomic_load_n(&log_cur, __ATOMIC_SEQ_CST) == i)
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
	unsigned old = __atomic_load_n(&log_cur, __ATOMIC_RELAXED),
	         next = !old;
	__atomic_store_n(&log_slots[next].fn, fn, __ATOMIC_RELAXED);
	__atomic_store_n(&log_slots[next].arg, arg, __ATOMIC_RELAXED);
	__atomic_store_n(&log_cur, next, __ATOMIC_SEQ_CST);
	__atomic_store_n(&log_waiting, 1, __ATOMIC_SEQ_CST);
	pthread_mutex_lock(&log_wait_mtx);
	while (__atomic_load_n(&log_slots[old].calls, __ATOMIC_SEQ_CST) != 0)
		pthread_cond_wait(&log_wait_cv, &log_wait_mtx);
	pthread_mutex_unlock(&log_wait_mtx);
	__atomic_store_n(&log_waiting, 0, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&log_set_mtx);
	return TW_OK;
}

// In a child of fork only the forking thread goes on: calls that other
// threads had in progress will never end, and a lock they held would never
// be released.
static void log_atfork_child(void)
{
	for (int i = 0; i < 2; i++)
		__atomic_store_n(
		    &log_slots[i].calls, log_depth[i], __ATOMIC_SEQ_CST);
	__atomic_store_n(&log_waiting, 0, __ATOMIC_SEQ_CST);
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
	// One fprintf per line keeps lines of different threads whole.
	if (__atomic_load_n(&tw__log_cur_level, __ATOMIC_RELAXED)
	    >= TW_LOG_DEBUG)
		fprintf(stderr, "%s.%06ld tagwire %-5s %s%s: %s (%s:%d)\n",
		    when, ts.tv_nsec / 1000, level_names[rec->level],
		    rec->subsys, who, rec->msg, func, line);
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
	    = __atomic_load_n(&log_slots[i].fn, __ATOMIC_RELAXED);
	void *arg = __atomic_load_n(&log_slots[i].arg, __ATOMIC_RELAXED);
	log_depth[i]++;
	if (fn != NULL)
		fn(&rec, arg);
	else
		log_stderr(&rec, func, line);
	log_depth[i]--;
	log_leave(i);
	errno = saved;
}
