// Killing live TCP connections for fault tests and benches, without a
// test framework: `ss -K` (iproute2), which destroys sockets through the
// kernel's sock_diag interface, as a reset or a middlebox would.

#ifndef TW_TESTS_SSKILL_H
#define TW_TESTS_SSKILL_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

// Runs `ss -K` (or, with destroy false, only lists) on the established TCP
// connections with an end at one of ports[0..n).  Returns how many
// sockets it killed (ss prints one line per socket it destroyed, and none
// for a socket it could not), or -1 with *why set when ss could not run,
// failed, or took longer than timeout_ms (then it is killed).
static inline int tw_test_ss_kill(const unsigned *ports, size_t n,
    bool destroy, int timeout_ms, char *why, size_t cap)
{
	char filter[512];
	size_t used = (size_t)snprintf(filter, sizeof(filter), "(");
	for (size_t i = 0; i < n && used < sizeof(filter); i++)
		used += (size_t)snprintf(filter + used, sizeof(filter) - used,
		    "%s sport = :%u or dport = :%u", i > 0 ? " or" : "",
		    ports[i], ports[i]);
	if (used < sizeof(filter))
		snprintf(filter + used, sizeof(filter) - used, " )");
	char *const argv[] = { "ss", destroy ? "-K" : "-H", "-H", "-t", "-n",
		"state", "established", filter, NULL };
	int out[2];
	if (pipe2(out, O_CLOEXEC) != 0) {
		snprintf(why, cap, "pipe: %s", strerror(errno));
		return -1;
	}
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, out[1], 1);
	pid_t pid;
	int rc = posix_spawnp(&pid, "ss", &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(out[1]);
	if (rc != 0) {
		close(out[0]);
		snprintf(why, cap, "cannot run ss: %s", strerror(rc));
		return -1;
	}
	int lines = 0;
	bool text = false, late = false;
	struct pollfd p = { .fd = out[0], .events = POLLIN };
	for (;;) {
		int pr = poll(&p, 1, timeout_ms);
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr == 0) {
			late = true;
			(void)kill(pid, SIGKILL);
			break;
		}
		char buf[4096];
		ssize_t got = read(out[0], buf, sizeof(buf));
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		for (ssize_t i = 0; i < got; i++) {
			if (buf[i] == '\n') {
				lines += text;
				text = false;
			} else if (buf[i] != ' ' && buf[i] != '\t') {
				text = true;
			}
		}
	}
	lines += text;
	close(out[0]);
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (late || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		snprintf(why, cap, "ss %s ... '%s': %s", destroy ? "-K" : "-H",
		    filter, late ? "no end after its timeout" : "failed");
		return -1;
	}
	return lines;
}

#endif // TW_TESTS_SSKILL_H
