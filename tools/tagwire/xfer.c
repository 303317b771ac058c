// tagwire xfer: the transfer test.  A server engine ("xfer-server")
// listens on tcp://, registers a buffer for each client and hands it the
// buffer's descriptor; the client, which needs nothing but HOST:PORT,
// moves data to and from it with the transfer engine (tagwire/engine.h)
// and both ends print what they did, step by step.
//
// The conversation is notifications (tw_engine_notify, tw_xfer_notify),
// short text lines but for the descriptor:
//   client -> server  "params op=write size=N batch=B iters=I validate=V
//                      stripes=S window=W chunk=C"
//   server -> client  "desc " + the tw_mem_pack blob, or "error TEXT"
//   write:  client -> server "iter K done" (with the transfer, so that it
//           arrives after the data); with --validate the server checks
//           and answers "check K ok" or "check K bad TEXT"
//   read:   with --validate, client -> server "fill K", the server fills
//           its buffer with the pattern of iteration K and answers
//           "ready K"; the client checks what it read
//   send:   the server posts one receive per post (tag = post index) for
//           each iteration; with --validate it answers "check K ..."
//   client -> server  "done", or "abort TEXT" after a failure
//   server -> client  "bye ok", or "bye fail TEXT"
// Every wait is bounded by --timeout-ms, and a peer that goes away ends
// the wait at once.
//
// The pattern of iteration k at buffer offset o is byte o%8 of
// cli_mix64(k * CLI_GOLDEN + o/8 + 1): every iteration and every offset
// differs, so that a stale, shifted or misplaced slice shows.

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <tagwire/engine.h>
#include <tagwire/tagwire.h>

#include "cli.h"
#include "engine/wire.h"

#define SERVER_NAME "xfer-server"
#define DEFAULT_BIND "tcp://127.0.0.1:0"
#define DEFAULT_SIZE ((uint64_t)1 << 20)
#define DEFAULT_TIMEOUT_MS 30000
#define MAX_SIZE ((uint64_t)1 << 30)
#define MAX_TOTAL ((uint64_t)2 << 30)
#define MAX_BATCH 4096
#define MAX_ITERS 1000000
#define MAX_TIMEOUT_MS 86400000
// Iterations up to this many get a line each.
#define ITER_LINES 4
#define SLICE_MS 200

enum { OP_WRITE, OP_READ, OP_SEND };
static const char *const op_name[] = { "write", "read", "send" };
static const char *const op_plural[] = { "writes", "reads", "sends" };

typedef struct xopts {
	bool server, forever, validate;
	const char *bind, *target;
	int op;
	uint64_t size, batch, iters, stripes, window, chunk, timeout_ms;
} xopts;

static bool debug_on(void)
{
	const char *d = getenv("TAGWIRE_DEBUG");
	return d != NULL && *d != '\0' && strcmp(d, "0") != 0;
}

static const char *side = "client";

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	printf("%s: ", side);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
	va_list ap;
	fflush(stdout);
	va_start(ap, fmt);
	fprintf(stderr, "tagwire xfer: %s: ", side);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
}

static const char *st_text(int st, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s (%s)", tw_err_name(st), tw_strerror(st));
	return buf;
}

#define STX(st) st_text((st), (char[160]) { 0 }, 160)

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void hex(const char *what, const void *p, size_t n)
{
	const unsigned char *b = p;
	printf("%s: %s (%zu bytes):", side, what, n);
	for (size_t i = 0; i < n; i++)
		printf("%s%02x", i % 32 == 0 && i > 0 ? "\n    " : " ", b[i]);
	putchar('\n');
	fflush(stdout);
}

// ---------------------------------------------------------------------------
// The pattern
// ---------------------------------------------------------------------------

static uint64_t pattern_word(uint64_t iter, uint64_t word)
{
	return cli_mix64(iter * CLI_GOLDEN + word + 1);
}

void cli_xfer_fill(void *buf, size_t off, size_t len, uint64_t iter)
{
	unsigned char *b = buf;
	size_t o = off, end = off + len;
	while (o < end) {
		uint64_t w = pattern_word(iter, o / 8);
		size_t k = o % 8;
		if (k == 0 && end - o >= 8) {
			cli_put64(b + o, w);
			o += 8;
			continue;
		}
		b[o] = (unsigned char)(w >> (8 * k));
		o++;
	}
}

int cli_xfer_check(const void *buf, size_t off, size_t len, uint64_t iter,
    size_t *bad, unsigned *want, unsigned *got)
{
	const unsigned char *b = buf;
	size_t o = off, end = off + len;
	while (o < end) {
		uint64_t w = pattern_word(iter, o / 8);
		size_t k = o % 8;
		if (k == 0 && end - o >= 8 && cli_get64(b + o) == w) {
			o += 8;
			continue;
		}
		unsigned char e = (unsigned char)(w >> (8 * k));
		if (b[o] != e) {
			*bad = o;
			*want = e;
			*got = b[o];
			return -1;
		}
		o++;
	}
	return 0;
}

