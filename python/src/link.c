// tagwire.Link: one party's end of a link, and create / create_with_channels.
//
// Calls on a Link may come from several threads at once.  Each holds the
// link for its duration (enter/leave, counted under the GIL), so that
// close() -- which aborts the link when calls are still in flight on
// other threads -- frees it only once they have all left.

#include "twpy.h"

#include <time.h>

typedef struct link_obj {
	PyObject_HEAD tw_link *l; // NULL once closed
	struct link_obj *parent; // strong reference, NULL for a root link
	Py_ssize_t busy; // calls in flight
	Py_ssize_t children; // open children
	int64_t timeout_ms; // the receive timeout (-1 forever)
	bool closing;
	bool close_when_free; // a finalized parent waiting for its children
	PyObject *id;
	PyObject *weakrefs;
} link_obj;

static PyTypeObject link_type;

tw_link *twpy_link_enter(PyObject *obj)
{
	link_obj *self = (link_obj *)obj;
	if (self->l == NULL || self->closing) {
		PyErr_SetString(twpy_ClosedError, "the link is closed");
		return NULL;
	}
	self->busy++;
	twpy_chan_clear();
	return self->l;
}

void twpy_link_leave(PyObject *obj)
{
	((link_obj *)obj)->busy--;
}

int64_t twpy_link_timeout(PyObject *obj)
{
	return ((link_obj *)obj)->timeout_ms;
}

static PyObject *link_wrap(tw_link *l, link_obj *parent, int64_t timeout_ms)
{
	link_obj *self = PyObject_GC_New(link_obj, &link_type);
	if (self == NULL)
		return NULL;
	self->l = l;
	self->parent = parent;
	Py_XINCREF(parent);
	if (parent != NULL)
		parent->children++;
	self->busy = 0;
	self->children = 0;
	self->timeout_ms = timeout_ms;
	self->closing = false;
	self->close_when_free = false;
	self->weakrefs = NULL;
	self->id = PyUnicode_FromString(tw_link_id(l));
	PyObject_GC_Track(self);
	if (self->id == NULL) {
		Py_DECREF(self);
		return NULL;
	}
	return (PyObject *)self;
}

// Frees the C link (the GIL held, no call in flight, no child open).
static int free_link(link_obj *self)
{
	tw_link *l = self->l;
	self->l = NULL;
	int st;
	Py_BEGIN_ALLOW_THREADS
	st = tw_link_close(l);
	Py_END_ALLOW_THREADS
	link_obj *parent = self->parent;
	self->parent = NULL;
	if (parent != NULL) {
		parent->children--;
		if (parent->children == 0 && parent->close_when_free
		    && parent->l != NULL)
			free_link(parent);
		Py_DECREF(parent);
	}
	return st;
}

// Waits, the GIL released, until the calls of other threads have left.
static void wait_idle(link_obj *self)
{
	while (self->busy > 0) {
		Py_BEGIN_ALLOW_THREADS
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
		Py_END_ALLOW_THREADS
	}
}

static PyObject *link_close(link_obj *self, PyObject *unused)
{
	if (self->l == NULL)
		Py_RETURN_NONE;
	if (self->closing)
		return PyErr_Format(twpy_ClosedError,
		    "link %U is being closed by another thread", self->id);
	if (self->children > 0)
		return PyErr_Format(PyExc_ValueError,
		    "link %U has %zd open child link(s): close them first",
		    self->id, self->children);
	self->closing = true;
	if (self->busy > 0) {
		// Calls blocked on other threads would keep the link forever.
		tw_link_abort(self->l);
		wait_idle(self);
	}
	twpy_chan_clear();
	int st = free_link(self);
	if (st != TW_OK && st != TW_ECLOSED)
		return twpy_fail(st, "close");
	Py_RETURN_NONE;
}

static PyObject *link_abort(link_obj *self, PyObject *unused)
{
	if (self->l != NULL) {
		tw_link *l = self->l;
		Py_BEGIN_ALLOW_THREADS
		tw_link_abort(l);
		Py_END_ALLOW_THREADS
	}
	Py_RETURN_NONE;
}

// A link nobody closed: aborted (no traffic, no collective work), then
// freed, with a ResourceWarning.
static void link_finalize(link_obj *self)
{
	if (self->l == NULL)
		return;
	PyObject *exc = twpy_get_raised();
	if (PyErr_WarnFormat(PyExc_ResourceWarning, 1,
	        "unclosed tagwire link %U (rank %zu): aborted", self->id,
	        tw_link_rank(self->l))
	    < 0)
		PyErr_WriteUnraisable((PyObject *)self);
	tw_link *l = self->l;
	Py_BEGIN_ALLOW_THREADS
	tw_link_abort(l);
	Py_END_ALLOW_THREADS
	if (self->children > 0)
		self->close_when_free = true; // the last child frees it
	else
		free_link(self);
	if (exc != NULL)
		twpy_set_raised(exc);
}

static int link_traverse(link_obj *self, visitproc visit, void *arg)
{
	Py_VISIT(self->parent);
	return 0;
}

static int link_clear(link_obj *self)
{
	// A parent stays referenced while the C child exists.
	if (self->l == NULL)
		Py_CLEAR(self->parent);
	return 0;
}

