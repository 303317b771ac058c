// TW_OPT_SHM_LOCAL: a tcp:// link whose peers share this host moves its
// messages to them over shared memory.
//
// Once the tcp:// link is up, before tw_link_create returns, the parties
// run three rounds over the link itself (so authenticated as the link is,
// with its secret or TLS):
//  0. hello: every party tells every peer what names its host (a hash of
//     the kernel's boot id and the pid namespace, or TAGWIRE_HOST_ID) and
//     where its probe is: a small segment holding a random token, which it
//     created under a random nonce;
//  1. for a peer that names the same host, a party reads the peer's probe
//     and says whether it found the token there: the same boot id is not
//     enough (a container may have a /dev/shm of its own, another user
//     cannot open 0600 segments), seeing the segment is;
//  2. where both saw each other, both open shm:// channels to each other
//     (endpoints named by the nonces, so that no other run can meet them)
//     and run their hello; each says whether that worked.
// A pair moves to shared memory only when both said yes in rounds 1 and 2,
// so both sides always decide alike; otherwise it stays on tcp://.  The
// tcp:// channel of a pair that moved stays open, idle, until the family
// goes: closing it early would race the peer's last round-2 message.
//
// Nothing of the application's has been sent yet, so no message can be
// overtaken by the move; the peer's first messages over shm:// wait in
// the shm:// endpoint's mailbox until this side has moved too.

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/names.h"
#include "link/link_int.h"
#include "link/shml_wire.h"
#include "platform/posix/shm.h"

#define PROBE_SIZE 64
#define SHM_ADDR_LEN 32 // "shm://l" and 16 hex digits

typedef struct shml {
	tw_link *l;
	const tw_desc *d;
	size_t n;
	int64_t deadline;
	tw__shml_hello me;
	tw__shml_hello *peer; // by rank
	bool *same; // names this host
	bool *seen; // this side found the peer's probe
	bool *want; // both found each other's: open shm://
	bool *up; // the shm:// hello with the peer worked (this side)
	bool *use; // both said up: the pair moves
	tw_channel **shm;
	char probe[32];
	void *probe_mem;
} shml;

void tw__shml_host_id(uint8_t out[TW_SHML_HOST_LEN])
{
	char buf[600];
	int n;
	const char *env = getenv("TAGWIRE_HOST_ID");
	if (env != NULL && env[0] != '\0') {
		n = snprintf(buf, sizeof(buf), "env:%.500s", env);
	} else {
		char boot[64] = "";
		FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
		if (f == NULL || fgets(boot, sizeof(boot), f) == NULL)
			gethostname(boot, sizeof(boot) - 1);
		if (f != NULL)
			fclose(f);
		// Same kernel, but another pid namespace: the shm:// transport
		// watches its peer's process id, which would name another
		// process there.
		struct stat st = { 0 };
		stat("/proc/self/ns/pid", &st);
		n = snprintf(buf, sizeof(buf), "boot:%s|pidns:%llu:%llu", boot,
		    (unsigned long long)st.st_dev,
		    (unsigned long long)st.st_ino);
	}
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(buf))
		n = (int)sizeof(buf) - 1;
	unsigned int len = 0;
	if (EVP_Digest(buf, (size_t)n, out, &len, EVP_sha256(), NULL) != 1)
		memset(out, 0, TW_SHML_HOST_LEN);
}

bool tw__shml_probe_sees(const tw__shml_hello *h)
{
	char path[40];
	snprintf(
	    path, sizeof(path), "/tw-h%016llx", (unsigned long long)h->nonce);
	int fd = shm_open(path, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0)
		return false;
	uint8_t got[TW_SHML_TOKEN_LEN];
	ssize_t r = pread(fd, got, sizeof(got), 0);
	close(fd);
	return r == (ssize_t)sizeof(got)
	    && memcmp(got, h->token, sizeof(got)) == 0;
}

// The round-`round` message to link rank `dst` (async: copied).
static int send_round(
    shml *s, size_t dst, unsigned round, const void *buf, size_t len)
{
	char key[TW_KEY_MAX];
	tw__key_coll(key, s->l->id, "shmlocal", round, "x");
	return tw__link_send_key(s->l, dst, key, buf, len, true);
}

static int recv_round(shml *s, size_t src, unsigned round, tw_buf *out)
{
	char key[TW_KEY_MAX];
	tw__key_coll(key, s->l->id, "shmlocal", round, "x");
	int st = tw__link_recv_key(s->l, src, key, s->deadline, out);
	if (st == TW_ETIMEDOUT)
		TW_LOGL(TW_LOG_ERROR, "link", s->l->id, s->l->rank,
		    "shared memory: no answer from %s in round %u within %lld "
		    "ms (is TW_OPT_SHM_LOCAL set on every party?)",
		    tw__desc_parties(s->d)[src].id, round,
		    (long long)s->l->opts[TW_OPT_CONNECT_TIMEOUT_MS]);
	return st;
}

