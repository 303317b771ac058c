// reconnect_bench: how long tcp:// traffic stops when a connection is
// killed while both processes live.
//
// Two processes on 127.0.0.1 (forked from this one, which never creates a
// link itself) ping-pong 8-byte messages over a tagwire link without
// pause.  This process kills their connections with `ss -K`, K times.
// The kill lands somewhere inside the run of ss, which takes milliseconds
// on a busy machine, so each kill gives two figures: the longest round
// trip that ended between the start of ss and the end of the first round
// trip begun after ss exited (the round trip the kill stalled: the
// reconnection, the frames sent again, and at most one round trip more),
// and the time from the start of ss to the end of that first round trip
// (an upper bound that includes ss).  The report gives the median, p99
// and maximum of both over the kills, and the median time ss took.
//
// A kill that finds no connection (ss reports no socket) is run again.
// Every wait is bounded: a ping side that does not complete a round trip
// within three heartbeats and 5 s of a kill fails the run, and so does
// one whose call fails; its status is printed.

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
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

#include <tagwire/tagwire.h>

#include "sskill.h"
#include "testdata.h"

#include "bench_util.h"

extern char **environ;

#define MS 1000000LL // ns
#define WARM_RTS 2000 // round trips before the first kill
#define SETTLE_RTS 200 // round trips between a recovery and the next kill

// What the ping side and this process share (a MAP_SHARED page).
struct shared {
	// This process: the start of the last ss run, and its end once it
	// ended.
	_Atomic int64_t window_ns, mark_ns;
	// The ping side: the end of the first round trip that began at or
	// after mark_ns, the longest round trip that ended after window_ns
	// up to that one, and the mark (stored last).
	_Atomic int64_t res_end_ns, res_stall_ns, res_mark_ns;
	_Atomic uint64_t rts; // round trips completed
	_Atomic int stop;
	char err[2][256]; // why each side failed, by rank
};

static struct shared *sh;
static size_t my_rank; // in a side

static struct {
	long kills;
	long stripes;
	long heartbeat_ms;
	int no_kill; // ss lists the connections instead of killing them
} opt = { 50, 1, 1000, 0 };

static void usage(FILE *f)
{
	fprintf(f,
	    "usage: reconnect_bench [--quick] [--kills K] [--stripes S] "
	    "[--heartbeat MS] [--no-kill]\n"
	    "  --kills K       connections killed with ss -K (default 50; 5 "
	    "with --quick)\n"
	    "  --stripes S     TW_OPT_STRIPES of the link (default 1)\n"
	    "  --heartbeat MS  TW_OPT_HEARTBEAT_MS of the link (default "
	    "1000)\n"
	    "  --no-kill       ss lists the connections instead of killing "
	    "them:\n"
	    "                  the floor of the figures (ss and a round "
	    "trip)\n");
}

// Runs `ss -K` (or, with --no-kill, lists) on the established TCP
// connections with an end at one of the ports; returns how many sockets it
// killed (one line each), or -1 with a message.
static int ss_kill(const unsigned *ports, int n)
{
	char why[700];
	int lines = tw_test_ss_kill(
	    ports, (size_t)n, !opt.no_kill, 5000, why, sizeof(why));
	if (lines < 0)
		fprintf(stderr, "reconnect_bench: %s\n", why);
	return lines;
}

static void fail_side(const char *what, long k, int st)
{
	snprintf(sh->err[my_rank], sizeof(sh->err[my_rank]),
	    "round trip %ld, %s: %s (%s)", k, what, tw_err_name(st),
	    tw_strerror(st));
	exit(1);
}

