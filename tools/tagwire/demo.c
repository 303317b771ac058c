// tagwire demo: starts N local parties, forms a mesh, exchanges messages,
// runs every collective, a bulk exchange and child links, validates every
// byte and prints a report (the phases are in demo_phases.c).
//
// The demo is built around a transport name: each transport is an address
// scheme in demo_transports[], and one that this build of the library does
// not carry is a usage error (exit 2) that says so.

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>

#include "cli.h"
#include "demo.h"
#include "transport/transport.h"

#define DEFAULT_PARTIES 4
#define DEFAULT_SIZE (4 * 1024 * 1024)
#define MAX_SIZE ((uint64_t)1 << 30)
// The bulk phase holds about three buffers of --size per party at once
// (its own send and receive buffers, and the copy in transit); refuse runs
// that would need more than this rather than let the system kill us.
#define MAX_BULK_MEMORY ((uint64_t)16 << 30)
// Demo links fail rather than hang: a receive gives up after this long,
// and link creation too.  Every party is a thread of this one process, so
// on a machine of few CPUs a receive may wait while its peer serves all
// the others: both limits grow with the pairs of parties (at 64 parties, a
// phase of the point-to-point part takes about 15 s on two busy CPUs).
// They stay far beyond what a healthy run needs, sanitizer builds included.
#define DEMO_RECV_TIMEOUT_MS 20000
#define DEMO_RECV_TIMEOUT_PER_PAIR_MS 10
#define DEMO_CONNECT_TIMEOUT_MS 10000
#define DEMO_CONNECT_TIMEOUT_PER_PAIR_MS 2
// A window above the messages a party ever leaves unconsumed at a peer
// (P2P_MSGS), so that throttled sends run the acknowledgement path
// without ever having to wait.
#define DEMO_THROTTLE_WINDOW 64

typedef struct demo_transport {
	const char *name;
	// Writes party `rank`'s address into buf[cap]; NULL while the demo
	// does not yet know how to start parties of this transport.
	void (*addr)(char *buf, size_t cap, size_t rank);
} demo_transport;

static void mem_addr(char *buf, size_t cap, size_t rank)
{
	snprintf(buf, cap, "mem://p%zu", rank);
}

// Shared-memory names are host-wide: the pid keeps two demos apart.
static void shm_addr(char *buf, size_t cap, size_t rank)
{
	snprintf(buf, cap, "shm://demo%ld.p%zu", (long)getpid(), rank);
}

// Loopback ports that are free now (cli_free_ports), for the parties to
// bind.  Another program could bind one first; that shows as a bind failure
// (TW_ESYS) in the report, never as a wrong result.
static unsigned tcp_ports[DEMO_MAX_PARTIES];

static void tcp_pick_ports(void)
{
	if (cli_free_ports("127.0.0.1", tcp_ports, DEMO_MAX_PARTIES) != 0)
		memset(tcp_ports, 0, sizeof(tcp_ports));
}

static void tcp_addr(char *buf, size_t cap, size_t rank)
{
	if (rank == 0)
		tcp_pick_ports();
	snprintf(buf, cap, "tcp://127.0.0.1:%u",
	    rank < DEMO_MAX_PARTIES ? tcp_ports[rank] : 0);
}

static const demo_transport demo_transports[] = {
	{ "mem", mem_addr },
	{ "shm", shm_addr },
	{ "tcp", tcp_addr },
};
#define NTRANSPORTS (sizeof(demo_transports) / sizeof(demo_transports[0]))

static bool library_has(const char *scheme)
{
	for (const char *const *n = tw__transport_names(); *n != NULL; n++)
		if (strcmp(*n, scheme) == 0)
			return true;
	return false;
}

static bool runnable(const demo_transport *t)
{
	return t->addr != NULL && library_has(t->name);
}

// Writes the transports the demo can run now, "mem, shm", into buf[cap].
static void runnable_list(char *buf, size_t cap)
{
	size_t used = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < NTRANSPORTS; i++) {
		if (!runnable(&demo_transports[i]))
			continue;
		int k = snprintf(buf + used, cap - used, "%s%s",
		    used ? ", " : "", demo_transports[i].name);
		if (k < 0 || (size_t)k >= cap - used)
			break;
		used += (size_t)k;
	}
}