// Sends flag[i] to every peer i with among[i] and reads theirs into
// out[i] (out[i] = flag[i] && theirs).
static int exchange_verdicts(
    shml *s, unsigned round, const bool *among, const bool *flag, bool *out)
{
	int st = TW_OK;
	for (size_t i = 0; i < s->n && st == TW_OK; i++) {
		if (!among[i])
			continue;
		uint8_t v = flag[i] ? 1 : 0;
		st = send_round(s, i, round, &v, 1);
	}
	for (size_t i = 0; i < s->n && st == TW_OK; i++) {
		if (!among[i])
			continue;
		tw_buf b = { 0 };
		int yes = 0;
		if ((st = recv_round(s, i, round, &b)) != TW_OK)
			break;
		st = tw__shml_verdict_decode(b.data, b.len, &yes);
		free(b.data);
		if (st != TW_OK)
			TW_LOGL(TW_LOG_ERROR, "link", s->l->id, s->l->rank,
			    "shared memory: malformed verdict from %s",
			    tw__desc_parties(s->d)[i].id);
		out[i] = flag[i] && yes;
	}
	return st;
}

// Round 0: the hellos.  Creates this side's probe first, so that it is
// there when a peer looks.
static int hellos(shml *s)
{
	tw_link *l = s->l;
	if (RAND_bytes((unsigned char *)&s->me.nonce, sizeof(s->me.nonce)) != 1
	    || RAND_bytes(s->me.token, sizeof(s->me.token)) != 1)
		return TW_ESYS;
	tw__shml_host_id(s->me.host);
	snprintf(s->probe, sizeof(s->probe), "tw-h%016llx",
	    (unsigned long long)s->me.nonce);
	if (tw_shm_create(s->probe, PROBE_SIZE, &s->probe_mem) == TW_OK)
		memcpy(s->probe_mem, s->me.token, sizeof(s->me.token));
	else
		s->probe_mem = NULL; // no peer will see it: all stay on tcp://
	uint8_t msg[TW_SHML_HELLO_LEN];
	tw__shml_hello_encode(&s->me, msg);
	int st = TW_OK;
	for (size_t i = 0; i < s->n && st == TW_OK; i++)
		if (i != l->rank)
			st = send_round(s, i, 0, msg, sizeof(msg));
	for (size_t i = 0; i < s->n && st == TW_OK; i++) {
		if (i == l->rank)
			continue;
		tw_buf b = { 0 };
		if ((st = recv_round(s, i, 0, &b)) != TW_OK)
			break;
		st = tw__shml_hello_decode(b.data, b.len, &s->peer[i]);
		free(b.data);
		if (st != TW_OK) {
			TW_LOGL(TW_LOG_ERROR, "link", l->id, l->rank,
			    "shared memory: malformed hello from %s",
			    tw__desc_parties(s->d)[i].id);
			break;
		}
		// Both sides of a pair compute `same` from the same two hellos,
		// so both send each other a verdict in round 1.  Whether a
		// probe exists goes into the verdicts only: a side whose own
		// probe failed still answers, and its peer's verdict is 0.
		s->same[i]
		    = memcmp(s->peer[i].host, s->me.host, TW_SHML_HOST_LEN)
		        == 0
		    && s->peer[i].nonce != s->me.nonce;
		s->seen[i] = s->same[i] && tw__shml_probe_sees(&s->peer[i]);
	}
	return st;
}

// Round 2's first half: shm:// channels to the peers in want, and their
// hello.  up[i] says which worked.
static int open_shm(shml *s)
{
	tw_link *l = s->l;
	const tw__party *p = tw__desc_parties(s->d);
	tw__party *parties = calloc(s->n, sizeof(*parties));
	char(*addrs)[SHM_ADDR_LEN] = calloc(s->n, SHM_ADDR_LEN);
	if (parties == NULL || addrs == NULL) {
		free(parties);
		free(addrs);
		return TW_ENOMEM;
	}
	for (size_t i = 0; i < s->n; i++) {
		const tw__shml_hello *h = i == l->rank ? &s->me : &s->peer[i];
		snprintf(addrs[i], SHM_ADDR_LEN, "shm://l%016llx",
		    (unsigned long long)h->nonce);
		parties[i].id = p[i].id;
		parties[i].addr = addrs[i];
	}
	size_t secret_len;
	const void *secret = tw__desc_secret(s->d, &secret_len);
	tw__link_cfg cfg = {
		.link_id = l->id,
		.size = s->n,
		.self = l->rank,
		.parties = parties,
		.opts = l->opts,
		.secret = secret,
		.secret_len = secret_len,
		.dial_rank = -1,
	};
	int st = tw__shm_open_peers(&cfg, s->want, s->shm);
	free(parties);
	free(addrs);
	if (st != TW_OK)
		return st;
	for (size_t i = 0; i < s->n; i++) {
		if (s->shm[i] == NULL)
			continue;
		int64_t ms = tw__ms_left(s->deadline);
		s->up[i] = s->shm[i]->ops->test_send(s->shm[i], ms) == TW_OK;
	}
	for (size_t i = 0; i < s->n; i++) {
		if (s->shm[i] == NULL || !s->up[i])
			continue;
		int rv = s->shm[i]->ops->test_recv(s->shm[i]);
		s->up[i] = rv == TW_OK;
		if (rv != TW_OK)
			TW_LOGL(TW_LOG_WARN, "link", l->id, l->rank,
			    "shared memory with %s failed (%s): it stays on "
			    "tcp://",
			    p[i].id, tw_strerror(rv));
	}
	return TW_OK;
}

