// Nodes of the tcp:// transport: one per listening address and process.
//
// Design notes.  A node owns the shared listener of its address, one
// accepting thread, the I/O thread (an epoll poller) of its connections,
// and the registry of those connections: one per peer process, shared by
// every link between the two (tcp_conn.c).  It knows the links
// (endpoints) of this process that use the address.
//
// Accepting.  Each accepted connection gets a short-lived handshake
// thread, so that a slow or hostile stranger never holds up anybody else:
// the thread reads the peer's HELLO, finds the endpoint of the link it
// names (waiting, bounded, for a link that this process has not created
// yet), answers, checks the secret when the link has one, and lists the
// connection.  Any failure closes the socket with one log line; the node
// keeps serving.
//
// Dialing.  The connection to a peer address is made once, by the first
// link that needs it; links that need it meanwhile wait for that dial
// rather than make their own.
//
// OPENs for links that do not exist here yet are kept (a few per
// connection) and bound when the link joins the node.
//
// Lifetime: the node is referenced by every endpoint that joined it and by
// every handshake thread; the last reference closes its connections, stops
// the accepting thread (through a pipe it polls) and the I/O thread, and
// drops the listener.

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include "core/clock.h"
#include "core/names.h"
#include "core/sync.h"
#include "transport/tcp/tcp.h"
#include "transport/tcp/tcp_auth.h"

// How long an accepted connection may take to complete its handshake.
#define NODE_HS_TIMEOUT_NS INT64_C(10000000000)
// How long it waits for the link it names to be created here.  Short: the
// connecting party retries until its own connect timeout, and a thread
// held for a link that never comes is a thread a stranger could pile up.
#define NODE_LINK_WAIT_NS INT64_C(2000000000)
// OPENs kept per connection for links that do not exist here yet.
#define NODE_PENDING_MAX 64
// How long a clean close waits for queued frames to leave.
#define NODE_CLOSE_WAIT_NS INT64_C(1000000000)

// An OPEN kept until its link joins.
typedef struct pending_open {
	struct pending_open *next;
	tcp_conn *conn; // referenced
	uint32_t slot;
	char link_id[TW_LINK_ID_MAX + 1];
	tw__tcp_open open;
} pending_open;

// A dial in progress, which other links wait for.
typedef struct dial {
	struct dial *next;
	const char *addr;
} dial;