void cli_demo_help(FILE *f)
{
	char runs[64];
	runnable_list(runs, sizeof(runs));
	fprintf(f,
	    "usage: tagwire demo [--parties N] [--transport NAME] "
	    "[--size BYTES] [--shm-local]\n"
	    "\n"
	    "demo options:\n"
	    "  --parties N        parties to start, 1..%d (default %d)\n"
	    "  --transport NAME   how the parties connect (default mem); "
	    "this build\n"
	    "                     runs: %s\n"
	    "  --size BYTES       bytes of each bulk message, 0..1G "
	    "(default 4M); K, M, G\n"
	    "                     (or KiB, MiB, GiB) multiply by 1024, "
	    "1024^2, 1024^3\n"
	    "  --shm-local        with tcp: TW_OPT_SHM_LOCAL, so that the "
	    "parties (all on\n"
	    "                     this host) move to shared memory once the "
	    "link is up\n",
	    DEMO_MAX_PARTIES, DEFAULT_PARTIES, runs);
}

int64_t demo_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

bool demo_step(demo_run *run)
{
	return pthread_barrier_wait(&run->step)
	    == PTHREAD_BARRIER_SERIAL_THREAD;
}

int demo_fail(demo_party *p, const char *fmt, ...)
{
	demo_run *run = p->run;
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&run->mtx);
	if (run->nfail++ == 0) {
		run->first_phase = p->phase;
		snprintf(run->first_msg, sizeof(run->first_msg),
		    "party %zu: %s", p->rank, msg);
	}
	run->phase_fail[p->phase]++;
	pthread_mutex_unlock(&run->mtx);
	atomic_store(&run->failed, 1);
	// Peers that wait on this party now get TW_EPEER at once, instead
	// of at their receive timeout.
	if (p->link != NULL)
		tw_link_abort(p->link);
	return -1;
}

// ---------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------

static void report_line(demo_run *run, int ph)
{
	size_t n = run->cfg->parties;
	int64_t t0 = INT64_MAX, t1 = 0;
	for (size_t i = 0; i < n; i++) {
		if (run->parties[i].t0[ph] < t0)
			t0 = run->parties[i].t0[ph];
		if (run->parties[i].t1[ph] > t1)
			t1 = run->parties[i].t1[ph];
	}
	char detail[80], extra[64] = "";
	demo_phase_detail(run, ph, detail, sizeof(detail));
	pthread_mutex_lock(&run->mtx);
	size_t fails = run->phase_fail[ph];
	pthread_mutex_unlock(&run->mtx);
	int64_t xfer_ns = 0;
	if (ph == PH_BULK && fails == 0 && n > 1) {
		// The rate counts the rounds' transfers only (demo_phases.c
		// times them apart from filling and checking the buffers).
		for (size_t k = 1; k < n; k++)
			xfer_ns += atomic_load(&run->bulk_round_ns[k]);
		double bytes = (double)run->cfg->size * (double)(n * (n - 1));
		if (xfer_ns > 0)
			snprintf(extra, sizeof(extra), "  (%.2f GB/s)",
			    bytes / (double)xfer_ns);
	}
	printf("  %-23s %-36s %-6s%6.1f ms%s\n", demo_phase_title[ph], detail,
	    fails ? "FAILED" : "ok", (double)(t1 - t0) / 1e6, extra);
	if (xfer_ns > 0)
		printf("    %.1f ms of it in transfers, the rest filling and "
		       "checking buffers\n",
		    (double)xfer_ns / 1e6);
	if (fails) {
		pthread_mutex_lock(&run->mtx);
		if (run->first_phase == ph)
			printf("    %s\n", run->first_msg);
		size_t more = run->first_phase == ph ? fails - 1 : fails;
		pthread_mutex_unlock(&run->mtx);
		if (more > 0)
			printf("    (and %zu more failure%s on other parties, "
			       "which may follow from the first)\n",
			    more, more == 1 ? "" : "s");
	}
	fflush(stdout);
}