static void link_dealloc(link_obj *self)
{
	if (PyObject_CallFinalizerFromDealloc((PyObject *)self) < 0)
		return;
	PyObject_GC_UnTrack(self);
	if (self->weakrefs != NULL)
		PyObject_ClearWeakRefs((PyObject *)self);
	if (self->l != NULL) {
		// A finalized parent with open children is kept alive by
		// them; here none is left.
		free_link(self);
	}
	Py_CLEAR(self->parent);
	Py_CLEAR(self->id);
	PyObject_GC_Del(self);
}

// ---------------------------------------------------------------------------
// Arguments

static int rank_arg(link_obj *self, PyObject *obj, size_t *out)
{
	Py_ssize_t r = PyNumber_AsSsize_t(obj, PyExc_OverflowError);
	if (r == -1 && PyErr_Occurred())
		return -1;
	if (r < 0) {
		PyErr_Format(PyExc_ValueError, "rank %zd is negative", r);
		return -1;
	}
	*out = (size_t)r;
	return 0;
}

// Raises for a status of a call on this link, adding which one.
static PyObject *fail(link_obj *self, int st, const char *what)
{
	if (st == TW_EINVAL)
		return PyErr_Format(PyExc_ValueError,
		    "%s: invalid argument (a rank out of range or this "
		    "party's own, a tag over 255 bytes, or a closed link)",
		    what);
	return twpy_fail(st, what);
}

// ---------------------------------------------------------------------------
// Point to point

struct send_call {
	tw_link *l;
	size_t dst;
	const char *tag;
	const void *buf;
	size_t len;
	int flags;
};

// A slice of a send: on TW_ETIMEDOUT nothing was sent (tw_send_timed).
static int send_slice(void *arg, int64_t ms)
{
	struct send_call *c = arg;
	return tw_send_timed(
	    c->l, c->dst, c->tag, c->buf, c->len, c->flags, ms);
}

static PyObject *send_common(
    link_obj *self, PyObject *args, PyObject *kw, int flags, const char *what)
{
	static char *names[] = { "dst", "tag", "data", NULL };
	PyObject *dst_o, *tag_o, *data_o;
	if (!PyArg_ParseTupleAndKeywords(
	        args, kw, "OOO", names, &dst_o, &tag_o, &data_o))
		return NULL;
	struct send_call c = { .flags = flags };
	PyObject *keep;
	Py_buffer v;
	if (rank_arg(self, dst_o, &c.dst) < 0
	    || twpy_tag(tag_o, &c.tag, &keep) < 0)
		return NULL;
	if (twpy_buffer(data_o, &v, false) < 0) {
		Py_DECREF(keep);
		return NULL;
	}
	c.buf = v.buf;
	c.len = (size_t)v.len;
	c.l = twpy_link_enter((PyObject *)self);
	PyObject *r = NULL;
	if (c.l != NULL) {
		int st;
		// -1: a signal handler raised, and nothing was sent.
		if (twpy_block(send_slice, &c, self->timeout_ms, &st) == 0) {
			if (st != TW_OK)
				fail(self, st, what);
			else if (flags & TW_SEND_ASYNC)
				r = twpy_request_new((PyObject *)self);
			else
				r = Py_NewRef(Py_None);
		}
		twpy_link_leave((PyObject *)self);
	}
	PyBuffer_Release(&v);
	Py_DECREF(keep);
	return r;
}

static PyObject *link_send(link_obj *self, PyObject *args, PyObject *kw)
{
	return send_common(self, args, kw, 0, "send");
}

static PyObject *link_send_async(link_obj *self, PyObject *args, PyObject *kw)
{
	return send_common(self, args, kw, TW_SEND_ASYNC, "send_async");
}

static PyObject *link_send_throttled(
    link_obj *self, PyObject *args, PyObject *kw)
{
	return send_common(self, args, kw, TW_SEND_ASYNC | TW_SEND_THROTTLED,
	    "send_async_throttled");
}

struct recv_call {
	tw_link *l;
	size_t src;
	const char *tag;
	tw_buf b;
	void *buf;
	size_t cap, len;
};

static int recv_slice(void *arg, int64_t ms)
{
	struct recv_call *c = arg;
	return tw_recv_timed(c->l, c->src, c->tag, ms, &c->b);
}

static int recv_into_slice(void *arg, int64_t ms)
{
	struct recv_call *c = arg;
	return tw_recv_into_timed(
	    c->l, c->src, c->tag, c->buf, c->cap, ms, &c->len);
}

