// TLS on tcp:// links over the public API: parties in processes of their
// own (tests/tcpfault/tf.h), certificates made at run time
// (tests/tls/mkcerts.sh), each test a ctest entry (tls_NAME runs `tls
// NAME`).
//
// A party is the role "party" run with: its parties' ports and ids, its
// rank, the certificate it presents ("-" for none: plaintext), the CA
// file it trusts, flags (s: a secret too, e: the description comes from
// TAGWIRE_* variables, m: the messages carry a marker, b: 4 MiB messages
// too), the status its tw_link_create must return (a TW_* code, or 1 for
// any failure, 2 for TW_EAUTH or TW_EPEER) and its connect timeout.  Every failure must come within
// the connect timeout (plus a second of slack, scaled).  A party that
// succeeds sends to every other a small message and, with b, a 4 MiB one,
// receives theirs and checks every byte, then meets them in a barrier.

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "../tcpfault/parts.h"
#include "../tcpfault/tf.h"
#include "testutil.h"
#include "tls/certs.h"

const char *tf_size_arg = "0";

// What a relay looks for in the bytes it forwards.
#define MARKER "MARKER-tagwire-plaintext-canary"
#define BIG (4u << 20)
#define ANY_FAILURE 1
// TW_EAUTH, or TW_EPEER when a peer that failed first closed its end.
#define AUTH_OR_PEER 2

static size_t split(char *s, char **out, size_t cap)
{
	size_t n = 0;
	for (char *tok = strtok(s, ","); tok != NULL && n < cap;
	     tok = strtok(NULL, ","))
		out[n++] = tok;
	return n;
}

static void exchange(tw_link *l, size_t me, size_t n, const char *flags)
{
	bool big = strchr(flags, 'b') != NULL;
	bool marker = strchr(flags, 'm') != NULL;
	unsigned char *buf = big ? malloc(BIG) : NULL;
	if (big && buf == NULL)
		tf_die("out of memory");
	for (size_t j = 0; j < n; j++) {
		if (j == me)
			continue;
		char msg[128];
		int len = snprintf(msg, sizeof(msg), "%s from %zu to %zu",
		    marker ? MARKER : "hello", me, j);
		TF_OK(tw_send(l, j, "small", msg, (size_t)len + 1));
		if (big) {
			tf_fill_blocks(buf, BIG, (uint32_t)(me * 16 + j));
			TF_OK(tw_send(l, j, "big", buf, BIG));
		}
	}
	for (size_t j = 0; j < n; j++) {
		if (j == me)
			continue;
		tw_buf b = { 0 };
		char want[128];
		snprintf(want, sizeof(want), "%s from %zu to %zu",
		    marker ? MARKER : "hello", j, me);
		TF_OK(tw_recv(l, j, "small", &b));
		if (b.len != strlen(want) + 1 || strcmp(b.data, want) != 0)
			tf_die("wrong small message from %zu", j);
		tw_buf_free(&b);
		if (big) {
			TF_OK(tw_recv(l, j, "big", &b));
			if (b.len != BIG
			    || tf_check_blocks(
			           b.data, BIG, (uint32_t)(j * 16 + me))
			        != SIZE_MAX)
				tf_die("wrong 4 MiB message from %zu", j);
			tw_buf_free(&b);
		}
	}
	TF_OK(tw_barrier(l, "done"));
	free(buf);
}

