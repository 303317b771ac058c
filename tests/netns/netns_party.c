// One party of the multi-host test: rank RANK of a three-party tcp:// link
// whose parties each sit in their own network namespace (netns.sh builds
// the network and starts the parties).  Only the public API is used.
//
//   netns_party RANK SCENARIO CTLDIR ADDR0 ADDR1 ADDR2
//
// basic      all-to-all messages (contents checked), a barrier, an
//            allgather, and a 4 MiB message around the ring (rank r to
//            r+1) with every byte checked.
// half_open  all-to-all messages and a barrier; then ranks 0 and 1 block
//            in tw_recv from rank 2 (receive timeout 60 s, heartbeat
//            300 ms) while the driver takes rank 2's link down, so that
//            neither a FIN nor a RST reaches them.  Each must see TW_EPEER
//            less than 3 s after the link went down; then sends to rank 2
//            fail with TW_EPEER and ranks 0 and 1 still talk to each other.
//            Rank 2 waits, alive, until the driver releases it.
// blip       every party streams numbered messages (8 B to 200 KiB) to
//            every other while the driver takes rank 1's bridge port down
//            for half a heartbeat period (BLIP_MS of HEARTBEAT_BLIP_MS) and
//            brings it back: every message arrives exactly once and in
//            order, and no call fails.  Rank 1 and its peers must see a
//            pause of at least BLIP_SEEN_MS between two messages of one
//            another, so that the outage is shown to have cut the stream.
//
// The driver and the parties meet through files in CTLDIR: `ready.R`
// (rank R is about to block), `down` (written just before the driver takes
// rank 2's link down, so the measured time includes that command's own),
// `release` (rank 2 may leave); for blip, `ready.R` (rank R has
// received from everyone) and `up` (the port is back).  The parties wait for them in polling
// loops with deadlines.  Exit status 0 when every check passed; a failure
// is printed as "rank R: FAIL: ..." and ends the process with status 1.

#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <tagwire/tagwire.h>

#include "testdata.h"

#define NPARTY 3
#define RING_BYTES ((size_t)4 << 20)
#define HEARTBEAT_MS 300
#define DETECT_LIMIT_MS 3000.0
// How long a party waits for the driver's files, and how long rank 0 or 1
// may stay blocked after the link went down before it gives up (well
// within the driver's deadlines, which are within ctest's).
#define CTL_WAIT_MS 30000.0
#define BLOCKED_LIMIT_MS 10000.0
// blip: the heartbeat period, the outage the driver makes (netns.sh
// keeps them equal to these), the least pause that shows it cut the
// stream, and the rounds sent after the port is back.
#define HEARTBEAT_BLIP_MS 1000
#define BLIP_MS 500
#define BLIP_SEEN_MS 300.0
#define BLIP_ROUNDS_AFTER 300
#define BLIP_READY_ROUNDS 100

static size_t self;
static const char *ctldir;

static void failf(const char *fmt, ...)
{
	va_list ap;
	printf("rank %zu: FAIL: ", self);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	_exit(1);
}

#define CHECK_OK(expr)                                                        \
	do {                                                                  \
		int rv_ = (expr);                                             \
		if (rv_ != TW_OK)                                             \
			failf("line %d: %s: got %s (%s), want TW_OK",         \
			    __LINE__, #expr, tw_err_name(rv_),                \
			    tw_strerror(rv_));                                \
	} while (0)

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

// Checks that `got` holds `len` bytes of tw_test_fill(a, b, c); names the first
// byte that differs.
static void expect_fill(const char *what, const tw_buf *got, size_t len,
    uint32_t a, uint32_t b, uint32_t c)
{
	if (got->len != len)
		failf("%s: %zu bytes, want %zu", what, got->len, len);
	unsigned char *want = malloc(len > 0 ? len : 1);
	if (want == NULL)
		failf("%s: out of memory", what);
	tw_test_fill(want, len, a, b, c);
	const unsigned char *p = got->data;
	for (size_t i = 0; i < len; i++)
		if (p[i] != want[i])
			failf("%s: byte %zu of %zu is 0x%02x, want 0x%02x",
			    what, i, len, p[i], want[i]);
	free(want);
}

