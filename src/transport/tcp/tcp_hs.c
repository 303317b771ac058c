// The tcp:// connection handshake, connecting side: HELLO both ways, then
// AUTH both ways when both ends have a secret; and the records both sides
// build and check (the accepting side runs on the I/O thread, without
// blocking: tcp_accept.c).  The bytes are in docs/PROTOCOL.md; the
// decoders (tcp_proto.c) are pure and fuzzed, so this file only moves
// bytes, bounds every wait by the deadline and the cancel flag, and
// decides.
//
// Reading is exact: the decoders say how much is missing (TW_EAGAIN), and
// we read no further than the record's end, so the first frame after the
// handshake stays in the socket for the connection's own reader.  A peer
// that sends too slowly (a "slowloris") runs into the deadline.

#include <errno.h>
#include <stdatomic.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <tagwire/status.h>

#include "core/clock.h"
#include "core/log.h"
#include "transport/tcp/tcp_auth.h"
#include "transport/tcp/tcp_sock.h"

// Who is at the other end, for log lines.
static void peer_name(int fd, char *out, size_t cap)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[NI_MAXHOST], serv[NI_MAXSERV];
	if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0
	    || getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host),
	           serv, sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV)
	        != 0) {
		snprintf(out, cap, "an unknown peer");
		return;
	}
	if (ss.ss_family == AF_INET6)
		snprintf(out, cap, "[%s]:%s", host, serv);
	else
		snprintf(out, cap, "%s:%s", host, serv);
}

typedef struct hs_ctx {
	int fd;
	tw__tls *tls; // NULL: plaintext
	int64_t deadline;
	const _Atomic int *cancel;
	char who[NI_MAXHOST + NI_MAXSERV + 8];
	const char *why;
	bool quiet; // a resume's: its caller says what came of it
} hs_ctx;

// A failure of TLS: its reason goes into the log line.
static int tls_err(hs_ctx *c, int status)
{
	if (status != TW_EAGAIN && c->tls != NULL)
		c->why = tw__tls_reason(c->tls);
	return status;
}

static int write_all(hs_ctx *c, const void *buf, size_t n)
{
	int fd = c->fd;
	int64_t deadline = c->deadline;
	const _Atomic int *cancel = c->cancel;
	const unsigned char *p = buf;
	while (n > 0 && c->tls != NULL) {
		struct iovec v = { (void *)p, n };
		size_t took = 0;
		int status = tls_err(c, tw__tls_writev(c->tls, &v, 1, &took));
		p += took;
		n -= took;
		if (status == TW_EAGAIN)
			status
			    = tw__tcp_wait_fd(fd, POLLOUT, deadline, cancel);
		if (status != TW_OK)
			return status;
	}
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			int status
			    = tw__tcp_wait_fd(fd, POLLOUT, deadline, cancel);
			if (status != TW_OK)
				return status;
			continue;
		}
		return TW_EPEER;
	}
	return TW_OK;
}

// Reads exactly n more bytes into buf.
static int read_more(hs_ctx *c, unsigned char *buf, size_t n)
{
	while (n > 0) {
		size_t got = 0;
		int status = c->tls != NULL
		    ? tls_err(c, tw__tls_recv(c->tls, buf, n, &got))
		    : tw__tcp_recv(c->fd, buf, n, &got);
		if (status == TW_EAGAIN)
			status = tw__tcp_wait_fd(
			    c->fd, POLLIN, c->deadline, c->cancel);
		else if (status == TW_OK) {
			buf += got;
			n -= got;
		}
		if (status != TW_OK)
			return status;
	}
	return TW_OK;
}

static int hs_fail(hs_ctx *c, int status, const char *what)
{
	if (c->quiet) {
		TW_DEBUG("tcp", "resuming with %s: %s: %s", c->who, what,
		    c->why != NULL ? c->why : tw_strerror(status));
		return status;
	}
	switch (status) {
	case TW_EPROTO:
		TW_WARN("tcp", "handshake with %s failed: %s (%s); closing",
		    c->who, what, c->why != NULL ? c->why : "malformed");
		break;
	case TW_ETIMEDOUT:
		TW_WARN("tcp",
		    "handshake with %s failed: %s timed out; closing", c->who,
		    what);
		break;
	case TW_EAUTH:
		TW_WARN("tcp",
		    "peer %s failed authentication: %s%s%s; closing", c->who,
		    what, c->why != NULL && c->why != what ? ": " : "",
		    c->why != NULL && c->why != what ? c->why : "");
		break;
	default:
		TW_WARN("tcp", "handshake with %s failed: %s: %s", c->who,
		    what, tw_strerror(status));
		break;
	}
	return status;
}

