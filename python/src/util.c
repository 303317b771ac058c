// Buffers, tags, timeouts, the blocking loop, and the Message type.

#include "twpy.h"

#include <pthread.h>
#include <time.h>

// ---------------------------------------------------------------------------
// Arguments

int twpy_buffer(PyObject *obj, Py_buffer *view, bool writable)
{
	if (PyUnicode_Check(obj)) {
		PyErr_SetString(PyExc_TypeError,
		    "str has no bytes of its own: pass bytes (str.encode()) "
		    "or another buffer");
		return -1;
	}
	int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
	if (PyObject_GetBuffer(obj, view, flags) < 0) {
		if (PyErr_ExceptionMatches(PyExc_BufferError)
		    || PyErr_ExceptionMatches(PyExc_TypeError)) {
			PyErr_Clear();
			PyErr_Format(PyExc_TypeError,
			    "expected a C-contiguous%s buffer (bytes, "
			    "bytearray, "
			    "memoryview, numpy array...), not %.80s",
			    writable ? " writable" : "",
			    Py_TYPE(obj)->tp_name);
		}
		return -1;
	}
	return 0;
}

int twpy_tag(PyObject *obj, const char **s, PyObject **keep)
{
	Py_ssize_t n = 0;
	if (PyUnicode_Check(obj)) {
		*s = PyUnicode_AsUTF8AndSize(obj, &n);
		if (*s == NULL)
			return -1;
		Py_INCREF(obj);
	} else if (PyBytes_Check(obj)) {
		*s = PyBytes_AS_STRING(obj);
		n = PyBytes_GET_SIZE(obj);
		Py_INCREF(obj);
	} else {
		PyErr_Format(PyExc_TypeError,
		    "a tag is str or bytes, not %.80s", Py_TYPE(obj)->tp_name);
		return -1;
	}
	if (strlen(*s) != (size_t)n) {
		Py_DECREF(obj);
		PyErr_SetString(PyExc_ValueError, "a tag may not contain NUL");
		return -1;
	}
	*keep = obj;
	return 0;
}

int twpy_tls_paths(PyObject *args, PyObject *p[3])
{
	return PyArg_ParseTuple(args, "O&O&O&:set_tls", PyUnicode_FSConverter,
	           &p[0], PyUnicode_FSConverter, &p[1], PyUnicode_FSConverter,
	           &p[2])
	    ? 0
	    : -1;
}

void twpy_tls_paths_release(PyObject *p[3])
{
	for (int i = 0; i < 3; i++)
		Py_CLEAR(p[i]);
}

int twpy_timeout(PyObject *obj, int64_t none_ms, int64_t *ms)
{
	if (obj == NULL || obj == Py_None) {
		*ms = none_ms;
		return 0;
	}
	double sec = PyFloat_AsDouble(obj);
	if (sec == -1.0 && PyErr_Occurred()) {
		PyErr_Format(PyExc_TypeError,
		    "a timeout is a number of seconds or None, not %.80s",
		    Py_TYPE(obj)->tp_name);
		return -1;
	}
	if (sec != sec || sec < 0) {
		PyErr_SetString(
		    PyExc_ValueError, "a timeout is 0 or more seconds");
		return -1;
	}
	// A timeout of more than a century is forever.
	*ms = sec > 3.2e9 ? -1 : (int64_t)(sec * 1000.0 + 0.5);
	return 0;
}

int64_t twpy_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// ---------------------------------------------------------------------------
// Blocking

static unsigned long main_ident;

bool twpy_main_thread(void)
{
	return PyThread_get_thread_ident() == main_ident;
}

int twpy_block(twpy_slice_fn fn, void *arg, int64_t timeout_ms, int *status)
{
	bool sliced = twpy_main_thread();
	int64_t deadline = timeout_ms < 0 ? -1 : twpy_now_ms() + timeout_ms;
	for (;;) {
		int64_t slice = -1;
		if (deadline >= 0) {
			slice = deadline - twpy_now_ms();
			if (slice < 0)
				slice = 0;
		}
		if (sliced && (slice < 0 || slice > TWPY_SLICE_MS))
			slice = TWPY_SLICE_MS;
		int st;
		Py_BEGIN_ALLOW_THREADS
		st = fn(arg, slice);
		Py_END_ALLOW_THREADS
		if (st != TW_ETIMEDOUT) {
			*status = st;
			return 0;
		}
		if (sliced && PyErr_CheckSignals() < 0)
			return -1;
		if (deadline >= 0 && twpy_now_ms() >= deadline) {
			*status = TW_ETIMEDOUT;
			return 0;
		}
	}
}

