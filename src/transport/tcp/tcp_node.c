// Nodes of the tcp:// transport: one per listening address and process.
//
// Design notes.  A node owns the shared listener of its address and one
// accepting thread, and knows the links (endpoints) of this process that
// use the address.  Each accepted connection gets a short-lived handshake
// thread, so that a slow or hostile stranger never holds up anybody else:
// the thread reads the peer's HELLO, finds the endpoint of the link it
// names (waiting, bounded, for a link that this process has not created
// yet), answers, checks the secret when the link has one, and hands the
// socket to the endpoint's channel for the peer's rank.  Any failure
// closes the socket with one log line; the node keeps serving.
//
// Lifetime: the node is referenced by every endpoint that joined it and by
// every handshake thread; the last reference stops the accepting thread
// (through a pipe it polls) and drops the listener.

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include "core/clock.h"
#include "core/sync.h"
#include "transport/tcp/tcp.h"
#include "transport/tcp/tcp_auth.h"

// How long an accepted connection may take to complete its handshake.
#define NODE_HS_TIMEOUT_NS INT64_C(10000000000)
// How long it waits for the link it names to be created here.  Short: the
// connecting party retries until its own connect timeout, and a thread
// held for a link that never comes is a thread a stranger could pile up.
#define NODE_LINK_WAIT_NS INT64_C(2000000000)

struct tcp_node {
	tcp_node *next; // registry, protected by reg_mtx
	tw__tcp_listener *l;
	uint64_t instance;
	pthread_mutex_t mtx;
	pthread_cond_t cv; // an endpoint joined
	tcp_ep *eps; // protected by mtx
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
	int64_t deadline;
} hs_job;

// The handshake's lookup: the endpoint of the link the peer names, waited
// for until the job's deadline.  Only a lower rank connects to a higher
// one (tcp.c), so anything else is refused.
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
		if (ep != NULL
		    || tw__cond_wait_until(&n->cv, &n->mtx, until)
		        == ETIMEDOUT)
			break;
	}
	if (ep != NULL)
		tw__tcp_ep_ref(ep);
	pthread_mutex_unlock(&n->mtx);
	if (ep == NULL)
		return TW_EPEER;
	job->ep = ep;
	if (peer->rank >= ep->size || peer->rank >= ep->self_rank)
		return TW_EPROTO;
	self->link_id = ep->link_id;
	self->rank = ep->self_rank;
	self->instance = n->instance;
	self->addr = tw__tcp_listener_name(n->l);
	self->secret = ep->secret;
	self->secret_len = ep->secret_len;
	return TW_OK;
}

static void *hs_main(void *arg)
{
	hs_job *job = arg;
	tw__tcp_hs_peer peer = { 0 };
	int status = tw__tcp_handshake(
	    job->fd, NULL, hs_lookup, job, job->deadline, &peer);
	if (status == TW_OK) {
		// Under the endpoint's lock: a channel being destroyed
		// leaves the table first.
		tcp_ep *ep = job->ep;
		pthread_mutex_lock(&ep->mtx);
		tcp_chan *mc = ep->chans[peer.rank];
		status
		    = mc != NULL ? tw__tcp_chan_attach(mc, job->fd) : TW_EPEER;
		pthread_mutex_unlock(&ep->mtx);
		if (status != TW_OK)
			TW_LOGL(TW_LOG_WARN, "tcp", ep->link_id, ep->self_rank,
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
	node_unref(job->node);
	free(job);
	return NULL;
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
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	hs_job *job = calloc(1, sizeof(*job));
	if (job == NULL) {
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
		close(fd);
		free(job);
		return;
	}
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_t th;
	int rc = pthread_create(&th, &attr, hs_main, job);
	pthread_attr_destroy(&attr);
	if (rc != 0) {
		errno = rc;
		TW_WARN("tcp", "cannot start a handshake thread: %m");
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
	if (status == TW_OK
	    && pthread_create(&n->accept_thread, NULL, accept_main, n) != 0) {
		TW_ERROR(
		    "tcp", "cannot start the accepting thread of %s", addr);
		status = TW_ESYS;
	}
	if (status != TW_OK) {
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