static PyObject *link_recv(link_obj *self, PyObject *args, PyObject *kw)
{
	static char *names[] = { "src", "tag", "timeout", "copy", NULL };
	PyObject *src_o, *tag_o, *timeout_o = Py_None;
	int copy = 1;
	if (!PyArg_ParseTupleAndKeywords(
	        args, kw, "OO|O$p", names, &src_o, &tag_o, &timeout_o, &copy))
		return NULL;
	struct recv_call c = { 0 };
	PyObject *keep;
	int64_t ms;
	if (rank_arg(self, src_o, &c.src) < 0
	    || twpy_timeout(timeout_o, self->timeout_ms, &ms) < 0
	    || twpy_tag(tag_o, &c.tag, &keep) < 0)
		return NULL;
	c.l = twpy_link_enter((PyObject *)self);
	PyObject *r = NULL;
	if (c.l != NULL) {
		int st;
		if (twpy_block(recv_slice, &c, ms, &st) == 0) {
			if (st != TW_OK)
				fail(self, st, "recv");
			else if (copy)
				r = twpy_bytes_take(&c.b);
			else
				r = twpy_message_new(&c.b);
		}
		twpy_link_leave((PyObject *)self);
	}
	Py_DECREF(keep);
	return r;
}

static PyObject *link_recv_into(link_obj *self, PyObject *args, PyObject *kw)
{
	static char *names[] = { "buf", "src", "tag", "timeout", NULL };
	PyObject *buf_o, *src_o, *tag_o, *timeout_o = Py_None;
	if (!PyArg_ParseTupleAndKeywords(
	        args, kw, "OOO|O", names, &buf_o, &src_o, &tag_o, &timeout_o))
		return NULL;
	struct recv_call c = { 0 };
	PyObject *keep;
	int64_t ms;
	Py_buffer v;
	if (rank_arg(self, src_o, &c.src) < 0
	    || twpy_timeout(timeout_o, self->timeout_ms, &ms) < 0)
		return NULL;
	if (twpy_buffer(buf_o, &v, true) < 0)
		return NULL;
	if (twpy_tag(tag_o, &c.tag, &keep) < 0) {
		PyBuffer_Release(&v);
		return NULL;
	}
	c.buf = v.buf;
	c.cap = (size_t)v.len;
	c.l = twpy_link_enter((PyObject *)self);
	PyObject *r = NULL;
	if (c.l != NULL) {
		int st;
		if (twpy_block(recv_into_slice, &c, ms, &st) == 0) {
			if (st == TW_ETRUNC) {
				fail(self, st, "recv_into");
				PyObject *exc = twpy_get_raised();
				PyObject *size = PyLong_FromSize_t(c.len);
				if (size != NULL)
					PyObject_SetAttrString(
					    exc, "size", size);
				Py_XDECREF(size);
				twpy_set_raised(exc);
			} else if (st != TW_OK) {
				fail(self, st, "recv_into");
			} else {
				r = PyLong_FromSize_t(c.len);
			}
		}
		twpy_link_leave((PyObject *)self);
	}
	PyBuffer_Release(&v);
	Py_DECREF(keep);
	return r;
}

static PyObject *link_probe(link_obj *self, PyObject *args, PyObject *kw)
{
	static char *names[] = { "src", "tag", NULL };
	PyObject *src_o, *tag_o;
	if (!PyArg_ParseTupleAndKeywords(
	        args, kw, "OO", names, &src_o, &tag_o))
		return NULL;
	size_t src;
	const char *tag;
	PyObject *keep;
	if (rank_arg(self, src_o, &src) < 0
	    || twpy_tag(tag_o, &tag, &keep) < 0)
		return NULL;
	tw_link *l = twpy_link_enter((PyObject *)self);
	PyObject *r = NULL;
	if (l != NULL) {
		size_t len = 0;
		int st = tw_probe(l, src, tag, &len);
		if (st == TW_OK)
			r = PyLong_FromSize_t(len);
		else if (st == TW_EAGAIN)
			r = Py_NewRef(Py_None);
		else
			fail(self, st, "probe");
		twpy_link_leave((PyObject *)self);
	}
	Py_DECREF(keep);
	return r;
}

static int pending_slice(void *arg, int64_t ms)
{
	return tw_link_wait_pending_timed(arg, ms);
}

// Waits for the link's sends to be delivered (Link.wait_pending and
// Request.wait).  0, or -1 with an exception.
int twpy_link_wait(PyObject *obj, PyObject *timeout_o)
{
	link_obj *self = (link_obj *)obj;
	int64_t ms;
	if (twpy_timeout(timeout_o, self->timeout_ms, &ms) < 0)
		return -1;
	tw_link *l = twpy_link_enter(obj);
	if (l == NULL)
		return -1;
	int st, rv = -1;
	if (twpy_block(pending_slice, l, ms, &st) == 0) {
		if (st == TW_OK)
			rv = 0;
		else
			fail(self, st, "wait_pending");
	}
	twpy_link_leave(obj);
	return rv;
}

static PyObject *link_wait_pending(
    link_obj *self, PyObject *args, PyObject *kw)
{
	static char *names[] = { "timeout", NULL };
	PyObject *timeout_o = Py_None;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "|O", names, &timeout_o))
		return NULL;
	if (twpy_link_wait((PyObject *)self, timeout_o) < 0)
		return NULL;
	Py_RETURN_NONE;
}

// ---------------------------------------------------------------------------
// Collectives

enum { C_BARRIER, C_ALLGATHER, C_GATHER, C_BROADCAST, C_SCATTER };

// One collective, run by twpy_call (on a worker for the main thread, so
// that Ctrl-C reaches it: the link is then aborted, since a collective
// cannot stop half way and leave the link usable).
struct coll_call {
	int kind;
	tw_link *l;
	const char *tag;
	size_t root;
	const void *buf;
	size_t len;
	tw_buf *out; // allgather, gather; broadcast: in and out
	const tw_buf *in; // scatter
};

