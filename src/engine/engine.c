// The engine: options, listening, connecting, accepting, freeing.
//
// A connection is a link of two parties made for it alone: rank 0 the
// accepting engine, rank 1 the connecting one, which always dials (its
// peer may not be able to reach it).  Its id names both engines and a
// fresh nonce.  The accepting side learns of it from its tcp:// anchor
// (a handshake or OPEN that names a link it does not have yet) or, for
// mem://, from the connecting engine itself through a registry of this
// process; a thread then creates its side of the link.

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/names.h"
#include "core/sync.h"
#include "engine/eng.h"
#include "link/link_int.h"
#include "transport/tcp/tcp_anchor.h"
#include "transport/tcp/tcp_auth.h"
#include "transport/tcp/tcp_proto.h"
#include "transport/tcp/tcp_sock.h"

#define KiB ((int64_t)1024)
#define MiB (1024 * KiB)
#define GiB (1024 * MiB)

// How long the accepting side's half of a link may take to form: the
// connecting side is there already.
#define ACCEPT_CREATE_MS 5000

// --- the mem:// registry ------------------------------------------------------------

static pthread_mutex_t memreg_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t memreg_cv = PTHREAD_COND_INITIALIZER;
typedef struct memreg {
	struct memreg *next;
	tw_engine *e;
} memreg;
static memreg *memreg_head; // by memreg_mtx

static tw_engine *memreg_find(const char *addr)
{
	for (memreg *m = memreg_head; m != NULL; m = m->next)
		if (strcmp(m->e->addr, addr) == 0)
			return m->e;
	return NULL;
}

// --- engines ---------------------------------------------------------------------------

int tw_engine_new(const char *name, tw_engine **out)
{
	if (out == NULL)
		return TW_EINVAL;
	*out = NULL;
	if (!tw__eng_name_ok(name)) {
		TW_ERROR("engine",
		    "invalid engine name '%.64s': want 1..64 bytes of "
		    "[A-Za-z0-9._-]",
		    name != NULL ? name : "(null)");
		return TW_EINVAL;
	}
	tw__tcp_crypto_init();
	tw_engine *e = calloc(1, sizeof(*e));
	if (e == NULL)
		return TW_ENOMEM;
	snprintf(e->name, sizeof(e->name), "%s", name);
	if (tw__tcp_random(&e->instance, sizeof(e->instance)) != TW_OK) {
		free(e);
		return TW_ESYS;
	}
	e->instance |= 1;
	e->stripes = 1;
	e->chunk = 1 * MiB;
	e->window = 16;
	e->connect_ms = 30000;
	e->heartbeat_ms = 1000;
	e->max_msg = 1 * MiB;
	e->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (e->efd < 0)
		TW_WARN("engine", "eventfd: %s: tw_engine_fd is -1",
		    strerror(errno));
	pthread_mutex_init(&e->mtx, NULL);
	pthread_mutex_init(&e->inc_mtx, NULL);
	tw__cond_init(&e->cv);
	tw__cond_init(&e->io_cv);
	tw__cond_init(&e->timer_cv);
	*out = e;
	return TW_OK;
}

int tw_engine_set(tw_engine *e, int opt, int64_t v)
{
	if (e == NULL)
		return TW_EINVAL;
	int64_t *slot = NULL, lo = 0, hi = 0;
	switch (opt) {
	case TW_OPT_STRIPES:
		slot = &e->stripes, lo = 1, hi = 64;
		break;
	case TW_OPT_CHUNK_SIZE:
		slot = &e->chunk, lo = 4 * KiB, hi = 64 * MiB;
		break;
	case TW_OPT_WINDOW:
		slot = &e->window, lo = 1, hi = 1024;
		break;
	case TW_OPT_CONNECT_TIMEOUT_MS:
		slot = &e->connect_ms, lo = 1, hi = (int64_t)1 << 31;
		break;
	case TW_OPT_HEARTBEAT_MS:
		slot = &e->heartbeat_ms, lo = 0, hi = 3600000;
		if (v != 0 && v < 10)
			return TW_EINVAL;
		break;
	case TW_OPT_MAX_MSG_SIZE:
		slot = &e->max_msg, lo = 0, hi = 1 * GiB;
		break;
	case TW_OPT_SHM_LOCAL:
		slot = &e->shm_local, lo = 0, hi = 1;
		break;
	default:
		return TW_EINVAL;
	}
	if (v < lo || v > hi)
		return TW_EINVAL;
	pthread_mutex_lock(&e->mtx);
	int status = e->frozen ? TW_EINVAL : TW_OK;
	if (status == TW_OK)
		*slot = v;
	pthread_mutex_unlock(&e->mtx);
	return status;
}

