// How many sockets tcp:// holds per process.  Three parties, each a forked
// process on 127.0.0.1 with its own port, create two links with different
// ids over the same addresses (a and b) and a child of a (tw_link_spawn),
// exchange messages on each, and count their own TCP sockets from /proc
// (proccount.h) twice:
//
//   stage 1  link a alone, after small messages and 4 MiB to every peer;
//   stage 2  links a, b and a's child, after the same on each of them.
//
// At both stages each process must hold exactly one listening socket, on
// its own port (shared by every link), and exactly TW_OPT_STRIPES
// established connections to each peer process, whatever the number of
// links, and no other established connection.  Each process reports its
// snapshots on a pipe; the parent matches them (a connection that one
// process accepted is found in the other's snapshot by its ports), prints
// the counts and asserts.  Only the public API is used.
//
// ctest entries: tcpconn_stripes_1 and tcpconn_stripes_2 (S = 1 and 2).

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "proccount.h"
#include "testdata.h"
#include "testutil.h"

#define NPARTY 3
#define BULK ((size_t)4 << 20)
#define ATTEMPTS 3
#define CHILD_ALARM_S 50

enum { STAGE_A, STAGE_ALL, NSTAGE };
static const char *const stage_name[NSTAGE] = {
	"link a alone",
	"links a, b and a/kid",
};

// What a party sends its parent once it is done (or failed).
typedef struct report {
	int status; // 0: ok; 1: failed (err says why); 2: port taken
	char err[256];
	pc_snap snap[NSTAGE];
} report;

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_PORT_TAKEN = 2 };

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

// ---------------------------------------------------------------------------
// One party (a forked child)
// ---------------------------------------------------------------------------

static size_t me;
static int report_fd = -1;
static report rep;

static void send_report_and_exit(int code)
{
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
	_exit(code);
}

static void child_fail(int code, const char *fmt, ...)
{
	int n = snprintf(rep.err, sizeof(rep.err), "rank %zu: ", me);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(rep.err + n, sizeof(rep.err) - (size_t)n, fmt, ap);
	va_end(ap);
	send_report_and_exit(code);
}

