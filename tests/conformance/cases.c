// The link conformance cases.  Usage: conformance TRANSPORT [CASE [onecpu]]
// TRANSPORT is a built-in transport ("mem", "shm", "tcp", "shmgroups",
// shm:// with several progress threads, "tcpstripes", tcp:// with
// striping, and "tcpshm", tcp:// with TW_OPT_SHM_LOCAL), "chan" (a user channel written against the public
// vtable, see testchan.c) or "chanlazy" (that channel with a wait_pending
// that does not wait: a broken channel that the wait_pending case must
// catch).  With "onecpu", every party runs on one CPU, the first this
// process may use: the fast paths that wait for a peer while polling
// (spinning receivers, a tcp:// sender waiting for the confirmation of
// the chunks it lent) then wait for a peer that cannot run meanwhile, and
// must fall back to sleeping or copying without losing or reordering a
// byte.

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "conf.h"
#include "core/mailbox.h"
#include "link/coll.h"
#include "link/link_int.h"
#include "testdata.h"
#include "transport/tcp/tcp.h"
#include "testutil.h"

static void tcp_make_addr(
    char *out, size_t cap, const char *run_name, size_t i)
{
	static char run[96];
	static unsigned used[32];
	if (strcmp(run, run_name) != 0) {
		snprintf(run, sizeof(run), "%s", run_name);
		memset(used, 0, sizeof(used));
	}
	unsigned port = 0;
	for (int tries = 0; tries < 16; tries++) {
		port = tw_test_free_port();
		bool seen = false;
		for (size_t k = 0; k < i && k < 32; k++)
			seen = seen || used[k] == port;
		if (!seen)
			break;
	}
	if (i < 32)
		used[i] = port;
	snprintf(out, cap, "tcp://127.0.0.1:%u", port);
}

// tcp:// with three connections per pair of processes and the smallest
// chunk: every message above 4 KiB is striped.
static void tune_stripes(tw_desc *d)
{
	tw_desc_set(d, TW_OPT_STRIPES, 3);
	tw_desc_set(d, TW_OPT_CHUNK_SIZE, 4096);
}

static void tune_shm_local(tw_desc *d)
{
	tw_desc_set(d, TW_OPT_SHM_LOCAL, 1);
}

static const conf_transport transports[] = {
	{ .name = "mem", .builtin = true, .addr_fmt = "mem://%s.p%zu" },
	{ .name = "chan", .addr_fmt = "mem://%s.p%zu" },
	{ .name = "shm",
	    .builtin = true,
	    .procs = true,
	    .addr_fmt = "shm://%s.p%zu" },
	// shm:// with two peers per progress thread: links of three parties
	// and more run several.
	{ .name = "shmgroups",
	    .builtin = true,
	    .procs = true,
	    .addr_fmt = "shm://%s.p%zu",
	    .env = "TAGWIRE_SHM_GROUP_MAX=2" },
	{ .name = "tcp",
	    .builtin = true,
	    .procs = true,
	    .addr_fmt = "tcp://127.0.0.1:0",
	    .make_addr = tcp_make_addr },
	{ .name = "tcpstripes",
	    .builtin = true,
	    .procs = true,
	    .addr_fmt = "tcp://127.0.0.1:0",
	    .make_addr = tcp_make_addr,
	    .tune = tune_stripes },
	// tcp:// with TW_OPT_SHM_LOCAL: every party shares this host, so every
	// pair's messages move to shared memory once the link is up.
	{ .name = "tcpshm",
	    .builtin = true,
	    .procs = true,
	    .addr_fmt = "tcp://127.0.0.1:0",
	    .make_addr = tcp_make_addr,
	    .tune = tune_shm_local,
	    .on_shm = true },
	{ .name = "chanlazy", .addr_fmt = "mem://%s.p%zu", .lazy_wait = true },
};
static const conf_transport *tp;

static void sleep_ms(int ms)
{
	// Used only to perturb start order, never to wait for an event: every
	// assertion below holds whichever way the race goes.
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
	nanosleep(&ts, NULL);
}

static int sync_all(conf_party *p)
{
	return tw_barrier(p->link, "conf.sync");
}

static void run(
    size_t n, int flags, conf_setup_fn setup, conf_body_fn body, void *arg)
{
	if (conf_run(tp, n, flags, setup, body, arg) != 0)
		fail_msg("a party failed (see above)");
}

// --- creation --------------------------------------------------------------

static int body_any_order(conf_party *p)
{
	// Later ranks start first, with gaps, so that creation cannot rely on
	// any serial order between parties.
	sleep_ms((int)(p->size - p->rank) * 15);
	CHECK_OK(p, conf_create(p, &p->link));
	CHECK(p, tw_link_rank(p->link) == p->rank);
	CHECK(p, tw_link_size(p->link) == p->size);
	// The channel of every peer is the one the transport promises.
	for (size_t i = 0; tp->builtin && i < p->size; i++)
		if (i != p->rank)
			CHECK(p,
			    tw__link_peer_on_shm(p->link, i)
			        == (tp->on_shm
			            || strncmp(tp->name, "shm", 3) == 0));
	size_t next = (p->rank + 1) % p->size;
	size_t prev = (p->rank + p->size - 1) % p->size;
	uint32_t v = (uint32_t)p->rank;
	CHECK_OK(p, tw_send(p->link, next, "ring", &v, sizeof(v)));
	tw_buf b = { 0 };
	CHECK_OK(p, tw_recv(p->link, prev, "ring", &b));
	CHECK(p, b.len == 4 && *(uint32_t *)b.data == prev);
	tw_buf_free(&b);
	return 0;
}

static void t_create_any_order(void **state)
{
	run(5, CONF_OWN_CREATE, NULL, body_any_order, NULL);
}

static pthread_mutex_t log_mtx = PTHREAD_MUTEX_INITIALIZER;
static char log_text[4096];

static void log_capture(const tw_log_record *rec, void *arg)
{
	pthread_mutex_lock(&log_mtx);
	size_t used = strlen(log_text);
	snprintf(log_text + used, sizeof(log_text) - used, "%s\n", rec->msg);
	pthread_mutex_unlock(&log_mtx);
}

static void setup_short_connect(tw_desc *d, void *arg)
{
	tw_desc_set(d, TW_OPT_CONNECT_TIMEOUT_MS, 300);
}

static int body_connect_timeout(conf_party *p)
{
	if (p->rank == 2)
		return 0; // the missing party never arrives
	double t0 = conf_now_ms();
	tw_link *l = NULL;
	CHECK_RV(p, conf_create(p, &l), TW_ETIMEDOUT);
	double dt = conf_now_ms() - t0;
	CHECK(p, l == NULL);
	CHECK(p, dt >= 290 && dt < conf_scale(5000));
	pthread_mutex_lock(&log_mtx);
	bool named = strstr(log_text, "p2 (") != NULL;
	pthread_mutex_unlock(&log_mtx);
	if (!named)
		conf_failf(p, __LINE__,
		    "log does not name the missing peer:"
		    " %.150s",
		    log_text);
	return named ? 0 : -1;
}

static void t_connect_timeout(void **state)
{
	if (!tp->builtin)
		skip(); // a user channel decides itself when a peer is there
	log_text[0] = '\0';
	tw_log_set_handler(log_capture, NULL);
	run(3, CONF_OWN_CREATE, setup_short_connect, body_connect_timeout,
	    NULL);
	tw_log_set_handler(NULL, NULL);
}

// --- ordering and delivery ---------------------------------------------------

enum { FIFO_N = 500 };

static int body_fifo(conf_party *p)
{
	static const char *tags[] = { "a", "b", "" };
	if (p->rank == 0) {
		for (uint32_t i = 0; i < FIFO_N; i++)
			for (uint32_t t = 0; t < 3; t++) {
				uint32_t v[2] = { t, i };
				CHECK_OK(p,
				    tw_send_async(
				        p->link, 1, tags[t], v, sizeof(v)));
			}
		return 0;
	}
	// Read the tags in the reverse of the order they were interleaved.
	for (int t = 2; t >= 0; t--) {
		for (uint32_t i = 0; i < FIFO_N; i++) {
			uint32_t v[2];
			size_t len;
			CHECK_OK(p,
			    tw_recv_into(
			        p->link, 0, tags[t], v, sizeof(v), &len));
			CHECK(p, len == sizeof(v));
			CHECK(p, v[0] == (uint32_t)t && v[1] == i);
		}
	}
	return 0;
}

static void t_fifo(void **state)
{
	run(2, 0, NULL, body_fifo, NULL);
}

// Runs of small messages on one tag, as a stream brings them: blocks of
// up to 300 messages per tag (more than a transport may stage at once),
// of sizes around the small-message bounds (0 to 65 bytes) with a longer
// one now and then (300 bytes, 100 KiB: never staged, read or striped
// another way), two tags taking turns.  The receiver takes the first
// half in the order sent, with a receive posted for the message that
// comes next (a transport may place it straight into the receive's
// memory, and must not let it overtake the ones held before it), each
// message of more than 8 bytes first with a buffer of 8, which must
// leave it for the next receive (TW_ETRUNC) rather than take a smaller
// one that follows; and the second half one tag after the other.  Every
// message says which it is.
enum { RUNS_BLOCKS = 24 };
static const unsigned runs_len[] = { 1, 3, 300, 128, 129, 17 };
static const size_t runs_size[] = { 0, 1, 7, 8, 9, 63, 64, 65, 300, 24 };
#define RUNS_BIG ((size_t)100 * 1024)

// Message i of tag t (0 or 1), n bytes: its index, tag and size in the
// first 12 bytes when it has room for them, else bytes that depend on i.
static void runs_fill(unsigned char *b, size_t n, uint32_t t, uint32_t i)
{
	for (size_t k = 0; k < n; k++)
		b[k] = (unsigned char)(i * 7 + t * 3 + k);
	if (n >= 12) {
		uint32_t h[3] = { t, i, (uint32_t)n };
		memcpy(b, h, sizeof(h));
	}
}

// The size of message i of tag t: every 40th is 100 KiB.
static size_t runs_len_of(uint32_t t, uint32_t i)
{
	if (i % 40 == 39)
		return RUNS_BIG;
	return runs_size[(i + t) % (sizeof(runs_size) / sizeof(*runs_size))];
}

static int runs_expect(conf_party *p, uint32_t t, uint32_t i,
    const unsigned char *got, size_t len, unsigned char *want)
{
	size_t n = runs_len_of(t, i);
	CHECK(p, len == n);
	runs_fill(want, n, t, i);
	if (memcmp(got, want, n) != 0) {
		conf_failf(p, __LINE__, "message %u of tag %u: wrong bytes",
		    (unsigned)i, (unsigned)t);
		return -1;
	}
	return 0;
}

static int body_fifo_runs(conf_party *p)
{
	static const char *tags[] = { "ra", "rb" };
	unsigned char *buf = malloc(RUNS_BIG), *want = malloc(RUNS_BIG);
	CHECK(p, buf != NULL && want != NULL);
	uint32_t count[2] = { 0, 0 };
	// Which tag each message had, in the order sent.
	uint8_t order[RUNS_BLOCKS * 300];
	uint32_t total = 0;
	for (uint32_t b = 0; b < RUNS_BLOCKS; b++) {
		uint32_t t = b % 2;
		unsigned n
		    = runs_len[b % (sizeof(runs_len) / sizeof(*runs_len))];
		for (unsigned k = 0; k < n; k++) {
			if (p->rank == 0) {
				size_t len = runs_len_of(t, count[t]);
				runs_fill(buf, len, t, count[t]);
				int rv
				    = tw_send(p->link, 1, tags[t], buf, len);
				if (rv != TW_OK) {
					free(buf);
					free(want);
				}
				CHECK_OK(p, rv);
			}
			count[t]++;
			order[total++] = (uint8_t)t;
		}
	}
	int rv = 0;
	if (p->rank == 1) {
		uint32_t seen[2] = { 0, 0 };
		uint32_t half = total / 2;
		for (uint32_t k = 0; k < half && rv == 0; k++) {
			uint32_t t = order[k];
			size_t len = 0, n = runs_len_of(t, seen[t]);
			int st = n > 8
			    ? tw_recv_into(p->link, 0, tags[t], buf, 8, &len)
			    : TW_ETRUNC;
			if (n > 8 && (st != TW_ETRUNC || len != n)) {
				conf_failf(p, __LINE__,
				    "receive %u into 8 bytes: %s, %zu bytes, "
				    "want TW_ETRUNC, %zu",
				    (unsigned)k, tw_err_name(st), len, n);
				rv = -1;
				break;
			}
			st = tw_recv_into(
			    p->link, 0, tags[t], buf, RUNS_BIG, &len);
			if (st != TW_OK) {
				conf_failf(p, __LINE__, "receive %u: %s",
				    (unsigned)k, tw_err_name(st));
				rv = -1;
				break;
			}
			rv = runs_expect(p, t, seen[t]++, buf, len, want);
		}
		for (uint32_t t = 0; t < 2 && rv == 0; t++) {
			while (seen[t] < count[t] && rv == 0) {
				size_t len = 0;
				int st = tw_recv_into(
				    p->link, 0, tags[t], buf, RUNS_BIG, &len);
				if (st != TW_OK) {
					conf_failf(p, __LINE__,
					    "receive of tag %u: %s",
					    (unsigned)t, tw_err_name(st));
					rv = -1;
					break;
				}
				rv = runs_expect(
				    p, t, seen[t]++, buf, len, want);
			}
		}
	}
	free(buf);
	free(want);
	if (rv != 0)
		return rv;
	return sync_all(p);
}