// party DIR PORTS IDS RANK CERT CA FLAGS EXPECT CONNECT_MS
static int role_party(int argc, char **argv)
{
	if (argc < 9)
		tf_die("party: want 9 arguments");
	const char *dir = argv[0];
	char *ports_s[8], *ids[8];
	size_t n = split(argv[1], ports_s, 8);
	if (split(argv[2], ids, 8) != n)
		tf_die("party: as many ids as ports");
	size_t rank = strtoul(argv[3], NULL, 10);
	const char *cert = argv[4], *ca = argv[5], *flags = argv[6];
	int expect = atoi(argv[7]);
	int64_t connect_ms = strtoll(argv[8], NULL, 10);
	static char who[32];
	snprintf(who, sizeof(who), "rank %zu", rank);
	tf_who = who;
	char c[512], k[512], a[512], f[64];
	snprintf(f, sizeof(f), "%s.pem", cert);
	tw_cert_path(c, sizeof(c), dir, f);
	snprintf(f, sizeof(f), "%s.key", cert);
	tw_cert_path(k, sizeof(k), dir, f);
	snprintf(f, sizeof(f), "%s.pem", ca);
	tw_cert_path(a, sizeof(a), dir, f);
	bool tls = strcmp(cert, "-") != 0;
	tw_desc *d = NULL;
	if (strchr(flags, 'e') != NULL) {
		char list[1024] = "", addr[64], r[16];
		for (size_t i = 0; i < n; i++) {
			tf_addr(addr, sizeof(addr),
			    (unsigned)strtoul(ports_s[i], NULL, 10));
			snprintf(list + strlen(list),
			    sizeof(list) - strlen(list), "%s%s=%s",
			    i > 0 ? "," : "", ids[i], addr);
		}
		snprintf(r, sizeof(r), "%zu", rank);
		setenv("TAGWIRE_PARTIES", list, 1);
		setenv("TAGWIRE_RANK", r, 1);
		setenv("TAGWIRE_LINK_ID", "tls", 1);
		if (tls) {
			setenv("TAGWIRE_TLS_CERT", c, 1);
			setenv("TAGWIRE_TLS_KEY", k, 1);
			setenv("TAGWIRE_TLS_CA", a, 1);
		}
		size_t er = 0;
		TF_OK(tw_desc_from_env(&d, &er));
		if (er != rank)
			tf_die("TAGWIRE_RANK read as %zu", er);
	} else {
		if ((d = tw_desc_new("tls")) == NULL)
			tf_die("tw_desc_new failed");
		for (size_t i = 0; i < n; i++) {
			char addr[64];
			tf_addr(addr, sizeof(addr),
			    (unsigned)strtoul(ports_s[i], NULL, 10));
			TF_OK(tw_desc_add_party(d, ids[i], addr));
		}
		if (tls)
			TF_OK(tw_desc_set_tls(d, c, k, a));
	}
	TF_OK(tw_desc_set(d, TW_OPT_CONNECT_TIMEOUT_MS, connect_ms));
	TF_OK(tw_desc_set(d, TW_OPT_RECV_TIMEOUT_MS, tf_scale_ms(30000)));
	if (strchr(flags, 's') != NULL)
		TF_OK(tw_desc_set_secret(d, "sesame", 6));
	tw_link *l = NULL;
	int64_t t0 = tf_now_ms();
	int st = tw_link_create(d, rank, &l);
	int64_t ms = tf_now_ms() - t0;
	printf("%s: tw_link_create: %s after %lld ms\n", who, tw_err_name(st),
	    (long long)ms);
	fflush(stdout);
	if (expect == TW_OK) {
		if (st != TW_OK)
			tf_die("tw_link_create: %s", tw_err_name(st));
		exchange(l, rank, n, flags);
		int cs = tw_link_close(l);
		if (cs != TW_OK && cs != TW_EPEER)
			tf_die("tw_link_close: %s", tw_err_name(cs));
	} else {
		if (st == TW_OK)
			tf_die("tw_link_create succeeded");
		if (expect == AUTH_OR_PEER && st != TW_EAUTH && st != TW_EPEER)
			tf_die("tw_link_create: %s, want TW_EAUTH or TW_EPEER",
			    tw_err_name(st));
		if (expect != ANY_FAILURE && expect != AUTH_OR_PEER
		    && st != expect)
			tf_die("tw_link_create: %s, want %s", tw_err_name(st),
			    tw_err_name(expect));
		if (ms > connect_ms + tf_scale_ms(1000))
			tf_die(
			    "failed after %lld ms, past the connect timeout "
			    "of %lld ms",
			    (long long)ms, (long long)connect_ms);
	}
	tw_desc_free(d);
	return 0;
}

typedef struct party {
	const char *cert; // "-": plaintext
	const char *ca;
	const char *flags;
	int expect;
} party;

