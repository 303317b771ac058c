// tw_desc_from_env: a description from TAGWIRE_* variables, the way a
// launcher hands a party its place in the computation.
//
// The environment is untrusted input: every value is length-checked and
// parsed strictly, and each failure names the variable and the reason.

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "link/link_int.h"

#define ENV_PARTIES_MAX 65536
#define ENV_RANK_MAX 1000000
#define ENV_ROOT_MAX 512

// Where a rank and a size come from, first set first: tagwire's own, then
// those of the launchers people already run (mpirun, PMI, srun, torchrun).
static const struct {
	const char *rank, *size;
} sources[] = {
	{ "TAGWIRE_RANK", "TAGWIRE_SIZE" },
	{ "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE" },
	{ "PMI_RANK", "PMI_SIZE" },
	{ "SLURM_PROCID", "SLURM_NTASKS" },
	{ "RANK", "WORLD_SIZE" },
};
#define NSOURCES (sizeof(sources) / sizeof(sources[0]))

// A decimal number of at most ENV_RANK_MAX in variable `name`.
static int parse_num(const char *name, const char *s, size_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (*s < '0' || *s > '9' || *end != '\0' || errno != 0
	    || v > ENV_RANK_MAX) {
		TW_ERROR("env", "%s '%.32s' is not a number of 0..%d", name, s,
		    ENV_RANK_MAX);
		return TW_EINVAL;
	}
	*out = (size_t)v;
	return TW_OK;
}

// The rank, from the first source whose rank variable is set, checked
// against the sizes that are set: that source's and tagwire's, which must
// equal `parties` when it is known (a launcher started more or fewer
// processes than the list names) and each other; with `parties` unknown
// (SIZE_MAX: a root will tell them) one of them is required and is the
// size.
static int parse_rank(size_t parties, size_t *rank, size_t *size)
{
	size_t src = 0;
	while (src < NSOURCES && getenv(sources[src].rank) == NULL)
		src++;
	if (src == NSOURCES) {
		TW_ERROR("env",
		    "TAGWIRE_RANK is not set (nor a launcher's rank: "
		    "OMPI_COMM_WORLD_RANK, PMI_RANK, SLURM_PROCID, RANK)");
		return TW_EINVAL;
	}
	const char *name = sources[src].rank;
	int status = parse_num(name, getenv(name), rank);
	if (status != TW_OK)
		return status;
	const char *from = "TAGWIRE_PARTIES";
	size_t checks[2] = { src, 0 };
	for (size_t i = 0; i < (src == 0 ? 1u : 2u); i++) {
		const char *sname = sources[checks[i]].size;
		const char *sv = getenv(sname);
		size_t n;
		if (sv == NULL)
			continue;
		if ((status = parse_num(sname, sv, &n)) != TW_OK)
			return status;
		if (parties == SIZE_MAX) {
			parties = n;
			from = sname;
		} else if (n != parties) {
			TW_ERROR("env", "%s is %zu but %s %s %zu parties",
			    sname, n, from,
			    strcmp(from, "TAGWIRE_PARTIES") == 0 ? "names"
			                                         : "says",
			    parties);
			return TW_EINVAL;
		}
	}
	if (parties == SIZE_MAX) {
		TW_ERROR("env",
		    "the number of parties is not set: a root needs %s%s%s",
		    sources[src].size, src != 0 ? " or " : "",
		    src != 0 ? "TAGWIRE_SIZE" : "");
		return TW_EINVAL;
	}
	if (*rank >= parties) {
		TW_ERROR("env", "%s %zu is out of range: %s %s %zu parties",
		    name, *rank, from,
		    strcmp(from, "TAGWIRE_PARTIES") == 0 ? "names" : "says",
		    parties);
		return TW_EINVAL;
	}
	*size = parties;
	return TW_OK;
}

// The root address: TAGWIRE_ROOT, or MASTER_ADDR and MASTER_PORT (both),
// into out; *set false when none is given.
static int parse_root(char *out, size_t cap, bool *set)
{
	const char *root = getenv("TAGWIRE_ROOT");
	const char *maddr = getenv("MASTER_ADDR");
	const char *mport = getenv("MASTER_PORT");
	*set = true;
	if (root != NULL && *root != '\0') {
		if (strlen(root) >= cap) {
			TW_ERROR("env", "TAGWIRE_ROOT is too long");
			return TW_EINVAL;
		}
		snprintf(out, cap, "%s", root);
		return TW_OK;
	}
	bool ha = maddr != NULL && *maddr != '\0';
	bool hp = mport != NULL && *mport != '\0';
	if (!ha && !hp) {
		*set = false;
		return TW_OK;
	}
	if (!ha || !hp) {
		TW_ERROR("env", "%s is set but %s is not: set both or neither",
		    ha ? "MASTER_ADDR" : "MASTER_PORT",
		    ha ? "MASTER_PORT" : "MASTER_ADDR");
		return TW_EINVAL;
	}
	// An IPv6 literal goes in brackets.
	bool v6 = strchr(maddr, ':') != NULL && maddr[0] != '[';
	int n = snprintf(
	    out, cap, v6 ? "tcp://[%s]:%s" : "tcp://%s:%s", maddr, mport);
	if (n < 0 || (size_t)n >= cap) {
		TW_ERROR("env", "MASTER_ADDR is too long");
		return TW_EINVAL;
	}
	return TW_OK;
}

