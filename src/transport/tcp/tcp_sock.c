// Name resolution, the registry of listening sockets and connecting with
// retries.  See tcp_sock.h.

#include <arpa/inet.h>
#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <tagwire/status.h>

#include "core/clock.h"
#include "core/log.h"
#include "transport/tcp/tcp_sock.h"

// How long a connect waits at most before it tries again; the pause starts
// at 1 ms and doubles, so a peer that starts a moment later is reached at
// once and an absent one costs few attempts.
#define DIAL_PAUSE_MAX_NS 100000000
#define LISTEN_BACKLOG 128

struct tw__tcp_listener {
	tw__tcp_listener *next; // protected by reg_mtx
	char *key; // "host:port" with the bound port
	int fd;
	uint16_t port;
	unsigned refs; // protected by reg_mtx
};

static pthread_mutex_t reg_mtx = PTHREAD_MUTEX_INITIALIZER;
static tw__tcp_listener *reg_head; // protected by reg_mtx

// Resolves host:port.  `passive` for binding.  Returns getaddrinfo's
// status; *res is freed with freeaddrinfo.
static int resolve(
    const char *host, uint16_t port, bool passive, struct addrinfo **res)
{
	char service[8];
	snprintf(service, sizeof(service), "%u", (unsigned)port);
	struct addrinfo hints;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
	return getaddrinfo(host, service, &hints, res);
}

// "host:port", with brackets around an IPv6 literal.
static char *key_make(const char *host, uint16_t port)
{
	size_t n = strlen(host) + 10;
	char *k = malloc(n);
	if (k == NULL)
		return NULL;
	if (strchr(host, ':') != NULL)
		snprintf(k, n, "[%s]:%u", host, (unsigned)port);
	else
		snprintf(k, n, "%s:%u", host, (unsigned)port);
	return k;
}

static tw__tcp_listener *reg_find(const char *key)
{
	for (tw__tcp_listener *l = reg_head; l != NULL; l = l->next)
		if (strcmp(l->key, key) == 0)
			return l;
	return NULL;
}

// Binds and listens on the first address of `ai` that works; the error of
// the last attempt is left in errno.
static int bind_any(const struct addrinfo *ai, uint16_t *port)
{
	int err = EADDRNOTAVAIL;
	for (; ai != NULL; ai = ai->ai_next) {
		int fd = socket(ai->ai_family,
		    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    ai->ai_protocol);
		if (fd < 0) {
			err = errno;
			continue;
		}
		// A restarted process may bind again at once while the old
		// connections linger in TIME_WAIT; a live listener still
		// makes the bind fail.
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0
		    || listen(fd, LISTEN_BACKLOG) != 0) {
			err = errno;
			close(fd);
			continue;
		}
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
			err = errno;
			close(fd);
			continue;
		}
		*port = ntohs(ss.ss_family == AF_INET6
		        ? ((struct sockaddr_in6 *)&ss)->sin6_port
		        : ((struct sockaddr_in *)&ss)->sin_port);
		return fd;
	}
	errno = err;
	return -1;
}

int tw__tcp_listener_get(const char *addr, tw__tcp_listener **out_l)
{
	char host[TW_TCP_ADDR_MAX + 1];
	uint16_t port;
	if (tw__tcp_addr_parse(addr, host, sizeof(host), &port) != TW_OK)
		return TW_EINVAL;
	char *key = key_make(host, port);
	if (key == NULL)
		return TW_ENOMEM;
	pthread_mutex_lock(&reg_mtx);
	tw__tcp_listener *l = port != 0 ? reg_find(key) : NULL;
	if (l != NULL) {
		l->refs++;
		pthread_mutex_unlock(&reg_mtx);
		free(key);
		*out_l = l;
		return TW_OK;
	}
	// Bound under the lock: two links naming the same new address at
	// once must end up with one socket, not a bind failure.
	struct addrinfo *ai = NULL;
	int gai = resolve(host, port, true, &ai);
	if (gai != 0) {
		pthread_mutex_unlock(&reg_mtx);
		TW_ERROR("tcp", "cannot bind %s: %s", addr,
		    gai == EAI_SYSTEM ? strerror(errno) : gai_strerror(gai));
		free(key);
		return TW_ESYS;
	}
	uint16_t bound = 0;
	int fd = bind_any(ai, &bound);
	freeaddrinfo(ai);
	if (fd < 0) {
		int err = errno;
		pthread_mutex_unlock(&reg_mtx);
		errno = err;
		TW_ERROR("tcp", "cannot bind %s: %m", addr);
		free(key);
		return TW_ESYS;
	}
	l = calloc(1, sizeof(*l));
	if (l != NULL && port == 0) {
		free(key);
		key = key_make(host, bound);
	}
	if (l == NULL || key == NULL) {
		pthread_mutex_unlock(&reg_mtx);
		close(fd);
		free(l);
		free(key);
		return TW_ENOMEM;
	}
	l->key = key;
	l->fd = fd;
	l->port = bound;
	l->refs = 1;
	l->next = reg_head;
	reg_head = l;
	pthread_mutex_unlock(&reg_mtx);
	TW_DEBUG("tcp", "listening on %s", key);
	*out_l = l;
	return TW_OK;
}

