// bench_util.c: see bench_util.h.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE // sched_getaffinity, CPU_SET
#endif

#include "bench_util.h"

#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#ifndef TW_BENCH_BUILD_TYPE
#define TW_BENCH_BUILD_TYPE "unknown"
#endif

// ---------------------------------------------------------------------------
// Every program
// ---------------------------------------------------------------------------

int64_t bench_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void bench_say(const char *s)
{
	ssize_t rc = write(2, s, strlen(s));
	(void)rc;
}

int bench_pin(int cpu)
{
	if (cpu < 0)
		return 0;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set);
}

int bench_cpus(int *first, int *second)
{
	cpu_set_t set;
	int n = 0;
	*first = *second = -1;
	CPU_ZERO(&set);
	if (sched_getaffinity(0, sizeof(set), &set) != 0)
		return 0;
	for (int c = 0; c < CPU_SETSIZE; c++) {
		if (!CPU_ISSET(c, &set))
			continue;
		if (n == 0)
			*first = c;
		else if (n == 1)
			*second = c;
		n++;
	}
	if (n < 2)
		*first = *second = -1;
	return n;
}

int bench_cpu_allowed(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	if (cpu < 0 || cpu >= CPU_SETSIZE
	    || sched_getaffinity(0, sizeof(set), &set) != 0)
		return 0;
	return CPU_ISSET(cpu, &set);
}

long bench_parse_long(const char *prog, const char *s, char **end, long lo,
    long hi, void (*usage)(FILE *))
{
	char *e;
	errno = 0;
	long v = strtol(s, &e, 10);
	if (errno != 0 || e == s || (end == NULL && *e != '\0') || v < lo
	    || v > hi) {
		fprintf(stderr, "%s: bad number '%s'\n", prog, s);
		if (usage != NULL)
			usage(stderr);
		exit(2);
	}
	if (end != NULL)
		*end = e;
	return v;
}

int bench_cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

// ---------------------------------------------------------------------------
// Workloads and options
// ---------------------------------------------------------------------------

const struct workload wl[W_COUNT] = {
	{ "lat 8 B", K_LAT, S_LAT, 8 },
	{ "lat 4 KiB", K_LAT, S_LAT, 4 * KiB },
	{ "bw 64 KiB", K_BW, S_BW, 64 * KiB },
	{ "bw 1 MiB", K_BW, S_BW, MiB },
	{ "bw 16 MiB", K_BW, S_BW, 16 * MiB },
	{ "rate 8 B stream", K_RATE, S_RATE, 8 },
};

const char *const s_name[S_COUNT] = { "lat", "bw", "rate" };

// Takes argv[*i] when it is a common option; 1 then, 0 when it is not.
static int common_opt(struct bench_opts *o, const char *prog, int argc,
    char **argv, int *i, void (*usage)(FILE *))
{
	const char *a = argv[*i];
	int more = *i + 1 < argc;
	if (strcmp(a, "--quick") == 0) {
		o->quick = 1;
	} else if (strcmp(a, "--tsv") == 0 && more) {
		o->tsv = argv[++*i];
	} else if (strcmp(a, "--rounds") == 0 && more) {
		o->rounds = (int)bench_parse_long(
		    prog, argv[++*i], NULL, 1, MAX_ROUNDS, usage);
	} else if (strcmp(a, "--bw-mib") == 0 && more) {
		o->bw_mib = bench_parse_long(
		    prog, argv[++*i], NULL, 16, 1L << 20, usage);
	} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
		usage(stdout);
		exit(0);
	} else {
		return 0;
	}
	return 1;
}

void bench_args(struct bench_opts *o, const char *prog, int argc, char **argv,
    int (*own)(int argc, char **argv, int *i), void (*usage)(FILE *),
    long quick_rate_msgs)
{
	for (int i = 1; i < argc; i++) {
		if (!common_opt(o, prog, argc, argv, &i, usage)
		    && !own(argc, argv, &i)) {
			usage(stderr);
			exit(2);
		}
	}
	if (o->rounds <= 0)
		o->rounds = o->quick ? 2 : 5;
	o->lat_warm = o->quick ? 200 : 2000;
	o->lat_iters = o->quick ? 2000 : 20000;
	o->bw_total = (size_t)(o->bw_mib > 0 ? o->bw_mib
	                      : o->quick     ? 64
	                                     : 1024)
	    * MiB;
	o->rate_msgs = o->quick ? quick_rate_msgs : 2000000;
}

