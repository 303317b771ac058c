// ucx_peer: the peer workloads (peer_common.h) over UCX's tag-matching
// API (UCP), two forked processes.  Each process creates its context and
// worker after the fork, the two exchange worker addresses over the
// socketpair and create an endpoint to each other, as ucx_perftest does.
// A send is ucp_tag_send_nbx, then the worker is progressed until that
// send completes (one outstanding send, ucx_perftest's default); a receive
// is ucp_tag_recv_nbx into the caller's buffer, progressed until done
// (UCP_OP_ATTR_FLAG_NO_IMM_CMPL, so that the request reports the length).
// Busy polling throughout, single-threaded workers.
//
// --transport chooses the transports through UCX's environment before
// ucp_init: shm = UCX_TLS=posix,self; tcp = UCX_TLS=tcp with
// UCX_NET_DEVICES=lo (TCP on loopback only).
#define _GNU_SOURCE

#include <ucp/api/ucp.h>

#include "peer_common.h"

#define TAG 0x7477u

struct uctx {
	ucp_worker_h worker;
	ucp_ep_h ep;
};

// Progresses the worker until request completes; its status.
static ucs_status_t wait_req(ucp_worker_h w, void *req)
{
	if (req == NULL)
		return UCS_OK;
	if (UCS_PTR_IS_ERR(req))
		return UCS_PTR_STATUS(req);
	ucs_status_t st;
	while ((st = ucp_request_check_status(req)) == UCS_INPROGRESS)
		ucp_worker_progress(w);
	ucp_request_free(req);
	return st;
}

static int u_send(void *c, const void *buf, size_t len)
{
	struct uctx *u = c;
	ucp_request_param_t p = { .op_attr_mask = 0 };
	void *req = ucp_tag_send_nbx(u->ep, buf, len, TAG, &p);
	ucs_status_t st = wait_req(u->worker, req);
	if (st != UCS_OK) {
		fprintf(
		    stderr, "ucp_tag_send_nbx: %s\n", ucs_status_string(st));
		return -1;
	}
	return 0;
}

static int u_recv(void *c, void *buf, size_t len)
{
	struct uctx *u = c;
	ucp_tag_recv_info_t info = { 0 };
	// Always a request, whose test gives the received length.
	ucp_request_param_t p
	    = { .op_attr_mask = UCP_OP_ATTR_FLAG_NO_IMM_CMPL };
	void *req
	    = ucp_tag_recv_nbx(u->worker, buf, len, TAG, ~(ucp_tag_t)0, &p);
	ucs_status_t st;
	if (req == NULL || UCS_PTR_IS_ERR(req)) {
		st = req == NULL ? UCS_ERR_NO_MESSAGE : UCS_PTR_STATUS(req);
	} else {
		while ((st = ucp_tag_recv_request_test(req, &info))
		    == UCS_INPROGRESS)
			ucp_worker_progress(u->worker);
		ucp_request_free(req);
	}
	if (st != UCS_OK) {
		fprintf(
		    stderr, "ucp_tag_recv_nbx: %s\n", ucs_status_string(st));
		return -1;
	}
	if (info.length != len) {
		fprintf(stderr, "ucp_tag_recv_nbx: %zu bytes, expected %zu\n",
		    info.length, len);
		return -1;
	}
	return 0;
}

static int side(const struct peer_cfg *cfg, int side_a, int fd)
{
	ucp_config_t *config = NULL;
	ucp_context_h ucx = NULL;
	struct uctx u = { 0 };
	ucp_address_t *addr = NULL;
	size_t addr_len = 0;
	void *remote = NULL;
	size_t remote_len;
	const char *what = NULL;
	ucs_status_t st;
	int rc = -1;

	if ((st = ucp_config_read(NULL, NULL, &config)) != UCS_OK) {
		what = "ucp_config_read";
		goto out;
	}
	ucp_params_t params = { .field_mask = UCP_PARAM_FIELD_FEATURES,
		.features = UCP_FEATURE_TAG };
	st = ucp_init(&params, config, &ucx);
	ucp_config_release(config);
	if (st != UCS_OK) {
		what = "ucp_init";
		goto out;
	}
	ucp_worker_params_t wp
	    = { .field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE,
		      .thread_mode = UCS_THREAD_MODE_SINGLE };
	if ((st = ucp_worker_create(ucx, &wp, &u.worker)) != UCS_OK) {
		what = "ucp_worker_create";
		goto out;
	}
	if ((st = ucp_worker_get_address(u.worker, &addr, &addr_len))
	    != UCS_OK) {
		what = "ucp_worker_get_address";
		goto out;
	}
	// Side A sends its address first, side B answers with its own.
	if (side_a) {
		if (oob_send_blob(fd, addr, addr_len) != 0
		    || oob_recv_blob(fd, &remote, &remote_len) != 0)
			goto out;
	} else {
		if (oob_recv_blob(fd, &remote, &remote_len) != 0
		    || oob_send_blob(fd, addr, addr_len) != 0)
			goto out;
	}
	ucp_ep_params_t ep = { .field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS,
		.address = remote };
	if ((st = ucp_ep_create(u.worker, &ep, &u.ep)) != UCS_OK) {
		what = "ucp_ep_create";
		goto out;
	}
	struct peer_ops ops = { u_send, u_recv, &u };
	rc = peer_serve(cfg, &ops, side_a, fd);
out:
	if (what != NULL)
		peer_failed(what, side_a, ucs_status_string(st));
	if (u.ep != NULL) {
		ucp_request_param_t p
		    = { .op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
			      .flags = UCP_EP_CLOSE_FLAG_FORCE };
		void *req = ucp_ep_close_nbx(u.ep, &p);
		if (req != NULL && !UCS_PTR_IS_ERR(req)) {
			for (long i = 0; i < 100000000L
			     && ucp_request_check_status(req)
			         == UCS_INPROGRESS;
			     i++)
				ucp_worker_progress(u.worker);
			ucp_request_free(req);
		}
	}
	free(remote);
	if (addr != NULL)
		ucp_worker_release_address(u.worker, addr);
	if (u.worker != NULL)
		ucp_worker_destroy(u.worker);
	if (ucx != NULL)
		ucp_cleanup(ucx);
	return rc;
}

int main(int argc, char **argv)
{
	struct peer_cfg cfg;
	peer_args(&cfg, "ucx", "shm|tcp", argc, argv);
	if (strcmp(cfg.transport, "shm") == 0) {
		setenv("UCX_TLS", "posix,self", 1);
	} else {
		setenv("UCX_TLS", "tcp", 1);
		setenv("UCX_NET_DEVICES", "lo", 1);
	}
	return peer_fork_run(&cfg, side);
}