// Calls that cannot be split into slices (collectives) run, for the main
// thread, on one worker thread made on first use, while the main thread
// runs the signal handlers every TWPY_SLICE_MS.  Only the main thread posts
// work, one call at a time, so one slot is all the state.
static pthread_mutex_t bg_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t bg_cv;
static pthread_once_t bg_once = PTHREAD_ONCE_INIT;
static bool bg_running;
static int bg_state; // 0 idle, 1 posted, 2 done
static twpy_call_fn bg_fn;
static void *bg_arg;
static int bg_status;

static void bg_cv_init(void)
{
	pthread_condattr_t a;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(&bg_cv, &a);
	pthread_condattr_destroy(&a);
}

// A child of fork has no worker; it makes its own when it needs one.
static void bg_atfork_child(void)
{
	pthread_mutex_init(&bg_mu, NULL);
	bg_cv_init();
	bg_running = false;
	bg_state = 0;
}

static void *bg_main(void *unused)
{
	pthread_mutex_lock(&bg_mu);
	for (;;) {
		while (bg_state != 1)
			pthread_cond_wait(&bg_cv, &bg_mu);
		pthread_mutex_unlock(&bg_mu);
		int st = bg_fn(bg_arg);
		pthread_mutex_lock(&bg_mu);
		bg_status = st;
		bg_state = 2;
		pthread_cond_broadcast(&bg_cv);
	}
	return NULL;
}

static void bg_setup(void)
{
	bg_cv_init();
	pthread_atfork(NULL, NULL, bg_atfork_child);
}

int twpy_call(twpy_call_fn fn, void *arg, void (*cancel)(void *),
    void *cancel_arg, int *status)
{
	if (!twpy_main_thread()) {
		Py_BEGIN_ALLOW_THREADS
		*status = fn(arg);
		Py_END_ALLOW_THREADS
		return 0;
	}
	pthread_once(&bg_once, bg_setup);
	if (!bg_running) {
		pthread_t t;
		pthread_attr_t a;
		pthread_attr_init(&a);
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		int rc = pthread_create(&t, &a, bg_main, NULL);
		pthread_attr_destroy(&a);
		if (rc != 0) {
			// No worker: the call blocks the main thread as it is.
			Py_BEGIN_ALLOW_THREADS
			*status = fn(arg);
			Py_END_ALLOW_THREADS
			return 0;
		}
		bg_running = true;
	}
	pthread_mutex_lock(&bg_mu);
	bg_fn = fn;
	bg_arg = arg;
	bg_state = 1;
	pthread_cond_broadcast(&bg_cv);
	pthread_mutex_unlock(&bg_mu);
	int rv = 0;
	for (;;) {
		bool done;
		Py_BEGIN_ALLOW_THREADS
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += TWPY_SLICE_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_mutex_lock(&bg_mu);
		while (bg_state != 2
		    && pthread_cond_timedwait(&bg_cv, &bg_mu, &ts) == 0)
			;
		done = bg_state == 2;
		pthread_mutex_unlock(&bg_mu);
		Py_END_ALLOW_THREADS
		if (done)
			break;
		if (rv == 0 && PyErr_CheckSignals() < 0) {
			// The call cannot stop half way and stay usable: it is
			// cancelled (the link aborted), and awaited.
			rv = -1;
			cancel(cancel_arg);
		}
	}
	pthread_mutex_lock(&bg_mu);
	*status = bg_status;
	bg_state = 0;
	pthread_mutex_unlock(&bg_mu);
	return rv;
}

// ---------------------------------------------------------------------------
// Message

typedef struct {
	PyObject_HEAD tw_buf buf;
	Py_ssize_t exports;
} message;

static char empty_bytes[1];

PyObject *twpy_message_new(tw_buf *b)
{
	message *m = PyObject_New(message, &twpy_MessageType);
	if (m == NULL) {
		tw_buf_free(b);
		return NULL;
	}
	m->buf = *b;
	m->exports = 0;
	b->data = NULL;
	b->len = 0;
	return (PyObject *)m;
}

PyObject *twpy_bytes_take(tw_buf *b)
{
	PyObject *r = PyBytes_FromStringAndSize(
	    b->len ? (const char *)b->data : "", (Py_ssize_t)b->len);
	tw_buf_free(b);
	return r;
}

static void message_dealloc(message *m)
{
	tw_buf_free(&m->buf);
	PyObject_Free(m);
}

static int message_getbuffer(message *m, Py_buffer *view, int flags)
{
	void *p = m->buf.len ? m->buf.data : empty_bytes;
	if (PyBuffer_FillInfo(
	        view, (PyObject *)m, p, (Py_ssize_t)m->buf.len, 0, flags)
	    < 0)
		return -1;
	m->exports++;
	return 0;
}

static void message_releasebuffer(message *m, Py_buffer *view)
{
	m->exports--;
}

static Py_ssize_t message_len(message *m)
{
	return (Py_ssize_t)m->buf.len;
}

static PyObject *message_bytes(message *m, PyObject *unused)
{
	return PyBytes_FromStringAndSize(
	    m->buf.len ? (const char *)m->buf.data : "",
	    (Py_ssize_t)m->buf.len);
}

