// The rendezvous: a link created from a root address (tw_desc_set_root)
// instead of a list of parties.
//
// Design notes.  Every party makes a transfer engine named "p<rank>" that
// listens where the party's link will listen: rank 0 on the root address,
// the others on their bind address (by default the local address whose
// route reaches the root, on a free port).  Each non-root engine connects
// to rank 0's engine and sends one notification with the link id, the
// size, its rank and its address; once rank 0 has heard from every rank it
// answers each with the whole roster, and everyone then creates the link
// over that roster as if it had been listed.  Reusing the engine brings
// what a rendezvous needs without a second protocol: the one shared port
// per node (the engine's port is the one the link then uses, held open in
// between), the link's secret and TLS for authentication, and reconnection
// and bounded frames.  Each engine lives until its party's link is up:
// rank 0's link is up only once every party connected to it, and so had
// its roster.
//
// Trust.  A connecting engine proved the secret (or, with TLS, holds a
// certificate for the name "p<rank>", so a rank cannot be claimed by a
// party certified for another).  Rank 0 refuses a request that is
// malformed, names another link, or claims a rank that another party has
// already claimed; a request that conflicts with the launch itself (another
// size, a rank taken twice) fails rank 0 as well, since no link can come
// of it, and every party that has waited is told why.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "engine/wire.h"
#include "link/link_int.h"
#include "link/rdv_wire.h"
#include "transport/tcp/tcp_sock.h"

#include <tagwire/engine.h>

// Room for the largest roster: every address at its longest.
#define RDV_MSG_MAX ((int64_t)TW_RDV_PARTIES_MAX * (TW_RDV_ADDR_MAX + 2) + 16)

typedef struct rdv {
	const tw_desc *d;
	const char *link_id;
	const char *root;
	size_t size, self;
	int64_t deadline;
	tw_engine *e;
	char addr[TW_RDV_ADDR_MAX + 1]; // where this party listens
	char **addrs; // the roster, size entries
	tw_peer *peers; // rank 0: each rank's engine (0: not heard of)
} rdv;

static void refuse(rdv *r, tw_peer peer, int status, const char *why)
{
	tw_buf m;
	if (tw__rdv_refuse_encode(status, why, &m) == TW_OK) {
		tw_engine_notify(r->e, peer, m.data, m.len);
		tw_buf_free(&m);
	}
}

// Makes this party's engine with the link's secret, TLS and timeouts, and
// listens where the link will.
static int engine_up(rdv *r)
{
	const int64_t *opts = tw__desc_opts(r->d);
	char name[24];
	snprintf(name, sizeof(name), "p%zu", r->self);
	int status = tw_engine_new(name, &r->e);
	if (status != TW_OK)
		return status;
	size_t slen;
	const void *secret = tw__desc_secret(r->d, &slen);
	const char *const *tls = tw__desc_tls(r->d);
	int64_t msg_max = RDV_MSG_MAX;
	if ((status = tw_engine_set(r->e, TW_OPT_CONNECT_TIMEOUT_MS,
	         opts[TW_OPT_CONNECT_TIMEOUT_MS]))
	        != TW_OK
	    || (status = tw_engine_set(
	            r->e, TW_OPT_HEARTBEAT_MS, opts[TW_OPT_HEARTBEAT_MS]))
	        != TW_OK
	    || (status = tw_engine_set(r->e, TW_OPT_MAX_MSG_SIZE, msg_max))
	        != TW_OK
	    || (slen > 0
	        && (status = tw_engine_set_secret(r->e, secret, slen))
	            != TW_OK)
	    || (tls != NULL
	        && (status = tw_engine_set_tls(r->e, tls[0], tls[1], tls[2]))
	            != TW_OK))
		return status;

	const char *bind;
	tw__desc_root(r->d, &bind);
	char where[TW_RDV_ADDR_MAX + 1];
	if (r->self == 0) {
		snprintf(where, sizeof(where), "%s", r->root);
	} else if (bind != NULL) {
		snprintf(where, sizeof(where), "%s", bind);
	} else if ((status
	               = tw__tcp_local_addr_for(r->root, where, sizeof(where)))
	    != TW_OK) {
		TW_ERROR("link",
		    "create %s: no local address reaches the root %s",
		    r->link_id, r->root);
		return status;
	}
	if ((status = tw_engine_listen(r->e, where)) != TW_OK) {
		TW_ERROR("link", "create %s: cannot listen at %s: %s",
		    r->link_id, where, tw_strerror(status));
		return status;
	}
	if (r->self == 0) {
		snprintf(r->addr, sizeof(r->addr), "%s", r->root);
		return TW_OK;
	}
	// The port, when the bind address left it to the system.
	tw_buf info;
	tw__eng_info in;
	if ((status = tw_engine_info(r->e, &info)) != TW_OK)
		return status;
	status = tw__eng_info_decode(info.data, info.len, &in);
	tw_buf_free(&info);
	size_t len = strlen(in.addr);
	if (status != TW_OK || len > TW_RDV_ADDR_MAX)
		return TW_EINVAL;
	memcpy(r->addr, in.addr, len + 1);
	return TW_OK;
}

