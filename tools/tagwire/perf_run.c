// tagwire perf: the measurements.
//
// Every measurement runs in phases: warm-up phases, then the timed one.
// Each phase starts with a header from the leader (rank 0 in coll) that
// names the measurement, the number of iterations and whether it is the
// timed phase.  The follower needs nothing else, so the leader may decide
// at run time: with --duration it warms up with growing phases until one
// lasts a twentieth of the duration (a single short one would be timed
// cold and mislead), and sizes the timed phase from the fastest.
//
// The workloads are those that the peer libraries' benchmarks report:
//  - lat: ping-pong; one way = round trip / 2; median, p99, max of the
//    round trips, each timed alone so that filling and checking buffers
//    (--validate) stays out of the figures;
//  - bw: the leader streams the messages, the follower receives each in
//    full and acknowledges the end; GB/s = 1e9 B/s over the whole;
//  - rate: as bw, with an acknowledgement every --window messages (0: at
//    the end only), sends that may leave later (tw_send_async);
//  - barrier and allgather: every party times its own loop; the figure is
//    the mean over the parties of their time per operation (as osu_barrier
//    and osu_allgather report it).
//
// Validation.  With --validate every message is filled with a pattern
// derived from (size, iteration) — and the sender's rank in allgather —
// and the receiver checks every byte; a mismatch names the message and the
// first wrong byte.
//
// Test hook.  TAGWIRE_PERF_CORRUPT=1 in the environment flips one byte of
// the first message that the leader (rank 0) of each run sends, after it
// was filled, so that the tests can prove that --validate finds it.  It is
// not in --help: it exists to be tested, not used.

#include <stdatomic.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "perf.h"

#define HDR_LEN 40
#define HDR_MAGIC 0x46505754u // "TWPF" read as little endian
#define ACK_LEN 8
#define WARM_MAX 1000
// Counts that --duration may reach where an iteration is a round trip or
// a collective: lat keeps a time stamp for each.
#define DURATION_MAX_STAMPS 10000000u
#define GIB ((uint64_t)1 << 30)
#define MIB ((uint64_t)1 << 20)

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *xmalloc(uint64_t n)
{
	return malloc(n ? (size_t)n : 1);
}

// ---------------------------------------------------------------------------
// Patterns
// ---------------------------------------------------------------------------

static uint64_t pat_seed(uint64_t size, uint64_t iter, uint64_t rank)
{
	return cli_mix64(
	    cli_mix64(cli_mix64(size ^ 0x7477706572660000ull) ^ iter) ^ rank);
}

// Byte i is byte i % 8 (little endian) of cli_mix64(seed + i / 8 * CLI_GOLDEN),
// written byte by byte so that both ends agree whatever their byte order.
static void pat_fill(unsigned char *p, size_t len, uint64_t seed)
{
	size_t i = 0;
	for (uint64_t w = 0; i < len; w++) {
		uint64_t v = cli_mix64(seed + w * CLI_GOLDEN);
		for (int k = 0; k < 8 && i < len; k++, i++)
			p[i] = (unsigned char)(v >> (8 * k));
	}
}

// The first byte that differs from the pattern (SIZE_MAX if none) and the
// byte expected there.
static size_t pat_check(
    const unsigned char *p, size_t len, uint64_t seed, unsigned *want)
{
	size_t i = 0;
	for (uint64_t w = 0; i < len; w++) {
		uint64_t v = cli_mix64(seed + w * CLI_GOLDEN);
		for (int k = 0; k < 8 && i < len; k++, i++) {
			unsigned e = (unsigned)(v >> (8 * k)) & 0xff;
			if (p[i] != e) {
				*want = e;
				return i;
			}
		}
	}
	return SIZE_MAX;
}

static _Atomic int corrupt_done; // this process has flipped its byte

// Read once per run, not per message: getenv would cost more than a
// small message does.
static bool corrupt_armed(void)
{
	const char *v = getenv("TAGWIRE_PERF_CORRUPT");
	return v != NULL && strcmp(v, "1") == 0;
}