static tw_link *side_link(const unsigned *ports, size_t rank)
{
	tw_desc *d = tw_desc_new("reconnect");
	char addr[64];
	for (int i = 0; i < 2; i++) {
		snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%u", ports[i]);
		if (d == NULL
		    || tw_desc_add_party(d, i == 0 ? "p0" : "p1", addr)
		        != TW_OK) {
			snprintf(sh->err[rank], sizeof(sh->err[rank]),
			    "bad description");
			exit(1);
		}
	}
	tw_desc_set(d, TW_OPT_STRIPES, opt.stripes);
	tw_desc_set(d, TW_OPT_HEARTBEAT_MS, opt.heartbeat_ms);
	tw_desc_set(d, TW_OPT_CONNECT_TIMEOUT_MS, 20000);
	tw_desc_set(d, TW_OPT_RECV_TIMEOUT_MS, 10000);
	tw_link *l = NULL;
	my_rank = rank;
	int st = tw_link_create(d, rank, &l);
	tw_desc_free(d);
	if (st != TW_OK)
		fail_side("tw_link_create", 0, st);
	return l;
}

// Rank 0: round trips until told to stop, then an empty message that
// stops the other side.
static void ping_side(const unsigned *ports)
{
	tw_link *l = side_link(ports, 0);
	unsigned char msg[8] = { 0 }, in[8];
	int64_t done = 0, window = 0, stall = 0;
	for (long k = 0; !atomic_load(&sh->stop); k++) {
		int64_t w = atomic_load(&sh->window_ns);
		int64_t m = atomic_load(&sh->mark_ns);
		if (w != window) {
			window = w;
			stall = 0;
		}
		int64_t s = bench_now_ns();
		memcpy(msg, &k, sizeof(msg));
		int st = tw_send(l, 1, "p", msg, sizeof(msg));
		if (st != TW_OK)
			fail_side("tw_send", k, st);
		size_t n = 0;
		st = tw_recv_into(l, 1, "p", in, sizeof(in), &n);
		if (st != TW_OK)
			fail_side("tw_recv_into", k, st);
		if (n != sizeof(in) || memcmp(in, msg, n) != 0) {
			snprintf(sh->err[0], sizeof(sh->err[0]),
			    "round trip %ld: a wrong answer", k);
			exit(1);
		}
		int64_t e = bench_now_ns();
		atomic_fetch_add(&sh->rts, 1);
		if (e >= window && e - s > stall)
			stall = e - s;
		if (m > done && s >= m) {
			atomic_store(&sh->res_end_ns, e);
			atomic_store(&sh->res_stall_ns, stall);
			atomic_store(&sh->res_mark_ns, m);
			done = m;
		}
	}
	int st = tw_send(l, 1, "p", NULL, 0);
	if (st == TW_OK)
		st = tw_link_close(l);
	if (st != TW_OK)
		fail_side("stopping", -1, st);
	exit(0);
}

// Rank 1: echoes until the empty message.
static void pong_side(const unsigned *ports)
{
	tw_link *l = side_link(ports, 1);
	unsigned char in[8];
	for (long k = 0;; k++) {
		size_t n = 0;
		int st = tw_recv_into(l, 0, "p", in, sizeof(in), &n);
		if (st != TW_OK)
			fail_side("tw_recv_into", k, st);
		if (n == 0)
			break;
		st = tw_send(l, 0, "p", in, n);
		if (st != TW_OK)
			fail_side("tw_send", k, st);
	}
	int st = tw_link_close(l);
	if (st != TW_OK && st != TW_EPEER)
		fail_side("tw_link_close", -1, st);
	exit(0);
}

static pid_t start_side(void (*fn)(const unsigned *), const unsigned *ports)
{
	pid_t parent = getpid();
	fflush(NULL);
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(126);
	fn(ports);
	_exit(0);
}

static pid_t sides[2];

// Whether a side ended; a side that ended is a failure here, reported.
static int side_ended(void)
{
	for (int i = 0; i < 2; i++) {
		int st;
		if (waitpid(sides[i], &st, WNOHANG) != sides[i])
			continue;
		sides[i] = 0;
		fprintf(stderr,
		    "reconnect_bench: the %s side ended (%s %d): %s\n",
		    i == 0 ? "ping" : "echo",
		    WIFEXITED(st) ? "exit status" : "signal",
		    WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st),
		    sh->err[i][0] ? sh->err[i] : "no message");
		return 1;
	}
	return 0;
}

