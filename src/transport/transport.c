// The explicit list of built-in transports.

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