static void t_fifo_runs(void **state)
{
	run(2, 0, NULL, body_fifo_runs, NULL);
}

enum { EO_N = 4000, EO_THREADS = 4 };

typedef struct eo_shared {
	conf_party *p;
	unsigned claimed;
	unsigned char seen[EO_N];
	int bad;
} eo_shared;

static void *eo_receiver(void *a)
{
	eo_shared *s = a;
	uint32_t last = 0;
	bool first = true;
	while (__atomic_fetch_add(&s->claimed, 1, __ATOMIC_RELAXED) < EO_N) {
		uint32_t id;
		size_t len;
		int rv
		    = tw_recv_into(s->p->link, 0, "eo", &id, sizeof(id), &len);
		if (rv != TW_OK || len != 4 || id >= EO_N
		    || (!first && id <= last)) {
			__atomic_store_n(&s->bad, 1, __ATOMIC_RELAXED);
			break;
		}
		__atomic_add_fetch(&s->seen[id], 1, __ATOMIC_RELAXED);
		first = false;
		last = id;
	}
	return NULL;
}

static int body_exactly_once(conf_party *p)
{
	if (p->rank == 0) {
		for (uint32_t i = 0; i < EO_N; i++)
			CHECK_OK(p, tw_send_async(p->link, 1, "eo", &i, 4));
		CHECK_OK(p, sync_all(p));
		return 0;
	}
	eo_shared *s = calloc(1, sizeof(*s));
	CHECK(p, s != NULL);
	s->p = p;
	pthread_t th[EO_THREADS];
	for (int i = 0; i < EO_THREADS; i++)
		pthread_create(&th[i], NULL, eo_receiver, s);
	for (int i = 0; i < EO_THREADS; i++)
		pthread_join(th[i], NULL);
	int bad = s->bad;
	for (int i = 0; i < EO_N; i++)
		if (s->seen[i] != 1)
			bad = 1;
	free(s);
	CHECK(p, bad == 0);
	size_t len;
	CHECK_RV(p, tw_probe(p->link, 0, "eo", &len), TW_EAGAIN);
	CHECK_OK(p, sync_all(p));
	return 0;
}

static void t_exactly_once(void **state)
{
	run(2, 0, NULL, body_exactly_once, NULL);
}

static int body_recv_timeout(conf_party *p)
{
	if (p->rank == 1) {
		CHECK_RV(p, tw_link_set_recv_timeout(p->link, -2), TW_EINVAL);
		CHECK_OK(p, tw_link_set_recv_timeout(p->link, 200));
		tw_buf b = { 0 };
		double t0 = conf_now_ms();
		CHECK_RV(p, tw_recv(p->link, 0, "none", &b), TW_ETIMEDOUT);
		double dt = conf_now_ms() - t0;
		CHECK(p, dt >= 199 && dt < conf_scale(3000));
		CHECK(p, b.data == NULL);
		CHECK_OK(p, tw_link_set_recv_timeout(p->link, 0));
		t0 = conf_now_ms();
		CHECK_RV(p, tw_recv(p->link, 0, "none", &b), TW_ETIMEDOUT);
		CHECK(p, conf_now_ms() - t0 < conf_scale(1000));
		CHECK_OK(p, tw_link_set_recv_timeout(p->link, 20000));
		// Timed receives use their own timeout, not the link's, and a
		// timeout leaves the message that comes later queued.
		unsigned char buf[8];
		size_t len = 99;
		CHECK_RV(p, tw_recv_timed(p->link, 0, "t", -2, &b), TW_EINVAL);
		CHECK_RV(p,
		    tw_recv_into_timed(p->link, 0, "t", buf, 8, -2, &len),
		    TW_EINVAL);
		CHECK_RV(p, tw_recv_timed(p->link, 1, "t", 0, &b), TW_EINVAL);
		t0 = conf_now_ms();
		CHECK_RV(
		    p, tw_recv_timed(p->link, 0, "t", 100, &b), TW_ETIMEDOUT);
		dt = conf_now_ms() - t0;
		CHECK(p, dt >= 99 && dt < conf_scale(3000));
		t0 = conf_now_ms();
		CHECK_RV(p,
		    tw_recv_into_timed(p->link, 0, "t", buf, 8, 50, &len),
		    TW_ETIMEDOUT);
		dt = conf_now_ms() - t0;
		CHECK(p, dt >= 49 && dt < conf_scale(3000));
		CHECK_OK(p, sync_all(p));
		CHECK_OK(
		    p, tw_recv_into_timed(p->link, 0, "t", buf, 8, -1, &len));
		CHECK(p, len == 3 && memcmp(buf, "abc", 3) == 0);
		CHECK_RV(p,
		    tw_recv_into_timed(p->link, 0, "t", buf, 2, -1, &len),
		    TW_ETRUNC);
		CHECK(p, len == 4);
		CHECK_OK(p, tw_recv_timed(p->link, 0, "t", 0, &b));
		CHECK(p, b.len == 4 && memcmp(b.data, "defg", 4) == 0);
		tw_buf_free(&b);
	} else {
		CHECK_OK(p, sync_all(p));
		CHECK_OK(p, tw_send(p->link, 1, "t", "abc", 3));
		CHECK_OK(p, tw_send(p->link, 1, "t", "defg", 4));
	}
	CHECK_OK(p, sync_all(p));
	return 0;
}

static void t_recv_timeout(void **state)
{
	run(2, 0, NULL, body_recv_timeout, NULL);
}

static int body_trunc(conf_party *p)
{
	unsigned char buf[100];
	if (p->rank == 0) {
		conf_fill(buf, sizeof(buf), 1, 2, 3);
		CHECK_OK(p, tw_send(p->link, 1, "m", buf, sizeof(buf)));
		return 0;
	}
	size_t len = 0;
	CHECK_RV(p, tw_recv_into(p->link, 0, "m", buf, 10, &len), TW_ETRUNC);
	CHECK(p, len == 100);
	CHECK_OK(p, tw_probe(p->link, 0, "m", &len));
	CHECK(p, len == 100);
	CHECK_RV(p, tw_recv_into(p->link, 0, "m", buf, 99, &len), TW_ETRUNC);
	CHECK_OK(p, tw_recv_into(p->link, 0, "m", buf, sizeof(buf), &len));
	CHECK(p, len == 100 && conf_check(buf, len, 1, 2, 3));
	CHECK_RV(p, tw_recv_into(p->link, 0, "m", NULL, 5, &len), TW_EINVAL);
	CHECK_RV(p, tw_recv_into(p->link, 0, "m", buf, 5, NULL), TW_EINVAL);
	return 0;
}

static void t_recv_into_trunc(void **state)
{
	run(2, 0, NULL, body_trunc, NULL);
}

static int body_probe(conf_party *p)
{
	size_t len = 99;
	tw_buf b = { 0 };
	if (p->rank == 1) {
		CHECK_RV(p, tw_probe(p->link, 0, "p", &len), TW_EAGAIN);
		CHECK_RV(p, tw_probe(p->link, 1, "p", &len), TW_EINVAL);
		CHECK_RV(p, tw_probe(p->link, 0, NULL, &len), TW_EINVAL);
		CHECK_RV(p, tw_probe(p->link, 0, "p", NULL), TW_EINVAL);
		CHECK_OK(p, tw_send(p->link, 0, "ready", NULL, 0));
		CHECK_OK(p, tw_recv(p->link, 0, "go", &b));
		CHECK_OK(p, tw_probe(p->link, 0, "p", &len));
		CHECK(p, len == 7);
		CHECK_OK(p, tw_probe(p->link, 0, "p", &len)); // still there
		CHECK_OK(p, tw_recv(p->link, 0, "p", &b));
		CHECK(p, b.len == 7 && memcmp(b.data, "probed", 7) == 0);
		tw_buf_free(&b);
		CHECK_RV(p, tw_probe(p->link, 0, "p", &len), TW_EAGAIN);
	} else {
		CHECK_OK(p, tw_recv(p->link, 1, "ready", &b));
		CHECK_OK(p, tw_send(p->link, 1, "p", "probed", 7));
		CHECK_OK(p, tw_send(p->link, 1, "go", NULL, 0));
	}
	CHECK_OK(p, sync_all(p));
	return 0;
}

static void t_probe(void **state)
{
	run(2, 0, NULL, body_probe, NULL);
}

static int body_zero_length(conf_party *p)
{
	if (p->rank == 0) {
		CHECK_OK(p, tw_send(p->link, 1, "z", NULL, 0));
		CHECK_OK(p, tw_send(p->link, 1, "", NULL, 0));
		CHECK_OK(p, tw_send_async(p->link, 1, "", "x", 0));
		return 0;
	}
	tw_buf b = { (void *)1, 5 };
	CHECK_OK(p, tw_recv(p->link, 0, "", &b));
	CHECK(p, b.data == NULL && b.len == 0);
	size_t len = 9;
	CHECK_OK(p, tw_recv_into(p->link, 0, "", NULL, 0, &len));
	CHECK(p, len == 0);
	CHECK_OK(p, tw_probe(p->link, 0, "z", &len));
	CHECK(p, len == 0);
	CHECK_OK(p, tw_recv(p->link, 0, "z", &b));
	CHECK(p, b.len == 0);
	return 0;
}

static void t_zero_length(void **state)
{
	run(2, 0, NULL, body_zero_length, NULL);
}

static void setup_max_msg(tw_desc *d, void *arg)
{
	tw_desc_set(d, TW_OPT_MAX_MSG_SIZE, 1000);
}

static int body_invalid(conf_party *p)
{
	tw_link *l = p->link;
	size_t peer = 1 - p->rank;
	char tag255[256], tag256[257];
	memset(tag255, 't', 255);
	tag255[255] = '\0';
	memset(tag256, 't', 256);
	tag256[256] = '\0';
	tw_buf b = { 0 };
	size_t len;
	unsigned char big[1001] = { 0 };
	CHECK_RV(p, tw_send(l, p->rank, "x", "a", 1), TW_EINVAL);
	CHECK_RV(p, tw_send(l, 2, "x", "a", 1), TW_EINVAL);
	CHECK_RV(p, tw_send(l, SIZE_MAX, "x", "a", 1), TW_EINVAL);
	CHECK_RV(p, tw_send(l, peer, NULL, "a", 1), TW_EINVAL);
	CHECK_RV(p, tw_send(l, peer, tag256, "a", 1), TW_EINVAL);
	CHECK_RV(p, tw_send(l, peer, "x", NULL, 5), TW_EINVAL);
	CHECK_RV(p, tw_send_async(l, p->rank, "x", "a", 1), TW_EINVAL);
	CHECK_RV(p, tw_send_async_throttled(l, 7, "x", "a", 1), TW_EINVAL);
	CHECK_RV(p, tw_recv(l, p->rank, "x", &b), TW_EINVAL);
	CHECK_RV(p, tw_recv(l, 2, "x", &b), TW_EINVAL);
	CHECK_RV(p, tw_recv(l, peer, tag256, &b), TW_EINVAL);
	CHECK_RV(p, tw_recv(l, peer, "x", NULL), TW_EINVAL);
	CHECK_RV(p, tw_recv_into(l, p->rank, "x", big, 4, &len), TW_EINVAL);
	CHECK_RV(p, tw_send(l, peer, "big", big, 1001), TW_ETOOBIG);
	CHECK_RV(p, tw_send_async(l, peer, "big", big, 1001), TW_ETOOBIG);
	CHECK_OK(p, tw_send(l, peer, "big", big, 1000));
	CHECK_OK(p, tw_send(l, peer, tag255, "t", 1));
	CHECK_OK(p, tw_recv(l, peer, "big", &b));
	CHECK(p, b.len == 1000);
	tw_buf_free(&b);
	CHECK_OK(p, tw_recv(l, peer, tag255, &b));
	CHECK(p, b.len == 1);
	tw_buf_free(&b);
	CHECK_RV(p, tw_barrier(l, NULL), TW_EINVAL);
	CHECK_RV(p, tw_broadcast(l, 2, "x", &b), TW_EINVAL);
	CHECK_RV(p, tw_gather(l, 5, "x", "a", 1, &b), TW_EINVAL);
	CHECK_RV(p, tw_scatter(l, 2, "x", &b, &b), TW_EINVAL);
	CHECK_RV(p, tw_allgather(l, tag256, "a", 1, &b), TW_EINVAL);
	CHECK_RV(p, tw_allgather(l, "x", "a", 1, NULL), TW_EINVAL);
	return 0;
}

static void t_invalid_args(void **state)
{
	run(2, 0, setup_max_msg, body_invalid, NULL);
}

// --- failure ---------------------------------------------------------------

typedef struct blocked {
	tw_link *link;
	size_t src;
	const char *tag;
	pthread_mutex_t mtx;
	pthread_cond_t cv;
	bool started;
	int rv;
	double done_ms;
} blocked;

static void *blocked_recv(void *a)
{
	blocked *bl = a;
	pthread_mutex_lock(&bl->mtx);
	bl->started = true;
	pthread_cond_signal(&bl->cv);
	pthread_mutex_unlock(&bl->mtx);
	tw_buf b = { 0 };
	bl->rv = tw_recv(bl->link, bl->src, bl->tag, &b);
	bl->done_ms = conf_now_ms();
	tw_buf_free(&b);
	return NULL;
}

// Starts a thread blocked in tw_recv and returns once it is about to call
// it; the caller then aborts.  Whether the thread is already inside the
// call or not, it must come back with TW_ECLOSED.
static void blocked_start(blocked *bl, pthread_t *th)
{
	pthread_mutex_init(&bl->mtx, NULL);
	pthread_cond_init(&bl->cv, NULL);
	pthread_create(th, NULL, blocked_recv, bl);
	pthread_mutex_lock(&bl->mtx);
	while (!bl->started)
		pthread_cond_wait(&bl->cv, &bl->mtx);
	pthread_mutex_unlock(&bl->mtx);
	sleep_ms(30);
}

