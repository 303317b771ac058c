// Links created from a root address instead of an address list
// (tw_desc_set_root, TAGWIRE_ROOT), between forked processes on loopback.
//
// Every party is a child forked before this process makes any thread; it
// sets its environment as a launcher would, runs tw_desc_from_env and
// tw_link_create, and exits with 100 + (-status) of the first call that
// failed, or 0 once its checks passed.  The parent waits for each child
// with a deadline and compares exit codes: nothing waits on a sleep.
//
//   four       TAGWIRE_ROOT, TAGWIRE_RANK/SIZE and a secret, 4 processes:
//              the link has 4 parties, an allgather of every rank's id and
//              a message around the ring arrive exactly, and each process
//              listens on one port only (the rendezvous's is the link's).
//   torchrun   RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, 4 processes.
//   launchers  TAGWIRE_ROOT, and each process the rank and size variables
//              of another launcher: mpirun's OMPI_COMM_WORLD_*, PMI_*,
//              srun's SLURM_PROCID/SLURM_NTASKS, torchrun's RANK/WORLD_SIZE.
//   started_late  rank 0 starts once the others are about to dial it.
//   size       rank 2 is told of 3 parties, the others of 4: rank 0 and
//              rank 2 fail with TW_EINVAL, the others fail too.
//   missing    3 parties expected, 2 started: both time out (TW_ETIMEDOUT).
//   tls        4 processes with TLS, each with the certificate of its
//              party id p<rank> (made at run time by the openssl command).
//   tls_name   rank 2 holds the certificate of p1: it cannot claim rank 2;
//              it fails and so do the others.
//   secret     rank 1 holds another secret: it never joins and fails with
//              TW_EAUTH (or TW_ETIMEDOUT: when rank 0 checks the proof
//              first it just closes, and rank 1 redials until its
//              timeout); the others time out.
//
// TW_OPT_SHM_LOCAL (SHM_LOCAL=1 in a child's environment sets it; the
// child checks which peers its link moved to shm://, EXPECT_SHM, a mask
// of ranks):
//   shm_hosts  4 processes that TAGWIRE_HOST_ID splits into two "hosts",
//              {0, 1} and {2, 3}: each pair within a host moves to shm://,
//              the pairs across stay on tcp://, and the ring and the
//              allgather cross both.
//   shm_tls    4 processes with TLS on one host: every pair moves.
//   shm_private 3 processes; rank 2 has a /dev/shm of its own (a mount
//              namespace with a fresh tmpfs there, as a container may):
//              the same host id, but neither side finds the other's
//              probe, so ranks 0 and 1 move to shm:// and rank 2 stays on
//              tcp:// with both.  Needs root (skipped otherwise).
//   shm_killed 3 processes on one host; rank 2 is killed (SIGKILL) once
//              its link is up: the others' allgather fails with TW_EPEER
//              well within their receive timeout, over shared memory.
//   shm_mismatch  rank 1 lacks the option: ranks 0 and 2 wait for its
//              hello until they time out (or see rank 1 leave when the
//              other gave up first), and rank 1 then finds its peers gone.

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "link/link_int.h"
#include "testdata.h"
#include "tls/certs.h"
#include "testutil.h"

#define MAXP 8

typedef struct party {
	const char *vars[12]; // NAME=VALUE
	bool late; // wait for the go-pipe before starting
} party;

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int code(int status)
{
	return status == TW_OK ? 0 : 100 - status;
}