static int coll_run(void *arg)
{
	struct coll_call *c = arg;
	switch (c->kind) {
	case C_BARRIER:
		return tw_barrier(c->l, c->tag);
	case C_ALLGATHER:
		return tw_allgather(c->l, c->tag, c->buf, c->len, c->out);
	case C_GATHER:
		return tw_gather(
		    c->l, c->root, c->tag, c->buf, c->len, c->out);
	case C_BROADCAST:
		return tw_broadcast(c->l, c->root, c->tag, c->out);
	default:
		return tw_scatter(c->l, c->root, c->tag, c->in, c->out);
	}
}

static void abort_link(void *l)
{
	tw_link_abort(l);
}

// Runs a collective; 0 and *st, or -1 with a signal handler's exception
// (the link aborted, and nothing the call made left to free).
static int coll(struct coll_call *c, int *st)
{
	return twpy_call(coll_run, c, abort_link, c->l, st);
}

static PyObject *bufs_to_list(tw_buf *bufs, size_t n)
{
	PyObject *list = PyList_New((Py_ssize_t)n);
	for (size_t i = 0; i < n; i++) {
		PyObject *b = list ? twpy_bytes_take(&bufs[i]) : NULL;
		if (b == NULL) {
			for (size_t k = i; k < n; k++)
				tw_buf_free(&bufs[k]);
			Py_XDECREF(list);
			return NULL;
		}
		PyList_SET_ITEM(list, (Py_ssize_t)i, b);
	}
	return list;
}

static PyObject *link_barrier(link_obj *self, PyObject *args, PyObject *kw)
{
	static char *names[] = { "tag", NULL };
	PyObject *tag_o = NULL;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "|O", names, &tag_o))
		return NULL;
	const char *tag = "";
	PyObject *keep = NULL;
	if (tag_o != NULL && twpy_tag(tag_o, &tag, &keep) < 0)
		return NULL;
	tw_link *l = twpy_link_enter((PyObject *)self);
	PyObject *r = NULL;
	if (l != NULL) {
		int st;
		struct coll_call c = { .kind = C_BARRIER, .l = l, .tag = tag };
		if (coll(&c, &st) == 0)
			r = st == TW_OK ? Py_NewRef(Py_None)
			                : fail(self, st, "barrier");
		twpy_link_leave((PyObject *)self);
	}
	Py_XDECREF(keep);
	return r;
}

// all_gather and gather: every party's data to every party (all) or to
// root alone.  Owns nothing of its arguments.
static PyObject *gather_common(link_obj *self, PyObject *data_o, bool all,
    size_t root, PyObject *tag_o, const char *what)
{
	const char *tag = "";
	PyObject *keep = NULL;
	if (tag_o != NULL && twpy_tag(tag_o, &tag, &keep) < 0)
		return NULL;
	Py_buffer v;
	if (twpy_buffer(data_o, &v, false) < 0) {
		Py_XDECREF(keep);
		return NULL;
	}
	tw_link *l = twpy_link_enter((PyObject *)self);
	PyObject *r = NULL;
	if (l != NULL) {
		size_t n = tw_link_size(l);
		bool gets = all || tw_link_rank(l) == root;
		tw_buf *out = calloc(n, sizeof(*out));
		if (out == NULL) {
			PyErr_NoMemory();
		} else {
			int st;
			struct coll_call c
			    = { .kind = all ? C_ALLGATHER : C_GATHER,
				      .l = l,
				      .tag = tag,
				      .root = root,
				      .buf = v.buf,
				      .len = (size_t)v.len,
				      .out = gets ? out : NULL };
			if (coll(&c, &st) < 0) {
				for (size_t i = 0; i < n; i++)
					tw_buf_free(&out[i]);
			} else if (st != TW_OK)
				r = fail(self, st, what);
			else if (gets)
				r = bufs_to_list(out, n);
			else
				r = Py_NewRef(Py_None);
			free(out);
		}
		twpy_link_leave((PyObject *)self);
	}
	PyBuffer_Release(&v);
	Py_XDECREF(keep);
	return r;
}

static PyObject *link_all_gather(link_obj *self, PyObject *args, PyObject *kw)
{
	static char *names[] = { "data", "tag", NULL };
	PyObject *data_o, *tag_o = NULL;
	if (!PyArg_ParseTupleAndKeywords(
	        args, kw, "O|O", names, &data_o, &tag_o))
		return NULL;
	return gather_common(self, data_o, true, 0, tag_o, "all_gather");
}

static PyObject *link_gather(link_obj *self, PyObject *args, PyObject *kw)
{
	static char *names[] = { "data", "root", "tag", NULL };
	PyObject *data_o, *root_o, *tag_o = NULL;
	size_t root;
	if (!PyArg_ParseTupleAndKeywords(
	        args, kw, "OO|O", names, &data_o, &root_o, &tag_o)
	    || rank_arg(self, root_o, &root) < 0)
		return NULL;
	return gather_common(self, data_o, false, root, tag_o, "gather");
}

