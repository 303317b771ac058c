// mem://NAME: parties that are threads of one process.
//
// Design notes.  Each party of a link owns an endpoint: a mailbox that its
// peers push into directly, keyed by the sender's rank.  Endpoints are found
// through a process-wide registry keyed by (link id, address), so separate
// links may reuse a NAME and parties may start in any order: test_send
// waits on the registry until the peer has registered.
//
// A send copies the payload once into a buffer that the receiver's tw_recv
// hands to the application as is, so a message costs exactly the one copy
// the API implies.  Flow control is exact: the push waits while the
// receiver already holds TW_OPT_RECV_BUFFER from this sender, counting each
// message by its tw__msg_cost.
//
// Lifetime: an endpoint is referenced by its own channels and by its peers'
// channels; it leaves the registry as soon as its root link closes (its
// first channel is destroyed) and is freed when the last reference goes.

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/mailbox.h"
#include "core/names.h"
#include "core/sync.h"
#include "transport/chanbase.h"
#include "transport/transport.h"

typedef struct mem_ep {
	struct mem_ep *next; // registry list, protected by reg_mtx
	char *reg_key; // "<link id> <address>"
	char *link_id;
	tw_mailbox *mb;
	uint64_t recv_buffer;
	uint64_t max_msg; // longer messages are refused, as over the wire
	unsigned refs; // protected by reg_mtx
	unsigned own; // own channels alive, protected by reg_mtx
	bool registered; // protected by reg_mtx
	_Atomic int closed; // left the registry: pushes to it fail
} mem_ep;

typedef struct mem_chan {
	tw__chanbase base; // first: the shared ops find it at impl
	mem_ep *self;
	mem_ep *_Atomic peer; // set once by test_send
	char *peer_key;
	uint32_t self_rank;
	uint32_t peer_rank;
} mem_chan;

static pthread_mutex_t reg_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t reg_cv;
static pthread_once_t reg_once = PTHREAD_ONCE_INIT;
static mem_ep *reg_head; // protected by reg_mtx

static void reg_init(void)
{
	tw__cond_init(&reg_cv);
}

static int mem_addr_check(const char *addr)
{
	if (strncmp(addr, "mem://", 6) != 0)
		return TW_EINVAL;
	return tw__valid_party_id(addr + 6) ? TW_OK : TW_EINVAL;
}

static char *reg_key_make(const char *link_id, const char *addr)
{
	size_t a = strlen(link_id), b = strlen(addr);
	char *k = malloc(a + b + 2);
	if (k != NULL) {
		memcpy(k, link_id, a);
		k[a] = ' ';
		memcpy(k + a + 1, addr, b + 1);
	}
	return k;
}

static mem_ep *reg_find(const char *key)
{
	for (mem_ep *e = reg_head; e != NULL; e = e->next)
		if (strcmp(e->reg_key, key) == 0)
			return e;
	return NULL;
}

static void ep_free(mem_ep *e);

static void ep_unref_locked(mem_ep *e)
{
	if (--e->refs == 0)
		ep_free(e);
}

static int mem_xsend(tw_channel *c, const char *key, const void *buf,
    size_t len, int flags, int64_t deadline, const _Atomic int *cancel)
{
	mem_chan *mc = c->impl;
	if (tw__chanbase_aborted(&mc->base))
		return TW_ECLOSED;
	mem_ep *peer = atomic_load_explicit(&mc->peer, memory_order_acquire);
	if (peer == NULL
	    || atomic_load_explicit(&peer->closed, memory_order_acquire))
		return TW_EPEER;
	// The receiver's limit, which shm:// and tcp:// receivers enforce by
	// dropping the peer: refusing it here keeps a sender that ignores it
	// from passing its tests over mem:// only.
	if ((uint64_t)len > peer->max_msg)
		return TW_ETOOBIG;
	void *copy = NULL;
	if (len > 0) {
		if ((copy = malloc(len)) == NULL)
			return TW_ENOMEM;
		memcpy(copy, buf, len);
	}
	// Control messages (acks, hellos) never wait for flow control: they
	// are what lets the data that holds the buffer drain.
	uint64_t limit = tw__key_is_ctl(key) ? UINT64_MAX : peer->recv_buffer;
	int status = tw__mailbox_push_owned(
	    peer->mb, mc->self_rank, key, copy, len, limit, deadline, cancel);
	if (status != TW_OK)
		free(copy);
	// The peer's mailbox refuses (TW_ECLOSED, TW_EPEER) once the receiver
	// aborted, closed or left.
	return tw__chanbase_send_status(&mc->base, status, cancel);
}