// This process's listening tcp sockets, from /proc/net/tcp{,6}: one is
// what the shared port promises.
static int listening_sockets(void)
{
	int n = 0;
	const char *files[] = { "/proc/self/net/tcp", "/proc/self/net/tcp6" };
	// Inodes of this process's sockets.
	for (int f = 0; f < 2; f++) {
		FILE *fp = fopen(files[f], "r");
		if (fp == NULL)
			continue;
		char line[512];
		while (fgets(line, sizeof(line), fp) != NULL) {
			unsigned st;
			unsigned long inode;
			if (sscanf(line,
			        " %*d: %*64[0-9A-Fa-f]:%*x "
			        "%*64[0-9A-Fa-f]:%*x "
			        "%x %*x:%*x %*x:%*x %*x %*u %*u %lu",
			        &st, &inode)
			        != 2
			    || st != 0x0A)
				continue;
			// Ours when a descriptor of this process is it.
			char want[64];
			snprintf(want, sizeof(want), "socket:[%lu]", inode);
			for (int fd = 0; fd < 1024; fd++) {
				char path[64], target[64];
				snprintf(path, sizeof(path),
				    "/proc/self/fd/%d", fd);
				ssize_t k = readlink(
				    path, target, sizeof(target) - 1);
				if (k <= 0)
					continue;
				target[k] = '\0';
				if (strcmp(target, want) == 0) {
					n++;
					break;
				}
			}
		}
		fclose(fp);
	}
	return n;
}

// The traffic a link from a rendezvous must carry: everyone's id, and one
// message around the ring.
static int exercise(tw_link *l)
{
	size_t n = tw_link_size(l), me = tw_link_rank(l);
	char mine[32];
	snprintf(mine, sizeof(mine), "party-%zu", me);
	tw_buf parts[MAXP];
	int st = tw_allgather(l, "ids", mine, strlen(mine), parts);
	if (st != TW_OK)
		return st;
	for (size_t i = 0; i < n; i++) {
		char want[32];
		snprintf(want, sizeof(want), "party-%zu", i);
		if (parts[i].len != strlen(want)
		    || memcmp(parts[i].data, want, parts[i].len) != 0)
			st = TW_EPROTO;
		tw_buf_free(&parts[i]);
	}
	if (st != TW_OK)
		return st;
	size_t next = (me + 1) % n, prev = (me + n - 1) % n;
	if ((st = tw_send(l, next, "ring", mine, strlen(mine))) != TW_OK)
		return st;
	tw_buf b;
	if ((st = tw_recv(l, prev, "ring", &b)) != TW_OK)
		return st;
	char want[32];
	snprintf(want, sizeof(want), "party-%zu", prev);
	if (b.len != strlen(want) || memcmp(b.data, want, b.len) != 0)
		st = TW_EPROTO;
	tw_buf_free(&b);
	return st == TW_OK ? tw_barrier(l, "end") : st;
}

// A /dev/shm of this process's own: a new mount namespace with a fresh
// tmpfs there.  Exits 77 (skipped) where that is not allowed.
static void private_dev_shm(void)
{
	if (unshare(CLONE_NEWNS) != 0
	    || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0
	    || mount("tmpfs", "/dev/shm", "tmpfs", 0, "size=16m") != 0) {
		fprintf(stderr, "cannot make a private /dev/shm: %s\n",
		    strerror(errno));
		_exit(77);
	}
}

static void child(const party *p, int go_fd, int ready_fd, bool check_ports)
{
	for (size_t i = 0; p->vars[i] != NULL; i++)
		putenv((char *)p->vars[i]);
	if (getenv("PRIVATE_DEV_SHM") != NULL)
		private_dev_shm();
	if (p->late) {
		char c;
		if (read(go_fd, &c, 1) != 1)
			_exit(90);
	} else if (write(ready_fd, "r", 1) != 1) {
		_exit(90);
	}
	tw_desc *d;
	size_t rank;
	int st = tw_desc_from_env(&d, &rank);
	if (st != TW_OK)
		_exit(code(st));
	// Cases that end in a timeout take a short one.
	const char *ms = getenv("CONNECT_MS");
	if (ms != NULL
	    && (st = tw_desc_set(d, TW_OPT_CONNECT_TIMEOUT_MS, atoll(ms)))
	        != TW_OK)
		_exit(code(st));
	if (getenv("SHM_LOCAL") != NULL
	    && (st = tw_desc_set(d, TW_OPT_SHM_LOCAL, 1)) != TW_OK)
		_exit(code(st));
	tw_link *l = NULL;
	st = tw_link_create(d, rank, &l);
	tw_desc_free(d);
	if (st != TW_OK)
		_exit(code(st));
	if (tw_link_size(l) != (size_t)atoi(getenv("EXPECT_SIZE")))
		_exit(91);
	if (getenv("DIE_AFTER_CREATE") != NULL)
		raise(SIGKILL);
	const char *on_shm = getenv("EXPECT_SHM");
	for (size_t j = 0; on_shm != NULL && j < tw_link_size(l); j++) {
		bool want = (strtoul(on_shm, NULL, 0) >> j & 1) != 0;
		if (j != rank && tw__link_peer_on_shm(l, j) != want) {
			fprintf(stderr, "rank %zu: peer %zu %s shm://\n", rank,
			    j, want ? "not on" : "on");
			_exit(93);
		}
	}
	if (check_ports && listening_sockets() != 1) {
		fprintf(stderr, "rank %zu: %d listening sockets, want 1\n",
		    rank, listening_sockets());
		_exit(92);
	}
	st = exercise(l);
	if (st == TW_OK)
		st = tw_link_close(l);
	else
		tw_link_abort(l);
	_exit(code(st));
}