void tw__tcp_listener_put(tw__tcp_listener *l)
{
	if (l == NULL)
		return;
	pthread_mutex_lock(&reg_mtx);
	if (--l->refs > 0) {
		pthread_mutex_unlock(&reg_mtx);
		return;
	}
	tw__tcp_listener **pp = &reg_head;
	while (*pp != l)
		pp = &(*pp)->next;
	*pp = l->next;
	pthread_mutex_unlock(&reg_mtx);
	close(l->fd);
	free(l->key);
	free(l);
}

int tw__tcp_listener_fd(const tw__tcp_listener *l)
{
	return l->fd;
}

uint16_t tw__tcp_listener_port(const tw__tcp_listener *l)
{
	return l->port;
}

const char *tw__tcp_listener_name(const tw__tcp_listener *l)
{
	return l->key;
}

size_t tw__tcp_listener_count(void)
{
	size_t n = 0;
	pthread_mutex_lock(&reg_mtx);
	for (tw__tcp_listener *l = reg_head; l != NULL; l = l->next)
		n++;
	pthread_mutex_unlock(&reg_mtx);
	return n;
}

static bool cancelled(const _Atomic int *cancel)
{
	return cancel != NULL
	    && atomic_load_explicit(cancel, memory_order_acquire);
}

// Sleeps `ns`, or less when the deadline comes first.
static void pause_until(int64_t ns, int64_t deadline)
{
	int64_t left = deadline - tw__now_ns();
	if (left < ns)
		ns = left;
	if (ns <= 0)
		return;
	struct timespec ts
	    = { (time_t)(ns / 1000000000), (long)(ns % 1000000000) };
	nanosleep(&ts, NULL);
}

// How often a wait looks at its cancel flag, in ms.
#define WAIT_SLICE_MS 10

int tw__tcp_wait_fd(
    int fd, short events, int64_t deadline, const _Atomic int *cancel)
{
	for (;;) {
		if (cancelled(cancel))
			return TW_ECLOSED;
		int64_t left = deadline == INT64_MAX
		    ? WAIT_SLICE_MS
		    : (deadline - tw__now_ns() + 999999) / 1000000;
		if (left <= 0)
			return TW_ETIMEDOUT;
		struct pollfd pfd = { .fd = fd, .events = events };
		int rc = poll(
		    &pfd, 1, left > WAIT_SLICE_MS ? WAIT_SLICE_MS : (int)left);
		if (rc > 0)
			return TW_OK;
		if (rc < 0 && errno != EINTR)
			return TW_ESYS;
	}
}

