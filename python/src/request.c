// tagwire.Request: what send_async returns.  The bytes were copied when it
// was made; the C library keeps no handle per message, so completion is
// the link's: wait() returns once every message sent on the link so far
// (this one included) reached its receiver's mailbox, and raises the error
// of a delivery that failed.

#include "twpy.h"

typedef struct {
	PyObject_HEAD PyObject *link;
	bool done;
} request;

PyObject *twpy_request_new(PyObject *link)
{
	request *r = PyObject_GC_New(request, &twpy_RequestType);
	if (r == NULL)
		return NULL;
	r->link = Py_NewRef(link);
	r->done = false;
	PyObject_GC_Track(r);
	return (PyObject *)r;
}

static int request_traverse(request *r, visitproc visit, void *arg)
{
	Py_VISIT(r->link);
	return 0;
}

static int request_clear(request *r)
{
	Py_CLEAR(r->link);
	return 0;
}

static void request_dealloc(request *r)
{
	PyObject_GC_UnTrack(r);
	Py_CLEAR(r->link);
	PyObject_GC_Del(r);
}

static PyObject *request_wait(request *r, PyObject *args, PyObject *kw)
{
	static char *names[] = { "timeout", NULL };
	PyObject *timeout = Py_None;
	if (!PyArg_ParseTupleAndKeywords(args, kw, "|O", names, &timeout))
		return NULL;
	if (r->done)
		Py_RETURN_NONE;
	if (r->link == NULL)
		return PyErr_Format(twpy_ClosedError, "the link is gone");
	if (twpy_link_wait(r->link, timeout) < 0)
		return NULL;
	r->done = true;
	Py_RETURN_NONE;
}

static PyObject *request_test(request *r, PyObject *unused)
{
	if (r->done)
		Py_RETURN_TRUE;
	if (r->link == NULL)
		return PyErr_Format(twpy_ClosedError, "the link is gone");
	PyObject *zero = PyLong_FromLong(0);
	if (zero == NULL)
		return NULL;
	int rv = twpy_link_wait(r->link, zero);
	Py_DECREF(zero);
	if (rv < 0) {
		if (!PyErr_ExceptionMatches(PyExc_TimeoutError))
			return NULL;
		PyErr_Clear();
		Py_RETURN_FALSE;
	}
	r->done = true;
	Py_RETURN_TRUE;
}

static PyMethodDef request_methods[] = {
	{ "wait", (PyCFunction)(void (*)(void))request_wait,
	    METH_VARARGS | METH_KEYWORDS,
	    "wait(timeout=None): until the message (and every one sent "
	    "before it) reached the receiver's mailbox; raises a failed "
	    "delivery's error." },
	{ "test", (PyCFunction)request_test, METH_NOARGS,
	    "test() -> bool: wait() would return at once." },
	{ 0 },
};

PyTypeObject twpy_RequestType = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tagwire.Request",
	.tp_basicsize = sizeof(request),
	.tp_dealloc = (destructor)request_dealloc,
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
	.tp_doc = "An asynchronous send; its bytes were copied already.",
	.tp_traverse = (traverseproc)request_traverse,
	.tp_clear = (inquiry)request_clear,
	.tp_methods = request_methods,
};
