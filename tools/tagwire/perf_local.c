// tagwire perf --local: both ends on this host.
//
// Design notes.  This process, the coordinator, never joins a link: for
// each group of measurements (the two-party tests of a transport, or coll
// with one number of parties) it forks the parties, reads what they report
// through a pipe and prints it.  A process that has run a link has library
// threads, and a fork copies whatever lock one of them holds into a child
// that can never release it; the coordinator stays single-threaded, so
// every fork is safe and every group starts from a fresh process.  mem://
// parties are threads of one child; shm://, tcp:// and ring parties are a
// child each.
//
// Reports are records of one size, each written with one write() of less
// than PIPE_BUF bytes, so that the records of several children never
// interleave.
//
// Failures.  The first failure reported is the one printed: the others
// usually follow from it (a peer that then sees TW_EPEER).  After it the
// coordinator gives the group a few seconds to finish on its own, then
// kills what is left, so that a party stuck in link creation does not hold
// the run for its whole timeout.
//
// Cleanup.  Children die with the coordinator (PR_SET_PDEATHSIG).  The
// ring's segment is created here, before the fork, and its name removed as
// soon as both ends have mapped it (or at the end of the group, or on a
// signal that ends the coordinator), so that nothing is left in /dev/shm.

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "cli.h"
#include "perf.h"

#define LINK_ID "perf"
#define GRACE_MS 5000

enum { PM_START, PM_ROW, PM_FAIL, PM_READY };

typedef struct pmsg {
	int32_t kind;
	int32_t transport;
	perf_meas m;
	perf_row row;
	char text[PERF_MSG_MAX];
} pmsg;

_Static_assert(sizeof(pmsg) <= PIPE_BUF, "a report is one atomic write");

typedef struct group {
	const perf_opts *o;
	int transport;
	size_t n; // parties
	bool coll;
	char addr[PERF_MAX_PARTIES][80];
	char seg[64]; // ring: the segment's name, "" once removed
	size_t ring_off; // ring: bytes per ring (the second one's offset)
	int wfd; // children: the write end of the report pipe
} group;

typedef struct outcome {
	bool failed;
	char why[PERF_MSG_MAX + 64];
} outcome;

static unsigned group_serial;
static char seg_on_signal[64]; // the name a signal handler removes

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// ---------------------------------------------------------------------------
// The children's side: reports and parties
// ---------------------------------------------------------------------------

static void send_pmsg(group *g, pmsg *p)
{
	ssize_t k;
	do
		k = write(g->wfd, p, sizeof(*p));
	while (k < 0 && errno == EINTR);
}

static void pipe_start(void *ctx, int transport, const perf_meas *m)
{
	pmsg p;
	memset(&p, 0, sizeof(p));
	p.kind = PM_START;
	p.transport = transport;
	p.m = *m;
	send_pmsg(ctx, &p);
}

static void pipe_row(void *ctx, const perf_row *r)
{
	pmsg p;
	memset(&p, 0, sizeof(p));
	p.kind = PM_ROW;
	p.row = *r;
	send_pmsg(ctx, &p);
}

static void pipe_fail(void *ctx, const char *msg)
{
	pmsg p;
	memset(&p, 0, sizeof(p));
	p.kind = PM_FAIL;
	snprintf(p.text, sizeof(p.text), "%s", msg);
	send_pmsg(ctx, &p);
}

static void fail_call(const perf_sink *sink, const group *g, size_t rank,
    const char *call, int st)
{
	char what[PERF_MSG_MAX], msg[PERF_MSG_MAX + 64];
	perf_status_msg(what, sizeof(what), call, st);
	snprintf(msg, sizeof(msg), "%s, rank %zu of %zu: %s",
	    perf_transport_name[g->transport], rank, g->n, what);
	sink->fail(sink->ctx, msg);
}

static tw_desc *make_desc(const group *g)
{
	tw_desc *d = perf_desc_new(g->o, LINK_ID, g->transport);
	for (size_t r = 0; d != NULL && r < g->n; r++) {
		char id[32];
		snprintf(id, sizeof(id), "p%zu", r);
		int st = tw_desc_add_party(d, id, g->addr[r]);
		if (st != TW_OK) {
			fprintf(stderr,
			    "tagwire perf: tw_desc_add_party(%s): %s\n",
			    g->addr[r], tw_err_name(st));
			tw_desc_free(d);
			d = NULL;
		}
	}
	return d;
}

