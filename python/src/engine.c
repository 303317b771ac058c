// tagwire.Engine, tagwire.Memory and tagwire.Transfer: the transfer engine
// (tagwire/engine.h).
//
// Lifetimes.  A Memory and a Transfer hold a strong reference to their
// Engine object, which therefore outlives them; the Engine knows its
// Memories (a list) and Transfers (a dict from the tw_xfer pointer to the
// object, for reap) by borrowed references that their deallocation
// removes.  A Transfer holds its Memories, so a registration is normally
// unused when its Memory dies.  Engine.close frees the transfers first, then
// the engine, then releases the buffers; the objects left over raise
// ClosedError.
//
// Threads.  Every call that runs C code on the engine without the GIL counts
// itself in `active` (and a transfer's calls also in the transfer's own
// count); close marks the engine closing, which refuses new calls and ends
// the blocking ones at their next slice, and waits for the count to drop to
// 0 before it frees anything.  Counts and states change with the GIL held
// and under `mtx`, so that a thread holding the GIL may read them freely and
// one without it reads them under `mtx`.

#include "twpy.h"

#include <pthread.h>

enum { E_OPEN, E_CLOSING, E_FREEING, E_CLOSED };

enum {
	O_STRIPES,
	O_CHUNK_SIZE,
	O_WINDOW,
	O_CONNECT_TIMEOUT_MS,
	O_HEARTBEAT_MS,
	O_MAX_MSG_SIZE,
	O_SHM_LOCAL,
	O_COUNT
};

// Option names, numbers and defaults (the engine has no getter).
static const struct {
	const char *name;
	int opt;
	int64_t def;
} opts[O_COUNT] = {
	{ "stripes", TW_OPT_STRIPES, 1 },
	{ "chunk_size", TW_OPT_CHUNK_SIZE, 1 << 20 },
	{ "window", TW_OPT_WINDOW, 16 },
	{ "connect_timeout_ms", TW_OPT_CONNECT_TIMEOUT_MS, 30000 },
	{ "heartbeat_ms", TW_OPT_HEARTBEAT_MS, 1000 },
	{ "max_msg_size", TW_OPT_MAX_MSG_SIZE, 1 << 20 },
	{ "shm_local", TW_OPT_SHM_LOCAL, 0 },
};

typedef struct mem mem;

typedef struct {
	PyObject_HEAD tw_engine *e;
	char name[72];
	int state;
	int active;
	pthread_mutex_t mtx;
	pthread_cond_t cv;
	PyObject *xfers; // {int(tw_xfer *): int(Transfer *)}, borrowed
	mem *mems; // registered Memories, borrowed
	Py_buffer *zombies; // buffers of Memories that died registered
	size_t nzombies;
	int64_t opt[O_COUNT];
} engine;

struct mem {
	PyObject_HEAD engine *eo;
	uint64_t id;
	Py_buffer view;
	bool has_view; // registered (and linked into eo->mems)
	bool busy; // being deregistered
	bool writable;
	unsigned access;
	Py_ssize_t len;
	mem *prev, *next;
};

typedef struct {
	PyObject_HEAD engine *eo;
	tw_xfer *x; // NULL once freed
	tw_peer peer;
	int active;
	bool closing;
	PyObject *mems; // set of the Memories posted
	PyObject *key, *ptr; // the entry in eo->xfers
} xfer;

static PyTypeObject engine_type, mem_type, xfer_type;

// ---------------------------------------------------------------------------
// States and counts

static PyObject *raise_closed(const char *what)
{
	return twpy_raise(TW_ECLOSED, what);
}

// With the GIL: the engine is open, or ClosedError.
static bool live(engine *eo, const char *what)
{
	if (eo->state == E_OPEN)
		return true;
	raise_closed(what);
	return false;
}

// With the GIL: counts a call about to run without it.
static void enter_force(engine *eo)
{
	pthread_mutex_lock(&eo->mtx);
	eo->active++;
	pthread_mutex_unlock(&eo->mtx);
}

static int enter(engine *eo, const char *what)
{
	if (!live(eo, what))
		return -1;
	enter_force(eo);
	return 0;
}

static void leave(engine *eo)
{
	pthread_mutex_lock(&eo->mtx);
	eo->active--;
	pthread_cond_broadcast(&eo->cv);
	pthread_mutex_unlock(&eo->mtx);
}

// With the GIL, which it releases while it waits for *count to be 0; holds
// the GIL again (so nobody can count up) when it returns.
static void wait_zero(engine *eo, const int *count)
{
	for (;;) {
		pthread_mutex_lock(&eo->mtx);
		int n = *count;
		pthread_mutex_unlock(&eo->mtx);
		if (n == 0)
			return;
		Py_BEGIN_ALLOW_THREADS
		pthread_mutex_lock(&eo->mtx);
		while (*count > 0)
			pthread_cond_wait(&eo->cv, &eo->mtx);
		pthread_mutex_unlock(&eo->mtx);
		Py_END_ALLOW_THREADS
	}
}

static void set_state(engine *eo, int state)
{
	pthread_mutex_lock(&eo->mtx);
	eo->state = state;
	pthread_cond_broadcast(&eo->cv);
	pthread_mutex_unlock(&eo->mtx);
}

// Without the GIL: whether a blocking call must stop (engine closing, or
// the transfer `t` if not NULL).
static bool stopping(engine *eo, xfer *t)
{
	pthread_mutex_lock(&eo->mtx);
	bool r = eo->state != E_OPEN || (t != NULL && t->closing);
	pthread_mutex_unlock(&eo->mtx);
	return r;
}

// Slices stay short on every thread so that close ends a blocking call.
static int64_t cap_slice(int64_t slice_ms)
{
	return slice_ms < 0 || slice_ms > TWPY_SLICE_MS ? TWPY_SLICE_MS
	                                                : slice_ms;
}

// ---------------------------------------------------------------------------
// Argument converters (for PyArg_Parse "O&")

static int conv_peer(PyObject *obj, void *out)
{
	PyObject *i = PyNumber_Index(obj);
	if (i == NULL)
		return 0;
	unsigned long v = PyLong_AsUnsignedLong(i);
	Py_DECREF(i);
	if ((v == (unsigned long)-1 && PyErr_Occurred()) || v > UINT32_MAX
	    || v == 0) {
		if (PyErr_Occurred()
		    && !PyErr_ExceptionMatches(PyExc_OverflowError)
		    && !PyErr_ExceptionMatches(PyExc_ValueError))
			return 0;
		PyErr_Clear();
		PyErr_SetString(
		    PyExc_ValueError, "a peer is an int in 1..2**32-1");
		return 0;
	}
	*(tw_peer *)out = (tw_peer)v;
	return 1;
}

static int conv_u64(PyObject *obj, void *out)
{
	PyObject *i = PyNumber_Index(obj);
	if (i == NULL)
		return 0;
	unsigned long long v = PyLong_AsUnsignedLongLong(i);
	Py_DECREF(i);
	if (v == (unsigned long long)-1 && PyErr_Occurred()) {
		if (!PyErr_ExceptionMatches(PyExc_OverflowError))
			return 0;
		PyErr_Clear();
		PyErr_SetString(PyExc_ValueError,
		    "expected an int in 0..2**64-1 (a tag or a remote id)");
		return 0;
	}
	*(uint64_t *)out = v;
	return 1;
}

static int conv_size(PyObject *obj, void *out)
{
	Py_ssize_t v = PyNumber_AsSsize_t(obj, PyExc_OverflowError);
	if (v == -1 && PyErr_Occurred())
		return 0;
	if (v < 0) {
		PyErr_SetString(PyExc_ValueError,
		    "offsets and lengths are 0 or more bytes");
		return 0;
	}
	*(size_t *)out = (size_t)v;
	return 1;
}