// Tells every party heard of so far why the rendezvous failed.
static void refuse_all(rdv *r, int status, const char *why)
{
	for (size_t i = 1; i < r->size; i++)
		if (r->peers[i] != 0)
			refuse(r, r->peers[i], status, why);
}

// Rank 0: the next request, checked.  TW_OK with a new rank recorded,
// TW_EAGAIN for a request refused alone, or the failure of the whole.
static int root_take(rdv *r, tw_peer peer, const tw_buf *msg, size_t *missing)
{
	tw__rdv_hello h;
	char why[256];
	const char *name = tw_engine_peer_name(r->e, peer);
	if (tw__rdv_hello_decode(msg->data, msg->len, &h) != TW_OK) {
		TW_WARN("link",
		    "create %s: a malformed request from engine %s",
		    r->link_id, name != NULL ? name : "?");
		refuse(r, peer, TW_EPROTO, "malformed rendezvous request");
		return TW_EAGAIN;
	}
	char want[24];
	snprintf(want, sizeof(want), "p%u", h.rank);
	if (strcmp(h.link_id, r->link_id) != 0) {
		snprintf(why, sizeof(why),
		    "the root serves link %.64s, not %.64s", r->link_id,
		    h.link_id);
		TW_WARN("link", "create %s: rank %u refused: %s", r->link_id,
		    h.rank, why);
		refuse(r, peer, TW_EINVAL, why);
		return TW_EAGAIN;
	}
	if (name == NULL || strcmp(name, want) != 0) {
		snprintf(why, sizeof(why),
		    "engine %.32s claims rank %u (its name must be %s)",
		    name != NULL ? name : "?", h.rank, want);
		TW_WARN("link", "create %s: %s", r->link_id, why);
		refuse(r, peer, TW_EAUTH, why);
		return TW_EAGAIN;
	}
	if (h.size != r->size || h.rank == 0 || r->peers[h.rank] != 0) {
		if (h.size != r->size)
			snprintf(why, sizeof(why),
			    "rank %u expects %u parties, rank 0 expects %zu",
			    h.rank, h.size, r->size);
		else
			snprintf(why, sizeof(why),
			    "rank %u was claimed twice (by %.96s and %.96s)",
			    h.rank, h.rank == 0 ? r->root : r->addrs[h.rank],
			    h.addr);
		TW_ERROR("link", "create %s: rendezvous failed: %s",
		    r->link_id, why);
		refuse(r, peer, TW_EINVAL, why);
		refuse_all(r, TW_EINVAL, why);
		return TW_EINVAL;
	}
	if ((r->addrs[h.rank] = strdup(h.addr)) == NULL)
		return TW_ENOMEM;
	r->peers[h.rank] = peer;
	(*missing)--;
	return TW_OK;
}

static int root_serve(rdv *r)
{
	if ((r->peers = calloc(r->size, sizeof(*r->peers))) == NULL)
		return TW_ENOMEM;
	size_t missing = r->size - 1;
	int status = TW_OK;
	while (missing > 0 && status == TW_OK) {
		tw_peer peer;
		tw_buf msg;
		int64_t left = tw__ms_left(r->deadline);
		status
		    = tw_notify_recv(r->e, &peer, &msg, left > 0 ? left : 0);
		if (status != TW_OK)
			break;
		status = root_take(r, peer, &msg, &missing);
		tw_buf_free(&msg);
		if (status == TW_EAGAIN)
			status = TW_OK;
	}
	if (status == TW_ETIMEDOUT) {
		size_t first = 1;
		while (r->peers[first] != 0)
			first++;
		TW_ERROR("link",
		    "create %s: %zu of %zu parties did not reach the root "
		    "in time (rank %zu first)",
		    r->link_id, missing, r->size, first);
		refuse_all(r, TW_ETIMEDOUT,
		    "not every party reached the root in time");
	}
	if (status != TW_OK)
		return status;
	tw_buf roster;
	if ((status
	        = tw__rdv_roster_encode(r->addrs, (uint32_t)r->size, &roster))
	    != TW_OK)
		return status;
	for (size_t i = 1; i < r->size && status == TW_OK; i++)
		status = tw_engine_notify(
		    r->e, r->peers[i], roster.data, roster.len);
	tw_buf_free(&roster);
	return status;
}