// One party on a link: 0 or 1, its exit status.
static int link_party(
    const group *g, const tw_desc *d, size_t rank, const perf_sink *sink)
{
	char err[PERF_MSG_MAX];
	tw_link *l = NULL;
	int st = tw_link_create(d, rank, &l);
	if (st != TW_OK) {
		fail_call(sink, g, rank, "tw_link_create", st);
		return 1;
	}
	int rv;
	if (g->coll) {
		rv = perf_coll_run(
		    l, g->o, g->transport, sink, err, sizeof(err));
	} else {
		perf_ep ep;
		perf_ep_link(&ep, l, 1 - rank);
		rv = perf_pair_run(&ep, rank == 0, g->o, g->transport, sink,
		    err, sizeof(err));
	}
	st = tw_link_close(l);
	if (rv == 0 && st != TW_OK) {
		fail_call(sink, g, rank, "tw_link_close", st);
		rv = -1;
	}
	return rv != 0;
}

typedef struct mem_party {
	const group *g;
	const tw_desc *d;
	size_t rank;
	const perf_sink *sink;
	int rc;
	pthread_t thread;
} mem_party;

static void *mem_thread(void *arg)
{
	mem_party *p = arg;
	p->rc = link_party(p->g, p->d, p->rank, p->sink);
	return NULL;
}

// Every party of a mem:// group, as threads of this process.
static int mem_group(const group *g, const perf_sink *sink)
{
	mem_party p[PERF_MAX_PARTIES];
	tw_desc *d = make_desc(g);
	size_t started = 0;
	int rc = d == NULL;
	for (; d != NULL && started < g->n; started++) {
		p[started] = (mem_party) { g, d, started, sink, 0, 0 };
		int err = pthread_create(
		    &p[started].thread, NULL, mem_thread, &p[started]);
		if (err != 0) {
			// The parties started wait for this one until their
			// timeout, or until the coordinator ends the group.
			char msg[128];
			snprintf(msg, sizeof(msg),
			    "mem: cannot start party %zu: %s", started,
			    strerror(err));
			sink->fail(sink->ctx, msg);
			rc = 1;
			break;
		}
	}
	for (size_t i = 0; i < started; i++) {
		pthread_join(p[i].thread, NULL);
		rc |= p[i].rc;
	}
	tw_desc_free(d);
	return rc;
}

// One end of the ring transport: the rings are in the segment that the
// coordinator made; rank 0 sends on the first and rank 1 on the second.
static int ring_party(group *g, size_t rank, const perf_sink *sink)
{
	void *mem = NULL;
	size_t size = 0;
	tw_ring *r[2] = { NULL, NULL };
	const char *call = "tw_shm_open";
	int st = tw_shm_open(g->seg, &size, &mem);
	if (st == TW_OK && size < 2 * g->ring_off)
		st = TW_EPROTO;
	if (st == TW_OK) {
		call = "tw_ring_attach";
		st = tw_ring_attach(mem, g->ring_off, &r[0]);
	}
	if (st == TW_OK)
		st = tw_ring_attach(
		    (char *)mem + g->ring_off, g->ring_off, &r[1]);
	tw_ring *tx = r[rank], *rx = r[1 - rank];
	if (st == TW_OK) {
		call = "tw_ring_set_role";
		st = tw_ring_set_role(tx, 0);
	}
	if (st == TW_OK)
		st = tw_ring_set_role(rx, 1);
	int rc = 1;
	if (st != TW_OK) {
		fail_call(sink, g, rank, call, st);
	} else {
		pmsg ready;
		memset(&ready, 0, sizeof(ready));
		ready.kind = PM_READY;
		send_pmsg(g, &ready);
		char err[PERF_MSG_MAX];
		perf_ep ep;
		perf_ep_ring(
		    &ep, tx, rx, PERF_RING_CHUNK, g->o->timeout_ms * 1000);
		rc = perf_pair_run(&ep, rank == 0, g->o, g->transport, sink,
		         err, sizeof(err))
		    != 0;
	}
	tw_ring_detach(r[0]);
	tw_ring_detach(r[1]);
	if (mem != NULL)
		tw_shm_close(mem, size);
	return rc;
}

static int child_main(group *g, size_t rank)
{
	perf_sink sink = { pipe_start, pipe_row, pipe_fail, g };
	if (g->transport == PERF_T_MEM)
		return mem_group(g, &sink);
	if (g->transport == PERF_T_RING)
		return ring_party(g, rank, &sink);
	tw_desc *d = make_desc(g);
	int rc = d == NULL ? 1 : link_party(g, d, rank, &sink);
	tw_desc_free(d);
	return rc;
}

// ---------------------------------------------------------------------------
// The coordinator's side
// ---------------------------------------------------------------------------

