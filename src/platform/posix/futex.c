// Futex wait and wake on shared 32-bit words, and peer liveness.
//
// On Linux these are the raw FUTEX_WAIT and FUTEX_WAKE operations.  Other
// systems get a fallback that sleeps for a short while and relies on the
// callers' habit of re-checking their condition after every wake-up: slower
// to react, but never wrong.

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "platform/posix/futex.h"

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

// How long the fallback (or a futex that fails for an unexpected reason)
// sleeps at most before the caller looks again.
#define FUTEX_FALLBACK_NS 200000

static void futex_nap(int64_t timeout_ns)
{
	if (timeout_ns > FUTEX_FALLBACK_NS)
		timeout_ns = FUTEX_FALLBACK_NS;
	struct timespec ts = { 0, (long)timeout_ns };
	nanosleep(&ts, NULL);
}

// Nanoseconds from now (CLOCK_MONOTONIC) until deadline_ns.
static int64_t ns_until(int64_t deadline_ns)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return deadline_ns - ((int64_t)now.tv_sec * 1000000000 + now.tv_nsec);
}

#if defined(__linux__)

// ns as a timespec (a duration or a CLOCK_MONOTONIC time).
static struct timespec ts_of(int64_t ns)
{
	return (struct timespec) { (time_t)(ns / 1000000000),
		(long)(ns % 1000000000) };
}

// What a futex wait call that returned rv (errno err) means for the
// caller: 0 (woken, the word changed, or a signal), ETIMEDOUT, or -1 for a
// failure after which the caller naps instead.
static int wait_outcome(long rv, int err)
{
	if (rv >= 0 || err == EAGAIN || err == EINTR)
		return 0;
	return err == ETIMEDOUT ? ETIMEDOUT : -1;
}

int tw__futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns)
{
	if (timeout_ns <= 0)
		return ETIMEDOUT;
	// FUTEX_WAIT takes a relative timeout measured on CLOCK_MONOTONIC, so
	// a change of the wall clock cannot stretch the sleep.
	struct timespec ts = ts_of(timeout_ns);
	long rv = syscall(SYS_futex, word, FUTEX_WAIT, expected, &ts, NULL, 0);
	int err = errno, out = wait_outcome(rv, err);
	if (out >= 0)
		return out;
	// ENOSYS (a seccomp filter), EFAULT or EINVAL: nothing the caller can
	// mend, but waiting must still work, so degrade to short naps.
	TW_LOG_ONCE(TW_LOG_WARN, "futex",
	    "futex wait failed, polling instead: %s", strerror(err));
	futex_nap(timeout_ns);
	return 0;
}

void tw__futex_wake(uint32_t *word, int n)
{
	// A failed wake leaves the sleeper to notice at the end of its bounded
	// slice, so it is logged but not reported.
	if (syscall(SYS_futex, word, FUTEX_WAKE, n, NULL, NULL, 0) < 0)
		TW_LOG_ONCE(TW_LOG_WARN, "futex", "futex wake failed: %m");
}

// The kernel's struct futex_waitv, spelled out so that older headers
// build too (the call is answered with ENOSYS there).
struct futex_waitv_arg {
	uint64_t val;
	uint64_t uaddr;
	uint32_t flags;
	uint32_t reserved;
};
#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449 // the same number on every architecture
#endif
#define FUTEX_WAITV_U32 0x02u // FUTEX2_SIZE_U32

int tw__futex_waitv(uint32_t *const *words, const uint32_t *expected,
    unsigned n, int64_t deadline_ns)
{
	int64_t left = ns_until(deadline_ns);
	if (left <= 0)
		return ETIMEDOUT;
	if (n == 0 || n > TW_FUTEX_WAITV_MAX) {
		futex_nap(left);
		return 0;
	}
	struct futex_waitv_arg v[TW_FUTEX_WAITV_MAX];
	for (unsigned i = 0; i < n; i++) {
		v[i].val = expected[i];
		v[i].uaddr = (uint64_t)(uintptr_t)words[i];
		v[i].flags = FUTEX_WAITV_U32;
		v[i].reserved = 0;
	}
	struct timespec ts = ts_of(deadline_ns);
	long rv = syscall(SYS_futex_waitv, v, n, 0, &ts, CLOCK_MONOTONIC);
	int err = errno, out = wait_outcome(rv, err);
	if (out >= 0)
		return out;
	// ENOSYS: a kernel before 5.16, where naps are the design; anything
	// else is unexpected.
	TW_LOG_ONCE(err == ENOSYS ? TW_LOG_INFO : TW_LOG_WARN, "futex",
	    "futex_waitv failed, polling instead: %s", strerror(err));
	futex_nap(left);
	return 0;
}

#else

int tw__futex_waitv(uint32_t *const *words, const uint32_t *expected,
    unsigned n, int64_t deadline_ns)
{
	int64_t left = ns_until(deadline_ns);
	if (left <= 0)
		return ETIMEDOUT;
	for (unsigned i = 0; i < n; i++)
		if (__atomic_load_n(words[i], __ATOMIC_ACQUIRE) != expected[i])
			return 0;
	futex_nap(left);
	return 0;
}

int tw__futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns)
{
	if (timeout_ns <= 0)
		return ETIMEDOUT;
	if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != expected)
		return 0;
	futex_nap(timeout_ns);
	return 0;
}

void tw__futex_wake(uint32_t *word, int n)
{
	(void)word;
	(void)n;
}

#endif

#if defined(__linux__)
// kill(pid, 0) succeeds for a zombie, and a peer that died as our own child
// stays a zombie until we reap it, which we cannot do while we wait for it.
// Its state letter in /proc tells the truth.
static int proc_is_zombie(pid_t pid)
{
	char path[40];
	char buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT; // reaped meanwhile: gone
	ssize_t got = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (got <= 0)
		return 0;
	buf[got] = '\0';
	// The command name in parentheses may itself contain ')', so the
	// state is the first letter after the last one.
	char *p = strrchr(buf, ')');
	if (p == NULL)
		return 0;
	while (*++p == ' ')
		;
	return *p == 'Z' || *p == 'X';
}
#endif

int tw__proc_alive(uint32_t pid)
{
	// A negative pid would name a process group, and 0 ours: neither is
	// a peer, so such values count as unknown rather than being passed to
	// kill().
	if (pid == 0 || pid > INT_MAX)
		return 1;
	int saved = errno;
	int alive = 1;
	if (kill((pid_t)pid, 0) == -1 && errno == ESRCH)
		alive = 0;
#if defined(__linux__)
	else if (proc_is_zombie((pid_t)pid))
		alive = 0;
#endif
	errno = saved;
	return alive;
}
