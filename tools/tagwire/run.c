// tagwire run: a local launcher.  It starts N processes of a program with
// the TAGWIRE_* variables that tw_desc_from_env reads, so that they form
// one link without a word of configuration, prints their output with a
// "[RANK] " prefix, forwards the signals that end a run, and ends the run
// as soon as one process fails.
//
// Design notes.  The launcher never joins a link and starts no thread, so
// a child may do anything between fork and exec.  The children share a
// process group of their own: a Ctrl-C on the terminal then reaches the
// launcher alone, which forwards it once, instead of every process
// receiving it twice (from the terminal and from the launcher).  They get
// SIGTERM when the launcher dies (PR_SET_PDEATHSIG), so that a launcher
// killed by SIGKILL leaves no party behind waiting for its peers; SIGTERM
// rather than SIGKILL, so that a party can still remove its shm:// segments.
//
// Signals and child exits wake poll() through a pipe (the self-pipe
// trick); the handlers only set flags, and the loop does the work.
//
// tcp:// ports of 127.0.0.1 are drawn from below the kernel's ephemeral
// range (cli_free_ports), where no outgoing connection can take them before
// the children bind them.  Another program that binds the same port in
// that gap makes the party that wanted it fail to bind (TW_ESYS), and the
// run fails with it, which is loud, never a wrong result.

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include "cli.h"
#include "core/names.h"
#include "transport/transport.h"

#define MAX_PROCS 1024
#define SECRET_MAX 1024
#define RANDOM_SECRET_BYTES 32
#define GRACE_MS 3000
// A line longer than this is printed in pieces of this size, so that a
// process that never writes a newline cannot make the launcher grow
// without bound.
#define LINE_MAX_BYTES (64 * 1024)
#define READ_CHUNK (64 * 1024)
// What the launcher reads from one pipe once its process has ended: a
// pipe holds 64 KiB by default, and a grandchild that keeps the pipe open
// and writes on must not hold the launcher.
#define DRAIN_CAP (1024 * 1024)

typedef struct stream {
	int fd; // -1 once closed
	char *buf;
	size_t len, cap;
} stream;

typedef struct child {
	pid_t pid;
	bool done;
	stream s[2]; // the child's stdout, stderr
} child;

typedef struct runner {
	child *c;
	size_t n, started, alive;
	int first_fail; // rank, or -1
	int rc;
	bool stopping; // SIGTERM sent to the others
	bool killed; // SIGKILL sent
	struct timespec kill_at;
	int out_err[2]; // errno of the first failed write to fd 1, 2
	struct pollfd *pfd;
} runner;

// ---------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------

static const int fwd_sigs[] = { SIGINT, SIGTERM, SIGHUP };
#define NFWD (sizeof(fwd_sigs) / sizeof(fwd_sigs[0]))
static volatile sig_atomic_t fwd_pending[NFWD];
static int wake_rd = -1, wake_wr = -1;

static void on_signal(int sig)
{
	int e = errno;
	for (size_t i = 0; i < NFWD; i++)
		if (fwd_sigs[i] == sig)
			fwd_pending[i] = 1;
	if (wake_wr >= 0) {
		ssize_t w = write(wake_wr, "", 1);
		(void)w; // a full pipe already wakes poll
	}
	errno = e;
}

static const char *sig_name(int sig)
{
	static const struct {
		int sig;
		const char *name;
	} names[] = { { SIGHUP, "SIGHUP" }, { SIGINT, "SIGINT" },
		{ SIGQUIT, "SIGQUIT" }, { SIGILL, "SIGILL" },
		{ SIGTRAP, "SIGTRAP" }, { SIGABRT, "SIGABRT" },
		{ SIGBUS, "SIGBUS" }, { SIGFPE, "SIGFPE" },
		{ SIGKILL, "SIGKILL" }, { SIGUSR1, "SIGUSR1" },
		{ SIGSEGV, "SIGSEGV" }, { SIGUSR2, "SIGUSR2" },
		{ SIGPIPE, "SIGPIPE" }, { SIGALRM, "SIGALRM" },
		{ SIGTERM, "SIGTERM" }, { SIGXCPU, "SIGXCPU" },
		{ SIGXFSZ, "SIGXFSZ" }, { SIGSYS, "SIGSYS" } };
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].sig == sig)
			return names[i].name;
	return "a signal";
}