struct tcp_node {
	tcp_node *next; // registry, protected by reg_mtx
	tw__tcp_listener *l;
	uint64_t instance;
	pthread_mutex_t mtx;
	pthread_cond_t cv; // an endpoint joined
	tcp_ep *eps; // protected by mtx
	tcp_conn *conns; // protected by mtx
	pending_open *pending; // protected by mtx
	dial *dials; // protected by mtx
	tw__poller *poller;
	unsigned hs_active; // atomic: handshake threads running
	int hs_full; // atomic: the limit was hit (logged once per episode)
	unsigned refs; // protected by reg_mtx
	int stop_pipe[2];
	pthread_t accept_thread;
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

// Closes every connection of a node that is going away.
static void node_close_conns(tcp_node *n)
{
	for (;;) {
		pthread_mutex_lock(&n->mtx);
		tcp_conn *c = n->conns;
		if (c != NULL)
			tw__tcp_conn_ref(c);
		pthread_mutex_unlock(&n->mtx);
		if (c == NULL)
			break;
		tw__tcp_conn_close(c, tw__now_ns() + NODE_CLOSE_WAIT_NS);
		tw__tcp_conn_unref(c);
	}
	pthread_mutex_lock(&n->mtx);
	pending_open *p = n->pending;
	n->pending = NULL;
	pthread_mutex_unlock(&n->mtx);
	while (p != NULL) {
		pending_open *next = p->next;
		tw__tcp_conn_unref(p->conn);
		free(p);
		p = next;
	}
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
	char b = 0;
	while (write(n->stop_pipe[1], &b, 1) < 0 && errno == EINTR)
		;
	pthread_join(n->accept_thread, NULL);
	node_close_conns(n);
	tw__poller_free(n->poller);
	close(n->stop_pipe[0]);
	close(n->stop_pipe[1]);
	tw__tcp_listener_put(n->l);
	pthread_cond_destroy(&n->cv);
	pthread_mutex_destroy(&n->mtx);
	free(n);
}

typedef struct hs_job {
	tcp_node *node;
	int fd;
	tcp_ep *ep; // found by the lookup, referenced
	tcp_conn *main; // for a stripe, its main connection, referenced
	int64_t deadline;
} hs_job;

// Which of two parties of a link connects: the one whose address sorts
// first.  Every link between the same two processes then agrees, so that
// they never connect to each other at the same time: there is no tie to
// break, and one connection serves them all.
bool tw__tcp_dials(const char *self_addr, const char *peer_addr)
{
	return strcmp(self_addr, peer_addr) < 0;
}

// The main connection that a stripe from `instance` belongs to.  mtx held.
static tcp_conn *find_main(tcp_node *n, uint64_t instance)
{
	tcp_conn *c = n->conns;
	while (c != NULL
	    && (tw__tcp_conn_is_dialer(c) || tw__tcp_conn_stripe(c) != 0
	        || tw__tcp_conn_failed(c)
	        || tw__tcp_conn_peer_instance(c) != instance))
		c = tw__tcp_conn_next(c);
	return c;
}

// The handshake's lookup: the endpoint of the link the peer names, waited
// for until the job's deadline.  Only the party that should dial may
// connect (tw__tcp_dials), and a rank that another live process holds
// already is refused.
static int hs_lookup(
    void *arg, const tw__tcp_hs_peer *peer, tw__tcp_hs_self *self)
{
	hs_job *job = arg;
	tcp_node *n = job->node;
	tcp_ep *ep = NULL;
	int64_t until = tw__now_ns() + NODE_LINK_WAIT_NS;
	if (until > job->deadline)
		until = job->deadline;
	pthread_mutex_lock(&n->mtx);
	for (;;) {
		for (ep = n->eps; ep != NULL; ep = ep->next)
			if (strcmp(ep->link_id, peer->link_id) == 0)
				break;
		// A stripe also needs its main connection, which the
		// thread of that handshake may not have listed yet.
		if (ep != NULL && peer->stripe > 0
		    && (job->main = find_main(n, peer->instance)) == NULL)
			ep = NULL;
		if (ep != NULL
		    || tw__cond_wait_until(&n->cv, &n->mtx, until)
		        == ETIMEDOUT)
			break;
	}
	if (ep != NULL)
		tw__tcp_ep_ref(ep);
	if (job->main != NULL)
		tw__tcp_conn_ref(job->main);
	pthread_mutex_unlock(&n->mtx);
	if (ep == NULL)
		return TW_EPEER;
	job->ep = ep;
	if (peer->rank >= ep->size || peer->rank == ep->self_rank
	    || !tw__tcp_dials(ep->addrs[peer->rank], ep->addrs[ep->self_rank]))
		return TW_EPROTO;
	pthread_mutex_lock(&ep->mtx);
	tcp_chan *mc = ep->chans[peer->rank];
	bool taken = mc != NULL
	    && __atomic_load_n(&mc->state, __ATOMIC_ACQUIRE) != CH_IDLE
	    && mc->conn != NULL && !tw__tcp_conn_failed(mc->conn)
	    && tw__tcp_conn_peer_instance(mc->conn) != peer->instance;
	pthread_mutex_unlock(&ep->mtx);
	if (taken)
		return TW_EPROTO; // that rank is connected from elsewhere
	self->link_id = ep->link_id;
	self->rank = ep->self_rank;
	self->stripe = peer->stripe;
	self->instance = n->instance;
	self->addr = tw__tcp_listener_name(n->l);
	self->secret = ep->secret;
	self->secret_len = ep->secret_len;
	return TW_OK;
}

// Lists a handshaken connection and starts reading it.  Referenced for the
// caller when out is not NULL.
static int node_add_conn(
    tcp_node *n, const tcp_conn_info *info, tcp_conn **out)
{
	tcp_conn *c;
	int status = tw__tcp_conn_new(n, info, &c);
	if (status != TW_OK)
		return status;
	pthread_mutex_lock(&n->mtx);
	tw__tcp_conn_set_next(c, n->conns);
	n->conns = c;
	if (out != NULL) {
		tw__tcp_conn_ref(c);
		*out = c;
	}
	pthread_cond_broadcast(&n->cv);
	pthread_mutex_unlock(&n->mtx);
	tw__tcp_conn_start(c);
	return TW_OK;
}

static void *hs_main(void *arg)
{
	pthread_setname_np(pthread_self(), "tw-tcp-hs");
	hs_job *job = arg;
	tw__tcp_hs_peer peer = { 0 };
	int status = tw__tcp_handshake(
	    job->fd, NULL, hs_lookup, job, job->deadline, &peer);
	tcp_conn *main = job->main;
	if (status == TW_OK) {
		tcp_conn_info info = { .fd = job->fd,
			.dialer = false,
			.peer = &peer,
			.heartbeat_ms
			= main == NULL ? job->ep->heartbeat_ms : 0,
			.main = main,
			.stripe = peer.stripe };
		tcp_conn *s = NULL;
		status = node_add_conn(job->node, &info, main ? &s : NULL);
		if (status == TW_OK && s != NULL) {
			if (tw__tcp_conn_add_stripe(main, s) != TW_OK)
				tw__tcp_conn_fail(s, "too many stripes");
			tw__tcp_conn_unref(s);
		}
		if (status != TW_OK)
			TW_LOGL(TW_LOG_WARN, "tcp", job->ep->link_id,
			    job->ep->self_rank,
			    "refusing a connection from rank %u (%s): %s",
			    (unsigned)peer.rank, peer.addr,
			    tw_strerror(status));
	}
	if (status == TW_EAUTH && job->ep != NULL
	    && peer.rank < job->ep->size) {
		// The party waiting for this peer learns why it never came
		// (TW_EAUTH rather than a timeout).
		tcp_ep *ep = job->ep;
		pthread_mutex_lock(&ep->mtx);
		tcp_chan *mc = ep->chans[peer.rank];
		if (mc != NULL) {
			__atomic_store_n(
			    &mc->auth_failed, 1, __ATOMIC_RELEASE);
			pthread_mutex_lock(&mc->mtx);
			pthread_cond_broadcast(&mc->cv);
			pthread_mutex_unlock(&mc->mtx);
		}
		pthread_mutex_unlock(&ep->mtx);
	}
	if (status != TW_OK)
		close(job->fd);
	if (job->ep != NULL)
		tw__tcp_ep_unref(job->ep);
	if (job->main != NULL)
		tw__tcp_conn_unref(job->main);
	__atomic_sub_fetch(&job->node->hs_active, 1, __ATOMIC_ACQ_REL);
	node_unref(job->node);
	free(job);
	return NULL;
}

// --- dialing ----------------------------------------------------------------------

static tcp_conn *find_dialed(tcp_node *n, const char *addr)
{
	for (tcp_conn *c = n->conns; c != NULL; c = tw__tcp_conn_next(c))
		if (tw__tcp_conn_is_dialer(c) && !tw__tcp_conn_failed(c)
		    && tw__tcp_conn_stripe(c) == 0
		    && strcmp(tw__tcp_conn_dialed(c), addr) == 0)
			return c;
	return NULL;
}

static bool dialing(tcp_node *n, const char *addr)
{
	for (dial *d = n->dials; d != NULL; d = d->next)
		if (strcmp(d->addr, addr) == 0)
			return true;
	return false;
}

// Dials addr and runs the handshake for link ep, retrying while the peer's
// process listens but has not created the link yet.
static int dial_once(tcp_node *n, const char *addr, tcp_ep *ep,
    uint32_t peer_rank, uint16_t stripe, int64_t deadline, const int *cancel,
    int *out_fd, tw__tcp_hs_peer *peer)
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
		.secret = ep->secret,
		.secret_len = ep->secret_len };
	for (;;) {
		int fd = -1;
		int status = tw__tcp_dial(host, port, deadline, cancel, &fd);
		if (status != TW_OK)
			return status;
		status
		    = tw__tcp_handshake(fd, &me, NULL, NULL, deadline, peer);
		if (status == TW_OK && peer->rank != peer_rank) {
			TW_LOGL(TW_LOG_ERROR, "tcp", ep->link_id,
			    ep->self_rank, "%s answered as rank %u, not %u",
			    addr, (unsigned)peer->rank, (unsigned)peer_rank);
			status = TW_EPROTO;
		}
		if (status == TW_OK) {
			*out_fd = fd;
			return TW_OK;
		}
		close(fd);
		// Closed without an answer: the peer's process listens
		// (another link shares the address) but has not created this
		// link yet.  Try again until the timeout.
		if (status != TW_EPEER || tw__now_ns() >= deadline
		    || (cancel != NULL && tw__tcp_flag(cancel)))
			return status;
		struct timespec ts = { 0, 20000000 };
		nanosleep(&ts, NULL);
	}
}

