// ring_bench: tagwire's shared-memory rings against the physical baseline,
// side by side in one run.
//
// Contenders (see README.md):
//   memcpy     one thread copying S bytes from one buffer to another
//   bare ring  bare_ring.h in a POSIX shared-memory segment, two processes,
//              busy polling, two copies (sender into a slot, receiver out)
//   tw_ring    tw_ring_* in a segment from tw_shm_create, two processes
//   shm link   a tagwire link over shm:// (only when the build has it)
//
// Workloads (the definitions of the peer table): lat = ping-pong, one-way = round
// trip / 2, median and p99; bw = N messages of S bytes, then a 1-byte ack,
// GB/s = 1e9 B/s; rate = 8-byte messages one way, one ack at the end.
//
// Every measurement forks a fresh child that is pinned to the second CPU;
// the parent (pinned to the first) sends and keeps the time.  --no-pin
// leaves both to the scheduler.  Each round
// runs the sections lat, bw and rate; each section starts with a short
// bare-ring ping-pong (the sanity check) and then runs every workload with
// the contenders one after the other, in an order that rotates from round
// to round.  The report gives the medians over the rounds and the ratios of
// tagwire's figures to the baselines of the same run.
//
// Every wait is bounded: ring waits time out after WAIT_S seconds and each
// process arms a watchdog alarm of WATCHDOG_S seconds per measurement.

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <tagwire/tagwire.h>

#include "bare_ring.h"
#include "bench_util.h"

#define WAIT_S 30 // the longest any single wait may last
#define WATCHDOG_S 120 // alarm per measurement, in each process
#define SMT_BELOW_US 0.2 // sanity figure below which the CPUs share a core

// ---------------------------------------------------------------------------
// What is measured
// ---------------------------------------------------------------------------

enum { C_MEMCPY, C_BARE, C_RING, C_LINK, C_COUNT };
static const char *const c_name[C_COUNT]
    = { "memcpy", "bare ring", "tw_ring", "shm link" };

static struct bench_opts cfg;
static struct ring_cfg {
	long sanity_warm, sanity_iters;
	uint32_t slots;
	size_t slot_bytes; // payload bytes per slot (max_msg)
} rcfg;

// Results: NaN where nothing was measured.
static double res[C_COUNT][W_COUNT][MAX_ROUNDS]; // µs, GB/s, M msg/s
static double res_p99[C_COUNT][W_COUNT][MAX_ROUNDS]; // lat only, µs
static double sanity[S_COUNT][MAX_ROUNDS]; // µs one-way
static int c_on[C_COUNT]; // contender still measured
static char c_why[C_COUNT][256]; // why a contender is off
static int failures;
// Involuntary context switches of both processes during a measurement (the
// parent's during its timed part, the child's whole life): how often
// something else took a CPU away.
static long preempt[C_COUNT][W_COUNT][MAX_ROUNDS];
static long last_preempt;

// ---------------------------------------------------------------------------
// Process plumbing
// ---------------------------------------------------------------------------

static int cpu_a = -1, cpu_b = -1; // -1: unpinned
static int single_cpu;
static volatile sig_atomic_t watch_child; // pid to kill on the watchdog
static char watch_seg[64]; // segment to unlink on the watchdog
static int seg_serial;

static void on_parent_signal(int sig)
{
	bench_say(sig == SIGALRM ? "ring_bench: watchdog expired, giving up\n"
	                         : "ring_bench: interrupted\n");
	if (watch_child > 0)
		kill((pid_t)watch_child, SIGKILL);
	if (watch_seg[0] != '\0')
		shm_unlink(watch_seg);
	_exit(3);
}

static void on_child_alarm(int sig)
{
	(void)sig;
	bench_say("ring_bench: child watchdog expired\n");
	_exit(125);
}

// ---------------------------------------------------------------------------
// Endpoints: one message of n bytes, chunked into slots where needed
// ---------------------------------------------------------------------------

struct ep {
	int c;
	// bare ring
	struct bare_end btx, brx;
	// tw_ring
	tw_ring *rtx, *rrx;
	// shm link
	tw_link *link;
	size_t peer;
	size_t chunk;
};

static const int64_t wait_ns = (int64_t)WAIT_S * 1000000000;
static const int64_t wait_us = (int64_t)WAIT_S * 1000000;

