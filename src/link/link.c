// Link life cycle: creation and the mesh handshake, child links, abort and
// close.
//
// Design notes.  Creation never needs a serial order between parties: each
// party first runs test_send towards every peer (which only needs the peer
// to exist, not to be inside tw_link_create at the same moment), then
// test_recv from every peer.  Nothing in the first phase waits for the
// second, so any start order and any delays complete as long as every
// party arrives before the connect timeout.

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/mailbox.h"
#include "link/link_int.h"

static void peers_free(tw__peer *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		pthread_mutex_destroy(&p[i].ack_mtx);
	free(p);
}

// Allocates a link with its own rank table; the caller fills map.
static tw_link *link_alloc(tw__family *fam, const char *id, size_t size,
    size_t rank, const int64_t *opts)
{
	tw_link *l = calloc(1, sizeof(*l));
	if (l == NULL)
		return NULL;
	l->fam = fam;
	l->size = size;
	l->rank = rank;
	l->id = strdup(id);
	l->id_len = strlen(id);
	l->map = calloc(size, sizeof(*l->map));
	l->peers = calloc(size, sizeof(*l->peers));
	if (l->id == NULL || l->map == NULL || l->peers == NULL) {
		free(l->id);
		free(l->map);
		free(l->peers);
		free(l);
		return NULL;
	}
	for (size_t i = 0; i < size; i++)
		pthread_mutex_init(&l->peers[i].ack_mtx, NULL);
	memcpy(l->opts, opts, sizeof(l->opts));
	atomic_init(&l->recv_timeout, opts[TW_OPT_RECV_TIMEOUT_MS]);
	atomic_init(&l->aborted, 0);
	tw__counters_init(&l->stats);
	return l;
}

static void link_free(tw_link *l)
{
	tw__counters_fini(&l->stats);
	peers_free(l->peers, l->size);
	free(l->map);
	free(l->id);
	free(l);
}

static void family_free(tw__family *f, bool destroy_chans)
{
	if (destroy_chans)
		for (size_t i = 0; i < f->size; i++)
			if (f->chans[i] != NULL)
				f->chans[i]->ops->destroy(f->chans[i]);
	// The tcp:// channels that same-host peers no longer carry data on
	// (TW_OPT_SHM_LOCAL) go after the channels that replaced them.
	for (size_t i = 0; f->spare != NULL && i < f->size; i++)
		if (f->spare[i] != NULL)
			f->spare[i]->ops->destroy(f->spare[i]);
	free(f->spare);
	free(f->peer_xops);
	free(f->chans);
	tw_mailbox_free(f->stash);
	pthread_mutex_destroy(&f->mtx);
	free(f);
}

// Runs test_send then test_recv on every channel.  On a timeout the log
// names every peer that did not answer.
static int handshake(tw_link *l, const tw_desc *d)
{
	tw__family *f = l->fam;
	const tw__party *parties = tw__desc_parties(d);
	int64_t deadline = tw__deadline_ms(l->opts[TW_OPT_CONNECT_TIMEOUT_MS]);
	int status = TW_OK;
	char missing[512] = "";
	size_t nmissing = 0;
	for (size_t k = 1; k < f->size; k++) {
		// Start with the next rank so that parties spread their first
		// attempts instead of all knocking on rank 0.
		size_t i = (f->self + k) % f->size;
		tw_channel *c = f->chans[i];
		int rv = c->ops->test_send(c, tw__ms_left(deadline));
		if (rv == TW_OK)
			continue;
		if (rv == TW_ETIMEDOUT) {
			size_t used = strlen(missing);
			if (used + 2 < sizeof(missing))
				snprintf(missing + used,
				    sizeof(missing) - used, "%s%s (%s)",
				    nmissing ? ", " : "", parties[i].id,
				    parties[i].addr);
			nmissing++;
		}
		// A missing peer is the news: it wins over a later failure
		// that it caused (a peer giving up on that same missing peer).
		if (rv == TW_ETIMEDOUT || status == TW_OK)
			status = rv;
	}
	if (status == TW_OK) {
		for (size_t k = 1; k < f->size && status == TW_OK; k++) {
			size_t i = (f->self + k) % f->size;
			tw_channel *c = f->chans[i];
			status = c->ops->test_recv(c);
			if (status == TW_ETIMEDOUT) {
				snprintf(missing, sizeof(missing), "%s (%s)",
				    parties[i].id, parties[i].addr);
				nmissing = 1;
			}
		}
	}
	if (status == TW_ETIMEDOUT)
		TW_LOGL(TW_LOG_ERROR, "link", l->id, l->rank,
		    "connect timeout after %lld ms: %zu peer(s) missing: %s",
		    (long long)l->opts[TW_OPT_CONNECT_TIMEOUT_MS], nmissing,
		    missing);
	else if (status != TW_OK)
		TW_LOGL(TW_LOG_ERROR, "link", l->id, l->rank,
		    "handshake failed: %s",
		    status == TW_EAUTH ? "a peer failed authentication (the "
		                         "link secret or TLS; see above)"
		                       : tw_strerror(status));
	return status;
}

