// The accepting side of tcp:// connections: the listener and the
// handshakes of accepted connections, all on the node's I/O thread.
//
// Design notes.  Nothing here blocks, and no thread is started for a
// stranger: the listener is a registration of the poller, and each
// accepted connection is a small state machine that reads the peer's
// HELLO as it arrives, finds the link it names, answers, checks the
// secret's proof when the link has one, and hands the socket over as a
// peer's main connection or as a stripe of one.  A handshake whose link
// this process has not created yet (or, for a stripe, whose main
// connection is not listed yet) is parked, and looked at again whenever a
// link joins or a peer is listed, until a short wait runs out.
//
// Limits: at most TW_TCP_HS_MAX handshakes at once, TW_TCP_HS_PER_SOURCE
// from one address, a first byte within 2 s and the whole handshake
// within 10 s; a connection beyond them is closed with
// one log line (rate-limited).  A listener that runs out of descriptors
// pauses for ACCEPT_PAUSE_NS instead of spinning on EMFILE.
//
// TLS.  The first byte of a connection tells its kind: 0x16 starts a TLS
// handshake (run here as a state of its own, before the HELLO, which
// then travels inside TLS), 'T' a plaintext HELLO.  A TLS connection to a
// node that has no TLS context is answered with the four bytes of the
// HELLO's magic and closed, which its dialer reads as "the peer does not
// speak TLS".  The certificate must name the party whose rank the HELLO
// claims, which only the HELLO tells.
//
// A failed handshake tells nobody but the log: a stranger cannot make a
// link fail by claiming a rank.  A handshake that claimed a rank and failed
// authentication is remembered on that channel, so that a party whose
// peer never proves the secret learns TW_EAUTH rather than TW_ETIMEDOUT
// when its connect timeout ends.

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/sync.h"
#include "transport/tcp/tcp.h"
#include "transport/tcp/tcp_auth.h"

// The whole handshake of an accepted connection, and its first byte; and
// how long a handshake waits for the link it names to be created here
// (the connecting side retries until its own connect timeout).  Tests
// shorten them (tw__tcp_accept_set_waits).
static _Atomic int64_t hs_timeout_ns = INT64_C(10000000000);
static _Atomic int64_t hs_first_ns = INT64_C(2000000000);
static _Atomic int64_t hs_link_wait_ns = INT64_C(2000000000);
// How long the listener pauses after running out of descriptors.
#define ACCEPT_PAUSE_NS INT64_C(100000000)
// Connections accepted per wake-up, so that a flood cannot hold the
// I/O thread away from the connections it serves.
#define ACCEPT_BATCH 32

enum { HS_HELLO, HS_TLS, HS_PARKED, HS_AUTH };

typedef struct hs {
	struct hs *next;
	tcp_acceptor *a;
	int fd;
	tw__tls *tls; // once the first byte said TLS
	bool sniffed; // the first byte was looked at
	bool tls_wait; // TLS, before any TLS link joined this address
	bool unknown_resume; // a resume of a session not known here
	tw__pfd *pfd;
	int state;
	int64_t deadline; // of the whole handshake
	int64_t wait_until; // first byte (HS_HELLO), link (HS_PARKED)
	unsigned char buf[TW_TCP_HELLO_MAX];
	size_t have, want;
	unsigned char nonce[TW_TCP_NONCE_LEN];
	tw__tcp_hs_peer peer;
	tw__tcp_hs_self me;
	tcp_ep *ep; // the link it names, referenced once found
	tcp_peer *rpeer; // a resume: the peer it continues, referenced
	tcp_conn *rconn; // and the connection, referenced
	char src[NI_MAXHOST]; // the peer's address, for limits
	char who[NI_MAXHOST + NI_MAXSERV + 8]; // and port, for log lines
	char why[640]; // a reason made up for a log line
} hs;

