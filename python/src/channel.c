// Channels written in Python: any object with send(key, data) and
// recv(key, timeout) -> bytes-like, optional send_async, test_send(timeout),
// test_recv(), wait_pending(), abort() and close().
//
// The link calls a channel's ops on the thread of the call that needs them
// (a send, a receive, create, close), without the GIL and without holding
// any of its own mutexes; each op takes the GIL for the Python call.  An
// exception a method raises is kept for that thread (thread-local), so that
// the Link method that made the call raises it: a ChannelError with it as
// the __cause__, or KeyboardInterrupt and SystemExit as they are.

#include "twpy.h"

#include <stdlib.h>
#include <string.h>

enum {
	M_SEND,
	M_RECV,
	M_SEND_ASYNC,
	M_TEST_SEND,
	M_TEST_RECV,
	M_WAIT,
	M_ABORT,
	M_CLOSE,
	M_N
};

static const char *const method_names[M_N] = { "send", "recv", "send_async",
	"test_send", "test_recv", "wait_pending", "abort", "close" };

typedef struct pychan {
	tw_channel c;
	tw_channel_ops ops;
	PyObject *obj;
	PyObject *m[M_N]; // bound methods; NULL when absent
	// Without test_send/test_recv the handshake is one empty message
	// under this key each way, sent once (a mailbox that holds one
	// message per key never sees it twice).
	char hs_key[320];
	int64_t connect_ms;
} pychan;

// The exception a channel raised during the current call on this thread.
static _Thread_local PyObject *pending;

static bool finalizing(void)
{
#if PY_VERSION_HEX >= 0x030D0000
	return Py_IsFinalizing();
#else
	return _Py_IsFinalizing();
#endif
}

void twpy_chan_clear(void)
{
	Py_CLEAR(pending);
}

// Keeps the exception now set (the GIL held) for the call on this thread
// and says which status ends that call.  A timeout raised by recv is just
// a timeout; anything else stops the call.
static int keep_error(bool timeout_ok)
{
	if (timeout_ok && PyErr_ExceptionMatches(PyExc_TimeoutError)) {
		PyErr_Clear();
		return TW_ETIMEDOUT;
	}
	// tagwire's own answers, which a channel may give as they are: the
	// channel was aborted, or its peer is gone.
	if (PyErr_ExceptionMatches(twpy_ClosedError)) {
		PyErr_Clear();
		return TW_ECLOSED;
	}
	if (PyErr_ExceptionMatches(twpy_PeerError)) {
		PyErr_Clear();
		return TW_EPEER;
	}
	PyObject *exc = twpy_get_raised();
	bool interrupt
	    = PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt)
	    || PyErr_GivenExceptionMatches(exc, PyExc_SystemExit);
	if (pending == NULL)
		pending = exc;
	else
		Py_DECREF(exc);
	// An interrupt ends the call as a local close would (the link stays
	// usable); a failing channel is a failing peer.
	return interrupt ? TW_ECLOSED : TW_EPEER;
}

PyObject *twpy_fail(int status, const char *what)
{
	if (pending == NULL)
		return twpy_raise(status, what);
	PyObject *exc = pending;
	pending = NULL;
	if (!PyErr_GivenExceptionMatches(exc, PyExc_Exception)) {
		twpy_set_raised(exc);
		return NULL;
	}
	PyObject *msg
	    = PyUnicode_FromFormat("%s: the channel raised %R", what, exc);
	PyObject *ce
	    = msg ? PyObject_CallOneArg(twpy_ChannelError, msg) : NULL;
	Py_XDECREF(msg);
	if (ce == NULL) {
		Py_DECREF(exc);
		return NULL;
	}
	PyObject *code = PyLong_FromLong(status);
	PyObject *name = PyUnicode_FromString(tw_err_name(status));
	if (code != NULL && name != NULL) {
		PyObject_SetAttrString(ce, "code", code);
		PyObject_SetAttrString(ce, "name", name);
	}
	Py_XDECREF(code);
	Py_XDECREF(name);
	PyErr_Clear();
	PyException_SetCause(ce, exc); // steals exc
	PyException_SetContext(ce, Py_NewRef(exc));
	twpy_set_raised(ce);
	return NULL;
}

// Takes the GIL for an op; false while the interpreter finalizes, when no
// op may enter Python.
static bool enter(PyGILState_STATE *g)
{
	if (finalizing())
		return false;
	*g = PyGILState_Ensure();
	return true;
}

static PyObject *timeout_arg(int64_t ms)
{
	if (ms < 0)
		Py_RETURN_NONE;
	return PyFloat_FromDouble((double)ms / 1000.0);
}

static int call_send(
    tw_channel *c, int which, const char *key, const void *buf, size_t len)
{
	pychan *p = c->impl;
	PyGILState_STATE g;
	if (!enter(&g))
		return TW_ECLOSED;
	int st = TW_OK;
	PyObject *data = PyBytes_FromStringAndSize(
	    len ? (const char *)buf : "", (Py_ssize_t)len);
	PyObject *r = data == NULL
	    ? NULL
	    : PyObject_CallFunction(p->m[which], "sO", key, data);
	Py_XDECREF(data);
	if (r == NULL)
		st = keep_error(false);
	Py_XDECREF(r);
	PyGILState_Release(g);
	return st;
}