static PyObject *link_broadcast(link_obj *self, PyObject *args, PyObject *kw)
{
	static char *names[] = { "data", "root", "tag", NULL };
	PyObject *data_o, *root_o, *tag_o = NULL, *keep = NULL;
	if (!PyArg_ParseTupleAndKeywords(
	        args, kw, "OO|O", names, &data_o, &root_o, &tag_o))
		return NULL;
	const char *tag = "";
	size_t root;
	if (rank_arg(self, root_o, &root) < 0
	    || (tag_o != NULL && twpy_tag(tag_o, &tag, &keep) < 0))
		return NULL;
	tw_link *l = twpy_link_enter((PyObject *)self);
	if (l == NULL) {
		Py_XDECREF(keep);
		return NULL;
	}
	bool at_root = tw_link_rank(l) == root;
	Py_buffer v = { 0 };
	PyObject *r = NULL;
	if (at_root && twpy_buffer(data_o, &v, false) < 0)
		goto out;
	tw_buf b = { at_root ? v.buf : NULL, at_root ? (size_t)v.len : 0 };
	int st;
	struct coll_call c = { .kind = C_BROADCAST,
		.l = l,
		.tag = tag,
		.root = root,
		.out = &b };
	if (coll(&c, &st) < 0) {
		if (!at_root)
			tw_buf_free(&b);
	} else if (st != TW_OK)
		r = fail(self, st, "broadcast");
	else if (at_root)
		r = PyBytes_FromStringAndSize(v.buf, v.len);
	else
		r = twpy_bytes_take(&b);
	if (at_root)
		PyBuffer_Release(&v);
out:
	twpy_link_leave((PyObject *)self);
	Py_XDECREF(keep);
	return r;
}

static PyObject *link_scatter(link_obj *self, PyObject *args, PyObject *kw)
{
	static char *names[] = { "parts", "root", "tag", NULL };
	PyObject *parts_o, *root_o, *tag_o = NULL, *keep = NULL;
	if (!PyArg_ParseTupleAndKeywords(
	        args, kw, "OO|O", names, &parts_o, &root_o, &tag_o))
		return NULL;
	const char *tag = "";
	size_t root;
	if (rank_arg(self, root_o, &root) < 0
	    || (tag_o != NULL && twpy_tag(tag_o, &tag, &keep) < 0))
		return NULL;
	tw_link *l = twpy_link_enter((PyObject *)self);
	if (l == NULL) {
		Py_XDECREF(keep);
		return NULL;
	}
	size_t n = tw_link_size(l);
	bool at_root = tw_link_rank(l) == root;
	PyObject *r = NULL, *fast = NULL;
	Py_buffer *views = NULL;
	tw_buf *in = NULL;
	size_t got = 0;
	if (at_root) {
		fast = PySequence_Fast(
		    parts_o, "parts is a sequence of buffers");
		if (fast == NULL)
			goto out;
		if ((size_t)PySequence_Fast_GET_SIZE(fast) != n) {
			PyErr_Format(PyExc_ValueError,
			    "scatter: %zd parts for %zu parties",
			    PySequence_Fast_GET_SIZE(fast), n);
			goto out;
		}
		views = calloc(n, sizeof(*views));
		in = calloc(n, sizeof(*in));
		if (views == NULL || in == NULL) {
			PyErr_NoMemory();
			goto out;
		}
		for (; got < n; got++) {
			PyObject *item = PySequence_Fast_GET_ITEM(fast, got);
			if (twpy_buffer(item, &views[got], false) < 0)
				goto out;
			in[got].data = views[got].buf;
			in[got].len = (size_t)views[got].len;
		}
	}
	tw_buf b = { 0 };
	int st;
	struct coll_call c = { .kind = C_SCATTER,
		.l = l,
		.tag = tag,
		.root = root,
		.in = in,
		.out = &b };
	if (coll(&c, &st) < 0)
		tw_buf_free(&b);
	else
		r = st == TW_OK ? twpy_bytes_take(&b)
		                : fail(self, st, "scatter");
out:
	for (size_t i = 0; i < got; i++)
		PyBuffer_Release(&views[i]);
	free(views);
	free(in);
	Py_XDECREF(fast);
	twpy_link_leave((PyObject *)self);
	Py_XDECREF(keep);
	return r;
}

// ---------------------------------------------------------------------------
// Children, ranks, options

static PyObject *link_spawn(link_obj *self, PyObject *args, PyObject *kw)
{
	static char *names[] = { "suffix", NULL };
	const char *suffix;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "s", names, &suffix))
		return NULL;
	tw_link *l = twpy_link_enter((PyObject *)self);
	if (l == NULL)
		return NULL;
	tw_link *child = NULL;
	int st = tw_link_spawn(l, suffix, &child);
	twpy_link_leave((PyObject *)self);
	if (st == TW_EINVAL)
		return PyErr_Format(PyExc_ValueError,
		    "spawn(%R): a suffix is 1..64 bytes of [A-Za-z0-9._-], "
		    "unused by an open child",
		    PyTuple_GET_ITEM(args, 0));
	if (st != TW_OK)
		return fail(self, st, "spawn");
	PyObject *r = link_wrap(child, self, self->timeout_ms);
	if (r == NULL)
		tw_link_close(child);
	return r;
}

