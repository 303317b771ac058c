// tagwire's exception tree, and status codes turned into exceptions.

#include "twpy.h"

PyObject *twpy_Error, *twpy_TimeoutError, *twpy_ClosedError, *twpy_PeerError,
    *twpy_ChannelError, *twpy_TruncatedError, *twpy_TooBigError,
    *twpy_AuthError, *twpy_ProtocolError;

static PyObject *make(
    PyObject *m, const char *name, PyObject *bases, const char *doc)
{
	char full[64];
	snprintf(full, sizeof(full), "tagwire.%s", name);
	PyObject *cls = PyErr_NewExceptionWithDoc(full, doc, bases, NULL);
	Py_DECREF(bases);
	if (cls == NULL)
		return NULL;
	if (PyModule_AddObjectRef(m, name, cls) < 0) {
		Py_DECREF(cls);
		return NULL;
	}
	return cls;
}

static PyObject *with_error(PyObject *other)
{
	return other == NULL ? PyTuple_Pack(1, twpy_Error)
	                     : PyTuple_Pack(2, twpy_Error, other);
}

int twpy_errors_init(PyObject *m)
{
	PyObject *b = PyTuple_Pack(1, PyExc_RuntimeError);
	if (b == NULL)
		return -1;
	twpy_Error = make(m, "Error", b,
	    "A tagwire call failed.  .code is the status (a negative int), "
	    ".name its symbol ('TW_EPEER').");
	if (twpy_Error == NULL)
		return -1;
	struct {
		PyObject **slot;
		const char *name;
		PyObject *also;
		const char *doc;
	} kids[] = {
		{ &twpy_TimeoutError, "TimeoutError", PyExc_TimeoutError,
		    "The call timed out (also the builtin TimeoutError)." },
		{ &twpy_ClosedError, "ClosedError", NULL,
		    "The link or engine was aborted or closed by this side." },
		{ &twpy_PeerError, "PeerError", PyExc_ConnectionError,
		    "A peer failed, closed or cannot be reached (also a "
		    "ConnectionError)." },
		{ &twpy_ChannelError, "ChannelError", NULL,
		    "A Python channel raised; __cause__ is its exception." },
		{ &twpy_TruncatedError, "TruncatedError", NULL,
		    "The buffer is too small; .size is the message's length, "
		    "and the message is still queued." },
		{ &twpy_TooBigError, "TooBigError", NULL,
		    "The message is larger than the link's max_msg_size." },
		{ &twpy_AuthError, "AuthError", NULL,
		    "A peer could not prove the secret, or TLS failed." },
		{ &twpy_ProtocolError, "ProtocolError", NULL,
		    "Malformed bytes came from the wire or shared memory." },
	};
	for (size_t i = 0; i < sizeof(kids) / sizeof(kids[0]); i++) {
		PyObject *bases = with_error(kids[i].also);
		if (bases == NULL)
			return -1;
		*kids[i].slot = make(m, kids[i].name, bases, kids[i].doc);
		if (*kids[i].slot == NULL)
			return -1;
	}
	return 0;
}

PyObject *twpy_error_class(int status)
{
	switch (status) {
	case TW_EINVAL:
		return PyExc_ValueError;
	case TW_ENOMEM:
		return PyExc_MemoryError;
	case TW_ETIMEDOUT:
		return twpy_TimeoutError;
	case TW_ECLOSED:
		return twpy_ClosedError;
	case TW_EPEER:
		return twpy_PeerError;
	case TW_ETRUNC:
		return twpy_TruncatedError;
	case TW_ETOOBIG:
		return twpy_TooBigError;
	case TW_EAUTH:
		return twpy_AuthError;
	case TW_EPROTO:
		return twpy_ProtocolError;
	default:
		return twpy_Error;
	}
}

PyObject *twpy_raise(int status, const char *what)
{
	PyObject *cls = twpy_error_class(status);
	PyObject *msg = PyUnicode_FromFormat(
	    "%s: %s (%s)", what, tw_strerror(status), tw_err_name(status));
	if (msg == NULL)
		return NULL;
	PyObject *exc = PyObject_CallOneArg(cls, msg);
	Py_DECREF(msg);
	if (exc == NULL)
		return NULL;
	if (PyObject_IsSubclass(cls, twpy_Error) == 1) {
		PyObject *code = PyLong_FromLong(status);
		PyObject *name = PyUnicode_FromString(tw_err_name(status));
		if (code == NULL || name == NULL
		    || PyObject_SetAttrString(exc, "code", code) < 0
		    || PyObject_SetAttrString(exc, "name", name) < 0) {
			Py_XDECREF(code);
			Py_XDECREF(name);
			Py_DECREF(exc);
			return NULL;
		}
		Py_DECREF(code);
		Py_DECREF(name);
	}
	PyErr_SetObject(cls, exc);
	Py_DECREF(exc);
	return NULL;
}