static void ctl_path(char *out, size_t cap, const char *name)
{
	snprintf(out, cap, "%s/%s", ctldir, name);
}

static bool ctl_exists(const char *name)
{
	char path[4096];
	ctl_path(path, sizeof(path), name);
	return access(path, F_OK) == 0;
}

static void ctl_create(const char *name)
{
	char path[4096];
	ctl_path(path, sizeof(path), name);
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		failf("cannot create %s", path);
	close(fd);
}

// Waits for the driver's file `name`; returns the time it was seen.
static double ctl_wait(const char *name)
{
	double deadline = now_ms() + CTL_WAIT_MS;
	while (!ctl_exists(name)) {
		if (now_ms() > deadline)
			failf("no '%s' from the driver after %.0f s", name,
			    CTL_WAIT_MS / 1e3);
		sleep_ms(2);
	}
	return now_ms();
}

// All-to-all: a message of its own size and contents to every peer, then
// one from every peer, checked.
static void all_to_all(tw_link *l, const char *tag, uint32_t round)
{
	unsigned char buf[4096];
	for (size_t j = 0; j < NPARTY; j++) {
		if (j == self)
			continue;
		size_t len = 1000 + 100 * self + j;
		tw_test_fill(buf, len, (uint32_t)self, (uint32_t)j, round);
		CHECK_OK(tw_send(l, j, tag, buf, len));
	}
	for (size_t j = 0; j < NPARTY; j++) {
		if (j == self)
			continue;
		tw_buf got = { NULL, 0 };
		char what[64];
		snprintf(what, sizeof(what), "'%s' from rank %zu", tag, j);
		CHECK_OK(tw_recv(l, j, tag, &got));
		expect_fill(what, &got, 1000 + 100 * j + self, (uint32_t)j,
		    (uint32_t)self, round);
		tw_buf_free(&got);
	}
}

static void run_basic(tw_link *l)
{
	all_to_all(l, "a2a", 1);
	CHECK_OK(tw_barrier(l, "after-a2a"));

	// Allgather: rank i contributes 100 * (i + 1) + i bytes.
	unsigned char mine[512];
	size_t mine_len = 100 * (self + 1) + self;
	tw_test_fill(mine, mine_len, (uint32_t)self, 7, 2);
	tw_buf out[NPARTY];
	memset(out, 0, sizeof(out));
	CHECK_OK(tw_allgather(l, "ag", mine, mine_len, out));
	for (size_t i = 0; i < NPARTY; i++) {
		char what[64];
		snprintf(what, sizeof(what), "allgather block of rank %zu", i);
		expect_fill(
		    what, &out[i], 100 * (i + 1) + i, (uint32_t)i, 7, 2);
		tw_buf_free(&out[i]);
	}

	// The ring: 4 MiB to the next rank, 4 MiB from the previous one.
	size_t next = (self + 1) % NPARTY, prev = (self + NPARTY - 1) % NPARTY;
	unsigned char *big = malloc(RING_BYTES);
	if (big == NULL)
		failf("out of memory");
	tw_test_fill(big, RING_BYTES, (uint32_t)self, (uint32_t)next, 3);
	CHECK_OK(tw_send(l, next, "ring", big, RING_BYTES));
	free(big);
	tw_buf got = { NULL, 0 };
	CHECK_OK(tw_recv(l, prev, "ring", &got));
	char what[64];
	snprintf(what, sizeof(what), "ring message from rank %zu", prev);
	expect_fill(what, &got, RING_BYTES, (uint32_t)prev, (uint32_t)self, 3);
	tw_buf_free(&got);

	CHECK_OK(tw_barrier(l, "end"));
	printf("rank %zu: all-to-all, barrier, allgather and the 4 MiB ring "
	       "checked\n",
	    self);
}