static int body_abort(conf_party *p)
{
	tw_buf b = { 0 };
	tw_link *child;
	CHECK_OK(p, tw_link_spawn(p->link, "c", &child));
	if (p->rank == 1) {
		// One call blocked on the link and one on its child: aborting
		// the link wakes both.
		blocked bl = { .link = p->link, .src = 0, .tag = "never" };
		blocked bc = { .link = child, .src = 0, .tag = "never" };
		pthread_t th, tc;
		blocked_start(&bl, &th);
		blocked_start(&bc, &tc);
		double t0 = conf_now_ms();
		tw_link_abort(p->link);
		pthread_join(th, NULL);
		pthread_join(tc, NULL);
		CHECK_RV(p, bl.rv, TW_ECLOSED);
		CHECK_RV(p, bc.rv, TW_ECLOSED);
		CHECK(p, bl.done_ms - t0 < conf_scale(500));
		CHECK(p, bc.done_ms - t0 < conf_scale(500));
		CHECK_RV(p, tw_send(child, 0, "x", "a", 1), TW_ECLOSED);
		CHECK_OK(p, tw_link_close(child));
		CHECK_RV(p, tw_send(p->link, 0, "x", "a", 1), TW_ECLOSED);
		CHECK_RV(p, tw_recv(p->link, 0, "x", &b), TW_ECLOSED);
		size_t len;
		CHECK_RV(p, tw_probe(p->link, 0, "x", &len), TW_ECLOSED);
		CHECK_RV(p, tw_barrier(p->link, "x"), TW_ECLOSED);
		CHECK_RV(p, tw_link_wait_pending(p->link), TW_ECLOSED);
		tw_link_abort(p->link); // idempotent
		return 0;
	}
	// The peer aborts while this party waits for it: TW_EPEER, promptly.
	double t0 = conf_now_ms();
	CHECK_RV(p, tw_recv(p->link, 1, "never2", &b), TW_EPEER);
	CHECK(p, conf_now_ms() - t0 < conf_scale(10000));
	CHECK_RV(p, tw_send(p->link, 1, "x", "a", 1), TW_EPEER);
	CHECK_OK(p, tw_link_close(child));
	return 0;
}

static void t_abort(void **state)
{
	run(2, 0, NULL, body_abort, NULL);
}

static int body_abort_child(conf_party *p)
{
	tw_link *child;
	tw_buf b = { 0 };
	CHECK_OK(p, tw_link_spawn(p->link, "c", &child));
	if (p->rank == 1) {
		blocked bl = { .link = child, .src = 0, .tag = "never" };
		pthread_t th;
		blocked_start(&bl, &th);
		double t0 = conf_now_ms();
		tw_link_abort(child);
		pthread_join(th, NULL);
		CHECK_RV(p, bl.rv, TW_ECLOSED);
		CHECK(p, bl.done_ms - t0 < conf_scale(500));
		CHECK_RV(p, tw_send(child, 0, "x", "a", 1), TW_ECLOSED);
		// The parent is untouched.
		CHECK_OK(p, tw_send(p->link, 0, "alive", "y", 1));
	} else {
		if (p->tp->builtin) {
			CHECK_RV(p, tw_recv(child, 1, "never2", &b), TW_EPEER);
		}
		CHECK_OK(p, tw_recv(p->link, 1, "alive", &b));
		CHECK(p, b.len == 1);
		tw_buf_free(&b);
	}
	CHECK_OK(p, tw_link_close(child));
	CHECK_OK(p, sync_all(p));
	return 0;
}

static void t_abort_child(void **state)
{
	run(2, 0, NULL, body_abort_child, NULL);
}

static int body_peer_closed(conf_party *p)
{
	if (p->rank == 0) {
		for (uint32_t i = 0; i < 3; i++)
			CHECK_OK(p, tw_send(p->link, 1, "m", &i, 4));
		CHECK_OK(p, tw_link_close(p->link));
		p->link = NULL;
		return 0;
	}
	tw_buf b = { 0 };
	for (uint32_t i = 0; i < 3; i++) {
		CHECK_OK(p, tw_recv(p->link, 0, "m", &b));
		CHECK(p, b.len == 4 && *(uint32_t *)b.data == i);
		tw_buf_free(&b);
	}
	// The receive timeout is 20 s: the failure must be reported long
	// before that, as soon as the close is known.
	double t0 = conf_now_ms();
	CHECK_RV(p, tw_recv(p->link, 0, "m", &b), TW_EPEER);
	CHECK(p, conf_now_ms() - t0 < conf_scale(5000));
	size_t len;
	CHECK_RV(p, tw_probe(p->link, 0, "m", &len), TW_EPEER);
	CHECK_RV(p, tw_send(p->link, 0, "m", "x", 1), TW_EPEER);
	return 0;
}

static void t_peer_closed(void **state)
{
	run(2, 0, NULL, body_peer_closed, NULL);
}

// --- child links -------------------------------------------------------------

static int body_spawn_sub(conf_party *p)
{
	tw_link *l = p->link, *c = NULL, *s = NULL;
	tw_buf b = { 0 };
	CHECK_RV(p, tw_link_spawn(l, "bad:suffix", &c), TW_EINVAL);
	CHECK_RV(p, tw_link_spawn(l, "", &c), TW_EINVAL);
	CHECK_RV(p, tw_link_spawn(l, NULL, &c), TW_EINVAL);
	CHECK_OK(p, tw_link_spawn(l, "c", &c));
	char want[128];
	snprintf(want, sizeof(want), "%s/c", tw_link_id(l));
	CHECK(p, strcmp(tw_link_id(c), want) == 0);
	CHECK(p, tw_link_size(c) == 3 && tw_link_rank(c) == p->rank);
	const size_t ranks[] = { 2, 0 };
	const size_t dup[] = { 2, 2 };
	const size_t out_of_range[] = { 0, 3 };
	CHECK_RV(p, tw_link_sub(l, "s", dup, 2, &s), TW_EINVAL);
	CHECK_RV(p, tw_link_sub(l, "s", out_of_range, 2, &s), TW_EINVAL);
	CHECK_RV(p, tw_link_sub(l, "s", ranks, 0, &s), TW_EINVAL);
	CHECK_RV(p, tw_link_sub(l, "s", NULL, 2, &s), TW_EINVAL);
	if (p->rank == 1) {
		CHECK_RV(p, tw_link_sub(l, "s", ranks, 2, &s), TW_EINVAL);
	} else {
		CHECK_OK(p, tw_link_sub(l, "s", ranks, 2, &s));
		CHECK(p, tw_link_size(s) == 2);
		CHECK(p, tw_link_rank(s) == (p->rank == 2 ? 0u : 1u));
	}
	// The same tag on parent, child and sub link never meets.
	if (p->rank == 0) {
		CHECK_OK(p, tw_send(l, 1, "t", "P", 1));
		CHECK_OK(p, tw_send(c, 1, "t", "C", 1));
	} else if (p->rank == 1) {
		CHECK_OK(p, tw_recv(c, 0, "t", &b));
		CHECK(p, b.len == 1 && *(char *)b.data == 'C');
		tw_buf_free(&b);
		CHECK_OK(p, tw_recv(l, 0, "t", &b));
		CHECK(p, b.len == 1 && *(char *)b.data == 'P');
		tw_buf_free(&b);
	}
	if (p->rank == 2) {
		// Sub rank 0 is parent rank 2, sub rank 1 is parent rank 0.
		CHECK_OK(p, tw_send(s, 1, "t", "S", 1));
	} else if (p->rank == 0) {
		CHECK_OK(p, tw_recv(s, 0, "t", &b));
		CHECK(p, b.len == 1 && *(char *)b.data == 'S');
		tw_buf_free(&b);
		size_t len;
		CHECK_RV(p, tw_probe(l, 2, "t", &len), TW_EAGAIN);
	}
	// Collectives on the child links, too.
	CHECK_OK(p, tw_barrier(c, "cb"));
	if (s != NULL)
		CHECK_OK(p, tw_barrier(s, "sb"));
	// A parent with open children refuses to close.
	CHECK_RV(p, tw_link_close(l), TW_EINVAL);
	CHECK_OK(p, tw_link_close(s));
	CHECK_OK(p, tw_link_close(c));
	CHECK_OK(p, sync_all(p));
	// A name may be used again once every party closed the old child.
	CHECK_OK(p, tw_link_spawn(l, "c", &c));
	size_t next = (p->rank + 1) % 3, prev = (p->rank + 2) % 3;
	CHECK_OK(p, tw_send(c, next, "again", "A", 1));
	CHECK_OK(p, tw_recv(c, prev, "again", &b));
	CHECK(p, b.len == 1);
	tw_buf_free(&b);
	CHECK_OK(p, tw_barrier(c, "done"));
	CHECK_OK(p, tw_link_close(c));
	return 0;
}

static void t_spawn_sub(void **state)
{
	run(3, 0, NULL, body_spawn_sub, NULL);
}

// One side closes a child link while the other keeps using it.  The
// closing side drops what the child still gets, counting it as taken, so
// the receive buffer it held comes back: here a message that fills half of
// it, after which every message on the root fills the rest alone (a leak
// would hold them all back).  The other side's sends there fail with
// TW_EPEER once it knows of the close; its receives there drain what was
// delivered, then fail too.  The buffer holds the two small messages that
// the first side sends on the child (each costs TW_MSG_MIN_COST).
enum { CC_BUF = 4 * TW_MSG_MIN_COST };

static void setup_close_child(tw_desc *d, void *arg)
{
	tw_desc_set(d, TW_OPT_RECV_BUFFER, CC_BUF);
}

static int body_close_child(conf_party *p)
{
	tw_link *l = p->link, *c = NULL;
	static _Thread_local unsigned char buf[CC_BUF];
	tw_buf b = { 0 };
	size_t len;
	CHECK_OK(p, tw_link_spawn(l, "c", &c));
	if (p->rank == 0) {
		for (uint32_t i = 0; i < 2; i++)
			CHECK_OK(p, tw_send(c, 1, "x", &i, sizeof(i)));
		// Its message on the child has arrived: it comes before this.
		CHECK_OK(p, tw_recv(l, 1, "sent", &b));
		CHECK_OK(p, tw_link_close(c));
		CHECK_OK(p, tw_send(l, 1, "closed", NULL, 0));
		// tw_recv, not tw_recv_into: shm:// may place a message for a
		// waiting tw_recv_into straight into its buffer, past the
		// receive buffer that this is about.
		for (uint32_t i = 0; i < 8; i++) {
			CHECK_OK(p, tw_recv(l, 1, "r", &b));
			CHECK(p,
			    b.len == CC_BUF
			        && conf_check(b.data, b.len, i, 1, 31));
			tw_buf_free(&b);
		}
		CHECK_OK(p, sync_all(p));
		return 0;
	}
	conf_fill(buf, CC_BUF / 2, 9, 9, 31);
	CHECK_OK(p, tw_send(c, 0, "x", buf, CC_BUF / 2));
	CHECK_OK(p, tw_send(l, 0, "sent", NULL, 0));
	// The close reached this party before this message did.
	CHECK_OK(p, tw_recv(l, 0, "closed", &b));
	CHECK_RV(p, tw_send(c, 0, "x", "y", 1), TW_EPEER);
	CHECK_RV(p, tw_send_async(c, 0, "x", "y", 1), TW_EPEER);
	for (uint32_t i = 0; i < 2; i++) {
		uint32_t v;
		CHECK_OK(p, tw_recv_into(c, 0, "x", &v, sizeof(v), &len));
		CHECK(p, len == sizeof(v) && v == i);
	}
	CHECK_RV(p, tw_recv(c, 0, "x", &b), TW_EPEER);
	CHECK_RV(p, tw_probe(c, 0, "x", &len), TW_EPEER);
	// A receive buffer leaked to the closed child would hold these back
	// until the timeout.
	CHECK_OK(p, tw_link_set_recv_timeout(l, conf_scale(3000)));
	for (uint32_t i = 0; i < 8; i++) {
		conf_fill(buf, CC_BUF, i, 1, 31);
		CHECK_OK(p, tw_send(l, 0, "r", buf, CC_BUF));
	}
	CHECK_OK(p, tw_link_set_recv_timeout(l, conf_scale(20000)));
	CHECK_OK(p, tw_link_close(c));
	CHECK_OK(p, sync_all(p));
	return 0;
}

static void t_close_child(void **state)
{
	if (!tp->builtin)
		skip(); // a user channel cannot be told that a child closed
	run(2, 0, setup_close_child, body_close_child, NULL);
}

// Many uniquely named child links, closed in every order (one side first,
// the other first, both at once, after an abort), some over a subset of
// the parties: once every party closed them, nothing about them is kept.
enum { CH_N = 300 };

static const size_t churn_sub[] = { 2, 0 }; // child rank -> root rank

