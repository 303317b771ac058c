// Internal shape of links.
//
// A family is the root link created by tw_link_create* together with every
// child spawned from it: they share the channels (one per peer of the
// root), and for user channels a stash mailbox where probes and
// truncated receives park messages they pulled out of a channel.  Child
// links map their ranks onto root ranks and prefix every key with their own
// id, so that the family's traffic can share connections without meeting.

#ifndef TW_LINK_LINK_INT_H
#define TW_LINK_LINK_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <tagwire/tagwire.h>

#include "core/counters.h"
#include "core/names.h"
#include "core/opts.h"
#include "transport/transport.h"

typedef struct tw__family {
	pthread_mutex_t mtx; // guards the link tree (children lists)
	size_t size; // parties of the root link
	size_t self; // this party's root rank
	tw_channel **chans; // by root rank; chans[self] == NULL
	const tw__chan_xops *xops; // NULL for user channels
	tw_mailbox *stash; // user channels only
	// TW_OPT_SHM_LOCAL (shmlocal.c): set while the root link is created,
	// before anyone else sees the family, and constant after.  peer_xops
	// gives the table of each channel when they differ (NULL: xops for
	// all); spare keeps the tcp:// channels that shm:// ones replaced,
	// idle until the family goes (NULL: none).
	const tw__chan_xops **peer_xops;
	tw_channel **spare;
} tw__family;

// The table of the built-in channel to root rank `root_peer`.
static inline const tw__chan_xops *tw__fam_xops(
    const tw__family *f, size_t root_peer)
{
	return f->peer_xops != NULL ? f->peer_xops[root_peer] : f->xops;
}

typedef struct tw__peer {
	_Atomic uint64_t sent; // point-to-point messages sent there
	_Atomic uint64_t acked; // of those, consumed there as last reported
	_Atomic uint64_t consumed; // messages from there consumed here
	pthread_mutex_t ack_mtx; // one thread at a time pulls acks
} tw__peer;

// The counts behind tw_stats, in a tw__counters set (counters.h: no atomic
// read-modify-write per message).
enum {
	TW__ST_MSGS_SENT,
	TW__ST_BYTES_SENT,
	TW__ST_MSGS_RECV,
	TW__ST_BYTES_RECV
};

struct tw_link {
	tw__family *fam;
	tw_link *parent;
	tw_link *first_child; // protected by fam->mtx
	tw_link *next_sibling; // protected by fam->mtx
	char *id;
	size_t id_len; // strlen(id): every message's key starts with it
	size_t size;
	size_t rank;
	size_t *map; // link rank -> root rank
	tw__peer *peers; // by link rank
	int64_t opts[TW_OPT_COUNT];
	_Atomic int64_t recv_timeout;
	_Atomic int aborted; // also the cancel flag of blocked sends
	tw__counters stats;
};

// The link's own messages (collectives) under full keys; the caller has
// checked the peer and built the key.  Neither counts in the statistics or
// the throttle window.  A send copies `buf` when `async`, waits for flow
// control until the receive timeout, and refuses a message longer than
// TW_OPT_MAX_MSG_SIZE (TW_ETOOBIG, nothing sent), which the receiver would
// refuse: tcp:// and shm:// would drop the peer for it, and with it every
// link they share.  A receive waits until `deadline`.  Both return the
// codes of tw__chan_send and tw__chan_recv.
int tw__link_send_key(tw_link *l, size_t dst, const char *key, const void *buf,
    size_t len, bool async);
int tw__link_recv_key(
    tw_link *l, size_t src, const char *key, int64_t deadline, tw_buf *out);

// Waits for the link's pending sends until `deadline` (tw_link_wait_pending
// with the receive timeout; tw_link_close with its own bound).
int tw__link_wait_pending_until(tw_link *l, int64_t deadline);

// The deadline of a receive that starts now.
int64_t tw__link_recv_deadline(const tw_link *l);