static void on_signal(int sig)
{
	if (seg_on_signal[0] != '\0')
		shm_unlink(seg_on_signal);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void seg_remove(group *g)
{
	if (g->seg[0] == '\0')
		return;
	seg_on_signal[0] = '\0';
	(void)tw_shm_unlink(g->seg);
	g->seg[0] = '\0';
}

// Loopback ports that are free now (cli_free_ports), for the parties to
// bind.  Another program could bind one first; that shows as TW_ESYS from
// tw_link_create, never as a wrong figure.
static void pick_ports(group *g)
{
	unsigned ports[PERF_MAX_PARTIES] = { 0 };
	if (cli_free_ports("127.0.0.1", ports, g->n) != 0)
		memset(ports, 0, sizeof(ports));
	for (size_t i = 0; i < g->n; i++)
		snprintf(g->addr[i], sizeof(g->addr[i]), "tcp://127.0.0.1:%u",
		    ports[i]);
}

// The ring's segment: two rings, formatted, not mapped here afterwards.
static int make_segment(group *g, outcome *out)
{
	size_t rb = tw_ring_bytes(1, PERF_RING_SLOTS, PERF_RING_CHUNK);
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	g->ring_off = (rb + pg - 1) / pg * pg;
	snprintf(g->seg, sizeof(g->seg), "/twperf-%ld-%u", (long)getpid(),
	    group_serial);
	void *mem = NULL;
	const char *call = "tw_shm_create";
	int st = tw_shm_create(g->seg, 2 * g->ring_off, &mem);
	if (st == TW_OK) {
		snprintf(seg_on_signal, sizeof(seg_on_signal), "%s", g->seg);
		call = "tw_ring_init";
		st = tw_ring_init(
		    mem, g->ring_off, 1, PERF_RING_SLOTS, PERF_RING_CHUNK);
	}
	if (st == TW_OK)
		st = tw_ring_init((char *)mem + g->ring_off, g->ring_off, 1,
		    PERF_RING_SLOTS, PERF_RING_CHUNK);
	if (mem != NULL)
		tw_shm_close(mem, 2 * g->ring_off);
	if (st != TW_OK) {
		char what[PERF_MSG_MAX];
		perf_status_msg(what, sizeof(what), call, st);
		snprintf(out->why, sizeof(out->why), "ring: %s", what);
		out->failed = true;
		seg_remove(g);
		return -1;
	}
	return 0;
}

static int prepare(group *g, outcome *out)
{
	switch (g->transport) {
	case PERF_T_MEM:
		for (size_t r = 0; r < g->n; r++)
			snprintf(
			    g->addr[r], sizeof(g->addr[r]), "mem://p%zu", r);
		return 0;
	case PERF_T_SHM:
		// Names are host-wide: the pid and the group keep runs apart.
		for (size_t r = 0; r < g->n; r++)
			snprintf(g->addr[r], sizeof(g->addr[r]),
			    "shm://twperf%ld.%u.p%zu", (long)getpid(),
			    group_serial, r);
		return 0;
	case PERF_T_TCP:
		pick_ports(g);
		return 0;
	default:
		return make_segment(g, out);
	}
}

static ssize_t read_full(int fd, void *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t k = read(fd, (char *)buf + got, n - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return k < 0 ? -1 : (ssize_t)got;
		got += (size_t)k;
	}
	return (ssize_t)got;
}

static void kill_all(const pid_t *pids, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (pids[i] > 0)
			kill(pids[i], SIGKILL);
}

// Reads the children's reports until every child has closed the pipe.
static void collect(
    int fd, group *g, const pid_t *pids, size_t nchild, outcome *out)
{
	int64_t kill_at = -1;
	int ready = 0;
	for (;;) {
		int wait = -1;
		if (kill_at >= 0) {
			int64_t left = kill_at - now_ms();
			wait = left > 0 ? (int)left : 0;
		}
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int k = poll(&p, 1, wait);
		if (k < 0 && errno == EINTR)
			continue;
		if (k == 0) {
			kill_all(pids, nchild);
			kill_at = -1;
			continue;
		}
		pmsg m;
		if (k < 0 || read_full(fd, &m, sizeof(m)) != sizeof(m))
			break;
		bool t_ok = m.transport >= 0 && m.transport < PERF_T_COUNT;
		if (m.kind == PM_START && t_ok && m.m.kind >= 0
		    && m.m.kind < PERF_K_COUNT) {
			perf_out_start(m.transport, &m.m);
		} else if (m.kind == PM_ROW && m.row.transport >= 0
		    && m.row.transport < PERF_T_COUNT && m.row.kind >= 0
		    && m.row.kind < PERF_K_COUNT) {
			perf_out_row(&m.row);
		} else if (m.kind == PM_FAIL && !out->failed) {
			out->failed = true;
			m.text[sizeof(m.text) - 1] = '\0';
			snprintf(out->why, sizeof(out->why), "%s", m.text);
			kill_at = now_ms() + GRACE_MS;
		} else if (m.kind == PM_READY && ++ready == 2) {
			seg_remove(g); // both ends have it mapped
		}
	}
}

static void reap(const group *g, const pid_t *pids, size_t n, outcome *out)
{
	for (size_t i = 0; i < n; i++) {
		int st = 0;
		pid_t w;
		do
			w = waitpid(pids[i], &st, 0);
		while (w < 0 && errno == EINTR);
		if (out->failed
		    || (w == pids[i] && WIFEXITED(st) && WEXITSTATUS(st) == 0))
			continue;
		out->failed = true;
		if (w == pids[i] && WIFSIGNALED(st))
			snprintf(out->why, sizeof(out->why),
			    "%s: a party process was killed by signal %d",
			    perf_transport_name[g->transport], WTERMSIG(st));
		else
			snprintf(out->why, sizeof(out->why),
			    "%s: a party process exited with status %d",
			    perf_transport_name[g->transport],
			    w == pids[i] && WIFEXITED(st) ? WEXITSTATUS(st)
			                                  : -1);
	}
}

// Runs one group: `n` parties of `transport`, coll or the two-party tests.
static void run_group(
    const perf_opts *o, int transport, size_t n, bool coll, outcome *out)
{
	group g;
	memset(&g, 0, sizeof(g));
	g.o = o;
	g.transport = transport;
	g.n = n;
	g.coll = coll;
	group_serial++;
	if (prepare(&g, out) != 0)
		return;
	int pfd[2];
	if (pipe(pfd) != 0) {
		snprintf(
		    out->why, sizeof(out->why), "pipe: %s", strerror(errno));
		out->failed = true;
		seg_remove(&g);
		return;
	}
	pid_t pids[PERF_MAX_PARTIES], self = getpid();
	size_t nchild = transport == PERF_T_MEM ? 1 : n, started = 0;
	fflush(NULL);
	for (; started < nchild; started++) {
		pid_t pid = fork();
		if (pid < 0) {
			snprintf(out->why, sizeof(out->why), "fork: %s",
			    strerror(errno));
			out->failed = true;
			kill_all(pids, started);
			break;
		}
		if (pid == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != self)
				_exit(1); // the coordinator is gone
			signal(SIGINT, SIG_DFL);
			signal(SIGTERM, SIG_DFL);
			close(pfd[0]);
			g.wfd = pfd[1];
			// exit, not _exit: nothing is buffered (flushed
			// above), and a sanitizer build then checks the
			// parties for leaks too.
			exit(child_main(&g, started));
		}
		pids[started] = pid;
	}
	close(pfd[1]);
	collect(pfd[0], &g, pids, started, out);
	close(pfd[0]);
	reap(&g, pids, started, out);
	seg_remove(&g);
}

