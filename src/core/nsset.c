#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <tagwire/status.h>

#include "core/names.h"
#include "core/nsset.h"

void tw__nsset_init(tw__nsset *s)
{
	pthread_mutex_init(&s->mtx, NULL);
	s->v = NULL;
	atomic_init(&s->n, 0);
}

// The count, mtx held (or no other thread).
static size_t held(tw__nsset *s)
{
	return atomic_load_explicit(&s->n, memory_order_relaxed);
}

// A new count, mtx held; a reader without the lock that sees it sees the
// entries it counts.
static void set_held(tw__nsset *s, size_t n)
{
	atomic_store_explicit(&s->n, n, memory_order_release);
}

void tw__nsset_fini(tw__nsset *s)
{
	for (size_t i = 0; i < held(s); i++)
		free(s->v[i]);
	free(s->v);
	s->v = NULL;
	set_held(s, 0);
	pthread_mutex_destroy(&s->mtx);
}

static bool empty(tw__nsset *s)
{
	return atomic_load_explicit(&s->n, memory_order_acquire) == 0;
}

int tw__nsset_add(tw__nsset *s, const char *ns)
{
	int status = TW_OK;
	pthread_mutex_lock(&s->mtx);
	size_t n = held(s);
	for (size_t i = 0; i < n; i++)
		if (strcmp(s->v[i], ns) == 0)
			goto out;
	char **v = realloc(s->v, (n + 1) * sizeof(*v));
	if (v == NULL) {
		status = TW_ENOMEM;
		goto out;
	}
	s->v = v;
	if ((v[n] = strdup(ns)) == NULL) {
		status = TW_ENOMEM;
		goto out;
	}
	set_held(s, n + 1);
out:
	pthread_mutex_unlock(&s->mtx);
	return status;
}

bool tw__nsset_holds(tw__nsset *s, const char *key)
{
	if (empty(s))
		return false;
	bool found = false;
	pthread_mutex_lock(&s->mtx);
	for (size_t i = 0; i < held(s) && !found; i++)
		found = tw__key_in_ns(key, s->v[i]);
	pthread_mutex_unlock(&s->mtx);
	return found;
}

bool tw__nsset_has(tw__nsset *s, const char *ns)
{
	if (empty(s))
		return false;
	bool found = false;
	pthread_mutex_lock(&s->mtx);
	for (size_t i = 0; i < held(s) && !found; i++)
		found = strcmp(s->v[i], ns) == 0;
	pthread_mutex_unlock(&s->mtx);
	return found;
}

// Drops the entries for which drop(entry, name) is true.
static void forget(tw__nsset *s, const char *name,
    bool (*drop)(const char *entry, const char *name))
{
	if (empty(s))
		return;
	pthread_mutex_lock(&s->mtx);
	size_t j = 0, n = held(s);
	for (size_t i = 0; i < n; i++) {
		if (drop(s->v[i], name))
			free(s->v[i]);
		else
			s->v[j++] = s->v[i];
	}
	set_held(s, j);
	pthread_mutex_unlock(&s->mtx);
}

static bool holds_key(const char *entry, const char *key)
{
	return tw__key_in_ns(key, entry);
}

static bool is_ns_or_child(const char *entry, const char *ns)
{
	return strcmp(entry, ns) == 0 || tw__key_in_ns(entry, ns);
}

void tw__nsset_forget_key(tw__nsset *s, const char *key)
{
	forget(s, key, holds_key);
}

void tw__nsset_forget_ns(tw__nsset *s, const char *ns)
{
	forget(s, ns, is_ns_or_child);
}

bool tw__nsset_remove(tw__nsset *s, const char *ns)
{
	if (empty(s))
		return false;
	bool found = false;
	pthread_mutex_lock(&s->mtx);
	size_t n = held(s);
	for (size_t i = 0; i < n && !found; i++) {
		if (strcmp(s->v[i], ns) != 0)
			continue;
		// Entries are unique and their order means nothing.
		free(s->v[i]);
		s->v[i] = s->v[n - 1];
		set_held(s, n - 1);
		found = true;
	}
	pthread_mutex_unlock(&s->mtx);
	return found;
}

size_t tw__nsset_count(tw__nsset *s)
{
	return atomic_load_explicit(&s->n, memory_order_acquire);
}