struct test bench_test(const struct bench_opts *o, int w)
{
	struct test t = { .kind = wl[w].kind, .size = wl[w].size };
	if (t.kind == K_LAT) {
		t.warm = o->lat_warm;
		t.iters = o->lat_iters;
	} else if (t.kind == K_BW) {
		t.count = (long)(o->bw_total / t.size);
	} else {
		t.count = o->rate_msgs;
	}
	return t;
}

// ---------------------------------------------------------------------------
// The two sides of a measurement
// ---------------------------------------------------------------------------

unsigned char bench_pattern(size_t i)
{
	return (unsigned char)(i * 131 + 7);
}

void *bench_big_alloc(size_t n, int dontfork)
{
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	if (dontfork)
		madvise(p, n, MADV_DONTFORK);
	memset(p, 0, n);
	return p;
}

long bench_nivcsw(void)
{
	struct rusage ru;
	return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_nivcsw : 0;
}

// Turns the time stamps of n round trips (n + 1 values) into the one-way
// median and p99 in µs.
static void lat_figures(int64_t *stamps, long iters, double *v, double *p99)
{
	for (long i = 0; i < iters; i++)
		stamps[i] = stamps[i + 1] - stamps[i];
	size_t n = (size_t)iters;
	qsort(stamps, n, sizeof(*stamps), bench_cmp_i64);
	double med = n % 2 ? (double)stamps[n / 2]
	                   : 0.5 * (double)(stamps[n / 2 - 1] + stamps[n / 2]);
	// The nearest rank, ceil(0.99 n), without libm: the peer programs
	// link this file with nothing else.
	double rank = 0.99 * (double)n;
	size_t k = (size_t)rank;
	if ((double)k < rank)
		k++;
	*v = med / 2 / 1e3;
	*p99 = (double)stamps[k - 1] / 2 / 1e3;
}

int bench_send_side(const struct bench_io *io, const struct test *t,
    const unsigned char *src, unsigned char *rx, int64_t *stamps, double *v,
    double *p99, long *nivcsw)
{
	unsigned char one = 1;
	void *c = io->ctx;
	int rc;
	// The sync exchange: both sides are connected and ready once it is
	// done, so the clock starts only after it.
	if ((rc = io->send(c, &one, 1)) != 0
	    || (rc = io->recv(c, &one, 1)) != 0)
		return rc;
	long cs0 = bench_nivcsw();
	if (t->kind == K_LAT) {
		for (long i = 0; i < t->warm; i++)
			if ((rc = io->send(c, src, t->size)) != 0
			    || (rc = io->recv(c, rx, t->size)) != 0)
				return rc;
		stamps[0] = bench_now_ns();
		for (long i = 0; i < t->iters; i++) {
			if ((rc = io->send(c, src, t->size)) != 0
			    || (rc = io->recv(c, rx, t->size)) != 0)
				return rc;
			stamps[i + 1] = bench_now_ns();
		}
		*nivcsw = bench_nivcsw() - cs0;
		lat_figures(stamps, t->iters, v, p99);
		return 0;
	}
	int64_t t0 = bench_now_ns();
	for (long i = 0; i < t->count; i++)
		if ((rc = io->send(c, src, t->size)) != 0)
			return rc;
	if ((rc = io->recv(c, &one, 1)) != 0)
		return rc;
	double secs = (double)(bench_now_ns() - t0) / 1e9;
	*nivcsw = bench_nivcsw() - cs0;
	if (t->kind == K_BW)
		*v = (double)t->count * (double)t->size / secs / 1e9;
	else
		*v = (double)t->count / secs / 1e6;
	return 0;
}

