// A set of link namespaces, for the "this namespace was closed or aborted"
// bookkeeping that the mailbox and every transport keep.  A namespace holds
// its own keys and those of its child links (see tw__key_in_ns).
//
// Thread-safe.  The sets are short (an entry lives while a child link is
// closed or aborted on one side only, see mailbox.h), so a list is the
// right structure, and the common case, an empty set, is answered without
// taking the lock.

#ifndef TW_CORE_NSSET_H
#define TW_CORE_NSSET_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct tw__nsset {
	pthread_mutex_t mtx;
	char **v; // protected by mtx
	_Atomic size_t n; // written under mtx; read without it too
} tw__nsset;

void tw__nsset_init(tw__nsset *s);
void tw__nsset_fini(tw__nsset *s);

// Adds `ns` (once).  TW_OK or TW_ENOMEM.
int tw__nsset_add(tw__nsset *s, const char *ns);

// Does a namespace of the set hold `key`?
bool tw__nsset_holds(tw__nsset *s, const char *key);

// Is namespace `ns` itself in the set?
bool tw__nsset_has(tw__nsset *s, const char *ns);

// Drops the namespaces that hold `key`.
void tw__nsset_forget_key(tw__nsset *s, const char *key);

// Drops `ns` and its children.
void tw__nsset_forget_ns(tw__nsset *s, const char *ns);

// Drops `ns` itself (not its children); returns whether it was there.
bool tw__nsset_remove(tw__nsset *s, const char *ns);

// The number of namespaces in the set.
size_t tw__nsset_count(tw__nsset *s);

#endif // TW_CORE_NSSET_H