static PyObject *link_sub(link_obj *self, PyObject *args, PyObject *kw)
{
	static char *names[] = { "suffix", "ranks", NULL };
	const char *suffix;
	PyObject *ranks_o;
	if (!PyArg_ParseTupleAndKeywords(
	        args, kw, "sO", names, &suffix, &ranks_o))
		return NULL;
	PyObject *fast
	    = PySequence_Fast(ranks_o, "ranks is a sequence of ints");
	if (fast == NULL)
		return NULL;
	size_t n = (size_t)PySequence_Fast_GET_SIZE(fast);
	size_t *ranks = calloc(n ? n : 1, sizeof(*ranks));
	if (ranks == NULL) {
		Py_DECREF(fast);
		return PyErr_NoMemory();
	}
	for (size_t i = 0; i < n; i++) {
		if (rank_arg(
		        self, PySequence_Fast_GET_ITEM(fast, i), &ranks[i])
		    < 0) {
			free(ranks);
			Py_DECREF(fast);
			return NULL;
		}
	}
	Py_DECREF(fast);
	tw_link *l = twpy_link_enter((PyObject *)self);
	if (l == NULL) {
		free(ranks);
		return NULL;
	}
	tw_link *child = NULL;
	int st = tw_link_sub(l, suffix, ranks, n, &child);
	twpy_link_leave((PyObject *)self);
	free(ranks);
	if (st == TW_EINVAL)
		return PyErr_Format(PyExc_ValueError,
		    "sub(%R, ...): ranks must be distinct, in range, include "
		    "this party, and the suffix 1..64 bytes of [A-Za-z0-9._-]",
		    PyTuple_GET_ITEM(args, 0));
	if (st != TW_OK)
		return fail(self, st, "sub");
	PyObject *r = link_wrap(child, self, self->timeout_ms);
	if (r == NULL)
		tw_link_close(child);
	return r;
}

static PyObject *stride_rank(
    link_obj *self, PyObject *args, PyObject *kw, int sign)
{
	static char *names[] = { "stride", NULL };
	Py_ssize_t stride = 1;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "|n", names, &stride))
		return NULL;
	tw_link *l = twpy_link_enter((PyObject *)self);
	if (l == NULL)
		return NULL;
	Py_ssize_t n = (Py_ssize_t)tw_link_size(l);
	Py_ssize_t r = (Py_ssize_t)tw_link_rank(l);
	twpy_link_leave((PyObject *)self);
	Py_ssize_t s = stride % n;
	return PyLong_FromSsize_t(((r + sign * s) % n + n) % n);
}

static PyObject *link_next_rank(link_obj *self, PyObject *args, PyObject *kw)
{
	return stride_rank(self, args, kw, 1);
}

static PyObject *link_prev_rank(link_obj *self, PyObject *args, PyObject *kw)
{
	return stride_rank(self, args, kw, -1);
}

static PyObject *link_stats(link_obj *self, PyObject *unused)
{
	tw_link *l = twpy_link_enter((PyObject *)self);
	if (l == NULL)
		return NULL;
	tw_stats s = { 0 };
	tw_link_stats(l, &s);
	twpy_link_leave((PyObject *)self);
	return Py_BuildValue("{sKsKsKsK}", "msgs_sent",
	    (unsigned long long)s.msgs_sent, "msgs_recv",
	    (unsigned long long)s.msgs_recv, "bytes_sent",
	    (unsigned long long)s.bytes_sent, "bytes_recv",
	    (unsigned long long)s.bytes_recv);
}

static PyObject *link_trim(link_obj *self, PyObject *unused)
{
	tw_link *l = twpy_link_enter((PyObject *)self);
	if (l == NULL)
		return NULL;
	size_t freed;
	// A ring's unconfirmed bytes are copied into its smaller one.
	Py_BEGIN_ALLOW_THREADS
	freed = tw_link_trim(l);
	Py_END_ALLOW_THREADS
	twpy_link_leave((PyObject *)self);
	return PyLong_FromSize_t(freed);
}

static PyObject *link_enter(link_obj *self, PyObject *unused)
{
	if (self->l == NULL)
		return PyErr_Format(twpy_ClosedError, "the link is closed");
	return Py_NewRef(self);
}

static PyObject *link_exit(link_obj *self, PyObject *args)
{
	PyObject *type
	    = PyTuple_GET_SIZE(args) > 0 ? PyTuple_GET_ITEM(args, 0) : Py_None;
	if (type != Py_None && self->l != NULL && !self->closing) {
		// Leaving on an exception: the peers may never read what was
		// sent, so the link is aborted rather than flushed.
		tw_link_abort(self->l);
	}
	PyObject *r = link_close(self, NULL);
	if (r == NULL && type != Py_None) {
		PyErr_Clear(); // the exception in flight says more
		Py_RETURN_FALSE;
	}
	Py_XDECREF(r);
	if (r == NULL)
		return NULL;
	Py_RETURN_FALSE;
}

static PyObject *get_rank(link_obj *self, void *c)
{
	if (self->l == NULL)
		return PyErr_Format(twpy_ClosedError, "the link is closed");
	return PyLong_FromSize_t(tw_link_rank(self->l));
}

