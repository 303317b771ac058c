// Internal logging.  TW_LOG checks the level before it formats anything, so
// a disabled line costs one load and a compare.

#ifndef TW_CORE_LOG_H
#define TW_CORE_LOG_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <tagwire/status.h>

// The level in force, cached (-1: not read from the environment yet); read
// it only through tw__log_on().
extern _Atomic int tw__log_cur_level;
void tw__log_init(void);

static inline int tw__log_on(int level)
{
	int cur
	    = atomic_load_explicit(&tw__log_cur_level, memory_order_relaxed);
	if (cur < 0) {
		tw__log_init();
		cur = atomic_load_explicit(
		    &tw__log_cur_level, memory_order_relaxed);
	}
	return level <= cur;
}

// Formats and dispatches one line.  `link_id` may be NULL (rank ignored).
void tw__log_write(int level, const char *subsys, const char *link_id,
    size_t rank, const char *func, int line, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

// TW_LOG(level, subsys, fmt, ...): a line that belongs to no link.
#define TW_LOG(level, subsys, ...)                                            \
	do {                                                                  \
		if (tw__log_on(level))                                        \
			tw__log_write(level, subsys, NULL, SIZE_MAX,          \
			    __func__, __LINE__, __VA_ARGS__);                 \
	} while (0)

// TW_LOGL(level, subsys, link_id, rank, fmt, ...): a line about a link.
#define TW_LOGL(level, subsys, link_id, rank, ...)                            \
	do {                                                                  \
		if (tw__log_on(level))                                        \
			tw__log_write(level, subsys, link_id, rank, __func__, \
			    __LINE__, __VA_ARGS__);                           \
	} while (0)

// Logs at most once per call site for the life of the process.
#define TW_LOG_ONCE(level, subsys, ...)                                       \
	do {                                                                  \
		static _Atomic int tw__once_;                                 \
		if (tw__log_on(level)                                         \
		    && !atomic_exchange_explicit(                             \
		        &tw__once_, 1, memory_order_relaxed))                 \
			tw__log_write(level, subsys, NULL, SIZE_MAX,          \
			    __func__, __LINE__, __VA_ARGS__);                 \
	} while (0)

#define TW_ERROR(subsys, ...) TW_LOG(TW_LOG_ERROR, subsys, __VA_ARGS__)
#define TW_WARN(subsys, ...) TW_LOG(TW_LOG_WARN, subsys, __VA_ARGS__)
#define TW_INFO(subsys, ...) TW_LOG(TW_LOG_INFO, subsys, __VA_ARGS__)
#define TW_DEBUG(subsys, ...) TW_LOG(TW_LOG_DEBUG, subsys, __VA_ARGS__)

#endif // TW_CORE_LOG_H
