// The conformance suite: link semantics written once and run over every
// transport (STYLE: one suite, many transports).
//
// A case is a body that runs in every party of an N-party link.  Party
// bodies run on threads (or, for transports between processes, in forked
// processes), where cmocka's assertions cannot be used; they check with
// CHECK/CHECK_RV, which record the first failure and return -1, and the
// runner asserts that every party returned 0.

#ifndef TW_CONF_H
#define TW_CONF_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <tagwire/tagwire.h>

typedef struct conf_party {
	tw_link *link; // NULL for cases that create the link themselves
	tw_desc *desc;
	size_t rank;
	size_t size;
	const struct conf_transport *tp;
	void *arg;
	void *priv; // the runner's
	char err[256];
} conf_party;

typedef int (*conf_body_fn)(conf_party *p);
typedef void (*conf_setup_fn)(tw_desc *d, void *arg);
// Adjusts the description of party `rank` only: parties whose options
// differ, as when each process builds its own description.
typedef void (*conf_setup_party_fn)(tw_desc *d, size_t rank, void *arg);

typedef struct conf_transport {
	const char *name;
	bool builtin; // a transport of the library (not a user channel)
	bool procs; // parties are forked processes, not threads
	// printf format of party i's address; %s is a name unique to the run
	// (it holds the pid, so that ctest -j never mixes runs), %zu is i.
	const char *addr_fmt;
	// When set, writes party i's address instead of addr_fmt (in the
	// runner's process, before any party starts): for transports whose
	// addresses need resources of the run, such as free TCP ports.
	void (*make_addr)(
	    char *out, size_t cap, const char *run_name, size_t i);
	// When set, adjusts every description of the run (a variant of a
	// transport: other options, same cases).
	void (*tune)(tw_desc *d);
	// When set, NAME=VALUE put into the environment before any party
	// starts: a variant of a transport that the library reads there.
	const char *env;
	// Built-in transports: whether every peer's messages travel over
	// shm:// (all parties share this host), for TW_OPT_SHM_LOCAL.
	bool on_shm;
	// User channels only: wait_pending returns at once, delivering
	// nothing (a broken channel, to show that the suite notices).
	bool lazy_wait;
} conf_transport;

enum { CONF_OWN_CREATE = 1 };

// Runs `body` in `n` parties over transport `tp`.  `setup` may adjust the
// description (options) before creation.  Returns 0 when every party
// returned 0, else prints each party's failure and returns -1.
int conf_run(const conf_transport *tp, size_t n, int flags,
    conf_setup_fn setup, conf_body_fn body, void *arg);

// Like conf_run, and `setup_party` then adjusts each party's own
// description.
int conf_run_each(const conf_transport *tp, size_t n, int flags,
    conf_setup_fn setup, conf_setup_party_fn setup_party, conf_body_fn body,
    void *arg);

// A board that the parties of a run share, as threads or as forked
// processes alike (anonymous shared memory with a process-shared mutex and
// condition variable): one party posts a value in a slot, others wait for
// it.  For what a case must say outside the link under test, where a
// message on the link would itself change what the case observes.  Make
// it before conf_run (a forked party inherits it) and pass it as `arg`.
enum { CONF_BOARD_SLOTS = 8 };
typedef struct conf_board conf_board;
conf_board *conf_board_new(void);
void conf_board_free(conf_board *b);
void conf_board_post(conf_board *b, unsigned slot, uint64_t value);
// Waits up to `timeout_ms` for `slot` to be posted: true with *value (when
// not NULL) set, false on timeout.
bool conf_board_wait(
    conf_board *b, unsigned slot, int64_t timeout_ms, uint64_t *value);

// Creates party p's link from p->desc (for CONF_OWN_CREATE cases).
int conf_create(conf_party *p, tw_link **out);

void conf_failf(conf_party *p, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define CHECK(p, cond)                                                        \
	do {                                                                  \
		if (!(cond)) {                                                \
			conf_failf(p, __LINE__, "check failed: %s", #cond);   \
			return -1;                                            \
		}                                                             \
	} while (0)

#define CHECK_RV(p, expr, want)                                               \
	do {                                                                  \
		int rv_ = (expr);                                             \
		if (rv_ != (want)) {                                          \
			conf_failf(p, __LINE__, "%s: got %s, want %s", #expr, \
			    tw_err_name(rv_), tw_err_name(want));             \
			return -1;                                            \
		}                                                             \
	} while (0)

#define CHECK_OK(p, expr) CHECK_RV(p, expr, TW_OK)

// Monotonic milliseconds.
double conf_now_ms(void);

// A timeout in ms scaled by TW_TEST_TIMEOUT_MULTIPLIER.
int64_t conf_scale(int64_t ms);

// Fills buf with a pattern derived from (a, b, c) and checks one.
void conf_fill(void *buf, size_t len, uint32_t a, uint32_t b, uint32_t c);
bool conf_check(
    const void *buf, size_t len, uint32_t a, uint32_t b, uint32_t c);

#endif