int perf_local(const perf_opts *o)
{
	size_t total = 0, per_pair = 0;
	perf_meas tmp[1 + PERF_MAX_SIZES * 3];
	per_pair = perf_pair_list(o, tmp, sizeof(tmp) / sizeof(tmp[0]));
	bool coll = (o->tests & (1u << PERF_COLL)) != 0, ring_coll = false;
	for (size_t t = 0; t < o->ntransports; t++) {
		total += per_pair;
		for (size_t i = 0; i < o->nparties; i++)
			if (o->transport[t] != PERF_T_RING)
				total += perf_coll_list(o, o->parties[i], tmp,
				    sizeof(tmp) / sizeof(tmp[0]));
		ring_coll |= coll && o->transport[t] == PERF_T_RING;
	}
	if (ring_coll)
		fprintf(stderr,
		    "tagwire perf: ring has no collectives; coll "
		    "runs on the other transports\n");
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGPIPE, &sa, NULL); // stdout closed early, as by head

	outcome out = { false, "" };
	perf_out_begin(o->format, total);
	for (size_t t = 0; t < o->ntransports && !out.failed; t++) {
		int tr = o->transport[t];
		if (per_pair > 0)
			run_group(o, tr, 2, false, &out);
		for (size_t i = 0; coll && tr != PERF_T_RING && i < o->nparties
		     && !out.failed;
		     i++)
			run_group(o, tr, o->parties[i], true, &out);
	}
	perf_out_end();
	if (out.failed) {
		fprintf(stderr, "tagwire perf: %s\n", out.why);
		return CLI_FAILED;
	}
	return CLI_OK;
}
