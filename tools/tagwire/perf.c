// tagwire perf: latency, bandwidth, message rate and collectives, per
// transport and message size.  This file reads the command line, checks
// it and dispatches to a mode: both ends here (perf_local.c), or one end
// of a tcp:// link to another host (perf_net.c).
//
// The command line is untrusted input like every other of the tool: each
// number goes through cli_parse_u64, each list item is checked, and every
// mistake is a usage error (exit 2) that names the argument.  A run that
// fails is exit 1 with the library's status name, or with the first wrong
// byte for --validate.  (TAGWIRE_PERF_CORRUPT is a test hook: see
// perf_run.c.)

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "link/coll.h"
#include "perf.h"

const char *const perf_transport_name[PERF_T_COUNT]
    = { "mem", "shm", "tcp", "ring" };
const char *const perf_kind_name[PERF_K_COUNT]
    = { "lat", "bw", "rate", "barrier", "allgather", "broadcast" };
static const char *const test_name[PERF_NTESTS]
    = { "lat", "bw", "rate", "coll" };

#define DEFAULT_TESTS (1u << PERF_LAT | 1u << PERF_BW | 1u << PERF_RATE)
#define DEFAULT_WINDOW 64
#define MAX_TIMEOUT_S 86400
#define MAX_DURATION_MS 3600000u
// What a run may hold at once on this host, all parties together; an
// allgather of n parties holds about 2 n^2 blocks of the size.
#define MAX_MEMORY ((uint64_t)16 << 30)

void perf_usage(FILE *f, bool full)
{
	fprintf(f, "%s\n", CLI_PERF_USAGE);
	if (!full)
		return;
	fprintf(f,
	    "\n"
	    "Measures the links of tagwire between parties started here "
	    "(--local, the\n"
	    "default) or between this host and another (--server on one, "
	    "--client on\n"
	    "the other).  Every test and size is one measurement: a "
	    "warm-up of a tenth\n"
	    "of its iterations, then the timed ones.\n"
	    "\n"
	    "perf options:\n"
	    "  --test LIST        comma separated, or all (default "
	    "lat,bw,rate):\n"
	    "                       lat   ping-pong; one way = round trip "
	    "/ 2: median,\n"
	    "                             p99 and max in us\n"
	    "                       bw    a stream of messages, "
	    "acknowledged at the end:\n"
	    "                             GB/s (1e9 bytes per second)\n"
	    "                       rate  messages with an "
	    "acknowledgement every --window:\n"
	    "                             millions of messages per second\n"
	    "                       coll  tw_barrier (dissemination), "
	    "tw_allgather (Bruck,\n"
	    "                             a ring for blocks from 1 MiB) "
	    "and tw_broadcast\n"
	    "                             from rank 0 (binomial tree, "
	    "scatter + ring from\n"
	    "                             16 MiB on 3 parties or more) for "
	    "each --parties:\n"
	    "                             us per operation, the mean over "
	    "the parties, and\n"
	    "                             the algorithm taken "
	    "(TAGWIRE_COLL_FORCE=small or\n"
	    "                             large takes either at every "
	    "size)\n"
	    "                       xfer  the transfer engine, alone "
	    "(see below)\n"
	    "  --transport LIST   mem (threads), shm, tcp (loopback) or "
	    "ring (a raw\n"
	    "                     tw_ring pair in shared memory); all but "
	    "mem run each\n"
	    "                     party in a process of its own (default "
	    "shm)\n"
	    "  --sizes LIST       message sizes in bytes, 0..1G; K, M, G "
	    "multiply by 1024,\n"
	    "                     1024^2, 1024^3 (default "
	    "8,4K,64K,1M,16M)\n"
	    "  --iters N          timed iterations per measurement, "
	    "1..%u (default:\n"
	    "                     by test and size, about 1 GiB per bw "
	    "figure)\n"
	    "  --duration S       instead, about S seconds per "
	    "measurement (0.001..3600)\n"
	    "  --window N         rate: messages per acknowledgement, 0 = "
	    "one at the end\n"
	    "                     (default %d)\n"
	    "  --stripes N        tcp: connections per pair of processes "
	    "(TW_OPT_STRIPES,\n"
	    "                     1..64, default 1)\n"
	    "  --shm-local        tcp: TW_OPT_SHM_LOCAL, so that the parties "
	    "(all on this\n"
	    "                     host) move to shared memory once the link "
	    "is up\n"
	    "  --parties LIST     coll: party counts, e.g. 2,4,8 or "
	    "2..16 (2..%d,\n"
	    "                     default 2,4,8); the other tests use 2\n"
	    "  --validate         fill every message with a pattern of "
	    "its size and\n"
	    "                     iteration, check every byte at the "
	    "receiver, and exit 1\n"
	    "                     at the first wrong one (slows bw and "
	    "rate)\n"
	    "  --timeout S        the longest any wait may last, in "
	    "seconds (default %d;\n"
	    "                     a server waits for its client without "
	    "limit unless given)\n"
	    "  --csv, --json      CSV with a header line, or a JSON array "
	    "of objects,\n"
	    "                     instead of a table\n"
	    "\n"
	    "modes:\n"
	    "  --local            both ends on this host (default)\n"
	    "  --server           wait for one client, run the tests it "
	    "asks for, exit\n"
	    "  --bind ADDR        the server's address, tcp://HOST:PORT "
	    "(default\n"
	    "                     tcp://0.0.0.0:%d; port 0 picks a free "
	    "one)\n"
	    "  --client HOST[:PORT]  connect to a server and run the "
	    "tests over tcp://\n"
	    "                     (two parties; the figures print here)\n"
	    "\n"
	    "A progress line goes to stderr when it is a terminal.\n",
	    PERF_MAX_ITERS, DEFAULT_WINDOW, PERF_MAX_PARTIES,
	    PERF_DEFAULT_TIMEOUT_S, PERF_DEFAULT_PORT);
	fprintf(f, "\n");
	perf_xfer_usage(f);
}

