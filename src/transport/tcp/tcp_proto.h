// The wire format of the tcp:// transport: the handshake, the
// authentication record and the frame header, with their encoders and
// decoders.  docs/PROTOCOL.md is the reference; this header repeats the
// layouts so that the code can be read alone.
//
// Everything here is a pure function over caller memory, in the manner of
// picohttpparser: nothing allocates, nothing reads outside [buf, buf + n),
// and every length read from the wire is checked against its limit before
// the caller could act on it.  A decoder returns the number of bytes it
// consumed (> 0), TW_EAGAIN when the buffer holds only a prefix of a valid
// record (read more and call again with the longer buffer), or TW_EPROTO
// with *why set to a constant description.  A decoder fails as early as the
// bytes allow: garbage or a wrong version is refused from its first bytes,
// so a hostile peer cannot make the receiver wait for a record that will
// never be valid.
//
// All integers travel in network byte order (big endian): the two ends may
// be different machines.

#ifndef TW_TRANSPORT_TCP_TCP_PROTO_H
#define TW_TRANSPORT_TCP_TCP_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define TW_TCP_PROTO_VERSION 5u

// "TWIR": the first bytes of every tcp:// connection.
#define TW_TCP_HELLO_MAGIC UINT32_C(0x54574952)
// "TWAU": the first bytes of an authentication record.
#define TW_TCP_AUTH_MAGIC UINT32_C(0x54574155)

#define TW_TCP_NONCE_LEN 32
#define TW_TCP_MAC_LEN 32 // HMAC-SHA256

// The longest "host:port" a party may announce as its listening address.
#define TW_TCP_ADDR_MAX 255

// Capability flags of the handshake.  Unknown bits are ignored, so that a
// later version can offer a capability without breaking this one.
enum {
	TW_TCP_CAP_SECRET = 1u << 0, // an authentication record follows
	TW_TCP_CAP_STRIPE = 1u << 1, // an extra connection for bulk data
	TW_TCP_CAP_SHM_LOCAL = 1u << 2, // may move data over shared memory
	TW_TCP_CAP_TLS = 1u << 3, // the sender's link uses TLS
	// This connection continues stream `stripe` of session `session`
	// after the one before broke; `received` says where to resume.
	TW_TCP_CAP_RESUME = 1u << 4,
};

// Handshake (sent by both ends as soon as the connection is up):
//
//   off len
//     0   4  magic "TWIR"
//     4   2  version (4)
//     6   2  capability flags
//     8   4  rank of the sender in the link it names
//    12   2  stripe index (0: the main connection)
//    14   1  link id length, 1..TW_LINK_ID_MAX
//    15   1  address length, 1..TW_TCP_ADDR_MAX
//    16   8  instance: a random, non-zero number per process and listener
//    24  32  nonce: fresh random bytes for this connection
//    56   8  session: the connecting side's random id of the session
//            (the connections between two processes), non-zero
//    64   8  received: the last frame of this stream the sender has
//            handled (a resumed connection goes on after it; else 0)
//    72   -  link id, then the sender's listening address ("host:port")
#define TW_TCP_HELLO_FIXED 72
#define TW_TCP_HELLO_MAX (TW_TCP_HELLO_FIXED + 255 + TW_TCP_ADDR_MAX)

typedef struct tw__tcp_hello {
	uint16_t version;
	uint16_t flags;
	uint32_t rank;
	uint16_t stripe;
	uint64_t instance;
	unsigned char nonce[TW_TCP_NONCE_LEN];
	uint64_t session;
	uint64_t received;
	const char *link_id; // points into the buffer, not NUL-terminated
	size_t link_id_len;
	const char *addr; // likewise
	size_t addr_len;
} tw__tcp_hello;

// Decodes a handshake at the start of buf[0..n).  The link id must be a
// valid link id and the address printable ASCII without spaces.
int tw__tcp_hello_decode(
    const void *buf, size_t n, tw__tcp_hello *h, const char **why);

// Writes a handshake into dst[0..cap); returns its length, or 0 when the
// fields are invalid or it does not fit.
size_t tw__tcp_hello_encode(void *dst, size_t cap, const tw__tcp_hello *h);

// Authentication record (sent by both ends after the handshakes when both
// announced TW_TCP_CAP_SECRET):
//
//   off len
//     0   4  magic "TWAU"
//     4  32  HMAC-SHA256 proof (see tcp_auth.h)
#define TW_TCP_AUTH_LEN 36

// Decodes an authentication record; copies the proof into mac.
int tw__tcp_auth_decode(const void *buf, size_t n,
    unsigned char mac[TW_TCP_MAC_LEN], const char **why);
