// tagwire.Engine: the transfer engine binding comes in the next commit.

#include "twpy.h"

int twpy_engine_init(PyObject *m)
{
	return 0;
}
