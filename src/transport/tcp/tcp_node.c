// Nodes of the tcp:// transport: one per listening address and process.
//
// Design notes.  A node owns the shared listener of its address, one I/O
// thread (an epoll poller) that reads every connection of the node and
// runs the accepting side of handshakes (tcp_accept.c), and the list of
// peers: one per peer process, shared by every link between the two
// (tcp_peer.c).  It knows the links (endpoints) of this process that use
// the address.
//
// Dialing.  Each link that needs a peer it should connect to dials it
// itself, unless a connection to that address is there already: a link
// never waits for another link's dial (whose peer may not have created
// that other link yet).  When two dials of this process to one address
// finish at about the same time, the older peer is kept and the newer one
// closed with BYE; links bind to whichever is kept.
//
// OPENs for links that do not exist here yet are kept (a few per peer)
// and bound when the link joins the node.
//
// TLS.  The first link that uses TLS makes the node's context from its
// files, and every later TLS link of the node must name the same files:
// the listener answers every peer with one certificate.  Links that do
// not use TLS share the node all the same: the acceptor tells the two
// kinds of connection apart by their first byte.  A link never binds to a
// connection of the other kind, nor to one whose certificate does not
// name its peer (tw__tcp_tls_check, at dialing and at every OPEN).
//
// Lifetime: the node is referenced by the endpoints that joined it, and
// only by them.  When the last one leaves, the node stops at once, on that
// thread: the listener stops accepting and closes (the port is free
// again), handshakes in progress are dropped, every peer is closed, and
// the I/O thread is joined once every connection is gone.  No thread of
// the library outlives the last link.

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/names.h"
#include "core/sync.h"
#include "transport/tcp/tcp.h"
#include "transport/tcp/tcp_anchor.h"
#include "transport/tcp/tcp_auth.h"

// OPENs kept per peer for links that do not exist here yet.
#define NODE_PENDING_MAX 64
// How long a clean close waits for queued frames to leave.
#define NODE_CLOSE_WAIT_NS INT64_C(1000000000)
// How long a stopping node waits for its connections to be gone before
// it gives up on freeing them (a reference leaked somewhere: better a
// leak than a use of freed memory).
#define NODE_STOP_WAIT_NS INT64_C(10000000000)
// Pause between dials of a peer that closed the connection unanswered
// (its process listens, but has not created the link yet).
#define NODE_REDIAL_NS 20000000

// An OPEN kept until its link joins.
typedef struct pending_open {
	struct pending_open *next;
	tcp_peer *peer; // referenced
	uint32_t slot;
	char link_id[TW_LINK_ID_MAX + 1];
	tw__tcp_open open;
} pending_open;

// A watch of an anchor (tcp_anchor.h).
typedef struct node_watch {
	struct node_watch *next;
	char *prefix;
	tw__tcp_want_fn fn;
	void *arg;
} node_watch;

struct tcp_node {
	tcp_node *next; // registry, protected by reg_mtx
	node_watch *watches; // protected by mtx
	tw__tcp_listener *l;
	uint64_t instance;
	tw__poller *poller;
	tcp_acceptor *acceptor;
	unsigned refs; // protected by reg_mtx
	pthread_mutex_t mtx;
	pthread_cond_t cv; // a peer was listed or freed
	tcp_ep *eps; // protected by mtx
	tcp_peer *peers; // protected by mtx
	pending_open *pending; // protected by mtx
	unsigned live_peers; // made and not yet freed, by mtx
	tw__tls_ctx *tls; // by mtx: set once, by the first TLS link
	bool stranger_auth; // by mtx: tw__tcp_node_note_auth was called

	// The resumer: a thread that dials again the connections that went
	// down on our side (tcp_resume.c).
	pthread_t resumer;
	bool resumer_started; // by mtx
	bool resume_wanted; // by mtx: a connection went down
	bool probing; // by mtx: an accepted connection was down lately
	pthread_cond_t resume_cv; // by mtx
	_Atomic int resume_stop; // the node stops: attempts end
};

static pthread_mutex_t reg_mtx = PTHREAD_MUTEX_INITIALIZER;
static tcp_node *reg_head; // protected by reg_mtx

const char *tw__tcp_node_name(const tcp_node *n)
{
	return tw__tcp_listener_name(n->l);
}

uint64_t tw__tcp_node_instance(const tcp_node *n)
{
	return n->instance;
}

tw__poller *tw__tcp_node_poller(const tcp_node *n)
{
	return n->poller;
}

bool tw__tcp_ep_dials(const tcp_ep *ep, uint32_t from, uint32_t to)
{
	if (ep->dial_rank >= 0)
		return (uint32_t)ep->dial_rank == from;
	return tw__tcp_dials(ep->addrs[from], ep->addrs[to]);
}