// Runs the parties; want[i] lists the exit codes accepted from party i
// (0-terminated; an empty list is { 0 }).
static void run(const party *ps, size_t n, const int want[][4],
    bool check_ports, int64_t timeout_ms)
{
	int go[2], ready[2];
	assert_int_equal(pipe(go), 0);
	assert_int_equal(pipe(ready), 0);
	pid_t kids[MAXP];
	fflush(NULL);
	pid_t parent = getpid();
	for (size_t i = 0; i < n; i++) {
		kids[i] = fork();
		assert_true(kids[i] >= 0);
		if (kids[i] == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != parent)
				_exit(89);
			close(go[1]);
			close(ready[0]);
			child(&ps[i], go[0], ready[1], check_ports);
		}
	}
	close(go[0]);
	close(ready[1]);
	// The late parties start once every other one is about to enter
	// tw_link_create: the others' first dials then likely meet a closed
	// port, and must retry.
	size_t late = 0;
	for (size_t i = 0; i < n; i++)
		late += ps[i].late;
	if (late > 0) {
		char c;
		for (size_t i = 0; i < n - late; i++)
			assert_int_equal(read(ready[0], &c, 1), 1);
		for (size_t i = 0; i < late; i++)
			assert_int_equal(write(go[1], "g", 1), 1);
	}
	int64_t deadline = now_ms() + tw_test_scale_ms(timeout_ms);
	int got[MAXP];
	size_t left = n;
	while (left > 0) {
		for (size_t i = 0; i < n; i++) {
			int st;
			if (kids[i] == 0
			    || waitpid(kids[i], &st, WNOHANG) != kids[i])
				continue;
			kids[i] = 0;
			left--;
			got[i] = WIFEXITED(st) ? WEXITSTATUS(st)
			                       : 1000 + WTERMSIG(st);
		}
		if (left > 0 && now_ms() > deadline) {
			for (size_t i = 0; i < n; i++)
				if (kids[i] > 0) {
					kill(kids[i], SIGKILL);
					waitpid(kids[i], NULL, 0);
				}
			fail_msg("parties still running after %lld ms",
			    (long long)timeout_ms);
		}
		if (left > 0) {
			struct timespec ts = { 0, 5000000 };
			nanosleep(
			    &ts, NULL); // polling the children, not syncing
		}
	}
	close(go[1]);
	close(ready[0]); // open until now: a child's write never meets EPIPE
	for (size_t i = 0; i < n; i++)
		fprintf(stderr, "party %zu exited with %d (%s)\n", i, got[i],
		    got[i] > 100 ? tw_err_name(100 - got[i]) : "-");
	for (size_t i = 0; i < n; i++)
		if (got[i] == 77)
			skip(); // the reason is on stderr
	for (size_t i = 0; i < n; i++) {
		bool ok = false;
		for (size_t k = 0; k < 4 && (k == 0 || want[i][k] != 0); k++)
			ok |= got[i] == want[i][k];
		if (!ok)
			fail_msg("party %zu exited with %d (%s), want %d", i,
			    got[i],
			    got[i] > 100 ? tw_err_name(100 - got[i]) : "-",
			    want[i][0]);
	}
}

