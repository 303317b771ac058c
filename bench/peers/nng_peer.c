// nng_peer: the peer workloads (peer_common.h) over nng, a pair1 socket
// pair on TCP loopback.  The parent listens on tcp://127.0.0.1:0 and sends
// the bound port to the forked child, which dials.  Messages go with
// nng_send (one copy into the library) and arrive with nng_recv into the
// caller's buffer.  Socket options are nng's defaults (no send or receive
// buffering beyond the pipe) but for NNG_OPT_RECVMAXSZ = 0, without which
// messages above 1 MiB are dropped.
#define _GNU_SOURCE

#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>

#include "peer_common.h"

static int n_send(void *c, const void *buf, size_t len)
{
	nng_socket *s = c;
	int rv = nng_send(*s, (void *)buf, len, 0);
	if (rv != 0) {
		fprintf(stderr, "nng_send: %s\n", nng_strerror(rv));
		return -1;
	}
	return 0;
}

static int n_recv(void *c, void *buf, size_t len)
{
	nng_socket *s = c;
	size_t got = len;
	int rv = nng_recv(*s, buf, &got, 0);
	if (rv != 0) {
		fprintf(stderr, "nng_recv: %s\n", nng_strerror(rv));
		return -1;
	}
	if (got != len) {
		fprintf(
		    stderr, "nng_recv: %zu bytes, expected %zu\n", got, len);
		return -1;
	}
	return 0;
}

static int side(const struct peer_cfg *cfg, int side_a, int fd)
{
	nng_socket s;
	char url[128];
	int rv = nng_pair1_open(&s);
	if (rv != 0) {
		fprintf(stderr, "nng_pair1_open: %s\n", nng_strerror(rv));
		return -1;
	}
	int rc = -1;
	rv = nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, 0);
	if (rv != 0)
		goto out;
	if (side_a) {
		nng_listener l;
		int port;
		rv = nng_listen(s, "tcp://127.0.0.1:0", &l, 0);
		if (rv == 0)
			rv = nng_listener_get_int(
			    l, NNG_OPT_TCP_BOUND_PORT, &port);
		if (rv != 0)
			goto out;
		snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", port);
		if (oob_send_str(fd, url) != 0)
			goto out;
	} else {
		if (oob_recv_str(fd, url, sizeof(url)) != 0)
			goto out;
		rv = nng_dial(s, url, NULL, 0);
		if (rv != 0)
			goto out;
	}
	struct peer_ops ops = { n_send, n_recv, &s };
	rc = peer_serve(cfg, &ops, side_a, fd);
out:
	if (rv != 0)
		peer_failed("nng", side_a, nng_strerror(rv));
	nng_close(s);
	return rc;
}

int main(int argc, char **argv)
{
	struct peer_cfg cfg;
	peer_args(&cfg, "nng", "tcp", argc, argv);
	return peer_fork_run(&cfg, side);
}