bool tw__tcp_dials(const char *self_addr, const char *peer_addr)
{
	// Every link between the same two processes agrees on this, so that
	// they never connect to each other at the same time: there is no tie
	// to break, and one connection serves them all.
	return strcmp(self_addr, peer_addr) < 0;
}

// --- the list of peers -----------------------------------------------------------

void tw__tcp_node_add_peer(tcp_node *n, tcp_peer *p)
{
	pthread_mutex_lock(&n->mtx);
	*tw__tcp_peer_nextp(p) = n->peers;
	n->peers = p;
	n->live_peers++;
	pthread_cond_broadcast(&n->cv);
	pthread_mutex_unlock(&n->mtx);
	tw__tcp_acceptor_kick(n->acceptor);
}

void tw__tcp_node_peer_freed(tcp_node *n)
{
	pthread_mutex_lock(&n->mtx);
	n->live_peers--;
	pthread_cond_broadcast(&n->cv);
	pthread_mutex_unlock(&n->mtx);
}

// Unlinks the kept OPENs of peer p (or all, p == NULL).  mtx held.
static pending_open *take_pending(tcp_node *n, const tcp_peer *p)
{
	pending_open *out = NULL;
	pending_open **pp = &n->pending;
	while (*pp != NULL) {
		pending_open *q = *pp;
		if (p == NULL || q->peer == p) {
			*pp = q->next;
			q->next = out;
			out = q;
		} else {
			pp = &q->next;
		}
	}
	return out;
}

static void free_pending(pending_open *list)
{
	while (list != NULL) {
		pending_open *q = list;
		list = q->next;
		tw__tcp_peer_unref(q->peer);
		free(q);
	}
}

void tw__tcp_node_forget(tcp_peer *p)
{
	tcp_node *n = tw__tcp_peer_node(p);
	bool listed = false;
	pthread_mutex_lock(&n->mtx);
	for (tcp_peer **pp = &n->peers; *pp != NULL;
	     pp = tw__tcp_peer_nextp(*pp)) {
		if (*pp == p) {
			*pp = tw__tcp_peer_next(p);
			listed = true;
			break;
		}
	}
	pending_open *drop = take_pending(n, p);
	pthread_mutex_unlock(&n->mtx);
	free_pending(drop);
	if (listed)
		tw__tcp_peer_unref(p); // the list's
}

tcp_peer *tw__tcp_node_find_accepted(tcp_node *n, uint64_t instance)
{
	pthread_mutex_lock(&n->mtx);
	tcp_peer *p = n->peers;
	while (p != NULL
	    && (tw__tcp_peer_is_dialer(p) || tw__tcp_peer_failed(p)
	        || tw__tcp_peer_instance(p) != instance))
		p = tw__tcp_peer_next(p);
	if (p != NULL)
		tw__tcp_peer_ref(p);
	pthread_mutex_unlock(&n->mtx);
	return p;
}

tw__tls_ctx *tw__tcp_node_tls(tcp_node *n)
{
	pthread_mutex_lock(&n->mtx);
	tw__tls_ctx *ctx = n->tls;
	pthread_mutex_unlock(&n->mtx);
	return ctx;
}

// Marks ep's channels that wait to be dialed (tw__tcp_node_note_auth).
static void note_auth_ep(tcp_ep *ep)
{
	pthread_mutex_lock(&ep->mtx);
	for (uint32_t i = 0; i < ep->size; i++) {
		tcp_chan *mc = ep->chans[i];
		if (mc != NULL && !mc->dialer
		    && atomic_load(&mc->state) != CH_READY)
			atomic_store(&mc->auth_seen, 1);
	}
	pthread_mutex_unlock(&ep->mtx);
}

void tw__tcp_node_note_auth(tcp_node *n)
{
	pthread_mutex_lock(&n->mtx);
	// Also for links that join later: the listener accepts before the
	// first link is listed, and the stranger may not come again.
	n->stranger_auth = true;
	for (tcp_ep *ep = n->eps; ep != NULL; ep = ep->next)
		note_auth_ep(ep);
	pthread_mutex_unlock(&n->mtx);
}

int tw__tcp_tls_check(const tcp_ep *ep, uint32_t rank, tcp_peer *p)
{
	tw__tls *t = tw__tcp_peer_tls(p);
	bool want = ep->tls[0] != NULL;
	if ((t != NULL) != want) {
		TW_LOGL(TW_LOG_ERROR, "tcp", ep->link_id, ep->self_rank,
		    "%s (%s): %s (%s)", ep->ids[rank], tw__tcp_peer_who(p),
		    want ? "peer does not use TLS, this link does"
		         : "peer uses TLS, this link does not",
		    tw_err_name(TW_EAUTH));
		return TW_EAUTH;
	}
	char names[256];
	if (t != NULL
	    && !tw__tls_peer_is(t, ep->ids[rank], names, sizeof(names))) {
		TW_LOGL(TW_LOG_ERROR, "tcp", ep->link_id, ep->self_rank,
		    "%s: wrong name in the peer's certificate: expected '%s' "
		    "(rank %u), the certificate has %s (%s)",
		    tw__tcp_peer_who(p), ep->ids[rank], (unsigned)rank, names,
		    tw_err_name(TW_EAUTH));
		return TW_EAUTH;
	}
	return TW_OK;
}