// ---------------------------------------------------------------------------
// Memory

static void mem_unlink(mem *m)
{
	engine *eo = m->eo;
	if (m->prev != NULL)
		m->prev->next = m->next;
	else
		eo->mems = m->next;
	if (m->next != NULL)
		m->next->prev = m->prev;
	m->prev = m->next = NULL;
}

// What mem_release does when a transfer still uses the registration.
enum {
	R_RAISE, // deregister(): raise, stay registered
	R_TRY, // tp_clear: stay registered (the transfer's clear comes)
	R_FINAL, // dealloc: the buffer stays exported until the engine goes
};

// With the GIL: deregisters and releases the buffer.  0, or -1 with an
// exception (R_RAISE).
static int mem_release(mem *m, int how)
{
	if (!m->has_view)
		return 0;
	if (m->busy) { // only with R_RAISE: the others have no caller
		PyErr_SetString(PyExc_ValueError,
		    "Memory.deregister: another thread is deregistering it");
		return -1;
	}
	engine *eo = m->eo;
	// has_view: the engine is open, or closing and not yet freeing.
	enter_force(eo);
	m->busy = true;
	int st;
	Py_BEGIN_ALLOW_THREADS
	st = tw_mem_deregister(eo->e, m->id);
	Py_END_ALLOW_THREADS
	m->busy = false;
	leave(eo);
	if (st == TW_EAGAIN && how == R_RAISE) {
		twpy_raise(st,
		    "Memory.deregister: an unfinished transfer uses it "
		    "(wait for or close it first)");
		return -1;
	}
	if (st == TW_EAGAIN && how == R_TRY)
		return 0;
	mem_unlink(m);
	m->has_view = false;
	if (st == TW_EAGAIN) {
		// Cannot happen while Transfers hold their Memories, but a
		// buffer the engine may still touch is never released: it
		// waits for the engine.
		Py_buffer *z = PyMem_Realloc(
		    eo->zombies, (eo->nzombies + 1) * sizeof(*z));
		if (z != NULL) {
			eo->zombies = z;
			z[eo->nzombies++] = m->view;
		} // else it stays exported forever, which is safe
		return 0;
	}
	PyBuffer_Release(&m->view);
	return 0;
}

static bool mem_ok(mem *m, const char *what)
{
	if (!live(m->eo, what))
		return false;
	if (!m->has_view) {
		PyErr_Format(
		    twpy_ClosedError, "%s: the Memory was deregistered", what);
		return false;
	}
	return true;
}

static PyObject *mem_deregister(mem *m, PyObject *unused)
{
	if (m->eo->state != E_OPEN)
		return raise_closed("Memory.deregister");
	if (mem_release(m, R_RAISE) < 0)
		return NULL;
	Py_RETURN_NONE;
}

static PyObject *mem_pack(mem *m, PyObject *unused)
{
	if (!mem_ok(m, "Memory.pack"))
		return NULL;
	tw_buf b = { 0 };
	int st = tw_mem_pack(m->eo->e, m->id, &b);
	if (st != TW_OK)
		return twpy_raise(st, "Memory.pack");
	return twpy_bytes_take(&b);
}

static PyObject *mem_get_id(mem *m, void *closure)
{
	return PyLong_FromUnsignedLongLong(m->id);
}

static PyObject *mem_get_registered(mem *m, void *closure)
{
	return PyBool_FromLong(m->has_view && m->eo->state == E_OPEN);
}

static PyObject *mem_get_writable(mem *m, void *closure)
{
	return PyBool_FromLong(m->writable);
}

static PyObject *mem_get_access(mem *m, void *closure)
{
	return PyLong_FromUnsignedLong(m->access);
}

static PyObject *mem_get_engine(mem *m, void *closure)
{
	return Py_NewRef((PyObject *)m->eo);
}

static PyObject *mem_get_obj(mem *m, void *closure)
{
	if (m->has_view && m->view.obj != NULL)
		return Py_NewRef(m->view.obj);
	Py_RETURN_NONE;
}

static Py_ssize_t mem_len(mem *m)
{
	return m->len;
}

static PyObject *mem_repr(mem *m)
{
	return PyUnicode_FromFormat("<tagwire.Memory id=%llu, %zd bytes%s>",
	    (unsigned long long)m->id, m->len,
	    m->has_view && m->eo->state == E_OPEN ? "" : ", deregistered");
}

static PyObject *mem_enter(mem *m, PyObject *unused)
{
	return Py_NewRef((PyObject *)m);
}

static PyObject *mem_exit(mem *m, PyObject *args)
{
	if (m->has_view && m->eo->state == E_OPEN
	    && mem_release(m, R_RAISE) < 0)
		return NULL;
	Py_RETURN_FALSE;
}

static int mem_traverse(mem *m, visitproc visit, void *arg)
{
	Py_VISIT((PyObject *)m->eo);
	if (m->has_view)
		Py_VISIT(m->view.obj);
	return 0;
}

static int mem_clear(mem *m)
{
	mem_release(m, R_TRY);
	return 0;
}

static void mem_dealloc(mem *m)
{
	PyObject_GC_UnTrack(m);
	if (m->eo != NULL)
		mem_release(m, R_FINAL);
	Py_XDECREF((PyObject *)m->eo);
	Py_TYPE(m)->tp_free((PyObject *)m);
}

static PyMethodDef mem_methods[] = {
	{ "deregister", (PyCFunction)mem_deregister, METH_NOARGS,
	    "deregister(): forgets the registration and releases the "
	    "buffer.  Raises tagwire.Error (TW_EAGAIN) and stays registered "
	    "while an unfinished transfer uses it.  Idempotent." },
	{ "pack", (PyCFunction)mem_pack, METH_NOARGS,
	    "pack() -> bytes: the description a peer passes to "
	    "Engine.unpack." },
	{ "__enter__", (PyCFunction)mem_enter, METH_NOARGS, NULL },
	{ "__exit__", (PyCFunction)mem_exit, METH_VARARGS, NULL },
	{ 0 },
};

static PyGetSetDef mem_getset[] = {
	{ "id", (getter)mem_get_id, NULL, "the registration id", NULL },
	{ "registered", (getter)mem_get_registered, NULL,
	    "False once deregistered or the engine is closed", NULL },
	{ "writable", (getter)mem_get_writable, NULL,
	    "whether the buffer is writable (post_recv/post_read target)",
	    NULL },
	{ "access", (getter)mem_get_access, NULL,
	    "what peers may do one-sidedly (ACCESS_READ | ACCESS_WRITE)",
	    NULL },
	{ "engine", (getter)mem_get_engine, NULL, "the Engine", NULL },
	{ "obj", (getter)mem_get_obj, NULL,
	    "the registered object (None once released)", NULL },
	{ 0 },
};

static PySequenceMethods mem_as_sequence = {
	.sq_length = (lenfunc)mem_len,
};

static PyTypeObject mem_type = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tagwire.Memory",
	.tp_basicsize = sizeof(mem),
	.tp_dealloc = (destructor)mem_dealloc,
	.tp_repr = (reprfunc)mem_repr,
	.tp_as_sequence = &mem_as_sequence,
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
	.tp_doc = "A buffer registered with Engine.register.  The buffer "
	          "stays exported (a bytearray cannot be resized) until "
	          "deregister(), the Memory's death or Engine.close().",
	.tp_traverse = (traverseproc)mem_traverse,
	.tp_clear = (inquiry)mem_clear,
	.tp_methods = mem_methods,
	.tp_getset = mem_getset,
};

// ---------------------------------------------------------------------------
// Transfer