static int churn_one(conf_party *p, uint32_t i)
{
	tw_link *l = p->link, *c = NULL;
	bool sub = i % 5 == 0; // over ranks 2 and 0; rank 1 is not in it
	if (sub && p->rank == 1)
		return 0;
	char name[32];
	snprintf(name, sizeof(name), "c%u", i);
	if (sub)
		CHECK_OK(p, tw_link_sub(l, name, churn_sub, 2, &c));
	else
		CHECK_OK(p, tw_link_spawn(l, name, &c));
	size_t n = tw_link_size(c), r = tw_link_rank(c);
	size_t next = (r + 1) % n, prev = (r + n - 1) % n;
	tw_buf b = { 0 };
	CHECK_OK(p, tw_send(c, next, "m", &i, sizeof(i)));
	CHECK_OK(p, tw_recv(c, prev, "m", &b));
	CHECK(p, b.len == sizeof(i) && memcmp(b.data, &i, sizeof(i)) == 0);
	tw_buf_free(&b);
	// Who closes first says so on the root link to who closes later.
	bool first;
	switch (i % 4) {
	case 0: // child rank 0 first
	case 1: // the others first
		first = (r == 0) == (i % 4 == 0);
		if (!first)
			for (size_t k = 0; k < n; k++)
				if (k != r && (k == 0) != (r == 0))
					CHECK_OK(p,
					    tw_recv(l, sub ? churn_sub[k] : k,
					        "after", &b));
		CHECK_OK(p, tw_link_close(c));
		if (first)
			for (size_t k = 0; k < n; k++)
				if (k != r && (k == 0) != (r == 0))
					CHECK_OK(p,
					    tw_send(l, sub ? churn_sub[k] : k,
					        "after", NULL, 0));
		break;
	case 2: // all at once
		CHECK_OK(p, tw_link_close(c));
		break;
	default: // the last rank aborts first, then all close
		if (r == n - 1)
			tw_link_abort(c);
		CHECK_OK(p, tw_link_close(c));
		break;
	}
	return 0;
}

static int body_child_churn(conf_party *p)
{
	for (uint32_t i = 0; i < CH_N; i++)
		if (churn_one(p, i) != 0)
			return -1;
	// Every close reached every party before this barrier's messages.
	CHECK_OK(p, sync_all(p));
	for (size_t k = 0; k < p->size; k++) {
		if (k == p->rank)
			continue;
		size_t held = tw__link_ns_entries(p->link, k);
		if (held != 0) {
			conf_failf(p, __LINE__,
			    "%zu namespace entries kept after %u child links "
			    "closed (SIZE_MAX: the transport cannot tell)",
			    held, CH_N);
			return -1;
		}
	}
	return 0;
}

static void t_child_churn(void **state)
{
	if (!tp->builtin)
		skip(); // a user channel keeps no namespaces
	run(3, 0, NULL, body_child_churn, NULL);
}

// --- pending sends, throttling, flow control --------------------------------

// Runs body on two parties that share a fresh board (conf.h) as their
// argument.
static void run_board(conf_setup_fn setup, conf_body_fn body)
{
	conf_board *board = conf_board_new();
	assert_non_null(board);
	int rv = conf_run(tp, 2, 0, setup, body, board);
	conf_board_free(board);
	if (rv != 0)
		fail_msg("a party failed (see above)");
}

// Receives n messages of wait_pending's pattern without waiting.
static int recv_now(conf_party *p, uint32_t n)
{
	CHECK_OK(p, tw_link_set_recv_timeout(p->link, 0));
	for (uint32_t i = 0; i < n; i++) {
		tw_buf b = { 0 };
		CHECK_OK(p, tw_recv(p->link, 0, "wp", &b));
		CHECK(p, b.len == 256 && conf_check(b.data, b.len, i, 0, 0));
		tw_buf_free(&b);
	}
	return 0;
}

// tw_link_wait_pending returns once every message sent so far is in its
// receiver's mailbox.  The receiver hears that it returned outside the link
// (a message on the link would arrive after the others and prove nothing),
// and then finds every message with receives that do not wait.
static int body_wait_pending(conf_party *p)
{
	enum { N = 100 };
	conf_board *board = p->arg;
	if (p->rank == 0) {
		// Once the receiver is idle: no receive of its link creation
		// is still waiting (and moving messages along meanwhile).
		CHECK(p, conf_board_wait(board, 2, conf_scale(20000), NULL));
		unsigned char buf[256];
		for (uint32_t i = 0; i < N; i++) {
			conf_fill(buf, sizeof(buf), i, 0, 0);
			CHECK_OK(p,
			    tw_send_async(p->link, 1, "wp", buf, sizeof(buf)));
		}
		CHECK_OK(p, tw_link_wait_pending(p->link));
		// Nothing is pending now: a look (timeout 0) says so at once.
		CHECK_OK(p, tw_link_wait_pending_timed(p->link, 0));
		CHECK_OK(p, tw_link_wait_pending_timed(p->link, -1));
		CHECK_RV(
		    p, tw_link_wait_pending_timed(p->link, -2), TW_EINVAL);
		CHECK_RV(p, tw_link_wait_pending_timed(NULL, 0), TW_EINVAL);
		conf_board_post(board, 0, 1);
		CHECK(p, conf_board_wait(board, 1, conf_scale(20000), NULL));
		return 0;
	}
	conf_board_post(board, 2, 1);
	CHECK(p, conf_board_wait(board, 0, conf_scale(20000), NULL));
	int rv = recv_now(p, N);
	conf_board_post(board, 1, 1); // the sender may close now
	return rv;
}

static void t_wait_pending(void **state)
{
	run_board(NULL, body_wait_pending);
}

// The same with long messages, back to back: the ones that a transport
// cuts into pieces (tcp:// holds its acks back while one is incomplete,
// and must send the ack that a long message's completion releases to a
// sender that asked for it, also when the next long message holds it
// again).  The wait is bounded, so that an ack that never comes fails the
// case instead of hanging it.
static const size_t wpl_sizes[] = { 300007, 700001, 5, 1048579 };
enum { WPL_N = sizeof(wpl_sizes) / sizeof(wpl_sizes[0]) };

static int body_wait_pending_long(conf_party *p)
{
	conf_board *board = p->arg;
	unsigned char *buf = malloc(1048579);
	CHECK(p, buf != NULL);
	if (p->rank == 0) {
		CHECK(p, conf_board_wait(board, 2, conf_scale(20000), NULL));
		for (uint32_t i = 0; i < WPL_N; i++) {
			conf_fill(buf, wpl_sizes[i], i, 0, 5);
			CHECK_OK(
			    p, tw_send(p->link, 1, "wl", buf, wpl_sizes[i]));
		}
		CHECK_OK(
		    p, tw_link_wait_pending_timed(p->link, conf_scale(20000)));
		conf_board_post(board, 0, 1);
		CHECK(p, conf_board_wait(board, 1, conf_scale(20000), NULL));
		free(buf);
		return 0;
	}
	conf_board_post(board, 2, 1);
	CHECK(p, conf_board_wait(board, 0, conf_scale(20000), NULL));
	CHECK_OK(p, tw_link_set_recv_timeout(p->link, 0));
	for (uint32_t i = 0; i < WPL_N; i++) {
		size_t len = 0;
		CHECK_OK(
		    p, tw_recv_into(p->link, 0, "wl", buf, 1048579, &len));
		CHECK(p, len == wpl_sizes[i]);
		CHECK(p, conf_check(buf, len, i, 0, 5));
	}
	conf_board_post(board, 1, 1);
	free(buf);
	return 0;
}

static void t_wait_pending_long(void **state)
{
	run_board(NULL, body_wait_pending_long);
}

// Receives posted before their long message arrives.  tcp:// assembles such
// a message in the receiver's buffer while the receiving thread reads the
// connection itself, moves what it has into memory of its own when the
// receive gives up halfway, and takes it back at the next receive; a
// message behind it (the same key) comes after it, and one too long for
// the buffer is left queued (TW_ETRUNC).  Every transport must deliver the
// same bytes in the same order; over tcp:// the case also checks that each
// path was taken (over tcp:// with stripes, with chunks of other
// connections arriving meanwhile).
enum { PL_CAP = 4 << 20, PL_ROUNDS = 200 };
static const size_t pl_sizes[] = { 1048579, 2097157, 300007 };

static bool pl_tcp(void)
{
	return strcmp(tp->name, "tcp") == 0
	    || strcmp(tp->name, "tcpstripes") == 0;
}