// Reads one HELLO, growing the read as the decoder asks.
static int hs_read_hello(hs_ctx *c, tw__tcp_hello *h, unsigned char *buf)
{
	size_t have = 0, want = 4;
	for (;;) {
		int status = read_more(c, buf + have, want - have);
		if (status != TW_OK)
			return status;
		have = want;
		int rv = tw__tcp_hello_decode(buf, have, h, &c->why);
		if (rv > 0)
			return TW_OK;
		if (rv != TW_EAGAIN)
			return rv;
		// Never past the record: the first 56 bytes give its length.
		if (have < TW_TCP_HELLO_FIXED)
			want = have < 6 ? 6 : TW_TCP_HELLO_FIXED;
		else
			want = TW_TCP_HELLO_FIXED + buf[14] + buf[15];
		if (want <= have || want > TW_TCP_HELLO_MAX)
			return TW_EPROTO; // the decoder said otherwise
	}
}

size_t tw__tcp_hs_hello_make(const tw__tcp_hs_self *me,
    const unsigned char nonce[TW_TCP_NONCE_LEN], unsigned char *buf,
    size_t cap)
{
	tw__tcp_hello h;
	memset(&h, 0, sizeof(h));
	h.flags = me->secret != NULL ? TW_TCP_CAP_SECRET : 0;
	if (me->tls)
		h.flags |= TW_TCP_CAP_TLS;
	if (me->stripe > 0)
		h.flags |= TW_TCP_CAP_STRIPE;
	if (me->resume)
		h.flags |= TW_TCP_CAP_RESUME;
	h.session = me->session;
	h.received = me->received;
	h.rank = me->rank;
	h.stripe = me->stripe;
	h.instance = me->instance;
	memcpy(h.nonce, nonce, TW_TCP_NONCE_LEN);
	h.link_id = me->link_id;
	h.link_id_len = strlen(me->link_id);
	h.addr = me->addr;
	h.addr_len = strlen(me->addr);
	return tw__tcp_hello_encode(buf, cap, &h);
}

static int hs_send_hello(hs_ctx *c, const tw__tcp_hs_self *me,
    const unsigned char nonce[TW_TCP_NONCE_LEN])
{
	unsigned char buf[TW_TCP_HELLO_MAX];
	size_t n = tw__tcp_hs_hello_make(me, nonce, buf, sizeof(buf));
	if (n == 0)
		return TW_EINVAL;
	return write_all(c, buf, n);
}

void tw__tcp_hs_peer_from(tw__tcp_hs_peer *p, const tw__tcp_hello *h,
    const unsigned char my_nonce[TW_TCP_NONCE_LEN])
{
	memset(p, 0, sizeof(*p));
	p->rank = h->rank;
	p->stripe = h->stripe;
	p->flags = h->flags;
	p->instance = h->instance;
	p->session = h->session;
	p->received = h->received;
	memcpy(p->link_id, h->link_id, h->link_id_len);
	memcpy(p->addr, h->addr, h->addr_len);
	memcpy(p->nonce, h->nonce, TW_TCP_NONCE_LEN);
	memcpy(p->my_nonce, my_nonce, TW_TCP_NONCE_LEN);
}

int tw__tcp_hs_secrets_match(
    const tw__tcp_hs_self *me, const tw__tcp_hs_peer *peer, const char **why)
{
	bool tls_theirs = (peer->flags & TW_TCP_CAP_TLS) != 0;
	if (me->tls != tls_theirs) {
		*why = me->tls ? "the peer does not use TLS for the link"
		               : "the peer uses TLS, this link does not";
		return TW_EAUTH;
	}
	bool mine = me->secret != NULL;
	bool theirs = (peer->flags & TW_TCP_CAP_SECRET) != 0;
	if (mine == theirs)
		return TW_OK;
	*why = mine ? "the peer has no secret for the link"
	            : "the peer wants a secret this link does not have";
	return TW_EAUTH;
}