void cli_perf_help(FILE *f)
{
	perf_usage(f, true);
}

// ---------------------------------------------------------------------------
// Plans
// ---------------------------------------------------------------------------

size_t perf_pair_list(const perf_opts *o, perf_meas *out, size_t cap)
{
	static const int kinds[] = { PERF_K_LAT, PERF_K_BW, PERF_K_RATE };
	size_t n = 0;
	for (int t = 0; t < 3; t++) {
		if (!(o->tests & (1u << t)))
			continue;
		for (size_t s = 0; s < o->nsizes && n < cap; s++)
			out[n++] = (perf_meas) { kinds[t], o->sizes[s], 2 };
	}
	return n;
}

size_t perf_coll_list(const perf_opts *o, size_t n, perf_meas *out, size_t cap)
{
	size_t k = 0;
	if (!(o->tests & (1u << PERF_COLL)) || cap == 0)
		return 0;
	out[k++] = (perf_meas) { PERF_K_BARRIER, 0, n };
	for (size_t s = 0; s < o->nsizes && k < cap; s++)
		out[k++] = (perf_meas) { PERF_K_ALLGATHER, o->sizes[s], n };
	for (size_t s = 0; s < o->nsizes && k < cap; s++)
		out[k++] = (perf_meas) { PERF_K_BCAST, o->sizes[s], n };
	return k;
}

const char *perf_row_algorithm(int kind, size_t parties, uint64_t size)
{
	switch (kind) {
	case PERF_K_BARRIER:
		return tw__coll_algo(TW__COLL_BARRIER, parties, size);
	case PERF_K_ALLGATHER:
		return tw__coll_algo(TW__COLL_ALLGATHER, parties, size);
	case PERF_K_BCAST:
		return tw__coll_algo(TW__COLL_BCAST, parties, size);
	default:
		return "";
	}
}

void perf_label(char *buf, size_t cap, int transport, const perf_meas *m)
{
	char size[32];
	cli_fmt_bytes(size, sizeof(size), m->size);
	if (m->kind == PERF_K_BARRIER)
		snprintf(buf, cap, "%s barrier, %zu parties",
		    perf_transport_name[transport], m->parties);
	else if (m->kind == PERF_K_ALLGATHER || m->kind == PERF_K_BCAST)
		snprintf(buf, cap, "%s %s %s, %zu parties",
		    perf_transport_name[transport], perf_kind_name[m->kind],
		    size, m->parties);
	else
		snprintf(buf, cap, "%s %s %s", perf_transport_name[transport],
		    perf_kind_name[m->kind], size);
}