struct tcp_acceptor {
	tcp_node *node;
	tw__tcp_listener *l;
	tw__pfd *lpfd;
	tw__pfd *tpfd; // the handshakes' timer (tw__ptimer)
	// The list and the flags are the I/O thread's, except that kick and
	// free read `stopped` and post tasks (mtx).
	hs *list;
	unsigned active;
	int64_t paused_until; // 0: accepting
	pthread_mutex_t mtx;
	pthread_cond_t cv;
	bool stopped, done; // by mtx
	tw__poll_task kick_task, stop_task;
	int64_t last_refusal_log;
};

static void hs_step(hs *h);

static void hs_free(hs *h)
{
	if (h->pfd != NULL)
		tw__pfd_fini(h->pfd);
	tw__tls_free(h->tls);
	if (h->fd >= 0)
		close(h->fd);
	if (h->ep != NULL)
		tw__tcp_ep_unref(h->ep);
	if (h->rconn != NULL)
		tw__tcp_conn_unref(h->rconn);
	if (h->rpeer != NULL)
		tw__tcp_peer_unref(h->rpeer);
	free(h);
}

static void hs_unlink(tcp_acceptor *a, hs *h)
{
	hs **pp = &a->list;
	while (*pp != h)
		pp = &(*pp)->next;
	*pp = h->next;
	a->active--;
}

// Ends a handshake that failed, with one log line.
static void hs_close(hs *h, int status, const char *what)
{
	tcp_acceptor *a = h->a;
	switch (status) {
	case TW_ETIMEDOUT:
		TW_WARN("tcp",
		    "handshake with %s failed: %s timed out; closing", h->who,
		    what);
		break;
	case TW_EAUTH:
		TW_WARN("tcp", "peer %s failed authentication: %s; closing",
		    h->who, what);
		break;
	case TW_EPEER:
		TW_DEBUG(
		    "tcp", "handshake with %s: %s; closing", h->who, what);
		break;
	default:
		TW_WARN("tcp", "handshake with %s failed: %s (%s); closing",
		    h->who, what, tw_err_name(status));
		break;
	}
	hs_unlink(a, h);
	hs_free(h);
}

// Arms the timer for the earliest deadline of the handshakes and of a
// paused listener.
static void arm_timer(tcp_acceptor *a)
{
	int64_t next = a->paused_until;
	for (hs *h = a->list; h != NULL; h = h->next) {
		int64_t t = h->wait_until < h->deadline ? h->wait_until
		                                        : h->deadline;
		if (next == 0 || t < next)
			next = t;
	}
	if (next != 0) {
		int64_t soonest = tw__now_ns() + 1000000;
		if (next < soonest)
			next = soonest;
	}
	(void)tw__ptimer_set(a->tpfd, next, 0);
}

// --- the handshake -----------------------------------------------------------

// Marks the channel of the rank a failed handshake claimed: its party
// reports TW_EAUTH, not a timeout, if nobody better comes.
static void note_auth_failure(hs *h)
{
	tcp_ep *ep = h->ep;
	if (ep == NULL || h->peer.rank >= ep->size)
		return;
	pthread_mutex_lock(&ep->mtx);
	tcp_chan *mc = ep->chans[h->peer.rank];
	if (mc != NULL)
		atomic_store(&mc->auth_seen, 1);
	pthread_mutex_unlock(&ep->mtx);
}