size_t tw__tcp_auth_encode(
    void *dst, size_t cap, const unsigned char mac[TW_TCP_MAC_LEN]);

// Frame types after the handshake.
enum {
	TW_TCP_F_OPEN = 1, // key: link id; payload: tw__tcp_open below
	TW_TCP_F_DATA = 2, // key: message key; payload: the message
	TW_TCP_F_CLOSE_NS = 3, // key: namespace the sender closed
	TW_TCP_F_ABORT_NS = 4, // key: namespace the sender aborted
	TW_TCP_F_ACK = 5, // nothing: carries only the cumulative ack
	TW_TCP_F_PING = 6, // heartbeat; the peer answers with PONG
	TW_TCP_F_PONG = 7,
	TW_TCP_F_BYE = 8, // the sender closes the connection cleanly
	TW_TCP_F_UNBIND = 9, // the sender's link of this slot is gone
	TW_TCP_F_CREDIT = 10, // payload u64: data bytes received so far
	TW_TCP_F_CREDIT_REQ = 11, // the sender waits for credit
	TW_TCP_F_STRIPED = 12, // key: message key; payload: tw__tcp_striped
	TW_TCP_F_CHUNK = 13, // a piece of a striped message (any stripe)
	TW_TCP_F_CANCEL = 14, // payload u64: a striped message id given up
};

// The largest payload of a DATA frame and the largest bytes part of a
// CHUNK frame.  Messages longer than this travel as a STRIPED announcement
// and CHUNKs of at most this size, so that no frame holds a connection for
// long: heartbeats, credit and acks always pass between two frames, and a
// sender can stop between them.
#define TW_TCP_FRAME_MAX (256u * 1024u)

// Frame header, followed by the key and then the payload:
//
//   off len
//     0   1  type
//     1   1  flags (none defined: must be 0)
//     2   2  key length
//     4   4  link slot: the sender's number for the link (see OPEN)
//     8   8  payload length
//    16   8  sequence number of this frame (1, 2, 3, ... per direction)
//    24   8  cumulative ack: the highest sequence number the sender has
//            handled from the peer (delivered; held back behind a striped
//            message that is not complete; 0: none yet)
//    32   8  received: the highest sequence number whose frame the sender
//            has read whole (>= ack): the peer may forget every frame up
//            to it, since a resumed connection never needs it again
//    40   -  key
#define TW_TCP_HDR_LEN 40
#define TW_TCP_OPEN_LEN 56
#define TW_TCP_CREDIT_LEN 8
#define TW_TCP_CANCEL_LEN 8
#define TW_TCP_STRIPED_LEN 16
#define TW_TCP_CHUNK_PREFIX 24

typedef struct tw__tcp_hdr {
	uint8_t type;
	uint32_t slot;
	uint64_t len; // payload bytes that follow the key
	uint64_t seq;
	uint64_t ack;
	uint64_t rcvd;
	const char *key; // points into the buffer, not NUL-terminated
	size_t key_len;
} tw__tcp_hdr;

// Decodes a frame header and its key at the start of buf[0..n), checking
// the payload length before anything is allocated for it: a DATA payload,
// and the bytes of a CHUNK after its prefix, may not exceed max_payload
// (TW_TCP_FRAME_MAX on a connection); other types have fixed lengths.  Returns the bytes of header and key
// (the payload is not consumed), TW_EAGAIN or TW_EPROTO.
int tw__tcp_hdr_decode(const void *buf, size_t n, uint64_t max_payload,
    tw__tcp_hdr *h, const char **why);

// Writes a frame header and its key into dst[0..cap); returns
// TW_TCP_HDR_LEN + key_len, or 0 when it does not fit or the key is longer
// than a key may be.
size_t tw__tcp_hdr_encode(void *dst, size_t cap, const tw__tcp_hdr *h);

// memcpy for the few bytes to few dozen of a key or a small message's
// payload, inlined: the library's memcpy, picked at run time and never
// inlined, cost more than such a copy (a tenth of a stream of 8-byte
// messages' sending time went to its three calls per frame).  dst and
// src do not overlap; n may be 0 (src may then be NULL).
static inline void tw__tcp_copy_short(void *dst, const void *src, size_t n)
{
	unsigned char *d = dst;
	const unsigned char *s = src;
	// Constant sizes, which the compiler copies inline; the two parts
	// overlap when n is not twice the size.
	if (n > 32) {
		memcpy(d, s, n);
	} else if (n >= 16) {
		memcpy(d, s, 16);
		memcpy(d + n - 16, s + n - 16, 16);
	} else if (n >= 8) {
		memcpy(d, s, 8);
		memcpy(d + n - 8, s + n - 8, 8);
	} else if (n >= 4) {
		memcpy(d, s, 4);
		memcpy(d + n - 4, s + n - 4, 4);
	} else {
		for (size_t i = 0; i < n; i++)
			d[i] = s[i];
	}
}

