// Sockets of the tcp:// transport: name resolution, the process-wide
// registry of listening sockets, connecting with retries, and the
// connection handshake's records and connecting side (tcp_hs.c).
//
// Listeners.  A process listens once per address, whatever the number of
// links that name it: tw__tcp_listener_get binds on first use and hands
// out references to the same socket afterwards; the socket closes with the
// last reference.  An address with port 0 binds an ephemeral port and is
// registered under the port it got, so that links created later with the
// real port share it (nng's NNG_OPT_BOUND_PORT serves the same purpose).
//
// All functions are thread-safe.

#ifndef TW_TRANSPORT_TCP_TCP_SOCK_H
#define TW_TRANSPORT_TCP_TCP_SOCK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "transport/tcp/tcp_proto.h"
#include "transport/tcp/tcp_tls.h"

typedef struct tw__tcp_listener tw__tcp_listener;

// The listener of `addr` ("tcp://HOST:PORT"), bound (and listening) on
// first use.  TW_OK; TW_EINVAL (malformed address); TW_ESYS when the
// address does not resolve or cannot be bound, with one log line naming
// the address and the system error; TW_ENOMEM.
int tw__tcp_listener_get(const char *addr, tw__tcp_listener **out_l);

// Drops a reference; the last one closes the socket.  NULL-safe.
void tw__tcp_listener_put(tw__tcp_listener *l);

// The listening descriptor (non-blocking, close-on-exec).
int tw__tcp_listener_fd(const tw__tcp_listener *l);

// The port the socket is bound to (the real one after port 0).
uint16_t tw__tcp_listener_port(const tw__tcp_listener *l);

// "host:port" as this listener announces itself in handshakes.
const char *tw__tcp_listener_name(const tw__tcp_listener *l);

// How many listeners this process holds (for tests).
size_t tw__tcp_listener_count(void);

// Connects to host:port, retrying with a growing pause (1 ms up to 100 ms)
// while the peer is not there yet, until `deadline` (tw__now_ns scale) or
// until *cancel (atomic, may be NULL) becomes non-zero; a connect that the
// network leaves unanswered (a host that drops SYNs) is bounded by the
// same deadline and cancel flag.  On TW_OK *out_fd is a connected,
// non-blocking, close-on-exec socket with TCP_NODELAY.
// TW_ETIMEDOUT, TW_ECLOSED (cancelled), TW_ESYS (the name does not resolve,
// or a socket cannot be made; logged).
int tw__tcp_dial(const char *host, uint16_t port, int64_t deadline,
    const _Atomic int *cancel, int *out_fd);

// One attempt of tw__tcp_dial, for a connection that resumes: TW_OK,
// TW_EPEER (refused: nothing listens there, the process is gone),
// TW_ETIMEDOUT (anything else: no answer, no route, a name that does not
// resolve now), TW_ECLOSED (cancelled).
int tw__tcp_dial_once(const char *host, uint16_t port, int64_t deadline,
    const _Atomic int *cancel, int *out_fd);

// "tcp://IP:0" (IPv6 in brackets) in out: the local address whose route
// reaches `target` ("tcp://HOST:PORT"), found by connecting a UDP socket,
// which sends nothing.  TW_OK, TW_EINVAL (malformed target), TW_ESYS (the
// name does not resolve, no route).
int tw__tcp_local_addr_for(const char *target, char *out, size_t cap);

// Waits until fd is ready for `events` (POLLIN, POLLOUT), `deadline`
// passes (TW_ETIMEDOUT) or *cancel (may be NULL) becomes non-zero
// (TW_ECLOSED), looking at the flag every 10 ms.  TW_OK, or TW_ESYS when
// poll fails.
int tw__tcp_wait_fd(
    int fd, short events, int64_t deadline, const _Atomic int *cancel);

// Reads what fd has, at most n bytes, without blocking.  TW_OK with *got
// > 0, TW_EAGAIN (nothing now), TW_EPEER (EOF, a reset or another error).
int tw__tcp_recv(int fd, void *buf, size_t n, size_t *got);

