// tagwire: status codes, owned buffers and logging.
//
// Thread-safety: every function in this header may be called from any thread.

#ifndef TAGWIRE_STATUS_H
#define TAGWIRE_STATUS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(TW_STATIC_BUILD)
#define TW_API
#elif defined(__GNUC__)
#define TW_API __attribute__((visibility("default")))
#else
#define TW_API
#endif

// The one list of status codes.  The enum, tw_strerror() and tw_err_name()
// are all generated from it so that they can never disagree.
#define TW_STATUS_MAP(X)                                                      \
	X(OK, 0, "success")                                                   \
	X(EINVAL, -1, "invalid argument")                                     \
	X(ETIMEDOUT, -2, "timed out")                                         \
	X(ECLOSED, -3, "link closed or aborted by this side")                 \
	X(EPEER, -4, "peer failed, closed or cannot be reached")              \
	X(ETOOBIG, -5, "message too big")                                     \
	X(ENOMEM, -6, "out of memory")                                        \
	X(EAGAIN, -7, "no message waiting")                                   \
	X(EAUTH, -8, "peer could not prove it holds the link secret")         \
	X(EPROTO, -9, "malformed bytes from the wire or shared memory")       \
	X(ESYS, -10, "system call failed")                                    \
	X(ETRUNC, -11, "buffer too small, message left queued")               \
	X(ENOTSUP, -12, "operation not supported")

#define TW__STATUS_ENUM(name, value, text) TW_##name = value,
enum { TW_STATUS_MAP(TW__STATUS_ENUM) };
#undef TW__STATUS_ENUM

// A human readable, constant description of `status`.  Never NULL: unknown
// codes give "unknown status".  The string must not be freed.
TW_API const char *tw_strerror(int status);

// The symbolic name of `status` ("TW_EPEER"), or "TW_E?" when unknown.
TW_API const char *tw_err_name(int status);

// A buffer the library allocated for the caller (tw_recv, collectives).
// The caller owns `data` and releases it with tw_buf_free().
typedef struct tw_buf {
	void *data;
	size_t len;
} tw_buf;

// Frees b->data and sets *b to {NULL, 0}.  tw_buf_free(NULL) and freeing an
// already empty buffer do nothing.  Buffers of 32 KiB or more may instead
// wait in a process-wide pool (at most 8 of them, 64 MiB in all, freed at
// exit) to hold the next large message.  Thread-safe.
TW_API void tw_buf_free(tw_buf *b);

// Frees every buffer that pool holds now, giving the memory back to the
// system; buffers freed later are pooled again.  For long-running
// processes that want their resident size to show only what is in use
// (after a burst of large messages, or before measuring memory).  Never
// blocks beyond a short lock; thread-safe.
TW_API void tw_buf_pool_drain(void);

// Logging.  Lines go to stderr by default with time, level, link id and rank;
// the level comes from TAGWIRE_LOG (error|warn|info|debug|trace, default
// warn) or TAGWIRE_DEBUG=1 (debug), read once on first use.
enum {
	TW_LOG_NONE = 0,
	TW_LOG_ERROR = 1,
	TW_LOG_WARN = 2,
	TW_LOG_INFO = 3,
	TW_LOG_DEBUG = 4,
	TW_LOG_TRACE = 5
};

// A log record handed to an installed handler.  `link_id` is NULL (and
// `rank` SIZE_MAX) for lines that belong to no link.  `subsys` is a short
// constant such as "link", "mem", "desc".  All strings are valid only during
// the call.
typedef struct tw_log_record {
	int level;
	const char *subsys;
	const char *link_id;
	size_t rank;
	const char *msg;
} tw_log_record;

// Called for every line at or below the current level, from whatever thread
// logs it, possibly concurrently: it must be thread-safe and must not call
// back into a link.
typedef void (*tw_log_handler_func_t)(const tw_log_record *rec, void *arg);

// Installs `fn` with `arg` (NULL restores the stderr handler) and returns
// once no call of the handler it replaces is in progress in any thread; no
// later line reaches that handler, so its `arg` may be freed then.  It
// blocks while such a call runs, hence a handler must not wait for a thread
// that may be changing the handler.  A handler must not call
// tw_log_set_handler itself (it would wait for its own call): such a call
// changes nothing and returns TW_EINVAL.  In the child of a fork, calls
// that other threads had in progress do not count.  Returns TW_OK.
TW_API int tw_log_set_handler(tw_log_handler_func_t fn, void *arg);

// Sets the level (TW_LOG_NONE..TW_LOG_TRACE), overriding the environment.
// Returns TW_EINVAL for a level out of range.
TW_API int tw_log_set_level(int level);

// The level in force.
TW_API int tw_log_level(void);

// Parses "error", "warn", "info", "debug", "trace" or "none" into *level.
// Returns TW_EINVAL for anything else (including NULL).
TW_API int tw_log_parse_level(const char *name, int *level);

// The library version as "MAJOR.MINOR.PATCH".
TW_API const char *tw_version(void);

#ifdef __cplusplus
}
#endif

#endif // TAGWIRE_STATUS_H
