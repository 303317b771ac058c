// Status codes, owned buffers and the version string.

#include <stdlib.h>

#include <tagwire/tagwire.h>

#include "core/bufpool.h"

const char *tw_strerror(int status)
{
	switch (status) {
#define TW__STATUS_TEXT(name, value, text)                                    \
	case value:                                                           \
		return text;
		TW_STATUS_MAP(TW__STATUS_TEXT)
#undef TW__STATUS_TEXT
	}
	return "unknown status";
}

const char *tw_err_name(int status)
{
	switch (status) {
#define TW__STATUS_NAME(name, value, text)                                    \
	case value:                                                           \
		return "TW_" #name;
		TW_STATUS_MAP(TW__STATUS_NAME)
#undef TW__STATUS_NAME
	}
	return "TW_E?";
}

void tw_buf_free(tw_buf *b)
{
	if (b == NULL)
		return;
	// Large buffers are kept for the next large message (bufpool.h).
	tw__pool_free(b->data);
	b->data = NULL;
	b->len = 0;
}

void tw_buf_pool_drain(void)
{
	tw__pool_drain();
}

const char *tw_version(void)
{
	return TW_VERSION_STRING;
}
