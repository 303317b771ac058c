// bench_util.h: what the programs of this folder have in common, so that
// ring_bench, tcp_bench and the peer programs (peers/) time, pin, parse and
// report alike.  Plain C11 and POSIX without tagwire, because the peer
// programs are built with a bare cc command and never link the library.
//
// The first part serves every program; the second (workloads, options, the
// two sides of a measurement, statistics and the report) only ring_bench
// and tcp_bench, whose reports have the same shape.

#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define KiB ((size_t)1024)
#define MiB (KiB * KiB)

// ---------------------------------------------------------------------------
// Every program
// ---------------------------------------------------------------------------

// CLOCK_MONOTONIC in nanoseconds.
int64_t bench_now_ns(void);

// Writes s to stderr; safe in a signal handler.
void bench_say(const char *s);

// Pins the calling thread, and the threads it starts later, to cpu; a
// negative cpu leaves it unpinned.  0 on success.
int bench_pin(int cpu);

// The number of CPUs this process may run on; *first and *second are the
// first two of them, or both -1 when fewer than two are allowed.
int bench_cpus(int *first, int *second);

// Nonzero when this process may run on cpu.
int bench_cpu_allowed(int cpu);

// The number s, within [lo, hi].  With end NULL the whole of s must be the
// number; otherwise *end points after it.  Anything else is fatal: a
// message naming prog, usage(stderr) unless usage is NULL, exit status 2.
long bench_parse_long(const char *prog, const char *s, char **end, long lo,
    long hi, void (*usage)(FILE *));

// qsort() order of int64_t values.
int bench_cmp_i64(const void *a, const void *b);

// ---------------------------------------------------------------------------
// ring_bench and tcp_bench
// ---------------------------------------------------------------------------

#define MAX_ROUNDS 64

// The workloads, the definitions of the peer table.
enum { K_LAT, K_BW, K_RATE };
enum { S_LAT, S_BW, S_RATE, S_COUNT };
enum { W_LAT8, W_LAT4K, W_BW64K, W_BW1M, W_BW16M, W_RATE, W_COUNT };
struct workload {
	const char *name;
	int kind;
	int section;
	size_t size;
};
extern const struct workload wl[W_COUNT];
extern const char *const s_name[S_COUNT];

// One test as both sides of a measurement run it.
struct test {
	int kind;
	size_t size; // message size
	long warm, iters; // lat: warm-up and timed round trips
	long count; // bw, rate: messages
};

// The options both programs take, and what follows from them.
struct bench_opts {
	int quick;
	int rounds;
	long lat_warm, lat_iters;
	size_t bw_total; // bytes per bandwidth measurement
	long rate_msgs;
	const char *tsv;
	long bw_mib; // as given, 0: the default
};

// Reads the command line into o, then fills in the defaults;
// quick_rate_msgs is the rate figure's message count of a --quick run.
// The common options (--quick, --tsv, --rounds, --bw-mib, --help) are
// read here; own(argc, argv, &i) takes one of the program's own at
// argv[i], advancing i past its value, and returns nonzero when it did.
// --help prints usage(stdout) and exits; anything else unknown prints
// usage(stderr) and exits with status 2.
void bench_args(struct bench_opts *o, const char *prog, int argc, char **argv,
    int (*own)(int argc, char **argv, int *i), void (*usage)(FILE *),
    long quick_rate_msgs);

struct test bench_test(const struct bench_opts *o, int w);

// A byte of the source buffer; the receiver of a bw test checks samples.
unsigned char bench_pattern(size_t i);

// n bytes of page-aligned memory, touched, so that no page fault lands in
// a timed loop.  With dontfork a child forked later does not inherit them,
// so that the fork never makes the parent's pages copy-on-write.
void *bench_big_alloc(size_t n, int dontfork);