// What a connected socket of ours is set to, on either side: no Nagle
// (small frames must not wait for its timer), and to a peer on the
// loopback interface a send buffer of TW_TCP_LOOPBACK_SNDBUF.  A long
// message's sender waits, at its end, until the peer has read its last
// chunk (the bytes stay ours to resend after a reconnection until then):
// the kernel's own sizing lets a loopback socket buffer megabytes, which
// the peer must drain while the sender waits, every message.  Between
// hosts the buffer must cover the bandwidth-delay product, and the
// kernel's sizing stays.  Best effort: a setting refused changes nothing
// else.
#define TW_TCP_LOOPBACK_SNDBUF (128 * 1024)
void tw__tcp_sock_tune(int fd);
// Whether `sa` is an address of the loopback interface (127.0.0.0/8, ::1,
// or 127.0.0.0/8 mapped into IPv6).
bool tw__tcp_addr_is_loopback(const struct sockaddr *sa);

// What this end announces in the handshake.
typedef struct tw__tcp_hs_self {
	const char *link_id;
	uint32_t rank;
	uint16_t stripe;
	uint64_t instance;
	uint64_t session; // the session (the dialer's id; echoed back)
	bool resume; // continuing a stream of that session
	uint64_t received; // the last frame of the stream handled here
	const char *addr; // our listening address, "host:port"
	const void *secret; // NULL: the link has none
	size_t secret_len;
	bool tls; // the link uses TLS (TW_TCP_CAP_TLS)
} tw__tcp_hs_self;

// What the peer announced, copied out of the wire bytes.
typedef struct tw__tcp_hs_peer {
	uint32_t rank;
	uint16_t stripe;
	uint16_t flags;
	uint64_t instance;
	uint64_t session;
	uint64_t received;
	char link_id[256];
	char addr[TW_TCP_ADDR_MAX + 1];
	unsigned char nonce[TW_TCP_NONCE_LEN]; // the peer's
	unsigned char my_nonce[TW_TCP_NONCE_LEN]; // ours, on this connection
} tw__tcp_hs_peer;

// Runs the connecting side of the handshake on connected socket `fd` until
// `deadline` or *cancel (may be NULL): sends our HELLO, reads the answer
// (which must name the same link) and, when both ends have a secret, each
// proves it holds it (tcp_auth.h).  Returns TW_OK with *peer filled;
// TW_EPROTO (malformed bytes, another version, another link), TW_EAUTH (a
// proof failed, or only one end has a secret), TW_ETIMEDOUT, TW_ECLOSED
// (cancelled), TW_EPEER (the connection broke: the peer closed it without
// an answer), TW_ESYS.  Every failure writes one log line naming the peer.
// The caller closes `fd` on failure.
int tw__tcp_handshake(int fd, const tw__tcp_hs_self *me, int64_t deadline,
    const _Atomic int *cancel, tw__tcp_hs_peer *peer);

// The same inside TLS: `tls` (handshaken already, on fd) carries every
// byte.  Also TW_EAUTH when TLS reports that the peer refused our
// certificate (TLS 1.3 says so at the first read), with the reason.
int tw__tcp_handshake_tls(int fd, tw__tls *tls, const tw__tcp_hs_self *me,
    int64_t deadline, const _Atomic int *cancel, tw__tcp_hs_peer *peer);

// The records of the handshake, shared by both sides.
//
// Writes our HELLO into buf[0..cap); its length, or 0 when it does not
// fit or a field is invalid.
size_t tw__tcp_hs_hello_make(const tw__tcp_hs_self *me,
    const unsigned char nonce[TW_TCP_NONCE_LEN], unsigned char *buf,
    size_t cap);
// What the peer's HELLO says, with our nonce on this connection.
void tw__tcp_hs_peer_from(tw__tcp_hs_peer *p, const tw__tcp_hello *h,
    const unsigned char my_nonce[TW_TCP_NONCE_LEN]);
// TW_OK when both ends have a secret or neither has, and both use TLS or
// neither does, else TW_EAUTH and *why.
int tw__tcp_hs_secrets_match(
    const tw__tcp_hs_self *me, const tw__tcp_hs_peer *peer, const char **why);
// Our AUTH record for this connection.  TW_OK or TW_ESYS (logged).
int tw__tcp_hs_auth_make(const tw__tcp_hs_self *me,
    const tw__tcp_hs_peer *peer, unsigned char rec[TW_TCP_AUTH_LEN]);
// Checks the peer's AUTH record.  TW_OK, TW_EPROTO (malformed),
// TW_EAUTH (wrong proof), TW_ESYS; *why says what failed.
int tw__tcp_hs_auth_check(const tw__tcp_hs_self *me,
    const tw__tcp_hs_peer *peer, const unsigned char rec[TW_TCP_AUTH_LEN],
    const char **why);

#endif // TW_TRANSPORT_TCP_TCP_SOCK_H