static int mem_send(
    tw_channel *c, const char *key, const void *buf, size_t len)
{
	return mem_xsend(c, key, buf, len, 0, TW_FOREVER, NULL);
}

static int mem_test_send(tw_channel *c, int64_t timeout_ms)
{
	mem_chan *mc = c->impl;
	int64_t deadline = tw__deadline_ms(timeout_ms);
	pthread_once(&reg_once, reg_init);
	pthread_mutex_lock(&reg_mtx);
	mem_ep *peer;
	while ((peer = reg_find(mc->peer_key)) == NULL
	    && !tw__chanbase_aborted(&mc->base)) {
		if (tw__cond_wait_until(&reg_cv, &reg_mtx, deadline)
		    == ETIMEDOUT)
			break;
	}
	if (peer != NULL
	    && atomic_load_explicit(&mc->peer, memory_order_relaxed) == NULL) {
		peer->refs++;
		atomic_store_explicit(&mc->peer, peer, memory_order_release);
	}
	pthread_mutex_unlock(&reg_mtx);
	if (peer == NULL)
		return tw__chanbase_aborted(&mc->base) ? TW_ECLOSED
		                                       : TW_ETIMEDOUT;
	return tw__chanbase_send_hello(c, mem_xsend, TW_FOREVER);
}

static void mem_abort(tw_channel *c)
{
	mem_chan *mc = c->impl;
	tw__chanbase_set_aborted(&mc->base);
	tw_mailbox_abort(mc->self->mb);
	mem_ep *peer = atomic_load_explicit(&mc->peer, memory_order_acquire);
	if (peer != NULL)
		tw_mailbox_close_from(peer->mb, mc->self_rank);
	pthread_mutex_lock(&reg_mtx);
	pthread_cond_broadcast(&reg_cv); // a test_send waiting for its peer
	pthread_mutex_unlock(&reg_mtx);
}

// The peer's sends find out at once: its pushes into this party's mailbox
// are refused there, which mem_xsend reports as TW_EPEER.
static void mem_abort_ns(tw_channel *c, const char *ns)
{
	mem_chan *mc = c->impl;
	tw__mailbox_abort_ns(mc->self->mb, ns);
	mem_ep *peer = atomic_load_explicit(&mc->peer, memory_order_acquire);
	if (peer != NULL) {
		tw__mailbox_peer_abort_ns(peer->mb, mc->self_rank, ns);
		tw__mailbox_kick(peer->mb);
	}
}

static void mem_close_ns(tw_channel *c, const char *ns)
{
	mem_chan *mc = c->impl;
	tw__mailbox_drop_ns(mc->self->mb, mc->peer_rank, ns);
	mem_ep *peer = atomic_load_explicit(&mc->peer, memory_order_acquire);
	if (peer != NULL)
		tw__mailbox_close_ns(peer->mb, mc->self_rank, ns);
}

static void mem_destroy(tw_channel *c)
{
	mem_chan *mc = c->impl;
	mem_ep *peer = atomic_load_explicit(&mc->peer, memory_order_relaxed);
	mem_ep *self = mc->self;
	// Channels die together with their root link.  The first one takes
	// the endpoint out of the registry and fails every push still aimed at
	// it, before any peer hears of the close, so that a peer that saw
	// TW_EPEER on a receive cannot then send successfully.
	pthread_mutex_lock(&reg_mtx);
	if (self->registered) {
		mem_ep **pp = &reg_head;
		while (*pp != self)
			pp = &(*pp)->next;
		*pp = self->next;
		self->registered = false;
		atomic_store_explicit(&self->closed, 1, memory_order_release);
		tw_mailbox_abort(self->mb);
	}
	pthread_mutex_unlock(&reg_mtx);
	if (peer != NULL)
		tw_mailbox_close_from(peer->mb, mc->self_rank);
	pthread_mutex_lock(&reg_mtx);
	self->own--;
	if (peer != NULL)
		ep_unref_locked(peer);
	ep_unref_locked(self);
	pthread_mutex_unlock(&reg_mtx);
	free(mc->peer_key);
	free(mc);
}