// Finds our side of the link the peer names.  TW_OK (h->me filled, h->ep
// referenced), TW_EAGAIN (not here yet: park), or why it is refused.
// A resume: finds the connection it continues and takes it down (if the
// break did not already), for the last frame handled here, which our
// HELLO tells.  Never parks: the connection is here, or is no more.
static int lookup_resume(hs *h, const char **why)
{
	tcp_node *n = h->a->node;
	const tw__tcp_hs_peer *peer = &h->peer;
	h->rpeer = tw__tcp_node_find_session(n, peer->instance, peer->session);
	if (h->rpeer == NULL) {
		// A definite answer, not silence (which the dialer takes for
		// one more break): a HELLO without RESUME, then the end.
		h->unknown_resume = true;
		h->me = (tw__tcp_hs_self) { .link_id = peer->link_id,
			.rank = 0,
			.stripe = peer->stripe,
			.instance = tw__tcp_node_instance(n),
			.session = peer->session,
			.addr = tw__tcp_node_name(n),
			.tls = h->tls != NULL };
		return TW_OK;
	}
	const tcp_creds *cr = tw__tcp_peer_creds(h->rpeer);
	h->rconn = tw__tcp_peer_conn(h->rpeer, peer->stripe);
	if (h->rconn == NULL || peer->rank != cr->peer_rank
	    || strcmp(peer->link_id, cr->link_id) != 0) {
		*why = "it resumes a connection it does not hold";
		return TW_EPROTO;
	}
	if (((peer->flags & TW_TCP_CAP_TLS) != 0) != (h->tls != NULL)
	    || cr->tls != (h->tls != NULL)) {
		*why = "it resumes over another kind of connection";
		return TW_EAUTH;
	}
	char names[256];
	if (h->tls != NULL
	    && !tw__tls_peer_is(h->tls, cr->peer_id, names, sizeof(names))) {
		snprintf(h->why, sizeof(h->why),
		    "wrong name in its certificate: expected '%s' (rank %u), "
		    "the certificate has %s",
		    cr->peer_id, (unsigned)peer->rank, names);
		*why = h->why;
		return TW_EAUTH;
	}
	bool ok = false;
	uint64_t received = tw__tcp_conn_suspend(h->rconn, &ok);
	if (!ok) {
		*why = "the connection it resumes has failed";
		return TW_EPROTO;
	}
	h->me = (tw__tcp_hs_self) { .link_id = cr->link_id,
		.rank = cr->self_rank,
		.stripe = peer->stripe,
		.instance = tw__tcp_node_instance(n),
		.session = peer->session,
		.resume = true,
		.received = received,
		.addr = tw__tcp_node_name(n),
		.secret = cr->secret,
		.secret_len = cr->secret_len,
		.tls = cr->tls };
	return TW_OK;
}

static int lookup(hs *h, const char **why)
{
	tcp_node *n = h->a->node;
	const tw__tcp_hs_peer *peer = &h->peer;
	if (peer->flags & TW_TCP_CAP_RESUME)
		return lookup_resume(h, why);
	if (h->ep == NULL
	    && (h->ep = tw__tcp_node_find_ep(n, peer->link_id)) == NULL) {
		tw__tcp_node_want(n, peer->link_id, peer->addr);
		return TW_EAGAIN;
	}
	tcp_ep *ep = h->ep;
	if (peer->stripe > 0) {
		tcp_peer *main = tw__tcp_node_find_accepted(n, peer->instance);
		if (main == NULL)
			return TW_EAGAIN;
		tw__tcp_peer_unref(main);
	}
	// Only the party that should dial may connect (tw__tcp_dials), and a
	// rank that another live process holds already is refused.
	if (peer->rank >= ep->size || peer->rank == ep->self_rank
	    || !tw__tcp_ep_dials(ep, peer->rank, ep->self_rank)) {
		*why = "it claims a rank that does not connect to us";
		return TW_EPROTO;
	}
	if (peer->stripe == 0) {
		pthread_mutex_lock(&ep->mtx);
		tcp_chan *mc = ep->chans[peer->rank];
		bool taken = false;
		if (mc != NULL) {
			pthread_mutex_lock(&mc->mtx);
			taken = atomic_load(&mc->state) != CH_IDLE
			    && mc->peer != NULL
			    && !tw__tcp_peer_failed(mc->peer)
			    && tw__tcp_peer_instance(mc->peer)
			        != peer->instance;
			pthread_mutex_unlock(&mc->mtx);
		}
		pthread_mutex_unlock(&ep->mtx);
		if (taken) {
			*why = "its rank is connected from another process";
			return TW_EPROTO;
		}
	}
	h->me = (tw__tcp_hs_self) { .link_id = ep->link_id,
		.rank = ep->self_rank,
		.stripe = peer->stripe,
		.instance = tw__tcp_node_instance(n),
		.session = peer->session,
		.addr = tw__tcp_node_name(n),
		.secret = ep->secret,
		.secret_len = ep->secret_len,
		.tls = ep->tls[0] != NULL };
	// Our HELLO answers a disagreement on TLS (hs_answer); a peer that
	// claims TLS on a plaintext connection, or the reverse, is lying.
	if (((peer->flags & TW_TCP_CAP_TLS) != 0) != (h->tls != NULL)) {
		*why = "its handshake claims another kind of connection";
		return TW_EPROTO;
	}
	char names[256];
	if (h->tls != NULL && h->me.tls
	    && !tw__tls_peer_is(
	        h->tls, ep->ids[peer->rank], names, sizeof(names))) {
		snprintf(h->why, sizeof(h->why),
		    "wrong name in its certificate: expected '%s' (rank %u), "
		    "the certificate has %s",
		    ep->ids[peer->rank], (unsigned)peer->rank, names);
		*why = h->why;
		return TW_EAUTH;
	}
	return TW_OK;
}

