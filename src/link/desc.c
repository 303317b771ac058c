// Link descriptions: the parties, the options, the secret and the TLS
// files.

#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "link/link_int.h"
#include "link/rdv_wire.h"
#include "transport/tcp/tcp_proto.h"

#define TW_SECRET_MAX 1024
#define TW_ADDR_MAX 512

struct tw_desc {
	char *link_id;
	tw__party *parties;
	size_t n;
	size_t cap;
	int64_t opts[TW_OPT_COUNT];
	unsigned char *secret;
	size_t secret_len;
	char *tls[3]; // certificate, key, CA files; all or none
	int dial_rank; // +1; 0: by address
	char *root; // tw_desc_set_root: parties learnt from rank 0 there
	char *bind;
	size_t root_size;
};

tw_desc *tw_desc_new(const char *link_id)
{
	if (!tw__valid_link_id(link_id)) {
		TW_ERROR("desc",
		    "invalid link id '%.64s': want 1..%d bytes of "
		    "[A-Za-z0-9._-] and '/' between parts",
		    link_id ? link_id : "(null)", TW_LINK_ID_MAX);
		return NULL;
	}
	tw_desc *d = calloc(1, sizeof(*d));
	if (d == NULL || (d->link_id = strdup(link_id)) == NULL) {
		free(d);
		return NULL;
	}
	for (int i = 0; i < TW_OPT_COUNT; i++)
		d->opts[i] = tw__opts[i].def;
	return d;
}

void tw_desc_free(tw_desc *d)
{
	if (d == NULL)
		return;
	for (size_t i = 0; i < d->n; i++) {
		free((char *)d->parties[i].id);
		free((char *)d->parties[i].addr);
	}
	free(d->parties);
	if (d->secret != NULL)
		memset(d->secret, 0, d->secret_len);
	free(d->secret);
	for (int i = 0; i < 3; i++)
		free(d->tls[i]);
	free(d->root);
	free(d->bind);
	free(d->link_id);
	free(d);
}

int tw_desc_add_party(tw_desc *d, const char *party_id, const char *addr)
{
	if (d == NULL || addr == NULL) {
		TW_ERROR("desc", "add party: NULL description or address");
		return TW_EINVAL;
	}
	if (!tw__valid_party_id(party_id)) {
		TW_ERROR("desc", "invalid party id '%.64s'",
		    party_id ? party_id : "(null)");
		return TW_EINVAL;
	}
	if (d->root != NULL) {
		TW_ERROR("desc",
		    "add party %s: link %s learns its parties from its root",
		    party_id, d->link_id);
		return TW_EINVAL;
	}
	for (size_t i = 0; i < d->n; i++) {
		if (strcmp(d->parties[i].id, party_id) == 0) {
			TW_ERROR("desc", "party id '%s' is already in link %s",
			    party_id, d->link_id);
			return TW_EINVAL;
		}
	}
	bool known;
	const tw__transport *t = tw__transport_find(addr, &known);
	if (t == NULL) {
		TW_ERROR("desc", "address '%.64s' of party %s: %s", addr,
		    party_id,
		    known ? "transport not built in (or broken: see the "
		            "log)"
		          : "unknown scheme (want mem://, shm:// or tcp://)");
		return known ? TW_ENOTSUP : TW_EINVAL;
	}
	if (strlen(addr) > TW_ADDR_MAX || t->addr_check(addr) != TW_OK) {
		TW_ERROR("desc", "malformed address '%.64s' of party %s", addr,
		    party_id);
		return TW_EINVAL;
	}
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 4;
		tw__party *p = realloc(d->parties, cap * sizeof(*p));
		if (p == NULL)
			return TW_ENOMEM;
		d->parties = p;
		d->cap = cap;
	}
	char *id = strdup(party_id), *a = strdup(addr);
	if (id == NULL || a == NULL) {
		free(id);
		free(a);
		return TW_ENOMEM;
	}
	d->parties[d->n].id = id;
	d->parties[d->n].addr = a;
	d->n++;
	return TW_OK;
}

int tw_desc_set(tw_desc *d, int opt, int64_t value)
{
	if (d == NULL) {
		TW_ERROR("desc", "set option: NULL description");
		return TW_EINVAL;
	}
	if (tw__opt_check(opt, value) != TW_OK) {
		if (opt >= 0 && opt < TW_OPT_COUNT)
			TW_ERROR("desc", "option %s: value %lld out of range",
			    tw__opts[opt].name, (long long)value);
		else
			TW_ERROR("desc", "unknown option %d", opt);
		return TW_EINVAL;
	}
	d->opts[opt] = value;
	return TW_OK;
}

int tw_desc_get(const tw_desc *d, int opt, int64_t *value)
{
	if (d == NULL || value == NULL || opt < 0 || opt >= TW_OPT_COUNT)
		return TW_EINVAL;
	*value = d->opts[opt];
	return TW_OK;
}