static PyObject *get_size(link_obj *self, void *c)
{
	if (self->l == NULL)
		return PyErr_Format(twpy_ClosedError, "the link is closed");
	return PyLong_FromSize_t(tw_link_size(self->l));
}

static PyObject *get_id(link_obj *self, void *c)
{
	return Py_NewRef(self->id);
}

static PyObject *get_closed(link_obj *self, void *c)
{
	return PyBool_FromLong(self->l == NULL);
}

static PyObject *get_timeout(link_obj *self, void *c)
{
	if (self->timeout_ms < 0)
		Py_RETURN_NONE;
	return PyFloat_FromDouble((double)self->timeout_ms / 1000.0);
}

static int set_timeout(link_obj *self, PyObject *value, void *c)
{
	int64_t ms;
	if (value == NULL) {
		PyErr_SetString(PyExc_AttributeError, "cannot delete");
		return -1;
	}
	if (twpy_timeout(value, -1, &ms) < 0)
		return -1;
	tw_link *l = twpy_link_enter((PyObject *)self);
	if (l == NULL)
		return -1;
	tw_link_set_recv_timeout(l, ms);
	self->timeout_ms = ms;
	twpy_link_leave((PyObject *)self);
	return 0;
}

static PyObject *link_repr(link_obj *self)
{
	if (self->l == NULL)
		return PyUnicode_FromFormat(
		    "<tagwire.Link %R (closed)>", self->id);
	return PyUnicode_FromFormat("<tagwire.Link %R rank %zu of %zu>",
	    self->id, tw_link_rank(self->l), tw_link_size(self->l));
}

#define KW(f) (PyCFunction)(void (*)(void))(f), METH_VARARGS | METH_KEYWORDS

static PyMethodDef link_methods[] = {
	{ "send", KW(link_send),
	    "send(dst, tag, data): sends a buffer; returns when it may be "
	    "reused." },
	{ "send_async", KW(link_send_async),
	    "send_async(dst, tag, data) -> Request: copies and returns." },
	{ "send_async_throttled", KW(link_send_throttled),
	    "send_async_throttled(dst, tag, data) -> Request: waits while "
	    "throttle_window messages to dst are unconsumed." },
	{ "recv", KW(link_recv),
	    "recv(src, tag, timeout=None, *, copy=True) -> bytes, or a "
	    "Message with copy=False." },
	{ "recv_into", KW(link_recv_into),
	    "recv_into(buf, src, tag, timeout=None) -> int: into a writable "
	    "buffer; TruncatedError (.size) leaves the message queued." },
	{ "probe", KW(link_probe),
	    "probe(src, tag) -> int | None: the waiting message's length." },
	{ "wait_pending", KW(link_wait_pending),
	    "wait_pending(timeout=None): until every message sent so far "
	    "reached its receiver's mailbox." },
	{ "barrier", KW(link_barrier), "barrier(tag='')" },
	{ "all_gather", KW(link_all_gather),
	    "all_gather(data, tag='') -> list[bytes]" },
	{ "gather", KW(link_gather),
	    "gather(data, root, tag='') -> list[bytes] at root, else None" },
	{ "broadcast", KW(link_broadcast),
	    "broadcast(data, root, tag='') -> bytes (data is ignored off "
	    "the root)" },
	{ "scatter", KW(link_scatter),
	    "scatter(parts, root, tag='') -> bytes (parts only at the "
	    "root)" },
	{ "spawn", KW(link_spawn),
	    "spawn(suffix) -> Link: a child with the same parties." },
	{ "sub", KW(link_sub),
	    "sub(suffix, ranks) -> Link: a child over some ranks." },
	{ "next_rank", KW(link_next_rank), "next_rank(stride=1) -> int" },
	{ "prev_rank", KW(link_prev_rank), "prev_rank(stride=1) -> int" },
	{ "stats", (PyCFunction)link_stats, METH_NOARGS,
	    "stats() -> dict: msgs_sent, msgs_recv, bytes_sent, "
	    "bytes_recv." },
	{ "trim", (PyCFunction)link_trim, METH_NOARGS,
	    "trim() -> int: gives back what tcp:// send rings to this "
	    "link's peers hold beyond their unconfirmed bytes (a burst "
	    "grows them, up to 32 MiB each); the bytes freed." },
	{ "abort", (PyCFunction)link_abort, METH_NOARGS,
	    "abort(): wakes every blocked call with ClosedError; peers see "
	    "PeerError.  close() still frees the link." },
	{ "close", (PyCFunction)link_close, METH_NOARGS,
	    "close(): flushes, tells the peers and frees the link.  "
	    "Idempotent." },
	{ "__enter__", (PyCFunction)link_enter, METH_NOARGS, NULL },
	{ "__exit__", (PyCFunction)link_exit, METH_VARARGS, NULL },
	{ 0 },
};

