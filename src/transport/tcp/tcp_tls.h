// TLS 1.3 for tcp:// connections, over OpenSSL's libssl.
//
// A context (tw__tls_ctx) holds this party's certificate and key and the
// CA that peers' certificates must chain to; a node of the transport makes
// one from the files a link names and every TLS connection of the node
// uses it.  A connection's TLS state (tw__tls) wraps one socket: the
// handshake (a non-blocking step for the accepting side's state machine,
// a blocking one with a deadline for the dialer), then reads and writes
// that take the place of recv and sendmsg.
//
// Both ends present certificates and both verify them against the CA;
// the name check (tw__tls_peer_is) is the caller's, since only it knows
// which party the connection claims to be.  No session is ever resumed:
// no tickets, no cache.
//
// Thread-safety: contexts are immutable once made.  A connection's reader
// and writer may call tw__tls_recv and tw__tls_writev at the same time:
// every call into libssl of one tw__tls runs under its own mutex.  The
// handshake functions are for one thread, before the connection is shared.

#ifndef TW_TRANSPORT_TCP_TCP_TLS_H
#define TW_TRANSPORT_TCP_TCP_TLS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

// The first byte of a TLS connection (a handshake record): what the
// accepting side looks for to tell TLS from a plaintext HELLO ('T').
#define TW_TLS_FIRST_BYTE 0x16

typedef struct tw__tls_ctx tw__tls_ctx;
typedef struct tw__tls tw__tls;

// Makes a context from PEM files: this party's certificate (chain), its
// private key and the CA certificates that peers must chain to.  The
// files are read now.  TW_OK; TW_EINVAL when a file cannot be read, is not
// PEM of the right kind, or the key does not match the certificate, with
// one log line naming the file and the reason; TW_ENOMEM, TW_ESYS.
int tw__tls_ctx_new(const char *cert_file, const char *key_file,
    const char *ca_file, tw__tls_ctx **out);

// Frees a context.  Connections made from it keep what they need.
// NULL-safe.
void tw__tls_ctx_free(tw__tls_ctx *ctx);

// Whether ctx was made from these three paths (compared as strings).
bool tw__tls_ctx_same(const tw__tls_ctx *ctx, const char *cert_file,
    const char *key_file, const char *ca_file);

// TLS state for connected socket fd (which stays the caller's: it is not
// closed by tw__tls_free), as the accepting (`server`) or the connecting
// side.  TW_OK, TW_ENOMEM, TW_ESYS (logged).
int tw__tls_new(tw__tls_ctx *ctx, int fd, bool server, tw__tls **out);

// Frees the TLS state.  NULL-safe.  Sends nothing: a connection that ends
// cleanly has said so in its own framing (BYE).
void tw__tls_free(tw__tls *t);

// One step of the handshake, never blocking.  TW_OK (done), TW_EAGAIN
// (call again once the socket is ready for *events: POLLIN or POLLOUT),
// TW_EAUTH (a certificate was refused, by us or by the peer, or the peer
// does not speak TLS), TW_EPEER (the connection closed or broke).  The
// reason of a failure is tw__tls_reason.
int tw__tls_handshake_step(tw__tls *t, short *events);

// The whole handshake, waiting until `deadline` (tw__now_ns scale) or
// *cancel (may be NULL).  Returns as tw__tls_handshake_step, and
// TW_ETIMEDOUT, TW_ECLOSED, TW_ESYS.
int tw__tls_handshake(tw__tls *t, int64_t deadline, const _Atomic int *cancel);

// Why the last call failed, for a log line ("" when nothing failed).
const char *tw__tls_reason(const tw__tls *t);

// Whether the peer's (verified) certificate names `party_id`: exactly one
// of its subjectAltName DNS entries, or, only when it has none, its
// common name.  Byte for byte: no wildcards, no case folding.  `names`
// (cap bytes, may be NULL) receives the names it has, for a log line.
bool tw__tls_peer_is(
    tw__tls *t, const char *party_id, char *names, size_t cap);

// Reads what is there, at most n bytes, without blocking: decrypted bytes
// that libssl holds first, then the socket.  TW_OK with *got > 0,
// TW_EAGAIN (nothing now), TW_EPEER (EOF, a reset), TW_EAUTH (the peer
// refused our certificate after the handshake, as TLS 1.3 lets a server
// do), TW_EPROTO (bytes that are not TLS).
int tw__tls_recv(tw__tls *t, void *buf, size_t n, size_t *got);

// Whether bytes wait inside libssl, decrypted or not, that a read would
// return without the socket becoming readable: a reader that stops with
// such bytes left must not wait for the socket.
bool tw__tls_pending(tw__tls *t);

// Writes as much of iov[0..n) as the socket takes now, one record at a
// time, and sets *took to the bytes written.  TW_OK (all), TW_EAGAIN (the
// socket is full), TW_EPEER.  A record that the socket did not take
// whole is kept and goes out first at the next call, whose iov must start
// with the same bytes (the untaken ones): the stream's order guarantees
// it, and a call that breaks it fails with TW_EPEER.
int tw__tls_writev(tw__tls *t, const struct iovec *iov, int n, size_t *took);

#endif // TW_TRANSPORT_TCP_TCP_TLS_H
