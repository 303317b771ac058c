// tagwire perf: what its files share.
//
// A run is a list of measurements.  Two-party tests (lat, bw, rate) run
// between a leader, which keeps the time and reports the figures, and a
// follower; coll runs on every party of a link, and rank 0 reports.  Both
// ends derive the same list from the same options (perf_pair_list,
// perf_coll_list), so that nothing but a short header per phase needs to
// cross between them; the header carries the kind and the size of the
// measurement as well, so that two ends that disagree about the plan fail
// at once instead of measuring nonsense.
//
// Files: perf.c reads the command line and dispatches; perf_local.c starts
// both ends on this host; perf_net.c runs one end against another host;
// perf_ep.c moves messages over a link or a raw ring; perf_run.c measures;
// perf_out.c prints.

#ifndef TW_TOOLS_PERF_H
#define TW_TOOLS_PERF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <tagwire/tagwire.h>

#define PERF_MAX_SIZES 32
#define PERF_MAX_PARTY_COUNTS 64
#define PERF_MAX_PARTIES 64
#define PERF_MAX_SIZE ((uint64_t)1 << 30)
#define PERF_MAX_ITERS 100000000u
#define PERF_MAX_WINDOW 1000000u
#define PERF_DEFAULT_PORT 18515
#define PERF_DEFAULT_TIMEOUT_S 60
#define PERF_MSG_MAX 400

// Tests, as the command line names them.
enum { PERF_LAT, PERF_BW, PERF_RATE, PERF_COLL, PERF_NTESTS };

// What one measurement (one row) measures: coll is three of them.
enum {
	PERF_K_LAT,
	PERF_K_BW,
	PERF_K_RATE,
	PERF_K_BARRIER,
	PERF_K_ALLGATHER,
	PERF_K_BCAST,
	PERF_K_COUNT
};

enum { PERF_T_MEM, PERF_T_SHM, PERF_T_TCP, PERF_T_RING, PERF_T_COUNT };
enum { PERF_MODE_LOCAL, PERF_MODE_SERVER, PERF_MODE_CLIENT };
enum { PERF_FMT_TABLE, PERF_FMT_CSV, PERF_FMT_JSON };

// A status besides the TW_* ones: the other end reported a failure of its
// own, whose text is in the endpoint.
#define PERF_EREMOTE 1000

typedef struct perf_opts {
	unsigned tests; // bit (1 << PERF_LAT) ...
	int transport[PERF_T_COUNT];
	size_t ntransports;
	uint64_t sizes[PERF_MAX_SIZES];
	size_t nsizes;
	uint64_t iters; // 0: a default per test and size
	uint64_t duration_ms; // 0: by iterations
	uint64_t window; // rate: messages per ack, 0 = one ack at the end
	bool validate;
	uint64_t stripes;
	bool shm_local; // tcp: TW_OPT_SHM_LOCAL
	size_t parties[PERF_MAX_PARTY_COUNTS]; // coll
	size_t nparties;
	int mode;
	const char *bind; // --server
	const char *server; // --client
	int format;
	int64_t timeout_ms; // every wait
	bool timeout_set; // given: a server waits no longer for its client
} perf_opts;

typedef struct perf_meas {
	int kind; // PERF_K_*
	uint64_t size;
	size_t parties;
} perf_meas;

// One row of the report.  Figures that do not apply are NaN.
typedef struct perf_row {
	int transport;
	int kind;
	uint64_t size;
	uint64_t iters;
	uint32_t parties;
	double median_us, p99_us, max_us; // lat: one way
	double gbps; // bw
	double mmsgs; // rate
	double op_us; // coll: mean time per operation
} perf_row;

// Where a measuring end sends what it has to say.  Every call may come from
// any thread or process of the run, so implementations keep no state that
// is not theirs.
typedef struct perf_sink {
	// A measurement starts (for the progress line).
	void (*start)(void *ctx, int transport, const perf_meas *m);
	// A measurement finished (rank 0 / the leader only).
	void (*row)(void *ctx, const perf_row *r);
	// The end failed; msg says why, without a trailing newline.
	void (*fail)(void *ctx, const char *msg);
	void *ctx;
} perf_sink;

// ---------------------------------------------------------------------------
// Names and plans (perf.c)
// ---------------------------------------------------------------------------

extern const char *const perf_transport_name[PERF_T_COUNT];
extern const char *const perf_kind_name[PERF_K_COUNT];
// The algorithm the library takes for a row's collective (src/link/coll.c:
// by size and party count, under TAGWIRE_COLL_FORCE), "" for the others.
const char *perf_row_algorithm(int kind, size_t parties, uint64_t size);

