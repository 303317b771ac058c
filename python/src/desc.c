// tagwire.Desc: a link description (tw_desc) with an attribute per option.

#include "twpy.h"

typedef struct {
	PyObject_HEAD tw_desc *d;
	PyObject *parties; // list of (party_id, addr), what was added
	PyObject *id;
} desc;

static PyTypeObject desc_type;

tw_desc *twpy_desc_get(PyObject *obj)
{
	if (!PyObject_TypeCheck(obj, &desc_type)) {
		PyErr_Format(PyExc_TypeError,
		    "expected a tagwire.Desc, not %.80s",
		    Py_TYPE(obj)->tp_name);
		return NULL;
	}
	return ((desc *)obj)->d;
}

static int desc_init(desc *self, PyObject *args, PyObject *kw)
{
	static char *names[] = { "link_id", NULL };
	const char *id;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "s:Desc", names, &id))
		return -1;
	tw_desc *d = tw_desc_new(id);
	if (d == NULL) {
		PyErr_Format(PyExc_ValueError,
		    "invalid link id %R: 1..255 bytes, no ':', '@', '!' or "
		    "control characters",
		    PyTuple_GET_ITEM(args, 0));
		return -1;
	}
	PyObject *parties = PyList_New(0);
	PyObject *ids = PyUnicode_FromString(id);
	if (parties == NULL || ids == NULL) {
		Py_XDECREF(parties);
		Py_XDECREF(ids);
		tw_desc_free(d);
		return -1;
	}
	tw_desc_free(self->d);
	Py_XSETREF(self->parties, parties);
	Py_XSETREF(self->id, ids);
	self->d = d;
	return 0;
}