// Runs n parties at ports (ids[i] the party ids) and checks that each
// ends with exit status 0.
static void run(const unsigned *ports, const char *const *ids, size_t n,
    const party *p, int64_t connect_ms)
{
	const char *dir = tw_certs_make();
	char ports_s[256] = "", ids_s[256] = "", cms[24];
	for (size_t i = 0; i < n; i++) {
		snprintf(ports_s + strlen(ports_s),
		    sizeof(ports_s) - strlen(ports_s), "%s%u", i ? "," : "",
		    ports[i]);
		snprintf(ids_s + strlen(ids_s), sizeof(ids_s) - strlen(ids_s),
		    "%s%s", i ? "," : "", ids[i]);
	}
	snprintf(cms, sizeof(cms), "%lld", (long long)connect_ms);
	pid_t pids[8];
	const char *names[8];
	char rank_s[8][24], exp_s[8][16];
	for (size_t i = 0; i < n; i++) {
		snprintf(rank_s[i], sizeof(rank_s[i]), "%zu", i);
		snprintf(exp_s[i], sizeof(exp_s[i]), "%d", p[i].expect);
		const char *args[] = { dir, ports_s, ids_s, rank_s[i],
			p[i].cert, p[i].ca, p[i].flags, exp_s[i], cms, NULL };
		pids[i] = tf_spawn("party", args, NULL, 0);
		assert_true(pids[i] > 0);
		names[i] = ids[i];
	}
	char why[512];
	bool ok = tf_wait_all(pids, names, n,
	    tf_now_ms() + connect_ms + tf_scale_ms(60000), why, sizeof(why));
	if (!ok)
		fail_msg("%s", why);
}

static void ports_for(unsigned *ports, size_t n)
{
	assert_int_equal(tf_ports(ports, n, NULL, 0), 0);
}

static const char *const ids3[] = { "p0", "p1", "p2" };

static void mesh3(const char *flags)
{
	unsigned ports[3];
	ports_for(ports, 3);
	party p[3] = { { "p0", "ca", flags, TW_OK },
		{ "p1", "ca", flags, TW_OK }, { "p2", "ca", flags, TW_OK } };
	run(ports, ids3, 3, p, tf_scale_ms(20000));
}

static void test_mesh3(void **state)
{
	mesh3("b");
}

static void test_mesh3_secret(void **state)
{
	mesh3("bs");
}

static void test_env(void **state)
{
	unsigned ports[2];
	ports_for(ports, 2);
	party p[2]
	    = { { "p0", "ca", "e", TW_OK }, { "p1", "ca", "e", TW_OK } };
	run(ports, ids3, 2, p, tf_scale_ms(20000));
}

static void test_env_partial(void **state)
{
	setenv("TAGWIRE_PARTIES", "tcp://127.0.0.1:1,tcp://127.0.0.1:2", 1);
	setenv("TAGWIRE_RANK", "0", 1);
	setenv("TAGWIRE_TLS_CERT", "c.pem", 1);
	setenv("TAGWIRE_TLS_CA", "ca.pem", 1);
	unsetenv("TAGWIRE_TLS_KEY");
	tw_desc *d = NULL;
	size_t rank = 0;
	TW_FAIL(tw_desc_from_env(&d, &rank), TW_EINVAL);
	assert_null(d);
}

// Two parties, the second presenting `cert`; both fail with TW_EAUTH.
static void refused2(const char *cert, const char *ca)
{
	unsigned ports[2];
	int64_t cms = tf_scale_ms(3000);
	for (int order = 0; order < 2; order++) {
		// Once as the dialing party, once as the accepting one.
		ports_for(ports, 2);
		size_t bad = (size_t)order;
		party p[2] = { { "p0", "ca", "", TW_EAUTH },
			{ "p1", "ca", "", TW_EAUTH } };
		p[bad].cert = cert;
		p[bad].ca = ca;
		const char *ids[2] = { "p0", "p1" };
		if (bad == 0) {
			// The bad certificate names p1: the other is p0.
			ids[0] = "p1";
			ids[1] = "p0";
			p[1].cert = "p0";
		}
		run(ports, ids, 2, p, cms);
	}
}

static void test_wrong_ca(void **state)
{
	refused2("other", "ca");
	refused2("other", "other-ca");
}

static void test_expired(void **state)
{
	refused2("expired", "ca");
}