// Tells the watchers that a peer wants link_id.  mtx held.
static void node_want(tcp_node *n, const char *link_id, const char *who)
{
	char addr[TW_TCP_ADDR_MAX + 8];
	snprintf(addr, sizeof(addr), "tcp://%s", who);
	for (node_watch *w = n->watches; w != NULL; w = w->next)
		if (strncmp(link_id, w->prefix, strlen(w->prefix)) == 0)
			w->fn(w->arg, link_id, addr);
}

void tw__tcp_node_want(tcp_node *n, const char *link_id, const char *who)
{
	pthread_mutex_lock(&n->mtx);
	node_want(n, link_id, who);
	pthread_mutex_unlock(&n->mtx);
}

tcp_ep *tw__tcp_node_find_ep(tcp_node *n, const char *link_id)
{
	pthread_mutex_lock(&n->mtx);
	tcp_ep *ep = n->eps;
	while (ep != NULL && strcmp(ep->link_id, link_id) != 0)
		ep = ep->next;
	if (ep != NULL)
		tw__tcp_ep_ref(ep);
	pthread_mutex_unlock(&n->mtx);
	return ep;
}

// --- dialing ----------------------------------------------------------------------

// The peer at addr that this node dialed, the oldest live one: every link
// picks the same one when two dials raced.  mtx held.
static tcp_peer *find_dialed(tcp_node *n, const char *addr)
{
	tcp_peer *found = NULL;
	for (tcp_peer *p = n->peers; p != NULL; p = tw__tcp_peer_next(p))
		if (tw__tcp_peer_is_dialer(p) && !tw__tcp_peer_failed(p)
		    && strcmp(tw__tcp_peer_dialed(p), addr) == 0)
			found = p; // the list is newest first
	return found;
}

static bool cancelled(const _Atomic int *cancel)
{
	return cancel != NULL
	    && atomic_load_explicit(cancel, memory_order_acquire);
}

// Dials addr once and runs the handshake for link ep (stripe index
// `stripe`).  TW_EPEER: the peer closed the connection unanswered (its
// process does not have the link yet, or is busy): worth another try.
static int dial_once(tcp_node *n, const char *addr, tcp_ep *ep,
    uint32_t peer_rank, uint16_t stripe, uint64_t session, int64_t deadline,
    const _Atomic int *cancel, int *out_fd, tw__tls **out_tls,
    tw__tcp_hs_peer *peer)
{
	char host[TW_TCP_ADDR_MAX + 1];
	uint16_t port;
	if (tw__tcp_addr_parse(addr, host, sizeof(host), &port) != TW_OK)
		return TW_EINVAL;
	tw__tcp_hs_self me = { .link_id = ep->link_id,
		.rank = ep->self_rank,
		.instance = n->instance,
		.addr = tw__tcp_listener_name(n->l),
		.stripe = stripe,
		.session = session,
		.secret = ep->secret,
		.secret_len = ep->secret_len,
		.tls = ep->tls[0] != NULL };
	int fd = -1;
	tw__tls *tls = NULL;
	int status = tw__tcp_dial(host, port, deadline, cancel, &fd);
	if (status != TW_OK)
		return status;
	if (me.tls) {
		// The node's context exists: this link made it or shares it.
		status = tw__tls_new(n->tls, fd, false, &tls);
		if (status == TW_OK)
			status = tw__tls_handshake(tls, deadline, cancel);
		char names[256];
		if (status == TW_OK
		    && !tw__tls_peer_is(
		        tls, ep->ids[peer_rank], names, sizeof(names))) {
			TW_LOGL(TW_LOG_ERROR, "tcp", ep->link_id,
			    ep->self_rank,
			    "%s: wrong name in the peer's certificate: "
			    "expected '%s' (rank %u), the certificate has %s "
			    "(%s)",
			    addr, ep->ids[peer_rank], (unsigned)peer_rank,
			    names, tw_err_name(TW_EAUTH));
			status = TW_EAUTH;
		} else if (status != TW_OK && tls != NULL
		    && status != TW_ECLOSED) {
			TW_LOGL(
			    status == TW_EPEER ? TW_LOG_DEBUG : TW_LOG_ERROR,
			    "tcp", ep->link_id, ep->self_rank,
			    "TLS with %s (%s) failed: %s (%s)", addr,
			    ep->ids[peer_rank], tw__tls_reason(tls),
			    tw_err_name(status));
		}
	}
	if (status == TW_OK)
		status = tw__tcp_handshake_tls(
		    fd, tls, &me, deadline, cancel, peer);
	if (status == TW_OK && peer->session != session) {
		TW_LOGL(TW_LOG_ERROR, "tcp", ep->link_id, ep->self_rank,
		    "%s answered for another session", addr);
		status = TW_EPROTO;
	}
	if (status == TW_OK && peer->rank != peer_rank) {
		TW_LOGL(TW_LOG_ERROR, "tcp", ep->link_id, ep->self_rank,
		    "%s answered as rank %u, not %u", addr,
		    (unsigned)peer->rank, (unsigned)peer_rank);
		status = TW_EPROTO;
	}
	if (status != TW_OK) {
		tw__tls_free(tls);
		close(fd);
		return status;
	}
	*out_fd = fd;
	*out_tls = tls;
	return TW_OK;
}