int tw__link_create_root(const tw_desc *d, size_t self, tw_channel **chans,
    const tw__chan_xops *xops, bool keep_chans_on_error, tw_link **out)
{
	size_t n = tw__desc_size(d);
	tw__family *f = calloc(1, sizeof(*f));
	if (f == NULL)
		goto err_chans;
	pthread_mutex_init(&f->mtx, NULL);
	f->size = n;
	f->self = self;
	f->xops = xops;
	f->chans = calloc(n, sizeof(*f->chans));
	if (f->chans == NULL
	    || (xops == NULL && (f->stash = tw_mailbox_new()) == NULL)) {
		family_free(f, false);
		goto err_chans;
	}
	memcpy(f->chans, chans, n * sizeof(*chans));
	tw_link *l
	    = link_alloc(f, tw__desc_link_id(d), n, self, tw__desc_opts(d));
	if (l == NULL) {
		family_free(f, false);
		goto err_chans;
	}
	for (size_t i = 0; i < n; i++)
		l->map[i] = i;
	int status = handshake(l, d);
	if (status != TW_OK) {
		link_free(l);
		family_free(f, !keep_chans_on_error);
		return status;
	}
	TW_LOGL(TW_LOG_INFO, "link", l->id, l->rank,
	    "link up with %zu parties", n);
	*out = l;
	return TW_OK;

err_chans:
	if (!keep_chans_on_error)
		for (size_t i = 0; i < n; i++)
			if (chans[i] != NULL)
				chans[i]->ops->destroy(chans[i]);
	return TW_ENOMEM;
}

// Checks what every creation needs; logs the reason of a TW_EINVAL.
static int check_create(const tw_desc *d, size_t self, tw_link **out)
{
	if (d == NULL || out == NULL) {
		TW_ERROR("link", "create: NULL description or output");
		return TW_EINVAL;
	}
	size_t n = tw__desc_size(d);
	if (n == 0 || self >= n) {
		TW_ERROR("link",
		    "create %s: rank %zu out of range (%zu parties)",
		    tw__desc_link_id(d), self, n);
		return TW_EINVAL;
	}
	if (n > UINT32_MAX) {
		TW_ERROR("link", "create %s: too many parties",
		    tw__desc_link_id(d));
		return TW_EINVAL;
	}
	return TW_OK;
}

int tw_link_create(const tw_desc *d, size_t self_rank, tw_link **out)
{
	if (d != NULL && tw__desc_root(d, NULL) != NULL)
		return tw__rdv_link_create(d, self_rank, out);
	int status = check_create(d, self_rank, out);
	if (status != TW_OK)
		return status;
	size_t n = tw__desc_size(d);
	const tw__party *p = tw__desc_parties(d);
	bool known;
	const tw__transport *t = tw__transport_find(p[0].addr, &known);
	for (size_t i = 1; i < n; i++) {
		if (tw__transport_find(p[i].addr, &known) != t) {
			TW_ERROR("link",
			    "create %s: parties %s and %s use different "
			    "transports",
			    tw__desc_link_id(d), p[0].id, p[i].id);
			return TW_EINVAL;
		}
	}
	if (t == NULL)
		return known ? TW_ENOTSUP : TW_EINVAL;
	tw_channel **chans = calloc(n, sizeof(*chans));
	if (chans == NULL)
		return TW_ENOMEM;
	size_t secret_len;
	const void *secret = tw__desc_secret(d, &secret_len);
	tw__link_cfg cfg = {
		.link_id = tw__desc_link_id(d),
		.size = n,
		.self = self_rank,
		.parties = p,
		.opts = tw__desc_opts(d),
		.secret = secret,
		.secret_len = secret_len,
		.tls = tw__desc_tls(d),
		.dial_rank = tw__desc_dial_rank(d),
	};
	status = t->open(&cfg, chans);
	if (status == TW_OK)
		status = tw__link_create_root(
		    d, self_rank, chans, t->xops, false, out);
	free(chans);
	if (status == TW_OK && n > 1 && strcmp(t->scheme, "tcp") == 0
	    && cfg.opts[TW_OPT_SHM_LOCAL] != 0) {
		status = tw__shmlocal_upgrade(*out, d);
		if (status != TW_OK) {
			tw_link_abort(*out);
			tw_link_close(*out);
			*out = NULL;
		}
	}
	return status;
}