// Adds the parties of a "ADDR,ID=ADDR,..." list to d.
static int parse_parties(tw_desc *d, const char *list)
{
	if (list == NULL || *list == '\0') {
		TW_ERROR("env", "TAGWIRE_PARTIES is not set");
		return TW_EINVAL;
	}
	if (strlen(list) > ENV_PARTIES_MAX) {
		TW_ERROR("env", "TAGWIRE_PARTIES is longer than %d bytes",
		    ENV_PARTIES_MAX);
		return TW_EINVAL;
	}
	char *copy = strdup(list);
	if (copy == NULL)
		return TW_ENOMEM;
	int status = TW_OK;
	size_t idx = 0;
	// strtok_r would merge empty items; walk by hand so "a,,b" is an error.
	char *item = copy;
	for (;;) {
		char *comma = strchr(item, ',');
		if (comma != NULL)
			*comma = '\0';
		if (*item == '\0') {
			TW_ERROR(
			    "env", "TAGWIRE_PARTIES: item %zu is empty", idx);
			status = TW_EINVAL;
			break;
		}
		char defid[32];
		const char *id = defid, *addr = item;
		char *eq = strchr(item, '=');
		char *scheme = strstr(item, "://");
		if (eq != NULL && (scheme == NULL || eq < scheme)) {
			*eq = '\0';
			id = item;
			addr = eq + 1;
		} else {
			snprintf(defid, sizeof(defid), "p%zu", idx);
		}
		status = tw_desc_add_party(d, id, addr);
		if (status != TW_OK) {
			TW_ERROR("env",
			    "TAGWIRE_PARTIES: item %zu ('%.64s') is not a "
			    "valid party: %s",
			    idx, addr, tw_strerror(status));
			if (status != TW_ENOMEM)
				status = TW_EINVAL;
			break;
		}
		idx++;
		if (comma == NULL)
			break;
		item = comma + 1;
	}
	free(copy);
	return status;
}

// TAGWIRE_TLS_CERT, _KEY and _CA: all three or none, since a party with
// only some of them would quietly talk in plaintext.
static int parse_tls(tw_desc *d)
{
	static const char *const names[3]
	    = { "TAGWIRE_TLS_CERT", "TAGWIRE_TLS_KEY", "TAGWIRE_TLS_CA" };
	const char *v[3];
	int set = 0;
	for (int i = 0; i < 3; i++) {
		v[i] = getenv(names[i]);
		if (v[i] != NULL && *v[i] == '\0')
			v[i] = NULL;
		set += v[i] != NULL;
	}
	if (set == 0)
		return TW_OK;
	if (set < 3) {
		for (int i = 0; i < 3; i++)
			if (v[i] == NULL)
				TW_ERROR("env",
				    "%s is not set, but other TAGWIRE_TLS_* "
				    "variables are: set all three or none",
				    names[i]);
		return TW_EINVAL;
	}
	return tw_desc_set_tls(d, v[0], v[1], v[2]);
}

int tw_desc_from_env(tw_desc **out, size_t *self_rank)
{
	if (out == NULL || self_rank == NULL)
		return TW_EINVAL;
	const char *id = getenv("TAGWIRE_LINK_ID");
	if (id == NULL || *id == '\0')
		id = "root";
	if (!tw__valid_link_id(id)) {
		TW_ERROR(
		    "env", "TAGWIRE_LINK_ID '%.64s' is not a link id", id);
		return TW_EINVAL;
	}
	tw_desc *d = tw_desc_new(id);
	if (d == NULL)
		return TW_ENOMEM;
	size_t rank = 0, size = 0;
	const char *parties = getenv("TAGWIRE_PARTIES");
	char root[ENV_ROOT_MAX + 1];
	bool has_root = false;
	int status = TW_OK;
	if (parties != NULL && getenv("TAGWIRE_ROOT") != NULL
	    && *getenv("TAGWIRE_ROOT") != '\0') {
		TW_ERROR("env",
		    "TAGWIRE_ROOT and TAGWIRE_PARTIES are both set: name the "
		    "parties, or the root to learn them from, not both");
		status = TW_EINVAL;
	} else if (parties == NULL) {
		// A launcher's MASTER_* counts only without a list.
		status = parse_root(root, sizeof(root), &has_root);
	}
	if (status == TW_OK && has_root) {
		status = parse_rank(SIZE_MAX, &rank, &size);
		const char *bind = getenv("TAGWIRE_BIND");
		if (bind != NULL && *bind == '\0')
			bind = NULL;
		if (status == TW_OK
		    && (status = tw_desc_set_root(d, root, size, bind))
		        == TW_EINVAL)
			TW_ERROR("env",
			    "%s '%.64s'%s%s%s is not usable (see above)",
			    getenv("TAGWIRE_ROOT") != NULL
			        ? "TAGWIRE_ROOT"
			        : "MASTER_ADDR/_PORT",
			    root, bind != NULL ? " or TAGWIRE_BIND '" : "",
			    bind != NULL ? bind : "", bind != NULL ? "'" : "");
	} else if (status == TW_OK) {
		status = parse_parties(d, parties);
		if (status == TW_OK)
			status = parse_rank(tw_desc_size(d), &rank, &size);
	}
	const char *secret = getenv("TAGWIRE_SECRET");
	if (status == TW_OK && secret != NULL && *secret != '\0') {
		status = tw_desc_set_secret(d, secret, strlen(secret));
		if (status == TW_EINVAL)
			TW_ERROR("env",
			    "TAGWIRE_SECRET is longer than 1024 "
			    "bytes");
	}
	if (status == TW_OK)
		status = parse_tls(d);
	if (status != TW_OK) {
		tw_desc_free(d);
		return status;
	}
	*out = d;
	*self_rank = rank;
	return TW_OK;
}