// The handshake is done: the socket becomes a connection.
static void hs_finish(hs *h)
{
	tcp_acceptor *a = h->a;
	tcp_node *n = a->node;
	hs_unlink(a, h);
	// Off the poller before the connection registers the same socket.
	tw__pfd_fini(h->pfd);
	h->pfd = NULL;
	int fd = h->fd;
	h->fd = -1;
	int status;
	if (h->rconn != NULL) {
		status = tw__tcp_conn_resume(
		    h->rconn, fd, h->tls, h->peer.received);
		if (status != TW_OK) {
			TW_WARN("tcp",
			    "cannot resume the connection with %s: %s", h->who,
			    tw_strerror(status));
			tw__tls_free(h->tls);
			close(fd);
		}
		h->tls = NULL;
		hs_free(h);
		return;
	}
	if (h->peer.stripe == 0) {
		tcp_peer_info info = { .fd = fd,
			.tls = h->tls,
			.dialer = false,
			.hs = &h->peer,
			.heartbeat_ms = h->ep->heartbeat_ms,
			.ep = h->ep,
			.peer_rank = h->peer.rank };
		tcp_peer *p = NULL;
		status = tw__tcp_peer_new(n, &info, &p);
		if (status == TW_OK)
			tw__tcp_peer_unref(p);
		else {
			tw__tls_free(h->tls);
			close(fd);
		}
	} else {
		tcp_peer *main
		    = tw__tcp_node_find_accepted(n, h->peer.instance);
		status = main != NULL
		    ? tw__tcp_peer_add_stripe(main, fd, h->tls, h->who)
		    : TW_EPEER;
		if (main == NULL) {
			tw__tls_free(h->tls);
			close(fd);
		} else {
			tw__tcp_peer_unref(main);
		}
	}
	h->tls = NULL; // the connection's, or freed
	if (status != TW_OK)
		TW_LOGL(TW_LOG_WARN, "tcp", h->ep->link_id, h->ep->self_rank,
		    "refusing a connection from rank %u (%s): %s",
		    (unsigned)h->peer.rank, h->peer.addr, tw_strerror(status));
	hs_free(h);
}

// Sends our HELLO, and our AUTH when the link has a secret.  A fresh
// socket takes these few hundred bytes at once; one that does not is
// dropped.
static int hs_answer(hs *h, const char **what)
{
	unsigned char buf[TW_TCP_HELLO_MAX + TW_TCP_AUTH_LEN];
	size_t n = tw__tcp_hs_hello_make(&h->me, h->nonce, buf, sizeof(buf));
	if (n == 0) {
		*what = "making our handshake";
		return TW_EINVAL;
	}
	// Our HELLO goes out even when the secrets do not match: it says
	// whether we have one, so that the peer reports TW_EAUTH too.
	const char *why = NULL;
	int match = tw__tcp_hs_secrets_match(&h->me, &h->peer, &why);
	if (match == TW_OK && h->me.secret != NULL) {
		int status = tw__tcp_hs_auth_make(&h->me, &h->peer, buf + n);
		if (status != TW_OK) {
			*what = "making our proof";
			return status;
		}
		n += TW_TCP_AUTH_LEN;
	}
	ssize_t w;
	if (h->tls != NULL) {
		struct iovec v = { buf, n };
		size_t took = 0;
		(void)tw__tls_writev(h->tls, &v, 1, &took);
		w = (ssize_t)took;
	} else {
		while (
		    (w = send(h->fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT)) < 0
		    && errno == EINTR)
			;
	}
	if (match != TW_OK) {
		*what = why;
		return match;
	}
	if (w != (ssize_t)n) {
		*what = "sending the handshake";
		return TW_EPEER;
	}
	return TW_OK;
}

