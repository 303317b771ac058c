// ucx_rma_peer: UCX's one-sided RMA (UCP put/get), the peer of
// ../engine_bench.c, two forked processes.  Side B maps a 16 MiB buffer
// (ucp_mem_map), packs its rkey and sends it with the buffer's address
// over the socketpair; side A unpacks it and times, per size (4 KiB,
// 64 KiB, 1 MiB, 16 MiB), transfers of one ucp_put_nbx (or ucp_get_nbx)
// followed by ucp_ep_flush_nbx, one at a time, and a batch of 1024 puts of
// 4 KiB with one flush.  Side B progresses its worker all along (UCX
// emulates RMA over active messages where a transport has none).  Busy
// polling, single-threaded workers, as ucx_perftest.
//
// Each figure is as engine_bench's: the bandwidth (bytes over the wall
// time of the loop), the average post time (the ucp_put_nbx/ucp_get_nbx
// calls of one transfer) and the median completion time (first post to the
// flush's completion).  The bytes are checked after each loop.
//
// --transport tcp: UCX_TLS=tcp, UCX_NET_DEVICES=lo, section eng-tcp;
// --transport shm: UCX_TLS=sm,self (posix/sysv/cma), section eng-mem.
// --bw-mib sets the bytes per figure, --lat-iters the most transfers per
// figure.  Output: the TSV of engine_bench ("esection" header), which
// bench/merge.awk reads.
#define _GNU_SOURCE

#include <ucp/api/ucp.h>

#include "peer_common.h"

#define NSIZES 4
#define BATCH_N 1024
#define BATCH_SZ (4 * KiB)
#define BUF_BYTES (16 * MiB)

static const size_t sizes[NSIZES] = { 4 * KiB, 64 * KiB, MiB, 16 * MiB };
static const char *const size_names[NSIZES]
    = { "4 KiB", "64 KiB", "1 MiB", "16 MiB" };

enum { CMD_CHECK = 1, CMD_QUIT };
struct cmd {
	int32_t op;
	uint32_t seed;
	uint64_t size;
};

struct rma {
	ucp_context_h ucx;
	ucp_worker_h worker;
	ucp_ep_h ep;
	ucp_mem_h memh;
	unsigned char *buf; // side B: the target; side A: the source
	unsigned char *rx; // side A: where gets land
	ucp_mem_h rx_memh;
	ucp_rkey_h rkey;
	uint64_t raddr;
};

static unsigned char pat(size_t i, unsigned seed)
{
	return (unsigned char)(i * 131u + (i >> 8) * 7u + seed);
}

static void fill(unsigned char *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = pat(i, seed);
}

static int check(const unsigned char *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i += 4093)
		if (b[i] != pat(i, seed))
			return -1;
	return b[n - 1] == pat(n - 1, seed) ? 0 : -1;
}

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

static ucs_status_t map(ucp_context_h ucx, void *p, size_t n, ucp_mem_h *mh)
{
	ucp_mem_map_params_t mp
	    = { .field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS
		          | UCP_MEM_MAP_PARAM_FIELD_LENGTH,
		      .address = p,
		      .length = n };
	return ucp_mem_map(ucx, &mp, mh);
}