// ---------------------------------------------------------------------------
// Parties
// ---------------------------------------------------------------------------

// Threads are started behind a gate, so that a failed pthread_create can
// send the ones already running home before any of them enters the phase
// barrier (which would otherwise wait for the missing party forever).
static pthread_mutex_t gate_mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate; // protected by gate_mtx: 0 wait, 1 run, -1 go home

static void close_quietly(tw_link **l)
{
	// After a failure the run's outcome is decided; closing only frees.
	(void)tw_link_close(*l);
	*l = NULL;
}

static void *party_main(void *arg)
{
	demo_party *p = arg;
	demo_run *run = p->run;
	pthread_mutex_lock(&gate_mtx);
	while (gate == 0)
		pthread_cond_wait(&gate_cv, &gate_mtx);
	int go = gate;
	pthread_mutex_unlock(&gate_mtx);
	if (go < 0)
		return NULL;
	for (int ph = 0; ph < PH_COUNT; ph++) {
		// Every party reads the flag here, between the step that
		// closed the last phase and the one that opens this one: no
		// party can be running a phase, so all of them read the same
		// value.  (After the opening step a fast party could already
		// have failed in the new phase while a slow one had not yet
		// looked, and they would part ways at the barrier.)
		if (atomic_load(&run->failed))
			break;
		// Opens the phase for everyone at once, after the line of the
		// previous phase has been printed.
		demo_step(run);
		p->phase = ph;
		p->t0[ph] = demo_now_ns();
		(void)demo_phase_fn[ph](p); // failures are in run
		p->t1[ph] = demo_now_ns();
		if (demo_step(run))
			report_line(run, ph);
	}
	if (p->sub != NULL)
		close_quietly(&p->sub);
	if (p->child != NULL)
		close_quietly(&p->child);
	if (p->link != NULL)
		close_quietly(&p->link);
	return NULL;
}

static tw_desc *make_desc(const demo_cfg *cfg, const demo_transport *t)
{
	const int64_t pairs
	    = (int64_t)cfg->parties * (int64_t)(cfg->parties - 1);
	const struct {
		int opt;
		int64_t value;
	} opts[] = {
		{ TW_OPT_RECV_TIMEOUT_MS,
		    DEMO_RECV_TIMEOUT_MS
		        + pairs * DEMO_RECV_TIMEOUT_PER_PAIR_MS },
		{ TW_OPT_CONNECT_TIMEOUT_MS,
		    DEMO_CONNECT_TIMEOUT_MS
		        + pairs * DEMO_CONNECT_TIMEOUT_PER_PAIR_MS },
		{ TW_OPT_THROTTLE_WINDOW, DEMO_THROTTLE_WINDOW },
		{ TW_OPT_SHM_LOCAL, cfg->shm_local ? 1 : 0 },
	};
	tw_desc *d = tw_desc_new(DEMO_LINK_ID);
	if (d == NULL) {
		fprintf(stderr, "tagwire demo: tw_desc_new failed\n");
		return NULL;
	}
	int st = TW_OK;
	for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]) && !st; i++) {
		st = tw_desc_set(d, opts[i].opt, opts[i].value);
		if (st != TW_OK)
			fprintf(stderr,
			    "tagwire demo: tw_desc_set of option %d: %s\n",
			    opts[i].opt, tw_strerror(st));
	}
	for (size_t r = 0; r < cfg->parties && st == TW_OK; r++) {
		char id[32], addr[128];
		snprintf(id, sizeof(id), "p%zu", r);
		t->addr(addr, sizeof(addr), r);
		st = tw_desc_add_party(d, id, addr);
		if (st != TW_OK)
			fprintf(stderr,
			    "tagwire demo: tw_desc_add_party(%s, %s): %s\n",
			    id, addr, tw_strerror(st));
	}
	if (st != TW_OK) {
		tw_desc_free(d);
		return NULL;
	}
	return d;
}

