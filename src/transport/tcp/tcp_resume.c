// Resuming a tcp:// connection whose socket broke, on the side that
// dialed it.
//
// Design notes.  A connection between two live processes can lose its
// socket (a reset, a middlebox that drops it, `ss -K`) while both ends
// still hold everything needed to go on: each keeps the frames the other
// has not confirmed (tcp_writer.c) and knows the last frame it handled.
// The side that dialed connects again, once per attempt, and shows the
// identity of the link that made the peer again (TLS and its name check,
// the HELLO, the secret's proof), with the RESUME capability, the session
// and stripe it continues, and the last frame it handled; the accepting
// side answers with its own (tcp_accept.c).  Both then swap the new socket
// in (tw__tcp_conn_resume), and each writes again what the other missed.
//
// An attempt that finds the port refusing means the peer's process is
// gone: the peer fails at once with TW_EPEER.  The accepting side, which
// waits for the dialer to come back, looks at the dialer's own listening
// port meanwhile (tw__tcp_resume_probe) for the same reason: a dialer
// whose process died never comes back, and its port says so at once.  So
// does an answer that does not resume (the peer no longer knows the
// session: it gave the connection up, or is another process now).  An attempt that gets no
// answer is tried again until the connection's down limit fails it.
//
// A stripe's refusal does not fail the peer while the main connection is
// up: the peer's last frames (its messages, the acks of ours) may still
// be on their way in on it, behind the stripe's end, and a peer failed
// now would drop them unread.  The main connection's own end, which a
// process that is gone or closing sends soon after, fails the peer once
// everything before it was read.

#include <stdio.h>
#include <sys/socket.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "transport/tcp/tcp.h"

// How long one attempt may take: a peer across a dead network does not
// answer, and the next attempt may find the network back.
#define RESUME_ATTEMPT_NS INT64_C(1000000000)

_Atomic uint64_t tw__tcp_resume_refused;

// Whether connection k's refusal waits for the main connection's end.
static bool main_reads_on(tcp_peer *p, unsigned k)
{
	if (k == 0)
		return false;
	tcp_conn *m = tw__tcp_peer_main(p);
	return !tw__tcp_conn_failed(m) && !tw__tcp_conn_is_down(m);
}

// The peer is gone for good.  An info line, not a warning: a peer whose
// process ended is the common case, and the application hears TW_EPEER.
static int fail_peer(tcp_peer *p, int status, const char *why)
{
	TW_INFO("tcp", "cannot resume the connection with %s: %s (%s)",
	    tw__tcp_peer_who(p), why, tw_err_name(TW_EPEER));
	tw__tcp_peer_fail(p, TW_EPEER, NULL);
	return status;
}