static const tw_channel_ops mem_ops = {
	.send = mem_send,
	.send_async = NULL,
	.recv = tw__rxbox_recv,
	.test_send = mem_test_send,
	.test_recv = tw__chanbase_test_recv,
	.wait_pending = NULL, // a send is delivered when it returns
	.abort = mem_abort,
	.destroy = mem_destroy,
	.size = sizeof(tw_channel_ops),
};

static const tw__chan_xops mem_xops = {
	.size = sizeof(tw__chan_xops),
	.send = mem_xsend,
	.recv = tw__rxbox_recv_until,
	.recv_into = tw__rxbox_recv_into,
	.probe = tw__rxbox_probe,
	.abort_ns = mem_abort_ns,
	.close_ns = mem_close_ns,
	.open_ns = tw__chanbase_open_ns,
	.unreceived_peak = tw__rxbox_peak,
	.wait_pending = tw__no_wait_pending, // delivered when a send returns
	.ns_entries = tw__rxbox_ns_entries,
	.trim = tw__no_trim,
};

static tw__chanbase *chan_new(const tw__link_cfg *cfg, void *ep, size_t peer)
{
	mem_ep *self = ep;
	mem_chan *mc = calloc(1, sizeof(*mc));
	if (mc == NULL)
		return NULL;
	mc->peer_key = reg_key_make(cfg->link_id, cfg->parties[peer].addr);
	if (mc->peer_key == NULL) {
		free(mc);
		return NULL;
	}
	tw__chanbase_init(
	    &mc->base, &mem_ops, self->mb, self->link_id, cfg, peer);
	mc->self = self;
	mc->self_rank = (uint32_t)cfg->self;
	mc->peer_rank = (uint32_t)peer;
	return &mc->base;
}

// Frees a channel that never ran (open failed half way).
static void chan_drop(tw__chanbase *b)
{
	mem_chan *mc = (mem_chan *)b;
	free(mc->peer_key);
	free(mc);
}

static void ep_free(mem_ep *e)
{
	tw_mailbox_free(e->mb);
	free(e->reg_key);
	free(e->link_id);
	free(e);
}

static int mem_open(const tw__link_cfg *cfg, tw_channel **chans)
{
	pthread_once(&reg_once, reg_init);
	const char *addr = cfg->parties[cfg->self].addr;
	if (cfg->size < 2)
		return TW_OK; // a link of one party has no peer to look it up
	mem_ep *self = calloc(1, sizeof(*self));
	if (self == NULL)
		return TW_ENOMEM;
	self->reg_key = reg_key_make(cfg->link_id, addr);
	self->link_id = strdup(cfg->link_id);
	self->mb = tw__chanbase_mailbox_new(); // see mem_close_ns
	self->recv_buffer = (uint64_t)cfg->opts[TW_OPT_RECV_BUFFER];
	self->max_msg = (uint64_t)cfg->opts[TW_OPT_MAX_MSG_SIZE];
	if (self->reg_key == NULL || self->link_id == NULL || self->mb == NULL
	    || tw__chanbase_open_all(cfg, self, chan_new, chan_drop, chans)
	        != TW_OK) {
		ep_free(self);
		return TW_ENOMEM;
	}
	self->refs = self->own = (unsigned)cfg->size - 1;
	pthread_mutex_lock(&reg_mtx);
	if (reg_find(self->reg_key) != NULL) {
		pthread_mutex_unlock(&reg_mtx);
		TW_ERROR("mem", "cannot bind %s for link %s: address in use",
		    addr, cfg->link_id);
		tw__chanbase_free_all(cfg, chan_drop, chans);
		ep_free(self);
		return TW_ESYS;
	}
	self->registered = true;
	self->next = reg_head;
	reg_head = self;
	pthread_cond_broadcast(&reg_cv);
	pthread_mutex_unlock(&reg_mtx);
	return TW_OK;
}

const tw__transport tw__mem_transport = {
	.scheme = "mem",
	.addr_check = mem_addr_check,
	.open = mem_open,
	.ops = &mem_ops,
	.xops = &mem_xops,
};