// The extra connections of a new main connection c, which the link that
// made it asks for (TW_OPT_STRIPES - 1).  One that cannot be made is
// logged and left out: the others carry the chunks.
static void dial_stripes(tcp_node *n, const char *addr, tcp_ep *ep,
    uint32_t peer_rank, tcp_conn *c, int64_t deadline, const int *cancel)
{
	for (unsigned k = 1; k < ep->stripes; k++) {
		int fd = -1;
		tw__tcp_hs_peer peer;
		int status = dial_once(n, addr, ep, peer_rank, (uint16_t)k,
		    deadline, cancel, &fd, &peer);
		tcp_conn *s = NULL;
		if (status == TW_OK) {
			tcp_conn_info info = { .fd = fd,
				.dialer = true,
				.dialed = addr,
				.peer = &peer,
				.main = c,
				.stripe = k };
			status = node_add_conn(n, &info, &s);
			if (status != TW_OK)
				close(fd);
		}
		if (status == TW_OK) {
			status = tw__tcp_conn_add_stripe(c, s);
			if (status != TW_OK)
				tw__tcp_conn_fail(s, NULL);
			tw__tcp_conn_unref(s);
		}
		if (status != TW_OK) {
			TW_LOGL(TW_LOG_WARN, "tcp", ep->link_id, ep->self_rank,
			    "cannot add stripe %u towards %s: %s", k, addr,
			    tw_strerror(status));
			return;
		}
	}
}

