// Soak test: eight parties, each a forked process, all-to-all over one
// transport (tcp:// on loopback or shm://) for a long time, with every byte
// checked and each party's resident memory watched.  Only the public API
// is used.
//
//   soak tcp|shm [DEFAULT_BYTES]
//
// Each party sends TW_SOAK_BYTES in all (environment; else DEFAULT_BYTES,
// else 2 GiB; a number with an optional K, M or G suffix, binary), an equal
// share to each of its seven peers, and receives as much.  Message k from
// party s to party r has a size, a tag and a way of sending and receiving
// that both ends derive from (s, r, k): sizes from 0 bytes to 4 MiB (most
// messages are small, most bytes travel in messages of 256 KiB and more),
// four tags, a quarter sent with tw_send_async, half received with
// tw_recv_into.  Its bytes are tw_test_fill(s, r, k), checked on arrival.
// A sender thread and a receiver thread per peer keep every pair moving,
// so that flow control (TW_OPT_RECV_BUFFER) never leaves two parties
// waiting for each other.
//
// Memory: the traffic runs in two phases, the warm-up (an eighth of every
// stream: by then every size class and code path has been used many times
// and every buffer exists) and the rest.  After each, every party waits
// until all it sent was delivered and all sent to it was received, and
// reads its resident size (/proc/self/statm) and the bytes it has from
// malloc (mallinfo2): two points with nothing in flight, at which each
// figure must be within RSS_GROWTH_MAX of the other.  Sanitizer
// builds report both figures without judging them: ASan keeps freed memory
// in quarantine, and both sanitizers map shadow memory for every address
// touched, so resident size there says nothing about leaks (ASan's leak
// checker covers them; a party that succeeds ends with exit(), not _exit,
// so that it runs).
//
// Each party reports on a pipe; the parent prints a line per party (MB/s
// of what it sent, resident sizes) and fails when a party failed.  When a
// party fails the others are killed rather than left to time out.

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <tagwire/tagwire.h>

#include "testdata.h"

#define NPARTY 8
#define NTAGS 4
#define MAX_MSG ((size_t)4 << 20)
#define DEFAULT_BYTES ((uint64_t)2 << 30)
// Receivers hold at most this much from each sender: 7 x 16 MiB per party.
#define RECV_BUFFER ((int64_t)16 << 20)
#define ATTEMPTS 3

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

// How much a party's resident size, and the bytes it has from malloc, may
// grow from the end of the warm-up to the end of the run.  Both samples
// are taken with nothing in flight, so the library holds the same things
// at both: rings or sockets, threads, empty queues; and with nothing kept
// for reuse: the library's pool of large buffers is drained, tcp:// send
// rings are trimmed and glibc's free blocks are trimmed first, since the
// pool alone may hold up to 64 MiB and each send ring up to 32 MiB (it
// grows with the bytes in flight and keeps its size), more or less of
// them at either point: untrimmed, a party's rings to its seven peers
// were seen to grow by 24 MiB after the warm-up.  Measured with 2 GiB per
// party: heap in use within 0.02 MiB, resident size within 2 MiB, over
// both transports.  16 MiB still
// catches a leak of one message in a hundred (about 25 MiB), of two
// kilobytes per message, or any growth with the volume (1.75 GiB pass
// through a party after the warm-up).
#define RSS_GROWTH_MAX ((uint64_t)16 << 20)

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_PORT_TAKEN = 2 };

// What a party sends its parent once it is done (or failed).
typedef struct report {
	int status; // EXIT_*
	char err[256];
	uint64_t sent, received, msgs_sent, msgs_received;
	double seconds;
	uint64_t rss_warm, rss_end, heap_warm, heap_end;
} report;

static const char *transport;
static uint64_t volume; // bytes each party sends, in all

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

// ---------------------------------------------------------------------------
// The traffic: what both ends derive from (sender, receiver, number)
// ---------------------------------------------------------------------------

typedef struct shape {
	size_t len;
	int tag;
	bool async; // sent with tw_send_async
	bool into; // received with tw_recv_into
} shape;