static void send_all(runner *r, int sig)
{
	// Only children not yet reaped: a reaped pid may belong to anyone.
	for (size_t i = 0; i < r->started; i++)
		if (!r->c[i].done)
			kill(r->c[i].pid, sig);
}

static void forward_pending(runner *r)
{
	for (size_t i = 0; i < NFWD; i++) {
		if (!fwd_pending[i])
			continue;
		fwd_pending[i] = 0;
		send_all(r, fwd_sigs[i]);
	}
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "tagwire run: ");
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

// Writes "[rank] " + line + "\n" to fd 1 or 2 in one writev where the
// system allows, so that lines of different ranks do not interleave.
static void emit(runner *r, int k, size_t rank, const char *p, size_t len)
{
	if (r->out_err[k] != 0)
		return;
	char pre[24];
	int pn = snprintf(pre, sizeof(pre), "[%zu] ", rank);
	struct iovec iov[3]
	    = { { pre, (size_t)pn }, { (void *)p, len }, { "\n", 1 } };
	struct iovec *v = iov;
	int nv = 3;
	while (nv > 0) {
		ssize_t w = writev(k + 1, v, nv);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			r->out_err[k] = errno;
			return;
		}
		size_t left = (size_t)w;
		while (nv > 0 && left >= v->iov_len) {
			left -= v->iov_len;
			v++;
			nv--;
		}
		if (nv > 0) {
			v->iov_base = (char *)v->iov_base + left;
			v->iov_len -= left;
		}
	}
}

// Prints the complete lines in s's buffer (and, with `all`, the rest as
// a line of its own) and keeps the partial last line.
static void flush_lines(runner *r, size_t rank, int k, bool all)
{
	stream *s = &r->c[rank].s[k];
	if (s->len == 0)
		return;
	size_t off = 0;
	for (;;) {
		char *nl = memchr(s->buf + off, '\n', s->len - off);
		size_t n = nl ? (size_t)(nl - (s->buf + off)) : s->len - off;
		if (nl == NULL && n < LINE_MAX_BYTES && !(all && n > 0))
			break;
		if (n > LINE_MAX_BYTES)
			n = LINE_MAX_BYTES;
		emit(r, k, rank, s->buf + off, n);
		off += n + (nl != NULL && s->buf + off + n == nl);
	}
	memmove(s->buf, s->buf + off, s->len - off);
	s->len -= off;
}

static void close_stream(runner *r, size_t rank, int k)
{
	stream *s = &r->c[rank].s[k];
	flush_lines(r, rank, k, true);
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	free(s->buf);
	s->buf = NULL;
	s->len = s->cap = 0;
}

// Reads what the pipe holds now, up to `cap` bytes (EAGAIN ends it);
// closes the stream at end of file.  Returns -1 when out of memory.
static int pump(runner *r, size_t rank, int k, size_t cap)
{
	stream *s = &r->c[rank].s[k];
	size_t got = 0;
	while (s->fd >= 0 && got < cap) {
		if (s->cap - s->len < READ_CHUNK) {
			size_t nc = s->len + READ_CHUNK;
			char *nb = realloc(s->buf, nc);
			if (nb == NULL)
				return -1;
			s->buf = nb;
			s->cap = nc;
		}
		ssize_t n = read(s->fd, s->buf + s->len, READ_CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0) {
			close_stream(r, rank, k);
			break;
		}
		s->len += (size_t)n;
		got += (size_t)n;
		flush_lines(r, rank, k, false);
	}
	return 0;
}

// ---------------------------------------------------------------------------
// Children
// ---------------------------------------------------------------------------

static int64_t ms_until(const struct timespec *t)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	int64_t ms = (int64_t)(t->tv_sec - now.tv_sec) * 1000
	    + (t->tv_nsec - now.tv_nsec) / 1000000;
	return ms < 0 ? 0 : ms;
}

// Ends the run: SIGTERM now to every process still running, SIGKILL to
// those left after the grace period.
static void stop_others(runner *r)
{
	if (r->stopping)
		return;
	r->stopping = true;
	send_all(r, SIGTERM);
	clock_gettime(CLOCK_MONOTONIC, &r->kill_at);
	r->kill_at.tv_sec += GRACE_MS / 1000;
}