// The HELLO is in: look up the link and answer, or park.
static void hs_hello_done(hs *h)
{
	const char *what = "finding the link it names";
	int status = lookup(h, &what);
	if (status == TW_EAGAIN) {
		if (h->state != HS_PARKED) {
			h->state = HS_PARKED;
			h->wait_until
			    = tw__now_ns() + atomic_load(&hs_link_wait_ns);
		}
		return; // looked at again when things change
	}
	if (status == TW_OK)
		status = hs_answer(h, &what);
	if (h->unknown_resume) {
		hs_close(h, TW_EPROTO,
		    "it resumes a connection this process does not know (any "
		    "more)");
		return;
	}
	if (status != TW_OK) {
		if (status == TW_EAUTH)
			note_auth_failure(h);
		hs_close(h, status, what);
		return;
	}
	if (h->me.secret == NULL) {
		hs_finish(h);
		return;
	}
	h->state = HS_AUTH;
	h->have = 0;
	h->want = TW_TCP_AUTH_LEN;
	h->wait_until = h->deadline;
	if (h->tls != NULL && tw__tls_pending(h->tls))
		hs_step(h); // the proof may be in TLS's buffer already
	else if (tw__pfd_arm(h->pfd, TW__POLL_IN) != TW_OK)
		hs_close(h, TW_ESYS, "watching the connection");
}

// Reads what the socket has, up to h->want bytes in all.  TW_OK (some or
// all), TW_EAGAIN, TW_EPEER.
static int hs_read(hs *h)
{
	size_t got = 0;
	int status = h->tls != NULL
	    ? tw__tls_recv(h->tls, h->buf + h->have, h->want - h->have, &got)
	    : tw__tcp_recv(h->fd, h->buf + h->have, h->want - h->have, &got);
	if (status == TW_OK)
		h->have += got;
	return status;
}

// A TLS connection to a node that serves no TLS link: the start of a
// plaintext HELLO tells the dialer so (after the ClientHello is read, so
// that closing does not reset the connection before it arrives).
static void refuse_tls(hs *h)
{
	unsigned char sink[4096];
	size_t got;
	while (tw__tcp_recv(h->fd, sink, sizeof(sink), &got) == TW_OK)
		;
	(void)send(h->fd, "TWIR", 4, MSG_NOSIGNAL | MSG_DONTWAIT);
	shutdown(h->fd, SHUT_WR);
	tw__tcp_node_note_auth(h->a->node);
	hs_close(
	    h, TW_EAUTH, "it speaks TLS, and no link on this address does");
}

// Looks at the first byte: TLS or plaintext.  TW_OK (h->tls set for TLS),
// TW_EAGAIN (not here yet), or why not (h is closed then, or freed).
static int sniff(hs *h)
{
	unsigned char b;
	ssize_t r;
	while ((r = recv(h->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT)) < 0
	    && errno == EINTR)
		;
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return TW_EAGAIN;
	if (r <= 0) {
		hs_close(h, TW_EPEER, "the peer closed the connection");
		return TW_EPEER;
	}
	tw__tls_ctx *ctx
	    = b == TW_TLS_FIRST_BYTE ? tw__tcp_node_tls(h->a->node) : NULL;
	if (b == TW_TLS_FIRST_BYTE && ctx == NULL) {
		// No TLS link here yet; one may be joining (the listener
		// accepts before a new link's files are read): kept, like a
		// handshake for a link not created yet, and refused when
		// none came in time.
		if (!h->tls_wait) {
			h->tls_wait = true;
			h->wait_until
			    = tw__now_ns() + atomic_load(&hs_link_wait_ns);
		}
		return TW_EAGAIN;
	}
	h->tls_wait = false;
	h->sniffed = true;
	h->wait_until = h->deadline; // the first byte came
	if (b != TW_TLS_FIRST_BYTE)
		return TW_OK; // plaintext: the HELLO's decoder judges it
	int status = tw__tls_new(ctx, h->fd, true, &h->tls);
	if (status != TW_OK) {
		hs_close(h, status, "starting TLS");
		return status;
	}
	h->state = HS_TLS;
	return TW_OK;
}