static int ep_send(void *ctx, const void *buf, size_t n)
{
	struct ep *e = ctx;
	const unsigned char *p = buf;
	switch (e->c) {
	case C_BARE:
		for (size_t off = 0; off < n;) {
			size_t c = n - off < e->chunk ? n - off : e->chunk;
			if (bare_send(&e->btx, p + off, c, wait_ns) != 0)
				return TW_ETIMEDOUT;
			off += c;
		}
		return TW_OK;
	case C_RING:
		for (size_t off = 0; off < n;) {
			size_t c = n - off < e->chunk ? n - off : e->chunk;
			int rc = tw_ring_send(
			    e->rtx, 0, 0, p + off, c, 0, wait_us);
			if (rc != TW_OK)
				return rc;
			off += c;
		}
		return TW_OK;
	case C_LINK:
		return tw_send(e->link, e->peer, "b", buf, n);
	}
	return TW_EINVAL;
}

static int ep_recv(void *ctx, void *buf, size_t n)
{
	struct ep *e = ctx;
	unsigned char *p = buf;
	size_t got;
	int rc;
	switch (e->c) {
	case C_BARE:
		for (size_t off = 0; off < n; off += got) {
			rc = bare_recv(
			    &e->brx, p + off, n - off, &got, wait_ns);
			if (rc == -1)
				return TW_ETIMEDOUT;
			if (rc != 0 || got == 0)
				return TW_EPROTO;
		}
		return TW_OK;
	case C_RING:
		for (size_t off = 0; off < n; off += got) {
			rc = tw_ring_recv(e->rrx, 0, p + off, n - off, &got,
			    NULL, NULL, wait_us);
			if (rc != TW_OK)
				return rc;
			if (got == 0)
				return TW_EPROTO;
		}
		return TW_OK;
	case C_LINK:
		rc = tw_recv_into(e->link, e->peer, "b", buf, n, &got);
		if (rc == TW_OK && got != n)
			rc = TW_EPROTO;
		return rc;
	}
	return TW_EINVAL;
}

// ---------------------------------------------------------------------------
// A pair: the two processes of one measurement and what they share
// ---------------------------------------------------------------------------

struct pair {
	int c;
	char seg[64];
	void *mem;
	size_t mem_size;
	size_t ring_off; // offset of the second ring
	tw_desc *desc;
	pid_t child;
	struct ep ep;
};

static size_t round_page(size_t n)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	return (n + pg - 1) / pg * pg;
}

// Creates the shared memory of contender `c` (two rings: parent to child
// and child to parent), formatted and touched.
static int seg_make(struct pair *s)
{
	snprintf(s->seg, sizeof(s->seg), "/twbench-%d-%d", (int)getpid(),
	    seg_serial++);
	if (s->c == C_BARE) {
		s->ring_off
		    = round_page(bare_ring_bytes(rcfg.slots, rcfg.slot_bytes));
		s->mem_size = 2 * s->ring_off;
		int fd = shm_open(s->seg, O_RDWR | O_CREAT | O_EXCL, 0600);
		if (fd < 0)
			return TW_ESYS;
		snprintf(watch_seg, sizeof(watch_seg), "%s", s->seg);
		if (ftruncate(fd, (off_t)s->mem_size) != 0) {
			close(fd);
			return TW_ESYS;
		}
		s->mem = mmap(NULL, s->mem_size, PROT_READ | PROT_WRITE,
		    MAP_SHARED, fd, 0);
		close(fd);
		if (s->mem == MAP_FAILED) {
			s->mem = NULL;
			return TW_ESYS;
		}
		memset(s->mem, 0, s->mem_size);
		bare_ring_init(s->mem);
		bare_ring_init((char *)s->mem + s->ring_off);
		return TW_OK;
	}
	size_t rb = tw_ring_bytes(1, rcfg.slots, (uint32_t)rcfg.slot_bytes);
	if (rb == 0)
		return TW_EINVAL;
	s->ring_off = round_page(rb);
	s->mem_size = 2 * s->ring_off;
	int rc = tw_shm_create(s->seg, s->mem_size, &s->mem);
	if (rc != TW_OK) {
		s->mem = NULL;
		return rc;
	}
	snprintf(watch_seg, sizeof(watch_seg), "%s", s->seg);
	memset(s->mem, 0, s->mem_size);
	for (int i = 0; i < 2; i++) {
		rc = tw_ring_init((char *)s->mem + i * s->ring_off,
		    s->ring_off, 1, rcfg.slots, (uint32_t)rcfg.slot_bytes);
		if (rc != TW_OK)
			return rc;
	}
	return TW_OK;
}