static void child_ended(runner *r, size_t rank, int st)
{
	child *c = &r->c[rank];
	c->done = true;
	r->alive--;
	// Its last lines before the line that says it failed.
	for (int k = 0; k < 2; k++) {
		if (pump(r, rank, k, DRAIN_CAP) != 0)
			close_stream(r, rank, k);
		if (c->s[k].fd >= 0)
			flush_lines(r, rank, k, true);
	}
	bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
	if (ok || r->first_fail >= 0 || r->stopping)
		return;
	r->first_fail = (int)rank;
	const char *rest = r->alive > 0 ? "; stopping the others" : "";
	if (WIFEXITED(st)) {
		r->rc = WEXITSTATUS(st);
		say("rank %zu (pid %ld) exited with status %d%s", rank,
		    (long)c->pid, r->rc, rest);
	} else {
		int sig = WTERMSIG(st);
		r->rc = 128 + sig;
		say("rank %zu (pid %ld) was killed by signal %d (%s)%s", rank,
		    (long)c->pid, sig, sig_name(sig), rest);
	}
	stop_others(r);
}

static void reap(runner *r)
{
	for (;;) {
		int st;
		pid_t pid = waitpid(-1, &st, WNOHANG);
		if (pid < 0 && errno == EINTR)
			continue;
		if (pid <= 0)
			return;
		for (size_t i = 0; i < r->started; i++)
			if (r->c[i].pid == pid && !r->c[i].done)
				child_ended(r, i, st);
	}
}

typedef struct spawn_ctx {
	char *const *argv; // PROG ARGS...
	pid_t launcher, pgid;
	sigset_t mask; // the caller's, for the children
	struct rlimit nofile; // the caller's, for the children
	bool stdin_tty;
} spawn_ctx;

_Noreturn static void child_exec(
    const spawn_ctx *x, size_t rank, int out, int err)
{
	// A launcher that dies ends the run, whatever killed it.
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != x->launcher)
		_exit(127);
	setpgid(0, x->pgid);
	static const int reset[]
	    = { SIGINT, SIGTERM, SIGHUP, SIGCHLD, SIGPIPE };
	for (size_t i = 0; i < sizeof(reset) / sizeof(reset[0]); i++)
		signal(reset[i], SIG_DFL);
	sigprocmask(SIG_SETMASK, &x->mask, NULL);
	setrlimit(RLIMIT_NOFILE, &x->nofile);
	// N processes reading one terminal would steal its lines from each
	// other, and from a process group of their own they could not read
	// it at all (SIGTTIN): only rank 0 reads, and only a file or a pipe.
	if (rank != 0 || x->stdin_tty) {
		int z = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (z >= 0)
			dup2(z, 0);
	}
	if (dup2(out, 1) < 0 || dup2(err, 2) < 0)
		_exit(127);
	char rk[24];
	snprintf(rk, sizeof(rk), "%zu", rank);
	setenv("TAGWIRE_RANK", rk, 1);
	execvp(x->argv[0], x->argv);
	dprintf(2, "tagwire run: cannot run '%s': %s\n", x->argv[0],
	    strerror(errno));
	_exit(127);
}

static int set_flags(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0)
		return -1;
	return fcntl(fd, F_SETFD, FD_CLOEXEC);
}

// Starts rank `rank`.  Returns 0, or -1 with a message printed.
static int spawn(runner *r, spawn_ctx *x, size_t rank)
{
	int po[2], pe[2];
	if (pipe2(po, O_CLOEXEC) != 0) {
		say("cannot start rank %zu: pipe: %s", rank, strerror(errno));
		return -1;
	}
	if (pipe2(pe, O_CLOEXEC) != 0) {
		say("cannot start rank %zu: pipe: %s", rank, strerror(errno));
		close(po[0]);
		close(po[1]);
		return -1;
	}
	pid_t pid = fork();
	if (pid == 0)
		child_exec(x, rank, po[1], pe[1]);
	int e = errno;
	close(po[1]);
	close(pe[1]);
	if (pid < 0) {
		close(po[0]);
		close(pe[0]);
		say("cannot start rank %zu: fork: %s", rank, strerror(e));
		return -1;
	}
	// Also here, so that the group exists before the next child joins
	// it, whichever of the two runs first.
	if (x->pgid == 0)
		x->pgid = pid;
	setpgid(pid, x->pgid);
	child *c = &r->c[rank];
	c->pid = pid;
	c->s[0].fd = po[0];
	c->s[1].fd = pe[0];
	set_flags(po[0]);
	set_flags(pe[0]);
	r->started++;
	r->alive++;
	return 0;
}

