// tagwire demo: the shared state of a run and its phases.
//
// A run starts one thread per party.  The parties go through the phases in
// lock step: a process-local barrier (demo_step) opens each phase for all
// of them at once, so that a phase's time is the span from that moment to
// the last party finishing it, and so that every party sees the same
// "has anything failed" flag before it decides to go on.  That barrier is
// the demo's own synchronisation, never the library's: the library's
// collectives are what the demo tests.
//
// Failures.  A party that finds a wrong byte or a failed call records it
// (the first one recorded is the cause the report names) and aborts its
// link, so that the peers waiting on it get TW_EPEER at once instead of
// waiting for their receive timeout; every party then finishes the phase,
// and the run stops before the next one.

#ifndef TW_TOOLS_DEMO_H
#define TW_TOOLS_DEMO_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tagwire/tagwire.h>

#define DEMO_MAX_PARTIES 64
#define DEMO_LINK_ID "demo"

// Phases, in the order they run; each is one line of the report.
enum {
	PH_MESH,
	PH_P2P,
	PH_BARRIER,
	PH_BCAST,
	PH_GATHER,
	PH_ALLGATHER,
	PH_SCATTER,
	PH_BULK,
	PH_CHILD,
	PH_CLOSE,
	PH_COUNT
};

typedef struct demo_cfg {
	size_t parties;
	const char *transport; // a scheme the demo and the library both run
	uint64_t size; // bytes of each bulk message
	int corrupt; // phase whose first received buffer is flipped, or -1
	bool shm_local; // tcp: TW_OPT_SHM_LOCAL
} demo_cfg;

typedef struct demo_party demo_party;

typedef struct demo_run {
	const demo_cfg *cfg;
	tw_desc *desc;
	demo_party *parties;
	pthread_barrier_t step;
	_Atomic int failed; // some check failed; stop after this phase
	_Atomic int corrupted; // the test knob has flipped its byte
	_Atomic uint64_t checks; // checks passed and failed
	_Atomic uint64_t barrier_arrivals; // see the barrier phase
	_Atomic int64_t bulk_round_ns[DEMO_MAX_PARTIES]; // the max, by round
	pthread_mutex_t mtx;
	size_t nfail; // protected by mtx
	size_t phase_fail[PH_COUNT]; // protected by mtx
	int first_phase; // protected by mtx
	char first_msg[512]; // protected by mtx
} demo_run;

struct demo_party {
	demo_run *run;
	size_t rank;
	int phase; // the phase this party is in, for failure reports
	tw_link *link; // the root link "demo"
	tw_link *child; // "demo/child", spawned
	tw_link *sub; // "demo/sub", NULL when this party is not in it
	int64_t t0[PH_COUNT], t1[PH_COUNT]; // monotonic ns
	pthread_t thread;
};

// Waits until every party has arrived; true in exactly one of them.
bool demo_step(demo_run *run);

int64_t demo_now_ns(void);

// Records a failed check of party p (see "Failures" above).  Always -1,
// so that phases can write `return demo_fail(...)`.
int demo_fail(demo_party *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

// The phases (demo_phases.c).  Each returns 0, or -1 after demo_fail.
extern int (*const demo_phase_fn[PH_COUNT])(demo_party *p);

// The report's names of the phases, and the --corrupt keys.
extern const char *const demo_phase_title[PH_COUNT];
extern const char *const demo_phase_key[PH_COUNT];

// What a phase moves, for the report: "12 pairs, 144 messages, 3.5 MiB".
void demo_phase_detail(const demo_run *run, int phase, char *buf, size_t cap);

#endif // TW_TOOLS_DEMO_H