static void seg_unlink(struct pair *s)
{
	if (s->seg[0] == '\0')
		return;
	if (s->c == C_BARE)
		shm_unlink(s->seg);
	else
		tw_shm_unlink(s->seg);
	s->seg[0] = '\0';
	watch_seg[0] = '\0';
}

// Sets up this process's endpoint on memory `mem` (its own mapping).  The
// parent sends on ring 0 and receives on ring 1; the child the reverse.
static int ep_attach(struct pair *s, void *mem, int is_child)
{
	struct ep *e = &s->ep;
	e->c = s->c;
	e->chunk = rcfg.slot_bytes;
	char *r0 = mem, *r1 = (char *)mem + s->ring_off;
	char *tx = is_child ? r1 : r0, *rx = is_child ? r0 : r1;
	if (s->c == C_BARE) {
		bare_end_init(&e->btx, tx, rcfg.slots, rcfg.slot_bytes);
		bare_end_init(&e->brx, rx, rcfg.slots, rcfg.slot_bytes);
		e->btx.yield = e->brx.yield = single_cpu;
		return TW_OK;
	}
	int rc = tw_ring_attach(tx, s->ring_off, &e->rtx);
	if (rc == TW_OK)
		rc = tw_ring_attach(rx, s->ring_off, &e->rrx);
	if (rc == TW_OK)
		rc = tw_ring_set_role(e->rtx, 0); // producer of tx
	if (rc == TW_OK)
		rc = tw_ring_set_role(e->rrx, 1); // consumer of rx
	return rc;
}

static void ep_detach(struct ep *e)
{
	if (e->c == C_RING) {
		tw_ring_detach(e->rtx);
		tw_ring_detach(e->rrx);
		e->rtx = e->rrx = NULL;
	}
#ifdef TW_BENCH_HAVE_SHM
	if (e->c == C_LINK && e->link != NULL) {
		tw_link_close(e->link);
		e->link = NULL;
	}
#endif
}

#ifdef TW_BENCH_HAVE_SHM
// A description of the two-party shm:// link of this measurement.
static int link_desc(struct pair *s)
{
	char addr[2][96];
	int id = seg_serial++;
	for (int i = 0; i < 2; i++)
		snprintf(addr[i], sizeof(addr[i]), "shm://twbench-%d-%d-%d",
		    (int)getpid(), id, i);
	s->desc = tw_desc_new("bench");
	if (s->desc == NULL)
		return TW_ENOMEM;
	int rc = tw_desc_add_party(s->desc, "p0", addr[0]);
	if (rc == TW_OK)
		rc = tw_desc_add_party(s->desc, "p1", addr[1]);
	if (rc == TW_OK)
		rc = tw_desc_set(
		    s->desc, TW_OPT_RECV_TIMEOUT_MS, (int64_t)WAIT_S * 1000);
	if (rc == TW_OK)
		rc = tw_desc_set(s->desc, TW_OPT_CONNECT_TIMEOUT_MS,
		    (int64_t)WAIT_S * 1000);
	return rc;
}

static int link_open(struct pair *s, size_t rank)
{
	s->ep.c = C_LINK;
	s->ep.peer = 1 - rank;
	s->ep.chunk = 0;
	return tw_link_create(s->desc, rank, &s->ep.link);
}
#endif

// ---------------------------------------------------------------------------
// The two roles of each test
// ---------------------------------------------------------------------------

// Child exit statuses.
enum { CHILD_OK, CHILD_SETUP, CHILD_IO, CHILD_DATA, CHILD_MEM };