// Sleeps until the next dial, or less when the deadline comes first.
static void redial_pause(int64_t deadline);

// Whether to dial again: TW_OK after the pause, or why not.
static int redial(int64_t deadline, const _Atomic int *cancel)
{
	if (tw__now_ns() >= deadline)
		return TW_ETIMEDOUT;
	if (cancelled(cancel))
		return TW_ECLOSED;
	redial_pause(deadline);
	return TW_OK;
}

static void redial_pause(int64_t deadline)
{
	int64_t ns = deadline - tw__now_ns();
	if (ns > NODE_REDIAL_NS)
		ns = NODE_REDIAL_NS;
	if (ns <= 0)
		return;
	struct timespec ts = { 0, (long)ns };
	nanosleep(&ts, NULL);
}

// The extra connections of a new peer p, which the link that made it
// asks for (TW_OPT_STRIPES - 1).  One that cannot be made is logged and
// left out: the others carry the chunks.
static void dial_stripes(tcp_node *n, const char *addr, tcp_ep *ep,
    uint32_t peer_rank, tcp_peer *p, int64_t deadline,
    const _Atomic int *cancel)
{
	for (unsigned k = 1; k < ep->stripes; k++) {
		int fd = -1;
		tw__tls *tls = NULL;
		tw__tcp_hs_peer hs;
		int status;
		do {
			status = dial_once(n, addr, ep, peer_rank, (uint16_t)k,
			    tw__tcp_peer_session(p), deadline, cancel, &fd,
			    &tls, &hs);
			if (status == TW_OK
			    && hs.instance != tw__tcp_peer_instance(p)) {
				status = TW_EPROTO; // another process now
				tw__tls_free(tls);
				close(fd);
			}
			if (status == TW_EPEER)
				redial_pause(deadline);
		} while (status == TW_EPEER && tw__now_ns() < deadline
		    && !cancelled(cancel));
		if (status == TW_OK)
			status = tw__tcp_peer_add_stripe(p, fd, tls, hs.addr);
		if (status != TW_OK) {
			TW_LOGL(TW_LOG_WARN, "tcp", ep->link_id, ep->self_rank,
			    "cannot add stripe %u towards %s: %s", k, addr,
			    tw_strerror(status));
			return;
		}
	}
}

int tw__tcp_node_dial(tcp_node *n, const char *addr, tcp_ep *ep,
    uint32_t peer_rank, int64_t deadline, const _Atomic int *cancel,
    tcp_peer **out)
{
	for (;;) {
		pthread_mutex_lock(&n->mtx);
		tcp_peer *p = find_dialed(n, addr);
		if (p != NULL)
			tw__tcp_peer_ref(p);
		pthread_mutex_unlock(&n->mtx);
		if (p != NULL) {
			// Made by another link: its kind and certificate must
			// suit this one too.
			int status = tw__tcp_tls_check(ep, peer_rank, p);
			if (status != TW_OK) {
				tw__tcp_peer_unref(p);
				return status;
			}
			*out = p;
			return TW_OK;
		}
		int fd = -1;
		tw__tls *tls = NULL;
		tw__tcp_hs_peer hs;
		uint64_t session = 0;
		int status = TW_OK;
		while (session == 0 && status == TW_OK)
			status = tw__tcp_random(&session, sizeof(session));
		if (status == TW_OK)
			status = dial_once(n, addr, ep, peer_rank, 0, session,
			    deadline, cancel, &fd, &tls, &hs);
		if (status == TW_EPEER) {
			// Closed without an answer: the peer's process
			// listens (another link shares the address) but has
			// not created this link yet.  Again, until the
			// timeout; meanwhile another link may have connected.
			if ((status = redial(deadline, cancel)) != TW_OK)
				return status;
			continue;
		}
		if (status != TW_OK)
			return status;
		tcp_peer_info info = { .fd = fd,
			.tls = tls,
			.dialer = true,
			.dialed = addr,
			.hs = &hs,
			.heartbeat_ms = ep->heartbeat_ms,
			.ep = ep,
			.peer_rank = peer_rank };
		if ((status = tw__tcp_peer_new(n, &info, &p)) != TW_OK) {
			tw__tls_free(tls);
			close(fd);
			return status;
		}
		// Two dials of this process to addr that raced: the older
		// peer is the one every link uses.
		pthread_mutex_lock(&n->mtx);
		tcp_peer *keep = find_dialed(n, addr);
		if (keep != NULL && keep != p)
			tw__tcp_peer_ref(keep);
		pthread_mutex_unlock(&n->mtx);
		if (keep != NULL && keep != p) {
			tw__tcp_peer_close(
			    p, tw__now_ns() + NODE_CLOSE_WAIT_NS);
			tw__tcp_peer_unref(p);
			if ((status = tw__tcp_tls_check(ep, peer_rank, keep))
			    != TW_OK) {
				tw__tcp_peer_unref(keep);
				return status;
			}
			*out = keep;
			return TW_OK;
		}
		if (keep == NULL) {
			// Failed already (the peer went at once: it may be
			// restarting).  Again, until the timeout.
			tw__tcp_peer_unref(p);
			if ((status = redial(deadline, cancel)) != TW_OK)
				return status;
			continue;
		}
		dial_stripes(n, addr, ep, peer_rank, p, deadline, cancel);
		*out = p;
		return TW_OK;
	}
}

