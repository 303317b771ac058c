// Helpers of the tcp:// fault tests: see tf.h.

#include "tf.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "parts.h"
#include "testdata.h"

const char *tf_who = "test";

int64_t tf_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t tf_scale_ms(int64_t ms)
{
	const char *m = getenv("TW_TEST_TIMEOUT_MULTIPLIER");
	long f = m ? strtol(m, NULL, 10) : 1;
	return ms * (f > 0 ? f : 1);
}

void tf_die(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s: %s\n", tf_who, msg);
	fflush(stderr);
	exit(1);
}

pid_t tf_spawn(
    const char *role, const char *const *args, const int *keep, size_t nkeep)
{
	// Everything the child needs is made before the fork: between fork
	// and exec it calls only async-signal-safe functions.
	const char *argv[32];
	size_t n = 0;
	argv[n++] = "tcpfault";
	argv[n++] = TF_CHILD_FLAG;
	argv[n++] = role;
	for (size_t i = 0; args != NULL && args[i] != NULL; i++) {
		if (n + 1 >= sizeof(argv) / sizeof(argv[0]))
			return -1;
		argv[n++] = args[i];
	}
	argv[n] = NULL;
	pid_t parent = getpid();
	fflush(NULL);
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(126);
	for (size_t i = 0; i < nkeep; i++)
		if (fcntl(keep[i], F_SETFD, 0) != 0)
			_exit(126);
	execv("/proc/self/exe", (char *const *)argv);
	_exit(127);
}

tf_end tf_wait(pid_t pid, int64_t deadline_ms)
{
	tf_end e = { 0 };
	int st;
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid) {
			e.done = true;
			break;
		}
		if (r < 0 && errno != EINTR) {
			e.done = false;
			return e;
		}
		if (tf_now_ms() >= deadline_ms) {
			kill(pid, SIGKILL);
			while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
				;
			break;
		}
		struct timespec ts = { 0, 5 * 1000000L };
		nanosleep(&ts, NULL);
	}
	e.exited = WIFEXITED(st);
	e.code = e.exited ? WEXITSTATUS(st) : 0;
	e.sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
	return e;
}

bool tf_wait_all(const pid_t *pids, const char *const *names, size_t n,
    int64_t deadline_ms, char *why, size_t cap)
{
	bool done[16] = { false }, ok = true;
	size_t left = n;
	why[0] = '\0';
	if (n > 16)
		return false;
	while (left > 0) {
		bool moved = false;
		for (size_t i = 0; i < n; i++) {
			if (done[i])
				continue;
			int st;
			pid_t r = waitpid(pids[i], &st, WNOHANG);
			if (r != pids[i] && tf_now_ms() < deadline_ms)
				continue;
			tf_end e = { .done = true };
			if (r == pids[i]) {
				e.exited = WIFEXITED(st);
				e.code = e.exited ? WEXITSTATUS(st) : 0;
				e.sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
			} else {
				e = tf_wait(pids[i], 0);
				e.done = false;
			}
			done[i] = true;
			left--;
			moved = true;
			if (e.done && e.exited && e.code == 0)
				continue;
			char how[96];
			size_t used = strlen(why);
			snprintf(why + used, cap - used, "%s%s: %s",
			    used > 0 ? "; " : "", names[i],
			    tf_end_str(&e, how, sizeof(how)));
			if (ok)
				for (size_t k = 0; k < n; k++)
					if (!done[k])
						kill(pids[k], SIGKILL);
			ok = false;
		}
		if (!moved) {
			struct timespec ts = { 0, 5 * 1000000L };
			nanosleep(&ts, NULL);
		}
	}
	return ok;
}

const char *tf_end_str(const tf_end *e, char *buf, size_t cap)
{
	if (!e->done)
		snprintf(buf, cap, "still running at its deadline (killed)");
	else if (e->exited)
		snprintf(buf, cap, "exit status %d", e->code);
	else
		snprintf(
		    buf, cap, "signal %d (%s)", e->sig, strsignal(e->sig));
	return buf;
}

void tf_pipe(int fds[2])
{
	if (pipe2(fds, O_CLOEXEC) != 0)
		tf_die("pipe: %s", strerror(errno));
}

int tf_say(int fd, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line) - 1)
		return -1;
	line[n++] = '\n';
	const char *p = line;
	while (n > 0) {
		ssize_t w = write(fd, p, (size_t)n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (int)w;
	}
	return 0;
}