static int start_parties(demo_run *run)
{
	size_t n = run->cfg->parties, started = 0;
	int err = 0;
	gate = 0;
	for (; started < n; started++) {
		demo_party *p = &run->parties[started];
		p->run = run;
		p->rank = started;
		err = pthread_create(&p->thread, NULL, party_main, p);
		if (err != 0)
			break;
	}
	pthread_mutex_lock(&gate_mtx);
	gate = err == 0 ? 1 : -1;
	pthread_cond_broadcast(&gate_cv);
	pthread_mutex_unlock(&gate_mtx);
	for (size_t i = 0; i < started; i++)
		pthread_join(run->parties[i].thread, NULL);
	if (err != 0) {
		fprintf(stderr, "tagwire demo: cannot start party %zu: %s\n",
		    started, strerror(err));
		return -1;
	}
	return 0;
}

static int run_demo(const demo_cfg *cfg, const demo_transport *t)
{
	demo_run run;
	memset(&run, 0, sizeof(run));
	run.cfg = cfg;
	run.first_phase = -1;
	run.parties = calloc(cfg->parties, sizeof(*run.parties));
	if (run.parties == NULL) {
		fprintf(stderr, "tagwire demo: out of memory\n");
		return CLI_FAILED;
	}
	run.desc = make_desc(cfg, t);
	if (run.desc == NULL) {
		free(run.parties);
		return CLI_FAILED;
	}
	int err
	    = pthread_barrier_init(&run.step, NULL, (unsigned)cfg->parties);
	if (err != 0) {
		fprintf(stderr, "tagwire demo: pthread_barrier_init: %s\n",
		    strerror(err));
		tw_desc_free(run.desc);
		free(run.parties);
		return CLI_FAILED;
	}
	pthread_mutex_init(&run.mtx, NULL);

	printf("tagwire demo: %zu part%s over %s://%s, link \"%s\"\n",
	    cfg->parties, cfg->parties == 1 ? "y" : "ies", cfg->transport,
	    cfg->shm_local ? " (shm-local)" : "", DEMO_LINK_ID);
	fflush(stdout);
	int rc = start_parties(&run) == 0 ? CLI_OK : CLI_FAILED;
	if (rc == CLI_OK && run.failed) {
		printf("demo FAILED: %zu failure%s; the first, in %s:\n  %s\n",
		    run.nfail, run.nfail == 1 ? "" : "s",
		    demo_phase_title[run.first_phase], run.first_msg);
		fprintf(stderr, "tagwire demo: FAILED in %s: %s\n",
		    demo_phase_title[run.first_phase], run.first_msg);
		rc = CLI_FAILED;
	} else if (rc == CLI_OK && cfg->corrupt >= 0
	    && !atomic_load(&run.corrupted)) {
		// The knob asked for a wrong byte and none could be planted
		// (a phase with nothing received, as with one party): a pass
		// would prove nothing, so say so.
		printf("demo FAILED: --corrupt %s found nothing to corrupt\n",
		    demo_phase_key[cfg->corrupt]);
		rc = CLI_FAILED;
	} else if (rc == CLI_OK) {
		printf("all checks passed (%llu checks)\n",
		    (unsigned long long)atomic_load(&run.checks));
	}
	pthread_mutex_destroy(&run.mtx);
	pthread_barrier_destroy(&run.step);
	tw_desc_free(run.desc);
	free(run.parties);
	return rc;
}

// ---------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------

// Phases a test may ask to corrupt: those that validate received data.
static int corrupt_phase(const char *s)
{
	if (strcmp(s, "1") == 0)
		return PH_P2P;
	for (int ph = 0; ph < PH_COUNT; ph++)
		if (ph != PH_MESH && ph != PH_BARRIER && ph != PH_CLOSE
		    && strcmp(s, demo_phase_key[ph]) == 0)
			return ph;
	return -1;
}

// The options that take a value, as "--name VALUE" or "--name=VALUE".
static const char *const value_opts[]
    = { "--parties", "--size", "--transport", "--corrupt" };

