// Internals of the transfer engine, shared by its files:
//
//   engine.c  the engine: options, listening, connecting, accepting, freeing
//   peer.c    a peer: the two-party link to it, its sending and receiving
//             threads, and the handling of every frame (wire.h)
//   xfer.c    transfers and their posts (ops), completion, deadlines, the
//             pollable fd, notifications
//   mem.c     registrations and remote ids
//
// Design.  Each peer is a tw_link of two parties (rank 0 accepted, rank 1
// connected and always dialed) made for it alone, so that tcp:// brings
// its shared port, secrets, TLS, striping, heartbeats and resumption, and
// mem:// its in-process queues.  Frames are messages of tag "e" (wire.h).
// Each peer has one sending thread (which alone calls tw_send, so that a
// data frame and its data are never split, and which no receive ever waits
// for) and one receiving thread (which alone receives, applies data
// straight into registered memory, and never blocks on sending: it queues
// replies for the sender).  A single engine mutex guards every structure;
// copies of bulk data happen outside it, with the memory pinned by counts
// (op->io, reg->io) that frees and deregistrations wait on.
//
// Lock order: engine mtx, then nothing of the link below (the engine never
// calls the link with its mutex held); inc_mtx is a leaf taken by the
// tcp:// anchor callback under the node's lock.

#ifndef TW_ENGINE_ENG_H
#define TW_ENGINE_ENG_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <tagwire/engine.h>
#include <tagwire/link.h>

#include <uthash.h>

#include "core/log.h"
#include "engine/wire.h"

#define LOGE(e, level, ...) TW_LOGL(level, "engine", (e)->name, 0, __VA_ARGS__)

// Link ids of engine links: "tw.engine/<acceptor>/<connector>/<nonce>".
#define ENG_LINK_PREFIX "tw.engine/"
// Connection requests an acceptor keeps at once.
#define ENG_INCOMING_MAX 64
// Remote frames waiting for a matching receive, per peer.
#define ENG_RTS_MAX 65536

typedef struct eng_peer eng_peer;
typedef struct eng_op eng_op;

// A registration (mem.c).
typedef struct eng_reg {
	uint64_t id, key;
	unsigned char *base;
	size_t len;
	unsigned access;
	unsigned users; // ops of unfinished transfers of this engine
	unsigned refs; // queued READ replies and copies in progress
	bool dead; // deregistered: no new use; freed at refs == 0
	UT_hash_handle hh;
} eng_reg;

// A remote id (mem.c): a peer's registration, as unpacked here.
typedef struct eng_rmem {
	uint64_t id; // ours
	uint64_t rid, key, len; // the peer's
	unsigned access;
	UT_hash_handle hh;
} eng_rmem;

enum { OP_SEND, OP_RECV, OP_WRITE, OP_READ };
enum {
	OPS_IDLE, // not running (before start, after finish)
	OPS_WAIT, // a send waiting for its CTS; a receive for its RTS
	OPS_RUN, // chunks to issue or replies to get
	OPS_DONE,
};

// A post of a transfer; kept for reposts.
struct eng_op {
	tw_xfer *x;
	int kind;
	uint64_t mem_id;
	size_t off, len;
	uint64_t tag; // tagged
	uint64_t rmem_id; // one-sided: ours
	size_t roff;
	// Running state, under the engine mutex.
	eng_reg *reg; // held (users) while running
	unsigned char *ptr; // reg->base + off
	uint64_t rid, rkey; // the peer's id and key (one-sided)
	uint64_t id; // the engine's number while running (0: none)
	int state; // OPS_*
	size_t issued, done; // bytes sent off, bytes confirmed
	unsigned io; // copies into or out of ptr in progress
	uint64_t peer_op; // send: the receive's op there; recv: the send's
	uint64_t peer_len; // recv: the length of the send it matched
	uint64_t match; // the match number the peer's frames must show
	eng_op *next_active; // the peer's list of ops with chunks to issue
	bool active;
	UT_hash_handle hh; // the engine's ops by id
};

// A remote send announced and not yet matched here.
typedef struct eng_rts {
	struct eng_rts *next;
	uint64_t sid, tag, len;
} eng_rts;