static int op_send(tw_channel *c, const char *key, const void *buf, size_t len)
{
	return call_send(c, M_SEND, key, buf, len);
}

static int op_send_async(
    tw_channel *c, const char *key, const void *buf, size_t len)
{
	return call_send(c, M_SEND_ASYNC, key, buf, len);
}

static int op_recv(
    tw_channel *c, const char *key, int64_t timeout_ms, tw_buf *out)
{
	pychan *p = c->impl;
	PyGILState_STATE g;
	if (!enter(&g))
		return TW_ECLOSED;
	int st = TW_OK;
	PyObject *t = timeout_arg(timeout_ms);
	PyObject *r = t == NULL
	    ? NULL
	    : PyObject_CallFunction(p->m[M_RECV], "sO", key, t);
	Py_XDECREF(t);
	if (r == NULL) {
		st = keep_error(true);
	} else if (r == Py_None) {
		// None is "nothing yet", as a timeout.
		st = TW_ETIMEDOUT;
	} else {
		Py_buffer v;
		if (PyObject_GetBuffer(r, &v, PyBUF_SIMPLE) < 0) {
			PyErr_Format(PyExc_TypeError,
			    "a channel's recv returns a bytes-like object, "
			    "not "
			    "%.80s",
			    Py_TYPE(r)->tp_name);
			st = keep_error(false);
		} else {
			out->data = NULL;
			out->len = (size_t)v.len;
			if (v.len > 0
			    && (out->data = malloc((size_t)v.len)) == NULL)
				st = TW_ENOMEM;
			else if (v.len > 0)
				memcpy(out->data, v.buf, (size_t)v.len);
			PyBuffer_Release(&v);
		}
	}
	Py_XDECREF(r);
	PyGILState_Release(g);
	return st;
}

static int call_status(tw_channel *c, int which, PyObject *arg)
{
	pychan *p = c->impl;
	PyGILState_STATE g;
	if (!enter(&g))
		return TW_ECLOSED;
	PyObject *r = arg == NULL ? PyObject_CallNoArgs(p->m[which])
	                          : PyObject_CallOneArg(p->m[which], arg);
	int st = TW_OK;
	if (r == NULL)
		st = keep_error(which == M_TEST_SEND || which == M_TEST_RECV);
	else if (r == Py_False)
		st = TW_ETIMEDOUT; // test_send/test_recv may answer "not yet"
	Py_XDECREF(r);
	PyGILState_Release(g);
	return st;
}

static int op_hs_send(tw_channel *c, int64_t timeout_ms)
{
	pychan *p = c->impl;
	return call_send(c, M_SEND, p->hs_key, "", 0);
}

static int op_hs_recv(tw_channel *c)
{
	pychan *p = c->impl;
	tw_buf b = { 0 };
	int st = op_recv(c, p->hs_key, p->connect_ms, &b);
	tw_buf_free(&b);
	return st;
}

static int op_test_send(tw_channel *c, int64_t timeout_ms)
{
	PyGILState_STATE g;
	if (!enter(&g))
		return TW_ECLOSED;
	PyObject *t = timeout_arg(timeout_ms);
	int st = t == NULL ? TW_ENOMEM : call_status(c, M_TEST_SEND, t);
	Py_XDECREF(t);
	PyGILState_Release(g);
	return st;
}

static int op_test_recv(tw_channel *c)
{
	return call_status(c, M_TEST_RECV, NULL);
}

static int op_wait_pending(tw_channel *c)
{
	return call_status(c, M_WAIT, NULL);
}

static void op_abort(tw_channel *c)
{
	pychan *p = c->impl;
	PyGILState_STATE g;
	if (!enter(&g))
		return;
	PyObject *r = PyObject_CallNoArgs(p->m[M_ABORT]);
	if (r == NULL)
		PyErr_WriteUnraisable(p->m[M_ABORT]);
	Py_XDECREF(r);
	PyGILState_Release(g);
}

static void op_destroy(tw_channel *c)
{
	pychan *p = c->impl;
	PyGILState_STATE g;
	// At finalization the references are left: nothing may enter Python.
	if (enter(&g)) {
		if (p->m[M_CLOSE] != NULL) {
			PyObject *r = PyObject_CallNoArgs(p->m[M_CLOSE]);
			if (r == NULL)
				PyErr_WriteUnraisable(p->m[M_CLOSE]);
			Py_XDECREF(r);
		}
		for (int i = 0; i < M_N; i++)
			Py_CLEAR(p->m[i]);
		Py_CLEAR(p->obj);
		PyGILState_Release(g);
	}
	free(p);
}

