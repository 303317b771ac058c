// tagwire perf --server / --client: the two ends of a two-party tcp://
// link across hosts.  The client is rank 0: it leads every measurement,
// keeps the time and prints the report; the server is rank 1 and follows.
//
// Design notes.  A link needs every party's address before it exists, and
// a server cannot know in advance where its client will come from.  It
// need not: of two tcp:// parties the one whose address sorts first
// connects, and the other only checks that the connecting party is the
// one that should connect (tcp_node.c); it never connects to that address
// or compares it with the socket's.  So the server names its client with
// a placeholder that sorts before its own address and waits to be
// connected to, and the client names itself with a real, bound address
// chosen to sort before the server's, and connects.  Both ends then agree
// on the direction, which is all the addresses decide.
//
// The client's first message is its plan: the tests, sizes and counts
// that both ends derive the list of measurements from.  The server checks
// it like a command line, since anyone who reaches its port can send one
// (see "Security" in the README: without a secret, anyone can).

#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "cli.h"
#include "perf.h"

#define LINK_ID "perf"
#define TAG_PLAN "perf.plan"
#define PLAN_MAGIC 0x3130465245505754ull // "TWPERF01" as little endian
#define PLAN_FIXED 7 // 64-bit fields before the sizes
#define CLIENT_PLACEHOLDER "tcp://-client-:1"
#define ADDR_MAX 300
#define HOST_MAX 253

// ---------------------------------------------------------------------------
// Addresses
// ---------------------------------------------------------------------------

typedef struct net_addr {
	char host[HOST_MAX + 1];
	unsigned port;
	bool v6; // written in brackets
	char url[ADDR_MAX]; // "tcp://HOST:PORT"
} net_addr;

static void addr_url(net_addr *a)
{
	snprintf(a->url, sizeof(a->url), "tcp://%s%s%s:%u", a->v6 ? "[" : "",
	    a->host, a->v6 ? "]" : "", a->port);
}

// "tcp://HOST:PORT", "HOST:PORT" or "HOST" (port `def`); HOST is a name,
// an IPv4 address or an IPv6 one in brackets, as tcp:// addresses take
// them.  Port 0 only with `zero`.  0, or -1 when malformed.
static int addr_parse(const char *s, unsigned def, bool zero, net_addr *a)
{
	if (strncmp(s, "tcp://", 6) == 0)
		s += 6;
	const char *h = s, *h_end, *rest;
	a->v6 = *s == '[';
	if (a->v6) {
		h = s + 1;
		if ((h_end = strchr(h, ']')) == NULL)
			return -1;
		rest = h_end + 1;
		for (const char *c = h; c < h_end; c++)
			if (!strchr("0123456789abcdefABCDEF:.", *c))
				return -1;
	} else {
		rest = strchr(s, ':');
		h_end = rest != NULL ? rest : s + strlen(s);
		for (const char *c = h; c < h_end; c++)
			if (!(*c == '-' || *c == '.'
			        || (*c >= '0' && *c <= '9')
			        || (*c >= 'a' && *c <= 'z')
			        || (*c >= 'A' && *c <= 'Z')))
				return -1;
		if (rest == NULL)
			rest = h_end;
	}
	size_t hl = (size_t)(h_end - h);
	if (hl == 0 || hl > HOST_MAX || h[0] == '-' || h[0] == '.')
		return -1;
	memcpy(a->host, h, hl);
	a->host[hl] = '\0';
	uint64_t port = def;
	if (*rest != '\0'
	    && (*rest != ':'
	        || cli_parse_u64(rest + 1, zero ? 0 : 1, 65535, 0, &port)
	            != 0))
		return -1;
	a->port = (unsigned)port;
	addr_url(a);
	return 0;
}

// The client's own address: bound on loopback if that sorts before the
// server's, on every interface otherwise (which sorts before any name or
// address but a few that start with "0").
static int client_addr(const net_addr *server, net_addr *self)
{
	static const char *const hosts[] = { "127.0.0.1", "0.0.0.0" };
	for (size_t i = 0; i < 2; i++) {
		snprintf(self->host, sizeof(self->host), "%s", hosts[i]);
		self->v6 = false;
		if (cli_free_ports(self->host, &self->port, 1) != 0)
			return CLI_FAILED;
		addr_url(self);
		if (strcmp(self->url, server->url) < 0)
			return CLI_OK;
	}
	return cli_usage_error("perf",
	    "--client cannot connect to %s: name the server by another "
	    "address",
	    server->url);
}