// With the GIL, no call of the transfer under way: frees the tw_xfer.
static void xfer_free_x(xfer *t)
{
	if (t->x == NULL)
		return;
	engine *eo = t->eo;
	tw_xfer *x = t->x;
	t->x = NULL;
	// Deleting an existing int key from a dict does not fail.
	if (PyDict_DelItem(eo->xfers, t->key) < 0)
		PyErr_Clear();
	// x != NULL: the engine is not freeing yet.
	enter_force(eo);
	Py_BEGIN_ALLOW_THREADS
	tw_xfer_free(x);
	Py_END_ALLOW_THREADS
	leave(eo);
}

static bool xfer_ok(xfer *t, const char *what)
{
	if (!live(t->eo, what))
		return false;
	if (t->x == NULL || t->closing) {
		PyErr_Format(
		    twpy_ClosedError, "%s: the Transfer is closed", what);
		return false;
	}
	return true;
}

static int xfer_enter(xfer *t, const char *what)
{
	if (!xfer_ok(t, what))
		return -1;
	pthread_mutex_lock(&t->eo->mtx);
	t->eo->active++;
	t->active++;
	pthread_mutex_unlock(&t->eo->mtx);
	return 0;
}

static void xfer_leave(xfer *t)
{
	pthread_mutex_lock(&t->eo->mtx);
	t->active--;
	t->eo->active--;
	pthread_cond_broadcast(&t->eo->cv);
	pthread_mutex_unlock(&t->eo->mtx);
}

static PyObject *xfer_close(xfer *t, PyObject *unused)
{
	if (t->x == NULL || t->closing)
		Py_RETURN_NONE; // closed, or another thread closes it
	pthread_mutex_lock(&t->eo->mtx);
	t->closing = true;
	pthread_mutex_unlock(&t->eo->mtx);
	wait_zero(t->eo, &t->active);
	xfer_free_x(t); // nothing if Engine.close took it meanwhile
	Py_RETURN_NONE;
}

// The post_* methods share: the Memory (of this engine), the range, the
// Memory kept alive by the transfer.
static mem *post_mem(xfer *t, PyObject *obj, size_t off, size_t len, bool into,
    const char *what)
{
	if (!xfer_ok(t, what))
		return NULL;
	if (!PyObject_TypeCheck(obj, &mem_type)) {
		PyErr_Format(PyExc_TypeError,
		    "%s: expected a tagwire.Memory, not %.80s", what,
		    Py_TYPE(obj)->tp_name);
		return NULL;
	}
	mem *m = (mem *)obj;
	if (m->eo != t->eo) {
		PyErr_Format(PyExc_ValueError,
		    "%s: the Memory belongs to another engine", what);
		return NULL;
	}
	if (!mem_ok(m, what))
		return NULL;
	if (into && !m->writable) {
		PyErr_Format(PyExc_TypeError,
		    "%s: the Memory was registered from a read-only buffer",
		    what);
		return NULL;
	}
	if (off > (size_t)m->len || len > (size_t)m->len - off) {
		PyErr_Format(PyExc_ValueError,
		    "%s: [%zu, %zu + %zu) is outside the Memory's %zd bytes",
		    what, off, off, len, m->len);
		return NULL;
	}
	return m;
}

static PyObject *post_done(xfer *t, mem *m, int st, const char *what)
{
	if (st != TW_OK)
		return twpy_raise(st, what);
	if (PySet_Add(t->mems, (PyObject *)m) < 0)
		return NULL;
	Py_RETURN_NONE;
}

static PyObject *xfer_post_send(xfer *t, PyObject *args)
{
	PyObject *mo;
	size_t off, len;
	uint64_t tag;
	if (!PyArg_ParseTuple(args, "OO&O&O&:post_send", &mo, conv_size, &off,
	        conv_size, &len, conv_u64, &tag))
		return NULL;
	mem *m = post_mem(t, mo, off, len, false, "Transfer.post_send");
	if (m == NULL)
		return NULL;
	return post_done(t, m, tw_xfer_post_send(t->x, m->id, off, len, tag),
	    "Transfer.post_send");
}

static PyObject *xfer_post_recv(xfer *t, PyObject *args)
{
	PyObject *mo;
	size_t off, len;
	uint64_t tag;
	if (!PyArg_ParseTuple(args, "OO&O&O&:post_recv", &mo, conv_size, &off,
	        conv_size, &len, conv_u64, &tag))
		return NULL;
	mem *m = post_mem(t, mo, off, len, true, "Transfer.post_recv");
	if (m == NULL)
		return NULL;
	return post_done(t, m, tw_xfer_post_recv(t->x, m->id, off, len, tag),
	    "Transfer.post_recv");
}

static PyObject *xfer_post_write(xfer *t, PyObject *args)
{
	PyObject *mo;
	size_t off, roff, len;
	uint64_t rid;
	if (!PyArg_ParseTuple(args, "OO&O&O&O&:post_write", &mo, conv_size,
	        &off, conv_u64, &rid, conv_size, &roff, conv_size, &len))
		return NULL;
	mem *m = post_mem(t, mo, off, len, false, "Transfer.post_write");
	if (m == NULL)
		return NULL;
	return post_done(t, m,
	    tw_xfer_post_write(t->x, m->id, off, rid, roff, len),
	    "Transfer.post_write");
}

static PyObject *xfer_post_read(xfer *t, PyObject *args)
{
	PyObject *mo;
	size_t off, roff, len;
	uint64_t rid;
	if (!PyArg_ParseTuple(args, "OO&O&O&O&:post_read", &mo, conv_size,
	        &off, conv_u64, &rid, conv_size, &roff, conv_size, &len))
		return NULL;
	mem *m = post_mem(t, mo, off, len, true, "Transfer.post_read");
	if (m == NULL)
		return NULL;
	return post_done(t, m,
	    tw_xfer_post_read(t->x, m->id, off, rid, roff, len),
	    "Transfer.post_read");
}

static PyObject *xfer_notify(xfer *t, PyObject *arg)
{
	if (!xfer_ok(t, "Transfer.notify"))
		return NULL;
	Py_buffer v;
	if (twpy_buffer(arg, &v, false) < 0)
		return NULL;
	int st = tw_xfer_notify(t->x, v.buf, (size_t)v.len);
	PyBuffer_Release(&v);
	if (st != TW_OK)
		return twpy_raise(st, "Transfer.notify");
	Py_RETURN_NONE;
}

static PyObject *xfer_test(xfer *t, PyObject *unused)
{
	if (!xfer_ok(t, "Transfer.test"))
		return NULL;
	int st = tw_xfer_test(t->x);
	if (st < 0)
		return twpy_raise(st, "Transfer");
	return PyBool_FromLong(st == 1);
}

struct xwait {
	xfer *t;
	int status;
};

static int xwait_slice(void *arg, int64_t slice_ms)
{
	struct xwait *w = arg;
	if (stopping(w->t->eo, w->t)) {
		w->status = TW_ECLOSED;
		return TW_OK;
	}
	int st = tw_xfer_wait(w->t->x, cap_slice(slice_ms));
	if (st == TW_EAGAIN)
		return TW_ETIMEDOUT; // still going: twpy_block goes on
	w->status = st; // done, or the transfer's error (TW_ETIMEDOUT too)
	return TW_OK;
}

static PyObject *xfer_wait(xfer *t, PyObject *args, PyObject *kw)
{
	static char *names[] = { "timeout", NULL };
	PyObject *to = Py_None;
	int64_t ms;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:wait", names, &to)
	    || twpy_timeout(to, -1, &ms) < 0)
		return NULL;
	if (xfer_enter(t, "Transfer.wait") < 0)
		return NULL;
	struct xwait w = { t, TW_OK };
	int st;
	int r = twpy_block(xwait_slice, &w, ms, &st);
	xfer_leave(t);
	if (r < 0)
		return NULL;
	if (st == TW_ETIMEDOUT)
		return twpy_raise(st, "Transfer.wait: still in progress");
	if (w.status == TW_ECLOSED)
		return raise_closed("Transfer.wait: closed meanwhile");
	if (w.status != TW_OK)
		return twpy_raise(w.status, "Transfer");
	Py_RETURN_NONE;
}