// Reads and advances h; may free it.
static void hs_step(hs *h)
{
	unsigned events = TW__POLL_IN;
	for (;;) {
		if (!h->sniffed) {
			int status = sniff(h);
			if (status == TW_EAGAIN && h->tls_wait)
				return; // not armed: looked at again on a join
			if (status == TW_EAGAIN)
				break;
			if (status != TW_OK)
				return;
		}
		if (h->state == HS_TLS) {
			short ev = 0;
			int status = tw__tls_handshake_step(h->tls, &ev);
			if (status == TW_EAGAIN) {
				events = ev == POLLOUT ? TW__POLL_OUT
				                       : TW__POLL_IN;
				break;
			}
			if (status != TW_OK) {
				// The stranger's rank is unknown: every link
				// waiting here hears of it.
				if (status == TW_EAUTH)
					tw__tcp_node_note_auth(h->a->node);
				snprintf(h->why, sizeof(h->why), "TLS: %s",
				    tw__tls_reason(h->tls));
				hs_close(h, status, h->why);
				return;
			}
			h->state = HS_HELLO;
		}
		int status = hs_read(h);
		if (status == TW_EAGAIN)
			break;
		if (status != TW_OK) {
			if (h->tls != NULL && status != TW_EPEER) {
				snprintf(h->why, sizeof(h->why), "TLS: %s",
				    tw__tls_reason(h->tls));
				hs_close(h, status, h->why);
			} else {
				hs_close(h, status,
				    "the peer closed the connection");
			}
			return;
		}
		if (h->state == HS_HELLO) {
			// Reading is exact: never past the record, so that
			// the first frame stays for the connection's reader.
			h->wait_until = h->deadline; // the first byte came
			tw__tcp_hello ph;
			const char *why = "malformed";
			int rv
			    = tw__tcp_hello_decode(h->buf, h->have, &ph, &why);
			if (rv > 0) {
				tw__tcp_hs_peer_from(&h->peer, &ph, h->nonce);
				hs_hello_done(h);
				return;
			}
			if (rv != TW_EAGAIN) {
				hs_close(h, TW_EPROTO, why);
				return;
			}
			if (h->have == h->want) {
				// The first 16 bytes give the record's length.
				size_t want = h->have < TW_TCP_HELLO_FIXED
				    ? TW_TCP_HELLO_FIXED
				    : TW_TCP_HELLO_FIXED + h->buf[14]
				        + h->buf[15];
				if (want <= h->have
				    || want > TW_TCP_HELLO_MAX) {
					hs_close(h, TW_EPROTO, "malformed");
					return;
				}
				h->want = want;
			}
		} else if (h->state == HS_AUTH && h->have == h->want) {
			const char *why = "malformed proof";
			status = tw__tcp_hs_auth_check(
			    &h->me, &h->peer, h->buf, &why);
			if (status != TW_OK) {
				if (status == TW_EAUTH)
					note_auth_failure(h);
				hs_close(h, status, why);
				return;
			}
			hs_finish(h);
			return;
		}
	}
	if (tw__pfd_arm(h->pfd, events) != TW_OK)
		hs_close(h, TW_ESYS, "watching the connection");
}

static void on_hs(tw__pfd *pfd, unsigned events, void *arg)
{
	(void)pfd;
	(void)events;
	hs *h = arg;
	tcp_acceptor *a = h->a;
	hs_step(h);
	arm_timer(a);
}

// --- accepting ---------------------------------------------------------------

