// tagwire demo: what each party does in each phase, and how it checks it.
//
// Every payload is a deterministic byte pattern computed from (source,
// destination, tag, sequence number), so a receiver can check each byte
// without any other party's help, and a message that arrives at the wrong
// party, under the wrong tag, out of order or shifted by a byte fails its
// check.  The phases use no sleeps and no shared memory between parties
// except the one place that tests the library's barrier against it.
//
// Pairs exchange in rounds: in round k (1 <= k < n) party r sends to r + k
// and receives from r - k (mod n).  Every ordered pair meets once, and at
// any moment a party holds the messages of one peer only, so the memory of
// a run grows with the number of parties, not with its square.

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "demo.h"

// ---------------------------------------------------------------------------
// Patterns
// ---------------------------------------------------------------------------

static uint64_t seed_of(size_t src, size_t dst, const char *tag, uint64_t seq)
{
	uint64_t h = 0xcbf29ce484222325ull; // FNV-1a over the tag
	for (const unsigned char *c = (const unsigned char *)tag; *c; c++)
		h = (h ^ *c) * 0x100000001b3ull;
	h = cli_mix64(h ^ (uint64_t)src);
	h = cli_mix64(h ^ ((uint64_t)dst << 20));
	return cli_mix64(h ^ (seq * CLI_GOLDEN));
}

// Byte i of a pattern is byte i % 8 (little endian) of cli_mix64(seed + i/8 *
// CLI_GOLDEN); stored byte by byte so that the pattern does not depend on the
// host's byte order.
static void fill(void *buf, size_t len, uint64_t seed)
{
	unsigned char *p = buf;
	size_t i = 0;
	for (uint64_t w = 0; i < len; w++) {
		uint64_t v = cli_mix64(seed + w * CLI_GOLDEN);
		for (int k = 0; k < 8 && i < len; k++, i++)
			p[i] = (unsigned char)(v >> (8 * k));
	}
}