static void stop_sides(void)
{
	for (int i = 0; i < 2; i++) {
		if (sides[i] <= 0)
			continue;
		kill(sides[i], SIGKILL);
		while (waitpid(sides[i], NULL, 0) < 0 && errno == EINTR)
			;
		sides[i] = 0;
	}
}

static void pause_us(long us)
{
	struct timespec ts = { 0, us * 1000 };
	nanosleep(&ts, NULL);
}

// Waits until rts reaches want or the deadline; 0, or -1 (reported).
static int wait_rts(uint64_t want, int64_t deadline_ns, const char *what)
{
	while (atomic_load(&sh->rts) < want) {
		if (side_ended())
			return -1;
		if (bench_now_ns() >= deadline_ns) {
			fprintf(stderr, "reconnect_bench: %s: no progress\n",
			    what);
			return -1;
		}
		pause_us(100);
	}
	return 0;
}

static double pct(const int64_t *v, long n, double p)
{
	long i = (long)ceil(p * (double)n) - 1;
	if (i < 0)
		i = 0;
	if (i >= n)
		i = n - 1;
	return (double)v[i] / MS;
}

static int own_opt(int argc, char **argv, int *i)
{
	long *dst = NULL, lo = 1, hi = 1000000;
	if (strcmp(argv[*i], "--kills") == 0) {
		dst = &opt.kills;
	} else if (strcmp(argv[*i], "--stripes") == 0) {
		dst = &opt.stripes;
		hi = 64;
	} else if (strcmp(argv[*i], "--heartbeat") == 0) {
		dst = &opt.heartbeat_ms;
		lo = 10;
		hi = 3600000;
	} else {
		return 0;
	}
	if (*i + 1 >= argc) {
		fprintf(
		    stderr, "reconnect_bench: %s wants a value\n", argv[*i]);
		usage(stderr);
		exit(2);
	}
	*dst = bench_parse_long(
	    "reconnect_bench", argv[*i + 1], NULL, lo, hi, usage);
	*i += 1;
	return 1;
}

