// Logging: the level filter, the stderr handler and the pluggable one.
//
// The level is read from the environment once, on first use; after that a
// disabled line costs a relaxed load.  The handler and its argument are
// swapped under a lock so that a line is never dispatched to a half-installed
// handler.

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

static pthread_mutex_t log_mtx = PTHREAD_MUTEX_INITIALIZER;
static tw_log_handler_func_t log_fn; // protected by log_mtx
static void *log_arg; // protected by log_mtx

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

int tw_log_set_handler(tw_log_handler_func_t fn, void *arg)
{
	pthread_mutex_lock(&log_mtx);
	log_fn = fn;
	log_arg = arg;
	pthread_mutex_unlock(&log_mtx);
	return TW_OK;
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
	pthread_mutex_lock(&log_mtx);
	tw_log_handler_func_t fn = log_fn;
	void *arg = log_arg;
	pthread_mutex_unlock(&log_mtx);
	if (fn != NULL)
		fn(&rec, arg);
	else
		log_stderr(&rec, func, line);
	errno = saved;
}
