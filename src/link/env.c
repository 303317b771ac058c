// tw_desc_from_env: a description from TAGWIRE_* variables, the way a
// launcher hands a party its place in the computation.
//
// The environment is untrusted input: every value is length-checked and
// parsed strictly, and each failure names the variable and the reason.

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "link/link_int.h"

#define ENV_PARTIES_MAX 65536
#define ENV_RANK_MAX 1000000

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
// against the parties' count and the sizes that are set.
static int parse_rank(size_t parties, size_t *rank)
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
	if (*rank >= parties) {
		TW_ERROR("env",
		    "%s %zu is out of range: TAGWIRE_PARTIES names %zu "
		    "parties",
		    name, *rank, parties);
		return TW_EINVAL;
	}
	// The size of the rank's own source, and tagwire's, must agree
	// with the list: a launcher started more or fewer processes.
	size_t checks[2] = { src, 0 };
	for (size_t i = 0; i < (src == 0 ? 1u : 2u); i++) {
		const char *sname = sources[checks[i]].size;
		const char *sv = getenv(sname);
		size_t size;
		if (sv == NULL)
			continue;
		if ((status = parse_num(sname, sv, &size)) != TW_OK)
			return status;
		if (size != parties) {
			TW_ERROR("env",
			    "%s is %zu but TAGWIRE_PARTIES names %zu parties",
			    sname, size, parties);
			return TW_EINVAL;
		}
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
	size_t rank = 0;
	const char *parties = getenv("TAGWIRE_PARTIES");
	const char *root = getenv("TAGWIRE_ROOT");
	int status = TW_OK;
	if (root != NULL && *root != '\0' && parties != NULL) {
		TW_ERROR("env",
		    "TAGWIRE_ROOT and TAGWIRE_PARTIES are both set: name the "
		    "parties, or the root to learn them from, not both");
		status = TW_EINVAL;
	} else if (root != NULL && *root != '\0') {
		// The rendezvous through rank 0 is not built yet.
		TW_ERROR("env",
		    "TAGWIRE_ROOT: finding the parties through rank 0 is not "
		    "supported by this version; set TAGWIRE_PARTIES");
		status = TW_ENOTSUP;
	}
	if (status == TW_OK)
		status = parse_parties(d, parties);
	if (status == TW_OK)
		status = parse_rank(tw_desc_size(d), &rank);
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