// The channel of one measurement: send and recv move one message of
// exactly n bytes and return 0 or the contender's own failure code.
struct bench_io {
	int (*send)(void *ctx, const void *buf, size_t n);
	int (*recv)(void *ctx, void *buf, size_t n);
	// Receives the count messages of size bytes of a rate test into buf
	// (cap bytes) as the contender likes; NULL for one recv each.
	int (*drain)(void *ctx, unsigned char *buf, size_t cap, long count,
	    size_t size);
	void *ctx;
};

// The side that sends and keeps the time: a sync exchange, then test t.
// *v is the one-way median in µs, GB/s or M msg/s, *p99 the one-way p99
// (lat only), *nivcsw the involuntary context switches of the timed part.
// src holds the messages, rx (t->size bytes for lat) takes the answers,
// stamps has room for t->iters + 1 values.  0, or the first failure code
// of send or recv.
int bench_send_side(const struct bench_io *io, const struct test *t,
    const unsigned char *src, unsigned char *rx, int64_t *stamps, double *v,
    double *p99, long *nivcsw);

// What bench_recv_side reports besides 0.
enum { BENCH_RECV_IO = 1, BENCH_RECV_DATA = 2 };

// The other side: answers the sync exchange, then echoes (lat) or receives
// everything and acks (bw, rate), checking sample bytes of the last bw
// message.  buf has cap >= t->size bytes.
int bench_recv_side(const struct bench_io *io, const struct test *t,
    unsigned char *buf, size_t cap, long *nivcsw);

// Involuntary context switches of this process so far.
long bench_nivcsw(void);

// Median of the non-NaN values of v[0..n), NaN when there are none; the
// smallest and largest go to *lo and *hi when not NULL.
double bench_median(const double *v, int n, double *lo, double *hi);

void bench_fmt_num(char *out, size_t len, double v);

// The ratio of the medians num/den, with the range of the per-round
// ratios.
void bench_fmt_ratio(
    char *out, size_t len, const double *num, const double *den, int n);

// Prints one table cell of width characters (UTF-8 aware), right or left
// aligned, followed by its separator.
void bench_cell(const char *s, int width, int right);

// Starts a row of the results table (the header row too) with its first
// two cells, the workload and the unit.
void bench_row_start(const char *name, const char *unit);

// The figures of every contender: [contender][workload][round].
typedef double bench_figs[W_COUNT][MAX_ROUNDS];

// Calls row() for the rows of the results table in their order: median
// and p99 of each lat workload, then the bw and rate workloads.
void bench_print_rows(bench_figs *res, bench_figs *p99,
    void (*row)(const char *name, const char *unit, bench_figs *v, int w));

// Opens the TSV file for writing; NULL, with a message naming prog, when
// it cannot.
FILE *bench_open_tsv(const char *prog, const char *path);

// Appends printf-style text to the string in out (len bytes in all).
__attribute__((format(printf, 3, 4))) void bench_append(
    char *out, size_t len, const char *fmt, ...);

// The load averages of /proc/loadavg (1, 5 and 15 minutes), or "unknown".
void bench_load_avg(char *out, size_t len);

// The first lines of a report (command, version, machine, load) into out;
// n_allowed is how many CPUs the process may run on.  The last line, on
// pinning, is left for the caller to finish unless the program runs
// unpinned (!pinned): then it says so, and, when fewer than two CPUs are
// allowed, that the busy poller named yields.
void bench_facts(char *out, size_t len, int argc, char **argv,
    const char *version, int n_allowed, int pinned, const char *poller);

// Appends the line on rounds and sizes to facts, then prints title, the
// facts and the lines in extra, and a blank line.
void bench_print_facts(const char *title, char *facts, size_t len,
    const struct bench_opts *o, const char *extra);

// Runs section(sec, r) for every section of every round, in order, then
// report(), then prints the load at the end, which goes to load as well
// (for the TSV); hurts names the contender that other processes on the
// CPUs hurt most.
void bench_run(int rounds, void (*section)(int sec, int r),
    void (*report)(void), char *load, size_t len, const char *hurts);

// Reports the failures, if any; the exit status of the program.
int bench_status(int failures);

#endif