int tw_engine_set_secret(tw_engine *e, const void *key, size_t len)
{
	if (e == NULL || (key == NULL && len > 0) || len > 1024)
		return TW_EINVAL;
	unsigned char *copy = NULL;
	if (len > 0 && (copy = malloc(len)) == NULL)
		return TW_ENOMEM;
	if (len > 0)
		memcpy(copy, key, len);
	pthread_mutex_lock(&e->mtx);
	if (e->frozen) {
		pthread_mutex_unlock(&e->mtx);
		free(copy);
		return TW_EINVAL;
	}
	if (e->secret != NULL)
		memset(e->secret, 0, e->secret_len);
	free(e->secret);
	e->secret = copy;
	e->secret_len = len;
	pthread_mutex_unlock(&e->mtx);
	return TW_OK;
}

int tw_engine_set_tls(tw_engine *e, const char *cert_file,
    const char *key_file, const char *ca_file)
{
	if (e == NULL || cert_file == NULL || key_file == NULL
	    || ca_file == NULL)
		return TW_EINVAL;
	char *c[3] = { strdup(cert_file), strdup(key_file), strdup(ca_file) };
	if (c[0] == NULL || c[1] == NULL || c[2] == NULL) {
		for (int i = 0; i < 3; i++)
			free(c[i]);
		return TW_ENOMEM;
	}
	pthread_mutex_lock(&e->mtx);
	bool frozen = e->frozen;
	for (int i = 0; i < 3 && !frozen; i++) {
		free(e->tls[i]);
		e->tls[i] = c[i];
	}
	pthread_mutex_unlock(&e->mtx);
	if (frozen) {
		for (int i = 0; i < 3; i++)
			free(c[i]);
		return TW_EINVAL;
	}
	return TW_OK;
}

// The description of link `link_id` between the accepting engine (rank
// 0) and the connecting one (rank 1), with this engine's options.
static tw_desc *link_desc(tw_engine *e, const char *link_id, const char *name0,
    const char *addr0, const char *name1, const char *addr1,
    int64_t connect_ms)
{
	tw_desc *d = tw_desc_new(link_id);
	if (d == NULL)
		return NULL;
	// Everything in flight fits the receiver's buffer at once, so that
	// the receiving thread never waits for the sender's flow control.
	int64_t frame = e->chunk + 256;
	int64_t window = e->stripes * e->window * frame * 2
	    + (e->max_msg + 256) * 2 + 1 * MiB;
	int64_t max_msg = e->chunk > e->max_msg ? e->chunk : e->max_msg;
	int status = tw_desc_add_party(d, name0, addr0);
	if (status == TW_OK)
		status = tw_desc_add_party(d, name1, addr1);
	if (status == TW_OK)
		status = tw_desc_set(d, TW_OPT_STRIPES, e->stripes);
	if (status == TW_OK)
		status = tw_desc_set(d, TW_OPT_CHUNK_SIZE,
		    e->chunk < 256 * KiB ? 256 * KiB : e->chunk);
	if (status == TW_OK)
		status = tw_desc_set(d, TW_OPT_RECV_BUFFER, window);
	if (status == TW_OK)
		status = tw_desc_set(d, TW_OPT_MAX_MSG_SIZE, max_msg + 256);
	if (status == TW_OK)
		status = tw_desc_set(d, TW_OPT_HEARTBEAT_MS, e->heartbeat_ms);
	if (status == TW_OK)
		status = tw_desc_set(d, TW_OPT_CONNECT_TIMEOUT_MS, connect_ms);
	if (status == TW_OK)
		status = tw_desc_set(d, TW_OPT_RECV_TIMEOUT_MS, -1);
	if (status == TW_OK && e->secret != NULL)
		status = tw_desc_set_secret(d, e->secret, e->secret_len);
	if (status == TW_OK && e->tls[0] != NULL)
		status = tw_desc_set_tls(d, e->tls[0], e->tls[1], e->tls[2]);
	if (status != TW_OK) {
		tw_desc_free(d);
		return NULL;
	}
	tw__desc_set_dial_rank(d, 1);
	return d;
}

