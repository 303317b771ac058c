// TLS 1.3 over libssl for tcp:// connections.  See tcp_tls.h.
//
// Design notes.
//
// Writing.  The writer hands over an iovec (often a header and the
// caller's payload) and expects sendmsg's contract: some bytes taken, or
// EAGAIN, and the rest presented again later.  libssl instead wants a
// write that returned WANT_WRITE repeated with the same bytes.  So each
// call writes one record (at most TLS_REC bytes), straight from the
// caller's memory when a piece holds a whole record, else gathered into
// `stage`; a record the socket did not take is copied into `stage` and
// retried from there (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER), and counts
// as not taken until it is out, so the writer's bookkeeping of what is
// pending stays true.
//
// Reading.  Read-ahead lets one recv fetch several records, so decrypted
// or undecrypted bytes may wait in libssl while the socket is empty:
// tw__tls_pending tells a reader that stops early not to wait for epoll.
//
// Telling TLS from plaintext.  The BIO remembers the first byte
// the peer sent: a handshake that fails after a peer answered with
// something other than a TLS record is "the peer does not speak TLS",
// which is a configuration error (TW_EAUTH), not a network one.

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <tagwire/status.h>

#include "core/log.h"
#include "transport/tcp/tcp_sock.h"
#include "transport/tcp/tcp_tls.h"

// The largest plaintext of a TLS record.
#define TLS_REC 16384
// libssl's read buffer with read-ahead: several records per recv.
#define TLS_READ_BUF (TLS_REC * 8)
// A TLS alert record, the other byte a TLS peer may send first.
#define TLS_ALERT_BYTE 0x15

struct tw__tls_ctx {
	SSL_CTX *ssl_ctx;
	char *files[3]; // cert, key, CA
};

struct tw__tls {
	pthread_mutex_t mtx; // every libssl call on ssl
	SSL *ssl;
	int fd;
	bool server;
	int first; // the peer's first byte, -1 before it came
	unsigned char stage[TLS_REC]; // a record not taken yet
	size_t stage_len;
	char reason[256];
};

static pthread_once_t ssl_once = PTHREAD_ONCE_INIT;

static void bio_init(void);

// libssl without its exit-time cleanup, like libcrypto (tcp_auth.c): a
// tw-io thread may be inside libssl while the process exits.
static void ssl_init(void)
{
	(void)OPENSSL_init_ssl(OPENSSL_INIT_NO_ATEXIT
	        | OPENSSL_INIT_LOAD_SSL_STRINGS
	        | OPENSSL_INIT_LOAD_CRYPTO_STRINGS,
	    NULL);
	bio_init();
}

// The first queued libssl error of this thread, as text; clears them.
static const char *err_text(char *buf, size_t cap, const char *none)
{
	unsigned long e = ERR_peek_error();
	if (e == 0) {
		snprintf(buf, cap, "%s", none);
		return buf;
	}
	const char *r = ERR_reason_error_string(e);
	if (r != NULL)
		snprintf(buf, cap, "%s", r);
	else
		ERR_error_string_n(e, buf, cap);
	ERR_clear_error();
	return buf;
}

// A readable file, or TW_EINVAL with the system's reason.
static int file_check(const char *what, const char *path)
{
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		TW_ERROR("tls", "cannot read the TLS %s file %s: %s", what,
		    path, strerror(errno));
		return TW_EINVAL;
	}
	fclose(f);
	return TW_OK;
}