// Every party exits 0.
static const int all_ok[MAXP][4];

static char root_var[64], master_port[32];

static void pick_root(void)
{
	unsigned port = tw_test_free_port();
	assert_true(port != 0);
	snprintf(root_var, sizeof(root_var), "TAGWIRE_ROOT=tcp://127.0.0.1:%u",
	    port);
	snprintf(master_port, sizeof(master_port), "MASTER_PORT=%u", port);
}

static const char *const ranks[] = { "TAGWIRE_RANK=0", "TAGWIRE_RANK=1",
	"TAGWIRE_RANK=2", "TAGWIRE_RANK=3" };

static void test_four(void **state)
{
	(void)state;
	pick_root();
	party ps[4];
	for (size_t i = 0; i < 4; i++)
		ps[i]
		    = (party) { .vars = { root_var, ranks[i], "TAGWIRE_SIZE=4",
			            "TAGWIRE_SECRET=rendezvous",
			            "EXPECT_SIZE=4", NULL } };
	run(ps, 4, all_ok, true, 60000);
}

static void test_torchrun(void **state)
{
	(void)state;
	pick_root();
	static const char *const r[]
	    = { "RANK=0", "RANK=1", "RANK=2", "RANK=3" };
	party ps[4];
	for (size_t i = 0; i < 4; i++)
		ps[i] = (party) { .vars
			= { r[i], "WORLD_SIZE=4", "MASTER_ADDR=127.0.0.1",
			    master_port, "EXPECT_SIZE=4", NULL } };
	run(ps, 4, all_ok, false, 60000);
}

static void test_launchers(void **state)
{
	(void)state;
	pick_root();
	static const char *const vars[4][2] = {
		{ "OMPI_COMM_WORLD_RANK=0", "OMPI_COMM_WORLD_SIZE=4" },
		{ "PMI_RANK=1", "PMI_SIZE=4" },
		{ "SLURM_PROCID=2", "SLURM_NTASKS=4" },
		{ "RANK=3", "WORLD_SIZE=4" },
	};
	party ps[4];
	for (size_t i = 0; i < 4; i++)
		ps[i] = (party) { .vars = { root_var, vars[i][0], vars[i][1],
			              "EXPECT_SIZE=4", NULL } };
	run(ps, 4, all_ok, false, 60000);
}

static void test_started_late(void **state)
{
	(void)state;
	pick_root();
	party ps[3];
	for (size_t i = 0; i < 3; i++)
		ps[i]
		    = (party) { .vars = { root_var, ranks[i], "TAGWIRE_SIZE=3",
			            "EXPECT_SIZE=3", NULL },
			      .late = i == 0 };
	run(ps, 3, all_ok, false, 60000);
}

#define E(st) (100 - (st))

static void test_size(void **state)
{
	(void)state;
	pick_root();
	party ps[4];
	for (size_t i = 0; i < 4; i++)
		ps[i] = (party) { .vars
			= { root_var, ranks[i],
			    i == 2 ? "TAGWIRE_SIZE=3" : "TAGWIRE_SIZE=4",
			    "EXPECT_SIZE=4", "CONNECT_MS=3000", NULL } };
	// Ranks 1 and 3 are told why when they reached rank 0 first, else
	// they find it gone.
	static const int want[4][4] = { { E(TW_EINVAL) },
		{ E(TW_EINVAL), E(TW_EPEER), E(TW_ETIMEDOUT) },
		{ E(TW_EINVAL) },
		{ E(TW_EINVAL), E(TW_EPEER), E(TW_ETIMEDOUT) } };
	run(ps, 4, want, false, 60000);
}

static void test_missing(void **state)
{
	(void)state;
	pick_root();
	party ps[2];
	for (size_t i = 0; i < 2; i++)
		ps[i] = (party) { .vars
			= { root_var, ranks[i], "TAGWIRE_SIZE=3",
			    "EXPECT_SIZE=3", "CONNECT_MS=1500", NULL } };
	static const int want[2][4]
	    = { { E(TW_ETIMEDOUT) }, { E(TW_ETIMEDOUT) } };
	run(ps, 2, want, false, 60000);
}