// --- OPENs -----------------------------------------------------------------------

int tw__tcp_node_open_lookup(tcp_peer *p, const char *link_id,
    uint32_t peer_slot, const tw__tcp_open *o, tcp_chan **out)
{
	tcp_node *n = tw__tcp_peer_node(p);
	*out = NULL;
	pthread_mutex_lock(&n->mtx);
	tcp_ep *ep = n->eps;
	while (ep != NULL && strcmp(ep->link_id, link_id) != 0)
		ep = ep->next;
	if (ep == NULL) {
		// Not created here yet: kept until it joins.
		node_want(n, link_id, tw__tcp_peer_who(p));
		unsigned count = 0;
		for (pending_open *q = n->pending; q != NULL; q = q->next)
			count += q->peer == p;
		pending_open *q
		    = count < NODE_PENDING_MAX ? calloc(1, sizeof(*q)) : NULL;
		if (q == NULL) {
			pthread_mutex_unlock(&n->mtx);
			TW_WARN("tcp",
			    "%s opens too many links that do not exist here "
			    "(%s)",
			    tw__tcp_peer_who(p), tw_err_name(TW_EPROTO));
			return TW_EPROTO;
		}
		tw__tcp_peer_ref(p);
		q->peer = p;
		q->slot = peer_slot;
		snprintf(q->link_id, sizeof(q->link_id), "%s", link_id);
		q->open = *o;
		q->next = n->pending;
		n->pending = q;
		pthread_mutex_unlock(&n->mtx);
		return TW_OK;
	}
	tw__tcp_ep_ref(ep);
	pthread_mutex_unlock(&n->mtx);
	int status = TW_OK;
	pthread_mutex_lock(&ep->mtx);
	tcp_chan *mc = o->rank < ep->size ? ep->chans[o->rank] : NULL;
	if (mc != NULL)
		tw__tcp_chan_ref(mc);
	pthread_mutex_unlock(&ep->mtx);
	if (o->size != ep->size || mc == NULL) {
		TW_LOGL(TW_LOG_WARN, "tcp", ep->link_id, ep->self_rank,
		    "%s opens the link as rank %u of %u, which is not a "
		    "peer here (%s)",
		    tw__tcp_peer_who(p), (unsigned)o->rank, (unsigned)o->size,
		    tw_err_name(TW_EPROTO));
		if (mc != NULL)
			tw__tcp_chan_unref(mc);
		status = TW_EPROTO;
	} else {
		*out = mc;
	}
	tw__tcp_ep_unref(ep);
	return status;
}

// Binds the OPENs that waited for ep.
static void bind_pending(tcp_node *n, tcp_ep *ep)
{
	pending_open *mine = NULL;
	pthread_mutex_lock(&n->mtx);
	pending_open **pp = &n->pending;
	while (*pp != NULL) {
		pending_open *q = *pp;
		if (strcmp(q->link_id, ep->link_id) == 0) {
			*pp = q->next;
			q->next = mine;
			mine = q;
		} else {
			pp = &q->next;
		}
	}
	pthread_mutex_unlock(&n->mtx);
	// Kept newest first: bound oldest first.
	pending_open *rev = NULL;
	while (mine != NULL) {
		pending_open *q = mine;
		mine = q->next;
		q->next = rev;
		rev = q;
	}
	while (rev != NULL) {
		pending_open *q = rev;
		rev = q->next;
		tcp_chan *mc = NULL;
		int status = tw__tcp_node_open_lookup(
		    q->peer, q->link_id, q->slot, &q->open, &mc);
		if (status == TW_OK && mc != NULL) {
			status = tw__tcp_chan_on_open(
			    q->peer, mc, q->slot, &q->open);
			tw__tcp_chan_unref(mc);
		}
		if (status != TW_OK)
			tw__tcp_peer_fail(
			    q->peer, status, "it opened a link wrongly");
		tw__tcp_peer_unref(q->peer);
		free(q);
	}
}