// Moves the pairs in use onto their shm:// channels.
static int move(shml *s, size_t *moved)
{
	tw__family *f = s->l->fam;
	f->peer_xops = calloc(s->n, sizeof(*f->peer_xops));
	f->spare = calloc(s->n, sizeof(*f->spare));
	if (f->peer_xops == NULL || f->spare == NULL) {
		free(f->peer_xops);
		free(f->spare);
		f->peer_xops = NULL;
		f->spare = NULL;
		return TW_ENOMEM;
	}
	*moved = 0;
	for (size_t i = 0; i < s->n; i++) {
		f->peer_xops[i] = f->xops;
		if (!s->use[i])
			continue;
		f->spare[i] = f->chans[i];
		f->chans[i] = s->shm[i];
		f->peer_xops[i] = tw__shm_transport.xops;
		s->shm[i] = NULL;
		(*moved)++;
	}
	return TW_OK;
}

// Unmaps and removes this side's probe, if it has one.
static void probe_drop(shml *s)
{
	if (s->probe_mem == NULL)
		return;
	tw_shm_close(s->probe_mem, PROBE_SIZE);
	tw_shm_unlink(s->probe);
	s->probe_mem = NULL;
}

static void shml_free(shml *s)
{
	for (size_t i = 0; s->shm != NULL && i < s->n; i++)
		if (s->shm[i] != NULL)
			s->shm[i]->ops->destroy(s->shm[i]);
	probe_drop(s);
	free(s->peer);
	free(s->same);
	free(s->seen);
	free(s->want);
	free(s->up);
	free(s->use);
	free(s->shm);
}

int tw__shmlocal_upgrade(tw_link *l, const tw_desc *d)
{
	size_t n = l->size;
	if (l->opts[TW_OPT_MAX_MSG_SIZE] < TW_SHML_HELLO_LEN) {
		// The hello cannot travel: every party (with the same options)
		// decides so alike.
		TW_LOGL(TW_LOG_WARN, "link", l->id, l->rank,
		    "TW_OPT_SHM_LOCAL needs TW_OPT_MAX_MSG_SIZE of %d bytes "
		    "or "
		    "more: the link stays on tcp://",
		    TW_SHML_HELLO_LEN);
		return TW_OK;
	}
	shml s = {
		.l = l,
		.d = d,
		.n = n,
		.deadline
		= tw__deadline_ms(l->opts[TW_OPT_CONNECT_TIMEOUT_MS]),
		.peer = calloc(n, sizeof(tw__shml_hello)),
		.same = calloc(n, sizeof(bool)),
		.seen = calloc(n, sizeof(bool)),
		.want = calloc(n, sizeof(bool)),
		.up = calloc(n, sizeof(bool)),
		.use = calloc(n, sizeof(bool)),
		.shm = calloc(n, sizeof(tw_channel *)),
	};
	int st = TW_ENOMEM;
	if (s.peer == NULL || s.same == NULL || s.seen == NULL
	    || s.want == NULL || s.up == NULL || s.use == NULL
	    || s.shm == NULL)
		goto out;
	if ((st = hellos(&s)) != TW_OK)
		goto out;
	if ((st = exchange_verdicts(&s, 1, s.same, s.seen, s.want)) != TW_OK)
		goto out;
	// Every peer that looks has looked: the probe has done its job.
	probe_drop(&s);
	size_t nwant = 0;
	for (size_t i = 0; i < n; i++)
		nwant += s.want[i];
	size_t moved = 0;
	if (nwant > 0) {
		if ((st = open_shm(&s)) != TW_OK)
			goto out;
		if ((st = exchange_verdicts(&s, 2, s.want, s.up, s.use))
		    != TW_OK)
			goto out;
		if ((st = move(&s, &moved)) != TW_OK)
			goto out;
	}
	TW_LOGL(TW_LOG_INFO, "link", l->id, l->rank,
	    "%zu of %zu peers share this host and its shared memory; %zu "
	    "moved to shm://",
	    nwant, n - 1, moved);
out:
	shml_free(&s);
	return st;
}

bool tw__link_peer_on_shm(const tw_link *l, size_t peer)
{
	const tw__family *f = l->fam;
	return peer < l->size && peer != l->rank && f->xops != NULL
	    && tw__fam_xops(f, l->map[peer]) == tw__shm_transport.xops;
}