static int party_join(rdv *r)
{
	tw_peer root;
	int status = tw_engine_connect_to(r->e, r->root, "p0", &root);
	if (status != TW_OK) {
		TW_ERROR("link", "create %s: cannot reach the root %s: %s",
		    r->link_id, r->root, tw_strerror(status));
		return status;
	}
	tw__rdv_hello h
	    = { .size = (uint32_t)r->size, .rank = (uint32_t)r->self };
	snprintf(h.link_id, sizeof(h.link_id), "%s", r->link_id);
	snprintf(h.addr, sizeof(h.addr), "%s", r->addr);
	tw_buf msg;
	if ((status = tw__rdv_hello_encode(&h, &msg)) != TW_OK)
		return status;
	status = tw_engine_notify(r->e, root, msg.data, msg.len);
	tw_buf_free(&msg);
	if (status != TW_OK)
		return status;
	tw_peer from;
	int64_t left = tw__ms_left(r->deadline);
	if ((status = tw_notify_recv(r->e, &from, &msg, left > 0 ? left : 0))
	    != TW_OK) {
		TW_ERROR("link", "create %s: no roster from the root %s: %s",
		    r->link_id, r->root, tw_strerror(status));
		return status;
	}
	tw__rdv_reply rep;
	status = tw__rdv_reply_decode(msg.data, msg.len, &rep);
	tw_buf_free(&msg);
	if (status != TW_OK) {
		TW_ERROR("link", "create %s: a malformed roster from %s",
		    r->link_id, r->root);
		return status;
	}
	if (rep.status != TW_OK) {
		TW_ERROR("link", "create %s: the root %s refused rank %zu: %s",
		    r->link_id, r->root, r->self, rep.why);
		return rep.status;
	}
	if (rep.size != r->size || strcmp(rep.addrs[r->self], r->addr) != 0) {
		TW_ERROR("link",
		    "create %s: the root's roster does not fit this party "
		    "(%u parties)",
		    r->link_id, rep.size);
		tw__rdv_reply_free(&rep);
		return TW_EPROTO;
	}
	r->addrs = rep.addrs; // size entries, as r->addrs is freed
	return TW_OK;
}

// The description of the link over the roster, with d's options, secret
// and TLS.
static int roster_desc(const rdv *r, tw_desc **out)
{
	tw_desc *n = tw_desc_new(r->link_id);
	if (n == NULL)
		return TW_ENOMEM;
	int status = TW_OK;
	for (size_t i = 0; i < r->size && status == TW_OK; i++) {
		char id[24];
		snprintf(id, sizeof(id), "p%zu", i);
		status = tw_desc_add_party(n, id, r->addrs[i]);
		if (status == TW_EINVAL) {
			TW_ERROR("link",
			    "create %s: rank %zu's address from "
			    "the root is not valid",
			    r->link_id, i);
			status = TW_EPROTO;
		}
	}
	const int64_t *opts = tw__desc_opts(r->d);
	for (int o = 0; o < TW_OPT_COUNT && status == TW_OK; o++)
		status = tw_desc_set(n, o, opts[o]);
	size_t slen;
	const void *secret = tw__desc_secret(r->d, &slen);
	const char *const *tls = tw__desc_tls(r->d);
	if (status == TW_OK && slen > 0)
		status = tw_desc_set_secret(n, secret, slen);
	if (status == TW_OK && tls != NULL)
		status = tw_desc_set_tls(n, tls[0], tls[1], tls[2]);
	if (status != TW_OK) {
		tw_desc_free(n);
		return status;
	}
	*out = n;
	return TW_OK;
}

int tw__rdv_link_create(const tw_desc *d, size_t self, tw_link **out)
{
	rdv r = {
		.d = d,
		.link_id = tw__desc_link_id(d),
		.root = tw__desc_root(d, NULL),
		.size = tw_desc_size(d),
		.self = self,
		.deadline
		= tw__deadline_ms(tw__desc_opts(d)[TW_OPT_CONNECT_TIMEOUT_MS]),
	};
	if (out == NULL || self >= r.size) {
		TW_ERROR("link",
		    "create %s: rank %zu out of range (%zu parties)",
		    r.link_id, self, r.size);
		return TW_EINVAL;
	}
	int status = engine_up(&r);
	if (status == TW_OK
	    && (r.addrs = calloc(r.size, sizeof(char *))) == NULL)
		status = TW_ENOMEM;
	if (status == TW_OK && self == 0
	    && (r.addrs[0] = strdup(r.addr)) == NULL)
		status = TW_ENOMEM;
	if (status == TW_OK && self == 0)
		status = root_serve(&r);
	else if (status == TW_OK) {
		free(r.addrs);
		r.addrs = NULL;
		status = party_join(&r);
	}
	tw_desc *full = NULL;
	if (status == TW_OK)
		status = roster_desc(&r, &full);
	if (status == TW_OK)
		status = tw_link_create(full, self, out);
	tw_desc_free(full);
	// Only now: until the link is up, the engine holds its port.
	tw_engine_free(r.e);
	if (r.addrs != NULL)
		for (size_t i = 0; i < r.size; i++)
			free(r.addrs[i]);
	free(r.addrs);
	free(r.peers);
	return status;
}
