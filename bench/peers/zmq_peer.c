// zmq_peer: the peer workloads (peer_common.h) over ZeroMQ, a ZMQ_PAIR
// socket pair on TCP loopback.  The parent binds tcp://127.0.0.1:* and
// sends the endpoint to the forked child, which connects.  Messages go
// with zmq_send (one copy into the library) and arrive with zmq_recv into
// the caller's buffer.  Socket options are ZeroMQ's defaults (TCP_NODELAY
// on, high-water marks of 1000 messages) but for a bounded linger.
#define _GNU_SOURCE

#include <zmq.h>

#include "peer_common.h"

struct zctx {
	void *ctx;
	void *sock;
};

static int z_send(void *c, const void *buf, size_t len)
{
	struct zctx *z = c;
	for (;;) {
		int n = zmq_send(z->sock, buf, len, 0);
		if (n >= 0 && (size_t)n == len)
			return 0;
		if (n < 0 && errno == EINTR)
			continue;
		fprintf(stderr, "zmq_send: %s\n", zmq_strerror(errno));
		return -1;
	}
}

static int z_recv(void *c, void *buf, size_t len)
{
	struct zctx *z = c;
	for (;;) {
		int n = zmq_recv(z->sock, buf, len, 0);
		if (n >= 0 && (size_t)n == len)
			return 0;
		if (n < 0 && errno == EINTR)
			continue;
		if (n >= 0)
			fprintf(stderr, "zmq_recv: %d bytes, expected %zu\n",
			    n, len);
		else
			fprintf(stderr, "zmq_recv: %s\n", zmq_strerror(errno));
		return -1;
	}
}

static int side(const struct peer_cfg *cfg, int side_a, int fd)
{
	struct zctx z = { 0 };
	int linger = 1000, rc = -1;
	const char *what = NULL; // the ZeroMQ call that failed
	char ep[256];
	z.ctx = zmq_ctx_new();
	if (z.ctx == NULL) {
		fprintf(stderr, "zmq_ctx_new: %s\n", zmq_strerror(errno));
		return -1;
	}
	z.sock = zmq_socket(z.ctx, ZMQ_PAIR);
	if (z.sock == NULL) {
		what = "zmq_socket";
		goto out;
	}
	if (zmq_setsockopt(z.sock, ZMQ_LINGER, &linger, sizeof(linger))) {
		what = "zmq_setsockopt";
		goto out;
	}
	if (side_a) {
		size_t len = sizeof(ep);
		if (zmq_bind(z.sock, "tcp://127.0.0.1:*") != 0) {
			what = "zmq_bind";
			goto out;
		}
		if (zmq_getsockopt(z.sock, ZMQ_LAST_ENDPOINT, ep, &len)) {
			what = "zmq_getsockopt";
			goto out;
		}
		if (oob_send_str(fd, ep) != 0)
			goto out;
	} else {
		if (oob_recv_str(fd, ep, sizeof(ep)) != 0)
			goto out;
		if (zmq_connect(z.sock, ep) != 0) {
			what = "zmq_connect";
			goto out;
		}
	}
	struct peer_ops ops = { z_send, z_recv, &z };
	rc = peer_serve(cfg, &ops, side_a, fd);
out:
	if (what != NULL)
		peer_failed(what, side_a, zmq_strerror(errno));
	if (z.sock != NULL)
		zmq_close(z.sock);
	zmq_ctx_term(z.ctx);
	return rc;
}

int main(int argc, char **argv)
{
	struct peer_cfg cfg;
	peer_args(&cfg, "zmq", "tcp", argc, argv);
	return peer_fork_run(&cfg, side);
}
