// Registrations: local memory that transfers use and peers may reach
// one-sidedly, and remote ids for peers' registrations.

#include <stdlib.h>
#include <string.h>

#include "core/sync.h"
#include "engine/eng.h"
#include "transport/tcp/tcp_auth.h"

eng_reg *tw__eng_reg_find(tw_engine *e, uint64_t id)
{
	eng_reg *r = NULL;
	HASH_FIND(hh, e->regs, &id, sizeof(id), r);
	return r != NULL && !r->dead ? r : NULL;
}

void tw__eng_reg_unref(tw_engine *e, eng_reg *r)
{
	if (--r->refs == 0 && r->dead) {
		memset(r, 0, sizeof(*r));
		free(r);
	}
	// Every copy that held an op's memory held its registration too.
	pthread_cond_broadcast(&e->io_cv);
}

eng_reg *tw__eng_reg_check(tw_engine *e, uint64_t id, uint64_t key,
    uint64_t off, uint64_t len, unsigned access)
{
	eng_reg *r = tw__eng_reg_find(e, id);
	// Every test on its own line of reasoning: an unknown id, a key that
	// is not the registration's, an access it does not grant, and a range
	// that leaves it (written so that off + len cannot wrap).
	if (r == NULL || r->key != key || (r->access & access) != access
	    || off > r->len || len > r->len - off)
		return NULL;
	r->refs++;
	return r;
}

int tw_mem_register(tw_engine *e, void *addr, size_t len, int kind,
    unsigned access, uint64_t *mem_id)
{
	if (e == NULL || mem_id == NULL)
		return TW_EINVAL;
	if (kind == TW_MEM_CUDA)
		return TW_ENOTSUP;
	if (kind != TW_MEM_HOST || addr == NULL || len == 0
	    || (uintptr_t)addr + len < (uintptr_t)addr
	    || (access & ~(unsigned)(TW_ACCESS_READ | TW_ACCESS_WRITE)) != 0)
		return TW_EINVAL;
	eng_reg *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return TW_ENOMEM;
	if (tw__tcp_random(&r->key, sizeof(r->key)) != TW_OK) {
		free(r);
		return TW_ESYS;
	}
	r->base = addr;
	r->len = len;
	r->access = access;
	pthread_mutex_lock(&e->mtx);
	r->id = ++e->next_mem_id;
	HASH_ADD(hh, e->regs, id, sizeof(r->id), r);
	*mem_id = r->id;
	pthread_mutex_unlock(&e->mtx);
	return TW_OK;
}

int tw_mem_deregister(tw_engine *e, uint64_t mem_id)
{
	if (e == NULL)
		return TW_EINVAL;
	pthread_mutex_lock(&e->mtx);
	eng_reg *r = tw__eng_reg_find(e, mem_id);
	int status = TW_OK;
	if (r == NULL) {
		status = TW_EINVAL;
	} else if (r->users > 0) {
		status = TW_EAGAIN;
	} else {
		r->dead = true;
		HASH_DELETE(hh, e->regs, r);
		// A peer's request being applied finishes first: no byte of
		// the memory is touched once this returns.
		r->refs++;
		while (r->refs > 1)
			pthread_cond_wait(&e->io_cv, &e->mtx);
		tw__eng_reg_unref(e, r);
	}
	pthread_mutex_unlock(&e->mtx);
	return status;
}

int tw_mem_pack(tw_engine *e, uint64_t mem_id, tw_buf *desc)
{
	if (e == NULL || desc == NULL)
		return TW_EINVAL;
	unsigned char *b = malloc(TW_ENG_DESC_SIZE);
	if (b == NULL)
		return TW_ENOMEM;
	pthread_mutex_lock(&e->mtx);
	eng_reg *r = tw__eng_reg_find(e, mem_id);
	if (r != NULL) {
		tw__eng_desc d = { .kind = TW_MEM_HOST,
			.instance = e->instance,
			.id = r->id,
			.key = r->key,
			.len = r->len,
			.access = r->access };
		tw__eng_desc_encode(&d, b);
	}
	pthread_mutex_unlock(&e->mtx);
	if (r == NULL) {
		free(b);
		return TW_EINVAL;
	}
	desc->data = b;
	desc->len = TW_ENG_DESC_SIZE;
	return TW_OK;
}

int tw_mem_unpack(tw_engine *e, tw_peer peer, const void *desc, size_t len,
    uint64_t *rmem_id)
{
	if (e == NULL || rmem_id == NULL)
		return TW_EINVAL;
	tw__eng_desc d;
	if (tw__eng_desc_decode(desc, len, &d) != TW_OK) {
		LOGE(e, TW_LOG_WARN, "tw_mem_unpack: not a memory descriptor");
		return TW_EINVAL;
	}
	eng_rmem *m = calloc(1, sizeof(*m));
	if (m == NULL)
		return TW_ENOMEM;
	pthread_mutex_lock(&e->mtx);
	eng_peer *p = tw__eng_peer_get(e, peer);
	int status = TW_OK;
	if (p == NULL) {
		status = TW_EINVAL;
	} else if (p->instance != d.instance) {
		LOGE(e, TW_LOG_WARN,
		    "tw_mem_unpack: the descriptor comes from another engine "
		    "than peer '%s'",
		    p->name);
		status = TW_EINVAL;
	} else {
		m->id = ++e->next_rmem_id;
		m->rid = d.id;
		m->key = d.key;
		m->len = d.len;
		m->access = d.access;
		HASH_ADD(hh, p->rmems, id, sizeof(m->id), m);
		*rmem_id = m->id;
		m = NULL;
	}
	if (p != NULL)
		tw__eng_peer_unref(p);
	pthread_mutex_unlock(&e->mtx);
	free(m);
	return status;
}

eng_rmem *tw__eng_rmem_find(eng_peer *p, uint64_t id)
{
	eng_rmem *m = NULL;
	HASH_FIND(hh, p->rmems, &id, sizeof(id), m);
	return m;
}

void tw__eng_rmems_free(eng_peer *p)
{
	eng_rmem *m, *tmp;
	HASH_ITER(hh, p->rmems, m, tmp)
	{
		HASH_DELETE(hh, p->rmems, m);
		free(m);
	}
}

void tw__eng_regs_free(tw_engine *e)
{
	eng_reg *r, *tmp;
	HASH_ITER(hh, e->regs, r, tmp)
	{
		HASH_DELETE(hh, e->regs, r);
		free(r);
	}
}