const char *perf_opts_check(const perf_opts *o)
{
	if (o->tests == 0 || o->tests >= 1u << PERF_NTESTS)
		return "no test, or an unknown one";
	if (o->nsizes == 0 || o->nsizes > PERF_MAX_SIZES)
		return "no size, or too many";
	for (size_t i = 0; i < o->nsizes; i++)
		if (o->sizes[i] > PERF_MAX_SIZE)
			return "a size above 1 GiB";
	if (o->iters > PERF_MAX_ITERS)
		return "too many iterations";
	if (o->duration_ms > MAX_DURATION_MS)
		return "a duration above an hour";
	if (o->iters > 0 && o->duration_ms > 0)
		return "both iterations and a duration";
	if (o->window > PERF_MAX_WINDOW)
		return "a window above a million";
	if (o->stripes < 1 || o->stripes > 64)
		return "stripes out of 1..64";
	return NULL;
}

tw_desc *perf_desc_new(const perf_opts *o, const char *link_id, int transport)
{
	tw_desc *d = tw_desc_new(link_id);
	if (d == NULL) {
		fprintf(stderr, "tagwire perf: tw_desc_new failed\n");
		return NULL;
	}
	int st = tw_desc_set(d, TW_OPT_RECV_TIMEOUT_MS, o->timeout_ms);
	if (st == TW_OK)
		st = tw_desc_set(d, TW_OPT_CONNECT_TIMEOUT_MS, o->timeout_ms);
	if (st == TW_OK && transport == PERF_T_TCP)
		st = tw_desc_set(d, TW_OPT_STRIPES, (int64_t)o->stripes);
	if (st == TW_OK && transport == PERF_T_TCP && o->shm_local)
		st = tw_desc_set(d, TW_OPT_SHM_LOCAL, 1);
	if (st != TW_OK) {
		fprintf(stderr, "tagwire perf: tw_desc_set: %s\n",
		    tw_err_name(st));
		tw_desc_free(d);
		return NULL;
	}
	return d;
}

// ---------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------

static int usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return cli_usage_error("perf", "%s", msg);
}

// Calls item(ctx, s) for each comma separated item of list (copied, so
// that items are NUL terminated); stops at the first that fails, and at an
// empty item, which fails.
static int each_item(const char *list, void *ctx,
    int (*item)(void *ctx, const char *s), const char **bad)
{
	char buf[1024];
	if (strlen(list) >= sizeof(buf)) {
		*bad = "the list is too long";
		return -1;
	}
	snprintf(buf, sizeof(buf), "%s", list);
	char *p = buf;
	for (;;) {
		char *comma = strchr(p, ',');
		if (comma != NULL)
			*comma = '\0';
		if (*p == '\0' || item(ctx, p) != 0) {
			*bad = *p == '\0' ? "an empty item" : NULL;
			return -1;
		}
		if (comma == NULL)
			return 0;
		p = comma + 1;
	}
}

static char bad_item[80];

static void note_bad(const char *s)
{
	snprintf(bad_item, sizeof(bad_item), "%.64s", s);
}

static int test_item(void *ctx, const char *s)
{
	unsigned *tests = ctx;
	if (strcmp(s, "all") == 0) {
		*tests |= (1u << PERF_NTESTS) - 1;
		return 0;
	}
	for (int t = 0; t < PERF_NTESTS; t++)
		if (strcmp(s, test_name[t]) == 0) {
			*tests |= 1u << t;
			return 0;
		}
	note_bad(s);
	return -1;
}

static int transport_item(void *ctx, const char *s)
{
	perf_opts *o = ctx;
	for (int t = 0; t < PERF_T_COUNT; t++) {
		if (strcmp(s, perf_transport_name[t]) != 0)
			continue;
		for (size_t i = 0; i < o->ntransports; i++)
			if (o->transport[i] == t)
				return 0; // named twice: run once
		o->transport[o->ntransports++] = t;
		return 0;
	}
	note_bad(s);
	return -1;
}

static int size_item(void *ctx, const char *s)
{
	perf_opts *o = ctx;
	uint64_t v;
	if (o->nsizes >= PERF_MAX_SIZES
	    || cli_parse_u64(s, 0, PERF_MAX_SIZE, 1, &v) != 0) {
		note_bad(s);
		return -1;
	}
	o->sizes[o->nsizes++] = v;
	return 0;
}

static int add_parties(perf_opts *o, uint64_t n)
{
	for (size_t i = 0; i < o->nparties; i++)
		if (o->parties[i] == n)
			return 0;
	if (o->nparties >= PERF_MAX_PARTY_COUNTS)
		return -1;
	o->parties[o->nparties++] = (size_t)n;
	return 0;
}