// --- resuming ---------------------------------------------------------------------

// How long the resumer waits after an attempt that got no answer, and at
// most between two looks at its peers (a wake-up it missed).
#define RESUME_PAUSE_NS INT64_C(50000000)
#define RESUME_LOOK_NS INT64_C(200000000)

#define RESUME_PROBE_NS INT64_C(100000000)

// The connection that went down first among those of peers this node
// dialed (to dial again) and of those it accepted and has not probed for
// a while (*probe): *k its index, the peer referenced.  Oldest first, so
// that under breaks that keep coming (a flaky network, a test that kills
// every connection every 150 ms) no connection waits behind the others
// until its limit.  mtx held.
static tcp_peer *find_down(tcp_node *n, unsigned *k, bool *probe)
{
	int64_t now = tw__now_ns();
	tcp_peer *best = NULL;
	int64_t best_since = INT64_MAX;
	for (tcp_peer *p = n->peers; p != NULL; p = tw__tcp_peer_next(p)) {
		if (tw__tcp_peer_failed(p))
			continue;
		bool accepted = !tw__tcp_peer_is_dialer(p);
		if (accepted && *tw__tcp_peer_next_probe(p) > now)
			continue;
		unsigned count = 1 + tw__tcp_peer_nstripes(p);
		for (unsigned i = 0; i < count; i++) {
			tcp_conn *c = tw__tcp_peer_conn(p, i);
			if (c == NULL)
				continue;
			int64_t since = tw__tcp_conn_down_until(c);
			bool down = tw__tcp_conn_is_down(c)
			    && !tw__tcp_conn_failed(c);
			tw__tcp_conn_unref(c);
			if (down && since < best_since) {
				best = p;
				best_since = since;
				*k = i;
				*probe = accepted;
			}
		}
	}
	if (best != NULL) {
		tw__tcp_peer_ref(best);
		if (*probe)
			*tw__tcp_peer_next_probe(best) = now + RESUME_PROBE_NS;
	}
	return best;
}

static void *resumer_main(void *arg)
{
	tcp_node *n = arg;
	pthread_mutex_lock(&n->mtx);
	while (!atomic_load(&n->resume_stop)) {
		unsigned k = 0;
		bool probe = false;
		tcp_peer *p = find_down(n, &k, &probe);
		if (p == NULL) {
			n->resume_wanted = false;
			// Sooner when an accepted connection is down: its
			// next probe.
			int64_t until = tw__now_ns()
			    + (n->probing ? RESUME_PROBE_NS : RESUME_LOOK_NS);
			n->probing = false;
			while (!n->resume_wanted
			    && !atomic_load(&n->resume_stop)
			    && tw__cond_wait_until(
			           &n->resume_cv, &n->mtx, until)
			        != ETIMEDOUT)
				;
			continue;
		}
		pthread_mutex_unlock(&n->mtx);
		int status = probe
		    ? tw__tcp_resume_probe(p, k, &n->resume_stop)
		    : tw__tcp_resume_dial(n, p, k, &n->resume_stop);
		tw__tcp_peer_unref(p);
		pthread_mutex_lock(&n->mtx);
		n->probing = n->probing || probe;
		if (status == TW_EAGAIN) {
			int64_t until = tw__now_ns() + RESUME_PAUSE_NS;
			while (!atomic_load(&n->resume_stop)
			    && tw__cond_wait_until(
			           &n->resume_cv, &n->mtx, until)
			        != ETIMEDOUT)
				;
		}
	}
	pthread_mutex_unlock(&n->mtx);
	return NULL;
}

void tw__tcp_node_resume_wake(tcp_node *n)
{
	pthread_mutex_lock(&n->mtx);
	if (!atomic_load(&n->resume_stop)) {
		n->resume_wanted = true;
		if (!n->resumer_started)
			n->resumer_started = pthread_create(&n->resumer, NULL,
			                         resumer_main, n)
			    == 0;
		pthread_cond_broadcast(&n->resume_cv);
	}
	pthread_mutex_unlock(&n->mtx);
}

// Ends the resumer before the peers are closed: an attempt in progress
// is cancelled, and no new one starts.
static void resumer_stop(tcp_node *n)
{
	pthread_mutex_lock(&n->mtx);
	atomic_store(&n->resume_stop, 1);
	pthread_cond_broadcast(&n->resume_cv);
	bool started = n->resumer_started;
	pthread_mutex_unlock(&n->mtx);
	if (started)
		pthread_join(n->resumer, NULL);
}