static void test_secret(void **state)
{
	(void)state;
	pick_root();
	party ps[3];
	for (size_t i = 0; i < 3; i++)
		ps[i] = (party) { .vars = { root_var, ranks[i],
			              "TAGWIRE_SIZE=3", "EXPECT_SIZE=3",
			              i == 1 ? "TAGWIRE_SECRET=wrong"
			                     : "TAGWIRE_SECRET=right",
			              "CONNECT_MS=2000", NULL } };
	static const int want[3][4]
	    = { { E(TW_ETIMEDOUT) }, { E(TW_EAUTH), E(TW_ETIMEDOUT) },
		      { E(TW_ETIMEDOUT), E(TW_EPEER) } };
	run(ps, 3, want, false, 60000);
}

static char tls_vars[4][3][320];

// TAGWIRE_TLS_* of a party holding the certificate of party `cert`.
static void tls_env(size_t rank, size_t cert)
{
	const char *dir = tw_certs_make();
	snprintf(tls_vars[rank][0], sizeof(tls_vars[0][0]),
	    "TAGWIRE_TLS_CERT=%s/p%zu.pem", dir, cert);
	snprintf(tls_vars[rank][1], sizeof(tls_vars[0][0]),
	    "TAGWIRE_TLS_KEY=%s/p%zu.key", dir, cert);
	snprintf(tls_vars[rank][2], sizeof(tls_vars[0][0]),
	    "TAGWIRE_TLS_CA=%s/ca.pem", dir);
}

static void test_tls(void **state)
{
	(void)state;
	pick_root();
	party ps[4];
	for (size_t i = 0; i < 4; i++) {
		tls_env(i, i);
		ps[i]
		    = (party) { .vars = { root_var, ranks[i], "TAGWIRE_SIZE=4",
			            tls_vars[i][0], tls_vars[i][1],
			            tls_vars[i][2], "EXPECT_SIZE=4", NULL } };
	}
	run(ps, 4, all_ok, false, 60000);
}

static void test_tls_name(void **state)
{
	(void)state;
	pick_root();
	party ps[3];
	for (size_t i = 0; i < 3; i++) {
		tls_env(i, i == 2 ? 1 : i);
		ps[i] = (party) { .vars
			= { root_var, ranks[i], "TAGWIRE_SIZE=3",
			    tls_vars[i][0], tls_vars[i][1], tls_vars[i][2],
			    "EXPECT_SIZE=3", "CONNECT_MS=2000", NULL } };
	}
	// Rank 2 is refused by whichever side checks the certificate first.
	static const int want[3][4]
	    = { { E(TW_ETIMEDOUT) }, { E(TW_ETIMEDOUT), E(TW_EPEER) },
		      { E(TW_EAUTH), E(TW_ETIMEDOUT), E(TW_EINVAL) } };
	run(ps, 3, want, false, 60000);
}

// Each party's peers on shm:// when ranks {0, 1} and {2, 3} share a host.
static const char *const host_pairs[4][2] = {
	{ "TAGWIRE_HOST_ID=host-a", "EXPECT_SHM=0x2" },
	{ "TAGWIRE_HOST_ID=host-a", "EXPECT_SHM=0x1" },
	{ "TAGWIRE_HOST_ID=host-b", "EXPECT_SHM=0x8" },
	{ "TAGWIRE_HOST_ID=host-b", "EXPECT_SHM=0x4" },
};

static void test_shm_hosts(void **state)
{
	(void)state;
	pick_root();
	party ps[4];
	for (size_t i = 0; i < 4; i++)
		ps[i]
		    = (party) { .vars = { root_var, ranks[i], "TAGWIRE_SIZE=4",
			            "TAGWIRE_SECRET=s", "SHM_LOCAL=1",
			            host_pairs[i][0], host_pairs[i][1],
			            "EXPECT_SIZE=4", NULL } };
	run(ps, 4, all_ok, false, 60000);
}