// "N" or "A..B" (every count from A to B).
static int parties_item(void *ctx, const char *s)
{
	perf_opts *o = ctx;
	uint64_t a, b;
	const char *dots = strstr(s, "..");
	char first[32];
	note_bad(s);
	if (dots == NULL)
		return cli_parse_u64(s, 2, PERF_MAX_PARTIES, 0, &a) != 0
		    ? -1
		    : add_parties(o, a);
	if ((size_t)(dots - s) >= sizeof(first))
		return -1;
	memcpy(first, s, (size_t)(dots - s));
	first[dots - s] = '\0';
	if (cli_parse_u64(first, 2, PERF_MAX_PARTIES, 0, &a) != 0
	    || cli_parse_u64(dots + 2, 2, PERF_MAX_PARTIES, 0, &b) != 0
	    || a > b)
		return -1;
	for (uint64_t n = a; n <= b; n++)
		if (add_parties(o, n) != 0)
			return -1;
	return 0;
}

// Seconds with up to three decimals, "2" or "0.25", into milliseconds.
static int parse_seconds(
    const char *s, uint64_t min_ms, uint64_t max_ms, uint64_t *out)
{
	char whole[24];
	const char *dot = strchr(s, '.');
	size_t wl = dot != NULL ? (size_t)(dot - s) : strlen(s);
	uint64_t sec, ms = 0;
	if (wl == 0 || wl >= sizeof(whole))
		return -1;
	memcpy(whole, s, wl);
	whole[wl] = '\0';
	if (cli_parse_u64(whole, 0, max_ms / 1000, 0, &sec) != 0)
		return -1;
	if (dot != NULL) {
		size_t fl = strlen(dot + 1);
		if (fl == 0 || fl > 3)
			return -1;
		for (size_t i = 0; i < 3; i++) {
			char c = i < fl ? dot[1 + i] : '0';
			if (c < '0' || c > '9')
				return -1;
			ms = ms * 10 + (uint64_t)(c - '0');
		}
	}
	ms += sec * 1000;
	if (ms < min_ms || ms > max_ms)
		return -1;
	*out = ms;
	return 0;
}

// The options that take a value, as "--name VALUE" or "--name=VALUE".
static const char *const value_opts[] = { "--test", "--transport", "--sizes",
	"--iters", "--duration", "--stripes", "--window", "--parties",
	"--bind", "--client", "--timeout" };
static const char *const flag_opts[] = { "--validate", "--local", "--server",
	"--csv", "--json", "--shm-local" };

#define NVALUE (sizeof(value_opts) / sizeof(value_opts[0]))
#define NFLAG (sizeof(flag_opts) / sizeof(flag_opts[0]))

// What the command line named, to tell given options from defaults.
typedef struct seen {
	bool opt[NVALUE + NFLAG];
} seen;

enum {
	O_TEST,
	O_TRANSPORT,
	O_SIZES,
	O_ITERS,
	O_DURATION,
	O_STRIPES,
	O_WINDOW,
	O_PARTIES,
	O_BIND,
	O_CLIENT,
	O_TIMEOUT,
	O_VALIDATE,
	O_LOCAL,
	O_SERVER,
	O_CSV,
	O_JSON,
	O_SHM_LOCAL
};

// The option at argv[*i]: its index (value options first), with *val its
// value (NULL when missing) for a value option; -1 when it is none.
static int opt_find(int argc, char **argv, int *i, const char **val)
{
	const char *a = argv[*i];
	for (size_t k = 0; k < NVALUE; k++) {
		size_t n = strlen(value_opts[k]);
		if (strncmp(a, value_opts[k], n) != 0
		    || (a[n] != '=' && a[n] != '\0'))
			continue;
		if (a[n] == '=')
			*val = a + n + 1;
		else
			*val = *i + 1 < argc ? argv[++*i] : NULL;
		return (int)k;
	}
	for (size_t k = 0; k < NFLAG; k++)
		if (strcmp(a, flag_opts[k]) == 0)
			return (int)(NVALUE + k);
	return -1;
}

static int list_opt(const char *name, const char *val, void *ctx,
    int (*item)(void *, const char *), const char *want)
{
	const char *why = NULL;
	bad_item[0] = '\0';
	if (each_item(val, ctx, item, &why) == 0)
		return 0;
	if (why != NULL)
		return usage(
		    "%s: %s in '%.64s'; it wants %s", name, why, val, want);
	return usage("%s wants %s, not '%s'", name, want, bad_item);
}