tcp_peer *tw__tcp_node_find_session(
    tcp_node *n, uint64_t instance, uint64_t session)
{
	pthread_mutex_lock(&n->mtx);
	tcp_peer *p = n->peers;
	while (p != NULL
	    && (tw__tcp_peer_is_dialer(p) || tw__tcp_peer_failed(p)
	        || tw__tcp_peer_instance(p) != instance
	        || tw__tcp_peer_session(p) != session))
		p = tw__tcp_peer_next(p);
	if (p != NULL)
		tw__tcp_peer_ref(p);
	pthread_mutex_unlock(&n->mtx);
	return p;
}

// --- life cycle -----------------------------------------------------------------

// Stops a node whose last endpoint left: nothing reaches it any more.
static void node_stop(tcp_node *n)
{
	resumer_stop(n);
	tw__tcp_acceptor_free(n->acceptor);
	int64_t close_by = tw__now_ns() + NODE_CLOSE_WAIT_NS;
	for (;;) {
		pthread_mutex_lock(&n->mtx);
		tcp_peer *p = n->peers;
		if (p != NULL)
			tw__tcp_peer_ref(p);
		pthread_mutex_unlock(&n->mtx);
		if (p == NULL)
			break;
		// Closing forgets it: the loop ends.
		tw__tcp_peer_close(p, close_by);
		tw__tcp_peer_unref(p);
	}
	pthread_mutex_lock(&n->mtx);
	free_pending(take_pending(n, NULL));
	// Connections die on the I/O thread (their failure upcalls): it
	// must run until the last is gone.
	int64_t until = tw__now_ns() + NODE_STOP_WAIT_NS;
	while (n->live_peers > 0
	    && tw__cond_wait_until(&n->cv, &n->mtx, until) != ETIMEDOUT)
		;
	bool leaked = n->live_peers > 0;
	pthread_mutex_unlock(&n->mtx);
	if (leaked) {
		TW_ERROR("tcp",
		    "%s: %u connection(s) still referenced after %lld ms; "
		    "leaving them and their thread",
		    tw__tcp_node_name(n), n->live_peers,
		    (long long)(NODE_STOP_WAIT_NS / 1000000));
		tw__tcp_listener_put(n->l);
		return;
	}
	tw__poller_free(n->poller);
	tw__tcp_listener_put(n->l);
	tw__tls_ctx_free(n->tls);
	pthread_cond_destroy(&n->resume_cv);
	pthread_cond_destroy(&n->cv);
	pthread_mutex_destroy(&n->mtx);
	free(n);
}

static void node_unref(tcp_node *n)
{
	pthread_mutex_lock(&reg_mtx);
	if (--n->refs > 0) {
		pthread_mutex_unlock(&reg_mtx);
		return;
	}
	tcp_node **pp = &reg_head;
	while (*pp != n)
		pp = &(*pp)->next;
	*pp = n->next;
	pthread_mutex_unlock(&reg_mtx);
	node_stop(n);
}

static tcp_node *node_find(const tw__tcp_listener *l)
{
	for (tcp_node *n = reg_head; n != NULL; n = n->next)
		if (n->l == l)
			return n;
	return NULL;
}

static int node_get(const char *addr, tcp_node **out)
{
	tw__tcp_listener *l;
	int status = tw__tcp_listener_get(addr, &l);
	if (status != TW_OK)
		return status;
	pthread_mutex_lock(&reg_mtx);
	tcp_node *n = node_find(l);
	if (n != NULL) {
		n->refs++;
		pthread_mutex_unlock(&reg_mtx);
		tw__tcp_listener_put(l); // the node holds one already
		*out = n;
		return TW_OK;
	}
	n = calloc(1, sizeof(*n));
	if (n == NULL) {
		pthread_mutex_unlock(&reg_mtx);
		tw__tcp_listener_put(l);
		return TW_ENOMEM;
	}
	pthread_mutex_init(&n->mtx, NULL);
	tw__cond_init(&n->cv);
	tw__cond_init(&n->resume_cv);
	n->l = l;
	n->refs = 1;
	status = tw__tcp_random(&n->instance, sizeof(n->instance));
	n->instance |= 1; // never zero
	if (status == TW_OK)
		status = tw__poller_new(&n->poller);
	if (status == TW_OK)
		status = tw__tcp_acceptor_new(n, l, &n->acceptor);
	if (status != TW_OK) {
		if (n->poller != NULL)
			tw__poller_free(n->poller);
		pthread_cond_destroy(&n->resume_cv);
		pthread_cond_destroy(&n->cv);
		pthread_mutex_destroy(&n->mtx);
		free(n);
		pthread_mutex_unlock(&reg_mtx);
		tw__tcp_listener_put(l);
		return status;
	}
	n->next = reg_head;
	reg_head = n;
	pthread_mutex_unlock(&reg_mtx);
	*out = n;
	return TW_OK;
}

