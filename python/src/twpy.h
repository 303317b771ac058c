// The pieces every part of the _tagwire extension shares: the exceptions,
// status codes turned into them, buffers, tags, timeouts, and the loop that
// blocks without the GIL while still running signal handlers.
//
// The extension is written against tagwire's public C API only.

#ifndef TWPY_H
#define TWPY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdbool.h>
#include <stdint.h>

#include <tagwire/tagwire.h>

// Python 3.12 names for what 3.11 spells otherwise.
#if PY_VERSION_HEX < 0x030C0000
static inline PyObject *twpy_get_raised(void)
{
	PyObject *t, *v, *tb;
	PyErr_Fetch(&t, &v, &tb);
	if (t == NULL)
		return NULL;
	PyErr_NormalizeException(&t, &v, &tb);
	if (tb != NULL)
		PyException_SetTraceback(v, tb);
	Py_XDECREF(t);
	Py_XDECREF(tb);
	return v;
}
static inline void twpy_set_raised(PyObject *exc)
{
	PyObject *tb = PyException_GetTraceback(exc);
	PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, tb);
}
#else
#define twpy_get_raised PyErr_GetRaisedException
#define twpy_set_raised PyErr_SetRaisedException
#endif

// How long the main thread blocks in C before it looks for signals (a
// Ctrl-C must raise KeyboardInterrupt within 250 ms).
#define TWPY_SLICE_MS 50

// The exception classes, made by twpy_errors_init.
extern PyObject *twpy_Error, *twpy_TimeoutError, *twpy_ClosedError,
    *twpy_PeerError, *twpy_ChannelError, *twpy_TruncatedError,
    *twpy_TooBigError, *twpy_AuthError, *twpy_ProtocolError;

// Adds the exception classes to `m`.  0, or -1 with an exception set.
int twpy_errors_init(PyObject *m);

// Raises the exception for a tagwire status (TW_EINVAL: ValueError, unless
// `type_error`), with `what` (the call) in the message.  Returns NULL so
// that callers can `return twpy_raise(...)`.
PyObject *twpy_raise(int status, const char *what);

// The exception class of `status` (a borrowed reference).
PyObject *twpy_error_class(int status);

// Gets a C-contiguous buffer, writable when asked.  str is refused with
// TypeError (its bytes depend on an encoding).  0, or -1 with an exception.
int twpy_buffer(PyObject *obj, Py_buffer *view, bool writable);

// A tag or key: str (UTF-8) or bytes, no NUL.  *s stays valid while *keep
// lives (a new reference the caller releases).  0, or -1 with TypeError or
// ValueError.
int twpy_tag(PyObject *obj, const char **s, PyObject **keep);

// The three file-system paths of set_tls (str, bytes or os.PathLike):
// 0 and new references in p[] to bytes objects (release them with
// twpy_tls_paths_release), or -1 with an exception.
int twpy_tls_paths(PyObject *args, PyObject *p[3]);
void twpy_tls_paths_release(PyObject *p[3]);

// A timeout in seconds (int or float, >= 0; None gives `none_ms`) as
// milliseconds, -1 meaning forever.  0, or -1 with an exception.
int twpy_timeout(PyObject *obj, int64_t none_ms, int64_t *ms);

// The monotonic clock in milliseconds.
int64_t twpy_now_ms(void);

// A blocking call split into slices: `fn(arg, slice_ms)` does the work with
// a timeout of slice_ms (-1 = forever) and returns a tagwire status.
typedef int (*twpy_slice_fn)(void *arg, int64_t slice_ms);

// Runs fn without the GIL until it returns anything but TW_ETIMEDOUT or
// `timeout_ms` passed (-1 = forever).  On the main thread it runs in slices
// of TWPY_SLICE_MS and the signal handlers run between them, so Ctrl-C
// raises KeyboardInterrupt; a slice that times out must leave no trace.
// Returns 0 with *status, or -1 when a signal handler raised.
int twpy_block(twpy_slice_fn fn, void *arg, int64_t timeout_ms, int *status);

// A blocking call that cannot be split into slices (a collective).  Off the
// main thread it just runs without the GIL.  On the main thread it runs on
// a worker thread while the main thread runs the signal handlers every
// TWPY_SLICE_MS; when one raises, cancel(cancel_arg) must end the call soon
// (the link is aborted), the call is awaited, and -1 is returned with the
// handler's exception.  Otherwise 0 and *status.
typedef int (*twpy_call_fn)(void *arg);
int twpy_call(twpy_call_fn fn, void *arg, void (*cancel)(void *),
    void *cancel_arg, int *status);

// True on the interpreter's main thread (where signal handlers run).
bool twpy_main_thread(void);

// A received message owning its malloc'd bytes; exports them with the
// buffer protocol, so that views and numpy arrays of it outlive the link.
extern PyTypeObject twpy_MessageType;

// Makes a Message taking ownership of b (freed with tw_buf_free); on
// failure frees b and returns NULL with an exception.
PyObject *twpy_message_new(tw_buf *b);

// bytes from a tw_buf, which is freed either way.
PyObject *twpy_bytes_take(tw_buf *b);

// Python channels (channel.c).  Makes the n C channels of a
// create_with_channels call from a sequence of Python objects, checking
// everything before any channel method is called.  0 and *out (free with
// twpy_channels_free unless a link took them), or -1 with an exception.
int twpy_channels_make(PyObject *seq, size_t n, size_t rank,
    const char *link_id, int64_t connect_ms, tw_channel ***out);
void twpy_channels_free(tw_channel **chans, size_t n);

// Raises for a failed call: the exception a Python channel raised on this
// thread during the call when there is one (as ChannelError with it as
// __cause__; KeyboardInterrupt and SystemExit as they are), else the
// exception of `status`.  Returns NULL.
PyObject *twpy_fail(int status, const char *what);

// Forgets an exception a channel left on this thread (before a call).
void twpy_chan_clear(void);

// Links (link.c): the tw_link of a tagwire.Link for one call, or NULL with
// ClosedError; every successful enter is paired with a leave, both with
// the GIL held.  close() waits for the calls in flight.
tw_link *twpy_link_enter(PyObject *link);
void twpy_link_leave(PyObject *link);
int64_t twpy_link_timeout(PyObject *link);
// Waits until the link's sends so far reached their receivers' mailboxes
// (Link.wait_pending, Request.wait).  0, or -1 with an exception.
int twpy_link_wait(PyObject *link, PyObject *timeout);

// tagwire.Request (request.c): what send_async returns.
extern PyTypeObject twpy_RequestType;
PyObject *twpy_request_new(PyObject *link);

// The types of the other files, and their module set-up.
int twpy_desc_init(PyObject *m);
int twpy_link_init(PyObject *m);
int twpy_engine_init(PyObject *m);

// The tw_desc inside a tagwire.Desc (borrowed), or NULL with TypeError.
tw_desc *twpy_desc_get(PyObject *obj);

#endif