// OpenSSL fills some fields of a certificate on first use (its cached
// extensions, key ids, canonical names), and the handshakes of one context
// run on several threads at once: the accepting thread and each dialer.
// Doing that first use here, while the context is still private, leaves the
// handshakes only reading what the context holds.
static void warm(SSL_CTX *s)
{
	X509 *own = SSL_CTX_get0_certificate(s);
	STACK_OF(X509) *chain = NULL;
	SSL_CTX_get0_chain_certs(s, &chain);
	X509_STORE *store = SSL_CTX_get_cert_store(s);
	STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(store);
	for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
		X509 *x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
		if (x != NULL)
			X509_check_purpose(x, -1, 0);
	}
	for (int i = 0; i < sk_X509_num(chain); i++)
		X509_check_purpose(sk_X509_value(chain, i), -1, 0);
	if (own == NULL)
		return;
	X509_check_purpose(own, -1, 0);
	// A verification of our own certificate walks the same lookups a
	// peer's will; its verdict does not matter here.
	X509_STORE_CTX *v = X509_STORE_CTX_new();
	if (v != NULL && X509_STORE_CTX_init(v, store, own, chain) == 1)
		(void)X509_verify_cert(v);
	X509_STORE_CTX_free(v);
	ERR_clear_error();
}