static PyObject *message_repr(message *m)
{
	return PyUnicode_FromFormat(
	    "<tagwire.Message of %zu bytes>", m->buf.len);
}

static PyObject *message_richcompare(PyObject *a, PyObject *b, int op)
{
	if (op != Py_EQ && op != Py_NE)
		Py_RETURN_NOTIMPLEMENTED;
	Py_buffer vb;
	if (PyObject_GetBuffer(b, &vb, PyBUF_SIMPLE) < 0) {
		PyErr_Clear();
		Py_RETURN_NOTIMPLEMENTED;
	}
	message *m = (message *)a;
	bool eq = (size_t)vb.len == m->buf.len
	    && (m->buf.len == 0
	        || memcmp(vb.buf, m->buf.data, m->buf.len) == 0);
	PyBuffer_Release(&vb);
	if (op == Py_NE)
		eq = !eq;
	return PyBool_FromLong(eq);
}

static PyBufferProcs message_as_buffer = {
	.bf_getbuffer = (getbufferproc)message_getbuffer,
	.bf_releasebuffer = (releasebufferproc)message_releasebuffer,
};

static PySequenceMethods message_as_sequence = {
	.sq_length = (lenfunc)message_len,
};

static PyMethodDef message_methods[] = {
	{ "tobytes", (PyCFunction)message_bytes, METH_NOARGS,
	    "A copy of the message as bytes." },
	{ "__bytes__", (PyCFunction)message_bytes, METH_NOARGS, NULL },
	{ 0 },
};

PyTypeObject twpy_MessageType = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tagwire.Message",
	.tp_basicsize = sizeof(message),
	.tp_dealloc = (destructor)message_dealloc,
	.tp_repr = (reprfunc)message_repr,
	.tp_as_sequence = &message_as_sequence,
	.tp_as_buffer = &message_as_buffer,
	.tp_richcompare = message_richcompare,
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "A received message that owns its bytes.  It exports them "
	          "(writable) with the buffer protocol: memoryview(msg) and "
	          "numpy.frombuffer(msg) share them and keep them alive "
	          "after the link is closed.",
	.tp_methods = message_methods,
};

// ---------------------------------------------------------------------------
// Module

static PyObject *strerror_py(PyObject *self, PyObject *arg)
{
	long code = PyLong_AsLong(arg);
	if (code == -1 && PyErr_Occurred())
		return NULL;
	return PyUnicode_FromString(tw_strerror((int)code));
}

static PyMethodDef module_methods[] = {
	{ "strerror", strerror_py, METH_O,
	    "strerror(code) -> str: the description of a status code." },
	{ 0 },
};

static struct PyModuleDef module_def = {
	PyModuleDef_HEAD_INIT,
	.m_name = "tagwire._tagwire",
	.m_doc = "tagwire's C extension; import tagwire instead.",
	.m_size = -1,
	.m_methods = module_methods,
};

static int main_ident_init(void)
{
	PyObject *threading = PyImport_ImportModule("threading");
	if (threading == NULL)
		return -1;
	PyObject *mt = PyObject_CallMethod(threading, "main_thread", NULL);
	Py_DECREF(threading);
	if (mt == NULL)
		return -1;
	PyObject *ident = PyObject_GetAttrString(mt, "ident");
	Py_DECREF(mt);
	if (ident == NULL)
		return -1;
	main_ident = PyLong_AsUnsignedLong(ident);
	Py_DECREF(ident);
	return PyErr_Occurred() ? -1 : 0;
}

PyMODINIT_FUNC PyInit__tagwire(void);
PyMODINIT_FUNC PyInit__tagwire(void)
{
	if (main_ident_init() < 0 || PyType_Ready(&twpy_MessageType) < 0)
		return NULL;
	PyObject *m = PyModule_Create(&module_def);
	if (m == NULL)
		return NULL;
	if (twpy_errors_init(m) < 0
	    || PyModule_AddObjectRef(
	           m, "Message", (PyObject *)&twpy_MessageType)
	        < 0
	    || twpy_desc_init(m) < 0 || twpy_link_init(m) < 0
	    || twpy_engine_init(m) < 0) {
		Py_DECREF(m);
		return NULL;
	}
	struct {
		const char *name;
		long value;
	} consts[] = {
#define TWPY_CONST(name, value, text) { "TW_" #name, value },
		TW_STATUS_MAP(TWPY_CONST)
#undef TWPY_CONST
	};
	for (size_t i = 0; i < sizeof(consts) / sizeof(consts[0]); i++)
		if (PyModule_AddIntConstant(m, consts[i].name, consts[i].value)
		    < 0) {
			Py_DECREF(m);
			return NULL;
		}
	if (PyModule_AddStringConstant(m, "version", tw_version()) < 0) {
		Py_DECREF(m);
		return NULL;
	}
	return m;
}