// Splits argv[*i] into an option name (one of value_opts, copied into
// name[cap]) and its value, advancing *i past a separate value.  Returns
// 0, or -1 when argv[*i] is none of them; *val is NULL when the value is
// missing.
static int opt_split(
    int argc, char **argv, int *i, char *name, size_t cap, const char **val)
{
	const char *a = argv[*i];
	for (size_t k = 0; k < sizeof(value_opts) / sizeof(value_opts[0]);
	     k++) {
		size_t n = strlen(value_opts[k]);
		if (strncmp(a, value_opts[k], n) != 0
		    || (a[n] != '=' && a[n] != '\0'))
			continue;
		snprintf(name, cap, "%s", value_opts[k]);
		if (a[n] == '=')
			*val = a + n + 1;
		else
			*val = *i + 1 < argc ? argv[++*i] : NULL;
		return 0;
	}
	return -1;
}

int cli_demo(int argc, char **argv)
{
	demo_cfg cfg = { DEFAULT_PARTIES, "mem", DEFAULT_SIZE, -1, false };
	const demo_transport *t = &demo_transports[0];
	// The test knob: flips one received byte before it is checked, to
	// prove that the demo does validate.  Deliberately not in --help.
	const char *corrupt = getenv("TAGWIRE_DEMO_CORRUPT");
	if (corrupt != NULL && *corrupt == '\0')
		corrupt = NULL; // set but empty, as "VAR= cmd" leaves it
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *val;
		char opt[16];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			cli_demo_help(stdout);
			return CLI_OK;
		}
		if (strcmp(a, "--shm-local") == 0) {
			cfg.shm_local = true;
			continue;
		}
		if (opt_split(argc, argv, &i, opt, sizeof(opt), &val) != 0)
			return cli_usage_error("demo", "%s '%.64s'",
			    a[0] == '-' ? "unknown option"
			                : "unexpected argument",
			    a);
		if (val == NULL)
			return cli_usage_error(
			    "demo", "%s needs a value", opt);
		if (strcmp(opt, "--parties") == 0) {
			uint64_t v;
			if (cli_parse_u64(val, 1, DEMO_MAX_PARTIES, 0, &v)
			    != 0)
				return cli_usage_error("demo",
				    "--parties wants a number from 1 to "
				    "%d, not '%.32s'",
				    DEMO_MAX_PARTIES, val);
			cfg.parties = (size_t)v;
		} else if (strcmp(opt, "--size") == 0) {
			if (cli_parse_u64(val, 0, MAX_SIZE, 1, &cfg.size) != 0)
				return cli_usage_error("demo",
				    "--size wants bytes from 0 to 1G "
				    "(suffixes K, M, G), not '%.32s'",
				    val);
		} else if (strcmp(opt, "--transport") == 0) {
			t = NULL;
			for (size_t k = 0; k < NTRANSPORTS; k++)
				if (strcmp(val, demo_transports[k].name) == 0)
					t = &demo_transports[k];
			if (t == NULL)
				return cli_usage_error("demo",
				    "--transport wants mem, shm or tcp, "
				    "not '%.32s'",
				    val);
		} else {
			corrupt = val;
		}
	}
	if (corrupt != NULL && (cfg.corrupt = corrupt_phase(corrupt)) < 0)
		return cli_usage_error("demo",
		    "--corrupt / TAGWIRE_DEMO_CORRUPT wants 1, p2p, "
		    "broadcast, gather, allgather, scatter, bulk or child, "
		    "not '%.32s'",
		    corrupt);
	if (cfg.shm_local && strcmp(t->name, "tcp") != 0)
		return cli_usage_error(
		    "demo", "--shm-local is for --transport tcp");
	if (!runnable(t)) {
		char runs[64];
		runnable_list(runs, sizeof(runs));
		return cli_usage_error("demo",
		    "transport %s is not built in yet; this build runs %s",
		    t->name, runs);
	}
	if (cfg.size * 3 > MAX_BULK_MEMORY / cfg.parties) {
		char need[32];
		cli_fmt_bytes(need, sizeof(need), cfg.size * 3 * cfg.parties);
		return cli_usage_error("demo",
		    "%zu parties with --size %llu would hold about %s at "
		    "once; lower --parties or --size",
		    cfg.parties, (unsigned long long)cfg.size, need);
	}
	cfg.transport = t->name;
	return run_demo(&cfg, t);
}