static int set_value(perf_opts *o, int k, const char *val)
{
	switch (k) {
	case O_TEST:
		o->tests = 0;
		return list_opt("--test", val, &o->tests, test_item,
		    "lat, bw, rate, coll or all");
	case O_TRANSPORT:
		o->ntransports = 0;
		return list_opt("--transport", val, o, transport_item,
		    "mem, shm, tcp or ring");
	case O_SIZES:
		o->nsizes = 0;
		return list_opt("--sizes", val, o, size_item,
		    "up to 32 sizes of 0 to 1G bytes (suffixes K, M, G)");
	case O_PARTIES:
		o->nparties = 0;
		return list_opt("--parties", val, o, parties_item,
		    "party counts from 2 to 64, as N or A..B");
	case O_ITERS:
		if (cli_parse_u64(val, 1, PERF_MAX_ITERS, 0, &o->iters) != 0)
			return usage("--iters wants a number from 1 to %u, "
			             "not '%.32s'",
			    PERF_MAX_ITERS, val);
		return 0;
	case O_DURATION:
		if (parse_seconds(val, 1, MAX_DURATION_MS, &o->duration_ms)
		    != 0)
			return usage("--duration wants seconds from 0.001 to "
			             "3600, not '%.32s'",
			    val);
		return 0;
	case O_STRIPES:
		if (cli_parse_u64(val, 1, 64, 0, &o->stripes) != 0)
			return usage("--stripes wants a number from 1 to 64, "
			             "not '%.32s'",
			    val);
		return 0;
	case O_WINDOW:
		if (cli_parse_u64(val, 0, PERF_MAX_WINDOW, 0, &o->window) != 0)
			return usage("--window wants a number from 0 to %u, "
			             "not '%.32s'",
			    PERF_MAX_WINDOW, val);
		return 0;
	case O_TIMEOUT: {
		uint64_t s;
		if (cli_parse_u64(val, 1, MAX_TIMEOUT_S, 0, &s) != 0)
			return usage("--timeout wants seconds from 1 to %d, "
			             "not '%.32s'",
			    MAX_TIMEOUT_S, val);
		o->timeout_ms = (int64_t)s * 1000;
		return 0;
	}
	case O_BIND:
		o->bind = val;
		return 0;
	case O_CLIENT:
		if (*val == '\0')
			return usage("--client wants HOST or HOST:PORT");
		o->server = val;
		return 0;
	}
	return 0;
}

static void set_flag(perf_opts *o, int k)
{
	switch (k) {
	case O_VALIDATE:
		o->validate = true;
		break;
	case O_LOCAL:
		o->mode = PERF_MODE_LOCAL;
		break;
	case O_SERVER:
		o->mode = PERF_MODE_SERVER;
		break;
	case O_CLIENT:
		o->mode = PERF_MODE_CLIENT;
		break;
	case O_CSV:
		o->format = PERF_FMT_CSV;
		break;
	case O_JSON:
		o->format = PERF_FMT_JSON;
		break;
	case O_SHM_LOCAL:
		o->shm_local = true;
		break;
	}
}

// The options a server takes from its client's plan.
static const int plan_opts[]
    = { O_TEST, O_SIZES, O_ITERS, O_DURATION, O_STRIPES, O_WINDOW, O_PARTIES,
	      O_VALIDATE, O_CSV, O_JSON, O_SHM_LOCAL };

static int check_modes(perf_opts *o, const seen *s)
{
	int modes = s->opt[O_LOCAL] + s->opt[O_SERVER] + s->opt[O_CLIENT];
	if (modes > 1)
		return usage("--local, --server and --client exclude each "
		             "other");
	if (s->opt[O_BIND] && o->mode != PERF_MODE_SERVER)
		return usage("--bind goes with --server");
	if (s->opt[O_CSV] && s->opt[O_JSON])
		return usage("--csv and --json exclude each other");
	if (s->opt[O_ITERS] && s->opt[O_DURATION])
		return usage("--iters and --duration exclude each other");
	if (o->mode == PERF_MODE_SERVER) {
		for (size_t i = 0; i < sizeof(plan_opts) / sizeof(int); i++)
			if (s->opt[plan_opts[i]])
				return usage("--server runs what its client "
				             "asks for: give %s to the client",
				    plan_opts[i] < (int)NVALUE
				        ? value_opts[plan_opts[i]]
				        : flag_opts[plan_opts[i] - NVALUE]);
	}
	if (o->mode == PERF_MODE_LOCAL)
		return 0;
	for (size_t i = 0; s->opt[O_TRANSPORT] && i < o->ntransports; i++)
		if (o->transport[i] != PERF_T_TCP)
			return usage("--%s runs over tcp only, not %s",
			    o->mode == PERF_MODE_SERVER ? "server" : "client",
			    perf_transport_name[o->transport[i]]);
	if (s->opt[O_PARTIES] && (o->nparties != 1 || o->parties[0] != 2))
		return usage("--client runs two parties: itself and the "
		             "server");
	o->transport[0] = PERF_T_TCP;
	o->ntransports = 1;
	o->parties[0] = 2;
	o->nparties = 1;
	return 0;
}

