// Tests of the TLS layer of tcp:// (tcp_tls.c) over socketpairs: contexts
// from files and their refusals, handshakes (the accepting side stepped on
// its own thread, the connecting side blocking), the name check, refused
// certificates and a peer that answers in plaintext, and streams of
// several MiB both ways at once through small socket buffers, so that
// writes stop half way and are taken up again.  Waits are on descriptors
// and joins, never sleeps.

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/clock.h"
#include "testutil.h"
#include "tls/certs.h"
#include "transport/tcp/tcp_sock.h"
#include "transport/tcp/tcp_tls.h"

static const char *dir;

static int64_t deadline_in(int64_t ms)
{
	return tw__now_ns() + tw_test_scale_ms(ms) * 1000000;
}

// A context for party `name` (files name.pem and name.key) trusting
// ca (a .pem file's base name).
static int ctx_for(const char *name, const char *ca, tw__tls_ctx **out)
{
	char c[300], k[300], a[300], f[64];
	snprintf(f, sizeof(f), "%s.pem", name);
	tw_cert_path(c, sizeof(c), dir, f);
	snprintf(f, sizeof(f), "%s.key", name);
	tw_cert_path(k, sizeof(k), dir, f);
	snprintf(f, sizeof(f), "%s.pem", ca);
	tw_cert_path(a, sizeof(a), dir, f);
	return tw__tls_ctx_new(c, k, a, out);
}