static tw_desc *net_desc(const perf_opts *o, int64_t connect_ms,
    const char *client, const char *server)
{
	tw_desc *d = perf_desc_new(o, LINK_ID, PERF_T_TCP);
	if (d == NULL)
		return NULL;
	int st = tw_desc_set(d, TW_OPT_CONNECT_TIMEOUT_MS, connect_ms);
	if (st == TW_OK)
		st = tw_desc_add_party(d, "client", client);
	if (st == TW_OK)
		st = tw_desc_add_party(d, "server", server);
	if (st != TW_OK) {
		fprintf(stderr, "tagwire perf: describing the link: %s\n",
		    tw_err_name(st));
		tw_desc_free(d);
		return NULL;
	}
	return d;
}

// ---------------------------------------------------------------------------
// Plans
// ---------------------------------------------------------------------------

static size_t plan_encode(const perf_opts *o, unsigned char *p)
{
	const uint64_t f[PLAN_FIXED] = { PLAN_MAGIC, o->tests, o->iters,
		o->duration_ms, o->window, o->validate, o->nsizes };
	for (size_t i = 0; i < PLAN_FIXED; i++)
		cli_put64(p + 8 * i, f[i]);
	for (size_t i = 0; i < o->nsizes; i++)
		cli_put64(p + 8 * (PLAN_FIXED + i), o->sizes[i]);
	return 8 * (PLAN_FIXED + o->nsizes);
}

// The server's options for the client's plan: NULL, or what is wrong.
static const char *plan_decode(const tw_buf *b, perf_opts *o)
{
	const unsigned char *p = b->data;
	if (b->len < 8 * PLAN_FIXED || b->len % 8 != 0
	    || cli_get64(p) != PLAN_MAGIC)
		return "not a plan of this version";
	uint64_t nsizes = cli_get64(p + 48);
	if (nsizes > PERF_MAX_SIZES || b->len != 8 * (PLAN_FIXED + nsizes))
		return "a wrong number of sizes";
	uint64_t tests = cli_get64(p + 8), validate = cli_get64(p + 40);
	if (tests >= 1u << PERF_NTESTS || validate > 1)
		return "unknown tests or flags";
	o->tests = (unsigned)tests;
	o->iters = cli_get64(p + 16);
	o->duration_ms = cli_get64(p + 24);
	o->window = cli_get64(p + 32);
	o->validate = validate == 1;
	o->nsizes = (size_t)nsizes;
	for (size_t i = 0; i < o->nsizes; i++)
		o->sizes[i] = cli_get64(p + 8 * (PLAN_FIXED + i));
	o->transport[0] = PERF_T_TCP;
	o->ntransports = 1;
	o->parties[0] = 2;
	o->nparties = 1;
	return perf_opts_check(o);
}

static size_t plan_count(const perf_opts *o)
{
	perf_meas tmp[1 + 3 * PERF_MAX_SIZES];
	return perf_pair_list(o, tmp, sizeof(tmp) / sizeof(tmp[0]))
	    + perf_coll_list(o, 2, tmp, sizeof(tmp) / sizeof(tmp[0]));
}

// Both ends' measurements, in the order of the plan.
static int net_run(tw_link *l, bool lead, const perf_opts *o,
    const perf_sink *sink, char *err, size_t cap)
{
	perf_ep ep;
	perf_ep_link(&ep, l, lead ? 1 : 0);
	int rv = perf_pair_run(&ep, lead, o, PERF_T_TCP, sink, err, cap);
	if (rv == 0)
		rv = perf_coll_run(l, o, PERF_T_TCP, sink, err, cap);
	return rv;
}

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

static void quiet_start(void *ctx, int transport, const perf_meas *m)
{
	(void)ctx;
	(void)transport;
	(void)m;
}

static void quiet_row(void *ctx, const perf_row *r)
{
	(void)ctx;
	(void)r;
}

static void quiet_fail(void *ctx, const char *msg)
{
	(void)ctx;
	(void)msg;
}