int tw__tcp_recv(int fd, void *buf, size_t n, size_t *got)
{
	for (;;) {
		ssize_t r = recv(fd, buf, n, MSG_DONTWAIT);
		if (r > 0) {
			*got = (size_t)r;
			return TW_OK;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return TW_EAGAIN;
		return TW_EPEER; // EOF, a reset, or another error
	}
}

// Waits for a non-blocking connect of fd to finish.  0, or the errno of
// the failure (ETIMEDOUT at the deadline, ECANCELED when cancelled).
static int connect_wait(int fd, int64_t deadline, const _Atomic int *cancel)
{
	switch (tw__tcp_wait_fd(fd, POLLOUT, deadline, cancel)) {
	case TW_OK:
		break;
	case TW_ECLOSED:
		return ECANCELED;
	case TW_ETIMEDOUT:
		return ETIMEDOUT;
	default:
		return errno;
	}
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		return errno;
	return err;
}

static int dial_once(const struct addrinfo *ai, int64_t deadline,
    const _Atomic int *cancel, int *out_fd)
{
	int err = ECONNREFUSED;
	for (; ai != NULL; ai = ai->ai_next) {
		int fd = socket(ai->ai_family,
		    ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
		    ai->ai_protocol);
		if (fd < 0) {
			err = errno;
			continue;
		}
		int rc;
		while ((rc = connect(fd, ai->ai_addr, ai->ai_addrlen)) != 0
		    && errno == EINTR)
			;
		err = rc == 0 ? 0 : errno;
		if (err == EINPROGRESS)
			err = connect_wait(fd, deadline, cancel);
		if (err != 0) {
			close(fd);
			if (err == ECANCELED || err == ETIMEDOUT)
				return err;
			continue;
		}
		tw__tcp_sock_tune(fd);
		*out_fd = fd;
		return 0;
	}
	return err;
}

int tw__tcp_dial_once(const char *host, uint16_t port, int64_t deadline,
    const _Atomic int *cancel, int *out_fd)
{
	struct addrinfo *ai = NULL;
	int gai = resolve(host, port, false, &ai);
	if (gai != 0)
		return TW_ETIMEDOUT; // a name server down is a network problem
	int err = dial_once(ai, deadline, cancel, out_fd);
	freeaddrinfo(ai);
	if (err == 0)
		return TW_OK;
	if (err == ECANCELED)
		return TW_ECLOSED;
	return err == ECONNREFUSED ? TW_EPEER : TW_ETIMEDOUT;
}

int tw__tcp_dial(const char *host, uint16_t port, int64_t deadline,
    const _Atomic int *cancel, int *out_fd)
{
	struct addrinfo *ai = NULL;
	int gai = resolve(host, port, false, &ai);
	if (gai != 0) {
		TW_ERROR("tcp", "cannot resolve %s: %s", host,
		    gai == EAI_SYSTEM ? strerror(errno) : gai_strerror(gai));
		return TW_ESYS;
	}
	int64_t pause = 1000000;
	int status = TW_ETIMEDOUT;
	for (;;) {
		if (cancelled(cancel)) {
			status = TW_ECLOSED;
			break;
		}
		int err = dial_once(ai, deadline, cancel, out_fd);
		if (err == 0) {
			status = TW_OK;
			break;
		}
		if (err == ECANCELED) {
			status = TW_ECLOSED;
			break;
		}
		// A peer that is not listening yet refuses; anything else
		// (no route, no memory) is retried the same way: the connect
		// timeout bounds it, and the caller logs who is missing.
		if (tw__now_ns() >= deadline)
			break;
		pause_until(pause, deadline);
		if (pause < DIAL_PAUSE_MAX_NS)
			pause *= 2;
	}
	freeaddrinfo(ai);
	return status;
}

// "tcp://IP:0" on the local address that reaches `target`.
int tw__tcp_local_addr_for(const char *target, char *out, size_t cap)
{
	char host[TW_TCP_ADDR_MAX + 1];
	uint16_t port;
	if (tw__tcp_addr_parse(target, host, sizeof(host), &port) != TW_OK)
		return TW_EINVAL;
	char ps[8];
	snprintf(ps, sizeof(ps), "%u", (unsigned)port);
	struct addrinfo hints = { .ai_socktype = SOCK_DGRAM }, *ai = NULL;
	if (getaddrinfo(host, ps, &hints, &ai) != 0 || ai == NULL)
		return TW_ESYS;
	int status = TW_ESYS;
	int fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0
	    && getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
		char ip[NI_MAXHOST];
		if (getnameinfo((struct sockaddr *)&ss, sl, ip, sizeof(ip),
		        NULL, 0, NI_NUMERICHOST)
		    == 0) {
			snprintf(out, cap,
			    ss.ss_family == AF_INET6 ? "tcp://[%s]:0"
			                             : "tcp://%s:0",
			    ip);
			status = TW_OK;
		}
	}
	if (fd >= 0)
		close(fd);
	freeaddrinfo(ai);
	return status;
}

bool tw__tcp_addr_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a
		    = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		return IN6_IS_ADDR_LOOPBACK(a)
		    || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return false;
}

void tw__tcp_sock_tune(int fd)
{
	int one = 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0
	    || !tw__tcp_addr_is_loopback((const struct sockaddr *)&ss))
		return;
	int size = TW_TCP_LOOPBACK_SNDBUF;
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
}