static void pair(int sv[2])
{
	assert_int_equal(
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
}

typedef struct side {
	tw__tls_ctx *ctx;
	int fd;
	bool server;
	tw__tls *t;
	int status;
	char reason[256];
} side;

// The accepting side, the way the acceptor drives it: steps and polls.
static void *server_main(void *arg)
{
	side *s = arg;
	int64_t deadline = deadline_in(10000);
	s->status = tw__tls_new(s->ctx, s->fd, true, &s->t);
	while (s->status == TW_OK) {
		short ev = 0;
		int st = tw__tls_handshake_step(s->t, &ev);
		if (st != TW_EAGAIN) {
			s->status = st;
			break;
		}
		s->status = tw__tcp_wait_fd(s->fd, ev, deadline, NULL);
	}
	if (s->t != NULL)
		snprintf(
		    s->reason, sizeof(s->reason), "%s", tw__tls_reason(s->t));
	return NULL;
}

static void *client_main(void *arg)
{
	side *s = arg;
	s->status = tw__tls_new(s->ctx, s->fd, false, &s->t);
	if (s->status == TW_OK)
		s->status = tw__tls_handshake(s->t, deadline_in(10000), NULL);
	if (s->t != NULL)
		snprintf(
		    s->reason, sizeof(s->reason), "%s", tw__tls_reason(s->t));
	return NULL;
}

// Runs both handshakes between contexts cctx (connecting) and sctx.
static void handshake(tw__tls_ctx *cctx, tw__tls_ctx *sctx, side *c, side *s)
{
	int sv[2];
	pair(sv);
	*c = (side) { .ctx = cctx, .fd = sv[0] };
	*s = (side) { .ctx = sctx, .fd = sv[1], .server = true };
	pthread_t tc, ts;
	assert_int_equal(pthread_create(&ts, NULL, server_main, s), 0);
	assert_int_equal(pthread_create(&tc, NULL, client_main, c), 0);
	pthread_join(tc, NULL);
	// A client refused by the server learns it at its first read (TLS
	// 1.3): the server's thread ends with the handshake either way,
	// unless the client's own failure closes the socket first.
	if (c->status != TW_OK)
		shutdown(c->fd, SHUT_RDWR);
	pthread_join(ts, NULL);
}

static void side_done(side *x)
{
	tw__tls_free(x->t);
	close(x->fd);
}

static int setup(void **state)
{
	(void)state;
	dir = tw_certs_make();
	return 0;
}

static void test_ctx_files(void **state)
{
	tw__tls_ctx *ctx = NULL;
	char c[300], k[300], a[300], bad[300];
	tw_cert_path(c, sizeof(c), dir, "p0.pem");
	tw_cert_path(k, sizeof(k), dir, "p0.key");
	tw_cert_path(a, sizeof(a), dir, "ca.pem");
	TW_PASS(tw__tls_ctx_new(c, k, a, &ctx));
	assert_true(tw__tls_ctx_same(ctx, c, k, a));
	assert_false(tw__tls_ctx_same(ctx, c, k, c));
	tw__tls_ctx_free(ctx);
	// Missing files, a key of another certificate, text that is not PEM.
	tw_cert_path(bad, sizeof(bad), dir, "nope.pem");
	TW_FAIL(tw__tls_ctx_new(bad, k, a, &ctx), TW_EINVAL);
	TW_FAIL(tw__tls_ctx_new(c, bad, a, &ctx), TW_EINVAL);
	TW_FAIL(tw__tls_ctx_new(c, k, bad, &ctx), TW_EINVAL);
	tw_cert_path(bad, sizeof(bad), dir, "p1.key");
	TW_FAIL(tw__tls_ctx_new(c, bad, a, &ctx), TW_EINVAL);
	tw_cert_path(bad, sizeof(bad), dir, "ca.cnf");
	TW_FAIL(tw__tls_ctx_new(bad, k, a, &ctx), TW_EINVAL);
	TW_FAIL(tw__tls_ctx_new(c, bad, a, &ctx), TW_EINVAL);
	TW_FAIL(tw__tls_ctx_new(c, k, bad, &ctx), TW_EINVAL);
}

static void test_handshake_names(void **state)
{
	tw__tls_ctx *c0, *c1, *cn;
	TW_PASS(ctx_for("p0", "ca", &c0));
	TW_PASS(ctx_for("p1", "ca", &c1));
	TW_PASS(ctx_for("cnonly", "ca", &cn));
	side c, s;
	handshake(c0, c1, &c, &s);
	TW_PASS(c.status);
	TW_PASS(s.status);
	char names[128];
	assert_true(tw__tls_peer_is(c.t, "p1", names, sizeof(names)));
	assert_string_equal(names, "'p1'");
	assert_false(tw__tls_peer_is(c.t, "p2", names, sizeof(names)));
	assert_false(tw__tls_peer_is(c.t, "P1", NULL, 0)); // exact bytes
	assert_false(tw__tls_peer_is(c.t, "p", NULL, 0));
	assert_true(tw__tls_peer_is(s.t, "p0", NULL, 0));
	side_done(&c);
	side_done(&s);
	// No subjectAltName: the common name counts.
	handshake(cn, c0, &c, &s);
	TW_PASS(c.status);
	TW_PASS(s.status);
	assert_true(tw__tls_peer_is(s.t, "cnonly", names, sizeof(names)));
	assert_string_equal(names, "'cnonly'");
	assert_true(tw__tls_peer_is(c.t, "p0", NULL, 0));
	// A certificate with a subjectAltName DNS entry is not looked up by
	// its common name (p0's is "p0" too, so try another name).
	assert_false(tw__tls_peer_is(c.t, "cnonly", NULL, 0));
	side_done(&c);
	side_done(&s);
	tw__tls_ctx_free(c0);
	tw__tls_ctx_free(c1);
	tw__tls_ctx_free(cn);
}

// A handshake in which `bad` takes part: both sides fail with TW_EAUTH,
// or the refused one with TW_EPEER when the other hung up first; the
// refusing side's reason says `why`.
static void refused(
    const char *bad, const char *bad_ca, bool bad_dials, const char *why)
{
	tw__tls_ctx *good, *b;
	TW_PASS(ctx_for("p0", "ca", &good));
	TW_PASS(ctx_for(bad, bad_ca, &b));
	side c, s;
	handshake(bad_dials ? b : good, bad_dials ? good : b, &c, &s);
	side *judge = bad_dials ? &s : &c;
	side *judged = bad_dials ? &c : &s;
	TW_FAIL(judge->status, TW_EAUTH);
	if (strstr(judge->reason, why) == NULL)
		fail_msg("reason '%s' does not say '%s'", judge->reason, why);
	if (judged->status == TW_OK) {
		// TLS 1.3: the client finished first; its first read tells.
		char buf[8];
		size_t got = 0;
		int st;
		while ((st = tw__tls_recv(judged->t, buf, sizeof(buf), &got))
		    == TW_EAGAIN)
			TW_PASS(tw__tcp_wait_fd(
			    judged->fd, POLLIN, deadline_in(10000), NULL));
		TW_FAIL(st, TW_EAUTH);
		printf("refused side: %s\n", tw__tls_reason(judged->t));
	} else if (judged->status != TW_EPEER) {
		TW_FAIL(judged->status, TW_EAUTH);
	}
	printf("refusing side: %s\n", judge->reason);
	side_done(&c);
	side_done(&s);
	tw__tls_ctx_free(good);
	tw__tls_ctx_free(b);
}

static void test_refused(void **state)
{
	refused("expired", "ca", false, "expired");
	refused("expired", "ca", true, "expired");
	refused("other", "ca", false, "unknown CA");
	refused("other", "ca", true, "unknown CA");
	// A party that trusts another CA refuses the good one's certificate.
	refused("other", "other-ca", true, "unknown CA");
}

static void test_plaintext_answer(void **state)
{
	tw__tls_ctx *ctx;
	TW_PASS(ctx_for("p0", "ca", &ctx));
	int sv[2];
	pair(sv);
	side c = { .ctx = ctx, .fd = sv[0] };
	pthread_t tc;
	assert_int_equal(pthread_create(&tc, NULL, client_main, &c), 0);
	// What a node without TLS answers: the start of a plaintext HELLO.
	TW_PASS(tw__tcp_wait_fd(sv[1], POLLIN, deadline_in(10000), NULL));
	char hello[512];
	assert_true(recv(sv[1], hello, sizeof(hello), 0) > 0);
	assert_int_equal((unsigned char)hello[0], TW_TLS_FIRST_BYTE);
	assert_int_equal(send(sv[1], "TWIR", 4, MSG_NOSIGNAL), 4);
	pthread_join(tc, NULL);
	TW_FAIL(c.status, TW_EAUTH);
	assert_non_null(strstr(c.reason, "does not speak TLS"));
	side_done(&c);
	close(sv[1]);
	tw__tls_ctx_free(ctx);
}

// Streams `len` bytes through x with tw__tls_writev, in pieces of the
// writer's shapes (a small header, then a large payload), while another
// thread reads them on the other side.
typedef struct stream {
	side *x;
	size_t len;
	unsigned char *buf;
	int status;
} stream;

static void *write_main(void *arg)
{
	stream *st = arg;
	size_t off = 0;
	while (off < st->len) {
		size_t n = st->len - off;
		size_t head = n < 40 ? n : 40;
		size_t body = n - head > 262144 ? 262144 : n - head;
		struct iovec v[2] = { { st->buf + off, head },
			{ st->buf + off + head, body } };
		size_t sent = 0, want = head + body;
		while (sent < want) {
			// The untaken bytes lead, wherever they sit.
			struct iovec rest[2];
			int k = 0;
			size_t skip = sent;
			for (int i = 0; i < 2; i++) {
				if (skip >= v[i].iov_len) {
					skip -= v[i].iov_len;
					continue;
				}
				rest[k++] = (struct iovec) {
					(char *)v[i].iov_base + skip,
					v[i].iov_len - skip
				};
				skip = 0;
			}
			size_t took = 0;
			int s = tw__tls_writev(st->x->t, rest, k, &took);
			sent += took;
			if (s == TW_EAGAIN)
				s = tw__tcp_wait_fd(st->x->fd, POLLOUT,
				    deadline_in(20000), NULL);
			if (s != TW_OK) {
				st->status = s;
				return NULL;
			}
		}
		off += want;
	}
	st->status = TW_OK;
	return NULL;
}

static void *read_main(void *arg)
{
	stream *st = arg;
	size_t off = 0;
	while (off < st->len) {
		size_t got = 0;
		size_t want = st->len - off;
		// Odd sizes, so that records end in the middle of reads.
		if (want > 7777)
			want = 7777;
		int s = tw__tls_recv(st->x->t, st->buf + off, want, &got);
		if (s == TW_OK) {
			off += got;
			continue;
		}
		// At TW_EAGAIN libssl holds no whole record: the socket
		// must bring the rest.
		if (s == TW_EAGAIN)
			s = tw__tcp_wait_fd(
			    st->x->fd, POLLIN, deadline_in(20000), NULL);
		if (s != TW_OK) {
			st->status = s;
			return NULL;
		}
	}
	st->status = TW_OK;
	return NULL;
}

static void test_stream_both_ways(void **state)
{
	tw__tls_ctx *c0, *c1;
	TW_PASS(ctx_for("p0", "ca", &c0));
	TW_PASS(ctx_for("p1", "ca", &c1));
	side c, s;
	handshake(c0, c1, &c, &s);
	TW_PASS(c.status);
	TW_PASS(s.status);
	// Small buffers: writes stop half way through records.
	int small = 4096;
	for (int i = 0; i < 2; i++) {
		int fd = i == 0 ? c.fd : s.fd;
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	}
	size_t len = 4u << 20;
	unsigned char *a = malloc(len), *b = malloc(len);
	unsigned char *ra = calloc(1, len), *rb = calloc(1, len);
	assert_true(a && b && ra && rb);
	for (size_t i = 0; i < len; i++) {
		a[i] = (unsigned char)(i * 7 + (i >> 13));
		b[i] = (unsigned char)(i * 13 + (i >> 11));
	}
	// Each side's reader and writer share its tw__tls, as a
	// connection's do.
	stream w0 = { &c, len, a, 0 }, r1 = { &s, len, ra, 0 };
	stream w1 = { &s, len, b, 0 }, r0 = { &c, len, rb, 0 };
	pthread_t t[4];
	assert_int_equal(pthread_create(&t[0], NULL, write_main, &w0), 0);
	assert_int_equal(pthread_create(&t[1], NULL, read_main, &r1), 0);
	assert_int_equal(pthread_create(&t[2], NULL, write_main, &w1), 0);
	assert_int_equal(pthread_create(&t[3], NULL, read_main, &r0), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	TW_PASS(w0.status);
	TW_PASS(w1.status);
	TW_PASS(r0.status);
	TW_PASS(r1.status);
	assert_memory_equal(a, ra, len);
	assert_memory_equal(b, rb, len);
	// The peer's end: EOF is TW_EPEER.
	shutdown(s.fd, SHUT_RDWR);
	char x;
	size_t got;
	int st;
	while ((st = tw__tls_recv(c.t, &x, 1, &got)) == TW_EAGAIN)
		TW_PASS(
		    tw__tcp_wait_fd(c.fd, POLLIN, deadline_in(10000), NULL));
	TW_FAIL(st, TW_EPEER);
	free(a);
	free(b);
	free(ra);
	free(rb);
	side_done(&c);
	side_done(&s);
	tw__tls_ctx_free(c0);
	tw__tls_ctx_free(c1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ctx_files),
		cmocka_unit_test(test_handshake_names),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_plaintext_answer),
		cmocka_unit_test(test_stream_both_ways),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