int tw__tcp_node_dial(tcp_node *n, const char *addr, tcp_ep *ep,
    uint32_t peer_rank, int64_t deadline, const int *cancel, tcp_conn **out)
{
	pthread_mutex_lock(&n->mtx);
	for (;;) {
		tcp_conn *c = find_dialed(n, addr);
		if (c != NULL) {
			tw__tcp_conn_ref(c);
			pthread_mutex_unlock(&n->mtx);
			*out = c;
			return TW_OK;
		}
		if (!dialing(n, addr))
			break;
		// Another link dials it: wait for that (in slices, to see
		// a cancel), then look again.
		if (cancel != NULL && tw__tcp_flag(cancel)) {
			pthread_mutex_unlock(&n->mtx);
			return TW_ECLOSED;
		}
		int64_t now = tw__now_ns();
		if (now >= deadline) {
			pthread_mutex_unlock(&n->mtx);
			return TW_ETIMEDOUT;
		}
		int64_t until = now + 10000000;
		(void)tw__cond_wait_until(
		    &n->cv, &n->mtx, until < deadline ? until : deadline);
	}
	dial d = { .next = n->dials, .addr = addr };
	n->dials = &d;
	pthread_mutex_unlock(&n->mtx);

	int fd = -1;
	tw__tcp_hs_peer peer;
	int status = dial_once(
	    n, addr, ep, peer_rank, 0, deadline, cancel, &fd, &peer);
	if (status == TW_OK) {
		tcp_conn_info info = { .fd = fd,
			.dialer = true,
			.dialed = addr,
			.peer = &peer,
			.heartbeat_ms = ep->heartbeat_ms };
		status = node_add_conn(n, &info, out);
		if (status != TW_OK)
			close(fd);
	}
	// Links that find the connection meanwhile stripe over the ones
	// there are so far.
	if (status == TW_OK)
		dial_stripes(n, addr, ep, peer_rank, *out, deadline, cancel);
	pthread_mutex_lock(&n->mtx);
	dial **pp = &n->dials;
	while (*pp != &d)
		pp = &(*pp)->next;
	*pp = d.next;
	pthread_cond_broadcast(&n->cv);
	pthread_mutex_unlock(&n->mtx);
	return status;
}

// --- OPENs and the connection list ------------------------------------------------