int bench_recv_side(const struct bench_io *io, const struct test *t,
    unsigned char *buf, size_t cap, long *nivcsw)
{
	unsigned char one = 1;
	void *c = io->ctx;
	if (io->recv(c, &one, 1) != 0 || io->send(c, &one, 1) != 0)
		return BENCH_RECV_IO;
	long cs0 = bench_nivcsw();
	if (t->kind == K_LAT) {
		for (long i = 0; i < t->warm + t->iters; i++)
			if (io->recv(c, buf, t->size) != 0
			    || io->send(c, buf, t->size) != 0)
				return BENCH_RECV_IO;
	} else if (t->kind == K_RATE && io->drain != NULL) {
		if (io->drain(c, buf, cap, t->count, t->size) != 0
		    || io->send(c, &one, 1) != 0)
			return BENCH_RECV_IO;
	} else {
		for (long i = 0; i < t->count; i++)
			if (io->recv(c, buf, t->size) != 0)
				return BENCH_RECV_IO;
		if (io->send(c, &one, 1) != 0)
			return BENCH_RECV_IO;
		// Sample bytes of the last message: the figure counts only
		// if the bytes arrived intact.
		size_t s = t->size;
		if (t->kind == K_BW
		    && (buf[0] != bench_pattern(0)
		        || buf[s / 2] != bench_pattern(s / 2)
		        || buf[s - 1] != bench_pattern(s - 1)))
			return BENCH_RECV_DATA;
	}
	*nivcsw = bench_nivcsw() - cs0;
	return 0;
}

// ---------------------------------------------------------------------------
// Statistics and the report
// ---------------------------------------------------------------------------

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

double bench_median(const double *v, int n, double *lo, double *hi)
{
	double tmp[MAX_ROUNDS];
	int k = 0;
	for (int i = 0; i < n; i++)
		if (!isnan(v[i]))
			tmp[k++] = v[i];
	if (lo != NULL)
		*lo = *hi = NAN;
	if (k == 0)
		return NAN;
	qsort(tmp, (size_t)k, sizeof(*tmp), cmp_double);
	if (lo != NULL) {
		*lo = tmp[0];
		*hi = tmp[k - 1];
	}
	return k % 2 ? tmp[k / 2] : 0.5 * (tmp[k / 2 - 1] + tmp[k / 2]);
}

void bench_fmt_num(char *out, size_t len, double v)
{
	if (isnan(v))
		snprintf(out, len, "–");
	else if (v >= 100)
		snprintf(out, len, "%.0f", v);
	else if (v >= 10)
		snprintf(out, len, "%.1f", v);
	else
		snprintf(out, len, "%.2f", v);
}

// Each per-round ratio divides two figures taken seconds apart, so its
// range shows how far the machine drifted during the run.
void bench_fmt_ratio(
    char *out, size_t len, const double *num, const double *den, int n)
{
	double per[MAX_ROUNDS] = { 0 }, lo, hi;
	for (int i = 0; i < n; i++)
		per[i] = num[i] / den[i];
	bench_median(per, n, &lo, &hi);
	double r = bench_median(num, n, NULL, NULL)
	    / bench_median(den, n, NULL, NULL);
	char a[16], b[16], c[16];
	bench_fmt_num(a, sizeof(a), r);
	bench_fmt_num(b, sizeof(b), lo);
	bench_fmt_num(c, sizeof(c), hi);
	if (isnan(r))
		snprintf(out, len, "–");
	else
		snprintf(out, len, "%s (%s–%s)", a, b, c);
}

void bench_cell(const char *s, int width, int right)
{
	int n = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		n += (*p & 0xC0) != 0x80;
	int pad = width > n ? width - n : 0;
	if (right)
		printf(" %*s%s |", pad, "", s);
	else
		printf(" %s%*s |", s, pad, "");
}

void bench_row_start(const char *name, const char *unit)
{
	printf("|");
	bench_cell(name, 24, 0);
	bench_cell(unit, 4, 0);
}

void bench_print_rows(bench_figs *res, bench_figs *p99,
    void (*row)(const char *name, const char *unit, bench_figs *v, int w))
{
	for (int w = 0; w < W_COUNT; w++) {
		char name[64];
		if (wl[w].kind == K_LAT) {
			snprintf(name, sizeof(name), "%s one-way median",
			    wl[w].name);
			row(name, "µs", res, w);
			snprintf(
			    name, sizeof(name), "%s one-way p99", wl[w].name);
			row(name, "µs", p99, w);
		} else if (wl[w].kind == K_BW) {
			row(wl[w].name, "GB/s", res, w);
		} else {
			row(wl[w].name, "M/s", res, w);
		}
	}
}