static PyObject *xfer_repost(xfer *t, PyObject *unused)
{
	if (xfer_enter(t, "Transfer.repost") < 0)
		return NULL;
	int st;
	Py_BEGIN_ALLOW_THREADS
	st = tw_xfer_repost(t->x);
	Py_END_ALLOW_THREADS
	xfer_leave(t);
	if (st == TW_EAGAIN)
		return twpy_raise(st, "Transfer.repost: still in progress");
	if (st != TW_OK)
		return twpy_raise(st, "Transfer.repost");
	Py_RETURN_NONE;
}

static PyObject *xfer_enter_ctx(xfer *t, PyObject *unused)
{
	return Py_NewRef((PyObject *)t);
}

static PyObject *xfer_exit_ctx(xfer *t, PyObject *args)
{
	PyObject *r = xfer_close(t, NULL);
	Py_XDECREF(r);
	if (r == NULL)
		return NULL;
	Py_RETURN_FALSE;
}

static PyObject *xfer_get_peer(xfer *t, void *closure)
{
	return PyLong_FromUnsignedLong(t->peer);
}

static PyObject *xfer_get_engine(xfer *t, void *closure)
{
	return Py_NewRef((PyObject *)t->eo);
}

static PyObject *xfer_get_closed(xfer *t, void *closure)
{
	return PyBool_FromLong(
	    t->x == NULL || t->closing || t->eo->state != E_OPEN);
}

static PyObject *xfer_repr(xfer *t)
{
	// Not tw_xfer_test: it counts as reporting the transfer finished,
	// after which it takes no more posts.
	bool closed = t->x == NULL || t->closing || t->eo->state != E_OPEN;
	return PyUnicode_FromFormat("<tagwire.Transfer to peer %u%s>",
	    (unsigned)t->peer, closed ? ", closed" : "");
}

static int xfer_traverse(xfer *t, visitproc visit, void *arg)
{
	Py_VISIT((PyObject *)t->eo);
	Py_VISIT(t->mems);
	return 0;
}

static int xfer_clear(xfer *t)
{
	// First the tw_xfer, so that its Memories are unused when they go.
	xfer_free_x(t);
	Py_CLEAR(t->mems);
	return 0;
}

static void xfer_dealloc(xfer *t)
{
	PyObject_GC_UnTrack(t);
	if (t->eo != NULL)
		xfer_free_x(t);
	Py_XDECREF(t->mems);
	Py_XDECREF(t->key);
	Py_XDECREF(t->ptr);
	Py_XDECREF((PyObject *)t->eo);
	Py_TYPE(t)->tp_free((PyObject *)t);
}

static PyMethodDef xfer_methods[] = {
	{ "post_send", (PyCFunction)xfer_post_send, METH_VARARGS,
	    "post_send(mem, off, length, tag): a tagged send of "
	    "mem[off:off+length] matching the peer's post_recv with the "
	    "same tag (int)." },
	{ "post_recv", (PyCFunction)xfer_post_recv, METH_VARARGS,
	    "post_recv(mem, off, length, tag): a tagged receive into "
	    "mem[off:off+length] (a writable Memory); a send of another "
	    "length fails both with TruncatedError." },
	{ "post_write", (PyCFunction)xfer_post_write, METH_VARARGS,
	    "post_write(mem, off, remote, roff, length): a one-sided WRITE "
	    "of mem[off:off+length] to the remote id (Engine.unpack) at "
	    "roff." },
	{ "post_read", (PyCFunction)xfer_post_read, METH_VARARGS,
	    "post_read(mem, off, remote, roff, length): a one-sided READ "
	    "into mem[off:off+length] (a writable Memory)." },
	{ "notify", (PyCFunction)xfer_notify, METH_O,
	    "notify(data): a notification (copied) the peer's "
	    "Engine.recv_notify gets after every post is done; no post may "
	    "follow." },
	{ "test", (PyCFunction)xfer_test, METH_NOARGS,
	    "test() -> bool: True done, False in progress; raises the "
	    "transfer's error if it failed.  Never blocks." },
	{ "wait", (PyCFunction)(void (*)(void))xfer_wait,
	    METH_VARARGS | METH_KEYWORDS,
	    "wait(timeout=None): waits (None: forever) until done; raises "
	    "tagwire.TimeoutError if still going at timeout (the transfer "
	    "goes on), or the transfer's error." },
	{ "repost", (PyCFunction)xfer_repost, METH_NOARGS,
	    "repost(): runs the same posts again with a fresh deadline." },
	{ "close", (PyCFunction)xfer_close, METH_NOARGS,
	    "close(): frees the transfer, cancelling what is in flight.  "
	    "Idempotent." },
	{ "__enter__", (PyCFunction)xfer_enter_ctx, METH_NOARGS, NULL },
	{ "__exit__", (PyCFunction)xfer_exit_ctx, METH_VARARGS, NULL },
	{ 0 },
};

static PyGetSetDef xfer_getset[] = {
	{ "peer", (getter)xfer_get_peer, NULL, "the peer", NULL },
	{ "engine", (getter)xfer_get_engine, NULL, "the Engine", NULL },
	{ "closed", (getter)xfer_get_closed, NULL,
	    "True once closed (or its engine)", NULL },
	{ 0 },
};

static PyTypeObject xfer_type = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tagwire.Transfer",
	.tp_basicsize = sizeof(xfer),
	.tp_dealloc = (destructor)xfer_dealloc,
	.tp_repr = (reprfunc)xfer_repr,
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
	.tp_doc = "A transfer to one peer (Engine.transfer): posts, then "
	          "wait() or test().  It keeps its Memories and Engine "
	          "alive; close() (or its death) frees it.",
	.tp_traverse = (traverseproc)xfer_traverse,
	.tp_clear = (inquiry)xfer_clear,
	.tp_methods = xfer_methods,
	.tp_getset = xfer_getset,
};

// ---------------------------------------------------------------------------
// Engine

// With the GIL: frees the transfers, the engine, then the buffers.
static void engine_close_impl(engine *eo)
{
	if (eo->state == E_CLOSED)
		return;
	if (eo->state != E_OPEN) { // another thread closes it
		Py_BEGIN_ALLOW_THREADS
		pthread_mutex_lock(&eo->mtx);
		while (eo->state != E_CLOSED)
			pthread_cond_wait(&eo->cv, &eo->mtx);
		pthread_mutex_unlock(&eo->mtx);
		Py_END_ALLOW_THREADS
		return;
	}
	set_state(eo, E_CLOSING);
	wait_zero(eo, &eo->active);
	// The transfers, one at a time: while one is freed without the GIL
	// another may die and free itself.
	PyObject *k, *v;
	Py_ssize_t pos;
	while (pos = 0, PyDict_Next(eo->xfers, &pos, &k, &v)) {
		xfer *t = PyLong_AsVoidPtr(v);
		xfer_free_x(t);
	}
	wait_zero(eo, &eo->active);
	// From here on nothing of the engine is called: the buffers leave
	// their Memories to be released once the engine is gone.
	set_state(eo, E_FREEING);
	size_t n = eo->nzombies;
	for (mem *m = eo->mems; m != NULL; m = m->next)
		n++;
	Py_buffer *views
	    = PyMem_Realloc(eo->zombies, (n ? n : 1) * sizeof(*views));
	tw_engine *e = eo->e;
	eo->e = NULL;
	if (views != NULL) {
		size_t i = eo->nzombies;
		eo->zombies = NULL;
		eo->nzombies = 0;
		while (eo->mems != NULL) {
			mem *m = eo->mems;
			views[i++] = m->view;
			m->has_view = false;
			mem_unlink(m);
		}
		Py_BEGIN_ALLOW_THREADS
		tw_engine_free(e);
		Py_END_ALLOW_THREADS
		for (i = 0; i < n; i++)
			PyBuffer_Release(&views[i]);
		PyMem_Free(views);
	} else {
		// No memory to move the buffers out: the GIL stays held, so
		// that no Memory dies while the engine may touch it.
		tw_engine_free(e);
		while (eo->mems != NULL) {
			mem *m = eo->mems;
			m->has_view = false;
			mem_unlink(m);
			PyBuffer_Release(&m->view);
		}
		for (size_t i = 0; i < eo->nzombies; i++)
			PyBuffer_Release(&eo->zombies[i]);
		PyMem_Free(eo->zombies);
		eo->zombies = NULL;
		eo->nzombies = 0;
	}
	set_state(eo, E_CLOSED);
}