// Checks iteration k's pattern over the whole buffer; the mismatch line
// into why[cap] when it fails.
static int check_all(
    const xopts *o, const void *buf, uint64_t k, char *why, size_t cap)
{
	size_t bad;
	unsigned want, got;
	if (cli_xfer_check(buf, 0, o->size * o->batch, k, &bad, &want, &got)
	    == 0)
		return 0;
	snprintf(why, cap,
	    "data validation FAILED: iteration %" PRIu64 ", first bad offset "
	    "%zu (post %" PRIu64 ", byte %" PRIu64 " of it): expected 0x%02x, "
	    "got 0x%02x",
	    k, bad, (uint64_t)bad / o->size, (uint64_t)bad % o->size, want,
	    got);
	return -1;
}

// A value no iteration uses, for the bytes before a transfer lands.
static uint64_t poison(uint64_t k)
{
	return ~k;
}

static void probe(const void *buf, size_t n)
{
	if (debug_on())
		hex("probe, the first bytes received", buf, n < 16 ? n : 16);
}

// ---------------------------------------------------------------------------
// Notifications
// ---------------------------------------------------------------------------

typedef struct msg {
	char *text; // NUL terminated copy
	size_t len;
} msg;

static void msg_free(msg *m)
{
	free(m->text);
	m->text = NULL;
	m->len = 0;
}

static bool msg_is(const msg *m, const char *prefix)
{
	return strncmp(m->text, prefix, strlen(prefix)) == 0;
}