int main(int argc, char **argv)
{
	int quick = 0, kills_set = 0;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--quick") == 0) {
			quick = 1;
		} else if (strcmp(argv[i], "--no-kill") == 0) {
			opt.no_kill = 1;
		} else if (strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		} else if (own_opt(argc, argv, &i)) {
			kills_set |= strcmp(argv[i - 1], "--kills") == 0;
		} else {
			fprintf(stderr, "reconnect_bench: unknown option %s\n",
			    argv[i]);
			usage(stderr);
			return 2;
		}
	}
	if (quick && !kills_set)
		opt.kills = 5;
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		perror("reconnect_bench: mmap");
		return 1;
	}
	unsigned ports[2];
	do {
		ports[0] = tw_test_free_port();
		ports[1] = tw_test_free_port();
	} while (ports[0] == ports[1]);
	if (ports[0] == 0 || ports[1] == 0) {
		fprintf(stderr, "reconnect_bench: no free loopback port\n");
		return 1;
	}
	printf("reconnect_bench: from a tcp:// connection killed with ss -K "
	       "to the next round trip\n"
	       "  2 processes on 127.0.0.1, 8-byte ping-pong, %ld stripe(s), "
	       "heartbeat %ld ms, %ld kills%s\n",
	    opt.stripes, opt.heartbeat_ms, opt.kills,
	    opt.no_kill ? " (--no-kill: ss only lists them)" : "");
	fflush(stdout);
	sides[1] = start_side(pong_side, ports);
	sides[0] = start_side(ping_side, ports);
	int64_t *lat = calloc((size_t)opt.kills, sizeof(*lat));
	int64_t *ss_ns = calloc((size_t)opt.kills, sizeof(*ss_ns));
	int64_t *stall = calloc((size_t)opt.kills, sizeof(*stall));
	if (lat == NULL || ss_ns == NULL || stall == NULL || sides[0] < 0
	    || sides[1] < 0) {
		fprintf(stderr, "reconnect_bench: out of memory or no fork\n");
		stop_sides();
		return 1;
	}
	int rc = 1;
	long sockets = 0, misses = 0, k = 0;
	if (wait_rts(WARM_RTS, bench_now_ns() + 30000 * MS, "warm-up") != 0)
		goto out;
	// A killed connection may go unnoticed for three heartbeats before
	// the sides dial again.
	int64_t bound = 3 * opt.heartbeat_ms * MS + 5000 * MS;
	while (k < opt.kills) {
		int64_t t0 = bench_now_ns();
		atomic_store(&sh->window_ns, t0);
		int n = ss_kill(ports, 2);
		int64_t t1 = bench_now_ns();
		if (n < 0)
			goto out;
		if (n == 0) {
			// The sides were between connections: no kill.
			if (++misses > 10 * opt.kills) {
				fprintf(stderr,
				    "reconnect_bench: ss -K found "
				    "no connection %ld times\n",
				    misses);
				goto out;
			}
			continue;
		}
		sockets += n;
		atomic_store(&sh->mark_ns, t1);
		while (atomic_load(&sh->res_mark_ns) != t1) {
			if (side_ended()) {
				fprintf(stderr,
				    "reconnect_bench: FAILED: traffic did not "
				    "resume after kill %ld of %ld (%d "
				    "socket(s)); a side ended %.1f ms after "
				    "ss "
				    "-K started\n",
				    k + 1, opt.kills, n,
				    (double)(bench_now_ns() - t0) / MS);
				goto out;
			}
			if (bench_now_ns() - t1 > bound) {
				fprintf(stderr,
				    "reconnect_bench: kill %ld of %ld: no "
				    "round trip within %.0f ms\n",
				    k + 1, opt.kills, (double)bound / MS);
				goto out;
			}
			pause_us(20);
		}
		lat[k] = atomic_load(&sh->res_end_ns) - t0;
		stall[k] = atomic_load(&sh->res_stall_ns);
		ss_ns[k] = t1 - t0;
		k++;
		if (wait_rts(atomic_load(&sh->rts) + SETTLE_RTS,
		        bench_now_ns() + bound, "after a recovery")
		    != 0)
			goto out;
	}
	qsort(lat, (size_t)k, sizeof(*lat), bench_cmp_i64);
	qsort(ss_ns, (size_t)k, sizeof(*ss_ns), bench_cmp_i64);
	qsort(stall, (size_t)k, sizeof(*stall), bench_cmp_i64);
	printf("  %ld kills of %.1f socket(s) each on average (%ld ss runs "
	       "found none)\n"
	       "  kill to traffic (the stalled round trip): median %.3f ms, "
	       "p99 %.3f ms, max %.3f ms\n"
	       "  from the start of ss -K:                  median %.3f ms, "
	       "p99 %.3f ms, max %.3f ms\n"
	       "  ss -K itself:                             median %.3f ms\n",
	    k, (double)sockets / (double)k, misses, pct(stall, k, 0.5),
	    pct(stall, k, 0.99), (double)stall[k - 1] / MS, pct(lat, k, 0.5),
	    pct(lat, k, 0.99), (double)lat[k - 1] / MS, pct(ss_ns, k, 0.5));
	atomic_store(&sh->stop, 1);
	for (int i = 0; i < 2; i++) {
		int st;
		int64_t until = bench_now_ns() + 15000 * MS;
		pid_t r;
		while ((r = waitpid(sides[i], &st, WNOHANG)) == 0
		    && bench_now_ns() < until)
			pause_us(1000);
		if (r != sides[i]) {
			fprintf(
			    stderr, "reconnect_bench: a side did not stop\n");
			goto out;
		}
		sides[i] = 0;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			fprintf(stderr, "reconnect_bench: stopping: %s\n",
			    sh->err[i][0] ? sh->err[i] : "a side failed");
			goto out;
		}
	}
	rc = 0;
out:
	stop_sides();
	free(lat);
	free(ss_ns);
	free(stall);
	return rc;
}
