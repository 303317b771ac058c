// The explicit list of built-in transports.

#include <stdio.h>
#include <string.h>

#include "transport/transport.h"

extern const tw__transport tw__mem_transport;
extern const tw__transport tw__shm_transport;
extern const tw__transport tw__tcp_transport;

static const tw__transport *const transports[] = {
	&tw__mem_transport,
	&tw__shm_transport,
	&tw__tcp_transport,
	NULL,
};

static const char *const names[] = {
	"mem",
	"shm",
	"tcp",
	NULL,
};

// Schemes tagwire knows, whether or not this build carries them.
static const char *const known_schemes[]
    = { "mem", "shm", "tcp", "ucx", NULL };

int tw__chan_ops_check(const tw_channel_ops *ops, char *why, size_t cap)
{
	if (ops == NULL) {
		snprintf(why, cap, "has no ops table");
		return TW_EINVAL;
	}
	size_t min = offsetof(tw_channel_ops, size) + sizeof(ops->size);
	size_t align = _Alignof(tw_channel_ops);
	if (ops->size != 0
	    && (ops->size < min || ops->size > TW__CHAN_OPS_SIZE_MAX
	        || ops->size % align != 0)) {
		snprintf(why, cap,
		    "has an ops table of size %zu, which no tw_channel_ops "
		    "has (0, or %zu to %d in steps of %zu)",
		    ops->size, min, TW__CHAN_OPS_SIZE_MAX, align);
		return TW_EINVAL;
	}
	// Every required op lies before the size field, so a valid size
	// covers them all.
	const char *missing = ops->send == NULL ? "send"
	    : ops->recv == NULL                 ? "recv"
	    : ops->test_send == NULL            ? "test_send"
	    : ops->test_recv == NULL            ? "test_recv"
	    : ops->destroy == NULL              ? "destroy"
	                                        : NULL;
	if (missing != NULL) {
		snprintf(why, cap, "lacks the required op %s", missing);
		return TW_EINVAL;
	}
	return TW_OK;
}

static bool scheme_is(const char *addr, const char *scheme)
{
	size_t n = strlen(scheme);
	return strncmp(addr, scheme, n) == 0
	    && strncmp(addr + n, "://", 3) == 0;
}

const tw__transport *tw__transport_find(const char *addr, bool *known)
{
	*known = false;
	if (addr == NULL)
		return NULL;
	for (size_t i = 0; known_schemes[i] != NULL; i++)
		if (scheme_is(addr, known_schemes[i]))
			*known = true;
	for (size_t i = 0; transports[i] != NULL; i++)
		if (scheme_is(addr, transports[i]->scheme))
			return transports[i];
	return NULL;
}

const char *const *tw__transport_names(void)
{
	return names;
}