int tw__tcp_hs_auth_make(const tw__tcp_hs_self *me,
    const tw__tcp_hs_peer *peer, unsigned char rec[TW_TCP_AUTH_LEN])
{
	unsigned char mac[TW_TCP_MAC_LEN];
	int status = tw__tcp_auth_proof(me->secret, me->secret_len,
	    peer->nonce, peer->my_nonce, me->instance, me->rank, me->link_id,
	    strlen(me->link_id), mac);
	if (status == TW_OK)
		tw__tcp_auth_encode(rec, TW_TCP_AUTH_LEN, mac);
	return status;
}

int tw__tcp_hs_auth_check(const tw__tcp_hs_self *me,
    const tw__tcp_hs_peer *peer, const unsigned char rec[TW_TCP_AUTH_LEN],
    const char **why)
{
	unsigned char mac[TW_TCP_MAC_LEN];
	if (tw__tcp_auth_decode(rec, TW_TCP_AUTH_LEN, mac, why) < 0)
		return TW_EPROTO;
	int status = tw__tcp_auth_check(me->secret, me->secret_len,
	    peer->my_nonce, peer->nonce, peer->instance, peer->rank,
	    me->link_id, strlen(me->link_id), mac);
	if (status == TW_EAUTH)
		*why = "wrong proof of the link's secret";
	return status;
}

static int hs_auth(
    hs_ctx *c, const tw__tcp_hs_self *me, const tw__tcp_hs_peer *peer)
{
	unsigned char rec[TW_TCP_AUTH_LEN];
	int status = tw__tcp_hs_auth_make(me, peer, rec);
	if (status != TW_OK)
		return status;
	if ((status = write_all(c, rec, sizeof(rec))) != TW_OK)
		return hs_fail(c, status, "sending the proof");
	// The record has a fixed size: read it whole, then decode.
	if ((status = read_more(c, rec, sizeof(rec))) != TW_OK)
		return hs_fail(c, status, "reading the proof");
	const char *why = NULL;
	status = tw__tcp_hs_auth_check(me, peer, rec, &why);
	if (status != TW_OK) {
		c->why = why;
		return hs_fail(
		    c, status, status == TW_EAUTH ? why : "reading the proof");
	}
	return TW_OK;
}

int tw__tcp_handshake(int fd, const tw__tcp_hs_self *me, int64_t deadline,
    const _Atomic int *cancel, tw__tcp_hs_peer *peer)
{
	return tw__tcp_handshake_tls(fd, NULL, me, deadline, cancel, peer);
}

int tw__tcp_handshake_tls(int fd, tw__tls *tls, const tw__tcp_hs_self *me,
    int64_t deadline, const _Atomic int *cancel, tw__tcp_hs_peer *peer)
{
	hs_ctx c = { .fd = fd,
		.tls = tls,
		.deadline = deadline,
		.cancel = cancel,
		.quiet = me->resume };
	peer_name(fd, c.who, sizeof(c.who));
	unsigned char nonce[TW_TCP_NONCE_LEN];
	unsigned char pbuf[TW_TCP_HELLO_MAX];
	tw__tcp_hello ph;
	int status = tw__tcp_random(nonce, sizeof(nonce));
	if (status != TW_OK)
		return status;
	// Connecting: speak first, then hear the answer.
	if ((status = hs_send_hello(&c, me, nonce)) != TW_OK)
		return hs_fail(&c, status, "sending the handshake");
	if ((status = hs_read_hello(&c, &ph, pbuf)) != TW_OK)
		return hs_fail(&c, status, "reading the handshake");
	tw__tcp_hs_peer_from(peer, &ph, nonce);
	if (strcmp(peer->link_id, me->link_id) != 0) {
		c.why = "the answer names another link";
		return hs_fail(&c, TW_EPROTO, "reading the handshake");
	}
	const char *why = NULL;
	if ((status = tw__tcp_hs_secrets_match(me, peer, &why)) != TW_OK)
		return hs_fail(&c, status, why);
	if (me->secret != NULL)
		return hs_auth(&c, me, peer);
	return TW_OK;
}
