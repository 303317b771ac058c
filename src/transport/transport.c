// The explicit list of built-in transports, the check of their tables, and
// the stubs for the ops a transport may not need.

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "transport/transport.h"

// The built-in transports, one X(name) each: the folder src/transport/name/
// defines `tw__<name>_transport`, whose scheme is "<name>".
#define TW__BUILTIN_TRANSPORTS(X) X(mem) X(shm) X(tcp)

#define TW__DECLARE(name) extern const tw__transport tw__##name##_transport;
TW__BUILTIN_TRANSPORTS(TW__DECLARE)

#define TW__ENTRY(name) { #name, &tw__##name##_transport },
static const struct builtin {
	const char *scheme;
	const tw__transport *t;
} builtins[] = { TW__BUILTIN_TRANSPORTS(TW__ENTRY) };

#define NBUILTIN (sizeof(builtins) / sizeof(builtins[0]))

// Schemes tagwire defines but this library does not carry.
static const char *const planned_schemes[] = { "ucx", NULL };

// Filled once by registry_check: the transports that passed, and their
// names (NULL-terminated).
static pthread_once_t registry_once = PTHREAD_ONCE_INIT;
static const tw__transport *sound[NBUILTIN + 1];
static const char *sound_names[NBUILTIN + 1];

int tw__no_wait_pending(
    tw_channel *c, int64_t deadline, const _Atomic int *cancel)
{
	(void)c;
	(void)deadline;
	(void)cancel;
	return TW_OK;
}

uint64_t tw__no_unreceived_peak(tw_channel *c)
{
	(void)c;
	return 0;
}

size_t tw__no_ns_entries(tw_channel *c)
{
	(void)c;
	return SIZE_MAX;
}

size_t tw__no_trim(tw_channel *c)
{
	(void)c;
	return 0;
}

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

// The first NULL entry of a transport's tables, or NULL.
static const char *missing_entry(const tw__transport *t)
{
	if (t->addr_check == NULL)
		return "addr_check";
	if (t->open == NULL)
		return "open";
	if (t->ops == NULL)
		return "ops";
	if (t->xops == NULL)
		return "xops";
	const tw__chan_xops *x = t->xops;
	struct {
		const char *name;
		bool set;
	} entries[] = {
		{ "xops.send", x->send != NULL },
		{ "xops.recv", x->recv != NULL },
		{ "xops.recv_into", x->recv_into != NULL },
		{ "xops.probe", x->probe != NULL },
		{ "xops.abort_ns", x->abort_ns != NULL },
		{ "xops.close_ns", x->close_ns != NULL },
		{ "xops.open_ns", x->open_ns != NULL },
		{ "xops.unreceived_peak", x->unreceived_peak != NULL },
		{ "xops.wait_pending", x->wait_pending != NULL },
		{ "xops.ns_entries", x->ns_entries != NULL },
		{ "xops.trim", x->trim != NULL },
	};
	for (size_t i = 0; i < sizeof(entries) / sizeof(entries[0]); i++)
		if (!entries[i].set)
			return entries[i].name;
	return NULL;
}

int tw__transport_check(const tw__transport *t, const char *scheme)
{
	char why[200] = "", ops_why[160];
	if (t->scheme == NULL || strcmp(t->scheme, scheme) != 0) {
		snprintf(why, sizeof(why), "its scheme is %s",
		    t->scheme != NULL ? t->scheme : "NULL");
	} else {
		const char *missing = missing_entry(t);
		if (missing != NULL)
			snprintf(why, sizeof(why), "it lacks %s", missing);
		else if (t->xops->size != sizeof(tw__chan_xops))
			snprintf(why, sizeof(why),
			    "its xops table has size %zu, not %zu",
			    t->xops->size, sizeof(tw__chan_xops));
		else if (tw__chan_ops_check(t->ops, ops_why, sizeof(ops_why))
		    != TW_OK)
			snprintf(
			    why, sizeof(why), "its channel table %s", ops_why);
		else if (t->ops->size != sizeof(tw_channel_ops))
			snprintf(why, sizeof(why),
			    "its ops table has size %zu, not %zu",
			    t->ops->size, sizeof(tw_channel_ops));
	}
	if (why[0] == '\0')
		return TW_OK;
	TW_ERROR("transport",
	    "built-in transport %s is broken: %s; links over %s:// are "
	    "refused",
	    scheme, why, scheme);
	return TW_EINVAL;
}

static void registry_check(void)
{
	size_t n = 0;
	for (size_t i = 0; i < NBUILTIN; i++) {
		if (tw__transport_check(builtins[i].t, builtins[i].scheme)
		    != TW_OK)
			continue;
		sound[n] = builtins[i].t;
		sound_names[n] = builtins[i].scheme;
		n++;
	}
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
	pthread_once(&registry_once, registry_check);
	for (size_t i = 0; i < NBUILTIN; i++)
		if (scheme_is(addr, builtins[i].scheme))
			*known = true;
	for (size_t i = 0; planned_schemes[i] != NULL; i++)
		if (scheme_is(addr, planned_schemes[i]))
			*known = true;
	for (size_t i = 0; sound[i] != NULL; i++)
		if (scheme_is(addr, sound[i]->scheme))
			return sound[i];
	return NULL;
}

const char *const *tw__transport_names(void)
{
	pthread_once(&registry_once, registry_check);
	return sound_names;
}