// Something the sending thread sends: a frame, and then the data.
typedef struct eng_out {
	struct eng_out *next;
	tw__eng_hdr h;
	void *owned; // data owned by the item (notifications), or NULL
	eng_reg *reg; // READ reply: the data lies in reg (referenced)
	size_t reg_off;
} eng_out;

typedef enum { PEER_HELLO, PEER_LIVE, PEER_FAILED } peer_state;

struct eng_peer {
	tw_engine *e;
	tw_peer id;
	char name[TW_ENG_NAME_MAX + 1];
	uint64_t instance; // the peer engine's (from its info or HELLO)
	tw_link *link;
	size_t other; // the peer's rank in the link
	peer_state state;
	int status; // once failed
	unsigned refs; // the engine's table, transfers; by mtx
	bool gone; // disconnected: unknown to the API
	uint64_t max_notify; // the peer's TW_OPT_MAX_MSG_SIZE
	// The window, in bytes (STRIPES x WINDOW x CHUNK_SIZE, so that a
	// chunk smaller than CHUNK_SIZE takes less of it) and in chunks (64
	// times STRIPES x WINDOW: a bound on replies owed); one chunk may
	// always go.
	uint64_t max_inflight, max_inflight_n;
	uint64_t inflight, inflight_n; // chunks sent and not answered
	uint64_t matches; // receives matched here so far

	pthread_t rx, tx;
	bool threads; // started
	bool stop; // the sending thread ends
	bool drain; // ... once the control frames queued have gone
	bool hold_signal; // the receiving thread signals txcv once, later
	pthread_cond_t txcv; // work for the sending thread
	eng_out *out, *out_tail; // control frames and READ replies
	eng_op *active, *active_tail; // ops with chunks to issue

	eng_op **recvs; // posted receives not yet matched, FIFO
	size_t nrecvs, caprecvs;
	eng_rts *rts, *rts_tail; // remote sends not yet matched, FIFO
	size_t nrts;
	eng_rmem *rmems; // uthash by our id

	tw_xfer_stats st;
};

enum { X_NEW, X_RUN, X_DONE, X_FAILED };

struct tw_xfer {
	tw_engine *e;
	eng_peer *p; // referenced
	int64_t timeout_ms;
	int64_t deadline;
	eng_op **ops; // each its own allocation: frames find them by pointer
	size_t nops, capops;
	void *note; // the notification, or NULL
	size_t note_len;
	bool has_note;
	int state; // X_*
	int status;
	size_t pending; // ops not done
	bool reported; // test/wait/reap said it finished: no more posts
	bool queued; // in the engine's finished list
	tw_xfer *next_done;
	tw_xfer *prev_all, *next_all; // every transfer of the engine
};

typedef struct eng_note {
	struct eng_note *next;
	tw_peer from;
	void *data;
	size_t len;
} eng_note;

typedef struct eng_incoming {
	struct eng_incoming *next;
	char link_id[256];
	char peer_name[TW_ENG_NAME_MAX + 1];
	char peer_addr[TW_ENG_ADDR_MAX + 1];
	bool started;
	pthread_t th;
	struct tw_engine *e;
} eng_incoming;

struct tw_engine {
	char name[TW_ENG_NAME_MAX + 1];
	uint64_t instance;
	int64_t stripes, chunk, window, connect_ms, heartbeat_ms, max_msg,
	    shm_local;
	unsigned char *secret;
	size_t secret_len;
	char *tls[3];

	pthread_mutex_t mtx;
	pthread_cond_t cv; // peers, transfers, notifications changed
	pthread_cond_t io_cv; // a copy ended (op->io, reg->refs fell)
	bool frozen; // listened or connected: options are fixed
	bool listening; // a tw_engine_listen is under way or succeeded
	bool closing;
	char *addr; // where it listens, or NULL
	char *out_addr; // its address for links it dials (tcp://)
	void *anchor; // tw__tcp_anchor of addr, and of out_addr
	void *out_anchor;
	bool mem_listed; // in the mem:// registry

	eng_peer **peers; // [npeers], by id - 1; NULL once gone
	size_t npeers;