FILE *bench_open_tsv(const char *prog, const char *path)
{
	FILE *f = fopen(path, "w");
	if (f == NULL)
		fprintf(stderr, "%s: cannot write %s: %s\n", prog, path,
		    strerror(errno));
	return f;
}

void bench_append(char *out, size_t len, const char *fmt, ...)
{
	size_t l = strlen(out);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(out + l, len - l, fmt, ap);
	va_end(ap);
}

void bench_load_avg(char *out, size_t len)
{
	snprintf(out, len, "unknown");
	FILE *f = fopen("/proc/loadavg", "r");
	if (f == NULL)
		return;
	double l1, l5, l15;
	if (fscanf(f, "%lf %lf %lf", &l1, &l5, &l15) == 3)
		snprintf(out, len, "%.2f %.2f %.2f", l1, l5, l15);
	fclose(f);
}

static void cpu_model(char *out, size_t len)
{
	snprintf(out, len, "unknown");
	FILE *f = fopen("/proc/cpuinfo", "r");
	if (f == NULL)
		return;
	char line[512];
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, "model name", 10) != 0)
			continue;
		char *p = strchr(line, ':');
		if (p == NULL)
			continue;
		p += 1 + strspn(p + 1, " \t");
		p[strcspn(p, "\n")] = '\0';
		snprintf(out, len, "%s", p);
		break;
	}
	fclose(f);
}

void bench_facts(char *out, size_t len, int argc, char **argv,
    const char *version, int n_allowed, int pinned, const char *poller)
{
	char model[256], cmd[512] = "", load[64];
	struct utsname un;
	if (uname(&un) != 0)
		snprintf(un.release, sizeof(un.release), "unknown");
	cpu_model(model, sizeof(model));
	bench_load_avg(load, sizeof(load));
	for (int i = 0; i < argc; i++)
		bench_append(cmd, sizeof(cmd), "%s%s", i ? " " : "", argv[i]);
	snprintf(out, len,
	    "# command: %s\n"
	    "# tagwire %s, build %s, compiler %s\n"
	    "# machine: nproc %ld (%d allowed), CPU \"%s\", kernel %s\n"
	    "# load average at the start (1, 5, 15 min): %s\n"
	    "# pinning: ",
	    cmd, version, TW_BENCH_BUILD_TYPE, __VERSION__,
	    sysconf(_SC_NPROCESSORS_ONLN), n_allowed, model, un.release, load);
	// Only a poller that may share its CPU with its peer yields.
	if (!pinned)
		bench_append(out, len, "unpinned, %d CPU(s) allowed%s%s%s",
		    n_allowed, n_allowed < 2 ? " (the " : "",
		    n_allowed < 2 ? poller : "",
		    n_allowed < 2 ? " yields while it polls)" : "");
}

void bench_print_facts(const char *title, char *facts, size_t len,
    const struct bench_opts *o, const char *extra)
{
	bench_append(facts, len,
	    "# rounds %d%s; lat %ld round trips after %ld warm-up; bw %zu MiB "
	    "per measurement%s; rate %ld messages\n",
	    o->rounds,
	    o->quick ? " (--quick: a smoke run, figures are rough)" : "",
	    o->lat_iters, o->lat_warm, o->bw_total / MiB,
	    o->bw_total < 1024 * MiB
	        ? " (less than the 1 GiB of the peer table)"
	        : "",
	    o->rate_msgs);
	printf("%s%s%s\n", title, facts, extra);
	fflush(stdout);
}

void bench_run(int rounds, void (*section)(int sec, int r),
    void (*report)(void), char *load, size_t len, const char *hurts)
{
	for (int r = 0; r < rounds; r++)
		for (int sec = 0; sec < S_COUNT; sec++)
			section(sec, r);
	report();
	bench_load_avg(load, len);
	printf("\nLoad average at the end (1, 5, 15 min): %s.  The benchmark "
	       "itself keeps up to 2 CPUs busy; well above that, other "
	       "processes competed for the CPUs, which hurts the %s most.\n",
	    load, hurts);
}

int bench_status(int failures)
{
	if (failures != 0)
		printf("\n%d failure(s): see the messages above\n", failures);
	return failures != 0 ? 1 : 0;
}
