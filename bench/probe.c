// probe: how far apart the hypervisor put the two CPUs that the
// benchmarks pin their parties to, right now.
//
// A guest's vCPUs move: the same pair of CPU numbers may share a cache
// for a while (a cache line crosses in tens of nanoseconds) and sit on
// cores that do not for the next (hundreds), switching within seconds.
// Every cross-CPU figure moves with it, so two programs measured minutes
// apart may have measured two different machines.
// bench/run.sh compare runs this before each program and records the
// figure beside that program's, so that a reader can see which figures
// were taken in the same placement.
//
// Two threads, pinned to the first two allowed CPUs (or --cpus A,B), pass
// one cache line back and forth: the figure is the one-way time in
// nanoseconds, the median of PROBE_BATCHES batches.  It prints that
// number alone, or "n/a" with the reason on stderr and exit status 0 when
// there are not two CPUs to pin to (nothing to probe).  Every wait is
// bounded: a partner that never answers (not scheduled for a whole
// second) ends the program with status 1.

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"

#define PROBE_WARM 2000 // round trips before the timed batches
#define PROBE_ITERS 5000 // round trips per batch
#define PROBE_BATCHES 7
#define PROBE_GIVE_UP_NS 1000000000LL // one wait, at most

struct line {
	_Alignas(64) _Atomic long v;
};

static struct line ping, pong;
static int cpu_b = -1;
static _Atomic int failed;

// Waits until *l holds `want`; 0, or -1 after PROBE_GIVE_UP_NS or once the
// other thread failed.
static int wait_for(struct line *l, long want)
{
	unsigned spins = 0;
	int64_t since = 0;
	while (atomic_load_explicit(&l->v, memory_order_acquire) != want) {
		if (++spins % 4096 != 0)
			continue;
		if (atomic_load_explicit(&failed, memory_order_relaxed))
			return -1;
		int64_t now = bench_now_ns();
		if (since == 0)
			since = now;
		else if (now - since > PROBE_GIVE_UP_NS)
			return -1;
	}
	return 0;
}

// The answering side: copies each ping to pong.
static void *answer(void *arg)
{
	(void)arg;
	if (bench_pin(cpu_b) != 0) {
		atomic_store(&failed, 1);
		return NULL;
	}
	long total = PROBE_WARM + (long)PROBE_ITERS * PROBE_BATCHES;
	for (long i = 1; i <= total; i++) {
		if (wait_for(&ping, i) != 0) {
			atomic_store(&failed, 1);
			return NULL;
		}
		atomic_store_explicit(&pong.v, i, memory_order_release);
	}
	return NULL;
}

// Round trips i = from + 1 .. to; 0, or -1.
static int trips(long from, long to)
{
	for (long i = from + 1; i <= to; i++) {
		atomic_store_explicit(&ping.v, i, memory_order_release);
		if (wait_for(&pong, i) != 0)
			return -1;
	}
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: probe [--cpus A,B]\n");
}

int main(int argc, char **argv)
{
	int a = -1, b = -1;
	if (argc == 3 && strcmp(argv[1], "--cpus") == 0) {
		char *end = NULL;
		a = (int)bench_parse_long(
		    "probe", argv[2], &end, 0, 4095, usage);
		if (*end != ',') {
			usage(stderr);
			return 2;
		}
		b = (int)bench_parse_long(
		    "probe", end + 1, &end, 0, 4095, usage);
		if (*end != '\0' || a == b) {
			usage(stderr);
			return 2;
		}
		if (!bench_cpu_allowed(a) || !bench_cpu_allowed(b)) {
			fprintf(stderr, "probe: CPU %d or %d is not allowed\n",
			    a, b);
			puts("n/a");
			return 0;
		}
	} else if (argc != 1) {
		usage(stderr);
		return 2;
	} else if (bench_cpus(&a, &b) < 2) {
		fprintf(stderr, "probe: fewer than two CPUs allowed\n");
		puts("n/a");
		return 0;
	}
	cpu_b = b;
	if (bench_pin(a) != 0) {
		fprintf(stderr, "probe: cannot pin to CPU %d\n", a);
		puts("n/a");
		return 0;
	}
	pthread_t t;
	if (pthread_create(&t, NULL, answer, NULL) != 0) {
		fprintf(stderr, "probe: cannot start a thread\n");
		return 1;
	}
	double ns[PROBE_BATCHES];
	int rc = trips(0, PROBE_WARM);
	long done = PROBE_WARM;
	for (int k = 0; rc == 0 && k < PROBE_BATCHES; k++) {
		int64_t t0 = bench_now_ns();
		rc = trips(done, done + PROBE_ITERS);
		ns[k] = (double)(bench_now_ns() - t0) / (2.0 * PROBE_ITERS);
		done += PROBE_ITERS;
	}
	if (rc != 0)
		atomic_store(&failed, 1);
	pthread_join(t, NULL);
	if (rc != 0 || atomic_load(&failed)) {
		fprintf(stderr,
		    "probe: the other CPU did not answer within "
		    "a second\n");
		return 1;
	}
	printf("%.0f\n", bench_median(ns, PROBE_BATCHES, NULL, NULL));
	return 0;
}