// Channel access that hides the difference between built-in transports
// (tw__chan_xops) and user channels (public ops, the stash, polling).
int tw__chan_send(tw_link *l, size_t root_peer, const char *key,
    const void *buf, size_t len, bool async, int64_t deadline);
int tw__chan_recv(tw_link *l, size_t root_peer, const char *key,
    int64_t deadline, tw_buf *out);
int tw__chan_recv_into(tw_link *l, size_t root_peer, const char *key,
    int64_t deadline, void *buf, size_t cap, size_t *len);
int tw__chan_probe(tw_link *l, size_t root_peer, const char *key, size_t *len);

// Creates the root link of a new family over `chans` (ownership passes on
// TW_OK) and runs the handshake.  On failure the channels are left to the
// caller when `keep_chans_on_error`, else destroyed.
int tw__link_create_root(const tw_desc *d, size_t self, tw_channel **chans,
    const tw__chan_xops *xops, bool keep_chans_on_error, tw_link **out);

// tw_link_create for a description with a root (tw_desc_set_root): learns
// the parties from rank 0, then creates the link over them (rdv.c).
int tw__rdv_link_create(const tw_desc *d, size_t self, tw_link **out);

// TW_OPT_SHM_LOCAL: moves the peers of new root link `l` (over tcp://,
// made from `d`) that share this host and its shared memory onto shm://
// channels, in agreement with each of them (shmlocal.c).  Runs while
// tw_link_create holds `l` alone; waits for the peers until the connect
// timeout.  TW_OK (whatever moved), TW_ETIMEDOUT (a peer did not answer:
// it may not have the option set), TW_EPEER, TW_EPROTO (a malformed
// answer), TW_ENOMEM, TW_ESYS (no randomness).  On failure the link is
// the caller's to abort.
int tw__shmlocal_upgrade(tw_link *l, const tw_desc *d);
// What names this host for it: SHA-256 of TAGWIRE_HOST_ID when set, else
// of the kernel's boot id and this process's pid namespace.
void tw__shml_host_id(uint8_t out[32]);
// Whether the probe that hello `h` names exists here and holds its token.
struct tw__shml_hello;
bool tw__shml_probe_sees(const struct tw__shml_hello *h);

// Whether the messages to link rank `peer` travel over shm:// (the
// transport's own, or moved there by TW_OPT_SHM_LOCAL).  For tests.
bool tw__link_peer_on_shm(const tw_link *l, size_t peer);

// Internal view of a description.
size_t tw__desc_size(const tw_desc *d); // parties named so far
// The root address of tw_desc_set_root (NULL: none) and, in *bind (may be
// NULL), its bind address (NULL: the default).
const char *tw__desc_root(const tw_desc *d, const char **bind);
const char *tw__desc_link_id(const tw_desc *d);
const tw__party *tw__desc_parties(const tw_desc *d);
const int64_t *tw__desc_opts(const tw_desc *d);
const void *tw__desc_secret(const tw_desc *d, size_t *len);
// The TLS files {certificate, key, CA}, or NULL when TLS is not set.
const char *const *tw__desc_tls(const tw_desc *d);
// For links of two parties made by the transfer engine: only `rank`
// connects, whatever the addresses (its peer may not be reachable, or not
// listen at all).  tw__desc_dial_rank: -1 when unset (by address).
void tw__desc_set_dial_rank(tw_desc *d, size_t rank);
int tw__desc_dial_rank(const tw_desc *d);

// The most this party ever held from link rank `src` of messages not yet
// received, in tw__msg_cost (core/mailbox.h); 0 when the channel cannot
// tell.  For tests.
uint64_t tw__link_unreceived_peak(tw_link *l, size_t src);

// The namespace entries (closes and aborts) kept where messages from link
// rank `peer` wait (tw__chan_xops.ns_entries), SIZE_MAX when the channel
// cannot tell.  For tests.
size_t tw__link_ns_entries(tw_link *l, size_t peer);

#endif // TW_LINK_LINK_INT_H