static PyObject *engine_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
	const char *name;
	if (!PyArg_ParseTuple(args, "s:Engine", &name))
		return NULL;
	size_t nlen = strlen(name);
	engine *eo = (engine *)type->tp_alloc(type, 0);
	if (eo == NULL)
		return NULL;
	eo->state = E_CLOSED; // until everything is set up
	pthread_mutex_init(&eo->mtx, NULL);
	pthread_cond_init(&eo->cv, NULL);
	for (int i = 0; i < O_COUNT; i++)
		eo->opt[i] = opts[i].def;
	eo->xfers = PyDict_New();
	if (eo->xfers == NULL) {
		Py_DECREF(eo);
		return NULL;
	}
	int st = nlen < sizeof(eo->name) ? tw_engine_new(name, &eo->e)
	                                 : TW_EINVAL;
	if (st == TW_EINVAL) {
		PyErr_Format(PyExc_ValueError,
		    "invalid engine name %R: 1..64 bytes of [A-Za-z0-9._-]",
		    PyTuple_GET_ITEM(args, 0));
		Py_DECREF(eo);
		return NULL;
	}
	if (st != TW_OK) {
		Py_DECREF(eo);
		return twpy_raise(st, "Engine");
	}
	memcpy(eo->name, name, nlen + 1);
	eo->state = E_OPEN;
	// Options as keywords.
	PyObject *k, *v;
	Py_ssize_t pos = 0;
	while (kw != NULL && PyDict_Next(kw, &pos, &k, &v)) {
		PyObject *r
		    = PyObject_CallMethod((PyObject *)eo, "set", "OO", k, v);
		if (r == NULL) {
			Py_DECREF(eo);
			return NULL;
		}
		Py_DECREF(r);
	}
	return (PyObject *)eo;
}

static void engine_dealloc(engine *eo)
{
	// Nothing refers to it: no Memory, no Transfer, no call.
	engine_close_impl(eo);
	Py_XDECREF(eo->xfers);
	pthread_cond_destroy(&eo->cv);
	pthread_mutex_destroy(&eo->mtx);
	Py_TYPE(eo)->tp_free((PyObject *)eo);
}

static PyObject *engine_close(engine *eo, PyObject *unused)
{
	engine_close_impl(eo);
	Py_RETURN_NONE;
}

static PyObject *engine_enter_ctx(engine *eo, PyObject *unused)
{
	if (!live(eo, "Engine.__enter__"))
		return NULL;
	return Py_NewRef((PyObject *)eo);
}

static PyObject *engine_exit_ctx(engine *eo, PyObject *args)
{
	engine_close_impl(eo);
	Py_RETURN_FALSE;
}

static int opt_index(PyObject *name)
{
	const char *s = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
	if (s == NULL) {
		if (!PyErr_Occurred())
			PyErr_Format(PyExc_TypeError,
			    "an option name is a str, not %.80s",
			    Py_TYPE(name)->tp_name);
		return -1;
	}
	for (int i = 0; i < O_COUNT; i++)
		if (strcmp(opts[i].name, s) == 0)
			return i;
	PyErr_Format(PyExc_ValueError,
	    "unknown engine option %R (stripes, chunk_size, window, "
	    "connect_timeout_ms, heartbeat_ms, max_msg_size, shm_local)",
	    name);
	return -1;
}

static int opt_apply(engine *eo, int i, PyObject *value)
{
	if (!live(eo, "Engine option"))
		return -1;
	if (value == NULL) {
		PyErr_SetString(PyExc_AttributeError,
		    "options cannot be deleted; set the default instead");
		return -1;
	}
	if (!PyLong_Check(value) || PyBool_Check(value)) {
		PyErr_Format(PyExc_TypeError, "an option is an int, not %.80s",
		    Py_TYPE(value)->tp_name);
		return -1;
	}
	long long v = PyLong_AsLongLong(value);
	if (v == -1 && PyErr_Occurred())
		return -1;
	int st = tw_engine_set(eo->e, opts[i].opt, v);
	if (st == TW_EINVAL) {
		PyErr_Format(PyExc_ValueError,
		    "%s = %lld: out of range, or the engine listens or "
		    "connected already",
		    opts[i].name, v);
		return -1;
	}
	if (st != TW_OK) {
		twpy_raise(st, "Engine option");
		return -1;
	}
	eo->opt[i] = v;
	return 0;
}

static PyObject *opt_get(engine *eo, void *closure)
{
	return PyLong_FromLongLong(eo->opt[(intptr_t)closure]);
}

static int opt_set(engine *eo, PyObject *value, void *closure)
{
	return opt_apply(eo, (int)(intptr_t)closure, value);
}

static PyObject *engine_set(engine *eo, PyObject *args)
{
	PyObject *name, *value;
	if (!PyArg_ParseTuple(args, "OO:set", &name, &value))
		return NULL;
	int i = opt_index(name);
	if (i < 0 || opt_apply(eo, i, value) < 0)
		return NULL;
	Py_RETURN_NONE;
}

static PyObject *engine_set_secret(engine *eo, PyObject *arg)
{
	if (!live(eo, "Engine.set_secret"))
		return NULL;
	Py_buffer v;
	if (twpy_buffer(arg, &v, false) < 0)
		return NULL;
	int st = tw_engine_set_secret(eo->e, v.buf, (size_t)v.len);
	PyBuffer_Release(&v);
	if (st == TW_EINVAL)
		return PyErr_Format(PyExc_ValueError,
		    "a secret is 0..1024 bytes (0 removes it), set before "
		    "listen/connect");
	if (st != TW_OK)
		return twpy_raise(st, "Engine.set_secret");
	Py_RETURN_NONE;
}

static PyObject *engine_set_tls(engine *eo, PyObject *args)
{
	PyObject *p[3];
	if (!live(eo, "Engine.set_tls") || twpy_tls_paths(args, p) < 0)
		return NULL;
	int st = tw_engine_set_tls(eo->e, PyBytes_AS_STRING(p[0]),
	    PyBytes_AS_STRING(p[1]), PyBytes_AS_STRING(p[2]));
	twpy_tls_paths_release(p);
	if (st != TW_OK)
		return twpy_raise(st, "Engine.set_tls");
	Py_RETURN_NONE;
}

static PyObject *engine_listen(engine *eo, PyObject *args)
{
	const char *addr;
	if (!PyArg_ParseTuple(args, "s:listen", &addr))
		return NULL;
	if (enter(eo, "Engine.listen") < 0)
		return NULL;
	int st;
	Py_BEGIN_ALLOW_THREADS
	st = tw_engine_listen(eo->e, addr);
	Py_END_ALLOW_THREADS
	leave(eo);
	if (st == TW_EINVAL)
		return PyErr_Format(PyExc_ValueError,
		    "listen(%R): a malformed address (tcp://HOST:PORT or "
		    "mem://NAME), a mem:// name taken, or listening already",
		    PyTuple_GET_ITEM(args, 0));
	if (st != TW_OK)
		return twpy_raise(st, "Engine.listen");
	Py_RETURN_NONE;
}