static void desc_dealloc(desc *self)
{
	tw_desc_free(self->d);
	Py_XDECREF(self->parties);
	Py_XDECREF(self->id);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

static bool ready(desc *self)
{
	if (self->d != NULL)
		return true;
	PyErr_SetString(PyExc_ValueError, "Desc.__init__ was not called");
	return false;
}

static PyObject *desc_add_party(desc *self, PyObject *args)
{
	const char *party, *addr;
	if (!ready(self)
	    || !PyArg_ParseTuple(args, "ss:add_party", &party, &addr))
		return NULL;
	int st = tw_desc_add_party(self->d, party, addr);
	if (st == TW_EINVAL)
		return PyErr_Format(PyExc_ValueError,
		    "add_party(%R, %R): the party id is 1..64 bytes of "
		    "[A-Za-z0-9._-] and unique, the address is "
		    "mem://NAME, shm://NAME or tcp://HOST:PORT",
		    PyTuple_GET_ITEM(args, 0), PyTuple_GET_ITEM(args, 1));
	if (st != TW_OK)
		return twpy_raise(st, "add_party");
	PyObject *t = Py_BuildValue("(ss)", party, addr);
	if (t == NULL || PyList_Append(self->parties, t) < 0) {
		Py_XDECREF(t);
		return NULL;
	}
	Py_DECREF(t);
	return PyLong_FromSize_t(tw_desc_size(self->d) - 1);
}

static PyObject *desc_set_root(desc *self, PyObject *args, PyObject *kw)
{
	static char *names[] = { "addr", "size", "bind", NULL };
	const char *addr, *bind = NULL;
	Py_ssize_t size;
	if (!ready(self)
	    || !PyArg_ParseTupleAndKeywords(
	        args, kw, "sn|z:set_root", names, &addr, &size, &bind))
		return NULL;
	int st = size < 1
	    ? TW_EINVAL
	    : tw_desc_set_root(self->d, addr, (size_t)size, bind);
	if (st == TW_EINVAL)
		return PyErr_Format(PyExc_ValueError,
		    "set_root(%s, %zd, %s): want a root tcp://HOST:PORT with "
		    "a port, 1..65536 parties, a bind address tcp://HOST:PORT "
		    "(port 0: any) or None, and no party added",
		    addr, size, bind != NULL ? bind : "None");
	if (st != TW_OK)
		return twpy_raise(st, "set_root");
	Py_RETURN_NONE;
}

static PyObject *desc_set_secret(desc *self, PyObject *arg)
{
	if (!ready(self))
		return NULL;
	Py_buffer v;
	if (twpy_buffer(arg, &v, false) < 0)
		return NULL;
	int st = tw_desc_set_secret(self->d, v.buf, (size_t)v.len);
	PyBuffer_Release(&v);
	if (st == TW_EINVAL)
		return PyErr_Format(
		    PyExc_ValueError, "a secret is 1..1024 bytes");
	if (st != TW_OK)
		return twpy_raise(st, "set_secret");
	Py_RETURN_NONE;
}

static PyObject *desc_set_tls(desc *self, PyObject *args)
{
	PyObject *p[3];
	if (!ready(self) || twpy_tls_paths(args, p) < 0)
		return NULL;
	int st = tw_desc_set_tls(self->d, PyBytes_AS_STRING(p[0]),
	    PyBytes_AS_STRING(p[1]), PyBytes_AS_STRING(p[2]));
	twpy_tls_paths_release(p);
	if (st != TW_OK)
		return twpy_raise(st, "set_tls");
	Py_RETURN_NONE;
}

static PyObject *desc_from_env(PyObject *cls, PyObject *unused)
{
	tw_desc *d = NULL;
	size_t rank = 0;
	int st = tw_desc_from_env(&d, &rank);
	if (st == TW_EINVAL)
		return PyErr_Format(PyExc_ValueError,
		    "the TAGWIRE_* variables do not describe a link (the log "
		    "says which one is wrong)");
	if (st != TW_OK)
		return twpy_raise(st, "Desc.from_env");
	desc *self = (desc *)desc_type.tp_alloc(&desc_type, 0);
	if (self == NULL) {
		tw_desc_free(d);
		return NULL;
	}
	self->d = d;
	const char *id = getenv("TAGWIRE_LINK_ID");
	self->id = PyUnicode_FromString(id != NULL && *id ? id : "root");
	self->parties = PyList_New(0);
	if (self->id == NULL || self->parties == NULL) {
		Py_DECREF(self);
		return NULL;
	}
	// .parties as the environment named them ("ADDR" or "ID=ADDR"); the
	// C library has checked the list already.
	const char *ps = getenv("TAGWIRE_PARTIES");
	size_t i = 0;
	while (ps != NULL && *ps != '\0') {
		const char *end = strchr(ps, ',');
		size_t n = end ? (size_t)(end - ps) : strlen(ps);
		const char *eq = memchr(ps, '=', n);
		char name[24];
		snprintf(name, sizeof(name), "p%zu", i++);
		PyObject *t = eq != NULL
		    ? Py_BuildValue("(s#s#)", ps, (Py_ssize_t)(eq - ps),
		        eq + 1, (Py_ssize_t)(n - (size_t)(eq - ps) - 1))
		    : Py_BuildValue("(ss#)", name, ps, (Py_ssize_t)n);
		if (t == NULL || PyList_Append(self->parties, t) < 0) {
			Py_XDECREF(t);
			Py_DECREF(self);
			return NULL;
		}
		Py_DECREF(t);
		ps = end ? end + 1 : ps + n;
	}
	return Py_BuildValue("(Nn)", self, (Py_ssize_t)rank);
}

// Options are attributes; the closure is the TW_OPT_* number.
static PyObject *opt_get(desc *self, void *closure)
{
	if (!ready(self))
		return NULL;
	int64_t v = 0;
	int st = tw_desc_get(self->d, (int)(intptr_t)closure, &v);
	if (st != TW_OK)
		return twpy_raise(st, "Desc option");
	return PyLong_FromLongLong(v);
}

static int opt_set(desc *self, PyObject *value, void *closure)
{
	if (!ready(self))
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
	int st = tw_desc_set(self->d, (int)(intptr_t)closure, v);
	if (st == TW_EINVAL) {
		PyErr_Format(
		    PyExc_ValueError, "option value %lld is out of range", v);
		return -1;
	}
	if (st != TW_OK) {
		twpy_raise(st, "Desc option");
		return -1;
	}
	return 0;
}

static PyObject *desc_parties(desc *self, void *closure)
{
	if (!ready(self))
		return NULL;
	return PyList_AsTuple(self->parties);
}

static PyObject *desc_id(desc *self, void *closure)
{
	if (!ready(self))
		return NULL;
	return Py_NewRef(self->id);
}

static PyObject *desc_len(desc *self, void *closure)
{
	if (!ready(self))
		return NULL;
	return PyLong_FromSize_t(tw_desc_size(self->d));
}

#define OPT(name, opt, doc)                                                   \
	{                                                                     \
		name, (getter)opt_get, (setter)opt_set, doc,                  \
		    (void *)(intptr_t)opt                                     \
	}

static PyGetSetDef desc_getset[] = {
	OPT("recv_timeout_ms", TW_OPT_RECV_TIMEOUT_MS,
	    "receive timeout (default 60000; -1 forever, 0 poll)"),
	OPT("connect_timeout_ms", TW_OPT_CONNECT_TIMEOUT_MS,
	    "how long create waits for the peers (default 30000)"),
	OPT("throttle_window", TW_OPT_THROTTLE_WINDOW,
	    "unconsumed messages per peer for send_async_throttled "
	    "(default 0: no limit)"),
	OPT("chunk_size", TW_OPT_CHUNK_SIZE,
	    "bytes per chunk of a large message (default 1 MiB)"),
	OPT("stripes", TW_OPT_STRIPES,
	    "tcp:// connections per peer (default 1, 1..64)"),
	OPT("max_msg_size", TW_OPT_MAX_MSG_SIZE,
	    "largest message (default 1 GiB)"),
	OPT("recv_buffer", TW_OPT_RECV_BUFFER,
	    "bytes a peer may hold unreceived here (default 64 MiB; a "
	    "message counts its length + 64, at least 4 KiB)"),
	OPT("heartbeat_ms", TW_OPT_HEARTBEAT_MS,
	    "liveness checks on tcp:// (default 1000; 0 off)"),
	OPT("shm_local", TW_OPT_SHM_LOCAL,
	    "tcp:// peers on this host use shared memory (0 or 1)"),
	OPT("window", TW_OPT_WINDOW,
	    "engine chunks in flight per connection (default 16)"),
	{ "parties", (getter)desc_parties, NULL,
	    "the parties added, as (party_id, address) tuples", NULL },
	{ "link_id", (getter)desc_id, NULL, "the link id", NULL },
	{ "size", (getter)desc_len, NULL, "the number of parties", NULL },
	{ 0 },
};

static PyMethodDef desc_methods[] = {
	{ "add_party", (PyCFunction)desc_add_party, METH_VARARGS,
	    "add_party(party_id, addr) -> rank: appends a party." },
	{ "set_root", (PyCFunction)(void (*)(void))desc_set_root,
	    METH_VARARGS | METH_KEYWORDS,
	    "set_root(addr, size, bind=None): no party list; the parties "
	    "learn each other from rank 0 at addr while the link is "
	    "created." },
	{ "set_secret", (PyCFunction)desc_set_secret, METH_O,
	    "set_secret(key): the link secret (1..1024 bytes) every party "
	    "must hold." },
	{ "set_tls", (PyCFunction)desc_set_tls, METH_VARARGS,
	    "set_tls(cert_file, key_file, ca_file): TLS 1.3 on tcp://." },
	{ "from_env", (PyCFunction)desc_from_env, METH_NOARGS | METH_CLASS,
	    "from_env() -> (Desc, rank): from the TAGWIRE_* variables." },
	{ 0 },
};

static PyTypeObject desc_type = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tagwire.Desc",
	.tp_basicsize = sizeof(desc),
	.tp_dealloc = (destructor)desc_dealloc,
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "Desc(link_id): a link's parties and options.",
	.tp_methods = desc_methods,
	.tp_getset = desc_getset,
	.tp_init = (initproc)desc_init,
	.tp_new = PyType_GenericNew,
};

int twpy_desc_init(PyObject *m)
{
	if (PyType_Ready(&desc_type) < 0)
		return -1;
	return PyModule_AddObjectRef(m, "Desc", (PyObject *)&desc_type);
}