// The main loop: output, signals, exits, until every child has been
// reaped.
static void supervise(runner *r)
{
	size_t cap = 1 + 2 * r->n;
	for (;;) {
		forward_pending(r);
		reap(r);
		if (r->alive == 0)
			break;
		int timeout = -1;
		if (r->stopping && !r->killed) {
			int64_t ms = ms_until(&r->kill_at);
			if (ms == 0) {
				say("%zu process(es) still running %d s after "
				    "SIGTERM: sending SIGKILL",
				    r->alive, GRACE_MS / 1000);
				send_all(r, SIGKILL);
				r->killed = true;
			} else {
				timeout = (int)ms;
			}
		}
		size_t np = 0;
		r->pfd[np++]
		    = (struct pollfd) { .fd = wake_rd, .events = POLLIN };
		for (size_t i = 0; i < r->started && np < cap; i++)
			for (int k = 0; k < 2; k++)
				r->pfd[np++]
				    = (struct pollfd) { .fd = r->c[i].s[k].fd,
					      .events = POLLIN };
		if (poll(r->pfd, np, timeout) < 0 && errno != EINTR) {
			say("poll: %s", strerror(errno));
			stop_others(r);
			continue;
		}
		if (r->pfd[0].revents != 0) {
			char b[64];
			while (read(wake_rd, b, sizeof(b)) > 0)
				;
		}
		size_t p = 1;
		for (size_t i = 0; i < r->started; i++)
			for (int k = 0; k < 2; k++, p++)
				if (r->pfd[p].fd >= 0 && r->pfd[p].revents != 0
				    && pump(r, i, k, 4 * READ_CHUNK) != 0)
					close_stream(r, i, k);
	}
	// What the children wrote before they ended, but not what a
	// grandchild that kept their pipes may write for ever after.
	for (size_t i = 0; i < r->started; i++)
		for (int k = 0; k < 2; k++) {
			if (r->c[i].s[k].fd >= 0)
				pump(r, i, k, DRAIN_CAP);
			close_stream(r, i, k);
		}
}

// ---------------------------------------------------------------------------
// Setup
// ---------------------------------------------------------------------------

// "ADDR,ADDR,..." for TAGWIRE_PARTIES; NULL when out of memory.
static char *parties_list(bool shm, size_t n, const unsigned *ports)
{
	size_t cap = n * 48 + 1, used = 0;
	char *s = malloc(cap);
	if (s == NULL)
		return NULL;
	s[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		int k = shm
		    ? snprintf(s + used, cap - used, "%sshm://run%ld.p%zu",
		        i ? "," : "", (long)getpid(), i)
		    : snprintf(s + used, cap - used, "%stcp://127.0.0.1:%u",
		        i ? "," : "", ports[i]);
		used += (size_t)k;
	}
	return s;
}