#define C_OK(expr)                                                            \
	do {                                                                  \
		int rv_ = (expr);                                             \
		if (rv_ != TW_OK)                                             \
			child_fail(EXIT_FAILED, "line %d: %s: got %s",        \
			    __LINE__, #expr, tw_err_name(rv_));               \
	} while (0)

static void expect_fill(const char *what, size_t from, const tw_buf *got,
    size_t len, uint32_t a, uint32_t b, uint32_t c)
{
	if (got->len != len)
		child_fail(EXIT_FAILED,
		    "%s from rank %zu: %zu bytes, want %zu", what, from,
		    got->len, len);
	unsigned char *want = malloc(len > 0 ? len : 1);
	if (want == NULL)
		child_fail(EXIT_FAILED, "out of memory");
	tw_test_fill(want, len, a, b, c);
	if (len > 0 && memcmp(got->data, want, len) != 0)
		child_fail(EXIT_FAILED, "%s from rank %zu: wrong contents",
		    what, from);
	free(want);
}

// A small message and BULK bytes to every peer, then the same from every
// peer, checked.  `salt` differs per link and round, and every link uses
// the same tag, so a message that crossed links would fail the check.
static void exchange(tw_link *l, uint32_t salt)
{
	unsigned char small[128];
	unsigned char *bulk = malloc(BULK);
	if (bulk == NULL)
		child_fail(EXIT_FAILED, "out of memory");
	for (size_t j = 0; j < NPARTY; j++) {
		if (j == me)
			continue;
		size_t len = 64 + 10 * me + j;
		tw_test_fill(small, len, (uint32_t)me, (uint32_t)j, salt);
		C_OK(tw_send(l, j, "x", small, len));
		tw_test_fill(
		    bulk, BULK, (uint32_t)me, (uint32_t)j, salt + 1000);
		C_OK(tw_send(l, j, "x", bulk, BULK));
	}
	free(bulk);
	for (size_t j = 0; j < NPARTY; j++) {
		if (j == me)
			continue;
		tw_buf got = { NULL, 0 };
		C_OK(tw_recv(l, j, "x", &got));
		expect_fill("small message", j, &got, 64 + 10 * j + me,
		    (uint32_t)j, (uint32_t)me, salt);
		tw_buf_free(&got);
		C_OK(tw_recv(l, j, "x", &got));
		expect_fill("4 MiB message", j, &got, BULK, (uint32_t)j,
		    (uint32_t)me, salt + 1000);
		tw_buf_free(&got);
	}
}

// Takes the snapshot of `stage`.  Connections may still be settling (a
// stripe opened late, a duplicate being closed), so it retries for a
// while until this process alone looks right: one listener and 2 * S
// established connections.  The parent judges the last snapshot taken.
static void snapshot(int stage, size_t stripes)
{
	pc_snap *s = &rep.snap[stage];
	double deadline = now_ms() + (double)tw_test_scale_ms(3000);
	for (;;) {
		if (pc_snap_self(s) != 0)
			child_fail(EXIT_FAILED, "cannot read /proc: %s",
			    strerror(errno));
		if (pc_count_state(s, PC_TCP_LISTEN) == 1
		    && pc_count_state(s, PC_TCP_ESTABLISHED)
		        == (NPARTY - 1) * stripes)
			return;
		if (now_ms() > deadline)
			return;
		struct timespec ts = { 0, 20 * 1000000L };
		nanosleep(&ts, NULL);
	}
}

static tw_desc *make_desc(
    const char *id, const unsigned *ports, size_t stripes)
{
	tw_desc *d = tw_desc_new(id);
	if (d == NULL)
		child_fail(EXIT_FAILED, "tw_desc_new(%s) failed", id);
	for (size_t i = 0; i < NPARTY; i++) {
		char pid[16], addr[64];
		snprintf(pid, sizeof(pid), "p%zu", i);
		snprintf(addr, sizeof(addr), "tcp://127.0.0.1:%u", ports[i]);
		C_OK(tw_desc_add_party(d, pid, addr));
	}
	C_OK(tw_desc_set(d, TW_OPT_STRIPES, (int64_t)stripes));
	C_OK(tw_desc_set(
	    d, TW_OPT_CONNECT_TIMEOUT_MS, tw_test_scale_ms(10000)));
	C_OK(tw_desc_set(d, TW_OPT_RECV_TIMEOUT_MS, tw_test_scale_ms(10000)));
	return d;
}

static void close_ok(tw_link *l, const char *what)
{
	int rv = tw_link_close(l);
	if (rv != TW_OK && rv != TW_EPEER)
		child_fail(
		    EXIT_FAILED, "closing %s: got %s", what, tw_err_name(rv));
}

static void party_main(size_t rank, size_t stripes, const unsigned *ports)
{
	me = rank;
	tw_desc *da = make_desc("tcpconn.a", ports, stripes);
	tw_desc *db = make_desc("tcpconn.b", ports, stripes);
	tw_link *a = NULL, *b = NULL, *kid = NULL;

	int rv = tw_link_create(da, me, &a);
	if (rv == TW_ESYS) // most likely another process took the port
		child_fail(EXIT_PORT_TAKEN, "link a: TW_ESYS (port %u taken?)",
		    ports[me]);
	C_OK(rv);
	exchange(a, 1);
	C_OK(tw_barrier(a, "stage1"));
	snapshot(STAGE_A, stripes);
	// Nobody opens more links before every party has counted.
	C_OK(tw_barrier(a, "stage1-counted"));

	C_OK(tw_link_create(db, me, &b));
	C_OK(tw_link_spawn(a, "kid", &kid));
	if (strcmp(tw_link_id(kid), "tcpconn.a/kid") != 0)
		child_fail(EXIT_FAILED, "child link id '%s'", tw_link_id(kid));
	exchange(b, 2);
	exchange(kid, 3);
	exchange(a, 4);
	C_OK(tw_barrier(b, "stage2"));
	C_OK(tw_barrier(kid, "stage2"));
	C_OK(tw_barrier(a, "stage2"));
	snapshot(STAGE_ALL, stripes);
	// Nobody closes a connection before every party has counted.
	C_OK(tw_barrier(a, "stage2-counted"));

	close_ok(kid, "a/kid");
	close_ok(b, "b");
	close_ok(a, "a");
	tw_desc_free(da);
	tw_desc_free(db);
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
			assert_true(ports[i] != 0);
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

// Runs the three parties; each child's exit status and report land in
// out[].  Once one party failed the others are killed rather than left to
// time out.
static void run_parties(size_t stripes, const unsigned *ports, outcome *out)
{
	pid_t pids[NPARTY];
	int fds[NPARTY][2];
	memset(out, 0, NPARTY * sizeof(*out));
	fflush(NULL);
	pid_t parent = getpid();
	for (size_t i = 0; i < NPARTY; i++) {
		assert_int_equal(pipe(fds[i]), 0);
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != parent)
				_exit(EXIT_FAILED);
			alarm(CHILD_ALARM_S);
			for (size_t k = 0; k <= i; k++)
				close(fds[k][0]);
			report_fd = fds[i][1];
			party_main(i, stripes, ports);
			_exit(EXIT_FAILED); // not reached
		}
		close(fds[i][1]);
	}
	for (size_t done = 0; done < NPARTY; done++) {
		int st;
		pid_t pid = wait(&st);
		assert_true(pid > 0);
		size_t i = 0;
		while (i < NPARTY && pids[i] != pid)
			i++;
		assert_true(i < NPARTY);
		pids[i] = -1;
		out[i].how = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
		out[i].sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
		if (out[i].how != EXIT_OK)
			for (size_t j = 0; j < NPARTY; j++)
				if (pids[j] > 0)
					kill(pids[j], SIGKILL);
	}
	// The pipes hold the whole report (far below the pipe's capacity).
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

// Appends to the failure text.
static void addf(char *buf, size_t cap, const char *fmt, ...)
{
	size_t n = strlen(buf);
	if (n + 1 >= cap)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf + n, cap - n, fmt, ap);
	va_end(ap);
}