static uint64_t pl_count(_Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

// One message of pattern (i, k) and its length from the sender, checked.
static int pl_recv(conf_party *p, unsigned char *buf, uint32_t i, uint32_t k,
    size_t want, bool retry)
{
	size_t len = 0;
	int rv;
	while ((rv = tw_recv_into(p->link, 0, "pl", buf, PL_CAP, &len))
	        == TW_ETIMEDOUT
	    && retry)
		;
	CHECK_OK(p, rv);
	CHECK(p, len == want && conf_check(buf, len, i, k, 7));
	return 0;
}

static int pl_send(
    conf_party *p, unsigned char *buf, uint32_t i, uint32_t k, size_t len)
{
	conf_fill(buf, len, i, k, 7);
	CHECK_OK(p, tw_send(p->link, 1, "pl", buf, len));
	return 0;
}

// The receiver's word on the next round: *go 0 ends the phase.
static int pl_next(conf_party *p, unsigned char *go)
{
	size_t len = 0;
	CHECK_OK(p, tw_recv_into(p->link, 1, "go", go, 1, &len));
	return 0;
}

static int pl_sender(conf_party *p, unsigned char *buf)
{
	unsigned char go = 0;
	// Phase 1: each round, once the receiver is waiting, a long
	// message and a short one of the same key behind it.
	for (uint32_t r = 0;; r++) {
		if (pl_next(p, &go) != 0)
			return -1;
		if (go == 0)
			break;
		if (pl_send(p, buf, r, 1, pl_sizes[r % 2]) != 0
		    || pl_send(p, buf, r, 2, 5) != 0)
			return -1;
	}
	// Phase 2: batches back to back to a receiver that keeps giving up.
	for (uint32_t r = 0;; r++) {
		if (pl_next(p, &go) != 0)
			return -1;
		if (go == 0)
			break;
		for (uint32_t i = 0; i < 8; i++)
			if (pl_send(p, buf, r, 10 + i, pl_sizes[i % 3]) != 0)
				return -1;
	}
	// Phase 3: one too long for the receiver's first buffer.
	return pl_send(p, buf, 0, 20, pl_sizes[0]);
}

static int pl_receiver(conf_party *p, unsigned char *buf)
{
	bool tcp = pl_tcp(), stripes = strcmp(tp->name, "tcpstripes") == 0;
	uint64_t placed = pl_count(&tw__tcp_rx_placed);
	uint64_t strays = pl_count(&tw__tcp_rx_strays);
	unsigned char go = 1;
	uint32_t r = 0;
	for (; r < PL_ROUNDS; r++) {
		CHECK_OK(p, tw_send(p->link, 0, "go", &go, 1));
		if (pl_recv(p, buf, r, 1, pl_sizes[r % 2], false) != 0
		    || pl_recv(p, buf, r, 2, 5, false) != 0)
			return -1;
		// A receive that polls may still miss the start of the
		// message (its poll ended first): a later round places it.
		if (!tcp || pl_count(&tw__tcp_rx_placed) > placed)
			break;
	}
	CHECK(p, r < PL_ROUNDS);
	go = 0;
	CHECK_OK(p, tw_send(p->link, 0, "go", &go, 1));

	uint64_t moved = pl_count(&tw__tcp_rx_moved);
	uint64_t adopted = pl_count(&tw__tcp_rx_adopted);
	CHECK_OK(p, tw_link_set_recv_timeout(p->link, 0));
	go = 1;
	for (r = 0; r < PL_ROUNDS; r++) {
		CHECK_OK(p, tw_send(p->link, 0, "go", &go, 1));
		for (uint32_t i = 0; i < 8; i++)
			if (pl_recv(p, buf, r, 10 + i, pl_sizes[i % 3], true)
			    != 0)
				return -1;
		if (!tcp
		    || (pl_count(&tw__tcp_rx_moved) > moved
		        && pl_count(&tw__tcp_rx_adopted) > adopted
		        && (!stripes
		            || pl_count(&tw__tcp_rx_strays) > strays)))
			break;
	}
	CHECK(p, r < PL_ROUNDS);
	go = 0;
	CHECK_OK(p, tw_send(p->link, 0, "go", &go, 1));
	CHECK_OK(p, tw_link_set_recv_timeout(p->link, conf_scale(20000)));

	size_t len = 0;
	CHECK_RV(
	    p, tw_recv_into(p->link, 0, "pl", buf, 300000, &len), TW_ETRUNC);
	CHECK(p, len == pl_sizes[0]);
	return pl_recv(p, buf, 0, 20, pl_sizes[0], false);
}

static int body_posted_long(conf_party *p)
{
	unsigned char *buf = malloc(PL_CAP);
	CHECK(p, buf != NULL);
	int rv = p->rank == 0 ? pl_sender(p, buf) : pl_receiver(p, buf);
	free(buf);
	return rv;
}

static void t_posted_long(void **state)
{
	run(2, 0, NULL, body_posted_long, NULL);
}

// Receives posted before their short message arrives.  tcp:// copies a
// message of one frame straight into the buffer of a receive that reads
// the connection itself, when nothing of its key waits in the mailbox, and
// counts it as taken at once.  Every transport must deliver the same: a
// ping-pong whose every message is awaited, through a window a small part
// of all it carries (were placed messages never counted as taken, credit
// would run out); two messages of one key back to back to an awaiting
// receive, in order (over tcp:// the two most likely come in one write,
// behind a message of another key that their sender wrote at once); and
// one longer than the awaiting buffer, left queued (TW_ETRUNC); then
// messages of one frame (over tcp://, up to 256 KiB) back to back to a
// receiver that polls, whose receive may give up with its message half
// read into its buffer (tcp:// moves it out, into memory of its own, for
// the next receive).  Over tcp:// the case also checks that each path was
// taken.
// The window holds 4 messages (tw__msg_cost): the three sent back to back
// below, and a small part of the ping-pong's 2000.
enum { PS_BUF = 4 * TW_MSG_MIN_COST, PS_N = 2000, PS_LEN = 48 };
#if defined(__SANITIZE_THREAD__)
#define PM_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PM_TSAN 1
#endif
#endif
#ifndef PM_TSAN
#define PM_TSAN 0
#endif
enum {
	PM_LEN = 250000,
	PM_BATCH = 8,
	PM_BUF = 4 * PM_LEN,
	PM_ROUNDS = PM_TSAN ? 50 : 2000
};

static void setup_posted_short(tw_desc *d, void *arg)
{
	tw_desc_set(d, TW_OPT_RECV_BUFFER, PS_BUF);
}

static int ps_recv(conf_party *p, const char *tag, uint32_t i, uint32_t k,
    size_t cap, size_t want)
{
	unsigned char buf[4 * PS_LEN];
	size_t len = 0;
	int rv;
	// A receiver that polls (recv timeout 0) retries.
	while ((rv = tw_recv_into(p->link, 1 - p->rank, tag, buf, cap, &len))
	    == TW_ETIMEDOUT)
		;
	CHECK_OK(p, rv);
	CHECK(p, len == want && conf_check(buf, len, i, k, 9));
	return 0;
}

static int ps_send(
    conf_party *p, const char *tag, uint32_t i, uint32_t k, size_t len)
{
	unsigned char buf[4 * PS_LEN];
	conf_fill(buf, len, i, k, 9);
	CHECK_OK(p, tw_send(p->link, 1 - p->rank, tag, buf, len));
	return 0;
}

// Batches of PM_BATCH messages for as long as the receiver says "more".
static int ps_moved_sender(conf_party *p)
{
	unsigned char *buf = malloc(PM_LEN);
	CHECK(p, buf != NULL);
	unsigned char go = 1;
	size_t len = 0;
	int rv = 0;
	for (uint32_t r = 0; rv == 0; r++) {
		CHECK_OK(p, tw_recv_into(p->link, 1, "go", &go, 1, &len));
		if (go == 0)
			break;
		for (uint32_t i = 0; i < PM_BATCH && rv == 0; i++) {
			conf_fill(buf, PM_LEN, r, i, 9);
			rv = tw_send(p->link, 1, "pm", buf, PM_LEN);
		}
		CHECK_OK(p, rv);
	}
	free(buf);
	return rv;
}

static int ps_moved_receiver(conf_party *p)
{
	unsigned char *buf = malloc(PM_BUF);
	CHECK(p, buf != NULL);
	uint64_t moved = pl_count(&tw__tcp_rx_moved_small);
	CHECK_OK(p, tw_link_set_recv_timeout(p->link, 0));
	unsigned char go = 1;
	uint32_t r = 0;
	for (; r < PM_ROUNDS; r++) {
		CHECK_OK(p, tw_send(p->link, 0, "go", &go, 1));
		for (uint32_t i = 0; i < PM_BATCH; i++) {
			size_t len = 0;
			int rv;
			memset(buf, 0, PM_LEN);
			while ((rv = tw_recv_into(
			            p->link, 0, "pm", buf, PM_BUF, &len))
			    == TW_ETIMEDOUT)
				;
			CHECK_OK(p, rv);
			CHECK(
			    p, len == PM_LEN && conf_check(buf, len, r, i, 9));
		}
		if (!pl_tcp() || pl_count(&tw__tcp_rx_moved_small) > moved)
			break;
	}
	free(buf);
	if (r == PM_ROUNDS && PM_TSAN)
		fprintf(stderr,
		    "not checked: no receive gave up halfway in %d rounds "
		    "(under ThreadSanitizer a receiver that polls is slow to "
		    "see a frame before it is whole)\n",
		    PM_ROUNDS);
	else
		CHECK(p, r < PM_ROUNDS);
	go = 0;
	CHECK_OK(p, tw_send(p->link, 0, "go", &go, 1));
	return tw_link_set_recv_timeout(p->link, conf_scale(20000));
}

static int body_posted_short(conf_party *p)
{
	uint64_t placed = pl_count(&tw__tcp_rx_placed_small);
	bool first = p->rank == 0;
	// Polling, this thread reads the connection whenever it waits, even
	// where other processes take the CPUs for longer than a receive spins.
	CHECK_OK(p, tw_link_set_recv_timeout(p->link, 0));
	for (uint32_t i = 0; i < PS_N; i++) {
		if (first && ps_send(p, "ps", i, first, PS_LEN) != 0)
			return -1;
		if (ps_recv(p, "ps", i, !first, PS_LEN, PS_LEN) != 0)
			return -1;
		if (!first && ps_send(p, "ps", i, first, PS_LEN) != 0)
			return -1;
	}
	if (pl_tcp())
		CHECK(p, pl_count(&tw__tcp_rx_placed_small) > placed);
	CHECK_OK(p, tw_link_set_recv_timeout(p->link, conf_scale(20000)));
	unsigned char go = 1;
	size_t len = 0;
	if (p->rank == 0) {
		// Each once the receiver waits for it.
		CHECK_OK(p, tw_recv_into(p->link, 1, "go", &go, 1, &len));
		if (ps_send(p, "px", 0, 5, PS_LEN) != 0
		    || ps_send(p, "pt", 0, 3, PS_LEN) != 0
		    || ps_send(p, "pt", 1, 3, 2 * PS_LEN) != 0)
			return -1;
		CHECK_OK(p, tw_recv_into(p->link, 1, "go", &go, 1, &len));
		if (ps_send(p, "pu", 0, 4, 4 * PS_LEN) != 0)
			return -1;
		return ps_moved_sender(p);
	}
	CHECK_OK(p, tw_send(p->link, 0, "go", &go, 1));
	if (ps_recv(p, "pt", 0, 3, 4 * PS_LEN, PS_LEN) != 0
	    || ps_recv(p, "pt", 1, 3, 4 * PS_LEN, 2 * PS_LEN) != 0
	    || ps_recv(p, "px", 0, 5, 4 * PS_LEN, PS_LEN) != 0)
		return -1;
	CHECK_OK(p, tw_send(p->link, 0, "go", &go, 1));
	unsigned char small[PS_LEN];
	CHECK_RV(p, tw_recv_into(p->link, 0, "pu", small, sizeof(small), &len),
	    TW_ETRUNC);
	CHECK(p, len == 4 * PS_LEN);
	if (ps_recv(p, "pu", 0, 4, 4 * PS_LEN, 4 * PS_LEN) != 0)
		return -1;
	return ps_moved_receiver(p);
}

static void t_posted_short(void **state)
{
	run(2, 0, setup_posted_short, body_posted_short, NULL);
}

// --- statistics under concurrency ------------------------------------------------

// tw_link_stats must count exactly what several threads send and receive at
// once on one link, and a child link's traffic apart from its parent's.
#define ST_THREADS 4
#define ST_MSGS 300

typedef struct st_worker {
	conf_party *p;
	tw_link *link;
	unsigned t;
	uint64_t bytes;
	pthread_t th;
	int rv;
} st_worker;

static size_t st_len(unsigned t, unsigned i)
{
	return (size_t)(t * 131 + i * 17) % 1500;
}

static void *st_main(void *arg)
{
	st_worker *w = arg;
	conf_party *p = w->p;
	char tag[8], buf[1500];
	snprintf(tag, sizeof(tag), "s%u", w->t);
	w->rv = -1;
	for (unsigned i = 0; i < ST_MSGS; i++) {
		size_t len = st_len(w->t, i), got = 0;
		if (p->rank == 0) {
			memset(buf, (int)(i & 0xff), len);
			int rv = tw_send(w->link, 1, tag, buf, len);
			if (rv != TW_OK) {
				conf_failf(p, __LINE__, "send %u of %s: %s", i,
				    tag, tw_err_name(rv));
				return NULL;
			}
		} else {
			// Half the threads take copies, half receive in place.
			int rv;
			if (w->t % 2 == 0) {
				rv = tw_recv_into(
				    w->link, 0, tag, buf, sizeof(buf), &got);
			} else {
				tw_buf b = { 0 };
				rv = tw_recv(w->link, 0, tag, &b);
				got = b.len;
				tw_buf_free(&b);
			}
			if (rv != TW_OK || got != len) {
				conf_failf(p, __LINE__,
				    "receive %u of %s: %s, %zu bytes, want "
				    "%zu",
				    i, tag, tw_err_name(rv), got, len);
				return NULL;
			}
		}
		w->bytes += len;
	}
	w->rv = 0;
	return NULL;
}

// Runs ST_THREADS workers on `l`; their byte total in *bytes.
static int st_run(conf_party *p, tw_link *l, uint64_t *bytes)
{
	st_worker w[ST_THREADS];
	*bytes = 0;
	for (unsigned t = 0; t < ST_THREADS; t++) {
		w[t] = (st_worker) { .p = p, .link = l, .t = t };
		CHECK(p, pthread_create(&w[t].th, NULL, st_main, &w[t]) == 0);
	}
	int rv = 0;
	for (unsigned t = 0; t < ST_THREADS; t++) {
		pthread_join(w[t].th, NULL);
		rv |= w[t].rv;
		*bytes += w[t].bytes;
	}
	return rv;
}

static int body_stats_threads(conf_party *p)
{
	tw_link *l = p->link, *child = NULL;
	CHECK_OK(p, tw_link_spawn(l, "st", &child));
	uint64_t bytes = 0, child_bytes = 0;
	tw_stats st, cst;
	int rv = st_run(p, l, &bytes);
	if (rv == 0) {
		// The child's traffic, once the parent's is counted.
		rv = st_run(p, child, &child_bytes);
	}
	if (rv == 0) {
		tw_link_stats(l, &st);
		tw_link_stats(child, &cst);
	}
	CHECK_OK(p, tw_link_close(child));
	CHECK(p, rv == 0);
	uint64_t msgs = (uint64_t)ST_THREADS * ST_MSGS;
	CHECK(p, bytes == child_bytes && bytes > msgs);
	if (p->rank == 0) {
		CHECK(p, st.msgs_sent == msgs && st.bytes_sent == bytes);
		CHECK(p, st.msgs_recv == 0 && st.bytes_recv == 0);
		CHECK(p, cst.msgs_sent == msgs && cst.bytes_sent == bytes);
		CHECK(p, cst.msgs_recv == 0 && cst.bytes_recv == 0);
	} else {
		CHECK(p, st.msgs_recv == msgs && st.bytes_recv == bytes);
		CHECK(p, st.msgs_sent == 0 && st.bytes_sent == 0);
		CHECK(p, cst.msgs_recv == msgs && cst.bytes_recv == bytes);
		CHECK(p, cst.msgs_sent == 0 && cst.bytes_sent == 0);
	}
	return sync_all(p);
}

static void t_stats_threads(void **state)
{
	run(2, 0, NULL, body_stats_threads, NULL);
}

static void setup_window(tw_desc *d, void *arg)
{
	tw_desc_set(d, TW_OPT_THROTTLE_WINDOW, 4);
}

static int body_throttle(conf_party *p)
{
	tw_link *l = p->link;
	uint32_t seq = 0;
	tw_buf b = { 0 };
	if (p->rank == 0) {
		// Nothing is consumed yet: the window admits exactly 4.
		for (; seq < 4; seq++)
			CHECK_OK(
			    p, tw_send_async_throttled(l, 1, "w", &seq, 4));
		CHECK_OK(p, tw_link_set_recv_timeout(l, 300));
		double t0 = conf_now_ms();
		CHECK_RV(p, tw_send_async_throttled(l, 1, "w", &seq, 4),
		    TW_ETIMEDOUT);
		CHECK(p, conf_now_ms() - t0 >= 290);
		// A timed one waits its own timeout, and sends nothing either.
		t0 = conf_now_ms();
		CHECK_RV(p,
		    tw_send_timed(l, 1, "w", &seq, 4,
		        TW_SEND_ASYNC | TW_SEND_THROTTLED, 50),
		    TW_ETIMEDOUT);
		CHECK(p, conf_now_ms() - t0 >= 49);
		CHECK_OK(p, tw_link_set_recv_timeout(l, conf_scale(20000)));
		// Let the peer consume; its acks reopen the window.
		CHECK_OK(p, tw_send(l, 1, "go", NULL, 0));
		CHECK_OK(p, tw_send_async_throttled(l, 1, "w", &seq, 4));
		seq++;
		CHECK_OK(p, tw_link_wait_pending(l));
		CHECK_OK(p, tw_send_async_throttled(l, 1, "w", &seq, 4));
		return 0;
	}
	CHECK_OK(p, tw_recv(l, 0, "go", &b));
	for (uint32_t i = 0; i < 6; i++) {
		uint32_t v;
		size_t len;
		CHECK_OK(p, tw_recv_into(l, 0, "w", &v, 4, &len));
		CHECK(p, len == 4 && v == i);
	}
	return 0;
}

static void t_throttle(void **state)
{
	run(2, 0, setup_window, body_throttle, NULL);
}

// Parties may set different windows.  A receiver with a window acks every
// message it consumes; a sender without one never pulls those acks, so
// what waits for it must stay bounded: one ack, the newest.
enum { TM_N = 2000 };

static void setup_window_rank1(tw_desc *d, size_t rank, void *arg)
{
	tw_desc_set(d, TW_OPT_THROTTLE_WINDOW, rank == 1 ? 4 : 0);
}

static int body_throttle_mixed(conf_party *p)
{
	tw_link *l = p->link;
	tw_buf b = { 0 };
	if (p->rank == 1) {
		for (uint32_t i = 0; i < TM_N; i++) {
			uint32_t v;
			size_t len;
			CHECK_OK(p, tw_recv_into(l, 0, "m", &v, 4, &len));
			CHECK(p, len == 4 && v == i);
		}
		// Every ack is in the sender's mailbox before it hears this.
		CHECK_OK(p, tw_link_wait_pending(l));
		CHECK_OK(p, tw_send(l, 0, "done", NULL, 0));
		// Stay until it counted: a closed peer ends its receives.
		CHECK_OK(p, tw_recv(l, 0, "counted", &b));
		return 0;
	}
	for (uint32_t i = 0; i < TM_N; i++)
		CHECK_OK(p, tw_send_async(l, 1, "m", &i, 4));
	CHECK_OK(p, tw_recv(l, 1, "done", &b));
	// Count what waits under the link's ack key, taking it without
	// waiting: one message, carrying the count of all TM_N.
	char key[TW_KEY_MAX];
	tw__key_ctl(key, tw_link_id(l), "ack");
	unsigned queued = 0;
	uint64_t last = 0;
	int rv;
	while ((rv = tw__link_recv_key(l, 1, key, 0, &b)) == TW_OK) {
		queued++;
		CHECK(p, b.len == 8);
		last = 0;
		for (int i = 0; i < 8; i++)
			last |= (uint64_t)((unsigned char *)b.data)[i]
			    << (8 * i);
		tw_buf_free(&b);
	}
	CHECK_RV(p, rv, TW_ETIMEDOUT);
	if (queued != 1 || last != TM_N) {
		conf_failf(p, __LINE__, "%u acks queued, the last says %llu",
		    queued, (unsigned long long)last);
		return -1;
	}
	CHECK_OK(p, tw_send(l, 1, "counted", NULL, 0));
	return 0;
}

static void t_throttle_mixed(void **state)
{
	if (conf_run_each(
	        tp, 2, 0, NULL, setup_window_rank1, body_throttle_mixed, NULL)
	    != 0)
		fail_msg("a party failed (see above)");
}

enum { FC_BUF = 64 * 1024, FC_MSG = 4096, FC_N = 256 };

static void setup_flow(tw_desc *d, void *arg)
{
	tw_desc_set(d, TW_OPT_RECV_BUFFER, FC_BUF);
}

static int body_flow_control(conf_party *p)
{
	unsigned char buf[FC_MSG];
	if (p->rank == 0) {
		for (uint32_t i = 0; i < FC_N; i++) {
			conf_fill(buf, sizeof(buf), i, 7, 7);
			CHECK_OK(
			    p, tw_send(p->link, 1, "fc", buf, sizeof(buf)));
		}
		return 0;
	}
	// Receive late, so that the sender runs into the limit.
	sleep_ms(100);
	for (uint32_t i = 0; i < FC_N; i++) {
		size_t len;
		CHECK_OK(
		    p, tw_recv_into(p->link, 0, "fc", buf, sizeof(buf), &len));
		CHECK(p, len == FC_MSG && conf_check(buf, len, i, 7, 7));
	}
	if (p->tp->builtin) {
		// 1 MiB went through a 64 KiB window: the receiver never
		// held more than the limit.
		uint64_t peak = tw__link_unreceived_peak(p->link, 0);
		CHECK(p, peak <= FC_BUF);
		CHECK(p, peak >= FC_MSG);
	}
	return 0;
}

static void t_flow_control(void **state)
{
	run(2, 0, setup_flow, body_flow_control, NULL);
}

// Empty messages are held back by flow control too: each counts its
// length plus a fixed overhead, and at least TW_MSG_MIN_COST
// (tw__msg_cost), so a receiver that does not receive holds at most
// TW_OPT_RECV_BUFFER / TW_MSG_MIN_COST of them however many are sent, and
// the sender, once transport buffers are full too, gets TW_ETIMEDOUT.  (A
// million of them once took about 100 MB at such a receiver; without the
// floor, this buffer would let 4096 of them pass.)
enum {
	FE_BUF = 64 * TW_MSG_MIN_COST,
	FE_MAX = 200000, // sends tried: far more than may pass
	// What may pass beyond the receive buffer: messages in the
	// transports' own buffers (shm://: a ring of 64 frames per lane).
	FE_SLACK = 256,
};

static void setup_flow_empty(tw_desc *d, void *arg)
{
	tw_desc_set(d, TW_OPT_RECV_BUFFER, FE_BUF);
}

static int body_flow_empty(conf_party *p)
{
	conf_board *board = p->arg;
	uint64_t sent = 0;
	if (p->rank == 0) {
		CHECK_OK(
		    p, tw_link_set_recv_timeout(p->link, conf_scale(200)));
		int rv = TW_OK;
		while (sent < FE_MAX
		    && (rv = tw_send(p->link, 1, "z", NULL, 0)) == TW_OK)
			sent++;
		// Timed sends held back the same way send nothing either:
		// the receiver gets exactly `sent` messages.
		CHECK_RV(p, tw_send_timed(p->link, 1, "z", NULL, 0, 0, 30),
		    TW_ETIMEDOUT);
		CHECK_RV(p,
		    tw_send_timed(p->link, 1, "z", NULL, 0, TW_SEND_ASYNC, 0),
		    TW_ETIMEDOUT);
		CHECK_RV(p, tw_send_timed(p->link, 1, "z", NULL, 0, 4, 0),
		    TW_EINVAL);
		CHECK_RV(p,
		    tw_send_timed(
		        p->link, 1, "z", NULL, 0, TW_SEND_THROTTLED, 0),
		    TW_EINVAL);
		CHECK_RV(p, tw_send_timed(p->link, 1, "z", NULL, 0, 0, -2),
		    TW_EINVAL);
		conf_board_post(board, 0, sent);
		CHECK_RV(p, rv, TW_ETIMEDOUT);
		CHECK(p, sent <= FE_BUF / TW_MSG_MIN_COST + FE_SLACK);
		CHECK_OK(
		    p, tw_link_set_recv_timeout(p->link, conf_scale(20000)));
		CHECK_OK(p, sync_all(p));
		return 0;
	}
	// Receives nothing until the sender was held back.
	CHECK(p, conf_board_wait(board, 0, conf_scale(20000), &sent));
	for (uint64_t i = 0; i < sent; i++) {
		size_t len = 1;
		CHECK_OK(p, tw_recv_into(p->link, 0, "z", NULL, 0, &len));
		CHECK(p, len == 0);
	}
	size_t len;
	CHECK_RV(p, tw_probe(p->link, 0, "z", &len), TW_EAGAIN);
	if (p->tp->builtin)
		CHECK(p, tw__link_unreceived_peak(p->link, 0) <= FE_BUF);
	CHECK_OK(p, sync_all(p));
	return 0;
}

static void t_flow_empty(void **state)
{
	if (!tp->builtin)
		skip(); // a user channel brings its own flow control
	run_board(setup_flow_empty, body_flow_empty);
}

// tw_send_async returns without waiting for the peer's application, but
// not past the peer's receive buffer: while its messages fit there they
// return at once (with a receive timeout of AF_WAIT_MS, one that waited
// for the peer to receive would time out), and beyond it one waits for
// the receive timeout and returns TW_ETIMEDOUT, having sent nothing.
enum {
	AF_BUF = 64 * 1024,
	AF_MSG = 1024,
	AF_WAIT_MS = 300,
	AF_SLACK = 256, // messages the transports' own buffers may hold
};

static void setup_async_flow(tw_desc *d, void *arg)
{
	tw_desc_set(d, TW_OPT_RECV_BUFFER, AF_BUF);
}

// The sender's part: sends until held back, counting in *sent what went.
static int async_fill(conf_party *p, uint64_t *sent)
{
	static _Thread_local unsigned char buf[AF_MSG];
	tw_link *l = p->link;
	CHECK_OK(p, tw_link_set_recv_timeout(l, conf_scale(AF_WAIT_MS)));
	// Within the receive buffer: all at once, though the peer receives
	// nothing.
	for (; *sent < AF_BUF / tw__msg_cost(AF_MSG); ++*sent) {
		conf_fill(buf, AF_MSG, (uint32_t)*sent, 0, 41);
		CHECK_OK(p, tw_send_async(l, 1, "a", buf, AF_MSG));
	}
	// Beyond it (and the transport's buffers): held back.
	int rv = TW_OK;
	double t0 = 0;
	while (*sent < AF_BUF / AF_MSG + AF_SLACK) {
		conf_fill(buf, AF_MSG, (uint32_t)*sent, 0, 41);
		t0 = conf_now_ms();
		if ((rv = tw_send_async(l, 1, "a", buf, AF_MSG)) != TW_OK)
			break;
		++*sent;
	}
	CHECK_RV(p, rv, TW_ETIMEDOUT);
	CHECK(p, conf_now_ms() - t0 >= AF_WAIT_MS - 10);
	CHECK_OK(p, tw_link_set_recv_timeout(l, conf_scale(20000)));
	return 0;
}

static int body_async_flow(conf_party *p)
{
	conf_board *board = p->arg;
	uint64_t sent = 0;
	if (p->rank == 0) {
		int rv = async_fill(p, &sent);
		conf_board_post(board, 0, sent); // whatever happened
		if (rv != 0)
			return rv;
		CHECK_OK(p, sync_all(p));
		return 0;
	}
	CHECK(p, conf_board_wait(board, 0, conf_scale(20000), &sent));
	unsigned char buf[AF_MSG];
	for (uint64_t i = 0; i < sent; i++) {
		size_t len;
		CHECK_OK(p, tw_recv_into(p->link, 0, "a", buf, AF_MSG, &len));
		CHECK(p,
		    len == AF_MSG && conf_check(buf, len, (uint32_t)i, 0, 41));
	}
	size_t len;
	CHECK_RV(p, tw_probe(p->link, 0, "a", &len), TW_EAGAIN);
	CHECK_OK(p, sync_all(p));
	return 0;
}

static void t_async_flow(void **state)
{
	if (!tp->builtin)
		skip(); // a user channel brings its own flow control
	run_board(setup_async_flow, body_async_flow);
}

// Messages of many sizes, both ways at once, on one tag in order with a
// second tag interleaved: around every chunk and copy threshold of the
// transports (a striped tcp:// message holds the ones behind it until it
// is whole, and must not hold up the other tag's earlier ones).
static const size_t large_sizes[] = { 1, 4095, 4096, 4097, 16384, 16385, 65536,
	100003, 1048579, 0, 3 * 1048576 + 5 };
enum { LARGE_N = sizeof(large_sizes) / sizeof(large_sizes[0]) };

static int body_large(conf_party *p)
{
	size_t peer = 1 - p->rank;
	unsigned char *buf = malloc(3 * 1048576 + 5);
	CHECK(p, buf != NULL);
	for (uint32_t i = 0; i < LARGE_N; i++) {
		conf_fill(buf, large_sizes[i], i, (uint32_t)p->rank, 11);
		CHECK_OK(p, tw_send(p->link, peer, "m", buf, large_sizes[i]));
		CHECK_OK(p, tw_send(p->link, peer, "s", &i, sizeof(i)));
	}
	for (uint32_t i = 0; i < LARGE_N; i++) {
		uint32_t v;
		size_t len;
		CHECK_OK(
		    p, tw_recv_into(p->link, peer, "s", &v, sizeof(v), &len));
		CHECK(p, len == sizeof(v) && v == i);
	}
	for (uint32_t i = 0; i < LARGE_N; i++) {
		size_t len;
		CHECK_OK(p,
		    tw_recv_into(
		        p->link, peer, "m", buf, 3 * 1048576 + 5, &len));
		CHECK(p, len == large_sizes[i]);
		CHECK(p, conf_check(buf, len, i, (uint32_t)peer, 11));
	}
	CHECK_OK(p, tw_link_wait_pending(p->link));
	free(buf);
	return 0;
}

static void t_large(void **state)
{
	run(2, 0, NULL, body_large, NULL);
}

// tw_link_trim gives back what a burst left in tcp:// send rings, nothing
// on transports that keep nothing that grows, and the link works on as
// before.  Over "tcp" (one connection per pair) a frame of 256 KiB grew
// the ring to 512 KiB at least; once the peer confirmed every frame
// (which a frame it sent after taking the message says: the barrier's),
// the ring holds only what followed, and a trim then gives nothing more.
// The peer may confirm the last chunk after our wait for pending sends
// returns (the message was complete with that chunk read, before its
// frame was handled), so the first trim may leave that chunk.  Without
// heartbeats, so that no idle connection trims its own ring meanwhile.
enum { TRIM_LEN = 3 << 20 };

static void trim_setup(tw_desc *d, void *arg)
{
	(void)arg;
	tw_desc_set(d, TW_OPT_HEARTBEAT_MS, 0);
}

static int body_trim(conf_party *p)
{
	size_t peer = 1 - p->rank;
	CHECK(p, tw_link_trim(NULL) == 0);
	unsigned char *buf = malloc(TRIM_LEN);
	CHECK(p, buf != NULL);
	bool tcp = strcmp(tp->name, "tcp") == 0;
	bool grows = tcp || strcmp(tp->name, "tcpstripes") == 0;
	for (uint32_t round = 0; round < 2; round++) {
		conf_fill(buf, TRIM_LEN, round, (uint32_t)p->rank, 12);
		CHECK_OK(p, tw_send_async(p->link, peer, "t", buf, TRIM_LEN));
		size_t len;
		CHECK_OK(
		    p, tw_recv_into(p->link, peer, "t", buf, TRIM_LEN, &len));
		CHECK(p, len == TRIM_LEN);
		CHECK(p, conf_check(buf, len, round, (uint32_t)peer, 12));
		CHECK_OK(p, tw_link_wait_pending(p->link));
		size_t freed = tw_link_trim(p->link);
		CHECK_OK(p, sync_all(p));
		freed += tw_link_trim(p->link);
		if (tcp)
			CHECK(p, freed >= (size_t)(448 << 10));
		else if (!grows)
			CHECK(p, freed == 0);
		CHECK(p, !tcp || tw_link_trim(p->link) == 0);
	}
	free(buf);
	CHECK_OK(p, sync_all(p));
	return 0;
}

static void t_trim(void **state)
{
	run(2, 0, trim_setup, body_trim, NULL);
}

// --- collectives ---------------------------------------------------------------

static size_t glen(size_t rank, size_t root)
{
	return (rank * 13 + root) % 50;
}

static int body_collectives(conf_party *p)
{
	tw_link *l = p->link;
	size_t n = p->size, r = p->rank;
	tw_buf *v = calloc(n, sizeof(*v));
	unsigned char buf[256];
	CHECK(p, v != NULL);
	CHECK_OK(p, tw_barrier(l, "b"));
	CHECK_OK(p, tw_barrier(l, "b")); // the same tag twice in a row
	for (size_t root = 0; root < n; root++) {
		tw_buf io = { 0 };
		size_t len = root * 37 % 200;
		if (r == root) {
			conf_fill(buf, len, (uint32_t)root, 0, 1);
			io = (tw_buf) { len ? buf : NULL, len };
		}
		CHECK_OK(p, tw_broadcast(l, root, "bc", &io));
		CHECK(p,
		    io.len == len
		        && conf_check(io.data, len, (uint32_t)root, 0, 1));
		if (r != root)
			tw_buf_free(&io);

		len = glen(r, root);
		conf_fill(buf, len, (uint32_t)r, (uint32_t)root, 2);
		CHECK_OK(p,
		    tw_gather(l, root, "g", buf, len, r == root ? v : NULL));
		if (r == root) {
			for (size_t i = 0; i < n; i++) {
				CHECK(p, v[i].len == glen(i, root));
				CHECK(p,
				    conf_check(v[i].data, v[i].len,
				        (uint32_t)i, (uint32_t)root, 2));
				tw_buf_free(&v[i]);
			}
		}

		tw_buf in[8], out = { 0 };
		if (r == root) {
			for (size_t i = 0; i < n; i++) {
				in[i].len = (i * 7 + root) % 23;
				in[i].data = malloc(in[i].len + 1);
				conf_fill(in[i].data, in[i].len, (uint32_t)i,
				    (uint32_t)root, 3);
			}
		}
		CHECK_OK(
		    p, tw_scatter(l, root, "s", r == root ? in : NULL, &out));
		CHECK(p, out.len == (r * 7 + root) % 23);
		CHECK(p,
		    conf_check(
		        out.data, out.len, (uint32_t)r, (uint32_t)root, 3));
		tw_buf_free(&out);
		if (r == root)
			for (size_t i = 0; i < n; i++)
				free(in[i].data);
	}
	size_t len = r * 29 % 41;
	conf_fill(buf, len, (uint32_t)r, 0, 4);
	CHECK_OK(p, tw_allgather(l, "ag", buf, len, v));
	for (size_t i = 0; i < n; i++) {
		CHECK(p, v[i].len == i * 29 % 41);
		CHECK(p, conf_check(v[i].data, v[i].len, (uint32_t)i, 0, 4));
		tw_buf_free(&v[i]);
	}
	// A large allgather crosses many rounds with real payloads.
	size_t big = 100000 + r;
	unsigned char *bb = malloc(big);
	conf_fill(bb, big, (uint32_t)r, 1, 5);
	CHECK_OK(p, tw_allgather(l, "ag", bb, big, v));
	free(bb);
	for (size_t i = 0; i < n; i++) {
		CHECK(p, v[i].len == 100000 + i);
		CHECK(p, conf_check(v[i].data, v[i].len, (uint32_t)i, 1, 5));
		tw_buf_free(&v[i]);
	}
	free(v);
	tw_stats st;
	tw_link_stats(l, &st);
	CHECK(p, st.msgs_sent == 0 && st.msgs_recv == 0); // never counted
	return 0;
}

static void t_collectives(void **state)
{
	for (size_t n = 1; n <= 8; n++)
		run(n, 0, NULL, body_collectives, NULL);
}

static int body_coll_mixed(conf_party *p)
{
	tw_link *l = p->link;
	size_t n = p->size, r = p->rank;
	tw_buf v[3], b = { 0 };
	if (r == 0) {
		CHECK_OK(p, tw_send(l, 1, "x", "p2p", 3));
		CHECK_OK(p, tw_send(l, 2, "x", "p2p", 3));
	}
	CHECK_OK(p, tw_allgather(l, "x", "ag", 2, v));
	for (size_t i = 0; i < n; i++) {
		CHECK(p, v[i].len == 2 && memcmp(v[i].data, "ag", 2) == 0);
		tw_buf_free(&v[i]);
	}
	tw_buf io = { r == 0 ? "bc" : NULL, r == 0 ? 2 : 0 };
	CHECK_OK(p, tw_broadcast(l, 0, "x", &io));
	CHECK(p, io.len == 2 && memcmp(io.data, "bc", 2) == 0);
	if (r != 0)
		tw_buf_free(&io);
	CHECK_OK(p, tw_barrier(l, "x"));
	tw_stats st;
	if (r != 0) {
		CHECK_OK(p, tw_recv(l, 0, "x", &b));
		CHECK(p, b.len == 3 && memcmp(b.data, "p2p", 3) == 0);
		tw_buf_free(&b);
		tw_link_stats(l, &st);
		CHECK(p, st.msgs_recv == 1 && st.bytes_recv == 3);
		CHECK(p, st.msgs_sent == 0 && st.bytes_sent == 0);
	} else {
		tw_link_stats(l, &st);
		CHECK(p, st.msgs_sent == 2 && st.bytes_sent == 6);
		CHECK(p, st.msgs_recv == 0);
	}
	CHECK_OK(p, sync_all(p));
	return 0;
}

static void t_coll_mixed(void **state)
{
	run(3, 0, NULL, body_coll_mixed, NULL);
}

// Collectives under a TW_OPT_MAX_MSG_SIZE of 64 KiB with contributions at
// and just under it: every message they send must fit (a receiver refuses
// a larger one, and tcp:// and shm:// drop the peer for it).  Allgather's
// rounds carry several blocks, so they must be cut.  A contribution over
// the limit is TW_ETOOBIG and sends nothing: the same tags then work.
enum { CM_MAX = 64 * 1024, CM_N = 4 };

static void setup_coll_max(tw_desc *d, void *arg)
{
	tw_desc_set(d, TW_OPT_MAX_MSG_SIZE, CM_MAX);
}

// The contribution of `rank` to collective k: the limit itself for rank 0
// of the first one, just under it otherwise.
static size_t cm_len(size_t rank, uint32_t k)
{
	return CM_MAX - (rank * 7 + k * 3) % 29;
}

// A buffer of len bytes of the pattern of (i, k).
static bool alloc_filled(tw_buf *b, size_t len, size_t i, uint32_t k)
{
	b->len = len;
	b->data = malloc(len);
	if (b->data != NULL)
		conf_fill(b->data, len, (uint32_t)i, k, 21);
	return b->data != NULL;
}

static int cm_check_all(conf_party *p, tw_buf *v, uint32_t k, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		CHECK(p, v[i].len == cm_len(i, k));
		CHECK(p, conf_check(v[i].data, v[i].len, (uint32_t)i, k, 21));
		tw_buf_free(&v[i]);
	}
	return 0;
}