int tf_hear(int fd, char *buf, size_t cap, int64_t deadline_ms)
{
	size_t len = 0;
	for (;;) {
		int64_t left = deadline_ms - tf_now_ms();
		if (left <= 0)
			return -2;
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int rc = poll(&p, 1, left > 1000 ? 1000 : (int)left);
		if (rc < 0 && errno != EINTR)
			return -1;
		if (rc <= 0)
			continue;
		char c;
		ssize_t r = read(fd, &c, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		if (c == '\n') {
			buf[len] = '\0';
			return (int)len;
		}
		if (len + 1 < cap)
			buf[len++] = c;
	}
}

void tf_addr(char *buf, size_t cap, unsigned port)
{
	snprintf(buf, cap, "tcp://127.0.0.1:%u", port);
}

static int addr_cmp(unsigned a, unsigned b)
{
	char x[64], y[64];
	tf_addr(x, sizeof(x), a);
	tf_addr(y, sizeof(y), b);
	return strcmp(x, y);
}

bool tf_addr_before(unsigned a, unsigned b)
{
	return addr_cmp(a, b) < 0;
}

int tf_ports(unsigned *ports, size_t n, const unsigned *avoid, size_t navoid)
{
	for (size_t i = 0; i < n; i++) {
		int tries = 0;
		bool again;
		do {
			if (++tries > 1000)
				return -1;
			ports[i] = tw_test_free_port();
			again = ports[i] == 0;
			for (size_t k = 0; k < i; k++)
				again = again || ports[k] == ports[i];
			for (size_t k = 0; k < navoid; k++)
				again = again || avoid[k] == ports[i];
		} while (again);
	}
	// Insertion sort by address.
	for (size_t i = 1; i < n; i++)
		for (size_t k = i;
		     k > 0 && addr_cmp(ports[k - 1], ports[k]) > 0; k--) {
			unsigned t = ports[k];
			ports[k] = ports[k - 1];
			ports[k - 1] = t;
		}
	return 0;
}

tw_desc *tf_desc(const char *id, const unsigned *ports, size_t n,
    int64_t connect_ms, int64_t recv_ms)
{
	tw_desc *d = tw_desc_new(id);
	if (d == NULL)
		tf_die("tw_desc_new(%s) failed", id);
	for (size_t i = 0; i < n; i++) {
		char pid[24], addr[64];
		snprintf(pid, sizeof(pid), "p%zu", i);
		tf_addr(addr, sizeof(addr), ports[i]);
		TF_OK(tw_desc_add_party(d, pid, addr));
	}
	TF_OK(tw_desc_set(d, TW_OPT_CONNECT_TIMEOUT_MS, connect_ms));
	TF_OK(tw_desc_set(d, TW_OPT_RECV_TIMEOUT_MS, recv_ms));
	return d;
}

uint64_t tf_parse_size(const char *s)
{
	if (s == NULL || !isdigit((unsigned char)*s))
		return 0;
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	switch (*end) {
	case 'K':
		v <<= 10;
		end++;
		break;
	case 'M':
		v <<= 20;
		end++;
		break;
	case 'G':
		v <<= 30;
		end++;
		break;
	default:
		break;
	}
	return *end == '\0' ? (uint64_t)v : 0;
}

#define TF_BLOCK ((size_t)64 << 10)

static const unsigned char *block_pattern(uint32_t seed)
{
	// One pattern per seed at a time: the tests use a few seeds, each
	// for a whole buffer.
	static unsigned char pat[TF_BLOCK];
	static uint32_t pat_seed;
	static bool made;
	if (!made || pat_seed != seed) {
		tw_test_fill(pat, sizeof(pat), seed, 0x7cf, 0x11);
		pat_seed = seed;
		made = true;
	}
	return pat;
}

static void stamp(unsigned char *dst, uint64_t block, uint32_t seed)
{
	uint64_t v = block * UINT64_C(0x9e3779b97f4a7c15) ^ seed;
	memcpy(dst, &v, sizeof(v));
}

void tf_fill_blocks(void *buf, size_t len, uint32_t seed)
{
	const unsigned char *pat = block_pattern(seed);
	unsigned char *p = buf;
	for (size_t off = 0, b = 0; off < len; off += TF_BLOCK, b++) {
		size_t n = len - off < TF_BLOCK ? len - off : TF_BLOCK;
		memcpy(p + off, pat, n);
		if (n >= 8)
			stamp(p + off, b, seed);
	}
}

size_t tf_check_blocks(const void *buf, size_t len, uint32_t seed)
{
	const unsigned char *pat = block_pattern(seed);
	const unsigned char *p = buf;
	for (size_t off = 0, b = 0; off < len; off += TF_BLOCK, b++) {
		size_t n = len - off < TF_BLOCK ? len - off : TF_BLOCK;
		unsigned char head[8];
		memcpy(head, pat, 8);
		if (n >= 8)
			stamp(head, b, seed);
		size_t h = n < 8 ? n : 8;
		if (memcmp(p + off, head, h) != 0
		    || memcmp(p + off + h, pat + h, n - h) != 0)
			return off;
	}
	return SIZE_MAX;
}

int tf_count_tasks(int *tw_named)
{
	DIR *d = opendir("/proc/self/task");
	if (d == NULL)
		return -1;
	int n = 0, named = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		n++;
		char path[300], comm[32] = "";
		snprintf(
		    path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
		FILE *f = fopen(path, "r");
		if (f == NULL)
			continue; // the thread just ended
		if (fgets(comm, sizeof(comm), f) != NULL
		    && strncmp(comm, "tw-", 3) == 0)
			named++;
		fclose(f);
	}
	closedir(d);
	if (tw_named != NULL)
		*tw_named = named;
	return n;
}

int tf_port_refuses(unsigned port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_in sa = { .sin_family = AF_INET,
		.sin_port = htons((uint16_t)port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	int err = errno;
	close(fd);
	if (rc == 0)
		return 0;
	return err == ECONNREFUSED ? 1 : -1;
}

int tf_run_role(
    int argc, char **argv, const tf_role *roles, size_t n, int *handled)
{
	*handled = 0;
	if (argc < 3 || strcmp(argv[1], TF_CHILD_FLAG) != 0)
		return 0;
	*handled = 1;
	for (size_t i = 0; i < n; i++)
		if (strcmp(roles[i].name, argv[2]) == 0)
			return roles[i].fn(argc - 3, argv + 3);
	fprintf(stderr, "no role named '%s'\n", argv[2]);
	return 1;
}