static int serve(tw_link *l, const perf_opts *o)
{
	char err[PERF_MSG_MAX];
	tw_buf b = { 0 };
	int st = tw_recv(l, 0, TAG_PLAN, &b);
	if (st != TW_OK) {
		perf_status_msg(err, sizeof(err), "the client's plan", st);
		fprintf(stderr, "tagwire perf: %s\n", err);
		return CLI_FAILED;
	}
	perf_opts plan = *o;
	const char *bad = plan_decode(&b, &plan);
	tw_buf_free(&b);
	if (bad != NULL) {
		snprintf(
		    err, sizeof(err), "the server refused the plan: %s", bad);
		fprintf(stderr, "tagwire perf: %s\n", err);
		(void)tw_send(l, 0, PERF_TAG_FAIL, err, strlen(err));
		return CLI_FAILED;
	}
	size_t n = plan_count(&plan);
	fprintf(stderr,
	    "tagwire perf: a client connected; running %zu measurement%s\n", n,
	    n == 1 ? "" : "s");
	perf_sink sink = { quiet_start, quiet_row, quiet_fail, NULL };
	if (net_run(l, false, &plan, &sink, err, sizeof(err)) != 0) {
		fprintf(stderr, "tagwire perf: %s\n", err);
		return CLI_FAILED;
	}
	fprintf(stderr, "tagwire perf: done\n");
	return CLI_OK;
}

int perf_server(const perf_opts *o)
{
	net_addr self;
	const char *bind = o->bind;
	char def[64];
	if (bind == NULL) {
		snprintf(
		    def, sizeof(def), "tcp://0.0.0.0:%d", PERF_DEFAULT_PORT);
		bind = def;
	}
	if (addr_parse(bind, PERF_DEFAULT_PORT, true, &self) != 0)
		return cli_usage_error(
		    "perf", "--bind wants tcp://HOST:PORT, not '%.64s'", bind);
	if (self.port == 0) {
		if (cli_free_ports(self.host, &self.port, 1) != 0)
			return CLI_FAILED;
		addr_url(&self);
	}
	if (strcmp(CLIENT_PLACEHOLDER, self.url) >= 0)
		return cli_usage_error(
		    "perf", "--bind: cannot serve on %s", self.url);
	// Waiting for a client is the server's job: without --timeout, as
	// long as the library allows.
	int64_t wait = o->timeout_set ? o->timeout_ms : (int64_t)1 << 31;
	tw_desc *d = net_desc(o, wait, CLIENT_PLACEHOLDER, self.url);
	if (d == NULL)
		return CLI_FAILED;
	fprintf(
	    stderr, "tagwire perf: waiting for a client on %s\n", self.url);
	fflush(stderr);
	tw_link *l = NULL;
	int st = tw_link_create(d, 1, &l);
	tw_desc_free(d);
	if (st != TW_OK) {
		char err[PERF_MSG_MAX];
		perf_status_msg(err, sizeof(err), "tw_link_create", st);
		fprintf(stderr, "tagwire perf: no client: %s\n", err);
		return CLI_FAILED;
	}
	int rc = serve(l, o);
	(void)tw_link_close(l);
	return rc;
}

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

static void out_start(void *ctx, int transport, const perf_meas *m)
{
	(void)ctx;
	perf_out_start(transport, m);
}

static void out_row(void *ctx, const perf_row *r)
{
	(void)ctx;
	perf_out_row(r);
}

int perf_client(const perf_opts *o)
{
	net_addr server, self;
	if (addr_parse(o->server, PERF_DEFAULT_PORT, false, &server) != 0)
		return cli_usage_error("perf",
		    "--client wants HOST or HOST:PORT, not '%.64s'",
		    o->server);
	int rc = client_addr(&server, &self);
	if (rc != CLI_OK)
		return rc;
	tw_desc *d = net_desc(o, o->timeout_ms, self.url, server.url);
	if (d == NULL)
		return CLI_FAILED;
	tw_link *l = NULL;
	int st = tw_link_create(d, 0, &l);
	tw_desc_free(d);
	char err[PERF_MSG_MAX];
	if (st != TW_OK) {
		perf_status_msg(err, sizeof(err), "tw_link_create", st);
		fprintf(stderr,
		    "tagwire perf: cannot reach the server at %s: "
		    "%s\n",
		    server.url, err);
		return CLI_FAILED;
	}
	unsigned char plan[8 * (PLAN_FIXED + PERF_MAX_SIZES)];
	size_t len = plan_encode(o, plan);
	perf_sink sink = { out_start, out_row, quiet_fail, NULL };
	perf_out_begin(o->format, plan_count(o));
	int rv = 0;
	st = tw_send(l, 1, TAG_PLAN, plan, len);
	if (st != TW_OK) {
		perf_status_msg(err, sizeof(err), "sending the plan", st);
		rv = -1;
	}
	if (rv == 0)
		rv = net_run(l, true, o, &sink, err, sizeof(err));
	st = tw_link_close(l);
	perf_out_end();
	if (rv != 0) {
		fprintf(stderr, "tagwire perf: %s\n", err);
		return CLI_FAILED;
	}
	(void)st; // the server has acknowledged everything already
	return CLI_OK;
}