int tw_link_create_with_channels(const tw_desc *d, size_t self_rank,
    struct tw_channel *const *channels, tw_link **out)
{
	if (d != NULL && tw__desc_root(d, NULL) != NULL) {
		TW_ERROR("link",
		    "create %s: a link over channels needs its parties named, "
		    "not a root",
		    tw__desc_link_id(d));
		return TW_EINVAL;
	}
	int status = check_create(d, self_rank, out);
	if (status != TW_OK)
		return status;
	size_t n = tw__desc_size(d);
	if (channels == NULL)
		return TW_EINVAL;
	for (size_t i = 0; i < n; i++) {
		const tw_channel *c = channels[i];
		if (i == self_rank && c == NULL)
			continue;
		char why[160] = "is not NULL (it is this party)";
		if (i != self_rank && c == NULL)
			snprintf(why, sizeof(why), "is NULL");
		else if (i != self_rank
		    && tw__chan_ops_check(c->ops, why, sizeof(why)) == TW_OK)
			continue;
		TW_ERROR("link", "create %s: channel %zu %s",
		    tw__desc_link_id(d), i, why);
		return TW_EINVAL;
	}
	return tw__link_create_root(
	    d, self_rank, (tw_channel **)channels, NULL, true, out);
}

size_t tw_link_rank(const tw_link *l)
{
	return l->rank;
}

size_t tw_link_size(const tw_link *l)
{
	return l->size;
}

const char *tw_link_id(const tw_link *l)
{
	return l->id;
}

// Builds a child of `parent` over parent ranks `ranks` (NULL = all).
static int make_child(tw_link *parent, const char *suffix, const size_t *ranks,
    size_t n, tw_link **child)
{
	if (parent == NULL || child == NULL || !tw__valid_suffix(suffix)) {
		TW_ERROR("link", "child link: invalid suffix '%.64s'",
		    suffix ? suffix : "(null)");
		return TW_EINVAL;
	}
	size_t idlen = strlen(parent->id) + 1 + strlen(suffix);
	if (idlen > TW_LINK_ID_MAX) {
		TW_LOGL(TW_LOG_ERROR, "link", parent->id, parent->rank,
		    "child id longer than %d bytes", TW_LINK_ID_MAX);
		return TW_EINVAL;
	}
	size_t rank = SIZE_MAX;
	if (ranks != NULL) {
		if (n == 0 || n > parent->size)
			return TW_EINVAL;
		for (size_t i = 0; i < n; i++) {
			if (ranks[i] >= parent->size)
				return TW_EINVAL;
			for (size_t j = 0; j < i; j++)
				if (ranks[j] == ranks[i])
					return TW_EINVAL;
			if (ranks[i] == parent->rank)
				rank = i;
		}
		if (rank == SIZE_MAX) {
			TW_LOGL(TW_LOG_ERROR, "link", parent->id, parent->rank,
			    "sub link %s: this party is not in its ranks",
			    suffix);
			return TW_EINVAL;
		}
	} else {
		n = parent->size;
		rank = parent->rank;
	}
	if (atomic_load_explicit(&parent->aborted, memory_order_acquire))
		return TW_ECLOSED;
	char id[TW_LINK_ID_MAX + 1];
	snprintf(id, sizeof(id), "%s/%s", parent->id, suffix);
	tw_link *l = link_alloc(parent->fam, id, n, rank, parent->opts);
	if (l == NULL)
		return TW_ENOMEM;
	atomic_store_explicit(&l->recv_timeout,
	    atomic_load_explicit(&parent->recv_timeout, memory_order_relaxed),
	    memory_order_relaxed);
	for (size_t i = 0; i < n; i++)
		l->map[i] = parent->map[ranks != NULL ? ranks[i] : i];
	tw__family *f = l->fam;
	if (f->xops != NULL)
		for (size_t i = 0; i < n; i++)
			if (i != rank)
				tw__fam_xops(f, l->map[i])
				    ->open_ns(f->chans[l->map[i]], id);
	pthread_mutex_lock(&f->mtx);
	l->parent = parent;
	l->next_sibling = parent->first_child;
	parent->first_child = l;
	pthread_mutex_unlock(&f->mtx);
	*child = l;
	return TW_OK;
}

int tw_link_spawn(tw_link *parent, const char *suffix, tw_link **child)
{
	return make_child(parent, suffix, NULL, 0, child);
}