// Reads the secret file into buf (1..SECRET_MAX bytes, NUL-terminated,
// one trailing newline dropped).  Returns 0, or -1 with the reason in
// why[cap].
static int read_secret(const char *path, char *buf, char *why, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(why, cap, "cannot read the secret file '%.200s': %s",
		    path, strerror(errno));
		return -1;
	}
	// Two more than the most it may hold: a CR LF that is dropped.
	size_t len = 0, want = SECRET_MAX + 2;
	while (len <= want) {
		ssize_t n = read(fd, buf + len, want + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(why, cap,
			    "cannot read the secret file '%.200s': %s", path,
			    strerror(errno));
			close(fd);
			return -1;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	if (len > 0 && buf[len - 1] == '\n') {
		len--;
		if (len > 0 && buf[len - 1] == '\r')
			len--;
	}
	if (len == 0 || len > SECRET_MAX) {
		snprintf(why, cap,
		    "the secret file '%.200s' holds %s bytes: a secret is 1 "
		    "to %d bytes (a trailing newline does not count)",
		    path, len == 0 ? "no" : "more than 1024", SECRET_MAX);
		return -1;
	}
	if (memchr(buf, '\0', len) != NULL) {
		snprintf(why, cap,
		    "the secret file '%.200s' holds a NUL byte, which an "
		    "environment variable cannot carry",
		    path);
		return -1;
	}
	buf[len] = '\0';
	return 0;
}

static int random_secret(char *hex)
{
	unsigned char b[RANDOM_SECRET_BYTES];
	size_t got = 0;
	while (got < sizeof(b)) {
		ssize_t n = getrandom(b + got, sizeof(b) - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			say("cannot make a secret: getrandom: %s",
			    strerror(errno));
			return -1;
		}
		got += (size_t)n;
	}
	for (size_t i = 0; i < sizeof(b); i++)
		snprintf(hex + 2 * i, 3, "%02x", b[i]);
	return 0;
}

static bool library_has(const char *scheme)
{
	for (const char *const *n = tw__transport_names(); *n != NULL; n++)
		if (strcmp(*n, scheme) == 0)
			return true;
	return false;
}

// The children's pipes and the launcher's own: without room for them the
// run would fail half-started.
static int raise_nofile(size_t n, struct rlimit *orig)
{
	if (getrlimit(RLIMIT_NOFILE, orig) != 0)
		return 0;
	rlim_t need = (rlim_t)(2 * n + 32);
	if (orig->rlim_cur != RLIM_INFINITY && orig->rlim_cur < need) {
		struct rlimit l = *orig;
		l.rlim_cur
		    = orig->rlim_max == RLIM_INFINITY || orig->rlim_max >= need
		    ? need
		    : orig->rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &l) != 0 || l.rlim_cur < need) {
			say("-n %zu needs %llu open files, and the limit is "
			    "%llu (ulimit -n)",
			    n, (unsigned long long)need,
			    (unsigned long long)l.rlim_cur);
			return -1;
		}
	}
	return 0;
}

// A closed 0, 1 or 2 would be reused by a pipe, and a child's dup2 onto
// the same number would keep that pipe's close-on-exec flag.
static void hold_std_fds(void)
{
	for (int fd = 0; fd < 3; fd++)
		if (fcntl(fd, F_GETFD) < 0 && errno == EBADF)
			open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
}

typedef struct ropts {
	uint64_t n;
	bool shm, rdv;
	const char *secret_file, *link_id;
	char *const *argv;
} ropts;

static int launch(const ropts *o)
{
	char secret[SECRET_MAX + 4];
	char why[400];
	if (o->secret_file != NULL) {
		if (read_secret(o->secret_file, secret, why, sizeof(why)) != 0)
			return cli_usage_error("run", "%s", why);
	} else if (random_secret(secret) != 0) {
		return CLI_FAILED;
	}
	hold_std_fds();
	spawn_ctx x = { .argv = o->argv, .launcher = getpid() };
	if (raise_nofile(o->n, &x.nofile) != 0)
		return CLI_FAILED;
	x.stdin_tty = isatty(0);

	runner r = { .n = o->n, .first_fail = -1 };
	unsigned *ports = calloc(o->n, sizeof(*ports));
	r.c = calloc(o->n, sizeof(*r.c));
	r.pfd = calloc(1 + 2 * o->n, sizeof(*r.pfd));
	char *parties = NULL;
	int rc = CLI_FAILED;
	if (ports == NULL || r.c == NULL || r.pfd == NULL) {
		say("out of memory");
		goto out;
	}
	for (size_t i = 0; i < o->n; i++)
		r.c[i].s[0].fd = r.c[i].s[1].fd = -1;
	// With a rendezvous only rank 0's port is chosen here; the others
	// take free ports themselves and tell rank 0.
	size_t nports = o->shm ? 0 : o->rdv ? 1 : o->n;
	if (nports > 0 && cli_free_ports("127.0.0.1", ports, nports) != 0)
		goto out;
	parties = parties_list(o->shm, o->shm ? o->n : nports, ports);
	char size[24];
	snprintf(size, sizeof(size), "%llu", (unsigned long long)o->n);
	bool env_ok = parties != NULL;
	if (env_ok && o->rdv) {
		unsetenv("TAGWIRE_PARTIES");
		env_ok = setenv("TAGWIRE_ROOT", parties, 1) == 0;
	} else if (env_ok) {
		unsetenv("TAGWIRE_ROOT");
		env_ok = setenv("TAGWIRE_PARTIES", parties, 1) == 0;
	}
	if (!env_ok || setenv("TAGWIRE_SIZE", size, 1) != 0
	    || setenv("TAGWIRE_SECRET", secret, 1) != 0
	    || setenv("TAGWIRE_LINK_ID", o->link_id, 1) != 0) {
		say("out of memory");
		goto out;
	}

	int wp[2];
	if (pipe2(wp, O_CLOEXEC | O_NONBLOCK) != 0) {
		say("pipe: %s", strerror(errno));
		goto out;
	}
	wake_rd = wp[0];
	wake_wr = wp[1];
	// Blocked while forking, so that no child runs the launcher's
	// handlers; what arrives meanwhile is forwarded once all run.
	sigset_t block;
	sigemptyset(&block);
	for (size_t i = 0; i < NFWD; i++)
		sigaddset(&block, fwd_sigs[i]);
	sigaddset(&block, SIGCHLD);
	sigprocmask(SIG_BLOCK, &block, &x.mask);
	struct sigaction sa
	    = { .sa_handler = on_signal, .sa_flags = SA_RESTART };
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < NFWD; i++)
		sigaction(fwd_sigs[i], &sa, NULL);
	sigaction(SIGCHLD, &sa, NULL);
	// A reader of our output that goes away must not kill the launcher
	// and orphan the run; the write error is reported instead.
	signal(SIGPIPE, SIG_IGN);

	fflush(NULL);
	bool spawn_failed = false;
	for (size_t i = 0; i < o->n; i++)
		if (spawn(&r, &x, i) != 0) {
			spawn_failed = true;
			break;
		}
	sigprocmask(SIG_SETMASK, &x.mask, NULL);
	if (spawn_failed) {
		r.rc = CLI_FAILED;
		r.first_fail = (int)r.started;
		stop_others(&r);
	}
	supervise(&r);
	rc = r.rc;
	for (int k = 0; k < 2; k++)
		if (r.out_err[k] != 0) {
			say("cannot write the %s: %s",
			    k == 0 ? "output" : "error output",
			    strerror(r.out_err[k]));
			if (rc == CLI_OK)
				rc = CLI_FAILED;
		}