// When the driver's `down` file was seen, in microseconds of now_ms() (0
// until then), and whether the blocked receive has returned.
static atomic_llong t_down_us;
static atomic_bool recv_returned;

// Ranks 0 and 1: notes when rank 2's link went down, and ends the process
// when the receive stays blocked far beyond the limit, so that a missing
// detection fails with a clear message instead of a ctest timeout.
static void *watch_main(void *arg)
{
	(void)arg;
	double seen = ctl_wait("down");
	atomic_store(&t_down_us, (long long)(seen * 1e3));
	while (!atomic_load(&recv_returned)) {
		if (now_ms() - seen > BLOCKED_LIMIT_MS)
			failf("still blocked in tw_recv from rank 2 %.0f s "
			      "after its link went down (no TW_EPEER)",
			    BLOCKED_LIMIT_MS / 1e3);
		sleep_ms(5);
	}
	return NULL;
}

static void run_half_open(tw_link *l)
{
	all_to_all(l, "a2a", 1);
	// Once every party has passed the barrier no message is in flight
	// any more.  TCP's delayed acknowledgements may be: a party can still
	// hold unacknowledged bytes for rank 2 when the link goes down, so
	// that the kernel retransmits instead of sending keepalive probes.
	// Heartbeats must find the dead peer in both cases.
	CHECK_OK(tw_barrier(l, "after-a2a"));

	if (self == 2) {
		ctl_create("ready.2");
		ctl_wait("release");
		// Leave without telling anyone: the link is down anyway.
		tw_link_set_recv_timeout(l, 1000);
		tw_link_abort(l);
		printf("rank 2: released\n");
		return;
	}

	pthread_t watcher;
	if (pthread_create(&watcher, NULL, watch_main, NULL) != 0)
		failf("cannot start the watcher thread");
	pthread_detach(watcher); // it ends once the receive has returned
	char ready[16];
	snprintf(ready, sizeof(ready), "ready.%zu", self);
	ctl_create(ready);
	tw_buf got = { NULL, 0 };
	int rv = tw_recv(l, 2, "never-sent", &got);
	double t_ret = now_ms();
	atomic_store(&recv_returned, true);
	double down = (double)atomic_load(&t_down_us) / 1e3;
	if (rv != TW_EPEER)
		failf("tw_recv from rank 2: got %s (%s), want TW_EPEER",
		    tw_err_name(rv), tw_strerror(rv));
	if (down == 0)
		failf("tw_recv from rank 2 returned TW_EPEER before the link "
		      "went down");
	double took = t_ret - down;
	printf("rank %zu: TW_EPEER from rank 2 %.0f ms after its link went "
	       "down (heartbeat %d ms, limit %.0f ms)\n",
	    self, took, HEARTBEAT_MS, DETECT_LIMIT_MS);
	fflush(stdout);
	if (took >= DETECT_LIMIT_MS)
		failf("the half-open connection to rank 2 took %.0f ms to "
		      "detect, want < %.0f ms",
		    took, DETECT_LIMIT_MS);

	// The failure is known now: a send to rank 2 fails at once.
	double t0 = now_ms();
	rv = tw_send(l, 2, "late", "x", 1);
	if (rv != TW_EPEER)
		failf("tw_send to rank 2 after the failure: got %s, want "
		      "TW_EPEER",
		    tw_err_name(rv));
	if (now_ms() - t0 > 1000)
		failf("tw_send to rank 2 took %.0f ms to fail", now_ms() - t0);

	// The two survivors still talk to each other.
	size_t other = 1 - self;
	unsigned char buf[777];
	tw_test_fill(buf, sizeof(buf), (uint32_t)self, (uint32_t)other, 4);
	CHECK_OK(tw_send(l, other, "survivors", buf, sizeof(buf)));
	CHECK_OK(tw_recv(l, other, "survivors", &got));
	expect_fill("survivors' message", &got, sizeof(buf), (uint32_t)other,
	    (uint32_t)self, 4);
	tw_buf_free(&got);
	printf("rank %zu: rank %zu still reachable\n", self, other);
	// Close without waiting 60 s on the dead peer.
	tw_link_set_recv_timeout(l, 5000);
}