static PyObject *engine_info(engine *eo, PyObject *unused)
{
	if (!live(eo, "Engine.info"))
		return NULL;
	tw_buf b = { 0 };
	int st = tw_engine_info(eo->e, &b);
	if (st == TW_EINVAL)
		return PyErr_Format(PyExc_ValueError,
		    "Engine.info: the engine is not listening");
	if (st != TW_OK)
		return twpy_raise(st, "Engine.info");
	return twpy_bytes_take(&b);
}

static PyObject *engine_connect(engine *eo, PyObject *arg)
{
	Py_buffer v;
	if (!live(eo, "Engine.connect") || twpy_buffer(arg, &v, false) < 0)
		return NULL;
	if (enter(eo, "Engine.connect") < 0) {
		PyBuffer_Release(&v);
		return NULL;
	}
	tw_peer peer = 0;
	int st;
	// Bounded by connect_timeout_ms; cannot be cut into slices.
	Py_BEGIN_ALLOW_THREADS
	st = tw_engine_connect(eo->e, v.buf, (size_t)v.len, &peer);
	Py_END_ALLOW_THREADS
	leave(eo);
	PyBuffer_Release(&v);
	// A Ctrl-C that came while it waited is the news, not its timeout.
	if (st != TW_OK && PyErr_CheckSignals() < 0)
		return NULL;
	if (st != TW_OK)
		return twpy_raise(st, "Engine.connect");
	return PyLong_FromUnsignedLong(peer);
}

static PyObject *engine_connect_to(engine *eo, PyObject *args)
{
	const char *addr, *name;
	if (!PyArg_ParseTuple(args, "ss:connect_to", &addr, &name))
		return NULL;
	if (enter(eo, "Engine.connect_to") < 0)
		return NULL;
	tw_peer peer = 0;
	int st;
	Py_BEGIN_ALLOW_THREADS
	st = tw_engine_connect_to(eo->e, addr, name, &peer);
	Py_END_ALLOW_THREADS
	leave(eo);
	// A Ctrl-C that came while it waited is the news, not its timeout.
	if (st != TW_OK && PyErr_CheckSignals() < 0)
		return NULL;
	if (st != TW_OK)
		return twpy_raise(st, "Engine.connect_to");
	return PyLong_FromUnsignedLong(peer);
}

struct accept_arg {
	engine *eo;
	const char *name;
	tw_peer peer;
};

static int accept_slice(void *arg, int64_t slice_ms)
{
	struct accept_arg *a = arg;
	if (stopping(a->eo, NULL))
		return TW_ECLOSED;
	return tw_engine_accept(
	    a->eo->e, a->name, cap_slice(slice_ms), &a->peer);
}

static PyObject *engine_accept(engine *eo, PyObject *args, PyObject *kw)
{
	static char *names[] = { "name", "timeout", NULL };
	struct accept_arg a = { eo, NULL, 0 };
	PyObject *to = Py_None;
	int64_t ms;
	if (!PyArg_ParseTupleAndKeywords(
	        args, kw, "s|O:accept", names, &a.name, &to)
	    || twpy_timeout(to, -1, &ms) < 0)
		return NULL;
	if (enter(eo, "Engine.accept") < 0)
		return NULL;
	int st;
	int r = twpy_block(accept_slice, &a, ms, &st);
	leave(eo);
	if (r < 0)
		return NULL;
	if (st == TW_EINVAL)
		return PyErr_Format(PyExc_ValueError,
		    "accept(%R): not listening, or an invalid engine name",
		    PyTuple_GET_ITEM(args, 0));
	if (st != TW_OK)
		return twpy_raise(st, "Engine.accept");
	return PyLong_FromUnsignedLong(a.peer);
}

static PyObject *engine_peer_name(engine *eo, PyObject *args)
{
	tw_peer peer;
	if (!PyArg_ParseTuple(args, "O&:peer_name", conv_peer, &peer)
	    || !live(eo, "Engine.peer_name"))
		return NULL;
	const char *s = tw_engine_peer_name(eo->e, peer);
	if (s == NULL)
		return PyErr_Format(
		    PyExc_ValueError, "unknown peer %u", (unsigned)peer);
	return PyUnicode_FromString(s);
}

static PyObject *engine_disconnect(engine *eo, PyObject *args)
{
	tw_peer peer;
	if (!PyArg_ParseTuple(args, "O&:disconnect", conv_peer, &peer)
	    || enter(eo, "Engine.disconnect") < 0)
		return NULL;
	int st;
	Py_BEGIN_ALLOW_THREADS
	st = tw_engine_disconnect(eo->e, peer);
	Py_END_ALLOW_THREADS
	leave(eo);
	if (st == TW_EINVAL)
		return PyErr_Format(
		    PyExc_ValueError, "unknown peer %u", (unsigned)peer);
	if (st != TW_OK)
		return twpy_raise(st, "Engine.disconnect");
	Py_RETURN_NONE;
}

static PyObject *engine_stats(engine *eo, PyObject *args)
{
	tw_peer peer;
	if (!PyArg_ParseTuple(args, "O&:stats", conv_peer, &peer)
	    || !live(eo, "Engine.stats"))
		return NULL;
	tw_xfer_stats s;
	int st = tw_engine_stats(eo->e, peer, &s);
	if (st == TW_EINVAL)
		return PyErr_Format(
		    PyExc_ValueError, "unknown peer %u", (unsigned)peer);
	if (st != TW_OK)
		return twpy_raise(st, "Engine.stats");
	return Py_BuildValue("{sKsKsKsK}", "xfers_done",
	    (unsigned long long)s.xfers_done, "xfers_failed",
	    (unsigned long long)s.xfers_failed, "bytes_sent",
	    (unsigned long long)s.bytes_sent, "bytes_recv",
	    (unsigned long long)s.bytes_recv);
}

static PyObject *engine_register(engine *eo, PyObject *args, PyObject *kw)
{
	static char *names[] = { "buffer", "access", NULL };
	PyObject *obj, *acc = Py_None;
	if (!PyArg_ParseTupleAndKeywords(
	        args, kw, "O|O:register", names, &obj, &acc)
	    || !live(eo, "Engine.register"))
		return NULL;
	long access = -1;
	if (acc != Py_None) {
		access = PyLong_AsLong(acc);
		if (access == -1 && PyErr_Occurred())
			return NULL;
		if (access < 0
		    || (access & ~(long)(TW_ACCESS_READ | TW_ACCESS_WRITE))) {
			PyErr_SetString(PyExc_ValueError,
			    "access is a mix of ACCESS_READ and ACCESS_WRITE");
			return NULL;
		}
	}
	mem *m = PyObject_GC_New(mem, &mem_type);
	if (m == NULL)
		return NULL;
	m->eo = (engine *)Py_NewRef((PyObject *)eo);
	m->id = 0;
	m->has_view = m->busy = m->writable = false;
	m->access = 0;
	m->len = 0;
	m->prev = m->next = NULL;
	PyObject_GC_Track(m);
	// A read-only request: the exporter still says whether the buffer
	// is writable.
	if (twpy_buffer(obj, &m->view, false) < 0) {
		Py_DECREF(m);
		return NULL;
	}
	m->writable = !m->view.readonly;
	if (access < 0)
		access = m->writable ? TW_ACCESS_READ | TW_ACCESS_WRITE
		                     : TW_ACCESS_READ;
	if ((access & TW_ACCESS_WRITE) && !m->writable) {
		PyBuffer_Release(&m->view);
		Py_DECREF(m);
		return PyErr_Format(PyExc_TypeError,
		    "ACCESS_WRITE needs a writable buffer, and %.80s is "
		    "read-only",
		    Py_TYPE(obj)->tp_name);
	}
	if (m->view.len == 0) {
		PyBuffer_Release(&m->view);
		Py_DECREF(m);
		return PyErr_Format(
		    PyExc_ValueError, "cannot register an empty buffer");
	}
	int st = tw_mem_register(eo->e, m->view.buf, (size_t)m->view.len,
	    TW_MEM_HOST, (unsigned)access, &m->id);
	if (st != TW_OK) {
		PyBuffer_Release(&m->view);
		Py_DECREF(m);
		return twpy_raise(st, "Engine.register");
	}
	m->access = (unsigned)access;
	m->len = m->view.len;
	m->has_view = true;
	m->next = eo->mems;
	if (eo->mems != NULL)
		eo->mems->prev = m;
	eo->mems = m;
	return (PyObject *)m;
}