static PyGetSetDef link_getset[] = {
	{ "rank", (getter)get_rank, NULL, "this party's rank", NULL },
	{ "world_size", (getter)get_size, NULL, "the number of parties",
	    NULL },
	{ "id", (getter)get_id, NULL, "the link id", NULL },
	{ "closed", (getter)get_closed, NULL, "True once closed", NULL },
	{ "recv_timeout", (getter)get_timeout, (setter)set_timeout,
	    "the receive timeout in seconds (None: forever)", NULL },
	{ 0 },
};

static PyTypeObject link_type = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tagwire.Link",
	.tp_basicsize = sizeof(link_obj),
	.tp_dealloc = (destructor)link_dealloc,
	.tp_finalize = (destructor)link_finalize,
	.tp_repr = (reprfunc)link_repr,
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
	.tp_doc = "One party's end of a link; made by tagwire.create or "
	          "tagwire.create_with_channels.",
	.tp_traverse = (traverseproc)link_traverse,
	.tp_clear = (inquiry)link_clear,
	.tp_weaklistoffset = offsetof(link_obj, weakrefs),
	.tp_methods = link_methods,
	.tp_getset = link_getset,
};

// ---------------------------------------------------------------------------
// create

struct create_call {
	tw_desc *d;
	size_t rank;
	tw_channel **chans;
	tw_link *l;
};

static PyObject *create_common(
    PyObject *desc_o, PyObject *rank_o, PyObject *channels, const char *what)
{
	tw_desc *d = twpy_desc_get(desc_o);
	if (d == NULL)
		return NULL;
	Py_ssize_t r = PyNumber_AsSsize_t(rank_o, PyExc_OverflowError);
	if (r == -1 && PyErr_Occurred())
		return NULL;
	size_t n = tw_desc_size(d);
	if (r < 0 || (size_t)r >= n)
		return PyErr_Format(PyExc_ValueError,
		    "%s: rank %zd is out of range for %zu parties", what, r,
		    n);
	int64_t timeout_ms = 60000, connect_ms = 30000;
	tw_desc_get(d, TW_OPT_RECV_TIMEOUT_MS, &timeout_ms);
	tw_desc_get(d, TW_OPT_CONNECT_TIMEOUT_MS, &connect_ms);
	tw_channel **chans = NULL;
	if (channels != NULL) {
		PyObject *id = PyObject_GetAttrString(desc_o, "link_id");
		const char *ids = id ? PyUnicode_AsUTF8(id) : NULL;
		int rv = ids == NULL ? -1
		                     : twpy_channels_make(channels, n,
		                         (size_t)r, ids, connect_ms, &chans);
		Py_XDECREF(id);
		if (rv < 0)
			return NULL;
	}
	twpy_chan_clear();
	tw_link *l = NULL;
	int st;
	Py_BEGIN_ALLOW_THREADS
	st = chans != NULL
	    ? tw_link_create_with_channels(d, (size_t)r, chans, &l)
	    : tw_link_create(d, (size_t)r, &l);
	Py_END_ALLOW_THREADS
	if (st != TW_OK) {
		twpy_channels_free(chans, n);
		// A Ctrl-C that came while it waited is the news, not the
		// timeout it led to.
		if (PyErr_CheckSignals() < 0)
			return NULL;
		if (st == TW_EINVAL)
			return PyErr_Format(PyExc_ValueError,
			    "%s: the description is not usable (parties of "
			    "different transports, or see the log)",
			    what);
		return twpy_fail(st, what);
	}
	free(chans); // the link owns the channels now
	PyObject *obj = link_wrap(l, NULL, timeout_ms);
	if (obj == NULL)
		tw_link_close(l);
	return obj;
}

static PyObject *py_create(PyObject *m, PyObject *args, PyObject *kw)
{
	static char *names[] = { "desc", "rank", NULL };
	PyObject *d, *r;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "OO:create", names, &d, &r))
		return NULL;
	return create_common(d, r, NULL, "create");
}

static PyObject *py_create_with_channels(
    PyObject *m, PyObject *args, PyObject *kw)
{
	static char *names[] = { "desc", "rank", "channels", NULL };
	PyObject *d, *r, *c;
	if (!PyArg_ParseTupleAndKeywords(
	        args, kw, "OOO:create_with_channels", names, &d, &r, &c))
		return NULL;
	return create_common(d, r, c, "create_with_channels");
}

static PyMethodDef create_methods[] = {
	{ "create", (PyCFunction)(void (*)(void))py_create,
	    METH_VARARGS | METH_KEYWORDS,
	    "create(desc, rank) -> Link: this party's end; every party "
	    "calls it concurrently." },
	{ "create_with_channels",
	    (PyCFunction)(void (*)(void))py_create_with_channels,
	    METH_VARARGS | METH_KEYWORDS,
	    "create_with_channels(desc, rank, channels) -> Link: over "
	    "channel objects, one per party, None at rank." },
	{ 0 },
};

int twpy_link_init(PyObject *m)
{
	if (PyType_Ready(&link_type) < 0
	    || PyType_Ready(&twpy_RequestType) < 0)
		return -1;
	if (PyModule_AddObjectRef(m, "Link", (PyObject *)&link_type) < 0
	    || PyModule_AddObjectRef(
	           m, "Request", (PyObject *)&twpy_RequestType)
	        < 0)
		return -1;
	return PyModule_AddFunctions(m, create_methods);
}