// --- blip -------------------------------------------------------------------------

// The length of message `seq` of the stream: small and large in turn.
static size_t blip_len(uint64_t seq)
{
	static const size_t lens[] = { 8, 1000, 16384, 200 * 1024, 64 };
	return lens[seq % (sizeof(lens) / sizeof(lens[0]))];
}

// Every message starts with its number; the last one has the top bit set.
#define BLIP_LAST (UINT64_C(1) << 63)

typedef struct blip_rx {
	tw_link *l;
	size_t from;
	uint64_t count; // messages received
	double max_gap_ms; // the longest pause between two of them
	atomic_bool ready; // BLIP_READY_ROUNDS received
} blip_rx;

static void *blip_recv_main(void *arg)
{
	blip_rx *r = arg;
	double last = 0;
	unsigned char *want = malloc(blip_len(3));
	if (want == NULL)
		failf("out of memory");
	for (uint64_t seq = 0;; seq++) {
		tw_buf got = { NULL, 0 };
		CHECK_OK(tw_recv(r->l, r->from, "blip", &got));
		double now = now_ms();
		if (seq > 0 && now - last > r->max_gap_ms)
			r->max_gap_ms = now - last;
		last = now;
		uint64_t head = 0;
		if (got.len >= sizeof(head))
			memcpy(&head, got.data, sizeof(head));
		size_t len = blip_len(seq);
		if (got.len != len || (head & ~BLIP_LAST) != seq)
			failf("message %llu from rank %zu: %zu bytes numbered "
			      "%llu, want %zu bytes numbered %llu",
			    (unsigned long long)seq, r->from, got.len,
			    (unsigned long long)(head & ~BLIP_LAST), len,
			    (unsigned long long)seq);
		tw_test_fill(want, len - sizeof(head), (uint32_t)r->from,
		    (uint32_t)self, (uint32_t)seq);
		if (memcmp((unsigned char *)got.data + sizeof(head), want,
		        len - sizeof(head))
		    != 0)
			failf("message %llu from rank %zu: wrong contents",
			    (unsigned long long)seq, r->from);
		tw_buf_free(&got);
		r->count = seq + 1;
		if (seq + 1 == BLIP_READY_ROUNDS)
			atomic_store(&r->ready, true);
		if (head & BLIP_LAST)
			break;
	}
	free(want);
	return NULL;
}