static int64_t median_i64(int64_t *v, long n)
{
	qsort(v, (size_t)n, sizeof(*v), bench_cmp_i64);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void emit(const struct peer_cfg *cfg, const char *wl, const char *con,
    double gbps, double post_us, double done_us)
{
	const char *sec
	    = strcmp(cfg->transport, "tcp") == 0 ? "eng-tcp" : "eng-mem";
	printf("%s\t%s\t%s\tbandwidth\tGB/s\t%d\t%.6g\n", sec, wl, con,
	    cfg->round, gbps);
	printf("%s\t%s\t%s\tpost time\tus\t%d\t%.6g\n", sec, wl, con,
	    cfg->round, post_us);
	printf("%s\t%s\t%s\tcompletion\tus\t%d\t%.6g\n", sec, wl, con,
	    cfg->round, done_us);
	fflush(stdout);
}

// warm + iters transfers: put (get = 0) of size bytes, or the batch.
static int rma_loop(struct rma *u, int get, size_t size, int batch, long warm,
    long iters, double *gbps, double *post_us, double *done_us)
{
	int64_t *done = malloc(sizeof(*done) * (size_t)iters);
	int64_t post_sum = 0, t_start = 0;
	ucs_status_t st = UCS_OK;
	if (done == NULL)
		return -1;
	for (long i = 0; i < warm + iters && st == UCS_OK; i++) {
		if (i == warm)
			t_start = bench_now_ns();
		ucp_request_param_t p = { .op_attr_mask = 0 };
		int64_t t0 = bench_now_ns();
		int nposts = batch ? BATCH_N : 1;
		for (int k = 0; k < nposts && st == UCS_OK; k++) {
			size_t off = batch ? (size_t)k * BATCH_SZ : 0;
			size_t len = batch ? BATCH_SZ : size;
			void *req = get ? ucp_get_nbx(u->ep, u->rx + off, len,
			                u->raddr + off, u->rkey, &p)
			                : ucp_put_nbx(u->ep, u->buf + off, len,
			                    u->raddr + off, u->rkey, &p);
			if (UCS_PTR_IS_ERR(req))
				st = UCS_PTR_STATUS(req);
			else if (req != NULL)
				ucp_request_free(req); // the flush covers it
		}
		int64_t t1 = bench_now_ns();
		if (st == UCS_OK)
			st = wait_req(u->worker, ucp_ep_flush_nbx(u->ep, &p));
		int64_t t2 = bench_now_ns();
		if (i >= warm) {
			post_sum += t1 - t0;
			done[i - warm] = t2 - t0;
		}
	}
	if (st != UCS_OK) {
		fprintf(stderr, "ucx_rma_peer: %s: %s\n", get ? "get" : "put",
		    ucs_status_string(st));
		free(done);
		return -1;
	}
	int64_t wall = bench_now_ns() - t_start;
	size_t bytes = batch ? BATCH_N * BATCH_SZ : size;
	*gbps = (double)bytes * (double)iters / (double)wall;
	*post_us = (double)post_sum / (double)iters / 1e3;
	*done_us = (double)median_i64(done, iters) / 1e3;
	free(done);
	return 0;
}

// Side B: answers commands, progressing the worker while it waits.
static int serve(struct rma *u, int fd)
{
	for (;;) {
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		while (poll(&pf, 1, 0) == 0)
			ucp_worker_progress(u->worker);
		struct cmd c;
		if (oob_read(fd, &c, sizeof(c)) != 0)
			return -1;
		if (c.op == CMD_QUIT)
			return 0;
		int32_t st = check(u->buf, c.size, c.seed);
		fill(u->buf, c.size, 0x5a);
		if (oob_write(fd, &st, sizeof(st)) != 0)
			return -1;
	}
}

static int remote_check(int fd, size_t size)
{
	struct cmd c = { CMD_CHECK, 0, size };
	int32_t st;
	if (oob_write(fd, &c, sizeof(c)) != 0 || oob_read(fd, &st, sizeof(st)))
		return -1;
	return st;
}

static long iters_for(const struct peer_cfg *cfg, size_t bytes)
{
	long n = (long)(cfg->bw_bytes / bytes);
	if (n < 4)
		n = 4;
	if (n > cfg->lat_iters)
		n = cfg->lat_iters;
	return n;
}

static long warm_for(long iters)
{
	long w = iters / 20;
	return w < 1 ? 1 : w > 200 ? 200 : w;
}

static int measure(const struct peer_cfg *cfg, struct rma *u, int fd)
{
	for (int s = 0; s < NSIZES; s++) {
		size_t size = sizes[s];
		long iters = iters_for(cfg, size), warm = warm_for(iters);
		char wkl[32];
		snprintf(wkl, sizeof(wkl), "bw %s", size_names[s]);
		for (int get = 0; get < 2; get++) {
			double g, pu, du;
			if (get)
				memset(u->rx, 0, size);
			if (rma_loop(
			        u, get, size, 0, warm, iters, &g, &pu, &du)
			    != 0)
				return -1;
			// put: side B checks and refills; get brings the
			// refill back.
			int bad = get ? check(u->rx, size, 0x5a)
			              : remote_check(fd, size);
			if (bad) {
				fprintf(stderr,
				    "ucx_rma_peer: %s %s: wrong bytes\n",
				    get ? "get" : "put", size_names[s]);
				return -1;
			}
			emit(cfg, wkl, get ? "ucx get" : "ucx put", g, pu, du);
		}
	}
	double g, pu, du;
	long iters = iters_for(cfg, BATCH_N * BATCH_SZ);
	if (rma_loop(u, 0, 0, 1, warm_for(iters), iters, &g, &pu, &du) != 0)
		return -1;
	if (remote_check(fd, BATCH_N * BATCH_SZ) != 0) {
		fprintf(stderr, "ucx_rma_peer: batch: wrong bytes\n");
		return -1;
	}
	emit(cfg, "bw 1024x4 KiB", "ucx put", g, pu, du);
	struct cmd q = { CMD_QUIT, 0, 0 };
	return oob_write(fd, &q, sizeof(q));
}

static int side(const struct peer_cfg *cfg, int side_a, int fd)
{
	ucp_config_t *config = NULL;
	struct rma u = { 0 };
	ucp_address_t *addr = NULL;
	size_t addr_len = 0;
	void *remote = NULL, *rkey_buf = NULL, *blob = NULL;
	size_t remote_len, rkey_len, blob_len;
	const char *what = NULL;
	ucs_status_t st = UCS_OK;
	int rc = -1;

	u.buf = peer_alloc(BUF_BYTES);
	u.rx = side_a ? peer_alloc(BUF_BYTES) : NULL;
	if (u.buf == NULL || (side_a && u.rx == NULL)) {
		what = "malloc";
		goto out;
	}
	fill(u.buf, BUF_BYTES, side_a ? 0 : 0x5a);
	if ((st = ucp_config_read(NULL, NULL, &config)) != UCS_OK) {
		what = "ucp_config_read";
		goto out;
	}
	ucp_params_t params = { .field_mask = UCP_PARAM_FIELD_FEATURES,
		.features = UCP_FEATURE_RMA };
	st = ucp_init(&params, config, &u.ucx);
	ucp_config_release(config);
	if (st != UCS_OK) {
		what = "ucp_init";
		goto out;
	}
	ucp_worker_params_t wp
	    = { .field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE,
		      .thread_mode = UCS_THREAD_MODE_SINGLE };
	if ((st = ucp_worker_create(u.ucx, &wp, &u.worker)) != UCS_OK) {
		what = "ucp_worker_create";
		goto out;
	}
	if ((st = map(u.ucx, u.buf, BUF_BYTES, &u.memh)) != UCS_OK
	    || (side_a
	        && (st = map(u.ucx, u.rx, BUF_BYTES, &u.rx_memh)) != UCS_OK)) {
		what = "ucp_mem_map";
		goto out;
	}
	if ((st = ucp_worker_get_address(u.worker, &addr, &addr_len))
	    != UCS_OK) {
		what = "ucp_worker_get_address";
		goto out;
	}
	// Side A sends its address first, side B answers with its own, then
	// its rkey and the buffer's address.
	if (side_a) {
		if (oob_send_blob(fd, addr, addr_len) != 0
		    || oob_recv_blob(fd, &remote, &remote_len) != 0
		    || oob_recv_blob(fd, &blob, &blob_len) != 0
		    || blob_len < sizeof(uint64_t))
			goto out;
		memcpy(&u.raddr, blob, sizeof(u.raddr));
	} else {
		if ((st = ucp_rkey_pack(u.ucx, u.memh, &rkey_buf, &rkey_len))
		    != UCS_OK) {
			what = "ucp_rkey_pack";
			goto out;
		}
		blob_len = sizeof(uint64_t) + rkey_len;
		blob = malloc(blob_len);
		if (blob == NULL)
			goto out;
		uint64_t a = (uint64_t)(uintptr_t)u.buf;
		memcpy(blob, &a, sizeof(a));
		memcpy((char *)blob + sizeof(a), rkey_buf, rkey_len);
		if (oob_recv_blob(fd, &remote, &remote_len) != 0
		    || oob_send_blob(fd, addr, addr_len) != 0
		    || oob_send_blob(fd, blob, blob_len) != 0)
			goto out;
	}
	ucp_ep_params_t ep = { .field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS,
		.address = remote };
	if ((st = ucp_ep_create(u.worker, &ep, &u.ep)) != UCS_OK) {
		what = "ucp_ep_create";
		goto out;
	}
	if (side_a) {
		if ((st = ucp_ep_rkey_unpack(
		         u.ep, (char *)blob + sizeof(uint64_t), &u.rkey))
		    != UCS_OK) {
			what = "ucp_ep_rkey_unpack";
			goto out;
		}
		rc = measure(cfg, &u, fd);
	} else {
		rc = serve(&u, fd);
	}
	if (rc == 0)
		rc = peer_finish(side_a, fd);
out:
	if (what != NULL)
		peer_failed(what, side_a, ucs_status_string(st));
	if (u.rkey != NULL)
		ucp_rkey_destroy(u.rkey);
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
	if (rkey_buf != NULL)
		ucp_rkey_buffer_release(rkey_buf);
	free(blob);
	free(remote);
	if (addr != NULL)
		ucp_worker_release_address(u.worker, addr);
	if (u.memh != NULL)
		ucp_mem_unmap(u.ucx, u.memh);
	if (u.rx_memh != NULL)
		ucp_mem_unmap(u.ucx, u.rx_memh);
	if (u.worker != NULL)
		ucp_worker_destroy(u.worker);
	if (u.ucx != NULL)
		ucp_cleanup(u.ucx);
	free(u.buf);
	free(u.rx);
	return rc;
}

int main(int argc, char **argv)
{
	struct peer_cfg cfg;
	peer_args(&cfg, "ucx", "tcp|shm", argc, argv);
	if (strcmp(cfg.transport, "shm") == 0) {
		setenv("UCX_TLS", "sm,self", 1);
	} else {
		setenv("UCX_TLS", "tcp", 1);
		setenv("UCX_NET_DEVICES", "lo", 1);
	}
	(void)peer_serve; // peer_common.h's, unused here
	// The header that bench/merge.awk recognises.
	printf("esection\tworkload\tcontender\tmetric\tunit\tround\tvalue\n");
	return peer_fork_run(&cfg, side);
}