// The payload of an OPEN frame, which binds a link to the connection in
// the sender's direction (docs/PROTOCOL.md, "Links on a connection"):
//
//   off len
//     0   4  rank of the sender in the link
//     4   4  number of parties of the link (at least 2)
//     8   8  window: the cost (tw__msg_cost) of the messages the sender
//            will hold unreceived from the peer on this link before it
//            stops granting credit (> 0)
//    16   8  the largest message the sender accepts on this link
//    24  32  proof of the link's secret (tcp_auth.h), zeros without one
typedef struct tw__tcp_open {
	uint32_t rank;
	uint32_t size;
	uint64_t window;
	uint64_t max_msg;
	unsigned char proof[TW_TCP_MAC_LEN];
} tw__tcp_open;

int tw__tcp_open_decode(const void *buf, size_t n, tw__tcp_open *o);
void tw__tcp_open_encode(
    unsigned char dst[TW_TCP_OPEN_LEN], const tw__tcp_open *o);

// The payload of a CREDIT frame: the cost (tw__msg_cost) of the data
// messages (DATA frames and striped messages whose key is not a control
// key) of this link that the sender has taken out of its mailbox, or
// discarded, since the link was bound.  It only grows: a smaller value is
// a stale report, which the receiver ignores.
int tw__tcp_credit_decode(const void *buf, size_t n, uint64_t *taken);
void tw__tcp_credit_encode(unsigned char dst[TW_TCP_CREDIT_LEN], uint64_t v);

// A message striped over a connection and its extra connections: a
// STRIPED frame takes the message's place in the order of the main
// connection, and CHUNK frames on any of the connections carry its bytes.
//
// STRIPED payload:               CHUNK payload:
//   off len                        off len
//     0   8  message id              0   8  message id
//     8   8  total length            8   8  total length
//                                   16   8  offset of these bytes
//                                   24   -  the bytes
//
// Ids count up per direction of a main connection; total > 0, offset <
// total (the receiver also checks offset + bytes <= total).
typedef struct tw__tcp_chunk {
	uint64_t id;
	uint64_t total;
	uint64_t offset; // CHUNK only
} tw__tcp_chunk;

// CANCEL payload: the id (u64) of a striped message of the sender that it
// gave up (its link was aborted): the receiver drops what it has of it.
int tw__tcp_cancel_decode(const void *buf, size_t n, uint64_t *id);
void tw__tcp_cancel_encode(unsigned char dst[TW_TCP_CANCEL_LEN], uint64_t id);

int tw__tcp_striped_decode(const void *buf, size_t n, tw__tcp_chunk *c);
void tw__tcp_striped_encode(
    unsigned char dst[TW_TCP_STRIPED_LEN], const tw__tcp_chunk *c);
int tw__tcp_chunk_decode(const void *buf, size_t n, tw__tcp_chunk *c);
void tw__tcp_chunk_encode(
    unsigned char dst[TW_TCP_CHUNK_PREFIX], const tw__tcp_chunk *c);

// Receive-side order of one connection: every frame carries the next
// sequence number, and acks only grow and never acknowledge a frame that
// was not sent.
typedef struct tw__tcp_rx {
	uint64_t next_seq; // the number the next frame must carry
	uint64_t peer_ack; // the last ack received
	uint64_t peer_rcvd; // the last `received` received
} tw__tcp_rx;

void tw__tcp_rx_init(tw__tcp_rx *st);

// The state of a stream that resumes after the frame `done` on a new
// connection: the peer's ack and `received` stay as they were.
void tw__tcp_rx_resume(tw__tcp_rx *st, uint64_t done);

// Checks a decoded header against the connection's state; `sent` is the
// number of frames this side has sent so far.  Advances the state and
// returns TW_OK, or TW_EPROTO with *why.
int tw__tcp_rx_step(
    tw__tcp_rx *st, const tw__tcp_hdr *h, uint64_t sent, const char **why);

// Splits "tcp://HOST:PORT" (HOST a name, IPv4 or [IPv6]) into host (without
// brackets) and port.  host: at least TW_TCP_ADDR_MAX + 1 bytes.  Returns
// TW_OK or TW_EINVAL.
int tw__tcp_addr_parse(
    const char *addr, char *host, size_t host_cap, uint16_t *port);

#endif // TW_TRANSPORT_TCP_TCP_PROTO_H