// --- accepting -------------------------------------------------------------------------

// A live peer named `name`, or NULL.  mtx held.
static eng_peer *peer_named(tw_engine *e, const char *name, bool any)
{
	for (size_t i = 0; i < e->npeers; i++) {
		eng_peer *p = e->peers[i];
		if (p != NULL && !p->gone && strcmp(p->name, name) == 0
		    && (any || p->state == PEER_LIVE))
			return p;
	}
	return NULL;
}

static void *incoming_main(void *arg)
{
	eng_incoming *in = arg;
	tw_engine *e = in->e;
	pthread_mutex_lock(&e->mtx);
	tw_desc *d = link_desc(e, in->link_id, e->name, e->addr, in->peer_name,
	    in->peer_addr,
	    e->connect_ms < ACCEPT_CREATE_MS ? e->connect_ms
	                                     : ACCEPT_CREATE_MS);
	pthread_mutex_unlock(&e->mtx);
	tw_link *link = NULL;
	int status = d != NULL ? tw_link_create(d, 0, &link) : TW_ENOMEM;
	tw_desc_free(d);
	if (status == TW_OK) {
		pthread_mutex_lock(&e->mtx);
		eng_peer *old = peer_named(e, in->peer_name, true);
		bool taken = old != NULL && old->state != PEER_FAILED;
		pthread_mutex_unlock(&e->mtx);
		eng_peer *p = NULL;
		if (taken) {
			LOGE(e, TW_LOG_WARN,
			    "a second engine named '%s' connects: refused",
			    in->peer_name);
			tw_link_abort(link);
			tw_link_close(link);
		} else if ((status = tw__eng_peer_start(
		                e, link, 1, in->peer_name, 0, &p))
		    != TW_OK) {
			tw_link_abort(link);
			tw_link_close(link);
		}
	} else {
		LOGE(e, TW_LOG_WARN, "engine '%s' could not connect: %s",
		    in->peer_name, tw_strerror(status));
	}
	pthread_mutex_lock(&e->inc_mtx);
	in->started = false; // finished: reaped by the next arrival or free
	pthread_mutex_unlock(&e->inc_mtx);
	return NULL;
}

// Joins and frees the finished requests.  inc_mtx held.
static void incoming_reap(tw_engine *e, bool all)
{
	eng_incoming **pp = &e->inc;
	while (*pp != NULL) {
		eng_incoming *in = *pp;
		if (!in->started || all) {
			*pp = in->next;
			pthread_mutex_unlock(&e->inc_mtx);
			pthread_join(in->th, NULL);
			pthread_mutex_lock(&e->inc_mtx);
			free(in);
			e->ninc--;
			pp = &e->inc; // the list may have changed
		} else {
			pp = &in->next;
		}
	}
}

