// Helpers of the tcp:// fault tests (tests/tcpfault): parties that are
// processes, started by running the test program again, with pipes to
// report on and to wait on; ports whose addresses sort in a chosen order;
// byte patterns that can be checked at memcmp speed.
//
// A party is this program run again ("PROG --child ROLE ARG..."): a forked
// copy of a process that already has threads may not start threads of its
// own, and a party needs the library's.  Children die with the process
// that started them (PR_SET_PDEATHSIG), and every wait here has a
// deadline, so that a party that hangs fails the test instead of holding
// it until ctest's timeout.

#ifndef TW_TESTS_TCPFAULT_TF_H
#define TW_TESTS_TCPFAULT_TF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <tagwire/tagwire.h>

#define TF_CHILD_FLAG "--child"

// Monotonic time in ms.
int64_t tf_now_ms(void);

// tw_test_scale_ms (tests/testutil.h) without cmocka: ms scaled by
// TW_TEST_TIMEOUT_MULTIPLIER.
int64_t tf_scale_ms(int64_t ms);

// A child prints why it failed and exits with status 1 (exit, so that a
// sanitizer's checks at exit still run).  `who` is set by the child's
// role function, for the message.
extern const char *tf_who;
void tf_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)))
__attribute__((noreturn));
// A call that must return TW_OK, in a child.
#define TF_OK(expr)                                                           \
	do {                                                                  \
		int tf_rv_ = (expr);                                          \
		if (tf_rv_ != TW_OK)                                          \
			tf_die("line %d: %s: got %s", __LINE__, #expr,        \
			    tw_err_name(tf_rv_));                             \
	} while (0)

// Starts this program again as a child in `role` with the NULL-terminated
// arguments args (may be NULL).  The descriptors keep[0..nkeep) are
// inherited (the others are close-on-exec where this process made them
// so).  Forks from the calling thread, which must outlive the child (the
// child is killed when it exits): call it from the main thread.
pid_t tf_spawn(
    const char *role, const char *const *args, const int *keep, size_t nkeep);

// How a child ended.
typedef struct tf_end {
	bool done; // it ended before the deadline
	bool exited; // by exit (code), else by a signal (sig)
	int code, sig;
} tf_end;

// Waits for child pid until the deadline (tf_now_ms scale); a child still
// running then is killed and reaped (done false).
tf_end tf_wait(pid_t pid, int64_t deadline_ms);

// Waits for the children pids[0..n) until the deadline; once one ends
// otherwise than with exit status 0, the others are killed (they would
// wait for it until their own timeouts).  Fills ends[0..n).  Returns
// whether all exited with 0; *why (cap bytes) then says who did not and
// how, names[i] naming child i.
bool tf_wait_all(const pid_t *pids, const char *const *names, size_t n,
    int64_t deadline_ms, char *why, size_t cap);

// "exit status 3", "signal 11 (Segmentation fault)", "still running".
const char *tf_end_str(const tf_end *e, char *buf, size_t cap);

// A pipe whose ends are close-on-exec (tf_spawn's keep lifts that).
void tf_pipe(int fds[2]);

// Writes one line (a '\n' is added) to fd.  Returns 0 or -1.
int tf_say(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Reads one line from fd into buf (without the '\n') until the deadline.
// Returns its length, -1 at EOF or on error, -2 at the deadline.  Reads
// byte by byte, so that nothing after the line is consumed.
int tf_hear(int fd, char *buf, size_t cap, int64_t deadline_ms);

// n distinct free loopback ports whose addresses "tcp://127.0.0.1:PORT"
// sort in index order (strcmp), so that the party of a lower index dials
// the others (tw__tcp_dials).  Ports in `avoid[0..navoid)` are not used.
// Returns 0, or -1 when no port could be found.
int tf_ports(unsigned *ports, size_t n, const unsigned *avoid, size_t navoid);
void tf_addr(char *buf, size_t cap, unsigned port);
// Whether the address of port a sorts before that of port b (a dials b).
bool tf_addr_before(unsigned a, unsigned b);

// A description of a link of n parties "p0".. at 127.0.0.1:ports[i], with
// the connect and receive timeouts given (ms, already scaled).  Dies on
// failure (children only).
tw_desc *tf_desc(const char *id, const unsigned *ports, size_t n,
    int64_t connect_ms, int64_t recv_ms);

// Parses a size: a number with an optional K, M or G suffix (binary).
// Returns 0 when malformed.
uint64_t tf_parse_size(const char *s);

// Large buffers checked at memcmp speed: 64 KiB blocks of one pseudo-random
// pattern of `seed`, each stamped in its first 8 bytes with its index and
// the seed, so that a block in the wrong place does not pass.
void tf_fill_blocks(void *buf, size_t len, uint32_t seed);
// The offset of the first wrong byte's block, or SIZE_MAX when all is right.
size_t tf_check_blocks(const void *buf, size_t len, uint32_t seed);

// Threads of this process (entries of /proc/self/task), and how many of
// them have a name starting with "tw-" (the library's).  -1 on error.
int tf_count_tasks(int *tw_named);

// Whether a TCP connection to 127.0.0.1:port is refused (ECONNREFUSED):
// 1, 0 when it was accepted (closed at once), -1 on another error.
int tf_port_refuses(unsigned port);

#endif // TW_TESTS_TCPFAULT_TF_H