int tw__tcp_node_open_lookup(
    tcp_conn *c, const tw__tcp_hdr *h, const tw__tcp_open *o, tcp_chan **out)
{
	tcp_node *n = tw__tcp_conn_node(c);
	const char *link_id = h->key;
	*out = NULL;
	pthread_mutex_lock(&n->mtx);
	tcp_ep *ep = n->eps;
	while (ep != NULL && strcmp(ep->link_id, link_id) != 0)
		ep = ep->next;
	if (ep == NULL) {
		// Not created here yet: kept until it joins.
		unsigned count = 0;
		for (pending_open *p = n->pending; p != NULL; p = p->next)
			count += p->conn == c;
		pending_open *p
		    = count < NODE_PENDING_MAX ? calloc(1, sizeof(*p)) : NULL;
		if (p == NULL) {
			pthread_mutex_unlock(&n->mtx);
			TW_WARN("tcp",
			    "%s opens too many links that do not exist here",
			    tw__tcp_conn_who(c));
			return TW_EPROTO;
		}
		tw__tcp_conn_ref(c);
		p->conn = c;
		p->slot = h->slot;
		snprintf(p->link_id, sizeof(p->link_id), "%s", link_id);
		p->open = *o;
		p->next = n->pending;
		n->pending = p;
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
		    "peer here",
		    tw__tcp_conn_who(c), (unsigned)o->rank, (unsigned)o->size);
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
static void node_bind_pending(tcp_node *n, tcp_ep *ep)
{
	pending_open *mine = NULL;
	pthread_mutex_lock(&n->mtx);
	pending_open **pp = &n->pending;
	while (*pp != NULL) {
		pending_open *p = *pp;
		if (strcmp(p->link_id, ep->link_id) == 0) {
			*pp = p->next;
			p->next = mine;
			mine = p;
		} else {
			pp = &p->next;
		}
	}
	pthread_mutex_unlock(&n->mtx);
	while (mine != NULL) {
		pending_open *p = mine;
		mine = p->next;
		tw__tcp_hdr h = { .type = TW_TCP_F_OPEN,
			.slot = p->slot,
			.key = p->link_id,
			.key_len = strlen(p->link_id) };
		tcp_chan *mc = NULL;
		int status
		    = tw__tcp_node_open_lookup(p->conn, &h, &p->open, &mc);
		if (status == TW_OK && mc != NULL) {
			status
			    = tw__tcp_chan_on_open(p->conn, mc, &h, &p->open);
			tw__tcp_chan_unref(mc);
		}
		if (status != TW_OK)
			tw__tcp_conn_fail(p->conn, "it opened a link wrongly");
		tw__tcp_conn_unref(p->conn);
		free(p);
	}
}

void tw__tcp_node_forget(tcp_conn *c)
{
	tcp_node *n = tw__tcp_conn_node(c);
	pending_open *drop = NULL;
	pthread_mutex_lock(&n->mtx);
	for (tcp_conn **cp = &n->conns; *cp != NULL;
	     cp = tw__tcp_conn_nextp(*cp)) {
		if (*cp == c) {
			*cp = tw__tcp_conn_next(c);
			break;
		}
	}
	pending_open **pp = &n->pending;
	while (*pp != NULL) {
		pending_open *p = *pp;
		if (p->conn == c) {
			*pp = p->next;
			p->next = drop;
			drop = p;
		} else {
			pp = &p->next;
		}
	}
	pthread_mutex_unlock(&n->mtx);
	while (drop != NULL) {
		pending_open *p = drop;
		drop = p->next;
		tw__tcp_conn_unref(p->conn);
		free(p);
	}
}

static void node_accept_one(tcp_node *n)
{
	int fd = accept4(tw__tcp_listener_fd(n->l), NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR
		    && errno != ECONNABORTED)
			TW_LOG_ONCE(TW_LOG_WARN, "tcp", "accepting on %s: %m",
			    tw__tcp_node_name(n));
		return;
	}
	if (__atomic_add_fetch(&n->hs_active, 1, __ATOMIC_ACQ_REL)
	    > TW_TCP_HS_MAX) {
		__atomic_sub_fetch(&n->hs_active, 1, __ATOMIC_ACQ_REL);
		if (__atomic_exchange_n(&n->hs_full, 1, __ATOMIC_ACQ_REL) == 0)
			TW_WARN("tcp",
			    "%s: %d handshakes in progress already; closing "
			    "new "
			    "connections until some finish",
			    tw__tcp_node_name(n), TW_TCP_HS_MAX);
		close(fd);
		return;
	}
	__atomic_store_n(&n->hs_full, 0, __ATOMIC_RELEASE);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	hs_job *job = calloc(1, sizeof(*job));
	if (job == NULL) {
		__atomic_sub_fetch(&n->hs_active, 1, __ATOMIC_ACQ_REL);
		close(fd);
		return;
	}
	job->node = n;
	job->fd = fd;
	job->deadline = tw__now_ns() + NODE_HS_TIMEOUT_NS;
	pthread_mutex_lock(&reg_mtx);
	// A node whose last reference is gone is stopping this thread: it
	// must not come back to life for a late connection.
	bool dying = n->refs == 0;
	if (!dying)
		n->refs++;
	pthread_mutex_unlock(&reg_mtx);
	if (dying) {
		__atomic_sub_fetch(&n->hs_active, 1, __ATOMIC_ACQ_REL);
		close(fd);
		free(job);
		return;
	}
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	// A handshake needs little stack; many of them should cost little.
	pthread_attr_setstacksize(&attr, 256 * 1024);
	pthread_t th;
	int rc = pthread_create(&th, &attr, hs_main, job);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		errno = rc;
		TW_WARN("tcp", "cannot start a handshake thread: %m");
		__atomic_sub_fetch(&n->hs_active, 1, __ATOMIC_ACQ_REL);
		close(fd);
		free(job);
		// Not the last reference: the accepting thread runs.
		pthread_mutex_lock(&reg_mtx);
		n->refs--;
		pthread_mutex_unlock(&reg_mtx);
	}
}