// A peer wants link `link_id` (prefix "tw.engine/<our name>/").  Called
// under the tcp:// node's lock or from a mem:// connect: records it and
// starts a thread that creates our half.
static void want_link(void *arg, const char *link_id, const char *peer_addr)
{
	tw_engine *e = arg;
	size_t pre = strlen(ENG_LINK_PREFIX) + strlen(e->name) + 1;
	const char *rest = link_id + pre;
	const char *slash = strchr(rest, '/');
	if (slash == NULL || (size_t)(slash - rest) > TW_ENG_NAME_MAX
	    || strlen(link_id) >= sizeof(((eng_incoming *)0)->link_id)
	    || strlen(peer_addr) > TW_ENG_ADDR_MAX)
		return;
	pthread_mutex_lock(&e->inc_mtx);
	incoming_reap(e, false);
	bool known = e->inc_closed || e->ninc >= ENG_INCOMING_MAX;
	for (eng_incoming *in = e->inc; in != NULL && !known; in = in->next)
		known = strcmp(in->link_id, link_id) == 0;
	eng_incoming *in = known ? NULL : calloc(1, sizeof(*in));
	if (in != NULL) {
		snprintf(in->link_id, sizeof(in->link_id), "%s", link_id);
		memcpy(in->peer_name, rest, (size_t)(slash - rest));
		in->peer_name[slash - rest] = '\0';
		snprintf(
		    in->peer_addr, sizeof(in->peer_addr), "%s", peer_addr);
		in->e = e;
		in->started = true;
		if (!tw__eng_name_ok(in->peer_name)
		    || pthread_create(&in->th, NULL, incoming_main, in) != 0) {
			free(in);
		} else {
			in->next = e->inc;
			e->inc = in;
			e->ninc++;
		}
	}
	pthread_mutex_unlock(&e->inc_mtx);
}

int tw_engine_listen(tw_engine *e, const char *addr)
{
	if (e == NULL || addr == NULL)
		return TW_EINVAL;
	pthread_mutex_lock(&e->mtx);
	// One listen at a time, and once: a second caller racing the first
	// must not get past this before the first set e->addr.
	if (e->addr != NULL || e->listening) {
		pthread_mutex_unlock(&e->mtx);
		return TW_EINVAL;
	}
	bool was_frozen = e->frozen;
	e->frozen = true;
	e->listening = true;
	pthread_mutex_unlock(&e->mtx);
	// Finished requests are joined as new ones come; inc_mtx only.
	pthread_mutex_lock(&e->inc_mtx);
	incoming_reap(e, false);
	pthread_mutex_unlock(&e->inc_mtx);
	char prefix[sizeof(ENG_LINK_PREFIX) + TW_ENG_NAME_MAX + 2];
	snprintf(prefix, sizeof(prefix), ENG_LINK_PREFIX "%s/", e->name);
	int status;
	if (strncmp(addr, "tcp://", 6) == 0) {
		tw__tcp_anchor *a = NULL;
		status = tw__tcp_anchor_new(addr,
		    e->tls[0] != NULL ? (const char *const *)e->tls : NULL,
		    prefix, want_link, e, &a);
		if (status == TW_OK) {
			pthread_mutex_lock(&e->mtx);
			e->anchor = a;
			e->addr = strdup(tw__tcp_anchor_addr(a));
			status = e->addr != NULL ? TW_OK : TW_ENOMEM;
			pthread_mutex_unlock(&e->mtx);
		}
	} else if (strncmp(addr, "mem://", 6) == 0
	    && tw__valid_party_id(addr + 6)) {
		pthread_mutex_lock(&memreg_mtx);
		memreg *m = calloc(1, sizeof(*m));
		status = m == NULL              ? TW_ENOMEM
		    : memreg_find(addr) != NULL ? TW_EINVAL
		                                : TW_OK;
		if (status == TW_OK && (e->addr = strdup(addr)) == NULL)
			status = TW_ENOMEM;
		if (status == TW_OK) {
			m->e = e;
			m->next = memreg_head;
			memreg_head = m;
			e->mem_listed = true;
			pthread_cond_broadcast(&memreg_cv);
		} else {
			free(m);
		}
		pthread_mutex_unlock(&memreg_mtx);
	} else {
		status = TW_EINVAL;
	}
	if (status != TW_OK) {
		LOGE(e, TW_LOG_ERROR, "cannot listen at %s: %s", addr,
		    tw_strerror(status));
		// A listen that failed changes nothing: options may still be
		// set, and listen tried again.
		pthread_mutex_lock(&e->mtx);
		e->listening = false;
		e->frozen = was_frozen;
		pthread_mutex_unlock(&e->mtx);
	}
	return status;
}