static void run_blip(tw_link *l)
{
	blip_rx rx[NPARTY];
	pthread_t th[NPARTY];
	memset(rx, 0, sizeof(rx));
	for (size_t j = 0; j < NPARTY; j++) {
		if (j == self)
			continue;
		rx[j].l = l;
		rx[j].from = j;
		if (pthread_create(&th[j], NULL, blip_recv_main, &rx[j]) != 0)
			failf("cannot start a receiver thread");
	}
	unsigned char *buf = malloc(blip_len(3));
	if (buf == NULL)
		failf("out of memory");
	bool ready = false;
	uint64_t stop = UINT64_MAX;
	for (uint64_t seq = 0; seq < stop; seq++) {
		if (!ready) {
			ready = true;
			for (size_t j = 0; j < NPARTY; j++)
				ready = ready
				    && (j == self
				        || atomic_load(&rx[j].ready));
			if (ready) {
				char name[16];
				snprintf(
				    name, sizeof(name), "ready.%zu", self);
				ctl_create(name);
			}
		}
		if (stop == UINT64_MAX && ctl_exists("up"))
			stop = seq + BLIP_ROUNDS_AFTER;
		size_t len = blip_len(seq);
		uint64_t head = seq | (seq + 1 == stop ? BLIP_LAST : 0);
		memcpy(buf, &head, sizeof(head));
		for (size_t j = 0; j < NPARTY; j++) {
			if (j == self)
				continue;
			tw_test_fill(buf + sizeof(head), len - sizeof(head),
			    (uint32_t)self, (uint32_t)j, (uint32_t)seq);
			CHECK_OK(tw_send(l, j, "blip", buf, len));
		}
		// A steady stream rather than a burst, so that the outage
		// falls in the middle of it.
		sleep_ms(2);
		if (seq > 100000)
			failf("no 'up' from the driver");
	}
	free(buf);
	for (size_t j = 0; j < NPARTY; j++) {
		if (j == self)
			continue;
		pthread_join(th[j], NULL);
		printf("rank %zu: %llu messages from rank %zu in order, "
		       "longest pause %.0f ms\n",
		    self, (unsigned long long)rx[j].count, j,
		    rx[j].max_gap_ms);
		if ((self == 1 || j == 1) && rx[j].max_gap_ms < BLIP_SEEN_MS)
			failf("the stream from rank %zu never paused for %.0f "
			      "ms: the outage did not cut it",
			    j, BLIP_SEEN_MS);
	}
	CHECK_OK(tw_barrier(l, "blip-end"));
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc != 4 + NPARTY) {
		fprintf(stderr,
		    "usage: netns_party RANK basic|half_open|blip CTLDIR "
		    "ADDR0 "
		    "ADDR1 ADDR2\n");
		return 2;
	}
	char *end;
	unsigned long r = strtoul(argv[1], &end, 10);
	if (*end != '\0' || r >= NPARTY) {
		fprintf(stderr, "netns_party: bad rank '%s'\n", argv[1]);
		return 2;
	}
	self = r;
	bool half_open = strcmp(argv[2], "half_open") == 0;
	bool blip = strcmp(argv[2], "blip") == 0;
	if (!half_open && !blip && strcmp(argv[2], "basic") != 0) {
		fprintf(
		    stderr, "netns_party: unknown scenario '%s'\n", argv[2]);
		return 2;
	}
	ctldir = argv[3];

	char link_id[32];
	snprintf(link_id, sizeof(link_id), "netns.%s", argv[2]);
	tw_desc *d = tw_desc_new(link_id);
	if (d == NULL)
		failf("tw_desc_new failed");
	for (size_t i = 0; i < NPARTY; i++) {
		char id[16];
		snprintf(id, sizeof(id), "p%zu", i);
		CHECK_OK(tw_desc_add_party(d, id, argv[4 + i]));
	}
	CHECK_OK(tw_desc_set(d, TW_OPT_CONNECT_TIMEOUT_MS, 15000));
	CHECK_OK(
	    tw_desc_set(d, TW_OPT_RECV_TIMEOUT_MS, half_open ? 60000 : 20000));
	if (half_open)
		CHECK_OK(tw_desc_set(d, TW_OPT_HEARTBEAT_MS, HEARTBEAT_MS));
	if (blip)
		CHECK_OK(
		    tw_desc_set(d, TW_OPT_HEARTBEAT_MS, HEARTBEAT_BLIP_MS));

	tw_link *l = NULL;
	CHECK_OK(tw_link_create(d, self, &l));
	tw_desc_free(d);
	printf("rank %zu: link of %zu parties up\n", self, tw_link_size(l));
	if (half_open)
		run_half_open(l);
	else if (blip)
		run_blip(l);
	else
		run_basic(l);

	// A peer that closed first may make the close report TW_EPEER (as the
	// conformance suite allows); rank 2 aborted its link.
	int rv = tw_link_close(l);
	bool ok = rv == TW_OK || rv == TW_EPEER
	    || (half_open && self == 2 && rv == TW_ECLOSED);
	if (!ok)
		failf("tw_link_close: got %s (%s)", tw_err_name(rv),
		    tw_strerror(rv));
	printf("rank %zu: ok\n", self);
	return 0;
}