static int body_coll_max_msg(conf_party *p)
{
	tw_link *l = p->link;
	size_t n = p->size, r = p->rank;
	static _Thread_local unsigned char buf[CM_MAX + 1];
	tw_buf v[CM_N], in[CM_N], out = { 0 };
	uint32_t k = 0;
	// Allgather, with the contributions of the report (40 KB: two blocks
	// in Bruck's second round are 80 KB) and at the limit.
	size_t len = 40000 + r;
	conf_fill(buf, len, (uint32_t)r, 99, 21);
	CHECK_OK(p, tw_allgather(l, "ag", buf, len, v));
	for (size_t i = 0; i < n; i++) {
		CHECK(p, v[i].len == 40000 + i);
		CHECK(p, conf_check(v[i].data, v[i].len, (uint32_t)i, 99, 21));
		tw_buf_free(&v[i]);
	}
	conf_fill(buf, cm_len(r, k), (uint32_t)r, k, 21);
	CHECK_OK(p, tw_allgather(l, "ag", buf, cm_len(r, k), v));
	CHECK(p, cm_check_all(p, v, k, n) == 0);
	for (size_t root = 0; root < n; root++) {
		k++;
		conf_fill(buf, cm_len(r, k), (uint32_t)r, k, 21);
		CHECK_OK(p,
		    tw_gather(l, root, "g", buf, cm_len(r, k),
		        r == root ? v : NULL));
		if (r == root)
			CHECK(p, cm_check_all(p, v, k, n) == 0);

		k++;
		tw_buf io = { 0 };
		if (r == root) {
			conf_fill(buf, cm_len(root, k), (uint32_t)root, k, 21);
			io = (tw_buf) { buf, cm_len(root, k) };
		}
		CHECK_OK(p, tw_broadcast(l, root, "b", &io));
		CHECK(p, io.len == cm_len(root, k));
		CHECK(p, conf_check(io.data, io.len, (uint32_t)root, k, 21));
		if (r != root)
			tw_buf_free(&io);

		k++;
		if (r == root) {
			for (size_t i = 0; i < n; i++) {
				CHECK(p,
				    alloc_filled(&in[i], cm_len(i, k), i, k));
			}
		}
		CHECK_OK(
		    p, tw_scatter(l, root, "s", r == root ? in : NULL, &out));
		CHECK(p, out.len == cm_len(r, k));
		CHECK(p, conf_check(out.data, out.len, (uint32_t)r, k, 21));
		tw_buf_free(&out);
		if (r == root)
			for (size_t i = 0; i < n; i++)
				tw_buf_free(&in[i]);
	}
	// Over the limit: refused before anything is sent.  Every party
	// calls the collectives where each party checks its own
	// contribution, only the root those where the root's data is all.
	CHECK_RV(p, tw_allgather(l, "big", buf, CM_MAX + 1, v), TW_ETOOBIG);
	CHECK_RV(p, tw_gather(l, 0, "big", buf, CM_MAX + 1, r == 0 ? v : NULL),
	    TW_ETOOBIG);
	if (r == 0) {
		tw_buf io = { buf, CM_MAX + 1 };
		CHECK_RV(p, tw_broadcast(l, 0, "big", &io), TW_ETOOBIG);
		for (size_t i = 0; i < n; i++)
			in[i] = (tw_buf) { buf, i == n - 1 ? CM_MAX + 1 : 1 };
		CHECK_RV(p, tw_scatter(l, 0, "big", in, &out), TW_ETOOBIG);
	}
	// Nothing was left behind under those tags.
	k++;
	conf_fill(buf, 5, (uint32_t)r, k, 21);
	CHECK_OK(p, tw_allgather(l, "big", buf, 5, v));
	for (size_t i = 0; i < n; i++) {
		CHECK(p, v[i].len == 5);
		CHECK(p, conf_check(v[i].data, 5, (uint32_t)i, k, 21));
		tw_buf_free(&v[i]);
	}
	CHECK_OK(p, tw_gather(l, 0, "big", buf, 5, r == 0 ? v : NULL));
	if (r == 0) {
		for (size_t i = 0; i < n; i++) {
			CHECK(p, v[i].len == 5);
			CHECK(p, conf_check(v[i].data, 5, (uint32_t)i, k, 21));
			tw_buf_free(&v[i]);
		}
	}
	tw_buf io = { r == 0 ? buf : NULL, r == 0 ? 5 : 0 };
	CHECK_OK(p, tw_broadcast(l, 0, "big", &io));
	CHECK(p, io.len == 5 && conf_check(io.data, 5, 0, k, 21));
	if (r != 0)
		tw_buf_free(&io);
	if (r == 0)
		for (size_t i = 0; i < n; i++)
			in[i] = (tw_buf) { buf, 5 };
	CHECK_OK(p, tw_scatter(l, 0, "big", r == 0 ? in : NULL, &out));
	CHECK(p, out.len == 5 && conf_check(out.data, 5, 0, k, 21));
	tw_buf_free(&out);
	CHECK_OK(p, sync_all(p));
	return 0;
}