static uint64_t mix(uint64_t x)
{
	x += UINT64_C(0x9e3779b97f4a7c15);
	x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
	return x ^ (x >> 31);
}

static shape msg_shape(uint32_t s, uint32_t r, uint32_t k)
{
	uint64_t h = mix(((uint64_t)s << 56) ^ ((uint64_t)r << 48) ^ k);
	uint64_t v = h >> 16;
	shape m;
	// Of 16 messages, 6 have up to 64 bytes, 4 up to 8 KiB, 3 up to
	// 256 KiB and 3 up to MAX_MSG.
	unsigned cls = (unsigned)(h % 16);
	if (cls < 6)
		m.len = (size_t)(v % 65);
	else if (cls < 10)
		m.len = 65 + (size_t)(v % (8192 - 65));
	else if (cls < 13)
		m.len = 8192 + (size_t)(v % ((256 << 10) - 8192));
	else
		m.len = ((size_t)256 << 10)
		    + (size_t)(v % (MAX_MSG - ((size_t)256 << 10) + 1));
	m.tag = (int)((h >> 4) % NTAGS);
	m.async = (h >> 6) % 4 == 0;
	m.into = (h >> 8) % 2 == 0;
	return m;
}

static const char *const tags[NTAGS]
    = { "soak.a", "soak.b", "soak.c", "soak.d" };

// What s sends r in all: an equal share of the volume.
static uint64_t pair_share(uint32_t s, uint32_t r)
{
	uint32_t peer = r < s ? r : r - 1; // 0..NPARTY-2 among s's peers
	return volume / (NPARTY - 1) + (peer < volume % (NPARTY - 1));
}

// ---------------------------------------------------------------------------
// One party (a forked child)
// ---------------------------------------------------------------------------

static size_t me;
static int report_fd = -1;
static report rep;
static pthread_mutex_t rep_mtx = PTHREAD_MUTEX_INITIALIZER;
static tw_link *link_;

static void send_report_and_exit(int code)
{
	pthread_mutex_lock(&rep_mtx);
	rep.status = code;
	const char *p = (const char *)&rep;
	size_t left = sizeof(rep);
	while (left > 0) {
		ssize_t w = write(report_fd, p, left);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		p += w;
		left -= (size_t)w;
	}
	if (code == EXIT_OK)
		exit(code); // leak checks run
	// Other threads are still busy with the link: leave without the
	// checks a sanitizer makes at exit (thread leaks), which would only
	// hide the report.
	syscall(SYS_exit_group, code);
	_exit(code);
}

