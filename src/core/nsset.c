#include <stdlib.h>
#include <string.h>

#include <tagwire/status.h>

#include "core/names.h"
#include "core/nsset.h"

void tw__nsset_init(tw__nsset *s)
{
	pthread_mutex_init(&s->mtx, NULL);
	s->v = NULL;
	s->n = 0;
}

void tw__nsset_fini(tw__nsset *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	s->v = NULL;
	s->n = 0;
	pthread_mutex_destroy(&s->mtx);
}

static bool empty(tw__nsset *s)
{
	return __atomic_load_n(&s->n, __ATOMIC_ACQUIRE) == 0;
}

int tw__nsset_add(tw__nsset *s, const char *ns)
{
	int status = TW_OK;
	pthread_mutex_lock(&s->mtx);
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->v[i], ns) == 0)
			goto out;
	char **v = realloc(s->v, (s->n + 1) * sizeof(*v));
	if (v == NULL) {
		status = TW_ENOMEM;
		goto out;
	}
	s->v = v;
	if ((v[s->n] = strdup(ns)) == NULL) {
		status = TW_ENOMEM;
		goto out;
	}
	__atomic_store_n(&s->n, s->n + 1, __ATOMIC_RELEASE);
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
	for (size_t i = 0; i < s->n && !found; i++)
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
	for (size_t i = 0; i < s->n && !found; i++)
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
	size_t j = 0;
	for (size_t i = 0; i < s->n; i++) {
		if (drop(s->v[i], name))
			free(s->v[i]);
		else
			s->v[j++] = s->v[i];
	}
	__atomic_store_n(&s->n, j, __ATOMIC_RELEASE);
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
	for (size_t i = 0; i < s->n && !found; i++) {
		if (strcmp(s->v[i], ns) != 0)
			continue;
		// Entries are unique and their order means nothing.
		free(s->v[i]);
		s->v[i] = s->v[s->n - 1];
		__atomic_store_n(&s->n, s->n - 1, __ATOMIC_RELEASE);
		found = true;
	}
	pthread_mutex_unlock(&s->mtx);
	return found;
}

size_t tw__nsset_count(tw__nsset *s)
{
	return __atomic_load_n(&s->n, __ATOMIC_ACQUIRE);
}