int tw__tcp_node_join(const char *addr, tcp_ep *ep)
{
	tcp_node *n;
	int status = node_get(addr, &n);
	if (status != TW_OK)
		return status;
	pthread_mutex_lock(&n->mtx);
	for (tcp_ep *e = n->eps; e != NULL; e = e->next) {
		if (strcmp(e->link_id, ep->link_id) == 0) {
			pthread_mutex_unlock(&n->mtx);
			TW_ERROR("tcp",
			    "cannot bind %s for link %s: address in use by "
			    "that link already",
			    addr, ep->link_id);
			node_unref(n);
			return TW_ESYS;
		}
	}
	if (ep->tls[0] != NULL && n->tls == NULL) {
		status = tw__tls_ctx_new(
		    ep->tls[0], ep->tls[1], ep->tls[2], &n->tls);
	} else if (ep->tls[0] != NULL
	    && !tw__tls_ctx_same(n->tls, ep->tls[0], ep->tls[1], ep->tls[2])) {
		TW_ERROR("tcp",
		    "link %s at %s: TLS files differ from the other link on "
		    "this address",
		    ep->link_id, addr);
		status = TW_EINVAL;
	}
	if (status != TW_OK) {
		pthread_mutex_unlock(&n->mtx);
		node_unref(n);
		return status;
	}
	atomic_store(&ep->node, n);
	ep->registered = true;
	if (n->stranger_auth)
		note_auth_ep(ep);
	ep->next = n->eps;
	n->eps = ep;
	pthread_cond_broadcast(&n->cv);
	pthread_mutex_unlock(&n->mtx);
	tw__tcp_acceptor_kick(n->acceptor);
	bind_pending(n, ep);
	return TW_OK;
}

static void unlist(tcp_node *n, tcp_ep *ep)
{
	pthread_mutex_lock(&n->mtx);
	if (ep->registered) {
		tcp_ep **pp = &n->eps;
		while (*pp != ep)
			pp = &(*pp)->next;
		*pp = ep->next;
		ep->registered = false;
	}
	pthread_mutex_unlock(&n->mtx);
}

void tw__tcp_node_leave(tcp_ep *ep)
{
	tcp_node *n = atomic_exchange(&ep->node, NULL);
	if (n == NULL)
		return;
	unlist(n, ep);
	node_unref(n);
}

void tw__tcp_node_unlist(tcp_ep *ep)
{
	tcp_node *n = atomic_load(&ep->node);
	if (n != NULL)
		unlist(n, ep);
}

// --- anchors ----------------------------------------------------------------------

struct tw__tcp_anchor {
	tcp_node *n;
	node_watch *w; // NULL: no watch
	char addr[TW_TCP_ADDR_MAX + 8];
};

int tw__tcp_anchor_new(const char *addr, const char *const *tls,
    const char *prefix, tw__tcp_want_fn fn, void *arg, tw__tcp_anchor **out)
{
	*out = NULL;
	tw__tcp_crypto_init();
	tw__tcp_anchor *a = calloc(1, sizeof(*a));
	if (a == NULL)
		return TW_ENOMEM;
	if (prefix != NULL) {
		a->w = calloc(1, sizeof(*a->w));
		if (a->w == NULL || (a->w->prefix = strdup(prefix)) == NULL) {
			free(a->w);
			free(a);
			return TW_ENOMEM;
		}
		a->w->fn = fn;
		a->w->arg = arg;
	}
	tcp_node *n;
	int status = node_get(addr, &n);
	if (status == TW_OK) {
		pthread_mutex_lock(&n->mtx);
		if (tls != NULL && n->tls == NULL)
			status
			    = tw__tls_ctx_new(tls[0], tls[1], tls[2], &n->tls);
		else if (tls != NULL
		    && !tw__tls_ctx_same(n->tls, tls[0], tls[1], tls[2])) {
			TW_ERROR("tcp",
			    "%s: TLS files differ from the other links on "
			    "this "
			    "address",
			    addr);
			status = TW_EINVAL;
		}
		if (status == TW_OK && a->w != NULL) {
			a->w->next = n->watches;
			n->watches = a->w;
		}
		pthread_mutex_unlock(&n->mtx);
		if (status != TW_OK)
			node_unref(n);
	}
	if (status != TW_OK) {
		if (a->w != NULL)
			free(a->w->prefix);
		free(a->w);
		free(a);
		return status;
	}
	a->n = n;
	snprintf(a->addr, sizeof(a->addr), "tcp://%s", tw__tcp_node_name(n));
	*out = a;
	return TW_OK;
}

const char *tw__tcp_anchor_addr(const tw__tcp_anchor *a)
{
	return a->addr;
}

void tw__tcp_anchor_free(tw__tcp_anchor *a)
{
	if (a == NULL)
		return;
	tcp_node *n = a->n;
	if (a->w != NULL) {
		pthread_mutex_lock(&n->mtx);
		node_watch **pp = &n->watches;
		while (*pp != a->w)
			pp = &(*pp)->next;
		*pp = a->w->next;
		pthread_mutex_unlock(&n->mtx);
		free(a->w->prefix);
		free(a->w);
	}
	node_unref(n);
	free(a);
}