static void party_fail(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

static void party_fail(int code, const char *fmt, ...)
{
	pthread_mutex_lock(&rep_mtx);
	int n = snprintf(rep.err, sizeof(rep.err), "rank %zu: ", me);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(rep.err + n, sizeof(rep.err) - (size_t)n, fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&rep_mtx);
	send_report_and_exit(code);
	abort(); // not reached
}

#define P_OK(expr)                                                            \
	do {                                                                  \
		int rv_ = (expr);                                             \
		if (rv_ != TW_OK)                                             \
			party_fail(EXIT_FAILED, "line %d: %s: got %s",        \
			    __LINE__, #expr, tw_err_name(rv_));               \
	} while (0)

// Resident size and the bytes malloc has handed out and not had back, with
// nothing kept for reuse: neither the library's pool of large buffers, nor
// tcp:// send rings beyond what they hold, nor glibc's free blocks (see
// RSS_GROWTH_MAX).
static void memory_sample(uint64_t *rss, uint64_t *heap)
{
	tw_buf_pool_drain();
	tw_link_trim(link_);
	malloc_trim(0);
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long size = 0, resident = 0;
	if (f == NULL || fscanf(f, "%lu %lu", &size, &resident) != 2)
		party_fail(EXIT_FAILED, "cannot read /proc/self/statm");
	fclose(f);
	*rss = (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
	struct mallinfo2 mi = mallinfo2();
	*heap = (uint64_t)mi.uordblks + (uint64_t)mi.hblkhd;
}

// Where each stream of this party stands: messages 0..k-1 of it have
// passed, `done` bytes.  A stream's thread owns its entry while it runs.
typedef struct stream {
	uint32_t k;
	uint64_t done;
} stream;

static stream to[NPARTY], from[NPARTY];
// The traffic runs in two phases: the warm-up, 1/WARMUP_PART of each
// stream, then the rest.  Set before the threads of a phase start.
#define WARMUP_PART 8
static int phase;

// Where the current phase ends in a stream of `share` bytes.  Both ends
// stop at the same message: the first that reaches it.
static uint64_t phase_end(uint64_t share)
{
	return phase == 0 ? share / WARMUP_PART : share;
}

// Message k of a stream of `share` bytes of which `done` have passed.
static shape stream_msg(
    uint32_t s, uint32_t r, const stream *st, uint64_t share)
{
	shape m = msg_shape(s, r, st->k);
	if (m.len > share - st->done) // the last one ends the share
		m.len = (size_t)(share - st->done);
	return m;
}

static void *sender(void *arg)
{
	uint32_t r = (uint32_t)(uintptr_t)arg, s = (uint32_t)me;
	stream *st = &to[r];
	unsigned char *buf = malloc(MAX_MSG);
	if (buf == NULL)
		party_fail(EXIT_FAILED, "out of memory");
	uint64_t share = pair_share(s, r), end = phase_end(share);
	while (st->done < end) {
		shape m = stream_msg(s, r, st, share);
		tw_test_fill(buf, m.len, s, r, st->k);
		int rv = m.async
		    ? tw_send_async(link_, r, tags[m.tag], buf, m.len)
		    : tw_send(link_, r, tags[m.tag], buf, m.len);
		if (rv != TW_OK)
			party_fail(EXIT_FAILED,
			    "%s of message %u (%zu bytes, %s) to rank %u: %s",
			    m.async ? "tw_send_async" : "tw_send", st->k,
			    m.len, tags[m.tag], r, tw_err_name(rv));
		st->done += m.len;
		st->k++;
	}
	free(buf);
	return NULL;
}

static void *receiver(void *arg)
{
	uint32_t s = (uint32_t)(uintptr_t)arg, r = (uint32_t)me;
	stream *st = &from[s];
	unsigned char *buf = malloc(MAX_MSG);
	if (buf == NULL)
		party_fail(EXIT_FAILED, "out of memory");
	uint64_t share = pair_share(s, r), end = phase_end(share);
	while (st->done < end) {
		shape m = stream_msg(s, r, st, share);
		tw_buf got = { NULL, 0 };
		const unsigned char *data = buf;
		size_t len = 0;
		int rv = m.into
		    ? tw_recv_into(link_, s, tags[m.tag], buf, MAX_MSG, &len)
		    : tw_recv(link_, s, tags[m.tag], &got);
		if (!m.into) {
			data = got.data;
			len = got.len;
		}
		if (rv != TW_OK)
			party_fail(EXIT_FAILED,
			    "%s of message %u (%zu bytes, %s) from rank %u: "
			    "%s",
			    m.into ? "tw_recv_into" : "tw_recv", st->k, m.len,
			    tags[m.tag], s, tw_err_name(rv));
		if (len != m.len)
			party_fail(EXIT_FAILED,
			    "message %u (%s) from rank %u: %zu bytes, want "
			    "%zu",
			    st->k, tags[m.tag], s, len, m.len);
		if (!tw_test_check(data, len, s, r, st->k))
			party_fail(EXIT_FAILED,
			    "message %u (%zu bytes, %s) from rank %u: wrong "
			    "contents",
			    st->k, len, tags[m.tag], s);
		tw_buf_free(&got);
		st->done += len;
		st->k++;
	}
	free(buf);
	return NULL;
}

// Runs one phase: a sender and a receiver thread per peer, until every
// stream reached the phase's end, and every message sent is delivered.
static void run_phase(int which)
{
	phase = which;
	pthread_t snd[NPARTY], rcv[NPARTY];
	for (size_t j = 0; j < NPARTY; j++) {
		if (j == me)
			continue;
		if (pthread_create(&snd[j], NULL, sender, (void *)(uintptr_t)j)
		        != 0
		    || pthread_create(
		           &rcv[j], NULL, receiver, (void *)(uintptr_t)j)
		        != 0)
			party_fail(EXIT_FAILED, "cannot start threads");
	}
	for (size_t j = 0; j < NPARTY; j++) {
		if (j == me)
			continue;
		pthread_join(snd[j], NULL);
		pthread_join(rcv[j], NULL);
	}
	P_OK(tw_link_wait_pending(link_));
}

static void party_addr(char *out, size_t cap, size_t i, const unsigned *ports)
{
	if (strcmp(transport, "tcp") == 0)
		snprintf(out, cap, "tcp://127.0.0.1:%u", ports[i]);
	else
		snprintf(out, cap, "shm://soak%d.p%zu", (int)getppid(), i);
}

static void party_main(size_t rank, const unsigned *ports)
{
	me = rank;
	// Fixed, so that large blocks go back to the system when freed: glibc
	// otherwise raises the threshold after each large free, up to 32 MiB,
	// and keeps such blocks in its heaps.
	mallopt(M_MMAP_THRESHOLD, 256 << 10);
	char id[32];
	snprintf(id, sizeof(id), "soak%d", (int)getppid());
	tw_desc *d = tw_desc_new(id);
	if (d == NULL)
		party_fail(EXIT_FAILED, "tw_desc_new failed");
	for (size_t i = 0; i < NPARTY; i++) {
		char pid[16], addr[64];
		snprintf(pid, sizeof(pid), "p%zu", i);
		party_addr(addr, sizeof(addr), i, ports);
		P_OK(tw_desc_add_party(d, pid, addr));
	}
	P_OK(tw_desc_set(d, TW_OPT_CONNECT_TIMEOUT_MS, 60000));
	// A party may wait long for a peer that shares two CPUs with seven
	// others, but not forever.
	P_OK(tw_desc_set(d, TW_OPT_RECV_TIMEOUT_MS, 600000));
	P_OK(tw_desc_set(d, TW_OPT_RECV_BUFFER, RECV_BUFFER));
	// The soak checks the traffic; silence detection has tests of its own
	// (tcpfault).  Under a sanitizer, which runs the tests with a timeout
	// multiplier, eight parties on two CPUs move about 1 MB/s each, and a
	// connection whose reader is busy with its other seven was once seen
	// silent for three periods of 1000 ms times the multiplier (9 s), so
	// the period there is five times longer.
	const char *mult = getenv("TW_TEST_TIMEOUT_MULTIPLIER");
	long f = mult != NULL ? strtol(mult, NULL, 10) : 1;
	if (f > 1)
		P_OK(tw_desc_set(d, TW_OPT_HEARTBEAT_MS, 5000 * f));
	int rv = tw_link_create(d, me, &link_);
	tw_desc_free(d);
	if (rv == TW_ESYS && strcmp(transport, "tcp") == 0)
		party_fail(EXIT_PORT_TAKEN,
		    "tw_link_create: TW_ESYS (port %u "
		    "taken?)",
		    ports[me]);
	P_OK(rv);
	P_OK(tw_barrier(link_, "start"));

	// Memory is compared at two points where nothing is in flight: after
	// the warm-up and at the end, each time once every party has
	// received all that was sent to it.
	double t0 = now_s();
	run_phase(0);
	P_OK(tw_barrier(link_, "warm"));
	uint64_t rss_warm, heap_warm;
	memory_sample(&rss_warm, &heap_warm);
	// Nobody sends again before every party took its sample: what a
	// faster party sent would wait here as messages not yet received.
	P_OK(tw_barrier(link_, "sampled"));
	run_phase(1);
	double secs = now_s() - t0;
	P_OK(tw_barrier(link_, "end"));
	uint64_t rss_end, heap_end;
	memory_sample(&rss_end, &heap_end);
	rv = tw_link_close(link_);
	if (rv != TW_OK && rv != TW_EPEER)
		party_fail(EXIT_FAILED, "tw_link_close: %s", tw_err_name(rv));
	pthread_mutex_lock(&rep_mtx);
	rep.seconds = secs;
	rep.rss_warm = rss_warm;
	rep.rss_end = rss_end;
	rep.heap_warm = heap_warm;
	rep.heap_end = heap_end;
	for (size_t j = 0; j < NPARTY; j++) {
		rep.sent += to[j].done;
		rep.msgs_sent += to[j].k;
		rep.received += from[j].done;
		rep.msgs_received += from[j].k;
	}
	pthread_mutex_unlock(&rep_mtx);
	send_report_and_exit(EXIT_OK);
}

// ---------------------------------------------------------------------------
// The parent
// ---------------------------------------------------------------------------

static void pick_ports(unsigned *ports)
{
	for (size_t i = 0; i < NPARTY; i++) {
		bool again;
		do {
			ports[i] = tw_test_free_port();
			if (ports[i] == 0) {
				fprintf(stderr, "no free loopback port\n");
				exit(1);
			}
			again = false;
			for (size_t k = 0; k < i; k++)
				again = again || ports[k] == ports[i];
		} while (again);
	}
}

typedef struct outcome {
	int how; // EXIT_* of the child, or -1 when killed
	int sig; // the signal that killed it
	report rep;
	bool have_rep;
} outcome;

// Runs the parties; each child's exit status and report land in out[].
static void run_parties(const unsigned *ports, outcome *out)
{
	pid_t pids[NPARTY];
	int fds[NPARTY][2];
	memset(out, 0, NPARTY * sizeof(*out));
	fflush(NULL);
	pid_t parent = getpid();
	for (size_t i = 0; i < NPARTY; i++) {
		if (pipe(fds[i]) != 0 || (pids[i] = fork()) < 0) {
			perror("soak: pipe or fork");
			exit(1);
		}
		if (pids[i] == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != parent)
				_exit(EXIT_FAILED);
			for (size_t k = 0; k <= i; k++)
				close(fds[k][0]);
			report_fd = fds[i][1];
			party_main(i, ports);
			_exit(EXIT_FAILED); // not reached
		}
		close(fds[i][1]);
	}
	for (size_t done = 0; done < NPARTY; done++) {
		int st;
		pid_t pid = wait(&st);
		if (pid <= 0) {
			perror("soak: wait");
			exit(1);
		}
		size_t i = 0;
		while (i < NPARTY && pids[i] != pid)
			i++;
		if (i == NPARTY)
			continue;
		pids[i] = -1;
		out[i].how = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
		out[i].sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
		if (out[i].how != EXIT_OK)
			for (size_t j = 0; j < NPARTY; j++)
				if (pids[j] > 0)
					kill(pids[j], SIGKILL);
	}
	for (size_t i = 0; i < NPARTY; i++) {
		char *p = (char *)&out[i].rep;
		size_t got = 0;
		while (got < sizeof(report)) {
			ssize_t r
			    = read(fds[i][0], p + got, sizeof(report) - got);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			got += (size_t)r;
		}
		out[i].have_rep = got == sizeof(report);
		close(fds[i][0]);
	}
}

// Parses "2147483648", "128M", "2G" (binary suffixes) into *out.
static bool parse_bytes(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno != 0 || end == s || s[0] == '-')
		return false;
	static const char units[] = "KMG";
	unsigned shift = 0;
	const char *u = strchr(units, toupper((unsigned char)*end));
	if (*end != '\0' && u != NULL) {
		shift = 10 * (unsigned)(u - units + 1);
		end++;
	}
	if (*end != '\0' || v == 0 || v > (UINT64_MAX >> shift))
		return false;
	*out = (uint64_t)v << shift;
	return true;
}

static double mib(uint64_t b)
{
	return (double)b / (1024.0 * 1024.0);
}

// Whether a party's figure grew by more than RSS_GROWTH_MAX after the
// warm-up, said if so; never under a sanitizer (see the top).
static bool grew_too_much(
    size_t i, const char *what, uint64_t warm, uint64_t end)
{
	int64_t growth = (int64_t)end - (int64_t)warm;
	if (SANITIZED || growth <= (int64_t)RSS_GROWTH_MAX)
		return false;
	printf("rank %zu: %s grew by %.1f MiB after the warm-up, more than "
	       "%.0f MiB\n",
	    i, what, mib((uint64_t)growth), mib(RSS_GROWTH_MAX));
	return true;
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 3
	    || (strcmp(argv[1], "tcp") != 0 && strcmp(argv[1], "shm") != 0)) {
		fprintf(stderr, "usage: soak tcp|shm [DEFAULT_BYTES]\n");
		return 2;
	}
	transport = argv[1];
	volume = DEFAULT_BYTES;
	const char *env = getenv("TW_SOAK_BYTES");
	const char *given = env != NULL && env[0] != '\0' ? env
	    : argc == 3                                   ? argv[2]
	                                                  : NULL;
	if (given != NULL && !parse_bytes(given, &volume)) {
		fprintf(stderr,
		    "soak: %s '%s' is not a byte count (like 2147483648, "
		    "128M or 2G)\n",
		    given == env ? "TW_SOAK_BYTES" : "DEFAULT_BYTES", given);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("soak over %s://: %d parties, %.1f MiB sent by each (%s)\n",
	    transport, NPARTY, mib(volume),
	    given == NULL      ? "default"
	        : given == env ? "TW_SOAK_BYTES"
	                       : "this build's default");

	outcome out[NPARTY];
	unsigned ports[NPARTY] = { 0 };
	double t0 = now_s();
	for (int attempt = 1;; attempt++) {
		if (strcmp(transport, "tcp") == 0)
			pick_ports(ports);
		run_parties(ports, out);
		bool taken = false;
		for (size_t i = 0; i < NPARTY; i++)
			taken = taken || out[i].how == EXIT_PORT_TAKEN;
		if (!taken || attempt == ATTEMPTS)
			break;
		printf("a port was taken before its party bound it; running "
		       "again with other ports\n");
	}
	double total = now_s() - t0;

	int failed = 0;
	for (size_t i = 0; i < NPARTY; i++) {
		const report *r = &out[i].rep;
		if (out[i].how != EXIT_OK) {
			failed = 1;
			bool said = out[i].have_rep && r->err[0] != '\0';
			if (said)
				printf("%s\n", r->err);
			else if (out[i].how < 0)
				printf("rank %zu: killed by signal %d (after "
				       "another party failed?)\n",
				    i, out[i].sig);
			else if (out[i].have_rep && r->status == EXIT_OK)
				// A sanitizer's finding at exit, on stderr.
				printf("rank %zu: exit status %d after it "
				       "reported success\n",
				    i, out[i].how);
			else
				printf("rank %zu: exit status %d, no report\n",
				    i, out[i].how);
			continue;
		}
		int64_t growth = (int64_t)r->rss_end - (int64_t)r->rss_warm;
		printf("rank %zu: sent %.0f MiB in %" PRIu64
		       " messages, received %.0f MiB in %" PRIu64
		       ", %.1f s: %.0f MB/s; resident %.1f MiB after the "
		       "warm-up, %.1f MiB at the end (%+.1f MiB)\n",
		    i, mib(r->sent), r->msgs_sent, mib(r->received),
		    r->msgs_received, r->seconds,
		    (double)r->sent / 1e6 / r->seconds, mib(r->rss_warm),
		    mib(r->rss_end), (double)growth / (1024.0 * 1024.0));
		printf(
		    "rank %zu: heap in use %.2f MiB after the warm-up, %.2f "
		    "MiB at the end (%+.2f MiB)\n",
		    i, mib(r->heap_warm), mib(r->heap_end),
		    ((double)r->heap_end - (double)r->heap_warm)
		        / (1024.0 * 1024.0));
		// Both said, each on its own.
		if (grew_too_much(
		        i, "resident memory", r->rss_warm, r->rss_end))
			failed = 1;
		if (grew_too_much(i, "heap in use", r->heap_warm, r->heap_end))
			failed = 1;
	}
	if (SANITIZED)
		printf("sanitizer build: resident sizes are reported, not "
		       "judged\n");
	printf("%s in %.1f s\n", failed ? "FAILED" : "passed", total);
	return failed;
}