	eng_reg *regs; // uthash by id
	uint64_t next_mem_id;
	uint64_t next_rmem_id;
	eng_op *ops; // uthash by id: running ops
	uint64_t next_op_id;

	tw_xfer *done_head, *done_tail; // finished, not reaped
	tw_xfer *all; // every transfer not freed
	eng_note *notes, *notes_tail;
	int efd; // eventfd: readable while done or notes wait
	bool efd_set;

	pthread_t timer;
	bool timer_started, timer_stop;
	pthread_cond_t timer_cv;

	// Connection requests (the tcp:// anchor's callback, mem:// connects).
	pthread_mutex_t inc_mtx;
	eng_incoming *inc; // pending and running
	unsigned ninc;
	bool inc_closed;
};

// --- engine.c --------------------------------------------------------------------
// A peer by number, referenced with the mutex held; NULL if unknown/gone.
eng_peer *tw__eng_peer_get(tw_engine *e, tw_peer id);
void tw__eng_peer_unref(eng_peer *p); // mtx held

// --- peer.c ----------------------------------------------------------------------
// Makes the peer over `link` (the caller's until TW_OK), starts its
// threads and sends HELLO.  Adds it to the engine's table.  TW_OK,
// TW_ENOMEM, TW_ESYS.
int tw__eng_peer_start(tw_engine *e, tw_link *link, size_t other,
    const char *name, uint64_t instance, eng_peer **out);
// Stops the peer's threads and closes its link (not with mtx held).
void tw__eng_peer_stop(eng_peer *p, bool graceful);
// Fails the peer (mtx held): its transfers fail with `status`, its
// sending thread stops.
void tw__eng_peer_fail(eng_peer *p, int status);
// Queues a frame for the sending thread (mtx held).  Owned data passes.
int tw__eng_peer_queue(eng_peer *p, const tw__eng_hdr *h, void *owned);
// An op has chunks to issue (mtx held).
void tw__eng_peer_activate(eng_peer *p, eng_op *op);
void tw__eng_peer_deactivate(eng_peer *p, eng_op *op);

// --- xfer.c ----------------------------------------------------------------------
// An op's bytes are all confirmed, or it failed (mtx held).
void tw__eng_op_done(eng_op *op);
void tw__eng_op_fail(eng_op *op, int status);
// Fails the op without telling the peer (it knows already).
void tw__eng_op_abandon(eng_op *op, int status);
// Starts an op of a running transfer (mtx held): TW_OK, or the op failed.
void tw__eng_op_start(eng_op *op);
// Matches a remote send with the oldest posted receive of its tag, or
// keeps it (mtx held).  TW_OK, or TW_EPROTO when too many wait.
int tw__eng_match_rts(eng_peer *p, uint64_t sid, uint64_t tag, uint64_t len);
// The peer gave up its send `sid` (mtx held).
// With `why` TW_ETRUNC: the lengths differed, the matched receive fails.
void tw__eng_cancel_rts(eng_peer *p, uint64_t sid, int why);
// Fails every transfer of p (mtx held).
void tw__eng_fail_peer_xfers(eng_peer *p, int status);
// The eventfd follows the queues (mtx held).
void tw__eng_efd_update(tw_engine *e);
// Stops the deadline thread; fails and frees what is left (engine free).
void tw__eng_xfers_shutdown(tw_engine *e);
// Frees the notifications queued.
void tw__eng_notes_free(tw_engine *e);

// --- mem.c -------------------------------------------------------------------------
eng_reg *tw__eng_reg_find(tw_engine *e, uint64_t id); // mtx held; live only
void tw__eng_reg_unref(tw_engine *e, eng_reg *r); // mtx held
void tw__eng_regs_free(tw_engine *e);
// Checks a peer's one-sided request against registration `id` (mtx
// held): the registration, referenced, or NULL with *status TW_EINVAL.
eng_reg *tw__eng_reg_check(tw_engine *e, uint64_t id, uint64_t key,
    uint64_t off, uint64_t len, unsigned access);
eng_rmem *tw__eng_rmem_find(eng_peer *p, uint64_t id);
void tw__eng_rmems_free(eng_peer *p);

#endif // TW_ENGINE_ENG_H