// Limits smaller than a block's length field: the pieces split lengths,
// and a limit of 0 leaves only empty contributions.
static void setup_tiny_max(tw_desc *d, void *arg)
{
	tw_desc_set(d, TW_OPT_MAX_MSG_SIZE, *(int64_t *)arg);
}

static int body_coll_tiny_max(conf_party *p)
{
	size_t max = (size_t) * (int64_t *)p->arg;
	size_t n = p->size, r = p->rank;
	unsigned char buf[8];
	tw_buf v[8];
	for (uint32_t k = 0; k < 3; k++) {
		size_t len = (r * 3 + k) % (max + 1);
		conf_fill(buf, len, (uint32_t)r, k, 22);
		CHECK_OK(p, tw_allgather(p->link, "t", buf, len, v));
		for (size_t i = 0; i < n; i++) {
			CHECK(p, v[i].len == (i * 3 + k) % (max + 1));
			CHECK(p,
			    conf_check(
			        v[i].data, v[i].len, (uint32_t)i, k, 22));
			tw_buf_free(&v[i]);
		}
	}
	CHECK_RV(p, tw_allgather(p->link, "t", buf, max + 1, v), TW_ETOOBIG);
	return 0;
}

static void t_coll_max_msg(void **state)
{
	run(CM_N, 0, setup_coll_max, body_coll_max_msg, NULL);
	static int64_t tiny[] = { 0, 1, 5, 8 };
	for (size_t i = 0; i < sizeof(tiny) / sizeof(tiny[0]); i++)
		run(5, 0, setup_tiny_max, body_coll_tiny_max, &tiny[i]);
}