// The two-party measurements of a run, in order; returns how many.
size_t perf_pair_list(const perf_opts *o, perf_meas *out, size_t cap);

// The coll measurements for a link of n parties, in order.
size_t perf_coll_list(
    const perf_opts *o, size_t n, perf_meas *out, size_t cap);

// "shm bw 64 KiB" into buf[cap], the prefix of messages about a
// measurement.
void perf_label(char *buf, size_t cap, int transport, const perf_meas *m);

// The tagwire perf usage; the full text when `full`.
void perf_usage(FILE *f, bool full);

// The options this build refuses, checked once more when a server reads
// its client's plan: NULL, or what is wrong.
const char *perf_opts_check(const perf_opts *o);

// ---------------------------------------------------------------------------
// Endpoints of two-party tests (perf_ep.c)
// ---------------------------------------------------------------------------

typedef struct perf_ep perf_ep;

// The tag of failure reports on a link (two-party tests and coll alike).
#define PERF_TAG_FAIL "perf.fail"

typedef struct perf_ep_ops {
	// Sends one message of n bytes; `stream` allows the copy to leave
	// later (tw_send_async).  TW_OK, a TW_* status or PERF_EREMOTE.
	int (*send)(perf_ep *e, const void *buf, size_t n, bool stream);
	// Receives one message into buf[cap]; *n is its length.
	int (*recv)(perf_ep *e, void *buf, size_t cap, size_t *n);
	// Tells the other end, as well as it can, that this end failed and
	// why; it stops this end's traffic.
	void (*report)(perf_ep *e, const char *msg);
} perf_ep_ops;

struct perf_ep {
	const perf_ep_ops *ops;
	tw_link *link; // link endpoints
	size_t peer;
	tw_ring *tx, *rx; // ring endpoints
	size_t chunk; // the ring's largest message
	int64_t timeout_us;
	char remote[PERF_MSG_MAX]; // after PERF_EREMOTE: what the peer said
};

// An endpoint on a link, talking to rank `peer`.
void perf_ep_link(perf_ep *e, tw_link *l, size_t peer);

// An endpoint on two attached rings: tx is this process's to send on
// (it is the producer), rx its to receive from (the consumer).
void perf_ep_ring(
    perf_ep *e, tw_ring *tx, tw_ring *rx, size_t chunk, int64_t timeout_us);

// Ring geometry of the `ring` transport: one lane of PERF_RING_SLOTS slots
// of PERF_RING_CHUNK bytes per direction; longer messages go in chunks.
#define PERF_RING_SLOTS 32
#define PERF_RING_CHUNK (64 * 1024)

// ---------------------------------------------------------------------------
// Measurements (perf_run.c)
// ---------------------------------------------------------------------------

// Runs every two-party measurement of the plan as the leader (`lead`,
// reports rows) or the follower.  0, or -1 with err[cap] set (already
// given to sink->fail and, where possible, to the other end).
int perf_pair_run(perf_ep *ep, bool lead, const perf_opts *o, int transport,
    const perf_sink *sink, char *err, size_t cap);

// Runs the coll measurements on link l (every party calls it; rank 0
// reports rows).  0, or -1 as for perf_pair_run.
int perf_coll_run(tw_link *l, const perf_opts *o, int transport,
    const perf_sink *sink, char *err, size_t cap);

// Formats "tw_recv: TW_EPEER (peer failed, ...)" for a failed call.
void perf_status_msg(char *buf, size_t cap, const char *call, int status);

// ---------------------------------------------------------------------------
// Output (perf_out.c)
// ---------------------------------------------------------------------------

// Starts the report on stdout in `format`; `total` measurements are
// expected (for the progress line, shown only when stderr is a terminal).
void perf_out_begin(int format, size_t total);
void perf_out_start(int transport, const perf_meas *m);
void perf_out_row(const perf_row *r);
// Ends the report (a JSON array is closed even after a failure, so that
// the rows that were measured still parse).
void perf_out_end(void);

// ---------------------------------------------------------------------------
// Modes
// ---------------------------------------------------------------------------

// Both ends here (perf_local.c); the tool's exit status.
int perf_local(const perf_opts *o);

// One end of a two-party tcp:// link across hosts (perf_net.c).
int perf_server(const perf_opts *o);
int perf_client(const perf_opts *o);

// --test xfer: the transfer engine between two engines of this process
// (perf_xfer.c), with options of its own; the tool's exit status.
int perf_xfer(int argc, char **argv);
void perf_xfer_usage(FILE *f);

// Descriptions of the tool's links: receive and connect timeouts from the
// options, stripes for tcp://.  NULL after a message on stderr.
tw_desc *perf_desc_new(const perf_opts *o, const char *link_id, int transport);

#endif // TW_TOOLS_PERF_H