out:
	free(parties);
	free(ports);
	free(r.c);
	free(r.pfd);
	explicit_bzero(secret, sizeof(secret));
	return rc;
}

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

void cli_run_help(FILE *f)
{
	fprintf(f,
	    "%s\n"
	    "\n"
	    "Starts N processes of PROG on this host, each with the "
	    "variables that\n"
	    "tw_desc_from_env (Python: tagwire.Desc.from_env()) reads, so "
	    "that they form\n"
	    "one link: TAGWIRE_PARTIES (every party's address, comma "
	    "separated; or\n"
	    "TAGWIRE_ROOT with --rendezvous),\n"
	    "TAGWIRE_RANK (0 to N-1, one per process), TAGWIRE_SECRET, "
	    "TAGWIRE_LINK_ID,\n"
	    "and TAGWIRE_SIZE (N).  Other variables, TAGWIRE_TLS_* "
	    "included, pass through.\n"
	    "\n"
	    "run options:\n"
	    "  -n N               processes to start, 1 to %d\n"
	    "  --transport T      tcp (default): tcp://127.0.0.1:PORT, "
	    "ports that were\n"
	    "                     free just before the start (another "
	    "program may take\n"
	    "                     one in between: that party then fails to "
	    "bind);\n"
	    "                     shm: shm://runPID.pRANK\n"
	    "  --secret-file F    the link secret: F's bytes (1 to %d, "
	    "a trailing\n"
	    "                     newline dropped, no NUL byte); by "
	    "default %d random\n"
	    "                     bytes, hex-encoded, new for each run, so "
	    "that links are\n"
	    "                     authenticated\n"
	    "  --link-id ID       TAGWIRE_LINK_ID (default root)\n"
	    "  --rendezvous       tcp: no address list; TAGWIRE_ROOT "
	    "instead of\n"
	    "                     TAGWIRE_PARTIES: rank 0's address, where "
	    "the others\n"
	    "                     (on ports of their own) learn every "
	    "address\n"
	    "  --                 ends the options; PROG and its arguments "
	    "follow\n"
	    "\n"
	    "Each line a process writes is printed with \"[RANK] \" in "
	    "front, its stdout\n"
	    "on stdout and its stderr on stderr; a last line without a "
	    "newline gets one,\n"
	    "and lines over 64 KiB are split.  Rank 0 reads the standard "
	    "input when it is\n"
	    "a file or a pipe; the others, and rank 0 on a terminal, read "
	    "/dev/null.\n"
	    "SIGINT, SIGTERM and SIGHUP are forwarded to every process "
	    "still running;\n"
	    "a launcher that dies sends them SIGTERM.\n"
	    "\n"
	    "run exit status: 0 when every process exits 0; otherwise that "
	    "of the first\n"
	    "process to fail (its exit status, or 128+S when signal S "
	    "killed it), once\n"
	    "the others were sent SIGTERM and, %d s later, SIGKILL; 127 "
	    "from a process\n"
	    "that could not start PROG; 1 when the launcher fails; 2 a bad "
	    "command line.\n",
	    CLI_RUN_USAGE, MAX_PROCS, SECRET_MAX, RANDOM_SECRET_BYTES,
	    GRACE_MS / 1000);
}