int tw_engine_info(tw_engine *e, tw_buf *info)
{
	if (e == NULL || info == NULL)
		return TW_EINVAL;
	tw__eng_info in = { .instance = 0 };
	pthread_mutex_lock(&e->mtx);
	bool listening = e->addr != NULL;
	if (listening) {
		in.instance = e->instance;
		snprintf(in.name, sizeof(in.name), "%s", e->name);
		snprintf(in.addr, sizeof(in.addr), "%s", e->addr);
	}
	pthread_mutex_unlock(&e->mtx);
	size_t n = listening ? tw__eng_info_size(&in) : 0;
	if (n == 0)
		return TW_EINVAL;
	unsigned char *b = malloc(n);
	if (b == NULL)
		return TW_ENOMEM;
	tw__eng_info_encode(&in, b);
	info->data = b;
	info->len = n;
	return TW_OK;
}

int tw_engine_accept(
    tw_engine *e, const char *peer_name, int64_t timeout_ms, tw_peer *peer)
{
	if (e == NULL || peer == NULL || !tw__eng_name_ok(peer_name))
		return TW_EINVAL;
	int64_t deadline = tw__deadline_ms(timeout_ms);
	pthread_mutex_lock(&e->mtx);
	if (e->addr == NULL) {
		pthread_mutex_unlock(&e->mtx);
		return TW_EINVAL;
	}
	eng_peer *p;
	while ((p = peer_named(e, peer_name, false)) == NULL
	    && tw__cond_wait_until(&e->cv, &e->mtx, deadline) != ETIMEDOUT)
		;
	if (p == NULL) {
		// One that connected and failed since is still that peer.
		p = peer_named(e, peer_name, true);
		if (p != NULL && p->state != PEER_FAILED)
			p = NULL;
	}
	if (p != NULL)
		*peer = p->id;
	pthread_mutex_unlock(&e->mtx);
	return p != NULL ? TW_OK : TW_ETIMEDOUT;
}

// --- connecting ---------------------------------------------------------------------

// This engine's address for a link to `target`: where it listens, or a
// port of its own that only the links it dials name.
static int my_addr_for(tw_engine *e, const char *target, char *out, size_t cap)
{
	pthread_mutex_lock(&e->mtx);
	const char *mine = e->anchor != NULL ? e->addr
	    : e->out_anchor != NULL ? tw__tcp_anchor_addr(e->out_anchor)
	                            : NULL;
	if (mine != NULL)
		snprintf(out, cap, "%s", mine);
	pthread_mutex_unlock(&e->mtx);
	if (mine != NULL)
		return TW_OK;
	char local[TW_ENG_ADDR_MAX + 1];
	int status = tw__tcp_local_addr_for(target, local, sizeof(local));
	tw__tcp_anchor *a = NULL;
	if (status == TW_OK)
		status = tw__tcp_anchor_new(local,
		    e->tls[0] != NULL ? (const char *const *)e->tls : NULL,
		    NULL, NULL, NULL, &a);
	if (status != TW_OK)
		return status;
	pthread_mutex_lock(&e->mtx);
	if (e->out_anchor == NULL) {
		e->out_anchor = a;
		a = NULL;
	}
	snprintf(out, cap, "%s", tw__tcp_anchor_addr(e->out_anchor));
	pthread_mutex_unlock(&e->mtx);
	tw__tcp_anchor_free(a);
	return TW_OK;
}