static int child_run(struct pair *s, const struct test *t, int ready_fd)
{
	size_t cap = t->size > 64 ? t->size : 64;
	unsigned char *buf = bench_big_alloc(cap, 0);
	if (buf == NULL)
		return CHILD_MEM;
	unsigned char one = 1;
	void *mem = NULL;
	size_t size = 0;
	int rc = TW_OK;
	if (s->c == C_BARE) {
		int fd = shm_open(s->seg, O_RDWR, 0);
		if (fd < 0)
			return CHILD_SETUP;
		size = s->mem_size;
		mem = mmap(
		    NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		close(fd);
		if (mem == MAP_FAILED)
			return CHILD_SETUP;
		rc = ep_attach(s, mem, 1);
	} else if (s->c == C_RING) {
		rc = tw_shm_open(s->seg, &size, &mem);
		if (rc == TW_OK)
			rc = ep_attach(s, mem, 1);
	} else {
#ifdef TW_BENCH_HAVE_SHM
		rc = link_open(s, 1);
#else
		rc = TW_ENOTSUP;
#endif
	}
	if (rc != TW_OK)
		return CHILD_SETUP;
	if (write(ready_fd, &one, 1) != 1)
		return CHILD_SETUP;
	close(ready_fd);

	// The child's preemptions come from its rusage as a whole, once it
	// has been reaped.
	long nivcsw;
	struct bench_io io = { ep_send, ep_recv, NULL, &s->ep };
	int x = bench_recv_side(&io, t, buf, cap, &nivcsw);
	x = x == BENCH_RECV_IO     ? CHILD_IO
	    : x == BENCH_RECV_DATA ? CHILD_DATA
	                           : CHILD_OK;
	ep_detach(&s->ep);
	if (mem != NULL)
		munmap(mem, size);
	return x;
}

static unsigned char *src_buf, *dst_buf; // parent, 16 MiB each
static int64_t *stamps; // parent, lat time stamps

// Waits up to WAIT_S for the child; returns its exit status, or -1, and
// sets *nivcsw to its involuntary context switches.
static int reap(pid_t pid, long *nivcsw)
{
	int st;
	struct rusage ru;
	for (int64_t end = bench_now_ns() + wait_ns; bench_now_ns() < end;) {
		pid_t w = wait4(pid, &st, WNOHANG, &ru);
		if (w == pid)
			*nivcsw = ru.ru_nivcsw;
		if (w == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st)
			                     : 128 + WTERMSIG(st);
		if (w < 0)
			return -1;
		struct timespec ms = { 0, 1000000 };
		nanosleep(&ms, NULL);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	return -1;
}

// Waits up to WAIT_S for the child's ready byte.
static int wait_ready(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	unsigned char b;
	int n;
	do
		n = poll(&p, 1, WAIT_S * 1000);
	while (n < 0 && errno == EINTR);
	return n == 1 && read(fd, &b, 1) == 1 ? 0 : -1;
}

static const char *child_why(int x)
{
	switch (x) {
	case CHILD_SETUP:
		return "child could not attach";
	case CHILD_IO:
		return "child send/recv failed";
	case CHILD_DATA:
		return "child received wrong bytes";
	case CHILD_MEM:
		return "child out of memory";
	case 125:
		return "child watchdog";
	}
	return "child failed";
}

// One measurement of contender c (not memcpy) on test t.  Returns 0; -1
// with `why` filled on a failure; -2 when the library does not support it
// (TW_ENOTSUP at setup).
static int measure(int c, const struct test *t, double *v, double *p99,
    char *why, size_t why_len)
{
	struct pair s;
	memset(&s, 0, sizeof(s));
	s.c = c;
	s.child = -1;
	*v = *p99 = NAN;
	int rc = TW_OK, ok = -1;
	int pfd[2] = { -1, -1 };
	last_preempt = 0;
	alarm(WATCHDOG_S);
	if (c == C_LINK) {
#ifdef TW_BENCH_HAVE_SHM
		rc = link_desc(&s);
#else
		rc = TW_ENOTSUP;
#endif
	} else {
		rc = seg_make(&s);
	}
	if (rc != TW_OK) {
		snprintf(why, why_len, "setup: %s", tw_strerror(rc));
		if (rc == TW_ENOTSUP)
			ok = -2;
		goto out;
	}
	if (pipe(pfd) != 0) {
		snprintf(why, why_len, "pipe: %s", strerror(errno));
		goto out;
	}
	fflush(NULL);
	s.child = fork();
	if (s.child < 0) {
		snprintf(why, why_len, "fork: %s", strerror(errno));
		goto out;
	}
	if (s.child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		signal(SIGALRM, on_child_alarm);
		signal(SIGINT, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		alarm(WATCHDOG_S);
		if (bench_pin(cpu_b) != 0)
			_exit(CHILD_SETUP);
		close(pfd[0]);
		_exit(child_run(&s, t, pfd[1]));
	}
	watch_child = s.child;
	close(pfd[1]);
	pfd[1] = -1;
#ifdef TW_BENCH_HAVE_SHM
	if (c == C_LINK && (rc = link_open(&s, 0)) != TW_OK) {
		snprintf(why, why_len, "tw_link_create: %s", tw_strerror(rc));
		goto out;
	}
#endif
	if (wait_ready(pfd[0]) != 0) {
		snprintf(why, why_len, "child never became ready");
		goto out;
	}
	seg_unlink(&s); // both mappings exist: the name is no longer needed
	if (c != C_LINK && (rc = ep_attach(&s, s.mem, 0)) != TW_OK) {
		snprintf(why, why_len, "attach: %s", tw_strerror(rc));
		goto out;
	}
	// The parent's count spans its whole side, sync exchange included.
	long cs0 = bench_nivcsw(), timed;
	struct bench_io io = { ep_send, ep_recv, NULL, &s.ep };
	rc = bench_send_side(&io, t, src_buf, dst_buf, stamps, v, p99, &timed);
	last_preempt = bench_nivcsw() - cs0;
	if (rc != TW_OK) {
		snprintf(why, why_len, "%s", tw_strerror(rc));
		goto out;
	}
	ok = 0;
out:
	if (s.child > 0 && ok != 0)
		kill(s.child, SIGKILL);
	ep_detach(&s.ep);
	if (s.child > 0) {
		long child_nivcsw = 0;
		int x = reap(s.child, &child_nivcsw);
		last_preempt += child_nivcsw;
		if (x != 0 && ok == 0) {
			snprintf(
			    why, why_len, "%s (exit %d)", child_why(x), x);
			ok = -1;
		}
	}
	watch_child = 0;
	if (pfd[0] >= 0)
		close(pfd[0]);
	if (pfd[1] >= 0)
		close(pfd[1]);
	seg_unlink(&s);
	if (s.mem != NULL) {
		if (c == C_BARE)
			munmap(s.mem, s.mem_size);
		else
			tw_shm_close(s.mem, s.mem_size);
	}
	tw_desc_free(s.desc);
	alarm(0);
	if (ok != 0)
		*v = *p99 = NAN;
	return ok;
}

static double measure_memcpy(size_t size)
{
	long count = (long)(cfg.bw_total / size);
	int64_t t0 = bench_now_ns();
	for (long i = 0; i < count; i++) {
		memcpy(dst_buf, src_buf, size);
		__asm__ __volatile__("" : : "r"(dst_buf) : "memory");
	}
	double secs = (double)(bench_now_ns() - t0) / 1e9;
	return (double)count * (double)size / secs / 1e9;
}

// ---------------------------------------------------------------------------
// Statistics and the report
// ---------------------------------------------------------------------------

static int link_shown(void)
{
#ifdef TW_BENCH_HAVE_SHM
	return 1;
#else
	return 0;
#endif
}

// Column widths of the figures and the ratios.
enum { WID_NUM = 9, WID_RATIO = 16 };

// memcpy has bandwidth figures only.
static void print_row(const char *name, const char *unit, bench_figs *v, int w)
{
	char t[64];
	int n = cfg.rounds;
	int with_memcpy = wl[w].kind == K_BW;
	bench_row_start(name, unit);
	bench_fmt_num(t, sizeof(t),
	    with_memcpy ? bench_median(v[C_MEMCPY][w], n, NULL, NULL) : NAN);
	bench_cell(t, WID_NUM, 1);
	bench_fmt_num(t, sizeof(t), bench_median(v[C_BARE][w], n, NULL, NULL));
	bench_cell(t, WID_NUM, 1);
	for (int c = C_RING; c < C_COUNT; c++) {
		if (c == C_LINK && !link_shown())
			continue;
		bench_fmt_num(
		    t, sizeof(t), bench_median(v[c][w], n, NULL, NULL));
		bench_cell(t, WID_NUM, 1);
		bench_fmt_ratio(t, sizeof(t), v[c][w], v[C_BARE][w], n);
		bench_cell(t, WID_RATIO, 1);
		snprintf(t, sizeof(t), "–");
		if (with_memcpy)
			bench_fmt_ratio(
			    t, sizeof(t), v[c][w], v[C_MEMCPY][w], n);
		bench_cell(t, WID_RATIO, 1);
	}
	printf("\n");
}

static void print_table(void)
{
	printf("\n## Results: medians of %d rounds; ratio = tagwire / "
	       "baseline, ratio of the medians (range of the per-round "
	       "ratios)\n\n",
	    cfg.rounds);
	bench_row_start("workload", "unit");
	bench_cell("memcpy", WID_NUM, 1);
	bench_cell("bare ring", WID_NUM, 1);
	bench_cell("tw_ring", WID_NUM, 1);
	bench_cell("tw_ring/bare", WID_RATIO, 1);
	bench_cell("tw_ring/memcpy", WID_RATIO, 1);
	if (link_shown()) {
		bench_cell("shm link", WID_NUM, 1);
		bench_cell("link/bare", WID_RATIO, 1);
		bench_cell("link/memcpy", WID_RATIO, 1);
	}
	printf("\n|---|---|---:|---:|---:|---:|---:|%s\n",
	    link_shown() ? "---:|---:|---:|" : "");
	bench_print_rows(res, res_p99, print_row);
	printf("\nLatency ratios above 1 and bandwidth or rate ratios below "
	       "1 mean tagwire is slower than the baseline.\n");
	printf("\nSanity check (bare ring, 8 B one-way median, µs, %ld round "
	       "trips) before each section:\n",
	    rcfg.sanity_iters);
	for (int s = 0; s < S_COUNT; s++) {
		printf("  %-4s section: median %.3f; per round:", s_name[s],
		    bench_median(sanity[s], cfg.rounds, NULL, NULL));
		for (int r = 0; r < cfg.rounds; r++)
			printf(" %.3f", sanity[s][r]);
		printf("\n");
	}
	// Where the two CPUs are SMT siblings of one physical core the bare
	// ring's hand-off reads about 0.1 µs instead of about 0.4 µs.
	int smt = 0, apart = 0;
	for (int s = 0; s < S_COUNT; s++)
		for (int r = 0; r < cfg.rounds; r++)
			if (!isnan(sanity[s][r]))
				*(sanity[s][r] < SMT_BELOW_US ? &smt : &apart)
				    += 1;
	printf("  below %.2f µs suggests SMT siblings of one physical core, "
	       "above it separate cores: %s\n",
	    SMT_BELOW_US,
	    smt && apart ? "BOTH regimes occurred in this run, compare "
	                   "figures of the same round (the per-round ratios)"
	        : smt    ? "SMT siblings throughout"
	                 : "separate cores throughout");
	printf("\nPreemptions (involuntary context switches of both processes "
	       "during each measurement, summed over the rounds; a busy "
	       "poller that is preempted waits for the scheduler; with "
	       "threads of its own, a contender also counts them taking "
	       "turns on its CPU):\n");
	for (int w = 0; w < W_COUNT; w++) {
		printf("  %-16s", wl[w].name);
		for (int c = C_BARE; c < C_COUNT; c++) {
			if (c == C_LINK && !link_shown())
				continue;
			long sum = 0;
			for (int r = 0; r < cfg.rounds; r++)
				sum += preempt[c][w][r];
			printf(" %s %ld;", c_name[c], sum);
		}
		printf("\n");
	}
	for (int c = C_BARE; c < C_COUNT; c++)
		if (c_why[c][0] != '\0')
			printf("\n%s: %s\n", c_name[c], c_why[c]);
}

// Writes the per-round figures of contender c on workload w, their
// median and, for tagwire's contenders, the ratios to the baselines.
static void tsv_series(
    FILE *f, int w, int c, const char *metric, const char *unit, bench_figs *v)
{
	const char *sec = s_name[wl[w].section];
	int n = cfg.rounds;
	for (int r = 0; r < n; r++)
		fprintf(f, "%s\t%s\t%s\t%s\t%s\t%d\t%.4f\n", sec, wl[w].name,
		    c_name[c], metric, unit, r + 1, v[c][w][r]);
	fprintf(f, "%s\t%s\t%s\t%s\t%s\tmedian\t%.4f\n", sec, wl[w].name,
	    c_name[c], metric, unit, bench_median(v[c][w], n, NULL, NULL));
	if (c != C_RING && c != C_LINK)
		return;
	for (int base = C_MEMCPY; base <= C_BARE; base++) {
		if (base == C_MEMCPY && wl[w].kind != K_BW)
			continue;
		double rr = bench_median(v[c][w], n, NULL, NULL)
		    / bench_median(v[base][w], n, NULL, NULL);
		fprintf(f, "%s\t%s\t%s / %s\t%s\tratio\tmedian\t%.4f\n", sec,
		    wl[w].name, c_name[c], c_name[base], metric, rr);
	}
}

// The TSV: the header lines of the report (starting with '#'), then one
// row per figure: section, workload, contender, metric, unit, round (1..N
// or "median"), value.  Ratios have unit "ratio"; NaN = not measured.
static void write_tsv(const char *path, const char *facts)
{
	FILE *f = bench_open_tsv("ring_bench", path);
	if (f == NULL) {
		failures++;
		return;
	}
	fprintf(f,
	    "%ssection\tworkload\tcontender\tmetric\tunit\tround\t"
	    "value\n",
	    facts);
	for (int sec = 0; sec < S_COUNT; sec++)
		for (int r = 0; r < cfg.rounds; r++)
			fprintf(f,
			    "%s\tsanity 8 B\tbare ring\tone-way median\tus\t"
			    "%d\t%.4f\n",
			    s_name[sec], r + 1, sanity[sec][r]);
	for (int w = 0; w < W_COUNT; w++) {
		int k = wl[w].kind;
		for (int c = 0; c < C_COUNT; c++) {
			if ((c == C_MEMCPY && k != K_BW)
			    || (c == C_LINK && !link_shown()))
				continue;
			if (k == K_LAT) {
				tsv_series(
				    f, w, c, "one-way median", "us", res);
				tsv_series(
				    f, w, c, "one-way p99", "us", res_p99);
			} else if (k == K_BW) {
				tsv_series(f, w, c, "bandwidth", "GB/s", res);
			} else {
				tsv_series(f, w, c, "rate", "M/s", res);
			}
			if (c == C_MEMCPY)
				continue;
			for (int r = 0; r < cfg.rounds; r++)
				fprintf(f,
				    "%s\t%s\t%s\tpreemptions\tcount\t%d\t%"
				    "ld\n",
				    s_name[wl[w].section], wl[w].name,
				    c_name[c], r + 1, preempt[c][w][r]);
		}
	}
	fclose(f);
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

// Measures contender c on workload w in round r and prints the figure.
static void run_one(int c, int w, int r)
{
	struct test t = bench_test(&cfg, w);
	char why[160];
	if (c == C_MEMCPY) {
		if (t.kind != K_BW)
			return;
		res[c][w][r] = measure_memcpy(t.size);
	} else {
		int ok = measure(
		    c, &t, &res[c][w][r], &res_p99[c][w][r], why, sizeof(why));
		if (ok == -2) { // the library lacks what this contender needs
			snprintf(c_why[c], sizeof(c_why[c]),
			    "not measured: %s", why);
			c_on[c] = 0;
			return;
		}
		if (ok != 0) {
			fprintf(stderr,
			    "ring_bench: %s, %s, round %d: %s; dropping it\n",
			    c_name[c], wl[w].name, r + 1, why);
			snprintf(c_why[c], sizeof(c_why[c]),
			    "FAILED in round %d (%s): %s", r + 1, wl[w].name,
			    why);
			c_on[c] = 0;
			failures++;
			return;
		}
		preempt[c][w][r] = last_preempt;
	}
	printf(" %s %.3g", c_name[c], res[c][w][r]);
}

// One section of round r: the sanity check, then each workload of the
// section with every contender, in an order that rotates with the round.
static void run_section(int sec, int r)
{
	static const int order[C_COUNT] = { C_MEMCPY, C_BARE, C_RING, C_LINK };
	struct test st = { .kind = K_LAT,
		.size = 8,
		.warm = rcfg.sanity_warm,
		.iters = rcfg.sanity_iters };
	char why[160];
	double p99;
	if (measure(C_BARE, &st, &sanity[sec][r], &p99, why, sizeof(why))
	    != 0) {
		fprintf(stderr, "ring_bench: sanity check failed: %s\n", why);
		failures++;
	}
	printf("round %d/%d %-4s sanity %.3f µs |", r + 1, cfg.rounds,
	    s_name[sec], sanity[sec][r]);
	for (int w = 0; w < W_COUNT; w++) {
		if (wl[w].section != sec)
			continue;
		printf(" %s:", wl[w].name);
		for (int k = 0; k < C_COUNT; k++) {
			int c = order[(k + r) % C_COUNT];
			if (c_on[c])
				run_one(c, w, r);
		}
		printf(" |");
	}
	printf("\n");
	fflush(stdout);
}

static void usage(FILE *f)
{
	fprintf(f,
	    "usage: ring_bench [--quick] [--tsv FILE] [--rounds N] "
	    "[--bw-mib N]\n"
	    "                  [--slots N] [--slot-bytes N] [--no-pin]\n"
	    "  --quick         fewer iterations, for a smoke run\n"
	    "  --tsv FILE      also write every figure as TSV\n"
	    "  --rounds N      rounds (default 5, quick 2)\n"
	    "  --bw-mib N      MiB per bandwidth measurement (default "
	    "1024, quick 64)\n"
	    "  --slots N       slots per ring, a power of two (default "
	    "32)\n"
	    "  --slot-bytes N  payload bytes per slot, >= 4096 (default "
	    "16384)\n"
	    "  --no-pin        leave both processes to the scheduler\n");
}

static int no_pin; // --no-pin

// The options of ring_bench alone: the ring geometry and --no-pin.
static int ring_opt(int argc, char **argv, int *i)
{
	const char *a = argv[*i];
	if (strcmp(a, "--no-pin") == 0) {
		no_pin = 1;
		return 1;
	}
	if (*i + 1 >= argc)
		return 0;
	if (strcmp(a, "--slots") == 0)
		rcfg.slots = (uint32_t)bench_parse_long(
		    "ring_bench", argv[++*i], NULL, 2, 1 << 20, usage);
	else if (strcmp(a, "--slot-bytes") == 0)
		rcfg.slot_bytes = (size_t)bench_parse_long(
		    "ring_bench", argv[++*i], NULL, 4096, 64 << 20, usage);
	else
		return 0;
	return 1;
}

int main(int argc, char **argv)
{
	rcfg.slots = 32;
	rcfg.slot_bytes = 16 * KiB;
	bench_args(&cfg, "ring_bench", argc, argv, ring_opt, usage, 200000);
	if ((rcfg.slots & (rcfg.slots - 1)) != 0) {
		fprintf(
		    stderr, "ring_bench: --slots must be a power of two\n");
		return 2;
	}
	rcfg.sanity_warm = 200;
	rcfg.sanity_iters = 2000;

	// Pin before the library could start any thread.
	int n_allowed = bench_cpus(&cpu_a, &cpu_b);
	if (n_allowed < 2) {
		single_cpu = 1;
	} else if (no_pin) {
		// What an application that does not pin gets: the scheduler
		// places both processes (and may put them on one CPU).
		cpu_a = cpu_b = -1;
	} else if (bench_pin(cpu_a) != 0) {
		fprintf(stderr, "ring_bench: sched_setaffinity: %s\n",
		    strerror(errno));
		return 1;
	}

	signal(SIGALRM, on_parent_signal);
	signal(SIGINT, on_parent_signal);
	signal(SIGTERM, on_parent_signal);

	src_buf = bench_big_alloc(16 * MiB, 1);
	dst_buf = bench_big_alloc(16 * MiB, 1);
	stamps = bench_big_alloc(
	    sizeof(*stamps) * (size_t)(cfg.lat_iters + rcfg.sanity_iters + 1),
	    1);
	if (src_buf == NULL || dst_buf == NULL || stamps == NULL) {
		fprintf(stderr, "ring_bench: out of memory\n");
		return 1;
	}
	for (size_t i = 0; i < 16 * MiB; i++)
		src_buf[i] = bench_pattern(i);

	for (int c = 0; c < C_COUNT; c++)
		for (int w = 0; w < W_COUNT; w++)
			for (int r = 0; r < MAX_ROUNDS; r++)
				res[c][w][r] = res_p99[c][w][r] = NAN;
	for (int s = 0; s < S_COUNT; s++)
		for (int r = 0; r < MAX_ROUNDS; r++)
			sanity[s][r] = NAN;
	c_on[C_MEMCPY] = c_on[C_BARE] = c_on[C_RING] = 1;
#ifdef TW_BENCH_HAVE_SHM
	c_on[C_LINK] = 1;
#else
	snprintf(c_why[C_LINK], sizeof(c_why[C_LINK]),
	    "not measured: this build has no shm:// transport "
	    "(src/transport/shm/shm.c absent at configure time)");
#endif

	char facts[2048], load[64];
	bench_facts(facts, sizeof(facts), argc, argv, tw_version(), n_allowed,
	    cpu_a >= 0, "bare ring");
	if (cpu_a >= 0)
		bench_append(facts, sizeof(facts),
		    "parent (sender, timer) on CPU %d, child on CPU %d", cpu_a,
		    cpu_b);
	bench_append(facts, sizeof(facts),
	    "\n# rings: %u slots x %zu payload bytes (%zu-byte slot stride), "
	    "one ring per direction\n",
	    rcfg.slots, rcfg.slot_bytes,
	    (rcfg.slot_bytes + 16 + 63) / 64 * 64);
	bench_print_facts("# ring_bench: tagwire shared-memory rings vs the "
	                  "physical baseline\n",
	    facts, sizeof(facts), &cfg, "");
	bench_run(cfg.rounds, run_section, print_table, load, sizeof(load),
	    "busy-polling bare ring");
	bench_append(facts, sizeof(facts),
	    "# load average at the end (1, 5, 15 min): %s\n", load);
	if (cfg.tsv != NULL)
		write_tsv(cfg.tsv, facts);
	return bench_status(failures);
}