static const char *const value_opts[]
    = { "-n", "--transport", "--secret-file", "--link-id" };
enum { V_N, V_TRANSPORT, V_SECRET, V_LINK_ID, V_COUNT };

int cli_run(int argc, char **argv)
{
	ropts o = { .link_id = "root" };
	bool have_n = false;
	int i = 1;
	for (; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--") == 0)
			break;
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			cli_run_help(stdout);
			return CLI_OK;
		}
		if (strcmp(a, "--rendezvous") == 0) {
			o.rdv = true;
			continue;
		}
		int k = -1;
		const char *val = NULL;
		for (int j = 0; j < V_COUNT && k < 0; j++) {
			size_t n = strlen(value_opts[j]);
			if (strncmp(a, value_opts[j], n) != 0
			    || (a[n] != '\0' && a[n] != '='))
				continue;
			k = j;
			if (a[n] == '=')
				val = a + n + 1;
			else if (i + 1 < argc
			    && strcmp(argv[i + 1], "--") != 0)
				val = argv[++i];
		}
		if (k < 0 && a[0] == '-')
			return cli_usage_error(
			    "run", "unknown option '%.64s'", a);
		if (k < 0)
			return cli_usage_error("run",
			    "unexpected argument '%.64s': PROG and "
			    "its arguments go after '--'",
			    a);
		if (val == NULL)
			return cli_usage_error(
			    "run", "%s needs a value", value_opts[k]);
		switch (k) {
		case V_N:
			if (cli_parse_u64(val, 1, MAX_PROCS, 0, &o.n) != 0)
				return cli_usage_error("run",
				    "-n wants a number from 1 to "
				    "%d, not '%.32s'",
				    MAX_PROCS, val);
			have_n = true;
			break;
		case V_TRANSPORT:
			if (strcmp(val, "tcp") != 0 && strcmp(val, "shm") != 0)
				return cli_usage_error("run",
				    "--transport wants tcp or shm, "
				    "not '%.32s'",
				    val);
			if (!library_has(val))
				return cli_usage_error("run",
				    "--transport %s: not built "
				    "into this library",
				    val);
			o.shm = strcmp(val, "shm") == 0;
			break;
		case V_SECRET:
			if (*val == '\0')
				return cli_usage_error(
				    "run", "--secret-file needs a value");
			o.secret_file = val;
			break;
		case V_LINK_ID:
			if (!tw__valid_link_id(val))
				return cli_usage_error("run",
				    "--link-id wants 1 to %d bytes of "
				    "[A-Za-z0-9._-] and '/' between parts, "
				    "not '%.64s'",
				    TW_LINK_ID_MAX, val);
			o.link_id = val;
			break;
		}
	}
	if (i >= argc)
		return cli_usage_error("run", "missing '--' before PROG");
	if (i + 1 >= argc)
		return cli_usage_error("run", "missing PROG after '--'");
	if (!have_n)
		return cli_usage_error(
		    "run", "give -n N, the number of processes");
	if (o.rdv && o.shm)
		return cli_usage_error("run",
		    "--rendezvous is for tcp: shm:// parties have fixed "
		    "names");
	if (!o.shm && !library_has("tcp"))
		return cli_usage_error(
		    "run", "--transport tcp: not built into this library");
	o.argv = argv + i + 1;
	return launch(&o);
}