static void maybe_corrupt(bool armed, unsigned char *p, size_t len)
{
	if (!armed || len == 0
	    || atomic_exchange_explicit(
	        &corrupt_done, 1, memory_order_relaxed))
		return;
	p[len / 2] ^= 0x40;
}

// ---------------------------------------------------------------------------
// A measurement in progress
// ---------------------------------------------------------------------------

typedef struct run {
	const perf_opts *o;
	int transport;
	const perf_sink *sink;
	perf_meas m;
	char label[64];
	char *err;
	size_t cap;
	bool remote; // the failure is the other end's report
	perf_ep *ep; // two-party tests
	tw_link *link; // coll
	double best_ns; // --duration: the fastest warm-up, ns per iteration
	bool corrupt; // the test hook is armed
} run;

static int failf(run *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int failf(run *r, const char *fmt, ...)
{
	char msg[PERF_MSG_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(r->err, r->cap, "%s: %s", r->label, msg);
	return -1;
}

void perf_status_msg(char *buf, size_t cap, const char *call, int status)
{
	snprintf(buf, cap, "%s: %s (%s)", call, tw_err_name(status),
	    tw_strerror(status));
}

// A failed call: 0 when st is TW_OK.
static int io_check(run *r, const char *call, int st)
{
	if (st == TW_OK)
		return 0;
	if (st == PERF_EREMOTE) {
		r->remote = true;
		snprintf(
		    r->err, r->cap, "the other end failed: %s", r->ep->remote);
		return -1;
	}
	char msg[PERF_MSG_MAX];
	perf_status_msg(msg, sizeof(msg), call, st);
	return failf(r, "%s", msg);
}

// What a received message is, for reports.
enum { MSG_DATA, MSG_ECHO, MSG_BLOCK, MSG_BCAST };

// Checks a received message of `len` bytes against message `iter` of
// rank `rank`: its length always, its bytes with --validate.
static int check_msg(run *r, const unsigned char *p, size_t len, uint64_t iter,
    uint64_t rank, int what)
{
	char name[96];
	unsigned want = 0;
	size_t at = SIZE_MAX;
	if (len == r->m.size && !r->o->validate)
		return 0;
	if (len == r->m.size)
		at = pat_check(p, len, pat_seed(r->m.size, iter, rank), &want);
	if (at == SIZE_MAX && len == r->m.size)
		return 0;
	if (what == MSG_BLOCK)
		snprintf(name, sizeof(name),
		    "allgather %llu, the block of rank %llu",
		    (unsigned long long)iter, (unsigned long long)rank);
	else if (what == MSG_BCAST)
		snprintf(name, sizeof(name), "broadcast %llu",
		    (unsigned long long)iter);
	else
		snprintf(name, sizeof(name), "%smessage %llu",
		    what == MSG_ECHO ? "the echo of " : "",
		    (unsigned long long)iter);
	if (len != r->m.size)
		return failf(r, "%s has %zu bytes, expected %llu", name, len,
		    (unsigned long long)r->m.size);
	return failf(r,
	    "validation failed: %s, byte %zu of %zu is 0x%02x, expected "
	    "0x%02x",
	    name, at, len, p[at], want);
}

// Fills a message to send; without --validate the buffer keeps what it
// had, so the leader fills it once.
static void fill_msg(run *r, unsigned char *p, uint64_t iter, uint64_t rank)
{
	if (r->o->validate)
		pat_fill(
		    p, (size_t)r->m.size, pat_seed(r->m.size, iter, rank));
	maybe_corrupt(r->corrupt, p, (size_t)r->m.size);
}

// ---------------------------------------------------------------------------
// Counts
// ---------------------------------------------------------------------------

static uint64_t clamp(uint64_t v, uint64_t lo, uint64_t hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

// Iterations of the timed phase when neither --iters nor --duration is
// given: about a GiB per bandwidth figure as in the peers' table, fewer
// round trips for large messages, and enough to be steady.
static uint64_t default_count(const perf_meas *m)
{
	uint64_t s = m->size ? m->size : 1;
	switch (m->kind) {
	case PERF_K_LAT:
		return clamp(GIB / s / 2, 100, 10000);
	case PERF_K_BW:
		return clamp(GIB / s, 16, 100000);
	case PERF_K_RATE:
		return clamp(256 * MIB / s, 16, 200000);
	case PERF_K_BARRIER:
		return 1000;
	default:
		return clamp(256 * MIB / s / m->parties, 10, 1000);
	}
}

// Warm-up iterations: a tenth of the timed ones; with --duration, the
// first of the growing warm-up phases, a few milliseconds' worth at any
// size.
static uint64_t warm_count(const run *r, uint64_t count)
{
	if (r->o->duration_ms == 0)
		return clamp(count / 10, 0, WARM_MAX);
	uint64_t s = r->m.size ? r->m.size : 1;
	switch (r->m.kind) {
	case PERF_K_LAT:
		return clamp(4 * MIB / s, 2, 100);
	case PERF_K_BW:
		return clamp(16 * MIB / s, 2, 200);
	case PERF_K_RATE:
		return clamp(16 * MIB / s, 2, 1000);
	case PERF_K_ALLGATHER:
	case PERF_K_BCAST:
		return clamp(4 * MIB / s / r->m.parties, 2, 100);
	default:
		return 100;
	}
}

static uint64_t count_max(const run *r)
{
	return r->m.kind == PERF_K_LAT || r->m.kind >= PERF_K_BARRIER
	    ? DURATION_MAX_STAMPS
	    : PERF_MAX_ITERS;
}

// With --duration: whether a warm-up phase of `warm` iterations that took
// `ns` was long enough to size the timed phase from; if not, *next is the
// next one's count, aimed at the tenth of the duration.
static bool warm_enough(
    const run *r, uint64_t warm, int64_t ns, uint64_t *next)
{
	double target = (double)r->o->duration_ms * 1e5;
	uint64_t max = count_max(r) / 10;
	if ((double)ns >= target / 2 || warm >= max)
		return true;
	double want = ns > 0 ? (double)warm * target / (double)ns : 0;
	*next = want >= (double)max
	    ? max
	    : clamp((uint64_t)want, 2 * warm, 64 * warm);
	return false;
}

static uint64_t timed_count(const run *r)
{
	if (r->o->iters > 0)
		return r->o->iters;
	return default_count(&r->m);
}

// With --duration: the count that fills it at the pace of the fastest
// warm-up phase (a slower one was preempted, or waited for its peer to
// start).
static uint64_t duration_count(const run *r)
{
	uint64_t max = count_max(r);
	if (!(r->best_ns > 0))
		return 1;
	double want = (double)r->o->duration_ms * 1e6 / r->best_ns;
	return want >= (double)max ? max : clamp((uint64_t)want, 1, max);
}

// After a warm-up phase of `warm` iterations that took `ns`: the count of
// the next warm-up phase, or 0 when the timed phase comes next (*count is
// then its count).
static uint64_t next_warm(run *r, uint64_t warm, int64_t ns, uint64_t *count)
{
	uint64_t next = 0;
	if (r->o->duration_ms == 0)
		return 0;
	double per = (double)ns / (double)warm;
	if (ns > 0 && (r->best_ns == 0 || per < r->best_ns))
		r->best_ns = per;
	if (!warm_enough(r, warm, ns, &next))
		return next;
	*count = duration_count(r);
	return 0;
}

// ---------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------

static void hdr_make(
    unsigned char *h, const perf_meas *m, uint64_t count, bool timed)
{
	cli_put64(h, HDR_MAGIC | (uint64_t)m->kind << 32);
	cli_put64(h + 8, m->size);
	cli_put64(h + 16, count);
	cli_put64(h + 24, m->parties);
	cli_put64(h + 32, timed);
}

// The count of a header that must announce measurement m, and whether it
// opens the timed phase; or -1.
static int hdr_read(
    run *r, const unsigned char *h, size_t len, uint64_t *n, bool *timed)
{
	uint64_t w = len == HDR_LEN ? cli_get64(h) : 0;
	if (len != HDR_LEN || (w & 0xffffffffu) != HDR_MAGIC
	    || (w >> 32) != (uint64_t)r->m.kind
	    || cli_get64(h + 8) != r->m.size
	    || cli_get64(h + 24) != r->m.parties)
		return failf(r,
		    "the other end runs another plan (a header of %zu "
		    "bytes for test %llu, size %llu)",
		    len, (unsigned long long)(w >> 32),
		    (unsigned long long)(len >= 16 ? cli_get64(h + 8) : 0));
	*n = cli_get64(h + 16);
	*timed = cli_get64(h + 32) != 0;
	if (*n > PERF_MAX_ITERS)
		return failf(r, "the other end asks for %llu iterations",
		    (unsigned long long)*n);
	return 0;
}

// ---------------------------------------------------------------------------
// Two-party tests
// ---------------------------------------------------------------------------

static int send_hdr(run *r, uint64_t count, bool timed)
{
	unsigned char h[HDR_LEN];
	hdr_make(h, &r->m, count, timed);
	return io_check(r, "send", r->ep->ops->send(r->ep, h, HDR_LEN, false));
}

static int recv_hdr(run *r, uint64_t *count, bool *timed)
{
	unsigned char h[HDR_LEN];
	size_t n = 0;
	if (io_check(r, "recv", r->ep->ops->recv(r->ep, h, sizeof(h), &n)))
		return -1;
	return hdr_read(r, h, n, count, timed);
}

static int send_ack(run *r)
{
	static const unsigned char ack[ACK_LEN] = "ack";
	return io_check(
	    r, "send", r->ep->ops->send(r->ep, ack, ACK_LEN, false));
}

static int recv_ack(run *r)
{
	unsigned char ack[ACK_LEN];
	size_t n = 0;
	if (io_check(r, "recv", r->ep->ops->recv(r->ep, ack, sizeof(ack), &n)))
		return -1;
	if (n != ACK_LEN || memcmp(ack, "ack", 4) != 0)
		return failf(r, "a wrong acknowledgement (%zu bytes)", n);
	return 0;
}

// Whether the message i (0-based) of a phase of `count` ends a window.
static bool window_end(const run *r, uint64_t i, uint64_t count)
{
	uint64_t w = r->m.kind == PERF_K_RATE ? r->o->window : 0;
	return i + 1 == count || (w > 0 && (i + 1) % w == 0);
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

static void lat_figures(perf_row *row, int64_t *rtt, uint64_t n)
{
	qsort(rtt, (size_t)n, sizeof(*rtt), cmp_i64);
	double med = n % 2 ? (double)rtt[n / 2]
	                   : 0.5 * (double)(rtt[n / 2 - 1] + rtt[n / 2]);
	uint64_t k = (99 * n + 99) / 100; // the nearest rank, ceil(0.99 n)
	row->median_us = med / 2 / 1e3;
	row->p99_us = (double)rtt[k - 1] / 2 / 1e3;
	row->max_us = (double)rtt[n - 1] / 2 / 1e3;
}

// One phase of the leader: `count` iterations from iteration `it0`; the
// timed phase when `timed`.  Round trips go to rtt (lat, when not NULL),
// *ns gets the phase's time.
static int lead_phase(run *r, unsigned char *tx, unsigned char *rx,
    uint64_t it0, uint64_t count, bool timed, int64_t *rtt, int64_t *ns)
{
	perf_ep *e = r->ep;
	size_t size = (size_t)r->m.size, n = 0;
	bool stream = r->m.kind == PERF_K_RATE;
	if (send_hdr(r, count, timed))
		return -1;
	int64_t t0 = now_ns();
	for (uint64_t i = 0; i < count; i++) {
		fill_msg(r, tx, it0 + i, 0);
		if (r->m.kind != PERF_K_LAT) {
			if (io_check(
			        r, "send", e->ops->send(e, tx, size, stream))
			    || (window_end(r, i, count) && recv_ack(r)))
				return -1;
			continue;
		}
		int64_t a = now_ns();
		if (io_check(r, "send", e->ops->send(e, tx, size, false))
		    || io_check(r, "recv", e->ops->recv(e, rx, size, &n)))
			return -1;
		if (rtt != NULL)
			rtt[i] = now_ns() - a;
		if (check_msg(r, rx, n, it0 + i, 0, MSG_ECHO))
			return -1;
	}
	*ns = now_ns() - t0;
	return 0;
}

// One phase of the follower, from iteration `it0`; *count_p is the number
// of iterations its header announced, *timed whether it was the last.
static int follow_phase(
    run *r, unsigned char *buf, uint64_t it0, uint64_t *count_p, bool *timed)
{
	perf_ep *e = r->ep;
	size_t size = (size_t)r->m.size, n = 0;
	uint64_t count;
	if (recv_hdr(r, &count, timed))
		return -1;
	*count_p = count;
	for (uint64_t i = 0; i < count; i++) {
		if (io_check(r, "recv", e->ops->recv(e, buf, size, &n))
		    || check_msg(r, buf, n, it0 + i, 0, MSG_DATA))
			return -1;
		if (r->m.kind == PERF_K_LAT) {
			if (io_check(
			        r, "send", e->ops->send(e, buf, n, false)))
				return -1;
		} else if (window_end(r, i, count) && send_ack(r)) {
			return -1;
		}
	}
	return 0;
}

static int lead_meas(run *r, unsigned char *tx, unsigned char *rx)
{
	perf_row row = { .transport = r->transport,
		.kind = r->m.kind,
		.size = r->m.size,
		.parties = 2 };
	row.median_us = row.p99_us = row.max_us = row.gbps = row.mmsgs
	    = row.op_us = NAN;
	uint64_t count = timed_count(r), warm = warm_count(r, count), it = 0;
	int64_t ns = 0;
	r->best_ns = 0;
	// Without --validate the bytes never change: one fill touches the
	// pages and gives them a pattern.
	pat_fill(tx, (size_t)r->m.size, pat_seed(r->m.size, 0, 0));
	while (warm > 0) {
		if (lead_phase(r, tx, rx, it, warm, false, NULL, &ns))
			return -1;
		it += warm;
		warm = next_warm(r, warm, ns, &count);
	}
	int64_t *rtt = NULL;
	if (r->m.kind == PERF_K_LAT
	    && (rtt = malloc((size_t)count * sizeof(*rtt))) == NULL)
		return failf(r, "out of memory for %llu time stamps",
		    (unsigned long long)count);
	int rv = lead_phase(r, tx, rx, it, count, true, rtt, &ns);
	if (rv == 0) {
		row.iters = count;
		double secs = (double)(ns > 0 ? ns : 1);
		if (r->m.kind == PERF_K_LAT)
			lat_figures(&row, rtt, count);
		else if (r->m.kind == PERF_K_BW)
			row.gbps = (double)count * (double)r->m.size / secs;
		else
			row.mmsgs = (double)count / secs * 1e3;
		r->sink->row(r->sink->ctx, &row);
	}
	free(rtt);
	return rv;
}

int perf_pair_run(perf_ep *ep, bool lead, const perf_opts *o, int transport,
    const perf_sink *sink, char *err, size_t cap)
{
	perf_meas list[3 * PERF_MAX_SIZES];
	size_t nm = perf_pair_list(o, list, sizeof(list) / sizeof(list[0]));
	run r = { .o = o,
		.transport = transport,
		.sink = sink,
		.err = err,
		.cap = cap,
		.ep = ep,
		.corrupt = corrupt_armed() };
	int rv = 0;
	for (size_t k = 0; k < nm && rv == 0; k++) {
		r.m = list[k];
		perf_label(r.label, sizeof(r.label), transport, &r.m);
		unsigned char *a = xmalloc(r.m.size), *b = xmalloc(r.m.size);
		if (a == NULL || b == NULL) {
			rv = failf(&r, "out of memory");
		} else if (lead) {
			sink->start(sink->ctx, transport, &r.m);
			rv = lead_meas(&r, a, b);
		} else {
			// Each phase numbers its messages after those of
			// the phases before, as the leader does.
			uint64_t it = 0, count = 0;
			bool timed = false;
			while (rv == 0 && !timed) {
				rv = follow_phase(&r, a, it, &count, &timed);
				it += count;
			}
		}
		free(a);
		free(b);
	}
	if (rv != 0) {
		sink->fail(sink->ctx, err);
		if (!r.remote)
			ep->ops->report(ep, err);
	}
	return rv;
}

// ---------------------------------------------------------------------------
// Collectives
// ---------------------------------------------------------------------------

#define TAG_CTL "perf.ctl"
#define TAG_OP "perf.op"
#define TAG_TIME "perf.time"

// A failed collective: the first report a peer left explains it better
// than the status, which may be a consequence of that peer's failure.
static int coll_check(run *r, const char *call, int st)
{
	if (st == TW_OK)
		return 0;
	tw_link *l = r->link;
	for (size_t i = 0; i < tw_link_size(l); i++) {
		size_t len;
		tw_buf b = { 0 };
		if (i == tw_link_rank(l)
		    || tw_probe(l, i, PERF_TAG_FAIL, &len) != TW_OK
		    || tw_recv(l, i, PERF_TAG_FAIL, &b) != TW_OK)
			continue;
		r->remote = true;
		snprintf(r->err, r->cap, "rank %zu failed: %.*s", i,
		    (int)(b.len < PERF_MSG_MAX ? b.len : PERF_MSG_MAX),
		    b.data != NULL ? (const char *)b.data : "");
		tw_buf_free(&b);
		return -1;
	}
	char msg[PERF_MSG_MAX];
	perf_status_msg(msg, sizeof(msg), call, st);
	return failf(r, "%s", msg);
}

// One broadcast from rank 0 (iteration `it`): the others check what came.
static int bcast_op(run *r, uint64_t it, unsigned char *mine)
{
	tw_link *l = r->link;
	size_t size = (size_t)r->m.size;
	bool root = tw_link_rank(l) == 0;
	tw_buf io = { 0 };
	if (root) {
		if (r->o->validate)
			pat_fill(mine, size, pat_seed(size, it, 0));
		maybe_corrupt(r->corrupt, mine, size);
		io = (tw_buf) { mine, size };
	}
	if (coll_check(r, "tw_broadcast", tw_broadcast(l, 0, TAG_OP, &io)))
		return -1;
	if (root)
		return 0;
	int rv = check_msg(r, io.data, io.len, it, 0, MSG_BCAST);
	tw_buf_free(&io);
	return rv;
}

// One phase: rank 0 announces *count and *timed (the others learn them),
// then every party runs it from iteration it0; *ns is this party's time.
static int coll_phase(run *r, uint64_t it0, uint64_t *count, bool *timed,
    unsigned char *mine, tw_buf *out, int64_t *ns)
{
	tw_link *l = r->link;
	size_t rank = tw_link_rank(l), n = tw_link_size(l);
	size_t size = (size_t)r->m.size;
	unsigned char h[HDR_LEN];
	tw_buf io = { 0 };
	if (rank == 0) {
		hdr_make(h, &r->m, *count, *timed);
		io = (tw_buf) { h, HDR_LEN };
	}
	if (coll_check(r, "tw_broadcast", tw_broadcast(l, 0, TAG_CTL, &io)))
		return -1;
	if (rank != 0) {
		int rv = hdr_read(r, io.data, io.len, count, timed);
		tw_buf_free(&io);
		if (rv)
			return -1;
	}
	int64_t t0 = now_ns();
	for (uint64_t i = 0; i < *count; i++) {
		if (r->m.kind == PERF_K_BARRIER) {
			if (coll_check(r, "tw_barrier", tw_barrier(l, TAG_OP)))
				return -1;
			continue;
		}
		if (r->m.kind == PERF_K_BCAST) {
			if (bcast_op(r, it0 + i, mine))
				return -1;
			continue;
		}
		if (r->o->validate)
			pat_fill(mine, size, pat_seed(size, it0 + i, rank));
		if (rank == 0)
			maybe_corrupt(r->corrupt, mine, size);
		if (coll_check(r, "tw_allgather",
		        tw_allgather(l, TAG_OP, mine, size, out)))
			return -1;
		int rv = 0;
		for (size_t k = 0; k < n && rv == 0; k++)
			rv = check_msg(
			    r, out[k].data, out[k].len, it0 + i, k, MSG_BLOCK);
		for (size_t k = 0; k < n; k++)
			tw_buf_free(&out[k]);
		if (rv)
			return -1;
	}
	*ns = now_ns() - t0;
	return 0;
}

// Rank 0's figure: the mean over the parties of their time per operation.
static int coll_report(run *r, uint64_t count, int64_t ns, tw_buf *out)
{
	tw_link *l = r->link;
	size_t n = tw_link_size(l);
	unsigned char t[8];
	cli_put64(t, (uint64_t)ns);
	bool root = tw_link_rank(l) == 0;
	if (coll_check(r, "tw_gather",
	        tw_gather(l, 0, TAG_TIME, t, sizeof(t), root ? out : NULL)))
		return -1;
	if (!root)
		return 0;
	double sum = 0;
	int rv = 0;
	for (size_t k = 0; k < n; k++) {
		if (out[k].len != 8)
			rv = failf(r, "rank %zu sent a time of %zu bytes", k,
			    out[k].len);
		else
			sum += (double)cli_get64(out[k].data);
		tw_buf_free(&out[k]);
	}
	if (rv)
		return -1;
	perf_row row = { .transport = r->transport,
		.kind = r->m.kind,
		.size = r->m.size,
		.iters = count,
		.parties = (uint32_t)n };
	row.median_us = row.p99_us = row.max_us = row.gbps = row.mmsgs = NAN;
	row.op_us = count > 0 ? sum / (double)n / (double)count / 1e3 : NAN;
	r->sink->row(r->sink->ctx, &row);
	return 0;
}

static int coll_meas(run *r, unsigned char *mine, tw_buf *out)
{
	bool root = tw_link_rank(r->link) == 0;
	uint64_t count = root ? timed_count(r) : 0;
	r->best_ns = 0;
	uint64_t warm = root ? warm_count(r, count) : 0, it = 0, c = 0;
	bool timed = false;
	int64_t ns = 0;
	pat_fill(mine, (size_t)r->m.size,
	    pat_seed(r->m.size, 0, tw_link_rank(r->link)));
	// Rank 0 decides each phase as the leader of a two-party test does;
	// the others learn from its headers.
	do {
		if (root) {
			timed = warm == 0;
			c = timed ? count : warm;
		}
		if (coll_phase(r, it, &c, &timed, mine, out, &ns))
			return -1;
		it += c;
		if (root && !timed)
			warm = next_warm(r, warm, ns, &count);
	} while (!timed);
	return coll_report(r, c, ns, out);
}

int perf_coll_run(tw_link *l, const perf_opts *o, int transport,
    const perf_sink *sink, char *err, size_t cap)
{
	size_t n = tw_link_size(l), rank = tw_link_rank(l);
	perf_meas list[1 + 2 * PERF_MAX_SIZES];
	size_t nm = perf_coll_list(o, n, list, sizeof(list) / sizeof(list[0]));
	run r = { .o = o,
		.transport = transport,
		.sink = sink,
		.err = err,
		.cap = cap,
		.link = l,
		.corrupt = corrupt_armed() };
	int rv = 0;
	for (size_t k = 0; k < nm && rv == 0; k++) {
		r.m = list[k];
		perf_label(r.label, sizeof(r.label), transport, &r.m);
		unsigned char *mine = xmalloc(r.m.size);
		tw_buf *out = calloc(n, sizeof(*out));
		if (mine == NULL || out == NULL) {
			rv = failf(&r, "out of memory");
		} else {
			if (rank == 0)
				sink->start(sink->ctx, transport, &r.m);
			rv = coll_meas(&r, mine, out);
		}
		free(mine);
		free(out);
	}
	if (rv != 0) {
		sink->fail(sink->ctx, err);
		// The caller closes the link next, which delivers these
		// first; the peers then see TW_EPEER and find the report.
		for (size_t i = 0; i < n && !r.remote; i++)
			if (i != rank)
				(void)tw_send(
				    l, i, PERF_TAG_FAIL, err, strlen(err));
	}
	return rv;
}