static void test_other_party_cert(void **state)
{
	// Rank 2 presents p1's valid certificate: nobody lets it be rank 2,
	// whether they dial it (their check of its certificate) or it dials
	// them (the accepting side's check against the rank it claims).
	// Rank 1 dials rank 2 as soon as rank 0 has dialed it: it refuses
	// rank 2's certificate; rank 0 does too, unless rank 1's end closed
	// first.
	unsigned ports[3];
	party p[3]
	    = { { "p0", "ca", "", AUTH_OR_PEER }, { "p1", "ca", "", TW_EAUTH },
		      { "p1", "ca", "", ANY_FAILURE } };
	ports_for(ports, 3);
	run(ports, ids3, 3, p, tf_scale_ms(3000));
	// Rank 2 dials both; rank 0 dials rank 1.  Rank 0 refuses rank 2's
	// claim (TW_EAUTH); rank 1 waits for rank 2, which is busy trying
	// rank 0, so it only times out.
	ports_for(ports, 3);
	unsigned mix[3] = { ports[1], ports[2], ports[0] };
	p[0].expect = TW_EAUTH;
	p[1].expect = ANY_FAILURE;
	run(mix, ids3, 3, p, tf_scale_ms(3000));
}

static void test_cn_only(void **state)
{
	unsigned ports[2];
	ports_for(ports, 2);
	const char *ids[2] = { "p0", "cnonly" };
	party p[2]
	    = { { "p0", "ca", "", TW_OK }, { "cnonly", "ca", "", TW_OK } };
	run(ports, ids, 2, p, tf_scale_ms(20000));
}

static void test_tls_vs_plain(void **state)
{
	unsigned ports[2];
	int64_t cms = tf_scale_ms(3000);
	for (int order = 0; order < 2; order++) {
		ports_for(ports, 2);
		party p[2] = { { "p0", "ca", "", TW_EAUTH },
			{ "p1", "ca", "", TW_EAUTH } };
		p[order].cert = "-"; // plaintext
		run(ports, ids3, 2, p, cms);
	}
}

static void test_bad_files(void **state)
{
	const char *dir = tw_certs_make();
	unsigned ports[2];
	ports_for(ports, 2);
	char c[512], k[512], a[512], x[512];
	tw_cert_path(c, sizeof(c), dir, "p0.pem");
	tw_cert_path(k, sizeof(k), dir, "p0.key");
	tw_cert_path(a, sizeof(a), dir, "ca.pem");
	tw_cert_path(x, sizeof(x), dir, "missing.pem");
	const char *sets[][3] = {
		{ x, k, a }, // no certificate file
		{ c, x, a }, // no key file
		{ c, k, x }, // no CA file
		{ c, a, a }, // a certificate where the key should be
		{ a, k, a }, // the key does not match the certificate
	};
	for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
		tw_desc *d = tw_desc_new("tls");
		char addr[64];
		tf_addr(addr, sizeof(addr), ports[0]);
		TW_PASS(tw_desc_add_party(d, "p0", addr));
		tf_addr(addr, sizeof(addr), ports[1]);
		TW_PASS(tw_desc_add_party(d, "p1", addr));
		TW_PASS(
		    tw_desc_set_tls(d, sets[i][0], sets[i][1], sets[i][2]));
		tw_link *l = NULL;
		TW_FAIL(tw_link_create(d, 0, &l), TW_EINVAL);
		tw_desc_free(d);
	}
}

// A relay between rank 0 and rank 1: forwards both ways and looks for
// MARKER in what passes.
typedef struct relay {
	int lfd;
	unsigned to_port;
	bool seen;
	unsigned long long bytes;
} relay;

static bool scan(char *tail, size_t *tail_len, const char *buf, size_t n)
{
	// The marker may straddle two reads: keep the end of the last one.
	size_t m = strlen(MARKER);
	char win[65536 + 64];
	memcpy(win, tail, *tail_len);
	size_t k = n < 65536 ? n : 65536;
	memcpy(win + *tail_len, buf, k);
	size_t len = *tail_len + k;
	bool found = memmem(win, len, MARKER, m) != NULL;
	size_t keep = len < m - 1 ? len : m - 1;
	memcpy(tail, win + len - keep, keep);
	*tail_len = keep;
	return found;
}