// The first byte of buf that differs from the pattern (SIZE_MAX if none),
// and the byte expected there.
static size_t mismatch(const void *buf, size_t len, uint64_t seed, int *want)
{
	const unsigned char *p = buf;
	size_t i = 0;
	for (uint64_t w = 0; i < len; w++) {
		uint64_t v = cli_mix64(seed + w * CLI_GOLDEN);
		for (int k = 0; k < 8 && i < len; k++, i++) {
			unsigned char e = (unsigned char)(v >> (8 * k));
			if (p[i] != e) {
				*want = e;
				return i;
			}
		}
	}
	return SIZE_MAX;
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

static void count_check(demo_party *p)
{
	atomic_fetch_add_explicit(&p->run->checks, 1, memory_order_relaxed);
}

// A failed library call: names the call and the status.  0 when st is TW_OK.
static int tw_ok(demo_party *p, int st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int tw_ok(demo_party *p, int st, const char *fmt, ...)
{
	if (st == TW_OK)
		return 0;
	char what[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return demo_fail(
	    p, "%s: %s (%s)", what, tw_strerror(st), tw_err_name(st));
}

// A condition that must hold; `fmt` says what was expected.
static int expect(demo_party *p, bool cond, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int expect(demo_party *p, bool cond, const char *fmt, ...)
{
	count_check(p);
	if (cond)
		return 0;
	char what[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return demo_fail(p, "%s", what);
}

// Checks the length and every byte of a buffer.  `received` marks buffers
// that came out of the library, which are the ones the test knob
// (--corrupt / TAGWIRE_DEMO_CORRUPT) may flip a byte of, to prove that a
// run whose data is wrong does fail.
static int check_buf(demo_party *p, void *buf, size_t len, size_t want_len,
    uint64_t seed, bool received, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
static int check_buf(demo_party *p, void *buf, size_t len, size_t want_len,
    uint64_t seed, bool received, const char *fmt, ...)
{
	demo_run *run = p->run;
	if (received && run->cfg->corrupt == p->phase && len > 0
	    && !atomic_exchange_explicit(
	        &run->corrupted, 1, memory_order_relaxed))
		((unsigned char *)buf)[len / 2] ^= 0x40;
	count_check(p);
	int want = 0;
	size_t at = len == want_len ? mismatch(buf, len, seed, &want) : 0;
	if (len == want_len && at == SIZE_MAX)
		return 0;
	char what[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (len != want_len)
		return demo_fail(
		    p, "%s: %zu bytes, expected %zu", what, len, want_len);
	return demo_fail(p,
	    "%s: byte %zu of %zu differs: 0x%02x, expected 0x%02x", what, at,
	    len, ((unsigned char *)buf)[at], want);
}

static void *xmalloc(size_t n)
{
	return malloc(n ? n : 1);
}

// Checks the link's statistics against what this party sent and received.
static int check_stats(demo_party *p, tw_link *l, uint64_t msgs_sent,
    uint64_t bytes_sent, uint64_t msgs_recv, uint64_t bytes_recv)
{
	tw_stats s;
	tw_link_stats(l, &s);
	return expect(p,
	    s.msgs_sent == msgs_sent && s.bytes_sent == bytes_sent
	        && s.msgs_recv == msgs_recv && s.bytes_recv == bytes_recv,
	    "statistics of link %s: sent %llu msgs / %llu bytes, received "
	    "%llu / %llu; expected %llu / %llu and %llu / %llu",
	    tw_link_id(l), (unsigned long long)s.msgs_sent,
	    (unsigned long long)s.bytes_sent, (unsigned long long)s.msgs_recv,
	    (unsigned long long)s.bytes_recv, (unsigned long long)msgs_sent,
	    (unsigned long long)bytes_sent, (unsigned long long)msgs_recv,
	    (unsigned long long)bytes_recv);
}

// ---------------------------------------------------------------------------
// Mesh
// ---------------------------------------------------------------------------

static int ph_mesh(demo_party *p)
{
	size_t n = p->run->cfg->parties;
	tw_link *l = NULL;
	int st = tw_link_create(p->run->desc, p->rank, &l);
	if (tw_ok(p, st, "tw_link_create"))
		return -1;
	p->link = l;
	return expect(p,
	    tw_link_rank(l) == p->rank && tw_link_size(l) == n
	        && strcmp(tw_link_id(l), DEMO_LINK_ID) == 0,
	    "link is rank %zu of %zu named \"%s\", expected rank %zu of "
	    "%zu named \"" DEMO_LINK_ID "\"",
	    tw_link_rank(l), tw_link_size(l), tw_link_id(l), p->rank, n);
}

// ---------------------------------------------------------------------------
// Point to point
// ---------------------------------------------------------------------------

#define TAG16 "0123456789abcdef"
#define TAG240                                                                \
	TAG16 TAG16 TAG16 TAG16 TAG16 TAG16 TAG16 TAG16 TAG16 TAG16 TAG16     \
	    TAG16 TAG16 TAG16 TAG16
// The empty tag, a plain one and the longest legal one (255 bytes).
static const char *const p2p_tags[]
    = { "", "alpha", TAG240 "0123456789abcde" };
// Zero bytes, one, a small message and one past 64 KiB.
static const size_t p2p_sizes[] = { 0, 1, 1000, 100003 };
#define P2P_NTAGS 3
#define P2P_NSIZES 4
// 3 tags x 4 sizes, coprime, so every (tag, size) pair occurs once and the
// messages of one tag have four different lengths: a message received out
// of order fails on its length already.
#define P2P_MSGS (P2P_NTAGS * P2P_NSIZES)
#define P2P_MAX 100003
#define P2P_PAIR_BYTES (P2P_NTAGS * (0 + 1 + 1000 + 100003))

#define P2P_WHAT "message %llu from party %zu (tag \"%s\")"

static const char *tag_show(const char *tag)
{
	return strlen(tag) > 16 ? "<255-byte tag>" : tag;
}

// Sends the round's messages to dst, rotating through the three send calls.
static int p2p_send(demo_party *p, size_t dst, unsigned char *buf)
{
	for (uint64_t seq = 0; seq < P2P_MSGS; seq++) {
		const char *tag = p2p_tags[seq % P2P_NTAGS];
		size_t len = p2p_sizes[seq % P2P_NSIZES];
		fill(buf, len, seed_of(p->rank, dst, tag, seq));
		int st;
		const char *call;
		switch ((seq / P2P_NTAGS) % 3) {
		case 0:
			call = "tw_send";
			st = tw_send(p->link, dst, tag, buf, len);
			break;
		case 1:
			call = "tw_send_async";
			st = tw_send_async(p->link, dst, tag, buf, len);
			break;
		default:
			call = "tw_send_async_throttled";
			st = tw_send_async_throttled(
			    p->link, dst, tag, buf, len);
			break;
		}
		if (tw_ok(p, st, "%s to party %zu (tag \"%s\", %zu bytes)",
		        call, dst, tag_show(tag), len))
			return -1;
	}
	return 0;
}

// Receives one message, half of them with tw_recv and half with
// tw_recv_into after a first try into a buffer one byte too small, which
// must say TW_ETRUNC with the needed size and leave the message queued.
static int p2p_recv_one(
    demo_party *p, size_t src, uint64_t seq, unsigned char *buf)
{
	const char *tag = p2p_tags[seq % P2P_NTAGS];
	size_t want = p2p_sizes[seq % P2P_NSIZES];
	uint64_t seed = seed_of(src, p->rank, tag, seq);
	if ((seq / P2P_NTAGS) % 2 == 0) {
		tw_buf b = { 0 };
		int st = tw_recv(p->link, src, tag, &b);
		if (tw_ok(p, st, "tw_recv from party %zu (tag \"%s\")", src,
		        tag_show(tag)))
			return -1;
		int rv = check_buf(p, b.data, b.len, want, seed, true,
		    P2P_WHAT, (unsigned long long)seq, src, tag_show(tag));
		tw_buf_free(&b);
		return rv;
	}
	size_t len = 0;
	if (want > 0) {
		int st = tw_recv_into(p->link, src, tag, buf, want - 1, &len);
		if (expect(p, st == TW_ETRUNC && len == want,
		        "tw_recv_into of %zu bytes into %zu from party "
		        "%zu: %s with length %zu, expected TW_ETRUNC "
		        "with %zu",
		        want, want - 1, src, tw_err_name(st), len, want))
			return -1;
	}
	int st = tw_recv_into(p->link, src, tag, buf, P2P_MAX + 16, &len);
	if (tw_ok(p, st, "tw_recv_into from party %zu (tag \"%s\")", src,
	        tag_show(tag)))
		return -1;
	return check_buf(p, buf, len, want, seed, true, P2P_WHAT,
	    (unsigned long long)seq, src, tag_show(tag));
}

static int ph_p2p(demo_party *p)
{
	size_t n = p->run->cfg->parties, r = p->rank;
	unsigned char *sbuf = xmalloc(P2P_MAX), *rbuf = xmalloc(P2P_MAX + 16);
	int rv = 0;
	if (sbuf == NULL || rbuf == NULL)
		rv = demo_fail(p, "out of memory");
	for (size_t k = 1; k < n && rv == 0; k++) {
		size_t dst = (r + k) % n, src = (r + n - k) % n;
		rv = p2p_send(p, dst, sbuf);
		// Tags in the reverse order of sending, so that each receive
		// has to pass over messages of the other tags.
		for (size_t t = P2P_NTAGS; t-- > 0 && rv == 0;)
			for (uint64_t seq = t; seq < P2P_MSGS && rv == 0;
			     seq += P2P_NTAGS)
				rv = p2p_recv_one(p, src, seq, rbuf);
		// Each message is received exactly once: nothing is left.
		for (size_t t = 0; t < P2P_NTAGS && rv == 0; t++) {
			size_t len;
			int st = tw_probe(p->link, src, p2p_tags[t], &len);
			rv = expect(p, st == TW_EAGAIN,
			    "tw_probe from party %zu (tag \"%s\") after "
			    "the last message: %s, expected TW_EAGAIN",
			    src, tag_show(p2p_tags[t]), tw_err_name(st));
		}
	}
	free(sbuf);
	free(rbuf);
	if (rv == 0)
		rv = tw_ok(
		    p, tw_link_wait_pending(p->link), "tw_link_wait_pending");
	uint64_t m = (n - 1) * P2P_MSGS, b = (n - 1) * P2P_PAIR_BYTES;
	if (rv == 0)
		rv = check_stats(p, p->link, m, b, m, b);
	return rv;
}

// ---------------------------------------------------------------------------
// Collectives
// ---------------------------------------------------------------------------

#define COLL_MAX (65536 + 4096)

// Contribution sizes that differ per party and per call: empty, one byte,
// a few KiB, or past 64 KiB.
static size_t coll_len(size_t a, size_t b, unsigned salt)
{
	uint64_t h
	    = cli_mix64(((uint64_t)a << 32) ^ ((uint64_t)b << 8) ^ salt);
	switch (h % 8) {
	case 0:
		return 0;
	case 1:
		return 1;
	case 7:
		return 65536 + (size_t)(h >> 32) % 4096;
	default:
		return (size_t)(h >> 32) % 3000;
	}
}

static int ph_barrier(demo_party *p)
{
	static const char *const tags[] = { "", "b", "b" };
	demo_run *run = p->run;
	uint64_t n = p->run->cfg->parties;
	for (uint64_t i = 0; i < 3; i++) {
		// Parties are threads of this process, so the barrier can be
		// checked directly: once it returns, every party must have
		// counted its arrival.
		atomic_fetch_add_explicit(
		    &run->barrier_arrivals, 1, memory_order_release);
		if (tw_ok(p, tw_barrier(p->link, tags[i]), "tw_barrier %llu",
		        (unsigned long long)i))
			return -1;
		uint64_t seen = atomic_load_explicit(
		    &run->barrier_arrivals, memory_order_acquire);
		if (expect(p, seen >= (i + 1) * n,
		        "tw_barrier %llu returned after %llu arrivals, "
		        "expected %llu",
		        (unsigned long long)i, (unsigned long long)seen,
		        (unsigned long long)((i + 1) * n)))
			return -1;
	}
	return 0;
}

static int ph_bcast(demo_party *p)
{
	size_t n = p->run->cfg->parties, r = p->rank;
	unsigned char *mine = xmalloc(COLL_MAX);
	if (mine == NULL)
		return demo_fail(p, "out of memory");
	int rv = 0;
	for (size_t root = 0; root < n && rv == 0; root++) {
		size_t len = coll_len(root, 0, 0);
		uint64_t seed = seed_of(root, n, "bcast", root);
		tw_buf io = { 0 };
		if (r == root) {
			fill(mine, len, seed);
			io = (tw_buf) { mine, len };
		}
		rv = tw_ok(p, tw_broadcast(p->link, root, "bcast", &io),
		    "tw_broadcast from root %zu", root);
		if (rv == 0 && r == root)
			rv = expect(p, io.data == mine && io.len == len,
			    "tw_broadcast changed the root's buffer");
		if (rv == 0)
			rv = check_buf(p, io.data, io.len, len, seed,
			    r != root, "broadcast from root %zu", root);
		if (r != root)
			tw_buf_free(&io);
	}
	free(mine);
	return rv;
}

// Checks out[0..n) against the contributions of every party.
static int check_all(demo_party *p, tw_buf *out, size_t n, size_t b,
    unsigned salt, const char *tag, uint64_t seq, const char *what)
{
	int rv = 0;
	for (size_t i = 0; i < n && rv == 0; i++)
		rv = check_buf(p, out[i].data, out[i].len,
		    coll_len(i, b, salt), seed_of(i, b, tag, seq), true,
		    "%s: block of party %zu", what, i);
	for (size_t i = 0; i < n; i++)
		tw_buf_free(&out[i]);
	return rv;
}

static int ph_gather(demo_party *p)
{
	size_t n = p->run->cfg->parties, r = p->rank;
	unsigned char *mine = xmalloc(COLL_MAX);
	tw_buf *out = calloc(n, sizeof(*out));
	int rv
	    = mine == NULL || out == NULL ? demo_fail(p, "out of memory") : 0;
	for (size_t root = 0; root < n && rv == 0; root++) {
		size_t len = coll_len(r, root, 1);
		fill(mine, len, seed_of(r, root, "gather", root));
		rv = tw_ok(p,
		    tw_gather(p->link, root, "gather", mine, len,
		        r == root ? out : NULL),
		    "tw_gather to root %zu", root);
		if (rv == 0 && r == root) {
			char what[64];
			snprintf(
			    what, sizeof(what), "gather to root %zu", root);
			rv = check_all(
			    p, out, n, root, 1, "gather", root, what);
		}
	}
	free(mine);
	free(out);
	return rv;
}

static int ph_allgather(demo_party *p)
{
	size_t n = p->run->cfg->parties, r = p->rank;
	unsigned char *mine = xmalloc(COLL_MAX);
	tw_buf *out = calloc(n, sizeof(*out));
	int rv
	    = mine == NULL || out == NULL ? demo_fail(p, "out of memory") : 0;
	// Two calls with one tag: the second must not meet the first.
	for (unsigned salt = 2; salt < 4 && rv == 0; salt++) {
		size_t len = coll_len(r, n, salt);
		fill(mine, len, seed_of(r, n, "allgather", salt));
		rv = tw_ok(p, tw_allgather(p->link, "ag", mine, len, out),
		    "tw_allgather %u", salt - 2);
		if (rv == 0) {
			char what[64];
			snprintf(what, sizeof(what), "allgather %u", salt - 2);
			rv = check_all(
			    p, out, n, n, salt, "allgather", salt, what);
		}
	}
	free(mine);
	free(out);
	return rv;
}

static int ph_scatter(demo_party *p)
{
	size_t n = p->run->cfg->parties, r = p->rank;
	tw_buf *in = calloc(n, sizeof(*in));
	unsigned char *all = xmalloc(n * COLL_MAX);
	int rv = in == NULL || all == NULL ? demo_fail(p, "out of memory") : 0;
	for (size_t root = 0; root < n && rv == 0; root++) {
		if (r == root) {
			for (size_t i = 0; i < n; i++) {
				in[i].data = all + i * COLL_MAX;
				in[i].len = coll_len(root, i, 4);
				fill(in[i].data, in[i].len,
				    seed_of(root, i, "scatter", root));
			}
		}
		tw_buf out = { 0 };
		rv = tw_ok(p,
		    tw_scatter(
		        p->link, root, "scatter", r == root ? in : NULL, &out),
		    "tw_scatter from root %zu", root);
		if (rv == 0)
			rv = check_buf(p, out.data, out.len,
			    coll_len(root, r, 4),
			    seed_of(root, r, "scatter", root), true,
			    "scatter from root %zu", root);
		tw_buf_free(&out);
	}
	free(in);
	free(all);
	return rv;
}

// ---------------------------------------------------------------------------
// Bulk exchange
// ---------------------------------------------------------------------------

static void atomic_max(_Atomic int64_t *dst, int64_t v)
{
	int64_t cur = atomic_load_explicit(dst, memory_order_relaxed);
	while (v > cur
	    && !atomic_compare_exchange_weak_explicit(
	        dst, &cur, v, memory_order_relaxed, memory_order_relaxed))
		;
}

// Each round is opened for all parties at once and timed apart from the
// filling and checking of the buffers, so that the rate in the report is
// the transport's, not the pattern generator's.  A party that failed keeps
// walking through the rounds (doing nothing) so that nobody waits for it.
static int ph_bulk(demo_party *p)
{
	demo_run *run = p->run;
	size_t n = run->cfg->parties, r = p->rank;
	size_t size = (size_t)run->cfg->size;
	unsigned char *sbuf = xmalloc(size), *rbuf = xmalloc(size);
	int rv
	    = sbuf == NULL || rbuf == NULL ? demo_fail(p, "out of memory") : 0;
	for (size_t k = 1; k < n; k++) {
		size_t dst = (r + k) % n, src = (r + n - k) % n;
		if (rv == 0)
			fill(sbuf, size, seed_of(r, dst, "bulk", k));
		demo_step(run);
		int64_t t0 = demo_now_ns();
		size_t len = 0;
		if (rv == 0)
			rv = tw_ok(p,
			    tw_send(p->link, dst, "bulk", sbuf, size),
			    "tw_send of %zu bytes to party %zu", size, dst);
		if (rv == 0)
			rv = tw_ok(p,
			    tw_recv_into(
			        p->link, src, "bulk", rbuf, size, &len),
			    "tw_recv_into of %zu bytes from party %zu", size,
			    src);
		atomic_max(&run->bulk_round_ns[k], demo_now_ns() - t0);
		if (rv == 0)
			rv = check_buf(p, rbuf, len, size,
			    seed_of(src, r, "bulk", k), true,
			    "bulk message from party %zu", src);
	}
	free(sbuf);
	free(rbuf);
	if (rv == 0)
		rv = tw_ok(
		    p, tw_link_wait_pending(p->link), "tw_link_wait_pending");
	return rv;
}

// ---------------------------------------------------------------------------
// Child links
// ---------------------------------------------------------------------------

// The sub link: every party but rank 0, in reverse order (child rank i is
// parent rank n-1-i), so that a wrong rank mapping cannot go unnoticed;
// with fewer than three parties, all of them, reversed.
static size_t sub_ranks(size_t n, size_t *ranks)
{
	size_t m = n >= 3 ? n - 1 : n;
	for (size_t i = 0; i < m; i++)
		ranks[i] = n - 1 - i;
	return m;
}

// Sends one message under "iso" on `l` to the next rank; its size
// (base + rank) and pattern name the link, so that ring_receive can tell
// a message that strayed from another link.
static int ring_exchange(demo_party *p, tw_link *l, const char *name,
    size_t base, unsigned char *buf)
{
	size_t n = tw_link_size(l), r = tw_link_rank(l);
	size_t dst = (r + 1) % n;
	fill(buf, base + r, seed_of(r, dst, name, 0));
	return tw_ok(p, tw_send(l, dst, "iso", buf, base + r),
	    "tw_send on link %s", tw_link_id(l));
}

// Receives the "iso" message of the previous rank on `l` and checks that
// nothing else is queued there.

static int ring_receive(
    demo_party *p, tw_link *l, const char *name, size_t base)
{
	size_t n = tw_link_size(l), r = tw_link_rank(l);
	size_t src = (r + n - 1) % n;
	tw_buf b = { 0 };
	if (tw_ok(p, tw_recv(l, src, "iso", &b), "tw_recv on link %s",
	        tw_link_id(l)))
		return -1;
	int rv = check_buf(p, b.data, b.len, base + src,
	    seed_of(src, r, name, 0), true,
	    "message on link %s from its rank %zu", tw_link_id(l), src);
	tw_buf_free(&b);
	size_t len;
	int st = tw_probe(l, src, "iso", &len);
	if (rv == 0)
		rv = expect(p, st == TW_EAGAIN,
		    "tw_probe on link %s after its one message: %s, "
		    "expected TW_EAGAIN",
		    tw_link_id(l), tw_err_name(st));
	return rv;
}

// Allgathers each party's parent rank over the sub link: block i must be
// ranks[i], which proves the rank mapping end to end.
static int sub_check_map(demo_party *p, const size_t *ranks, size_t m)
{
	unsigned char mine[8];
	for (int k = 0; k < 8; k++)
		mine[k] = (unsigned char)((uint64_t)p->rank >> (8 * k));
	tw_buf *out = calloc(m, sizeof(*out));
	if (out == NULL)
		return demo_fail(p, "out of memory");
	int rv = tw_ok(p, tw_allgather(p->sub, "map", mine, 8, out),
	    "tw_allgather on link %s", tw_link_id(p->sub));
	for (size_t i = 0; i < m && rv == 0; i++) {
		uint64_t v = 0;
		for (int k = 0; k < 8 && out[i].len == 8; k++)
			v |= (uint64_t)((unsigned char *)out[i].data)[k]
			    << (8 * k);
		rv = expect(p, out[i].len == 8 && v == ranks[i],
		    "sub link rank %zu says it is parent rank %llu, "
		    "expected %zu",
		    i, (unsigned long long)v, ranks[i]);
	}
	for (size_t i = 0; i < m; i++)
		tw_buf_free(&out[i]);
	free(out);
	return rv;
}

static int child_open(demo_party *p, const size_t *ranks, size_t m)
{
	size_t n = p->run->cfg->parties;
	if (tw_ok(p, tw_link_spawn(p->link, "child", &p->child),
	        "tw_link_spawn"))
		return -1;
	if (expect(p,
	        tw_link_rank(p->child) == p->rank
	            && tw_link_size(p->child) == n
	            && strcmp(tw_link_id(p->child), "demo/child") == 0,
	        "spawned link is rank %zu of %zu named \"%s\"",
	        tw_link_rank(p->child), tw_link_size(p->child),
	        tw_link_id(p->child)))
		return -1;
	size_t want = SIZE_MAX;
	for (size_t i = 0; i < m; i++)
		if (ranks[i] == p->rank)
			want = i;
	if (want == SIZE_MAX)
		return 0; // not a member: the sub link is none of its business
	if (tw_ok(p, tw_link_sub(p->link, "sub", ranks, m, &p->sub),
	        "tw_link_sub"))
		return -1;
	return expect(p,
	    tw_link_rank(p->sub) == want && tw_link_size(p->sub) == m
	        && strcmp(tw_link_id(p->sub), "demo/sub") == 0,
	    "sub link is rank %zu of %zu named \"%s\", expected rank %zu "
	    "of %zu",
	    tw_link_rank(p->sub), tw_link_size(p->sub), tw_link_id(p->sub),
	    want, m);
}

// Spawns a child and a sub link and sends under one tag, "iso", on all
// three links at once: the child's message first, so that if namespaces
// leaked, the root's receive would take the child's message and fail on
// its size and pattern.
static int ph_child(demo_party *p)
{
	size_t n = p->run->cfg->parties;
	size_t ranks[DEMO_MAX_PARTIES];
	size_t m = sub_ranks(n, ranks);
	unsigned char *buf = xmalloc(4000 + DEMO_MAX_PARTIES);
	int rv = buf == NULL ? demo_fail(p, "out of memory") : 0;
	if (rv == 0)
		rv = child_open(p, ranks, m);
	bool sub_ring = p->sub != NULL && m >= 2;
	if (rv == 0 && n >= 2)
		rv = ring_exchange(p, p->child, "child", 1000, buf);
	if (rv == 0 && sub_ring)
		rv = ring_exchange(p, p->sub, "sub", 3000, buf);
	if (rv == 0 && n >= 2)
		rv = ring_exchange(p, p->link, "root", 2000, buf);
	if (rv == 0 && n >= 2)
		rv = ring_receive(p, p->link, "root", 2000);
	if (rv == 0 && n >= 2)
		rv = ring_receive(p, p->child, "child", 1000);
	if (rv == 0 && sub_ring)
		rv = ring_receive(p, p->sub, "sub", 3000);
	if (rv == 0 && p->sub != NULL)
		rv = sub_check_map(p, ranks, m);
	free(buf);
	// Children count only their own messages, and nothing crosses
	// between links.
	uint64_t one = n >= 2, src = (p->rank + n - 1) % n;
	if (rv == 0)
		rv = check_stats(p, p->child, one, one * (1000 + p->rank), one,
		    one * (1000 + src));
	if (rv == 0 && p->sub != NULL) {
		size_t sr = tw_link_rank(p->sub);
		uint64_t ss = m >= 2, ssrc = (sr + m - 1) % m;
		rv = check_stats(
		    p, p->sub, ss, ss * (3000 + sr), ss, ss * (3000 + ssrc));
	}
	// Nobody closes a child while a peer may still send on it.
	if (rv == 0 && p->sub != NULL)
		rv = tw_ok(p, tw_barrier(p->sub, "done"),
		    "tw_barrier on link demo/sub");
	if (rv == 0)
		rv = tw_ok(p, tw_barrier(p->child, "done"),
		    "tw_barrier on link demo/child");
	if (rv == 0 && p->sub != NULL) {
		rv = tw_ok(
		    p, tw_link_close(p->sub), "tw_link_close of demo/sub");
		p->sub = NULL;
	}
	if (rv == 0) {
		rv = tw_ok(
		    p, tw_link_close(p->child), "tw_link_close of demo/child");
		p->child = NULL;
	}
	return rv;
}

// ---------------------------------------------------------------------------
// Close
// ---------------------------------------------------------------------------

static int ph_close(demo_party *p)
{
	size_t n = p->run->cfg->parties, r = p->rank;
	uint64_t size = p->run->cfg->size;
	// The root link counted the point-to-point, bulk and "iso" messages,
	// and none of the collectives or the children's traffic.
	uint64_t peers = n - 1, one = n >= 2, src = (r + n - 1) % n;
	uint64_t msgs = peers * (P2P_MSGS + 1) + one;
	uint64_t base = peers * (P2P_PAIR_BYTES + size);
	if (check_stats(p, p->link, msgs, base + one * (2000 + r), msgs,
	        base + one * (2000 + src)))
		return -1;
	if (tw_ok(p, tw_barrier(p->link, "close"), "tw_barrier before close"))
		return -1;
	int st = tw_link_close(p->link);
	p->link = NULL;
	return tw_ok(p, st, "tw_link_close");
}

// ---------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------

int (*const demo_phase_fn[PH_COUNT])(demo_party *p) = {
	[PH_MESH] = ph_mesh,
	[PH_P2P] = ph_p2p,
	[PH_BARRIER] = ph_barrier,
	[PH_BCAST] = ph_bcast,
	[PH_GATHER] = ph_gather,
	[PH_ALLGATHER] = ph_allgather,
	[PH_SCATTER] = ph_scatter,
	[PH_BULK] = ph_bulk,
	[PH_CHILD] = ph_child,
	[PH_CLOSE] = ph_close,
};

const char *const demo_phase_title[PH_COUNT] = {
	[PH_MESH] = "mesh formed",
	[PH_P2P] = "point-to-point",
	[PH_BARRIER] = "barrier",
	[PH_BCAST] = "broadcast (every root)",
	[PH_GATHER] = "gather (every root)",
	[PH_ALLGATHER] = "allgather",
	[PH_SCATTER] = "scatter (every root)",
	[PH_BULK] = "bulk exchange",
	[PH_CHILD] = "child links",
	[PH_CLOSE] = "close",
};

const char *const demo_phase_key[PH_COUNT] = {
	[PH_MESH] = "mesh",
	[PH_P2P] = "p2p",
	[PH_BARRIER] = "barrier",
	[PH_BCAST] = "broadcast",
	[PH_GATHER] = "gather",
	[PH_ALLGATHER] = "allgather",
	[PH_SCATTER] = "scatter",
	[PH_BULK] = "bulk",
	[PH_CHILD] = "child",
	[PH_CLOSE] = "close",
};

// Bytes that every root's (or every party's) contributions add up to.
static uint64_t coll_bytes(size_t n, int phase)
{
	uint64_t t = 0;
	for (size_t a = 0; a < n; a++) {
		if (phase == PH_BCAST) {
			t += coll_len(a, 0, 0);
			continue;
		}
		for (size_t b = 0; b < n; b++) {
			if (phase == PH_GATHER)
				t += coll_len(b, a, 1);
			else if (phase == PH_SCATTER)
				t += coll_len(a, b, 4);
		}
		if (phase == PH_ALLGATHER)
			t += coll_len(a, n, 2) + coll_len(a, n, 3);
	}
	return t;
}

void demo_phase_detail(const demo_run *run, int phase, char *buf, size_t cap)
{
	size_t n = run->cfg->parties, pairs = n * (n - 1), alive = 0;
	char bytes[32];
	switch (phase) {
	case PH_MESH:
	case PH_CLOSE:
		for (size_t i = 0; i < n; i++)
			alive += phase == PH_MESH
			    ? run->parties[i].link != NULL
			    : run->parties[i].link == NULL;
		snprintf(buf, cap, "%zu/%zu parties", alive, n);
		break;
	case PH_P2P:
		cli_fmt_bytes(
		    bytes, sizeof(bytes), (uint64_t)pairs * P2P_PAIR_BYTES);
		snprintf(buf, cap, "%zu pairs, %zu messages, %s", pairs,
		    pairs * P2P_MSGS, bytes);
		break;
	case PH_BARRIER:
		snprintf(buf, cap, "3 barriers");
		break;
	case PH_BCAST:
	case PH_GATHER:
	case PH_SCATTER:
		cli_fmt_bytes(bytes, sizeof(bytes), coll_bytes(n, phase));
		snprintf(
		    buf, cap, "%zu root%s, %s", n, n == 1 ? "" : "s", bytes);
		break;
	case PH_ALLGATHER:
		cli_fmt_bytes(bytes, sizeof(bytes), coll_bytes(n, phase));
		snprintf(buf, cap, "2 rounds, %s", bytes);
		break;
	case PH_BULK:
		cli_fmt_bytes(bytes, sizeof(bytes), run->cfg->size);
		snprintf(buf, cap, "%zu x %s", pairs, bytes);
		break;
	case PH_CHILD: {
		size_t ranks[DEMO_MAX_PARTIES];
		snprintf(buf, cap, "spawn, sub of %zu", sub_ranks(n, ranks));
		break;
	}
	default:
		snprintf(buf, cap, "-");
	}
}