static void *accept_main(void *arg)
{
	pthread_setname_np(pthread_self(), "tw-tcp-accept");
	tcp_node *n = arg;
	for (;;) {
		struct pollfd pfd[2] = {
			{ .fd = tw__tcp_listener_fd(n->l), .events = POLLIN },
			{ .fd = n->stop_pipe[0], .events = POLLIN },
		};
		int rc = poll(pfd, 2, -1);
		if (rc < 0 && errno != EINTR)
			break;
		if (pfd[1].revents != 0)
			break;
		if (pfd[0].revents != 0)
			node_accept_one(n);
	}
	return NULL;
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
	if (n == NULL)
		goto err_nomem;
	if (pipe2(n->stop_pipe, O_CLOEXEC) != 0) {
		TW_ERROR("tcp", "cannot make a pipe: %m");
		free(n);
		pthread_mutex_unlock(&reg_mtx);
		tw__tcp_listener_put(l);
		return TW_ESYS;
	}
	status = tw__tcp_random(&n->instance, sizeof(n->instance));
	n->instance |= 1; // never zero
	pthread_mutex_init(&n->mtx, NULL);
	tw__cond_init(&n->cv);
	n->l = l;
	n->refs = 1;
	if (status == TW_OK)
		status = tw__poller_new(&n->poller);
	if (status == TW_OK
	    && pthread_create(&n->accept_thread, NULL, accept_main, n) != 0) {
		TW_ERROR(
		    "tcp", "cannot start the accepting thread of %s", addr);
		status = TW_ESYS;
	}
	if (status != TW_OK) {
		if (n->poller != NULL)
			tw__poller_free(n->poller);
		close(n->stop_pipe[0]);
		close(n->stop_pipe[1]);
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

err_nomem:
	pthread_mutex_unlock(&reg_mtx);
	tw__tcp_listener_put(l);
	return TW_ENOMEM;
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
	ep->node = n;
	ep->registered = true;
	ep->next = n->eps;
	n->eps = ep;
	pthread_cond_broadcast(&n->cv);
	pthread_mutex_unlock(&n->mtx);
	node_bind_pending(n, ep);
	return TW_OK;
}

void tw__tcp_node_leave(tcp_ep *ep)
{
	// Each channel of the link calls this as it is destroyed; only the
	// first may touch the node, which its reference may free.
	tcp_node *n = __atomic_exchange_n(&ep->node, NULL, __ATOMIC_ACQ_REL);
	if (n == NULL)
		return;
	pthread_mutex_lock(&n->mtx);
	bool was = ep->registered;
	if (was) {
		tcp_ep **pp = &n->eps;
		while (*pp != ep)
			pp = &(*pp)->next;
		*pp = ep->next;
		ep->registered = false;
	}
	pthread_mutex_unlock(&n->mtx);
	if (was)
		node_unref(n);
}