int tw_link_sub(tw_link *parent, const char *suffix, const size_t *ranks,
    size_t n, tw_link **child)
{
	if (ranks == NULL)
		return TW_EINVAL;
	return make_child(parent, suffix, ranks, n, child);
}

// Sets the abort flag of l and every descendant.  fam->mtx held.
static void mark_aborted(tw_link *l)
{
	atomic_store_explicit(&l->aborted, 1, memory_order_release);
	for (tw_link *c = l->first_child; c != NULL; c = c->next_sibling)
		mark_aborted(c);
}

void tw_link_abort(tw_link *l)
{
	if (l == NULL)
		return;
	tw__family *f = l->fam;
	pthread_mutex_lock(&f->mtx);
	mark_aborted(l);
	pthread_mutex_unlock(&f->mtx);
	TW_LOGL(TW_LOG_INFO, "link", l->id, l->rank, "aborted");
	for (size_t i = 0; i < l->size; i++) {
		if (i == l->rank)
			continue;
		tw_channel *c = f->chans[l->map[i]];
		if (f->xops != NULL)
			tw__fam_xops(f, l->map[i])->abort_ns(c, l->id);
		void (*abort)(tw_channel *) = TW__CHAN_OP(c->ops, abort);
		if (l->parent == NULL && abort != NULL)
			abort(c);
	}
}

// Ends child l's namespace towards root rank `peer`.  A built-in channel
// is told (transport.h); a user channel cannot be, but what probes pulled
// out of it for l waits in the family's stash, and goes now.
static void close_ns(tw_link *l, size_t peer)
{
	tw__family *f = l->fam;
	if (f->xops != NULL) {
		tw__fam_xops(f, peer)->close_ns(f->chans[peer], l->id);
		return;
	}
	// The stash is this side's alone: its close is both sides' close, and
	// the stash keeps nothing about l afterwards.
	tw__mailbox_drop_ns(f->stash, (uint32_t)peer, l->id);
	tw__mailbox_close_ns(f->stash, (uint32_t)peer, l->id);
}

int tw_link_close(tw_link *l)
{
	if (l == NULL)
		return TW_OK;
	tw__family *f = l->fam;
	pthread_mutex_lock(&f->mtx);
	bool busy = l->first_child != NULL;
	pthread_mutex_unlock(&f->mtx);
	if (busy) {
		TW_LOGL(TW_LOG_ERROR, "link", l->id, l->rank,
		    "close: child links are still open");
		return TW_EINVAL;
	}
	int status = TW_OK;
	// Bounded whatever the receive timeout: a peer that never reads must
	// not keep this party from closing.
	int64_t ms
	    = atomic_load_explicit(&l->recv_timeout, memory_order_relaxed);
	if (ms <= 0)
		ms = l->opts[TW_OPT_CONNECT_TIMEOUT_MS];
	if (!atomic_load_explicit(&l->aborted, memory_order_acquire))
		status = tw__link_wait_pending_until(l, tw__deadline_ms(ms));
	if (l->parent != NULL) {
		for (size_t i = 0; i < l->size; i++)
			if (i != l->rank)
				close_ns(l, l->map[i]);
		pthread_mutex_lock(&f->mtx);
		tw_link **pp = &l->parent->first_child;
		while (*pp != l)
			pp = &(*pp)->next_sibling;
		*pp = l->next_sibling;
		pthread_mutex_unlock(&f->mtx);
		link_free(l);
		return status;
	}
	TW_LOGL(TW_LOG_INFO, "link", l->id, l->rank, "closed");
	link_free(l);
	family_free(f, true);
	return status;
}

size_t tw_link_trim(tw_link *l)
{
	if (l == NULL || l->fam->xops == NULL)
		return 0;
	tw__family *f = l->fam;
	size_t freed = 0;
	for (size_t i = 0; i < l->size; i++)
		if (i != l->rank)
			freed += tw__fam_xops(f, l->map[i])
			             ->trim(f->chans[l->map[i]]);
	return freed;
}

uint64_t tw__link_unreceived_peak(tw_link *l, size_t src)
{
	tw__family *f = l->fam;
	if (src >= l->size || src == l->rank || f->xops == NULL)
		return 0;
	return tw__fam_xops(f, l->map[src])
	    ->unreceived_peak(f->chans[l->map[src]]);
}

size_t tw__link_ns_entries(tw_link *l, size_t peer)
{
	tw__family *f = l->fam;
	if (peer >= l->size || peer == l->rank || f->xops == NULL)
		return SIZE_MAX;
	return tw__fam_xops(f, l->map[peer])
	    ->ns_entries(f->chans[l->map[peer]]);
}