// A bound method `name` of obj, or NULL (no exception) when it has none.
static int method(PyObject *obj, const char *name, PyObject **out)
{
	*out = NULL;
	PyObject *m = PyObject_GetAttrString(obj, name);
	if (m == NULL) {
		if (!PyErr_ExceptionMatches(PyExc_AttributeError))
			return -1;
		PyErr_Clear();
	}
	if (m == NULL || m == Py_None) {
		Py_XDECREF(m);
		return 0;
	}
	if (!PyCallable_Check(m)) {
		PyErr_Format(PyExc_TypeError,
		    "the channel's attribute %s is not callable", name);
		Py_DECREF(m);
		return -1;
	}
	*out = m;
	return 0;
}

static pychan *pychan_new(
    PyObject *obj, size_t rank, const char *link_id, int64_t connect_ms)
{
	pychan *p = calloc(1, sizeof(*p));
	if (p == NULL) {
		PyErr_NoMemory();
		return NULL;
	}
	for (int i = 0; i < M_N; i++) {
		if (method(obj, method_names[i], &p->m[i]) < 0)
			goto fail;
	}
	if (p->m[M_SEND] == NULL || p->m[M_RECV] == NULL) {
		PyObject *s = NULL, *r = NULL;
		// A libspu-style channel (Send/Recv) needs the compat layer.
		if (method(obj, "Send", &s) == 0
		    && method(obj, "Recv", &r) == 0
		    && (s != NULL || r != NULL)) {
			PyErr_Format(PyExc_ValueError,
			    "channel %zu has Send/Recv but no send/recv: wrap "
			    "it "
			    "with tagwire.compat.spu",
			    rank);
		} else if (!PyErr_Occurred()) {
			PyErr_Format(PyExc_ValueError,
			    "channel %zu (%.80s) lacks a send(key, data) or "
			    "recv(key, timeout) method",
			    rank, Py_TYPE(obj)->tp_name);
		}
		Py_XDECREF(s);
		Py_XDECREF(r);
		goto fail;
	}
	p->obj = Py_NewRef(obj);
	snprintf(p->hs_key, sizeof(p->hs_key), "%s!hello", link_id);
	p->connect_ms = connect_ms;
	p->ops = (tw_channel_ops) {
		.send = op_send,
		.send_async = p->m[M_SEND_ASYNC] ? op_send_async : NULL,
		.recv = op_recv,
		.test_send = p->m[M_TEST_SEND] ? op_test_send : op_hs_send,
		.test_recv = p->m[M_TEST_RECV] ? op_test_recv : op_hs_recv,
		.wait_pending = p->m[M_WAIT] ? op_wait_pending : NULL,
		.abort = p->m[M_ABORT] ? op_abort : NULL,
		.destroy = op_destroy,
		.size = sizeof(tw_channel_ops),
	};
	p->c.ops = &p->ops;
	p->c.impl = p;
	return p;
fail:
	for (int i = 0; i < M_N; i++)
		Py_XDECREF(p->m[i]);
	free(p);
	return NULL;
}

int twpy_channels_make(PyObject *seq, size_t n, size_t rank,
    const char *link_id, int64_t connect_ms, tw_channel ***out)
{
	PyObject *fast = PySequence_Fast(
	    seq, "channels is a sequence with one entry per party");
	if (fast == NULL)
		return -1;
	Py_ssize_t len = PySequence_Fast_GET_SIZE(fast);
	if ((size_t)len != n) {
		PyErr_Format(PyExc_ValueError,
		    "channels has %zd entries; the link has %zu parties", len,
		    n);
		Py_DECREF(fast);
		return -1;
	}
	if (rank >= n) {
		PyErr_Format(PyExc_ValueError,
		    "rank %zu is out of range for %zu parties", rank, n);
		Py_DECREF(fast);
		return -1;
	}
	PyObject **items = PySequence_Fast_ITEMS(fast);
	for (size_t i = 0; i < n; i++) {
		if (i == rank && items[i] != Py_None) {
			PyErr_Format(PyExc_ValueError,
			    "channels[%zu] is this party's own and must be "
			    "None",
			    i);
			Py_DECREF(fast);
			return -1;
		}
		if (i != rank && items[i] == Py_None) {
			PyErr_Format(PyExc_ValueError,
			    "channels[%zu] is None; only this party's own "
			    "(channels[%zu]) may be",
			    i, rank);
			Py_DECREF(fast);
			return -1;
		}
	}
	tw_channel **chans = calloc(n, sizeof(*chans));
	if (chans == NULL) {
		Py_DECREF(fast);
		PyErr_NoMemory();
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		if (i == rank)
			continue;
		pychan *p = pychan_new(items[i], i, link_id, connect_ms);
		if (p == NULL) {
			twpy_channels_free(chans, n);
			Py_DECREF(fast);
			return -1;
		}
		chans[i] = &p->c;
	}
	Py_DECREF(fast);
	*out = chans;
	return 0;
}

void twpy_channels_free(tw_channel **chans, size_t n)
{
	if (chans == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		if (chans[i] == NULL)
			continue;
		// Not destroy: a channel the link never took is not closed.
		pychan *p = chans[i]->impl;
		for (int k = 0; k < M_N; k++)
			Py_XDECREF(p->m[k]);
		Py_XDECREF(p->obj);
		free(p);
	}
	free(chans);
}