static int connect_info(tw_engine *e, const tw__eng_info *info, tw_peer *peer)
{
	tw__eng_info in = *info;
	if (in.instance == e->instance || strcmp(in.name, e->name) == 0) {
		LOGE(e, TW_LOG_WARN,
		    "tw_engine_connect: engine '%s' has this engine's name",
		    in.name);
		return TW_EINVAL;
	}
	pthread_mutex_lock(&e->mtx);
	e->frozen = true;
	int64_t deadline = tw__deadline_ms(e->connect_ms);
	for (size_t i = 0; i < e->npeers; i++) {
		eng_peer *p = e->peers[i];
		if (p != NULL && !p->gone && p->state == PEER_LIVE
		    && (in.instance != 0 ? p->instance == in.instance
		                         : strcmp(p->name, in.name) == 0)) {
			*peer = p->id;
			pthread_mutex_unlock(&e->mtx);
			return TW_OK;
		}
	}
	pthread_mutex_unlock(&e->mtx);

	uint64_t nonce;
	int status = tw__tcp_random(&nonce, sizeof(nonce));
	if (status != TW_OK)
		return status;
	char link_id[TW_LINK_ID_MAX + 1];
	snprintf(link_id, sizeof(link_id), ENG_LINK_PREFIX "%s/%s/%016llx",
	    in.name, e->name, (unsigned long long)nonce);
	char mine[TW_ENG_ADDR_MAX + 1];
	if (strncmp(in.addr, "tcp://", 6) == 0) {
		status = my_addr_for(e, in.addr, mine, sizeof(mine));
		if (status != TW_OK) {
			LOGE(e, TW_LOG_ERROR,
			    "tw_engine_connect: no local address to reach %s",
			    in.addr);
			return status;
		}
	} else {
		snprintf(mine, sizeof(mine), "mem://tw.engine.%016llx",
		    (unsigned long long)nonce);
		// The accepting engine hears of the link from us.
		pthread_mutex_lock(&memreg_mtx);
		tw_engine *a;
		while ((a = memreg_find(in.addr)) == NULL
		    && tw__cond_wait_until(&memreg_cv, &memreg_mtx, deadline)
		        != ETIMEDOUT)
			;
		if (a != NULL && in.instance != 0
		    && a->instance != in.instance)
			a = NULL; // another engine listens there now
		if (a != NULL)
			want_link(a, link_id, mine);
		pthread_mutex_unlock(&memreg_mtx);
		if (a == NULL) {
			LOGE(e, TW_LOG_WARN,
			    "tw_engine_connect: no engine '%s' at %s", in.name,
			    in.addr);
			return TW_ETIMEDOUT;
		}
	}
	pthread_mutex_lock(&e->mtx);
	tw_desc *d = link_desc(e, link_id, in.name, in.addr, e->name, mine,
	    tw__ms_left(deadline) > 0 ? tw__ms_left(deadline) : 1);
	pthread_mutex_unlock(&e->mtx);
	if (d == NULL)
		return TW_ENOMEM;
	tw_link *link = NULL;
	status = tw_link_create(d, 1, &link);
	tw_desc_free(d);
	if (status != TW_OK) {
		LOGE(e, TW_LOG_WARN, "cannot connect to engine '%s' at %s: %s",
		    in.name, in.addr, tw_strerror(status));
		return status;
	}
	eng_peer *p;
	status = tw__eng_peer_start(e, link, 0, in.name, in.instance, &p);
	if (status != TW_OK) {
		tw_link_abort(link);
		tw_link_close(link);
		return status;
	}
	pthread_mutex_lock(&e->mtx);
	while (p->state == PEER_HELLO
	    && tw__cond_wait_until(&e->cv, &e->mtx, deadline) != ETIMEDOUT)
		;
	status = p->state == PEER_LIVE ? TW_OK
	    : p->state == PEER_FAILED  ? p->status
	                               : TW_ETIMEDOUT;
	tw_peer id = p->id;
	pthread_mutex_unlock(&e->mtx);
	if (status != TW_OK) {
		tw_engine_disconnect(e, id);
		return status == TW_ECLOSED ? TW_EPEER : status;
	}
	*peer = id;
	return TW_OK;
}

int tw_engine_connect(
    tw_engine *e, const void *info, size_t len, tw_peer *peer)
{
	if (e == NULL || peer == NULL)
		return TW_EINVAL;
	tw__eng_info in;
	if (tw__eng_info_decode(info, len, &in) != TW_OK) {
		LOGE(e, TW_LOG_WARN,
		    "tw_engine_connect: not an engine info blob");
		return TW_EINVAL;
	}
	return connect_info(e, &in, peer);
}

int tw_engine_connect_to(
    tw_engine *e, const char *addr, const char *peer_name, tw_peer *peer)
{
	if (e == NULL || peer == NULL || addr == NULL
	    || !tw__eng_name_ok(peer_name))
		return TW_EINVAL;
	// Any instance: the peer's HELLO names it.
	tw__eng_info in = { .instance = 0 };
	snprintf(in.name, sizeof(in.name), "%s", peer_name);
	if (snprintf(in.addr, sizeof(in.addr), "%s", addr)
	        >= (int)sizeof(in.addr)
	    || tw__eng_info_size(&in) == 0)
		return TW_EINVAL;
	return connect_info(e, &in, peer);
}