static PyObject *engine_deregister(engine *eo, PyObject *arg)
{
	if (!PyObject_TypeCheck(arg, &mem_type) || ((mem *)arg)->eo != eo) {
		PyErr_SetString(PyExc_TypeError,
		    "expected a tagwire.Memory of this engine");
		return NULL;
	}
	return mem_deregister((mem *)arg, NULL);
}

static PyObject *engine_unpack(engine *eo, PyObject *args)
{
	tw_peer peer;
	PyObject *d;
	if (!PyArg_ParseTuple(args, "O&O:unpack", conv_peer, &peer, &d)
	    || !live(eo, "Engine.unpack"))
		return NULL;
	Py_buffer v;
	if (twpy_buffer(d, &v, false) < 0)
		return NULL;
	uint64_t rid = 0;
	int st = tw_mem_unpack(eo->e, peer, v.buf, (size_t)v.len, &rid);
	PyBuffer_Release(&v);
	if (st == TW_EINVAL)
		return PyErr_Format(PyExc_ValueError,
		    "unpack: unknown peer %u, or a description not packed "
		    "by its engine",
		    (unsigned)peer);
	if (st != TW_OK)
		return twpy_raise(st, "Engine.unpack");
	return PyLong_FromUnsignedLongLong(rid);
}

static PyObject *engine_transfer(engine *eo, PyObject *args, PyObject *kw)
{
	static char *names[] = { "peer", "timeout", NULL };
	tw_peer peer;
	PyObject *to = Py_None;
	int64_t ms;
	if (!PyArg_ParseTupleAndKeywords(
	        args, kw, "O&|O:transfer", names, conv_peer, &peer, &to)
	    || twpy_timeout(to, -1, &ms) < 0 || !live(eo, "Engine.transfer"))
		return NULL;
	xfer *t = PyObject_GC_New(xfer, &xfer_type);
	if (t == NULL)
		return NULL;
	t->eo = (engine *)Py_NewRef((PyObject *)eo);
	t->x = NULL;
	t->peer = peer;
	t->active = 0;
	t->closing = false;
	t->mems = PySet_New(NULL);
	t->key = t->ptr = NULL;
	PyObject_GC_Track(t);
	if (t->mems == NULL) {
		Py_DECREF(t);
		return NULL;
	}
	tw_xfer *x = NULL;
	int st = tw_xfer_create(eo->e, peer, ms, &x);
	if (st == TW_EINVAL) {
		Py_DECREF(t);
		return PyErr_Format(
		    PyExc_ValueError, "unknown peer %u", (unsigned)peer);
	}
	if (st != TW_OK) {
		Py_DECREF(t);
		return twpy_raise(st, "Engine.transfer");
	}
	t->key = PyLong_FromVoidPtr(x);
	t->ptr = PyLong_FromVoidPtr(t);
	if (t->key == NULL || t->ptr == NULL
	    || PyDict_SetItem(eo->xfers, t->key, t->ptr) < 0) {
		tw_xfer_free(x);
		Py_DECREF(t);
		return NULL;
	}
	t->x = x;
	return (PyObject *)t;
}

static PyObject *engine_fileno(engine *eo, PyObject *unused)
{
	if (!live(eo, "Engine.fileno"))
		return NULL;
	int fd = tw_engine_fd(eo->e);
	if (fd < 0)
		return PyErr_Format(
		    PyExc_OSError, "the engine has no descriptor (logged)");
	return PyLong_FromLong(fd);
}

static PyObject *engine_reap(engine *eo, PyObject *unused)
{
	if (!live(eo, "Engine.reap"))
		return NULL;
	PyObject *list = PyList_New(0);
	if (list == NULL)
		return NULL;
	// The GIL stays held from tw_engine_reap to the look-up: a Transfer
	// that is being freed has left eo->xfers already, and no other
	// can take its address meanwhile.
	tw_xfer *done[64];
	size_t n;
	do {
		n = 0;
		int st = tw_engine_reap(
		    eo->e, done, sizeof(done) / sizeof(done[0]), &n);
		if (st != TW_OK) {
			Py_DECREF(list);
			return twpy_raise(st, "Engine.reap");
		}
		for (size_t i = 0; i < n; i++) {
			PyObject *key = PyLong_FromVoidPtr(done[i]);
			if (key == NULL) {
				Py_DECREF(list);
				return NULL;
			}
			PyObject *v = PyDict_GetItemWithError(eo->xfers, key);
			Py_DECREF(key);
			if (v == NULL && PyErr_Occurred()) {
				Py_DECREF(list);
				return NULL;
			}
			xfer *t = v != NULL ? PyLong_AsVoidPtr(v) : NULL;
			if (t == NULL || t->closing || t->x != done[i])
				continue;
			if (PyList_Append(list, (PyObject *)t) < 0) {
				Py_DECREF(list);
				return NULL;
			}
		}
	} while (n == sizeof(done) / sizeof(done[0]));
	return list;
}

static PyObject *engine_notify(engine *eo, PyObject *args)
{
	tw_peer peer;
	PyObject *d;
	if (!PyArg_ParseTuple(args, "O&O:notify", conv_peer, &peer, &d)
	    || !live(eo, "Engine.notify"))
		return NULL;
	Py_buffer v;
	if (twpy_buffer(d, &v, false) < 0)
		return NULL;
	int st = tw_engine_notify(eo->e, peer, v.buf, (size_t)v.len);
	PyBuffer_Release(&v);
	if (st == TW_EINVAL)
		return PyErr_Format(
		    PyExc_ValueError, "unknown peer %u", (unsigned)peer);
	if (st != TW_OK)
		return twpy_raise(st, "Engine.notify");
	Py_RETURN_NONE;
}

struct note_arg {
	engine *eo;
	tw_peer peer;
	tw_buf msg;
};

static int note_slice(void *arg, int64_t slice_ms)
{
	struct note_arg *a = arg;
	if (stopping(a->eo, NULL))
		return TW_ECLOSED;
	return tw_notify_recv(
	    a->eo->e, &a->peer, &a->msg, cap_slice(slice_ms));
}

static PyObject *engine_recv_notify(engine *eo, PyObject *args, PyObject *kw)
{
	static char *names[] = { "timeout", NULL };
	PyObject *to = Py_None;
	int64_t ms;
	if (!PyArg_ParseTupleAndKeywords(
	        args, kw, "|O:recv_notify", names, &to)
	    || twpy_timeout(to, -1, &ms) < 0
	    || enter(eo, "Engine.recv_notify") < 0)
		return NULL;
	struct note_arg a = { eo, 0, { 0 } };
	int st;
	int r = twpy_block(note_slice, &a, ms, &st);
	leave(eo);
	if (r < 0) {
		tw_buf_free(&a.msg);
		return NULL;
	}
	if (st != TW_OK)
		return twpy_raise(st, "Engine.recv_notify");
	PyObject *b = twpy_bytes_take(&a.msg);
	if (b == NULL)
		return NULL;
	return Py_BuildValue("(kN)", (unsigned long)a.peer, b);
}