// Runs that cannot work: coll over ring alone, or more memory than a host
// should give.
static int check_run(const perf_opts *o)
{
	bool ring_only = true;
	for (size_t i = 0; i < o->ntransports; i++)
		ring_only = ring_only && o->transport[i] == PERF_T_RING;
	if (o->tests == 1u << PERF_COLL && ring_only)
		return usage("coll needs a link: ring has no collectives");
	uint64_t big = 0;
	size_t most = 2;
	for (size_t i = 0; i < o->nsizes; i++)
		big = o->sizes[i] > big ? o->sizes[i] : big;
	for (size_t i = 0; (o->tests & 1u << PERF_COLL) && i < o->nparties;
	     i++)
		most = o->parties[i] > most ? o->parties[i] : most;
	if (big * 2 * most * most > MAX_MEMORY) {
		char need[32];
		cli_fmt_bytes(need, sizeof(need), big * 2 * most * most);
		return usage("%zu parties with messages of %llu bytes would "
		             "hold about %s at once; lower --parties or "
		             "--sizes",
		    most, (unsigned long long)big, need);
	}
	return 0;
}

int cli_perf(int argc, char **argv)
{
	perf_opts o;
	memset(&o, 0, sizeof(o));
	o.tests = DEFAULT_TESTS;
	o.transport[0] = PERF_T_SHM;
	o.ntransports = 1;
	static const uint64_t sizes[] = { 8, 4096, 65536, 1 << 20, 16 << 20 };
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		o.sizes[o.nsizes++] = sizes[i];
	o.parties[0] = 2;
	o.parties[1] = 4;
	o.parties[2] = 8;
	o.nparties = 3;
	o.window = DEFAULT_WINDOW;
	o.stripes = 1;
	o.mode = PERF_MODE_LOCAL;
	o.bind = NULL;
	o.format = PERF_FMT_TABLE;
	o.timeout_ms = (int64_t)PERF_DEFAULT_TIMEOUT_S * 1000;
	// --test xfer has options of its own (perf_xfer.c).
	for (int i = 1; i < argc; i++) {
		const char *t = strncmp(argv[i], "--test=", 7) == 0
		    ? argv[i] + 7
		    : strcmp(argv[i], "--test") == 0 && i + 1 < argc
		    ? argv[i + 1]
		    : NULL;
		if (t != NULL && strstr(t, "xfer") != NULL)
			return perf_xfer(argc, argv);
	}
	seen s;
	memset(&s, 0, sizeof(s));
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *val = NULL;
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			perf_usage(stdout, true);
			return CLI_OK;
		}
		int k = opt_find(argc, argv, &i, &val);
		if (k < 0)
			return usage("%s '%.64s'",
			    a[0] == '-' ? "unknown option"
			                : "unexpected argument",
			    a);
		s.opt[k] = true;
		if (k >= (int)NVALUE) {
			set_flag(&o, k);
			continue;
		}
		if (val == NULL)
			return usage("%s needs a value", value_opts[k]);
		if (set_value(&o, k, val) != 0)
			return CLI_USAGE;
		if (k == O_CLIENT)
			set_flag(&o, k);
	}
	o.timeout_set = s.opt[O_TIMEOUT];
	if (check_modes(&o, &s) != 0 || check_run(&o) != 0)
		return CLI_USAGE;
	switch (o.mode) {
	case PERF_MODE_SERVER:
		return perf_server(&o);
	case PERF_MODE_CLIENT:
		return perf_client(&o);
	default:
		return perf_local(&o);
	}
}