int tw__tcp_resume_dial(
    tcp_node *n, tcp_peer *p, unsigned k, const _Atomic int *cancel)
{
	tcp_conn *c = tw__tcp_peer_conn(p, k);
	if (c == NULL)
		return TW_EPEER;
	const tcp_creds *cr = tw__tcp_peer_creds(p);
	bool ok = false;
	uint64_t received = tw__tcp_conn_suspend(c, &ok);
	char host[TW_TCP_ADDR_MAX + 1];
	uint16_t port = 0;
	int status = ok ? TW_OK : TW_EPEER;
	if (status == TW_OK
	    && tw__tcp_addr_parse(
	           tw__tcp_peer_dialed(p), host, sizeof(host), &port)
	        != TW_OK)
		status = TW_EINVAL;
	int fd = -1;
	tw__tls *tls = NULL;
	int64_t deadline = tw__now_ns() + RESUME_ATTEMPT_NS;
	if (status == TW_OK) {
		status = tw__tcp_dial_once(host, port, deadline, cancel, &fd);
		if (status == TW_EPEER) {
			tw__tcp_conn_unref(c);
			atomic_fetch_add(&tw__tcp_resume_refused, 1);
			if (main_reads_on(p, k))
				return TW_EAGAIN;
			return fail_peer(p, TW_EPEER,
			    "its port refuses: its process is gone");
		}
	}
	if (status == TW_OK && cr->tls) {
		status = tw__tls_new(tw__tcp_node_tls(n), fd, false, &tls);
		if (status == TW_OK)
			status = tw__tls_handshake(tls, deadline, cancel);
		char names[256];
		if (status == TW_EAUTH) {
			snprintf(names, sizeof(names), "TLS: %s",
			    tw__tls_reason(tls));
			tw__tls_free(tls);
			close(fd);
			tw__tcp_conn_unref(c);
			return fail_peer(p, TW_EAUTH, names);
		}
		if (status == TW_OK
		    && !tw__tls_peer_is(
		        tls, cr->peer_id, names, sizeof(names))) {
			tw__tls_free(tls);
			close(fd);
			tw__tcp_conn_unref(c);
			return fail_peer(p, TW_EAUTH,
			    "the certificate names another party");
		}
	}
	tw__tcp_hs_peer hs;
	if (status == TW_OK) {
		tw__tcp_hs_self me = { .link_id = cr->link_id,
			.rank = cr->self_rank,
			.stripe = (uint16_t)k,
			.instance = tw__tcp_node_instance(n),
			.session = tw__tcp_peer_session(p),
			.resume = true,
			.received = received,
			.addr = tw__tcp_node_name(n),
			.secret = cr->secret,
			.secret_len = cr->secret_len,
			.tls = cr->tls };
		status = tw__tcp_handshake_tls(
		    fd, tls, &me, deadline, cancel, &hs);
		if (status == TW_OK
		    && (!(hs.flags & TW_TCP_CAP_RESUME)
		        || hs.session != tw__tcp_peer_session(p)
		        || hs.instance != tw__tcp_peer_instance(p)
		        || hs.rank != cr->peer_rank || hs.stripe != k))
			status = TW_EPROTO;
		if (status == TW_EPROTO || status == TW_EAUTH) {
			// Answered otherwise: the peer does not (any more)
			// know this connection.  (Closed unanswered is one
			// more break, tried again.)
			tw__tls_free(tls);
			close(fd);
			tw__tcp_conn_unref(c);
			return fail_peer(p, status,
			    status == TW_EAUTH
			        ? "the handshake failed authentication"
			        : "the peer no longer knows the connection");
		}
	}
	if (status == TW_OK)
		status = tw__tcp_conn_resume(c, fd, tls, hs.received);
	if (status != TW_OK) {
		tw__tls_free(tls);
		if (fd >= 0)
			close(fd);
	}
	tw__tcp_conn_unref(c);
	if (status == TW_OK || status == TW_ECLOSED)
		return status;
	// No answer, a socket broken again, no memory now: later.  (A
	// connection that failed meanwhile is not looked at again.)
	return TW_EAGAIN;
}

// How long a probe may take.
#define PROBE_NS INT64_C(300000000)

int tw__tcp_resume_probe(tcp_peer *p, unsigned k, const _Atomic int *cancel)
{
	char addr[TW_TCP_ADDR_MAX + 8];
	snprintf(addr, sizeof(addr), "tcp://%s", tw__tcp_peer_who(p));
	char host[TW_TCP_ADDR_MAX + 1];
	uint16_t port = 0;
	if (tw__tcp_addr_parse(addr, host, sizeof(host), &port) != TW_OK)
		return TW_EINVAL;
	int fd = -1;
	int status = tw__tcp_dial_once(
	    host, port, tw__now_ns() + PROBE_NS, cancel, &fd);
	if (status == TW_EPEER) {
		atomic_fetch_add(&tw__tcp_resume_refused, 1);
		if (main_reads_on(p, k))
			return TW_OK;
		return fail_peer(p, TW_EPEER,
		    "the port of the side that dialed refuses: its process "
		    "is gone");
	}
	if (fd >= 0) {
		// A reset rather than a FIN: the peer's acceptor drops it at
		// once, with no handshake to time out.
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };
		(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		close(fd);
	}
	return status == TW_ECLOSED ? TW_ECLOSED : TW_OK;
}