static int send_text(tw_engine *e, tw_peer peer, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int send_text(tw_engine *e, tw_peer peer, const char *fmt, ...)
{
	char buf[600];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return TW_EINVAL;
	size_t len = (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1;
	return tw_engine_notify(e, peer, buf, len);
}

// The next notification from `want` (any peer when 0; *from says which),
// waiting up to timeout_ms.  Messages from other peers are answered "error
// busy" and dropped.  TW_OK, TW_ETIMEDOUT, TW_EPEER (the peer is gone).
static int recv_msg(
    tw_engine *e, tw_peer want, tw_peer *from, msg *m, int64_t timeout_ms)
{
	int64_t deadline
	    = timeout_ms < 0 ? -1 : now_ns() + timeout_ms * 1000000;
	for (;;) {
		int64_t slice = SLICE_MS;
		if (deadline >= 0) {
			int64_t left = (deadline - now_ns()) / 1000000;
			if (left <= 0)
				return TW_ETIMEDOUT;
			slice = left < slice ? left : slice;
		}
		tw_peer p = 0;
		tw_buf b = { 0 };
		int st = tw_notify_recv(e, &p, &b, slice);
		if (st == TW_OK) {
			if (b.len == 0) { // a liveness probe
				tw_buf_free(&b);
				continue;
			}
			if (want != 0 && p != want) {
				send_text(e, p,
				    "error busy with another "
				    "client; try again later");
				tw_buf_free(&b);
				continue;
			}
			m->text = malloc(b.len + 1);
			if (m->text == NULL) {
				tw_buf_free(&b);
				return TW_ENOMEM;
			}
			if (b.len > 0)
				memcpy(m->text, b.data, b.len);
			m->text[b.len] = '\0';
			m->len = b.len;
			tw_buf_free(&b);
			if (from != NULL)
				*from = p;
			return TW_OK;
		}
		if (st != TW_ETIMEDOUT)
			return st;
		// A peer that went away stays known, failed: an empty
		// notification (which the other end drops) finds out.
		if (want != 0
		    && (tw_engine_peer_name(e, want) == NULL
		        || tw_engine_notify(e, want, NULL, 0) == TW_EPEER))
			return TW_EPEER;
	}
}

// ---------------------------------------------------------------------------
// Common pieces
// ---------------------------------------------------------------------------

static int engine_open(const xopts *o, const char *name, tw_engine **out)
{
	tw_engine *e = NULL;
	int st = tw_engine_new(name, &e);
	if (st == TW_OK)
		st = tw_engine_set(e, TW_OPT_STRIPES, (int64_t)o->stripes);
	if (st == TW_OK)
		st = tw_engine_set(e, TW_OPT_WINDOW, (int64_t)o->window);
	if (st == TW_OK)
		st = tw_engine_set(e, TW_OPT_CHUNK_SIZE, (int64_t)o->chunk);
	if (st == TW_OK)
		st = tw_engine_set(
		    e, TW_OPT_CONNECT_TIMEOUT_MS, (int64_t)o->timeout_ms);
	if (st != TW_OK) {
		fail("cannot make the engine: %s", STX(st));
		tw_engine_free(e);
		return -1;
	}
	*out = e;
	return 0;
}

static void fmt_rate(char *buf, size_t cap, uint64_t bytes, int64_t ns)
{
	char b[32];
	cli_fmt_bytes(b, sizeof(b), bytes);
	double s = (double)(ns > 0 ? ns : 1) / 1e9;
	snprintf(buf, cap, "%s (%" PRIu64 " bytes) in %.3f ms, %.3f GB/s", b,
	    bytes, s * 1e3, (double)bytes / s / 1e9);
}

static void params_text(const xopts *o, char *buf, size_t cap)
{
	snprintf(buf, cap,
	    "op=%s size=%" PRIu64 " batch=%" PRIu64 " iters=%" PRIu64
	    " validate=%d stripes=%" PRIu64 " window=%" PRIu64
	    " chunk=%" PRIu64,
	    op_name[o->op], o->size, o->batch, o->iters, o->validate ? 1 : 0,
	    o->stripes, o->window, o->chunk);
}

// Parses a client's parameters into *c (engine options of the server
// kept); NULL, or what is wrong.
static const char *params_parse(const char *s, const xopts *srv, xopts *c)
{
	char op[16];
	unsigned long long size, batch, iters, stripes, window, chunk;
	int validate, used = 0;
	if (sscanf(s,
	        "params op=%15s size=%llu batch=%llu iters=%llu validate=%d "
	        "stripes=%llu window=%llu chunk=%llu%n",
	        op, &size, &batch, &iters, &validate, &stripes, &window,
	        &chunk, &used)
	        != 8
	    || s[used] != '\0')
		return "malformed parameters";
	*c = *srv;
	c->op = -1;
	for (int k = 0; k < 3; k++)
		if (strcmp(op, op_name[k]) == 0)
			c->op = k;
	if (c->op < 0)
		return "unknown op";
	if (size < 1 || size > MAX_SIZE || batch < 1 || batch > MAX_BATCH
	    || size * batch > MAX_TOTAL)
		return "size or batch out of range";
	if (iters < 1 || iters > MAX_ITERS || (validate != 0 && validate != 1))
		return "iters or validate out of range";
	if (stripes != srv->stripes || window != srv->window
	    || chunk != srv->chunk)
		return "its --stripes, --window and --chunk differ from the "
		       "server's; give both ends the same";
	c->size = size;
	c->batch = batch;
	c->iters = iters;
	c->validate = validate == 1;
	return NULL;
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

typedef struct session {
	tw_engine *e;
	tw_peer peer;
	const char *name;
	xopts c; // the client's parameters
	unsigned char *buf;
	uint64_t mid;
	bool registered;
	bool failed;
	char why[400];
} session;

// Records the first failure, says it, and tells the client.
static void sfail(session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void sfail(session *s, const char *fmt, ...)
{
	if (s->failed)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->why, sizeof(s->why), fmt, ap);
	va_end(ap);
	s->failed = true;
	fail("%s", s->why);
}

static int srecv(session *s, msg *m, const char *waiting_for)
{
	int st = recv_msg(s->e, s->peer, NULL, m, (int64_t)s->c.timeout_ms);
	if (st == TW_OK && msg_is(m, "abort")) {
		sfail(s, "the client gave up: %s",
		    m->len > 6 ? m->text + 6 : "(no reason)");
		msg_free(m);
		return -1;
	}
	if (st != TW_OK) {
		sfail(s, "no %s from the client: %s", waiting_for, STX(st));
		return -1;
	}
	return 0;
}

// The write loop: the client's "iter K done" arrive after their data.
static int serve_write(session *s, uint64_t *iters_seen)
{
	const xopts *c = &s->c;
	for (;;) {
		msg m = { 0 };
		if (srecv(s, &m, "notification") != 0)
			return -1;
		if (strcmp(m.text, "done") == 0) {
			msg_free(&m);
			return 0;
		}
		unsigned long long k;
		int used = 0;
		if (sscanf(m.text, "iter %llu done%n", &k, &used) != 1
		    || m.text[used] != '\0' || k >= c->iters) {
			sfail(s, "unexpected notification '%.64s'", m.text);
			msg_free(&m);
			return -1;
		}
		msg_free(&m);
		(*iters_seen)++;
		if (k < ITER_LINES || debug_on())
			say("iteration %llu: the client's %" PRIu64 " %s of "
			    "%" PRIu64 " bytes arrived",
			    k, c->batch, c->batch == 1 ? "write" : "writes",
			    c->size);
		if (k == 0)
			probe(s->buf, c->size * c->batch);
		if (!c->validate)
			continue;
		char why[300];
		if (check_all(c, s->buf, k, why, sizeof(why)) != 0) {
			say("iteration %llu: %s", k, why);
			sfail(s, "%s", why);
			send_text(s->e, s->peer, "check %llu bad %s", k, why);
			return -1;
		}
		if (k < ITER_LINES)
			say("iteration %llu: data validation passed", k);
		cli_xfer_fill(s->buf, 0, c->size * c->batch, poison(k + 1));
		int st = send_text(s->e, s->peer, "check %llu ok", k);
		if (st != TW_OK) {
			sfail(s, "tw_engine_notify: %s", STX(st));
			return -1;
		}
	}
}

static int serve_read(session *s, uint64_t *iters_seen)
{
	const xopts *c = &s->c;
	// Without --validate the pattern of iteration 0 stays put.
	cli_xfer_fill(s->buf, 0, c->size * c->batch, 0);
	for (;;) {
		msg m = { 0 };
		if (srecv(s, &m, "notification") != 0)
			return -1;
		if (strcmp(m.text, "done") == 0) {
			msg_free(&m);
			return 0;
		}
		unsigned long long k;
		int used = 0;
		if (!c->validate
		    || sscanf(m.text, "fill %llu%n", &k, &used) != 1
		    || m.text[used] != '\0' || k >= c->iters) {
			sfail(s, "unexpected notification '%.64s'", m.text);
			msg_free(&m);
			return -1;
		}
		msg_free(&m);
		(*iters_seen)++;
		cli_xfer_fill(s->buf, 0, c->size * c->batch, k);
		if (k < ITER_LINES)
			say("iteration %llu: buffer filled with the pattern "
			    "of "
			    "iteration %llu for the client to read",
			    k, k);
		int st = send_text(s->e, s->peer, "ready %llu ok", k);
		if (st != TW_OK) {
			sfail(s, "tw_engine_notify: %s", STX(st));
			return -1;
		}
	}
}

static int serve_send(session *s, uint64_t *iters_seen)
{
	const xopts *c = &s->c;
	for (uint64_t k = 0; k < c->iters; k++) {
		if (c->validate)
			cli_xfer_fill(
			    s->buf, 0, c->size * c->batch, poison(k));
		tw_xfer *x = NULL;
		int st = tw_xfer_create(
		    s->e, s->peer, (int64_t)c->timeout_ms, &x);
		for (uint64_t i = 0; st == TW_OK && i < c->batch; i++)
			st = tw_xfer_post_recv(
			    x, s->mid, i * c->size, c->size, i);
		if (st != TW_OK) {
			sfail(s, "iteration %" PRIu64 ": posting receives: %s",
			    k, STX(st));
			tw_xfer_free(x);
			return -1;
		}
		if (k < ITER_LINES)
			say("iteration %" PRIu64 ": posted %" PRIu64
			    " %s of %" PRIu64 " bytes (tags 0..%" PRIu64 ")",
			    k, c->batch,
			    c->batch == 1 ? "receive" : "receives", c->size,
			    c->batch - 1);
		st = tw_xfer_wait(x, -1);
		tw_xfer_free(x);
		if (st != TW_OK) {
			sfail(s, "iteration %" PRIu64 ": receiving: %s", k,
			    STX(st));
			return -1;
		}
		(*iters_seen)++;
		if (k < ITER_LINES)
			say("iteration %" PRIu64 ": %" PRIu64 " %s completed",
			    k, c->batch,
			    c->batch == 1 ? "receive" : "receives");
		if (k == 0)
			probe(s->buf, c->size * c->batch);
		if (!c->validate)
			continue;
		char why[300];
		if (check_all(c, s->buf, k, why, sizeof(why)) != 0) {
			say("iteration %" PRIu64 ": %s", k, why);
			sfail(s, "%s", why);
			send_text(
			    s->e, s->peer, "check %" PRIu64 " bad %s", k, why);
			return -1;
		}
		if (k < ITER_LINES)
			say("iteration %" PRIu64 ": data validation passed",
			    k);
		st = send_text(s->e, s->peer, "check %" PRIu64 " ok", k);
		if (st != TW_OK) {
			sfail(s, "tw_engine_notify: %s", STX(st));
			return -1;
		}
	}
	msg m = { 0 };
	if (srecv(s, &m, "\"done\"") != 0)
		return -1;
	bool done = strcmp(m.text, "done") == 0;
	if (!done)
		sfail(s, "unexpected notification '%.64s'", m.text);
	msg_free(&m);
	return done ? 0 : -1;
}

// Serves the client whose first notification is `first`; 0 when all
// went well.
static int serve(tw_engine *e, tw_peer peer, const xopts *srv, msg *first)
{
	session s;
	memset(&s, 0, sizeof(s));
	s.e = e;
	s.peer = peer;
	s.c = *srv;
	const char *nm = tw_engine_peer_name(e, peer);
	s.name = nm != NULL ? nm : "?";
	say("connection accepted from %s (peer %u)", s.name, (unsigned)peer);
	const char *bad = params_parse(first->text, srv, &s.c);
	if (bad != NULL) {
		sfail(&s, "refused the client's parameters '%.200s': %s",
		    first->text, bad);
		send_text(e, peer,
		    "error the server refused the parameters: "
		    "%s",
		    bad);
		goto out;
	}
	const xopts *c = &s.c;
	char ptext[300];
	params_text(c, ptext, sizeof(ptext));
	say("client asks for: %s", ptext);
	uint64_t total = c->size * c->batch;
	s.buf = malloc(total);
	if (s.buf == NULL) {
		sfail(&s, "cannot allocate %" PRIu64 " bytes", total);
		send_text(e, peer, "error the server is out of memory");
		goto out;
	}
	cli_xfer_fill(s.buf, 0, total, poison(0));
	int st = tw_mem_register(e, s.buf, total, TW_MEM_HOST,
	    TW_ACCESS_READ | TW_ACCESS_WRITE, &s.mid);
	if (st != TW_OK) {
		sfail(&s, "tw_mem_register: %s", STX(st));
		send_text(
		    e, peer, "error tw_mem_register: %s", tw_err_name(st));
		goto out;
	}
	s.registered = true;
	say("buffer registered: ptr=%p bytes=%" PRIu64, (void *)s.buf, total);
	tw_buf d = { 0 };
	st = tw_mem_pack(e, s.mid, &d);
	if (st == TW_OK) {
		unsigned char *m = malloc(5 + d.len);
		if (m == NULL) {
			st = TW_ENOMEM;
		} else {
			memcpy(m, "desc ", 5);
			memcpy(m + 5, d.data, d.len);
			st = tw_engine_notify(e, peer, m, 5 + d.len);
			free(m);
		}
	}
	if (st != TW_OK) {
		sfail(&s, "sending the memory descriptor: %s", STX(st));
		tw_buf_free(&d);
		goto out;
	}
	say("memory descriptor sent to the client (%zu bytes)", d.len);
	if (debug_on())
		hex("memory descriptor", d.data, d.len);
	tw_buf_free(&d);

	int64_t t0 = now_ns();
	uint64_t seen = 0;
	int rc = c->op == OP_WRITE ? serve_write(&s, &seen)
	    : c->op == OP_READ     ? serve_read(&s, &seen)
	                           : serve_send(&s, &seen);
	int64_t t1 = now_ns();
	tw_xfer_stats xs = { 0 };
	tw_engine_stats(e, peer, &xs);
	char rate[160];
	if (c->op == OP_READ) {
		fmt_rate(rate, sizeof(rate), xs.bytes_sent, t1 - t0);
		say("bytes read by the client: %s", rate);
	} else {
		fmt_rate(rate, sizeof(rate), xs.bytes_recv, t1 - t0);
		say("bytes received: %s", rate);
	}
	if (c->op == OP_SEND)
		say("receives: %" PRIu64 " posted, %" PRIu64 " completed",
		    c->iters * c->batch, seen * c->batch);
	else if (c->op == OP_WRITE)
		say("iterations reported by the client: %" PRIu64, seen);
	if (rc == 0 && c->validate && c->op != OP_READ)
		say("data validation passed (%" PRIu64 " iterations)", seen);
	else if (rc == 0 && c->validate)
		say("validation is the client's for read; it has "
		    "read %" PRIu64 " fills",
		    seen);
	if (rc == 0)
		send_text(e, peer, "bye ok");
	else
		send_text(e, peer, "bye fail %s", s.why);
	// The client hangs up once it has the goodbye: a disconnect here
	// could drop the goodbye still queued (see the report).
	msg m = { 0 };
	int64_t linger
	    = (int64_t)c->timeout_ms < 5000 ? (int64_t)c->timeout_ms : 5000;
	if (recv_msg(e, peer, NULL, &m, linger) == TW_OK)
		msg_free(&m);
out:
	if (s.registered) {
		st = tw_mem_deregister(e, s.mid);
		if (st != TW_OK)
			sfail(&s, "tw_mem_deregister: %s", STX(st));
	}
	tw_engine_disconnect(e, peer);
	free(s.buf);
	say("client %s %s", s.name, s.failed ? "FAILED" : "finished");
	return s.failed ? -1 : 0;
}

static int run_server(const xopts *o)
{
	side = "server";
	tw_engine *e;
	if (engine_open(o, SERVER_NAME, &e) != 0)
		return CLI_FAILED;
	int st = tw_engine_listen(e, o->bind);
	if (st != TW_OK) {
		fail("cannot listen on %s: %s", o->bind, STX(st));
		tw_engine_free(e);
		return CLI_FAILED;
	}
	tw_buf info = { 0 };
	tw__eng_info in;
	st = tw_engine_info(e, &info);
	if (st == TW_OK)
		st = tw__eng_info_decode(info.data, info.len, &in);
	if (st != TW_OK) {
		fail("tw_engine_info: %s", STX(st));
		tw_buf_free(&info);
		tw_engine_free(e);
		return CLI_FAILED;
	}
	say("listening on %s (engine %s)", in.addr, in.name);
	if (debug_on())
		hex("engine info", info.data, info.len);
	tw_buf_free(&info);
	int rc = CLI_OK;
	for (;;) {
		say("waiting for a client");
		msg m = { 0 };
		tw_peer peer = 0;
		// The first notification names the client: a peer whose
		// first words are not its parameters is refused.
		st = recv_msg(e, 0, &peer, &m, -1);
		if (st != TW_OK) {
			fail("waiting for a client: %s", STX(st));
			rc = CLI_FAILED;
			break;
		}
		if (!msg_is(&m, "params ")) {
			say("ignored a notification from peer %u that is not "
			    "a client's parameters",
			    (unsigned)peer);
			send_text(e, peer, "error send parameters first");
			msg_free(&m);
			continue;
		}
		if (serve(e, peer, o, &m) != 0)
			rc = CLI_FAILED;
		msg_free(&m);
		if (!o->forever)
			break;
	}
	tw_engine_free(e);
	return rc;
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

typedef struct client {
	const xopts *o;
	tw_engine *e;
	tw_peer peer;
	unsigned char *buf;
	uint64_t lid, rid;
	int64_t busy_ns; // first post to completion, summed
	uint64_t posts, done;
} client;

// Waits for the server's answer to iteration k ("check"/"ready").
static int await(client *c, const char *word, uint64_t k)
{
	msg m = { 0 };
	int st = recv_msg(c->e, c->peer, NULL, &m, (int64_t)c->o->timeout_ms);
	if (st != TW_OK) {
		fail("no answer from the server for iteration %" PRIu64 ": %s",
		    k, STX(st));
		return -1;
	}
	char want[64];
	snprintf(want, sizeof(want), "%s %" PRIu64 " ", word, k);
	int rc = -1;
	if (strncmp(m.text, want, strlen(want)) == 0
	    && strcmp(m.text + strlen(want), "ok") == 0)
		rc = 0;
	else if (strncmp(m.text, want, strlen(want)) == 0
	    && strncmp(m.text + strlen(want), "bad ", 4) == 0) {
		say("iteration %" PRIu64 ": the server found: %s", k,
		    m.text + strlen(want) + 4);
		fail("%s", m.text + strlen(want) + 4);
	} else if (msg_is(&m, "error ") || msg_is(&m, "bye fail ")) {
		fail("the server failed: %s", strchr(m.text, ' ') + 1);
	} else {
		fail("unexpected answer from the server: '%.64s'", m.text);
	}
	msg_free(&m);
	return rc;
}

// One iteration: posts, waits; 0 or -1 (said).
static int client_iter(client *c, uint64_t k)
{
	const xopts *o = c->o;
	uint64_t total = o->size * o->batch;
	bool line = k < ITER_LINES;
	if (o->op == OP_READ && o->validate) {
		int st = send_text(c->e, c->peer, "fill %" PRIu64, k);
		if (st != TW_OK) {
			fail("tw_engine_notify: %s", STX(st));
			return -1;
		}
		if (await(c, "ready", k) != 0)
			return -1;
		cli_xfer_fill(c->buf, 0, total, poison(k));
	} else if (o->validate) {
		cli_xfer_fill(c->buf, 0, total, k);
	}
	int64_t t0 = now_ns();
	tw_xfer *x = NULL;
	int st = tw_xfer_create(c->e, c->peer, (int64_t)o->timeout_ms, &x);
	for (uint64_t i = 0; st == TW_OK && i < o->batch; i++) {
		size_t off = (size_t)(i * o->size);
		if (o->op == OP_WRITE)
			st = tw_xfer_post_write(
			    x, c->lid, off, c->rid, off, o->size);
		else if (o->op == OP_READ)
			st = tw_xfer_post_read(
			    x, c->lid, off, c->rid, off, o->size);
		else
			st = tw_xfer_post_send(x, c->lid, off, o->size, i);
		if (st == TW_OK)
			c->posts++;
	}
	char note[48];
	snprintf(note, sizeof(note), "iter %" PRIu64 " done", k);
	if (st == TW_OK && o->op == OP_WRITE)
		st = tw_xfer_notify(x, note, strlen(note));
	int64_t t1 = now_ns();
	if (st != TW_OK) {
		fail("iteration %" PRIu64 ": posting: %s", k, STX(st));
		tw_xfer_free(x);
		return -1;
	}
	if (line)
		say("iteration %" PRIu64 ": posted %" PRIu64 " %s of %" PRIu64
		    " bytes in %.1f us",
		    k, o->batch,
		    o->batch == 1 ? op_name[o->op] : op_plural[o->op], o->size,
		    (double)(t1 - t0) / 1e3);
	st = tw_xfer_wait(x, -1);
	int64_t t2 = now_ns();
	tw_xfer_free(x);
	if (st != TW_OK) {
		fail("iteration %" PRIu64 ": the transfer failed: %s", k,
		    STX(st));
		return -1;
	}
	c->done += o->batch;
	c->busy_ns += t2 - t0;
	if (line) {
		char rate[160];
		fmt_rate(rate, sizeof(rate), total, t2 - t0);
		say("iteration %" PRIu64 ": completed: %s", k, rate);
	}
	if (o->op == OP_READ) {
		if (k == 0)
			probe(c->buf, total);
		if (o->validate) {
			char why[300];
			if (check_all(o, c->buf, k, why, sizeof(why)) != 0) {
				say("iteration %" PRIu64 ": %s", k, why);
				fail("%s", why);
				return -1;
			}
			if (line)
				say("iteration %" PRIu64
				    ": data validation passed",
				    k);
		}
		return 0;
	}
	if (!o->validate)
		return 0;
	if (await(c, "check", k) != 0)
		return -1;
	if (line)
		say("iteration %" PRIu64
		    ": the server says: data validation passed",
		    k);
	return 0;
}

static int run_client(const xopts *o)
{
	side = "client";
	client c;
	memset(&c, 0, sizeof(c));
	c.o = o;
	char addr[300], name[64];
	if (strncmp(o->target, "tcp://", 6) == 0)
		snprintf(addr, sizeof(addr), "%s", o->target);
	else
		snprintf(addr, sizeof(addr), "tcp://%s", o->target);
	snprintf(name, sizeof(name), "xfer-client-%ld", (long)getpid());
	if (engine_open(o, name, &c.e) != 0)
		return CLI_FAILED;
	int rc = CLI_FAILED;
	say("connecting to %s (engine %s) as %s", addr, SERVER_NAME, name);
	int64_t tc = now_ns();
	int st = tw_engine_connect_to(c.e, addr, SERVER_NAME, &c.peer);
	if (st != TW_OK) {
		fail("cannot connect to %s: %s", addr, STX(st));
		goto out;
	}
	say("connected to %s in %.1f ms (peer %u)", SERVER_NAME,
	    (double)(now_ns() - tc) / 1e6, (unsigned)c.peer);
	uint64_t total = o->size * o->batch;
	c.buf = malloc(total);
	if (c.buf == NULL) {
		fail("cannot allocate %" PRIu64 " bytes", total);
		goto out;
	}
	memset(c.buf, 0, total);
	st = tw_mem_register(c.e, c.buf, total, TW_MEM_HOST, 0, &c.lid);
	if (st != TW_OK) {
		fail("tw_mem_register: %s", STX(st));
		goto out;
	}
	say("buffer registered: ptr=%p bytes=%" PRIu64, (void *)c.buf, total);
	char ptext[300];
	params_text(o, ptext, sizeof(ptext));
	st = send_text(c.e, c.peer, "params %s", ptext);
	if (st != TW_OK) {
		fail("sending the parameters: %s", STX(st));
		goto out;
	}
	say("parameters sent: %s", ptext);
	msg m = { 0 };
	st = recv_msg(c.e, c.peer, NULL, &m, (int64_t)o->timeout_ms);
	if (st != TW_OK) {
		fail("no memory descriptor from the server: %s", STX(st));
		goto out;
	}
	if (!msg_is(&m, "desc ")) {
		if (msg_is(&m, "error "))
			fail("the server refused: %s", m.text + 6);
		else
			fail("unexpected answer from the server: '%.64s'",
			    m.text);
		msg_free(&m);
		goto out;
	}
	st = tw_mem_unpack(c.e, c.peer, m.text + 5, m.len - 5, &c.rid);
	if (st != TW_OK) {
		fail("tw_mem_unpack: %s", STX(st));
		msg_free(&m);
		goto out;
	}
	say("memory descriptor received (%zu bytes)", m.len - 5);
	if (debug_on())
		hex("memory descriptor", m.text + 5, m.len - 5);
	msg_free(&m);

	int64_t t0 = now_ns();
	int ok = 0;
	uint64_t k;
	for (k = 0; k < o->iters && ok == 0; k++)
		ok = client_iter(&c, k);
	int64_t t1 = now_ns();
	if (ok != 0) {
		send_text(c.e, c.peer,
		    "abort the client failed in iteration "
		    "%" PRIu64,
		    k - 1);
		goto out;
	}
	st = send_text(c.e, c.peer, "done");
	if (st == TW_OK)
		st = recv_msg(c.e, c.peer, NULL, &m, (int64_t)o->timeout_ms);
	if (st != TW_OK) {
		fail("no goodbye from the server: %s", STX(st));
		goto out;
	}
	if (strcmp(m.text, "bye ok") != 0) {
		fail("the server failed: %s",
		    msg_is(&m, "bye fail ") ? m.text + 9 : m.text);
		msg_free(&m);
		goto out;
	}
	msg_free(&m);
	char rate[160];
	say("%s: %" PRIu64 " posted, %" PRIu64 " completed in %" PRIu64
	    " iterations",
	    op_plural[o->op], c.posts, c.done, o->iters);
	fmt_rate(rate, sizeof(rate), total * o->iters, c.busy_ns);
	say("bytes moved: %s (transfers only)", rate);
	fmt_rate(rate, sizeof(rate), total * o->iters, t1 - t0);
	say("wall time: %s", rate);
	if (o->validate)
		say("data validation passed (%" PRIu64 " iterations)",
		    o->iters);
	rc = CLI_OK;
out:
	if (c.lid != 0)
		tw_mem_deregister(c.e, c.lid);
	tw_engine_free(c.e);
	free(c.buf);
	return rc;
}

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

void cli_xfer_help(FILE *f)
{
	fprintf(f,
	    "%s\n"
	    "\n"
	    "The transfer test: a server engine registers a buffer, a "
	    "client that knows\n"
	    "only HOST:PORT connects, receives its descriptor and moves "
	    "data with the\n"
	    "transfer engine; both ends print each step.\n"
	    "\n"
	    "xfer options:\n"
	    "  --server           serve one client (every client with "
	    "--forever)\n"
	    "  --bind ADDR        the server's address (default %s;\n"
	    "                     port 0 picks a free one, printed)\n"
	    "  --client HOST:PORT connect to a server\n"
	    "  --op OP            write (default), read or send (tagged "
	    "send/receive)\n"
	    "  --size BYTES       bytes per post (K, M, G suffixes; default "
	    "1M)\n"
	    "  --batch N          posts per transfer, post i at offset "
	    "i*size (default 1)\n"
	    "  --iters N          transfers (default 1)\n"
	    "  --validate         fill a pattern per iteration and offset "
	    "and check every\n"
	    "                     byte at the receiving end\n"
	    "  --stripes N, --window N, --chunk BYTES\n"
	    "                     engine options; both ends must agree "
	    "(defaults 1, 16, 1M)\n"
	    "  --timeout-ms MS    the longest any wait lasts (default "
	    "%d)\n"
	    "  --forever          (server) keep serving clients\n"
	    "\n"
	    "TAGWIRE_DEBUG=1 also prints the descriptors and the first "
	    "bytes received.\n",
	    CLI_XFER_USAGE, DEFAULT_BIND, DEFAULT_TIMEOUT_MS);
}

static int xusage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int xusage(const char *fmt, ...)
{
	char m[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m, sizeof(m), fmt, ap);
	va_end(ap);
	return cli_usage_error("xfer", "%s", m);
}

static const char *const value_opts[]
    = { "--bind", "--client", "--op", "--size", "--batch", "--stripes",
	      "--window", "--chunk", "--iters", "--timeout-ms" };
enum {
	V_BIND,
	V_CLIENT,
	V_OP,
	V_SIZE,
	V_BATCH,
	V_STRIPES,
	V_WINDOW,
	V_CHUNK,
	V_ITERS,
	V_TIMEOUT,
	V_COUNT
};

int cli_xfer(int argc, char **argv)
{
	xopts o;
	memset(&o, 0, sizeof(o));
	o.bind = DEFAULT_BIND;
	o.op = OP_WRITE;
	o.size = DEFAULT_SIZE;
	o.batch = 1;
	o.iters = 1;
	o.stripes = 1;
	o.window = 16; // the engine's default
	o.chunk = (uint64_t)1 << 20;
	o.timeout_ms = DEFAULT_TIMEOUT_MS;
	bool seen[V_COUNT] = { false }, is_server = false, is_client = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			cli_xfer_help(stdout);
			return CLI_OK;
		}
		if (strcmp(a, "--server") == 0) {
			is_server = true;
			continue;
		}
		if (strcmp(a, "--validate") == 0) {
			o.validate = true;
			continue;
		}
		if (strcmp(a, "--forever") == 0) {
			o.forever = true;
			continue;
		}
		int k = -1;
		const char *val = NULL;
		for (int j = 0; j < V_COUNT && k < 0; j++) {
			size_t n = strlen(value_opts[j]);
			if (strncmp(a, value_opts[j], n) != 0
			    || (a[n] != '\0' && a[n] != '='))
				continue;
			k = j;
			if (a[n] == '=')
				val = a + n + 1;
			else if (i + 1 < argc)
				val = argv[++i];
		}
		if (k < 0)
			return xusage("%s '%.64s'",
			    a[0] == '-' ? "unknown option"
			                : "unexpected argument",
			    a);
		if (val == NULL)
			return xusage("%s needs a value", value_opts[k]);
		seen[k] = true;
		switch (k) {
		case V_BIND:
			o.bind = val;
			break;
		case V_CLIENT:
			if (*val == '\0' || strchr(val, ':') == NULL)
				return xusage("--client wants HOST:PORT, not "
				              "'%.64s'",
				    val);
			o.target = val;
			is_client = true;
			break;
		case V_OP:
			o.op = -1;
			for (int j = 0; j < 3; j++)
				if (strcmp(val, op_name[j]) == 0)
					o.op = j;
			if (strcmp(val, "recv") == 0)
				o.op = OP_SEND;
			if (o.op < 0)
				return xusage(
				    "--op wants write, read or send, "
				    "not '%.32s'",
				    val);
			break;
		case V_SIZE:
			if (cli_parse_u64(val, 1, MAX_SIZE, 1, &o.size) != 0)
				return xusage(
				    "--size wants 1 to 1G bytes, not "
				    "'%.32s'",
				    val);
			break;
		case V_BATCH:
			if (cli_parse_u64(val, 1, MAX_BATCH, 0, &o.batch) != 0)
				return xusage("--batch wants 1 to %d, not "
				              "'%.32s'",
				    MAX_BATCH, val);
			break;
		case V_STRIPES:
			if (cli_parse_u64(val, 1, 64, 0, &o.stripes) != 0)
				return xusage("--stripes wants 1 to 64, not "
				              "'%.32s'",
				    val);
			break;
		case V_WINDOW:
			if (cli_parse_u64(val, 1, 1024, 0, &o.window) != 0)
				return xusage("--window wants 1 to 1024, not "
				              "'%.32s'",
				    val);
			break;
		case V_CHUNK:
			if (cli_parse_u64(
			        val, 4096, (uint64_t)64 << 20, 1, &o.chunk)
			    != 0)
				return xusage("--chunk wants 4K to 64M bytes, "
				              "not '%.32s'",
				    val);
			break;
		case V_ITERS:
			if (cli_parse_u64(val, 1, MAX_ITERS, 0, &o.iters) != 0)
				return xusage("--iters wants 1 to %d, not "
				              "'%.32s'",
				    MAX_ITERS, val);
			break;
		case V_TIMEOUT:
			if (cli_parse_u64(
			        val, 1, MAX_TIMEOUT_MS, 0, &o.timeout_ms)
			    != 0)
				return xusage(
				    "--timeout-ms wants 1 to %d, not "
				    "'%.32s'",
				    MAX_TIMEOUT_MS, val);
			break;
		}
	}
	if (is_server == is_client)
		return xusage("give --server or --client HOST:PORT");
	if (seen[V_BIND] && !is_server)
		return xusage("--bind goes with --server");
	if (o.forever && !is_server)
		return xusage("--forever goes with --server");
	if (is_server) {
		static const int plan[] = { V_OP, V_SIZE, V_BATCH, V_ITERS };
		for (size_t j = 0; j < sizeof(plan) / sizeof(plan[0]); j++)
			if (seen[plan[j]])
				return xusage(
				    "the server runs what its client "
				    "asks for: give %s to the client",
				    value_opts[plan[j]]);
		if (o.validate)
			return xusage("the server runs what its client asks "
			              "for: give --validate to the client");
		char bind[300];
		if (strchr(o.bind, ':') == NULL)
			return xusage("--bind wants [tcp://]HOST:PORT, not "
			              "'%.64s'",
			    o.bind);
		snprintf(bind, sizeof(bind), "%s%s",
		    strncmp(o.bind, "tcp://", 6) == 0 ? "" : "tcp://", o.bind);
		o.bind = bind;
		return run_server(&o);
	}
	if (o.size * o.batch > MAX_TOTAL)
		return xusage("--size times --batch is above 2 GiB");
	return run_client(&o);
}