const char *tw_engine_peer_name(tw_engine *e, tw_peer peer)
{
	if (e == NULL)
		return NULL;
	pthread_mutex_lock(&e->mtx);
	eng_peer *p = tw__eng_peer_get(e, peer);
	const char *name = p != NULL ? p->name : NULL;
	if (p != NULL)
		tw__eng_peer_unref(p);
	pthread_mutex_unlock(&e->mtx);
	// The peer lives until the engine is freed (the table keeps it).
	return name;
}

// Takes peer p out of the table, stops it, drops the table's reference.
static void peer_drop(tw_engine *e, eng_peer *p)
{
	pthread_mutex_lock(&e->mtx);
	p->gone = true;
	p->drain = p->state != PEER_FAILED; // what was queued goes first
	tw__eng_peer_fail(p, TW_ECLOSED);
	pthread_mutex_unlock(&e->mtx);
	tw__eng_peer_stop(p, true);
}

int tw_engine_disconnect(tw_engine *e, tw_peer peer)
{
	if (e == NULL)
		return TW_EINVAL;
	pthread_mutex_lock(&e->mtx);
	eng_peer *p = tw__eng_peer_get(e, peer);
	if (p != NULL)
		p->gone = true; // one disconnect stops it
	pthread_mutex_unlock(&e->mtx);
	if (p == NULL)
		return TW_EINVAL;
	peer_drop(e, p);
	pthread_mutex_lock(&e->mtx);
	tw__eng_peer_unref(p);
	pthread_mutex_unlock(&e->mtx);
	return TW_OK;
}

void tw_engine_free(tw_engine *e)
{
	if (e == NULL)
		return;
	// No new peer: the registry and the anchor forget us, the requests
	// under way end.
	if (e->mem_listed) {
		pthread_mutex_lock(&memreg_mtx);
		memreg **pp = &memreg_head;
		while ((*pp)->e != e)
			pp = &(*pp)->next;
		memreg *m = *pp;
		*pp = m->next;
		free(m);
		pthread_mutex_unlock(&memreg_mtx);
	}
	pthread_mutex_lock(&e->inc_mtx);
	e->inc_closed = true;
	pthread_mutex_unlock(&e->inc_mtx);
	pthread_mutex_lock(&e->mtx);
	e->closing = true;
	pthread_mutex_unlock(&e->mtx);
	pthread_mutex_lock(&e->inc_mtx);
	incoming_reap(e, true);
	pthread_mutex_unlock(&e->inc_mtx);
	for (size_t i = 0; i < e->npeers; i++) {
		eng_peer *p = e->peers[i];
		if (p == NULL || p->gone)
			continue;
		peer_drop(e, p);
	}
	tw__eng_xfers_shutdown(e);
	pthread_mutex_lock(&e->mtx);
	for (size_t i = 0; i < e->npeers; i++) {
		eng_peer *p = e->peers[i];
		if (p != NULL && p->refs > 0 && p->link == NULL) {
			e->peers[i] = NULL;
			tw__eng_peer_unref(p);
		}
	}
	pthread_mutex_unlock(&e->mtx);
	tw__tcp_anchor_free(e->anchor);
	tw__tcp_anchor_free(e->out_anchor);
	tw__eng_notes_free(e);
	tw__eng_regs_free(e);
	if (e->efd >= 0)
		close(e->efd);
	if (e->secret != NULL)
		memset(e->secret, 0, e->secret_len);
	free(e->secret);
	for (int i = 0; i < 3; i++)
		free(e->tls[i]);
	free(e->peers);
	free(e->addr);
	pthread_cond_destroy(&e->timer_cv);
	pthread_cond_destroy(&e->cv);
	pthread_cond_destroy(&e->io_cv);
	pthread_mutex_destroy(&e->inc_mtx);
	pthread_mutex_destroy(&e->mtx);
	free(e);
}
