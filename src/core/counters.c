// Per-thread shards of a set of counters; see counters.h for the design.

#include <stdlib.h>

#include "core/counters.h"

#define LINE 64
// Entries of a thread's cache of shards, by serial; a power of two.
#define CACHE 16

struct tw__cshard {
	_Atomic uint64_t v[TW_COUNTERS_N];
	const void *owner; // the owning thread's `token`
	tw__cshard *next;
	void *raw; // what calloc returned
};

typedef struct cache_ent {
	uint64_t serial;
	tw__cshard *shard;
} cache_ent;

static _Atomic uint64_t next_serial = 1;
static _Thread_local cache_ent cache[CACHE];
// Its address tells this thread from every other live one.
static _Thread_local char token;

// The newest shard; the others follow it.
static tw__cshard *shards_head(const tw__counters *c)
{
	return atomic_load_explicit(
	    &((tw__counters *)c)->shards, memory_order_acquire);
}

void tw__counters_init(tw__counters *c)
{
	atomic_init(&c->shards, NULL);
	c->serial
	    = atomic_fetch_add_explicit(&next_serial, 1, memory_order_relaxed);
	for (unsigned i = 0; i < TW_COUNTERS_N; i++)
		atomic_init(&c->spill[i], 0);
}

void tw__counters_fini(tw__counters *c)
{
	tw__cshard *s = shards_head(c);
	while (s != NULL) {
		tw__cshard *next = s->next;
		free(s->raw);
		s = next;
	}
	atomic_store_explicit(&c->shards, NULL, memory_order_relaxed);
}

// Shards of different threads on one cache line would make each thread's
// additions miss in the other's cache: each gets a line of its own.
static tw__cshard *shard_new(void)
{
	void *raw = calloc(1, sizeof(tw__cshard) + LINE - 1);
	if (raw == NULL)
		return NULL;
	uintptr_t at = ((uintptr_t)raw + LINE - 1) & ~(uintptr_t)(LINE - 1);
	tw__cshard *s = (tw__cshard *)at;
	s->raw = raw;
	s->owner = &token;
	return s;
}

// This thread's shard of `c`, found or added; NULL when none can be had.
static tw__cshard *shard_find(tw__counters *c)
{
	tw__cshard *head = shards_head(c);
	for (tw__cshard *s = head; s != NULL; s = s->next)
		if (s->owner == &token)
			return s;
	tw__cshard *s = shard_new();
	if (s == NULL)
		return NULL;
	// Only this thread adds a shard it owns, so the list walked above
	// cannot have gained one of ours meanwhile.
	do
		s->next = head;
	while (!atomic_compare_exchange_weak_explicit(
	    &c->shards, &head, s, memory_order_release, memory_order_acquire));
	return s;
}

static void bump(_Atomic uint64_t *v, uint64_t d)
{
	// The shard's only writer: no other addition can fall in between.
	atomic_store_explicit(v,
	    atomic_load_explicit(v, memory_order_relaxed) + d,
	    memory_order_relaxed);
}

void tw__counters_add2(
    tw__counters *c, unsigned i, uint64_t a, unsigned j, uint64_t b)
{
	cache_ent *e = &cache[c->serial & (CACHE - 1)];
	tw__cshard *s = e->shard;
	if (e->serial != c->serial) {
		s = shard_find(c);
		if (s == NULL) {
			atomic_fetch_add_explicit(
			    &c->spill[i], a, memory_order_relaxed);
			atomic_fetch_add_explicit(
			    &c->spill[j], b, memory_order_relaxed);
			return;
		}
		e->serial = c->serial;
		e->shard = s;
	}
	bump(&s->v[i], a);
	bump(&s->v[j], b);
}

void tw__counters_sum(const tw__counters *c, uint64_t out[TW_COUNTERS_N])
{
	for (unsigned i = 0; i < TW_COUNTERS_N; i++)
		out[i]
		    = atomic_load_explicit(&c->spill[i], memory_order_relaxed);
	for (tw__cshard *s = shards_head(c); s != NULL; s = s->next)
		for (unsigned i = 0; i < TW_COUNTERS_N; i++)
			out[i] += atomic_load_explicit(
			    &s->v[i], memory_order_relaxed);
}

size_t tw__counters_shards(const tw__counters *c)
{
	size_t n = 0;
	for (tw__cshard *s = shards_head(c); s != NULL; s = s->next)
		n++;
	return n;
}