static void test_shm_tls(void **state)
{
	(void)state;
	pick_root();
	static const char *const all_but[4] = { "EXPECT_SHM=0xe",
		"EXPECT_SHM=0xd", "EXPECT_SHM=0xb", "EXPECT_SHM=0x7" };
	party ps[4];
	for (size_t i = 0; i < 4; i++) {
		tls_env(i, i);
		ps[i] = (party) {
			.vars = { root_var, ranks[i], "TAGWIRE_SIZE=4",
			    tls_vars[i][0], tls_vars[i][1], tls_vars[i][2],
			    "SHM_LOCAL=1", all_but[i], "EXPECT_SIZE=4", NULL }
		};
	}
	run(ps, 4, all_ok, false, 60000);
}

// Three parties through the root; party i also gets extra[i] (up to three
// NAME=VALUE, NULL-terminated early).
static void run_three(
    const char *const extra[3][3], const int want[][4], int64_t timeout_ms)
{
	pick_root();
	party ps[3];
	for (size_t i = 0; i < 3; i++)
		ps[i]
		    = (party) { .vars = { root_var, ranks[i], "TAGWIRE_SIZE=3",
			            "EXPECT_SIZE=3", extra[i][0], extra[i][1],
			            extra[i][2], NULL } };
	run(ps, 3, want, false, timeout_ms);
}

static void test_shm_private(void **state)
{
	(void)state;
	static const char *const extra[3][3] = {
		{ "SHM_LOCAL=1", "EXPECT_SHM=0x2" },
		{ "SHM_LOCAL=1", "EXPECT_SHM=0x1" },
		{ "SHM_LOCAL=1", "EXPECT_SHM=0x0", "PRIVATE_DEV_SHM=1" },
	};
	run_three(extra, all_ok, 60000);
}

static void test_shm_killed(void **state)
{
	(void)state;
	static const char *const extra[3][3] = {
		{ "SHM_LOCAL=1", "EXPECT_SHM=0x6" },
		{ "SHM_LOCAL=1", "EXPECT_SHM=0x5" },
		{ "SHM_LOCAL=1", "DIE_AFTER_CREATE=1" },
	};
	static const int want[3][4]
	    = { { E(TW_EPEER) }, { E(TW_EPEER) }, { 1000 + SIGKILL } };
	// Far below the default receive timeout (60 s): only noticing the
	// death ends the others' receives in time.
	run_three(extra, want, 20000);
}

static void test_shm_mismatch(void **state)
{
	(void)state;
	static const char *const extra[3][3] = {
		{ "CONNECT_MS=1500", "SHM_LOCAL=1" },
		{ "CONNECT_MS=1500" },
		{ "CONNECT_MS=1500", "SHM_LOCAL=1" },
	};
	// Rank 1's link is up; its first receive from a peer that gave up
	// finds the peer gone, or times out when the close is slow to come.
	// Ranks 0 and 2 wait for rank 1's hello: the first to give up times
	// out; the other may see rank 1 leave first.
	static const int want[3][4] = { { E(TW_ETIMEDOUT), E(TW_EPEER) },
		{ E(TW_EPEER), E(TW_ETIMEDOUT) },
		{ E(TW_ETIMEDOUT), E(TW_EPEER) } };
	run_three(extra, want, 60000);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_four),
		cmocka_unit_test(test_torchrun),
		cmocka_unit_test(test_launchers),
		cmocka_unit_test(test_started_late),
		cmocka_unit_test(test_size),
		cmocka_unit_test(test_missing),
		cmocka_unit_test(test_secret),
		cmocka_unit_test(test_tls),
		cmocka_unit_test(test_tls_name),
		cmocka_unit_test(test_shm_hosts),
		cmocka_unit_test(test_shm_tls),
		cmocka_unit_test(test_shm_private),
		cmocka_unit_test(test_shm_killed),
		cmocka_unit_test(test_shm_mismatch),
	};
	if (argc > 1
	    && tw_test_select(
	           tests, sizeof(tests) / sizeof(tests[0]), "test_", argv[1])
	        != 0)
		return 1;
	return cmocka_run_group_tests_name("rdv", tests, NULL, NULL);
}