static void *relay_main(void *arg)
{
	relay *r = arg;
	int a, b;
	// Until rank 1 listens, its dialer's attempts are closed, as a
	// refused connection would be.
	for (;;) {
		if ((a = accept(r->lfd, NULL, NULL)) < 0)
			return NULL;
		b = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct sockaddr_in sa = { .sin_family = AF_INET,
			.sin_port = htons((uint16_t)r->to_port),
			.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		if (connect(b, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		close(a);
		close(b);
	}
	char tails[2][64];
	size_t tlen[2] = { 0, 0 };
	static char buf[65536];
	struct pollfd p[2]
	    = { { .fd = a, .events = POLLIN }, { .fd = b, .events = POLLIN } };
	for (;;) {
		if (poll(p, 2, (int)tf_scale_ms(60000)) <= 0)
			break;
		int from = (p[0].revents != 0) ? 0 : 1;
		ssize_t got = recv(p[from].fd, buf, sizeof(buf), 0);
		if (got <= 0)
			break;
		r->bytes += (unsigned long long)got;
		if (scan(tails[from], &tlen[from], buf, (size_t)got))
			r->seen = true;
		if (send(p[1 - from].fd, buf, (size_t)got, MSG_NOSIGNAL)
		    != got)
			break;
	}
	close(a);
	close(b);
	return NULL;
}

static void relayed(const char *cert0, const char *cert1, bool want_seen)
{
	// Rank 0 dials the relay, whose address sorts before rank 1's, so
	// that both ends agree that rank 0 dials.
	unsigned ports[3];
	int lfd = -1;
	do {
		ports_for(ports, 3);
		lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int one = 1;
		setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		struct sockaddr_in sa = { .sin_family = AF_INET,
			.sin_port = htons((uint16_t)ports[1]),
			.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0
		    || listen(lfd, 4) != 0) {
			close(lfd);
			lfd = -1;
		}
	} while (lfd < 0);
	relay r = { .lfd = lfd, .to_port = ports[2] };
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, relay_main, &r), 0);
	// Each party's own view: rank 0 sees rank 1 at the relay.
	const char *dir = tw_certs_make();
	char p0[64], p1[64], cms[24];
	snprintf(p0, sizeof(p0), "%u,%u", ports[0], ports[1]);
	snprintf(p1, sizeof(p1), "%u,%u", ports[0], ports[2]);
	snprintf(cms, sizeof(cms), "%lld", (long long)tf_scale_ms(20000));
	const char *a0[]
	    = { dir, p0, "p0,p1", "0", cert0, "ca", "m", "0", cms, NULL };
	const char *a1[]
	    = { dir, p1, "p0,p1", "1", cert1, "ca", "m", "0", cms, NULL };
	pid_t pids[2] = { tf_spawn("party", a0, NULL, 0),
		tf_spawn("party", a1, NULL, 0) };
	static const char *const names[] = { "p0", "p1" };
	char why[512];
	bool ok = tf_wait_all(pids, names, 2, tf_now_ms() + tf_scale_ms(60000),
	    why, sizeof(why));
	pthread_join(t, NULL);
	close(lfd);
	if (!ok)
		fail_msg("%s", why);
	printf("relay: %llu bytes, marker %s\n", r.bytes,
	    r.seen ? "seen" : "not seen");
	assert_true(r.bytes > 0);
	assert_int_equal(r.seen, want_seen);
}

static void test_relay(void **state)
{
	relayed("-", "-", true); // the scan works
	relayed("p0", "p1", false);
}

static const tf_role roles[] = {
	{ "party", role_party },
};

int main(int argc, char **argv)
{
	int handled;
	int rc = tf_run_role(
	    argc, argv, roles, sizeof(roles) / sizeof(roles[0]), &handled);
	if (handled)
		return rc;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mesh3),
		cmocka_unit_test(test_mesh3_secret),
		cmocka_unit_test(test_env),
		cmocka_unit_test(test_env_partial),
		cmocka_unit_test(test_wrong_ca),
		cmocka_unit_test(test_expired),
		cmocka_unit_test(test_other_party_cert),
		cmocka_unit_test(test_cn_only),
		cmocka_unit_test(test_tls_vs_plain),
		cmocka_unit_test(test_bad_files),
		cmocka_unit_test(test_relay),
	};
	if (argc < 2) {
		fprintf(stderr, "usage: %s TEST\n", argv[0]);
		return 1;
	}
	if (tw_test_select(
	        tests, sizeof(tests) / sizeof(tests[0]), "test_", argv[1])
	    != 0)
		return 1;
	// Made here, before any child: they share the folder.
	(void)tw_certs_make();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