// Prints the counts of one stage and adds every mismatch to `fails`.
static void judge_stage(int stage, size_t stripes, const unsigned *ports,
    const outcome *out, char *fails, size_t cap)
{
	printf("stage %d (%s), TW_OPT_STRIPES=%zu:\n", stage + 1,
	    stage_name[stage], stripes);
	for (size_t x = 0; x < NPARTY; x++) {
		const pc_snap *sx = &out[x].rep.snap[stage];
		size_t listen = pc_count_state(sx, PC_TCP_LISTEN);
		size_t est = pc_count_state(sx, PC_TCP_ESTABLISHED);
		unsigned lport = 0;
		for (size_t i = 0; i < sx->n; i++)
			if (sx->s[i].state == PC_TCP_LISTEN)
				lport = sx->s[i].lport;
		printf("  rank %zu (port %u): %zu listening socket(s)", x,
		    ports[x], listen);
		if (listen > 0)
			printf(" (port %u)", lport);
		printf(", %zu established (", est);
		size_t matched = 0;
		for (size_t y = 0; y < NPARTY; y++) {
			if (y == x)
				continue;
			size_t c = pc_count_between(
			    sx, ports[x], &out[y].rep.snap[stage], ports[y]);
			matched += c;
			printf("%s%zu to rank %zu",
			    y == (x == 0 ? 1 : 0) ? "" : ", ", c, y);
			if (c != stripes)
				addf(fails, cap,
				    "stage %d: rank %zu holds %zu connections "
				    "to rank %zu, want %zu\n",
				    stage + 1, x, c, y, stripes);
		}
		printf(")\n");
		if (listen != 1)
			addf(fails, cap,
			    "stage %d: rank %zu holds %zu listening sockets, "
			    "want 1\n",
			    stage + 1, x, listen);
		else if (lport != ports[x])
			addf(fails, cap,
			    "stage %d: rank %zu listens on port %u, want %u\n",
			    stage + 1, x, lport, ports[x]);
		if (est != matched)
			addf(fails, cap,
			    "stage %d: rank %zu holds %zu established "
			    "connection(s) that lead to no peer\n",
			    stage + 1, x, est - matched);
		if (sx->truncated)
			addf(fails, cap,
			    "stage %d: rank %zu holds more than %d TCP "
			    "sockets\n",
			    stage + 1, x, PC_MAX_SOCKS);
	}
}

static void run_stripes(size_t stripes)
{
	outcome out[NPARTY];
	unsigned ports[NPARTY];
	for (int attempt = 1;; attempt++) {
		pick_ports(ports);
		run_parties(stripes, ports, out);
		bool taken = false;
		for (size_t i = 0; i < NPARTY; i++)
			taken = taken || out[i].how == EXIT_PORT_TAKEN;
		if (!taken || attempt == ATTEMPTS)
			break;
		printf("a port was taken before its party bound it; running "
		       "again with other ports\n");
	}

	char fails[4096] = "";
	for (size_t i = 0; i < NPARTY; i++) {
		if (out[i].how == EXIT_OK && out[i].have_rep)
			continue;
		if (out[i].how == EXIT_OK)
			addf(fails, sizeof(fails), "rank %zu: no report\n", i);
		else if (out[i].have_rep)
			addf(fails, sizeof(fails), "%s\n", out[i].rep.err);
		else if (out[i].sig == SIGALRM)
			addf(fails, sizeof(fails),
			    "rank %zu: still running after %d s\n", i,
			    CHILD_ALARM_S);
		else if (out[i].sig == SIGKILL)
			addf(fails, sizeof(fails),
			    "rank %zu: killed after another rank failed\n", i);
		else
			addf(fails, sizeof(fails),
			    "rank %zu: exit status %d, signal %d\n", i,
			    out[i].how, out[i].sig);
	}
	if (fails[0] != '\0')
		fail_msg("a party failed:\n%s", fails);
	for (int stage = 0; stage < NSTAGE; stage++)
		judge_stage(stage, stripes, ports, out, fails, sizeof(fails));
	fflush(stdout);
	if (fails[0] != '\0')
		fail_msg("wrong socket counts:\n%s", fails);
}

static void test_stripes_1(void **state)
{
	run_stripes(1);
}

static void test_stripes_2(void **state)
{
	run_stripes(2);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stripes_1),
		cmocka_unit_test(test_stripes_2),
	};
	if (argc > 1
	    && tw_test_select(
	           tests, sizeof(tests) / sizeof(tests[0]), "test_", argv[1])
	        != 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