int tw__tls_ctx_new(const char *cert_file, const char *key_file,
    const char *ca_file, tw__tls_ctx **out)
{
	pthread_once(&ssl_once, ssl_init);
	const char *paths[3] = { cert_file, key_file, ca_file };
	static const char *const what[3] = { "certificate", "key", "CA" };
	for (int i = 0; i < 3; i++)
		if (paths[i] == NULL || file_check(what[i], paths[i]) != TW_OK)
			return TW_EINVAL;
	tw__tls_ctx *ctx = calloc(1, sizeof(*ctx));
	if (ctx == NULL)
		return TW_ENOMEM;
	for (int i = 0; i < 3; i++) {
		if ((ctx->files[i] = strdup(paths[i])) == NULL) {
			tw__tls_ctx_free(ctx);
			return TW_ENOMEM;
		}
	}
	ERR_clear_error();
	char err[256];
	SSL_CTX *s = ctx->ssl_ctx = SSL_CTX_new(TLS_method());
	if (s == NULL) {
		TW_ERROR("tls", "cannot make a TLS context: %s",
		    err_text(err, sizeof(err), "unknown error"));
		tw__tls_ctx_free(ctx);
		return TW_ESYS;
	}
	// TLS 1.3 only; no resumption of any kind, so that every connection
	// verifies the peer's certificate afresh.
	int status = TW_OK;
	if (SSL_CTX_set_min_proto_version(s, TLS1_3_VERSION) != 1
	    || SSL_CTX_set_max_proto_version(s, TLS1_3_VERSION) != 1
	    || SSL_CTX_set_num_tickets(s, 0) != 1
	    // AES-128-GCM first: as safe for this use, and a third faster
	    // than AES-256 with AES-NI; both ends are tagwire and agree.
	    || SSL_CTX_set_ciphersuites(s,
	           "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
	           "TLS_CHACHA20_POLY1305_SHA256")
	        != 1) {
		TW_ERROR("tls", "cannot restrict TLS to version 1.3: %s",
		    err_text(err, sizeof(err), "unknown error"));
		status = TW_ESYS;
	}
	SSL_CTX_set_options(s, SSL_OP_NO_TICKET);
	SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_mode(s,
	    SSL_MODE_ENABLE_PARTIAL_WRITE
	        | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_read_ahead(s, 1);
	SSL_CTX_set_default_read_buffer_len(s, TLS_READ_BUF);
	SSL_CTX_set_verify(
	    s, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	if (status == TW_OK
	    && SSL_CTX_use_certificate_chain_file(s, cert_file) != 1) {
		TW_ERROR("tls", "TLS certificate file %s: %s", cert_file,
		    err_text(err, sizeof(err), "not a PEM certificate"));
		status = TW_EINVAL;
	}
	if (status == TW_OK
	    && SSL_CTX_use_PrivateKey_file(s, key_file, SSL_FILETYPE_PEM)
	        != 1) {
		TW_ERROR("tls", "TLS key file %s: %s", key_file,
		    err_text(err, sizeof(err), "not a PEM private key"));
		status = TW_EINVAL;
	}
	if (status == TW_OK && SSL_CTX_check_private_key(s) != 1) {
		ERR_clear_error();
		TW_ERROR("tls",
		    "TLS key file %s: the key does not match the certificate "
		    "of %s",
		    key_file, cert_file);
		status = TW_EINVAL;
	}
	if (status == TW_OK
	    && SSL_CTX_load_verify_locations(s, ca_file, NULL) != 1) {
		TW_ERROR("tls", "TLS CA file %s: %s", ca_file,
		    err_text(err, sizeof(err), "no PEM certificate in it"));
		status = TW_EINVAL;
	}
	if (status != TW_OK) {
		tw__tls_ctx_free(ctx);
		return status;
	}
	warm(s);
	*out = ctx;
	return TW_OK;
}

void tw__tls_ctx_free(tw__tls_ctx *ctx)
{
	if (ctx == NULL)
		return;
	SSL_CTX_free(ctx->ssl_ctx);
	for (int i = 0; i < 3; i++)
		free(ctx->files[i]);
	free(ctx);
}

bool tw__tls_ctx_same(const tw__tls_ctx *ctx, const char *cert_file,
    const char *key_file, const char *ca_file)
{
	return strcmp(ctx->files[0], cert_file) == 0
	    && strcmp(ctx->files[1], key_file) == 0
	    && strcmp(ctx->files[2], ca_file) == 0;
}

// The socket under libssl: our own BIO rather than libssl's socket BIO,
// which writes with write(2) and would raise SIGPIPE in the application
// when a peer goes; and it remembers the peer's first byte (see the design
// notes).
static int bio_write(BIO *b, const char *buf, size_t n, size_t *done)
{
	tw__tls *t = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	for (;;) {
		ssize_t w = send(t->fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w >= 0) {
			*done = (size_t)w;
			return 1;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			BIO_set_retry_write(b);
		return 0;
	}
}

static int bio_read(BIO *b, char *buf, size_t n, size_t *done)
{
	tw__tls *t = BIO_get_data(b);
	BIO_clear_retry_flags(b);
	for (;;) {
		ssize_t r = recv(t->fd, buf, n, MSG_DONTWAIT);
		if (r > 0) {
			if (t->first < 0)
				t->first = (unsigned char)buf[0];
			*done = (size_t)r;
			return 1;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			BIO_set_retry_read(b);
		*done = 0;
		return 0; // EOF too: libssl tells it from retry
	}
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b;
	(void)num;
	(void)ptr;
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static BIO_METHOD *bio_method; // made once, never freed

static void bio_init(void)
{
	BIO_METHOD *m
	    = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "tw");
	if (m == NULL)
		return;
	BIO_meth_set_write_ex(m, bio_write);
	BIO_meth_set_read_ex(m, bio_read);
	BIO_meth_set_ctrl(m, bio_ctrl);
	BIO_meth_set_create(m, bio_create);
	bio_method = m;
}

int tw__tls_new(tw__tls_ctx *ctx, int fd, bool server, tw__tls **out)
{
	tw__tls *t = calloc(1, sizeof(*t));
	if (t == NULL)
		return TW_ENOMEM;
	t->fd = fd;
	t->server = server;
	t->first = -1;
	pthread_mutex_init(&t->mtx, NULL);
	BIO *bio = NULL;
	if ((t->ssl = SSL_new(ctx->ssl_ctx)) == NULL || bio_method == NULL
	    || (bio = BIO_new(bio_method)) == NULL) {
		char err[256];
		TW_ERROR("tls", "cannot make a TLS connection: %s",
		    err_text(err, sizeof(err), "out of memory"));
		tw__tls_free(t);
		return TW_ESYS;
	}
	BIO_set_data(bio, t);
	SSL_set_bio(t->ssl, bio, bio);
	if (server)
		SSL_set_accept_state(t->ssl);
	else
		SSL_set_connect_state(t->ssl);
	*out = t;
	return TW_OK;
}

void tw__tls_free(tw__tls *t)
{
	if (t == NULL)
		return;
	SSL_free(t->ssl);
	pthread_mutex_destroy(&t->mtx);
	free(t);
}

const char *tw__tls_reason(const tw__tls *t)
{
	return t->reason;
}

// What a failed verification of the peer's certificate means.
static void verify_reason(tw__tls *t, long v)
{
	switch (v) {
	case X509_V_ERR_CERT_HAS_EXPIRED:
		snprintf(t->reason, sizeof(t->reason),
		    "the peer's certificate has expired");
		break;
	case X509_V_ERR_CERT_NOT_YET_VALID:
		snprintf(t->reason, sizeof(t->reason),
		    "the peer's certificate is not valid yet");
		break;
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_CERT_SIGNATURE_FAILURE:
		snprintf(t->reason, sizeof(t->reason),
		    "the peer's certificate does not chain to our CA "
		    "(unknown CA: %s)",
		    X509_verify_cert_error_string(v));
		break;
	default:
		snprintf(t->reason, sizeof(t->reason),
		    "the peer's certificate is refused: %s",
		    X509_verify_cert_error_string(v));
		break;
	}
}

// Classifies a failed libssl call (r, its return value) and fills
// t->reason.  TW_EAGAIN (*events set), TW_EPEER, TW_EAUTH, TW_EPROTO.
// t->mtx held.
static int ssl_fail(tw__tls *t, int r, bool handshake, short *events)
{
	int e = SSL_get_error(t->ssl, r);
	// A plaintext answer may be shorter than a record header: it fails
	// the handshake even while libssl would wait for more.
	bool plain = t->first >= 0 && t->first != TW_TLS_FIRST_BYTE
	    && t->first != TLS_ALERT_BYTE;
	if (plain && handshake) {
		ERR_clear_error();
		snprintf(t->reason, sizeof(t->reason),
		    "the peer does not speak TLS (%s)",
		    t->first == 'T' ? "it answered with a plaintext HELLO"
		                    : "it sent bytes that are not TLS");
		return TW_EAUTH;
	}
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		if (events != NULL)
			*events = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
		ERR_clear_error();
		return TW_EAGAIN;
	}
	long v = SSL_get_verify_result(t->ssl);
	if (handshake && v != X509_V_OK) {
		ERR_clear_error();
		verify_reason(t, v);
		return TW_EAUTH;
	}
	if (e == SSL_ERROR_ZERO_RETURN
	    || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)) {
		int err = errno;
		ERR_clear_error();
		snprintf(t->reason, sizeof(t->reason), "%s%s",
		    handshake ? "the connection closed during the TLS "
		                "handshake"
		              : "the connection closed",
		    err != 0 && r < 0 ? ": " : "");
		if (err != 0 && r < 0)
			snprintf(t->reason + strlen(t->reason),
			    sizeof(t->reason) - strlen(t->reason), "%s",
			    strerror(err));
		return TW_EPEER;
	}
	unsigned long code = ERR_peek_error();
	int reason = ERR_GET_REASON(code);
	char err[160];
	err_text(err, sizeof(err), "TLS failed");
	// An alert from the peer (libssl numbers them from 1000): it refused
	// the handshake, most likely our certificate.
	if (ERR_GET_LIB(code) == ERR_LIB_SSL
	    && reason >= SSL_AD_REASON_OFFSET) {
		const char *says = "refused the TLS handshake";
		if (reason == SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED)
			says = "says our certificate has expired";
		else if (reason == SSL_R_TLSV1_ALERT_UNKNOWN_CA)
			says = "does not know the CA of our certificate "
			       "(unknown CA)";
		else if (reason == SSL_R_SSLV3_ALERT_BAD_CERTIFICATE)
			says = "refused our certificate";
		snprintf(t->reason, sizeof(t->reason), "the peer %s (%.80s)",
		    says, err);
		return TW_EAUTH;
	}
	snprintf(t->reason, sizeof(t->reason), "TLS failed: %s", err);
	return handshake ? TW_EAUTH : TW_EPROTO;
}

int tw__tls_handshake_step(tw__tls *t, short *events)
{
	pthread_mutex_lock(&t->mtx);
	ERR_clear_error();
	errno = 0;
	int r = SSL_do_handshake(t->ssl);
	int status = r == 1 ? TW_OK : ssl_fail(t, r, true, events);
	pthread_mutex_unlock(&t->mtx);
	return status;
}

int tw__tls_handshake(tw__tls *t, int64_t deadline, const _Atomic int *cancel)
{
	for (;;) {
		short events = POLLIN;
		int status = tw__tls_handshake_step(t, &events);
		if (status != TW_EAGAIN)
			return status;
		status = tw__tcp_wait_fd(t->fd, events, deadline, cancel);
		if (status != TW_OK) {
			snprintf(t->reason, sizeof(t->reason),
			    "the TLS handshake: %s", tw_strerror(status));
			return status;
		}
	}
}

// Appends s (n bytes) to a list of names for a log line.
static void name_add(char *names, size_t cap, const unsigned char *s, int n)
{
	if (names == NULL || cap == 0)
		return;
	size_t len = strlen(names);
	if (len + 1 >= cap)
		return;
	snprintf(names + len, cap - len, "%s'%.*s'", len > 0 ? ", " : "",
	    n > 64 ? 64 : n, (const char *)s);
}

static bool same(const ASN1_STRING *s, const char *id, size_t id_len)
{
	return (size_t)ASN1_STRING_length(s) == id_len
	    && memcmp(ASN1_STRING_get0_data(s), id, id_len) == 0;
}

bool tw__tls_peer_is(tw__tls *t, const char *party_id, char *names, size_t cap)
{
	if (names != NULL && cap > 0)
		names[0] = '\0';
	size_t id_len = strlen(party_id);
	pthread_mutex_lock(&t->mtx);
	X509 *cert = SSL_get0_peer_certificate(t->ssl);
	bool found = false, any_dns = false;
	if (cert == NULL) {
		pthread_mutex_unlock(&t->mtx);
		if (names != NULL && cap > 0)
			snprintf(names, cap, "no certificate");
		return false;
	}
	GENERAL_NAMES *sans
	    = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; sans != NULL && i < sk_GENERAL_NAME_num(sans); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
		if (g->type != GEN_DNS)
			continue;
		any_dns = true;
		found = found || same(g->d.dNSName, party_id, id_len);
		name_add(names, cap, ASN1_STRING_get0_data(g->d.dNSName),
		    ASN1_STRING_length(g->d.dNSName));
	}
	GENERAL_NAMES_free(sans);
	if (!any_dns) {
		const X509_NAME *subj = X509_get_subject_name(cert);
		int i = -1;
		while (
		    (i = X509_NAME_get_index_by_NID(subj, NID_commonName, i))
		    >= 0) {
			const ASN1_STRING *s = X509_NAME_ENTRY_get_data(
			    X509_NAME_get_entry(subj, i));
			found = found || same(s, party_id, id_len);
			name_add(names, cap, ASN1_STRING_get0_data(s),
			    ASN1_STRING_length(s));
		}
	}
	pthread_mutex_unlock(&t->mtx);
	if (names != NULL && cap > 0 && names[0] == '\0')
		snprintf(names, cap, "no name");
	return found;
}

int tw__tls_recv(tw__tls *t, void *buf, size_t n, size_t *got)
{
	pthread_mutex_lock(&t->mtx);
	ERR_clear_error();
	errno = 0;
	size_t r = 0;
	int ok = SSL_read_ex(t->ssl, buf, n, &r);
	int status = ok == 1 ? TW_OK : ssl_fail(t, ok, false, NULL);
	pthread_mutex_unlock(&t->mtx);
	if (status == TW_OK)
		*got = r;
	return status;
}

bool tw__tls_pending(tw__tls *t)
{
	pthread_mutex_lock(&t->mtx);
	bool p = SSL_has_pending(t->ssl) == 1;
	pthread_mutex_unlock(&t->mtx);
	return p;
}

// Writes one record of buf[0..n) (n <= TLS_REC).  TW_OK and *w,
// TW_EAGAIN, TW_EPEER.  t->mtx held.
static int write_rec(tw__tls *t, const void *buf, size_t n, size_t *w)
{
	ERR_clear_error();
	errno = 0;
	if (SSL_write_ex(t->ssl, buf, n, w) == 1)
		return TW_OK;
	int status = ssl_fail(t, 0, false, NULL);
	return status == TW_EAGAIN ? TW_EAGAIN : TW_EPEER;
}

// Whether iov[0..n), from byte `off` on, starts with buf[0..len).
static bool starts_with(const struct iovec *iov, int n, size_t off,
    const unsigned char *buf, size_t len)
{
	for (int i = 0; i < n && len > 0; i++) {
		size_t k = iov[i].iov_len;
		if (off >= k) {
			off -= k;
			continue;
		}
		size_t d = k - off < len ? k - off : len;
		if (memcmp((const char *)iov[i].iov_base + off, buf, d) != 0)
			return false;
		buf += d;
		len -= d;
		off = 0;
	}
	return len == 0;
}

int tw__tls_writev(tw__tls *t, const struct iovec *iov, int n, size_t *took)
{
	*took = 0;
	int i = 0;
	size_t off = 0; // into iov[i]
	int status = TW_OK;
	pthread_mutex_lock(&t->mtx);
	if (t->stage_len > 0) {
		// The record the socket did not take: the same bytes lead
		// this call's iov, by the stream's order.
		if (!starts_with(iov, n, 0, t->stage, t->stage_len)) {
			snprintf(t->reason, sizeof(t->reason),
			    "a TLS write was retried with other bytes");
			pthread_mutex_unlock(&t->mtx);
			return TW_EPEER;
		}
		size_t w = 0;
		status = write_rec(t, t->stage, t->stage_len, &w);
		if (status == TW_OK) {
			memmove(t->stage, t->stage + w, t->stage_len - w);
			t->stage_len -= w;
			*took += w;
			if (t->stage_len > 0)
				status = TW_EAGAIN; // never: records go whole
		}
	}
	size_t skip = *took;
	while (status == TW_OK) {
		while (i < n && off + skip >= iov[i].iov_len) {
			skip -= iov[i].iov_len - off;
			off = 0;
			i++;
		}
		off += skip;
		skip = 0;
		if (i == n)
			break;
		const unsigned char *p
		    = (const unsigned char *)iov[i].iov_base + off;
		size_t left = iov[i].iov_len - off;
		size_t w = 0;
		if (left >= TLS_REC) {
			// A whole record from the caller's memory; kept in
			// the stage only when the socket refuses it.
			status = write_rec(t, p, TLS_REC, &w);
			if (status == TW_EAGAIN) {
				memcpy(t->stage, p, TLS_REC);
				t->stage_len = TLS_REC;
			}
		} else {
			// Small pieces (a header, a key, the end of a
			// payload) gathered into one record.
			size_t len = 0;
			for (int j = i; j < n && len < TLS_REC; j++) {
				const unsigned char *q
				    = (const unsigned char *)iov[j].iov_base
				    + (j == i ? off : 0);
				size_t k = iov[j].iov_len - (j == i ? off : 0);
				if (k > TLS_REC - len)
					k = TLS_REC - len;
				memcpy(t->stage + len, q, k);
				len += k;
			}
			status = write_rec(t, t->stage, len, &w);
			if (status == TW_EAGAIN)
				t->stage_len = len;
		}
		if (status == TW_OK) {
			*took += w;
			skip = w;
		}
	}
	pthread_mutex_unlock(&t->mtx);
	return status;
}