int tw_desc_set_secret(tw_desc *d, const void *key, size_t len)
{
	if (d == NULL || (key == NULL && len > 0) || len > TW_SECRET_MAX)
		return TW_EINVAL;
	unsigned char *copy = NULL;
	if (len > 0) {
		if ((copy = malloc(len)) == NULL)
			return TW_ENOMEM;
		memcpy(copy, key, len);
	}
	if (d->secret != NULL)
		memset(d->secret, 0, d->secret_len);
	free(d->secret);
	d->secret = copy;
	d->secret_len = len;
	return TW_OK;
}

int tw_desc_set_tls(tw_desc *d, const char *cert_file, const char *key_file,
    const char *ca_file)
{
	const char *in[3] = { cert_file, key_file, ca_file };
	static const char *const what[3] = { "certificate", "key", "CA" };
	if (d == NULL) {
		TW_ERROR("desc", "set TLS: NULL description");
		return TW_EINVAL;
	}
	for (int i = 0; i < 3; i++) {
		if (in[i] == NULL || in[i][0] == '\0') {
			TW_ERROR("desc", "set TLS: no %s file", what[i]);
			return TW_EINVAL;
		}
	}
	char *copy[3];
	for (int i = 0; i < 3; i++) {
		size_t n = strlen(in[i]) + 1;
		if ((copy[i] = malloc(n)) != NULL)
			memcpy(copy[i], in[i], n);
		if (copy[i] == NULL) {
			while (i-- > 0)
				free(copy[i]);
			return TW_ENOMEM;
		}
	}
	for (int i = 0; i < 3; i++) {
		free(d->tls[i]);
		d->tls[i] = copy[i];
	}
	return TW_OK;
}

// A tcp:// address with a port (any port when `any_port`) and a host the
// other parties can reach (not a wildcard), as `what`.
static bool tcp_addr_ok(const char *addr, bool any_port, const char *what)
{
	char host[TW_TCP_ADDR_MAX + 1];
	uint16_t port = 0;
	if (addr != NULL && strlen(addr) <= TW_ADDR_MAX
	    && tw__tcp_addr_parse(addr, host, sizeof(host), &port) == TW_OK
	    && (any_port || port != 0) && strcmp(host, "0.0.0.0") != 0
	    && strspn(host, ":0") != strlen(host))
		return true;
	TW_ERROR("desc",
	    "%s '%.64s' is not a tcp://HOST:PORT address%s of a reachable "
	    "host",
	    what, addr != NULL ? addr : "(null)",
	    any_port ? "" : " with a port");
	return false;
}

int tw_desc_set_root(
    tw_desc *d, const char *root_addr, size_t size, const char *bind_addr)
{
	if (d == NULL) {
		TW_ERROR("desc", "set root: NULL description");
		return TW_EINVAL;
	}
	if (d->n > 0) {
		TW_ERROR("desc", "set root: link %s already names its parties",
		    d->link_id);
		return TW_EINVAL;
	}
	if (size == 0 || size > TW_RDV_PARTIES_MAX) {
		TW_ERROR("desc", "set root: %zu parties (want 1..%d)", size,
		    TW_RDV_PARTIES_MAX);
		return TW_EINVAL;
	}
	if (!tcp_addr_ok(root_addr, false, "root")
	    || (bind_addr != NULL
	        && !tcp_addr_ok(bind_addr, true, "bind address")))
		return TW_EINVAL;
	char *r = strdup(root_addr);
	char *b = bind_addr != NULL ? strdup(bind_addr) : NULL;
	if (r == NULL || (bind_addr != NULL && b == NULL)) {
		free(r);
		free(b);
		return TW_ENOMEM;
	}
	free(d->root);
	free(d->bind);
	d->root = r;
	d->bind = b;
	d->root_size = size;
	return TW_OK;
}

size_t tw_desc_size(const tw_desc *d)
{
	return d == NULL ? 0 : d->root != NULL ? d->root_size : d->n;
}

const char *tw__desc_root(const tw_desc *d, const char **bind)
{
	if (bind != NULL)
		*bind = d->bind;
	return d->root;
}

size_t tw__desc_size(const tw_desc *d)
{
	return d->n;
}

const char *tw__desc_link_id(const tw_desc *d)
{
	return d->link_id;
}

const tw__party *tw__desc_parties(const tw_desc *d)
{
	return d->parties;
}

const int64_t *tw__desc_opts(const tw_desc *d)
{
	return d->opts;
}

const void *tw__desc_secret(const tw_desc *d, size_t *len)
{
	*len = d->secret_len;
	return d->secret;
}

const char *const *tw__desc_tls(const tw_desc *d)
{
	return d->tls[0] != NULL ? (const char *const *)d->tls : NULL;
}

void tw__desc_set_dial_rank(tw_desc *d, size_t rank)
{
	d->dial_rank = (int)rank + 1;
}

int tw__desc_dial_rank(const tw_desc *d)
{
	return d->dial_rank - 1;
}