static void addr_of(int fd, char *host, size_t hcap, char *who, size_t wcap)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char serv[NI_MAXSERV];
	if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0
	    || getnameinfo((struct sockaddr *)&ss, len, host, hcap, serv,
	           sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV)
	        != 0) {
		snprintf(host, hcap, "?");
		snprintf(who, wcap, "an unknown peer");
		return;
	}
	if (ss.ss_family == AF_INET6)
		snprintf(who, wcap, "[%s]:%s", host, serv);
	else
		snprintf(who, wcap, "%s:%s", host, serv);
}

// Refuses a connection beyond the limits, logging at most once a second.
static void refuse(tcp_acceptor *a, int fd, const char *who, const char *why)
{
	int64_t now = tw__now_ns();
	if (now - a->last_refusal_log >= 1000000000) {
		a->last_refusal_log = now;
		TW_WARN("tcp", "%s: closing a connection from %s: %s",
		    tw__tcp_node_name(a->node), who, why);
	}
	close(fd);
}

static void accept_one(tcp_acceptor *a, int fd)
{
	hs *h = calloc(1, sizeof(*h));
	if (h == NULL) {
		close(fd);
		return;
	}
	h->fd = fd;
	addr_of(fd, h->src, sizeof(h->src), h->who, sizeof(h->who));
	unsigned same = 0;
	for (hs *o = a->list; o != NULL; o = o->next)
		same += strcmp(o->src, h->src) == 0;
	if (a->active >= TW_TCP_HS_MAX || same >= TW_TCP_HS_PER_SOURCE) {
		refuse(a, fd, h->who,
		    a->active >= TW_TCP_HS_MAX
		        ? "too many handshakes in progress"
		        : "too many handshakes in progress from its address");
		free(h);
		return;
	}
	tw__tcp_sock_tune(fd);
	h->a = a;
	h->state = HS_HELLO;
	h->want = 16;
	int64_t now = tw__now_ns();
	h->deadline = now + atomic_load(&hs_timeout_ns);
	h->wait_until = now + atomic_load(&hs_first_ns);
	if (tw__tcp_random(h->nonce, sizeof(h->nonce)) != TW_OK
	    || tw__pfd_init(
	           tw__tcp_node_poller(a->node), fd, on_hs, h, &h->pfd)
	        != TW_OK) {
		close(fd);
		free(h);
		return;
	}
	h->next = a->list;
	a->list = h;
	a->active++;
	if (tw__pfd_arm(h->pfd, TW__POLL_IN) != TW_OK)
		hs_close(h, TW_ESYS, "watching the connection");
}

static void on_listen(tw__pfd *pfd, unsigned events, void *arg)
{
	(void)events;
	tcp_acceptor *a = arg;
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		int fd = accept4(tw__tcp_listener_fd(a->l), NULL, NULL,
		    SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd >= 0) {
			accept_one(a, fd);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS
		    || errno == ENOMEM) {
			// Pending connections stay in the backlog; looking
			// again at once would only spin.
			TW_LOG_ONCE(TW_LOG_WARN, "tcp",
			    "accepting on %s: %m; pausing",
			    tw__tcp_node_name(a->node));
			a->paused_until = tw__now_ns() + ACCEPT_PAUSE_NS;
			arm_timer(a);
			return;
		}
		break; // EAGAIN, or an error of one connection
	}
	(void)tw__pfd_arm(pfd, TW__POLL_IN);
	arm_timer(a);
}

// Looks at parked handshakes again.
static void retry_parked(tcp_acceptor *a)
{
	// hs_hello_done may free any handshake it finishes, but only that
	// one; the others stay listed.
	hs *h = a->list;
	while (h != NULL) {
		hs *next = h->next;
		if (h->state == HS_PARKED)
			hs_hello_done(h);
		else if (h->tls_wait)
			hs_step(h);
		h = next;
	}
}