// Both algorithms of allgather and broadcast, chosen by size around each
// threshold and forced at sizes far from it (TAGWIRE_COLL_FORCE), with
// every root, blocks that differ by rank (some on each side of a
// threshold), segments that do not divide evenly, ring blocks of several
// pieces, and limits that cut headers and blocks.  Every byte is checked.
typedef struct ca_arg {
	const char *force; // TAGWIRE_COLL_FORCE, NULL for the choice by size
	int64_t max; // TW_OPT_MAX_MSG_SIZE, -1 for the default
	const size_t *sizes;
	size_t nsizes;
	// Large data at a threshold: each size once, as rank-dependent
	// allgather blocks (one below, at and one above it) and as one
	// broadcast from root s % n, not from every root.
	bool edges;
	bool no_allgather; // broadcasts only
} ca_arg;

static void setup_coll_algos(tw_desc *d, void *arg)
{
	const ca_arg *a = arg;
	if (a->max >= 0)
		tw_desc_set(d, TW_OPT_MAX_MSG_SIZE, a->max);
}

// Rank i's allgather block around `base`: one below, at or one above it,
// by rank, never over the limit.
static size_t ca_len(size_t base, size_t i, size_t max)
{
	size_t len = base + i % 3 > 0 ? base + i % 3 - 1 : 0;
	return len > max ? max : len;
}

static int body_coll_algos(conf_party *p)
{
	const ca_arg *a = p->arg;
	tw_link *l = p->link;
	size_t n = p->size, r = p->rank;
	size_t max = a->max >= 0 ? (size_t)a->max : SIZE_MAX;
	tw_buf *v = calloc(n, sizeof(*v));
	CHECK(p, v != NULL);
	for (size_t s = 0; s < a->nsizes; s++) {
		size_t base = a->sizes[s];
		uint32_t k = (uint32_t)s;
		for (int uniform = 0;
		     uniform < 2 - a->edges && !a->no_allgather; uniform++) {
			size_t len = uniform ? base : ca_len(base, r, max);
			unsigned char *buf = malloc(len + 1);
			CHECK(p, buf != NULL);
			conf_fill(buf, len, (uint32_t)r, k, 31 + uniform);
			CHECK_OK(p, tw_allgather(l, "ag", buf, len, v));
			free(buf);
			for (size_t i = 0; i < n; i++) {
				size_t want
				    = uniform ? base : ca_len(base, i, max);
				CHECK(p, v[i].len == want);
				CHECK(p,
				    conf_check(v[i].data, want, (uint32_t)i, k,
				        31 + uniform));
				tw_buf_free(&v[i]);
			}
		}
		for (size_t root = 0; root < n; root++) {
			tw_buf io = { 0 };
			if (a->edges && root != s % n)
				continue;
			if (r == root) {
				io.len = base;
				io.data = malloc(base + 1);
				CHECK(p, io.data != NULL);
				conf_fill(
				    io.data, base, (uint32_t)root, k, 33);
			}
			CHECK_OK(p, tw_broadcast(l, root, "bc", &io));
			CHECK(p, io.len == base);
			CHECK(p,
			    conf_check(io.data, base, (uint32_t)root, k, 33));
			if (r == root)
				free(io.data);
			else
				tw_buf_free(&io);
		}
	}
	free(v);
	CHECK_OK(p, sync_all(p));
	return 0;
}

static void run_algos(const size_t *ns, size_t nn, ca_arg *a)
{
	if (a->force != NULL)
		setenv("TAGWIRE_COLL_FORCE", a->force, 1);
	else
		unsetenv("TAGWIRE_COLL_FORCE");
	for (size_t i = 0; i < nn; i++)
		run(ns[i], 0, setup_coll_algos, body_coll_algos, a);
	unsetenv("TAGWIRE_COLL_FORCE");
}

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

static void t_coll_algos(void **state)
{
	enum {
		AG = TW__COLL_AG_LARGE,
		BC = TW__COLL_BC_LARGE,
		CH = TW__COLL_RING_CHUNK,
	};
	unsetenv("TAGWIRE_COLL_FORCE");
	assert_string_equal(
	    tw__coll_algo(TW__COLL_ALLGATHER, 5, AG - 1), "bruck");
	assert_string_equal(tw__coll_algo(TW__COLL_ALLGATHER, 5, AG), "ring");
	assert_string_equal(
	    tw__coll_algo(TW__COLL_BCAST, 5, BC - 1), "binomial");
	assert_string_equal(
	    tw__coll_algo(TW__COLL_BCAST, 5, BC), "scatter-ring");
	assert_string_equal(tw__coll_algo(TW__COLL_BCAST, 2, BC), "binomial");

	// Every party count with small data; then large data just below,
	// at and above each threshold.
	static const size_t ns[] = { 1, 2, 3, 5, 7, 16 };
	static const size_t few[] = { 0, 1, 1000 };
	ca_arg a = { NULL, -1, few, NELEMS(few), false, false };
	run_algos(ns, NELEMS(ns), &a);
	static const size_t n3[] = { 3 }, n5[] = { 5 };
	static const size_t ag_edge[] = { AG };
	ca_arg e = { NULL, -1, ag_edge, 1, true, false };
	run_algos(n3, 1, &e);
	static const size_t bc_edges[] = { BC - 1, BC, BC + 1 };
	ca_arg eb = { NULL, -1, bc_edges, NELEMS(bc_edges), true, true };
	run_algos(n3, 1, &eb);

	// Forced: main's algorithms with large data, the large ones with
	// small data (segments shorter than a party count leave some empty)
	// and with ring blocks and tree bodies of several pieces.
	static const size_t big[] = { CH + 1 };
	ca_arg small = { "small", -1, big, NELEMS(big), false, false };
	run_algos(n5, 1, &small);
	static const size_t nl[] = { 2, 3, 5, 7 };
	static const size_t tiny[] = { 0, 1, 2, 3, 7, 100, 1001 };
	ca_arg large = { "large", -1, tiny, NELEMS(tiny), false, false };
	run_algos(nl, NELEMS(nl), &large);
	static const size_t n16[] = { 16 };
	static const size_t tiny16[] = { 7, 1001 };
	ca_arg large16 = { "large", -1, tiny16, NELEMS(tiny16), true, false };
	run_algos(n16, 1, &large16);
	static const size_t pieces[] = { 2 * CH + 3 };
	ca_arg multi = { "large", -1, pieces, NELEMS(pieces), true, false };
	run_algos(n5, 1, &multi);

	// Limits below a block and below a header: every stream is cut.
	static const size_t n35[] = { 3, 5 };
	static const size_t at1000[] = { 0, 1, 999, 1000 };
	ca_arg l1000 = { "large", 1000, at1000, NELEMS(at1000), false, false };
	run_algos(n35, NELEMS(n35), &l1000);
	ca_arg a1000 = { NULL, 1000, at1000, NELEMS(at1000), false, false };
	run_algos(n35, NELEMS(n35), &a1000);
	static const size_t at5[] = { 0, 1, 4, 5 };
	ca_arg l5 = { "large", 5, at5, NELEMS(at5), false, false };
	run_algos(n35, NELEMS(n35), &l5);
	static const size_t at0[] = { 0 };
	ca_arg l0 = { "large", 0, at0, 1, false, false };
	run_algos(n35, NELEMS(n35), &l0);
}

// Many parties on few CPUs: every pair talks both ways, in messages that
// are empty, chunked and large (single-copy where the transport has it),
// under a receive buffer smaller than what each peer sends, while each
// receiver takes its peers one after the other in reverse rank order: most
// senders are held back by flow control meanwhile.  Sends run on a thread
// of their own, so that no order of sends and receives can deadlock.
enum { MANY_N = 16, MANY_MSGS = 3, MANY_BUF = 32 * 1024 };

static size_t many_len(size_t from, size_t to, uint32_t k)
{
	static const size_t base[MANY_MSGS] = { 0, 9000, 70000 };
	return k == 0 ? 0 : base[k] + from * 131 + to * 7;
}

static void setup_many(tw_desc *d, void *arg)
{
	(void)arg;
	tw_desc_set(d, TW_OPT_RECV_BUFFER, MANY_BUF);
}

typedef struct many_tx {
	conf_party *p;
	int rv;
} many_tx;

static void *many_send(void *arg)
{
	many_tx *t = arg;
	conf_party *p = t->p;
	size_t n = p->size, r = p->rank;
	unsigned char *buf = malloc(many_len(n, n, MANY_MSGS - 1));
	t->rv = buf == NULL ? TW_ENOMEM : TW_OK;
	for (size_t d = 1; d < n && t->rv == TW_OK; d++) {
		size_t to = (r + d) % n;
		for (uint32_t k = 0; k < MANY_MSGS && t->rv == TW_OK; k++) {
			size_t len = many_len(r, to, k);
			conf_fill(buf, len, (uint32_t)r, (uint32_t)to, k);
			t->rv = tw_send(p->link, to, "many", buf, len);
		}
	}
	free(buf);
	return NULL;
}

static int body_many_parties(conf_party *p)
{
	tw_link *l = p->link;
	size_t n = p->size, r = p->rank;
	many_tx t = { p, TW_OK };
	pthread_t th;
	CHECK(p, pthread_create(&th, NULL, many_send, &t) == 0);
	int rv = TW_OK;
	for (size_t d = 1; d < n && rv == TW_OK; d++) {
		size_t from = (r + n - d) % n;
		for (uint32_t k = 0; k < MANY_MSGS && rv == TW_OK; k++) {
			tw_buf b = { 0 };
			rv = tw_recv(l, from, "many", &b);
			if (rv == TW_OK
			    && (b.len != many_len(from, r, k)
			        || !conf_check(b.data, b.len, (uint32_t)from,
			            (uint32_t)r, k)))
				rv = TW_EPROTO;
			tw_buf_free(&b);
		}
	}
	pthread_join(th, NULL);
	CHECK_OK(p, rv);
	CHECK_OK(p, t.rv);
	if (p->tp->builtin)
		for (size_t i = 0; i < n; i++)
			if (i != r)
				CHECK(p,
				    tw__link_unreceived_peak(l, i) <= MANY_BUF
				            + many_len(n, n, 2) + 4096);
	uint32_t mine = (uint32_t)(r * 2654435761u);
	tw_buf v[MANY_N];
	CHECK_OK(p, tw_allgather(l, "many.ag", &mine, sizeof(mine), v));
	for (size_t i = 0; i < n; i++) {
		CHECK(p,
		    v[i].len == sizeof(mine)
		        && *(uint32_t *)v[i].data
		            == (uint32_t)(i * 2654435761u));
		tw_buf_free(&v[i]);
	}
	return 0;
}

static void t_many_parties(void **state)
{
	(void)state;
	run(MANY_N, 0, setup_many, body_many_parties, NULL);
}

#define CASE(name) cmocka_unit_test(t_##name)

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s mem|chan [case]\n", argv[0]);
		return 2;
	}
	for (size_t i = 0; i < sizeof(transports) / sizeof(*transports); i++)
		if (strcmp(argv[1], transports[i].name) == 0)
			tp = &transports[i];
	if (tp == NULL) {
		fprintf(stderr, "unknown transport %s\n", argv[1]);
		return 2;
	}
	if (tp->env != NULL)
		putenv((char *)tp->env);
	const struct CMUnitTest tests[] = {
		CASE(create_any_order),
		CASE(connect_timeout),
		CASE(fifo),
		CASE(fifo_runs),
		CASE(exactly_once),
		CASE(recv_timeout),
		CASE(recv_into_trunc),
		CASE(probe),
		CASE(zero_length),
		CASE(invalid_args),
		CASE(abort),
		CASE(abort_child),
		CASE(peer_closed),
		CASE(spawn_sub),
		CASE(close_child),
		CASE(child_churn),
		CASE(wait_pending),
		CASE(wait_pending_long),
		CASE(posted_long),
		CASE(posted_short),
		CASE(stats_threads),
		CASE(throttle),
		CASE(throttle_mixed),
		CASE(flow_control),
		CASE(flow_empty),
		CASE(async_flow),
		CASE(large),
		CASE(trim),
		CASE(collectives),
		CASE(coll_mixed),
		CASE(coll_max_msg),
		CASE(coll_algos),
		CASE(many_parties),
	};
	size_t count = sizeof(tests) / sizeof(tests[0]);
	if (argc > 2 && tw_test_select(tests, count, "t_", argv[2]) != 0)
		return 1;
	if (argc > 3 && strcmp(argv[3], "onecpu") == 0) {
		cpu_set_t set;
		if (sched_getaffinity(0, sizeof(set), &set) != 0)
			return 1;
		int first = 0;
		while (first < CPU_SETSIZE && !CPU_ISSET(first, &set))
			first++;
		CPU_ZERO(&set);
		CPU_SET(first, &set);
		if (sched_setaffinity(0, sizeof(set), &set) != 0)
			return 1;
	}
	return cmocka_run_group_tests_name(tp->name, tests, NULL, NULL);
}