static PyObject *engine_get_name(engine *eo, void *closure)
{
	return PyUnicode_FromString(eo->name);
}

static PyObject *engine_get_closed(engine *eo, void *closure)
{
	return PyBool_FromLong(eo->state != E_OPEN);
}

static PyObject *engine_repr(engine *eo)
{
	return PyUnicode_FromFormat("<tagwire.Engine %s%s>", eo->name,
	    eo->state == E_OPEN ? "" : " (closed)");
}

static PyMethodDef engine_methods[] = {
	{ "set", (PyCFunction)engine_set, METH_VARARGS,
	    "set(option, value): an option by name, before listen/connect." },
	{ "set_secret", (PyCFunction)engine_set_secret, METH_O,
	    "set_secret(key): the secret (1..1024 bytes; empty removes it) "
	    "that connecting engines must both hold." },
	{ "set_tls", (PyCFunction)engine_set_tls, METH_VARARGS,
	    "set_tls(cert_file, key_file, ca_file): TLS 1.3 on tcp://." },
	{ "listen", (PyCFunction)engine_listen, METH_VARARGS,
	    "listen(addr): tcp://HOST:PORT (port 0: any) or mem://NAME." },
	{ "info", (PyCFunction)engine_info, METH_NOARGS,
	    "info() -> bytes: what a peer passes to connect()." },
	{ "connect", (PyCFunction)engine_connect, METH_O,
	    "connect(info) -> peer: connects to the engine info() described "
	    "(blocks up to connect_timeout_ms)." },
	{ "connect_to", (PyCFunction)engine_connect_to, METH_VARARGS,
	    "connect_to(addr, peer_name) -> peer." },
	{ "accept", (PyCFunction)(void (*)(void))engine_accept,
	    METH_VARARGS | METH_KEYWORDS,
	    "accept(name, timeout=None) -> peer: the peer that connected as "
	    "engine `name` (None: wait forever)." },
	{ "peer_name", (PyCFunction)engine_peer_name, METH_VARARGS,
	    "peer_name(peer) -> str." },
	{ "disconnect", (PyCFunction)engine_disconnect, METH_VARARGS,
	    "disconnect(peer): its transfers fail." },
	{ "stats", (PyCFunction)engine_stats, METH_VARARGS,
	    "stats(peer) -> dict: xfers_done, xfers_failed, bytes_sent, "
	    "bytes_recv." },
	{ "register", (PyCFunction)(void (*)(void))engine_register,
	    METH_VARARGS | METH_KEYWORDS,
	    "register(buffer, access=None) -> Memory: access is what peers "
	    "may do (ACCESS_READ | ACCESS_WRITE; None: both for a writable "
	    "buffer, ACCESS_READ for a read-only one).  The buffer stays "
	    "exported until deregistered." },
	{ "deregister", (PyCFunction)engine_deregister, METH_O,
	    "deregister(mem): as mem.deregister()." },
	{ "unpack", (PyCFunction)engine_unpack, METH_VARARGS,
	    "unpack(peer, desc) -> int: the remote id, for post_write and "
	    "post_read to that peer, of a Memory.pack() of the peer." },
	{ "transfer", (PyCFunction)(void (*)(void))engine_transfer,
	    METH_VARARGS | METH_KEYWORDS,
	    "transfer(peer, timeout=None) -> Transfer: fails with "
	    "TimeoutError once timeout seconds passed (None: no deadline)." },
	{ "fileno", (PyCFunction)engine_fileno, METH_NOARGS,
	    "fileno() -> int: readable while reap() has transfers or a "
	    "notification is queued." },
	{ "reap", (PyCFunction)engine_reap, METH_NOARGS,
	    "reap() -> list[Transfer]: the finished transfers (done or "
	    "failed), each once.  Never blocks." },
	{ "notify", (PyCFunction)engine_notify, METH_VARARGS,
	    "notify(peer, data): a notification alone." },
	{ "recv_notify", (PyCFunction)(void (*)(void))engine_recv_notify,
	    METH_VARARGS | METH_KEYWORDS,
	    "recv_notify(timeout=None) -> (peer, bytes): the oldest "
	    "notification; TimeoutError if none came." },
	{ "close", (PyCFunction)engine_close, METH_NOARGS,
	    "close(): frees the transfers, the engine, then releases the "
	    "registered buffers.  Waits for calls of other threads to end "
	    "(a connect may take connect_timeout_ms).  Idempotent." },
	{ "__enter__", (PyCFunction)engine_enter_ctx, METH_NOARGS, NULL },
	{ "__exit__", (PyCFunction)engine_exit_ctx, METH_VARARGS, NULL },
	{ 0 },
};

#define OPT(i, name, doc)                                                     \
	{                                                                     \
		name, (getter)opt_get, (setter)opt_set, doc,                  \
		    (void *)(intptr_t)(i)                                     \
	}

static PyGetSetDef engine_getset[] = {
	OPT(O_STRIPES, "stripes", "connections per peer (default 1, 1..64)"),
	OPT(O_CHUNK_SIZE, "chunk_size",
	    "bytes per chunk (default 1 MiB, 4 KiB..64 MiB)"),
	OPT(O_WINDOW, "window",
	    "chunks waiting for their reply, per connection (default 16, "
	    "1..1024)"),
	OPT(O_CONNECT_TIMEOUT_MS, "connect_timeout_ms",
	    "how long connect waits (default 30000)"),
	OPT(O_HEARTBEAT_MS, "heartbeat_ms",
	    "liveness checks (default 1000; 0 off)"),
	OPT(O_MAX_MSG_SIZE, "max_msg_size",
	    "largest notification accepted (default 1 MiB, 0..1 GiB)"),
	OPT(O_SHM_LOCAL, "shm_local", "accepted (0 or 1)"),
	{ "name", (getter)engine_get_name, NULL, "the engine's name", NULL },
	{ "closed", (getter)engine_get_closed, NULL, "True once closed",
	    NULL },
	{ 0 },
};

static PyTypeObject engine_type = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tagwire.Engine",
	.tp_basicsize = sizeof(engine),
	.tp_dealloc = (destructor)engine_dealloc,
	.tp_repr = (reprfunc)engine_repr,
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "Engine(name, **options): a transfer engine.  Options "
	          "(stripes, chunk_size, window, connect_timeout_ms, "
	          "heartbeat_ms, max_msg_size, shm_local) are attributes, "
	          "set before listen/connect.  A context manager that "
	          "closes it.",
	.tp_methods = engine_methods,
	.tp_getset = engine_getset,
	.tp_new = engine_new,
};

int twpy_engine_init(PyObject *m)
{
	if (PyType_Ready(&engine_type) < 0 || PyType_Ready(&mem_type) < 0
	    || PyType_Ready(&xfer_type) < 0)
		return -1;
	if (PyModule_AddObjectRef(m, "Engine", (PyObject *)&engine_type) < 0
	    || PyModule_AddObjectRef(m, "Memory", (PyObject *)&mem_type) < 0
	    || PyModule_AddObjectRef(m, "Transfer", (PyObject *)&xfer_type) < 0
	    || PyModule_AddIntConstant(m, "ACCESS_READ", TW_ACCESS_READ) < 0
	    || PyModule_AddIntConstant(m, "ACCESS_WRITE", TW_ACCESS_WRITE) < 0)
		return -1;
	return 0;
}