static void on_timer(tw__pfd *pfd, unsigned events, void *arg)
{
	(void)pfd;
	(void)events;
	tcp_acceptor *a = arg;
	int64_t now = tw__now_ns();
	retry_parked(a);
	hs *h = a->list;
	while (h != NULL) {
		hs *next = h->next;
		if (now >= h->deadline)
			hs_close(h, TW_ETIMEDOUT, "the handshake");
		else if (now >= h->wait_until && h->tls_wait)
			refuse_tls(h);
		else if (now >= h->wait_until)
			hs_close(h,
			    h->state == HS_PARKED ? TW_EPEER : TW_ETIMEDOUT,
			    h->state == HS_PARKED
			        ? "no such link here"
			        : "waiting for its first byte");
		h = next;
	}
	if (a->paused_until != 0 && now >= a->paused_until) {
		a->paused_until = 0;
		(void)tw__pfd_arm(a->lpfd, TW__POLL_IN);
	}
	arm_timer(a);
}

static void kick_task(void *arg)
{
	tcp_acceptor *a = arg;
	retry_parked(a);
	arm_timer(a);
}

static void stop_task(void *arg)
{
	tcp_acceptor *a = arg;
	while (a->list != NULL) {
		hs *h = a->list;
		hs_unlink(a, h);
		hs_free(h);
	}
	tw__pfd_fini(a->lpfd);
	tw__pfd_fini(a->tpfd);
	pthread_mutex_lock(&a->mtx);
	a->done = true;
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mtx);
}

void tw__tcp_acceptor_kick(tcp_acceptor *a)
{
	pthread_mutex_lock(&a->mtx);
	if (!a->stopped)
		tw__poller_post(tw__tcp_node_poller(a->node), &a->kick_task);
	pthread_mutex_unlock(&a->mtx);
}

unsigned tw__tcp_acceptor_active(tcp_acceptor *a)
{
	return a->active;
}

void tw__tcp_accept_set_waits(
    int64_t first_ns, int64_t total_ns, int64_t link_ns)
{
	if (first_ns > 0)
		atomic_store(&hs_first_ns, first_ns);
	if (total_ns > 0)
		atomic_store(&hs_timeout_ns, total_ns);
	if (link_ns > 0)
		atomic_store(&hs_link_wait_ns, link_ns);
}

int tw__tcp_acceptor_new(tcp_node *n, tw__tcp_listener *l, tcp_acceptor **out)
{
	tcp_acceptor *a = calloc(1, sizeof(*a));
	if (a == NULL)
		return TW_ENOMEM;
	a->node = n;
	a->l = l;
	a->kick_task = (tw__poll_task) { .fn = kick_task, .arg = a };
	a->stop_task = (tw__poll_task) { .fn = stop_task, .arg = a };
	pthread_mutex_init(&a->mtx, NULL);
	tw__cond_init(&a->cv);
	tw__poller *p = tw__tcp_node_poller(n);
	int status = tw__ptimer_init(p, on_timer, a, &a->tpfd);
	if (status == TW_ESYS)
		TW_ERROR("tcp", "cannot make a timer: %m");
	if (status == TW_OK)
		status = tw__pfd_init(
		    p, tw__tcp_listener_fd(l), on_listen, a, &a->lpfd);
	if (status == TW_OK)
		status = tw__pfd_arm(a->lpfd, TW__POLL_IN);
	if (status != TW_OK) {
		if (a->lpfd != NULL)
			tw__pfd_fini(a->lpfd);
		if (a->tpfd != NULL)
			tw__pfd_fini(a->tpfd);
		pthread_cond_destroy(&a->cv);
		pthread_mutex_destroy(&a->mtx);
		free(a);
		return status;
	}
	*out = a;
	return TW_OK;
}

void tw__tcp_acceptor_free(tcp_acceptor *a)
{
	pthread_mutex_lock(&a->mtx);
	a->stopped = true;
	pthread_mutex_unlock(&a->mtx);
	// The handshakes are the I/O thread's: it drops them, after any
	// kick posted before.
	tw__poller_post(tw__tcp_node_poller(a->node), &a->stop_task);
	pthread_mutex_lock(&a->mtx);
	while (!a->done)
		pthread_cond_wait(&a->cv, &a->mtx);
	pthread_mutex_unlock(&a->mtx);
	pthread_cond_destroy(&a->cv);
	pthread_mutex_destroy(&a->mtx);
	free(a);
}
