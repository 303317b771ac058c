// tagwire perf --test xfer: the transfer engine (tagwire/engine.h) between
// two engines of this process, in the manner of nixlbench: for each
// transport, op, block size and batch size, a number of transfers of
// `batch` posts of `size` bytes each (post i at offset i*size), with
//   GB/s         bytes moved / the wall time of the timed transfers
//   post us      time to create a transfer and post its posts (avg, p99)
//   completion   from the first post to done (avg, p99)
// Transports: mem (mem://), tcp (over 127.0.0.1, per --stripes) and
// shm-local, which for now is tcp with TW_OPT_SHM_LOCAL=1 (the engine
// sends same-host peers over tcp://) and says so in its name.
//
// Engine "a" is the target (it registers its buffer for READ and WRITE,
// and posts the receives of send); engine "b" initiates.  The options of
// tagwire perf that make no sense here (--local, --server, --client, the
// other tests) are refused, so that the run is what the command says.

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <tagwire/engine.h>
#include <tagwire/tagwire.h>

#include "cli.h"
#include "perf.h"

#define MAX_LIST 16
#define ROW_BYTES ((uint64_t)16 << 20) // about this much per row
#define MIN_ITERS 10
#define MAX_AUTO_ITERS 100
#define MAX_TOTAL ((uint64_t)1 << 30)

enum { X_MEM, X_TCP, X_SHM_LOCAL, X_NT };
static const char *const xt_name[X_NT] = { "mem", "tcp", "shm-local" };
// As rows print them: shm-local is tcp for now.
static const char *const xt_label[X_NT] = { "mem", "tcp", "shm-local(tcp)" };
enum { XO_WRITE, XO_READ, XO_SEND, XO_N };
static const char *const xo_name[XO_N] = { "write", "read", "send" };
static const char *const xo_label[XO_N] = { "write", "read", "send/recv" };

typedef struct xp_opts {
	int transports[X_NT];
	size_t ntransports;
	int ops[XO_N];
	size_t nops;
	uint64_t sizes[MAX_LIST];
	size_t nsizes;
	uint64_t batches[MAX_LIST];
	size_t nbatches;
	uint64_t stripes[MAX_LIST];
	size_t nstripes;
	uint64_t iters; // 0: by size
	uint64_t window, chunk;
	int64_t timeout_ms;
	bool validate;
	int format;
} xp_opts;

typedef struct xp_row {
	int transport, op;
	uint64_t size, batch, stripes, iters;
	double gbps, post_avg, post_p99, done_avg, done_p99;
} xp_row;

static int xp_usage(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static int xp_usage(const char *fmt, ...)
{
	char m[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m, sizeof(m), fmt, ap);
	va_end(ap);
	return cli_usage_error("perf", "--test xfer: %s", m);
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

static const struct {
	const char *title, *key;
	int width; // negative: left aligned
} cols[] = {
	{ "transport", "transport", -14 },
	{ "op", "op", -9 },
	{ "block size", "block_size", 10 },
	{ "batch", "batch_size", 6 },
	{ "stripes", "stripes", 7 },
	{ "iters", "iters", 6 },
	{ "GB/s", "gbps", 9 },
	{ "avg post µs", "avg_post_us", 12 },
	{ "p99 post µs", "p99_post_us", 12 },
	{ "avg compl µs", "avg_completion_us", 13 },
	{ "p99 compl µs", "p99_completion_us", 13 },
};
#define NCOLS (sizeof(cols) / sizeof(cols[0]))

static int text_width(const char *s)
{
	int w = 0;
	for (; *s; s++)
		w += ((unsigned char)*s & 0xc0) != 0x80;
	return w;
}

static void cell(const char *s, int width, bool first)
{
	int pad = (width < 0 ? -width : width) - text_width(s);
	if (!first)
		putchar(' ');
	for (int i = 0; width > 0 && i < pad; i++)
		putchar(' ');
	fputs(s, stdout);
	for (int i = 0; width < 0 && i < pad; i++)
		putchar(' ');
}

static size_t out_rows;

static void out_begin(int format)
{
	out_rows = 0;
	if (format == PERF_FMT_JSON) {
		fputs("[", stdout);
	} else {
		for (size_t c = 0; c < NCOLS; c++) {
			if (format == PERF_FMT_CSV)
				printf("%s%s", c ? "," : "", cols[c].key);
			else
				cell(cols[c].title, cols[c].width, c == 0);
		}
		putchar('\n');
	}
	fflush(stdout);
}

static void fmt_num(char *buf, size_t cap, double v, bool table)
{
	if (!table)
		snprintf(buf, cap, "%.4f", v);
	else if (v < 10)
		snprintf(buf, cap, "%.3f", v);
	else if (v < 100)
		snprintf(buf, cap, "%.2f", v);
	else if (v < 10000)
		snprintf(buf, cap, "%.1f", v);
	else
		snprintf(buf, cap, "%.0f", v);
}

static void out_row(int format, const xp_row *r)
{
	bool table = format == PERF_FMT_TABLE;
	char v[NCOLS][48];
	snprintf(v[0], 48, "%s", xt_label[r->transport]);
	snprintf(v[1], 48, "%s", xo_label[r->op]);
	if (table)
		cli_fmt_bytes(v[2], 48, r->size);
	else
		snprintf(v[2], 48, "%" PRIu64, r->size);
	snprintf(v[3], 48, "%" PRIu64, r->batch);
	snprintf(v[4], 48, "%" PRIu64, r->stripes);
	snprintf(v[5], 48, "%" PRIu64, r->iters);
	const double fig[]
	    = { r->gbps, r->post_avg, r->post_p99, r->done_avg, r->done_p99 };
	for (size_t c = 6; c < NCOLS; c++)
		fmt_num(v[c], 48, fig[c - 6], table);
	if (format == PERF_FMT_JSON) {
		printf("%s\n  {", out_rows ? "," : "");
		for (size_t c = 0; c < NCOLS; c++)
			printf(c < 2 ? "%s\"%s\": \"%s\"" : "%s\"%s\": %s",
			    c ? ", " : "", cols[c].key, v[c]);
		putchar('}');
	} else {
		for (size_t c = 0; c < NCOLS; c++) {
			if (format == PERF_FMT_CSV)
				printf("%s%s", c ? "," : "", v[c]);
			else
				cell(v[c], cols[c].width, c == 0);
		}
		putchar('\n');
	}
	out_rows++;
	fflush(stdout);
}

static void out_end(int format)
{
	if (format == PERF_FMT_JSON)
		fputs("\n]\n", stdout);
	fflush(stdout);
}

// ---------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------

typedef struct pairx {
	tw_engine *a, *b;
	tw_peer ab, ba;
} pairx;

static char err[600];

static int seterr(const char *what, int st)
{
	snprintf(err, sizeof(err), "%s: %s (%s)", what, tw_err_name(st),
	    tw_strerror(st));
	return -1;
}

static int pair_open(pairx *p, const xp_opts *o, int t, uint64_t stripes)
{
	static unsigned serial;
	memset(p, 0, sizeof(*p));
	int st = tw_engine_new("perf-xfer-a", &p->a);
	if (st == TW_OK)
		st = tw_engine_new("perf-xfer-b", &p->b);
	tw_engine *both[2] = { p->a, p->b };
	for (int i = 0; i < 2 && st == TW_OK; i++) {
		st = tw_engine_set(both[i], TW_OPT_STRIPES, (int64_t)stripes);
		if (st == TW_OK)
			st = tw_engine_set(
			    both[i], TW_OPT_WINDOW, (int64_t)o->window);
		if (st == TW_OK)
			st = tw_engine_set(
			    both[i], TW_OPT_CHUNK_SIZE, (int64_t)o->chunk);
		if (st == TW_OK)
			st = tw_engine_set(
			    both[i], TW_OPT_CONNECT_TIMEOUT_MS, o->timeout_ms);
		if (st == TW_OK && t == X_SHM_LOCAL)
			st = tw_engine_set(both[i], TW_OPT_SHM_LOCAL, 1);
	}
	if (st != TW_OK)
		return seterr("setting up the engines", st);
	char addr[80];
	if (t == X_MEM)
		snprintf(addr, sizeof(addr), "mem://perf-xfer-%ld-%u",
		    (long)getpid(), ++serial);
	else
		snprintf(addr, sizeof(addr), "tcp://127.0.0.1:0");
	st = tw_engine_listen(p->a, addr);
	if (st != TW_OK)
		return seterr("tw_engine_listen", st);
	tw_buf info = { 0 };
	st = tw_engine_info(p->a, &info);
	if (st != TW_OK)
		return seterr("tw_engine_info", st);
	st = tw_engine_connect(p->b, info.data, info.len, &p->ba);
	tw_buf_free(&info);
	if (st != TW_OK)
		return seterr("tw_engine_connect", st);
	st = tw_engine_accept(p->a, "perf-xfer-b", o->timeout_ms, &p->ab);
	if (st != TW_OK)
		return seterr("tw_engine_accept", st);
	return 0;
}

static void pair_close(pairx *p)
{
	tw_engine_free(p->b);
	tw_engine_free(p->a);
}

static int cmp_double(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;
	return (a > b) - (a < b);
}

static void stats(double *v, size_t n, double *avg, double *p99)
{
	double sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += v[i];
	*avg = n ? sum / (double)n : NAN;
	qsort(v, n, sizeof(double), cmp_double);
	size_t k = (99 * n + 99) / 100; // ceil(0.99 n)
	*p99 = n ? v[k > 0 ? k - 1 : 0] : NAN;
}

// One transfer: posts (timed into *post_ns), waits (*done_ns from the
// first post).  0 or -1 with err set.
static int one(pairx *p, const xp_opts *o, int op, uint64_t size,
    uint64_t batch, uint64_t lid, uint64_t rid, uint64_t tid, int64_t *post_ns,
    int64_t *done_ns)
{
	tw_xfer *xr = NULL, *x = NULL;
	int st = TW_OK;
	if (op == XO_SEND) {
		st = tw_xfer_create(p->a, p->ab, o->timeout_ms, &xr);
		for (uint64_t i = 0; st == TW_OK && i < batch; i++)
			st = tw_xfer_post_recv(xr, tid, i * size, size, i);
		if (st != TW_OK) {
			tw_xfer_free(xr);
			return seterr("posting the receives", st);
		}
	}
	int64_t t0 = now_ns();
	st = tw_xfer_create(p->b, p->ba, o->timeout_ms, &x);
	for (uint64_t i = 0; st == TW_OK && i < batch; i++) {
		size_t off = (size_t)(i * size);
		if (op == XO_WRITE)
			st = tw_xfer_post_write(x, lid, off, rid, off, size);
		else if (op == XO_READ)
			st = tw_xfer_post_read(x, lid, off, rid, off, size);
		else
			st = tw_xfer_post_send(x, lid, off, size, i);
	}
	int64_t t1 = now_ns();
	if (st != TW_OK) {
		tw_xfer_free(x);
		tw_xfer_free(xr);
		return seterr("posting", st);
	}
	st = tw_xfer_wait(x, -1);
	if (st == TW_OK && xr != NULL)
		st = tw_xfer_wait(xr, -1);
	int64_t t2 = now_ns();
	tw_xfer_free(x);
	tw_xfer_free(xr);
	if (st != TW_OK)
		return seterr("tw_xfer_wait", st);
	*post_ns = t1 - t0;
	*done_ns = t2 - t0;
	return 0;
}

static int measure(pairx *p, const xp_opts *o, int op, uint64_t size,
    uint64_t batch, xp_row *r)
{
	uint64_t total = size * batch;
	uint64_t iters = o->iters;
	if (iters == 0) {
		iters = ROW_BYTES / total;
		iters = iters < MIN_ITERS    ? MIN_ITERS
		    : iters > MAX_AUTO_ITERS ? MAX_AUTO_ITERS
		                             : iters;
	}
	uint64_t warm = iters / 10 ? iters / 10 : 1;
	unsigned char *tb = malloc(total), *ib = malloc(total);
	double *post = malloc(iters * sizeof(double));
	double *done = malloc(iters * sizeof(double));
	uint64_t tid = 0, lid = 0, rid = 0;
	int rc = -1, st = TW_OK;
	if (tb == NULL || ib == NULL || post == NULL || done == NULL) {
		snprintf(err, sizeof(err), "out of memory");
		goto out;
	}
	memset(tb, 0, total);
	memset(ib, 0, total);
	st = tw_mem_register(p->a, tb, total, TW_MEM_HOST,
	    TW_ACCESS_READ | TW_ACCESS_WRITE, &tid);
	if (st != TW_OK) {
		seterr("tw_mem_register", st);
		goto out;
	}
	st = tw_mem_register(p->b, ib, total, TW_MEM_HOST, 0, &lid);
	if (st != TW_OK) {
		seterr("tw_mem_register", st);
		goto out;
	}
	tw_buf d = { 0 };
	st = tw_mem_pack(p->a, tid, &d);
	if (st == TW_OK)
		st = tw_mem_unpack(p->b, p->ba, d.data, d.len, &rid);
	tw_buf_free(&d);
	if (st != TW_OK) {
		seterr("sharing the target buffer", st);
		goto out;
	}
	// The byte source of the op, and where the bytes land.
	unsigned char *src = op == XO_READ ? tb : ib;
	unsigned char *dst = op == XO_READ ? ib : tb;
	int64_t wall = 0;
	for (uint64_t k = 0; k < warm + iters; k++) {
		if (o->validate) {
			cli_xfer_fill(src, 0, total, k);
			cli_xfer_fill(dst, 0, total, ~k);
		}
		int64_t pn, dn;
		if (one(p, o, op, size, batch, lid, rid, tid, &pn, &dn) != 0)
			goto out;
		if (o->validate) {
			size_t bad;
			unsigned want, got;
			if (cli_xfer_check(dst, 0, total, k, &bad, &want, &got)
			    != 0) {
				snprintf(err, sizeof(err),
				    "validation failed: transfer %" PRIu64
				    ", offset %zu: expected 0x%02x, got "
				    "0x%02x",
				    k, bad, want, got);
				goto out;
			}
		}
		if (k < warm)
			continue;
		post[k - warm] = (double)pn / 1e3;
		done[k - warm] = (double)dn / 1e3;
		wall += dn;
	}
	r->iters = iters;
	r->gbps = (double)(total * iters) / ((double)(wall > 0 ? wall : 1));
	stats(post, iters, &r->post_avg, &r->post_p99);
	stats(done, iters, &r->done_avg, &r->done_p99);
	rc = 0;
out:
	if (lid != 0)
		tw_mem_deregister(p->b, lid);
	if (tid != 0)
		tw_mem_deregister(p->a, tid);
	free(tb);
	free(ib);
	free(post);
	free(done);
	return rc;
}

static int run(const xp_opts *o)
{
	out_begin(o->format);
	int rc = CLI_OK;
	for (size_t ti = 0; ti < o->ntransports && rc == CLI_OK; ti++) {
		int t = o->transports[ti];
		size_t ns = t == X_MEM ? 1 : o->nstripes;
		for (size_t si = 0; si < ns && rc == CLI_OK; si++) {
			uint64_t stripes = t == X_MEM ? 1 : o->stripes[si];
			pairx p;
			if (pair_open(&p, o, t, stripes) != 0) {
				fprintf(stderr,
				    "tagwire perf: xfer %s, %" PRIu64
				    " stripes: %s\n",
				    xt_name[t], stripes, err);
				pair_close(&p);
				rc = CLI_FAILED;
				break;
			}
			for (size_t oi = 0; oi < o->nops && rc == CLI_OK; oi++)
				for (size_t zi = 0;
				     zi < o->nsizes && rc == CLI_OK; zi++)
					for (size_t bi = 0;
					     bi < o->nbatches && rc == CLI_OK;
					     bi++) {
						xp_row r = { .transport = t,
							.op = o->ops[oi],
							.size = o->sizes[zi],
							.batch
							= o->batches[bi],
							.stripes = stripes };
						if (measure(&p, o, r.op,
						        r.size, r.batch, &r)
						    == 0) {
							out_row(o->format, &r);
							continue;
						}
						char sz[32];
						cli_fmt_bytes(
						    sz, sizeof(sz), r.size);
						fprintf(stderr,
						    "tagwire perf: xfer %s %s "
						    "%s x%" PRIu64 ": %s\n",
						    xt_name[t], xo_name[r.op],
						    sz, r.batch, err);
						rc = CLI_FAILED;
					}
			pair_close(&p);
		}
	}
	out_end(o->format);
	if (rc == CLI_OK && o->format == PERF_FMT_TABLE) {
		for (size_t ti = 0; ti < o->ntransports; ti++)
			if (o->transports[ti] == X_SHM_LOCAL)
				printf("shm-local(tcp): tcp:// with "
				       "TW_OPT_SHM_LOCAL=1; the engine has no "
				       "shared-memory path yet\n");
	}
	return rc;
}

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

static int name_list(const char *opt, const char *val,
    const char *const *names, int n, int *out, size_t *count)
{
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", val);
	*count = 0;
	for (char *save = NULL, *s = strtok_r(buf, ",", &save); s != NULL;
	     s = strtok_r(NULL, ",", &save)) {
		int k = -1;
		for (int j = 0; j < n; j++)
			if (strcmp(s, names[j]) == 0)
				k = j;
		if (k < 0 && names == xo_name
		    && (strcmp(s, "recv") == 0 || strcmp(s, "send/recv") == 0))
			k = XO_SEND;
		if (k < 0)
			return xp_usage("%s: unknown item '%.32s'", opt, s);
		bool dup = false;
		for (size_t j = 0; j < *count; j++)
			dup = dup || out[j] == k;
		if (!dup)
			out[(*count)++] = k;
	}
	if (*count == 0)
		return xp_usage("%s wants a list", opt);
	return 0;
}

static int num_list(const char *opt, const char *val, uint64_t min,
    uint64_t max, int units, uint64_t *out, size_t *count)
{
	char buf[512];
	snprintf(buf, sizeof(buf), "%s", val);
	*count = 0;
	for (char *save = NULL, *s = strtok_r(buf, ",", &save); s != NULL;
	     s = strtok_r(NULL, ",", &save)) {
		if (*count >= MAX_LIST
		    || cli_parse_u64(s, min, max, units, &out[*count]) != 0)
			return xp_usage("%s: '%.32s' is not a number from "
			                "%" PRIu64 " to %" PRIu64
			                " (up to %d items)",
			    opt, s, min, max, MAX_LIST);
		(*count)++;
	}
	if (*count == 0)
		return xp_usage("%s wants a list", opt);
	return 0;
}

void perf_xfer_usage(FILE *f)
{
	fprintf(f,
	    "  --test xfer        the transfer engine between two engines "
	    "of this\n"
	    "                     process, alone: GB/s, post and completion "
	    "times per\n"
	    "                     block and batch size.  Its options:\n"
	    "                       --op LIST         write, read, send "
	    "(default all)\n"
	    "                       --transport LIST  mem, tcp, shm-local "
	    "(default mem,tcp)\n"
	    "                       --sizes LIST      block sizes (default "
	    "4K,64K,1M)\n"
	    "                       --batch LIST      posts per transfer "
	    "(default 1,16)\n"
	    "                       --stripes LIST    tcp connections "
	    "(default 1)\n"
	    "                       --window N, --chunk BYTES, --iters N, "
	    "--validate,\n"
	    "                       --timeout S, --quick, --csv, --json\n");
}

int perf_xfer(int argc, char **argv)
{
	xp_opts o;
	memset(&o, 0, sizeof(o));
	o.transports[0] = X_MEM;
	o.transports[1] = X_TCP;
	o.ntransports = 2;
	for (int k = 0; k < XO_N; k++)
		o.ops[o.nops++] = k;
	static const uint64_t sizes[] = { 4096, 65536, 1 << 20 };
	for (size_t i = 0; i < 3; i++)
		o.sizes[o.nsizes++] = sizes[i];
	o.batches[o.nbatches++] = 1;
	o.batches[o.nbatches++] = 16;
	o.stripes[o.nstripes++] = 1;
	o.window = 16; // the engine's default
	o.chunk = (uint64_t)1 << 20;
	o.timeout_ms = (int64_t)PERF_DEFAULT_TIMEOUT_S * 1000;
	o.format = PERF_FMT_TABLE;
	bool quick = false, sizes_set = false, batch_set = false;
	bool iters_set = false, csv = false, json = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			perf_usage(stdout, true);
			return CLI_OK;
		}
		if (strcmp(a, "--quick") == 0) {
			quick = true;
			continue;
		}
		if (strcmp(a, "--validate") == 0) {
			o.validate = true;
			continue;
		}
		if (strcmp(a, "--csv") == 0 || strcmp(a, "--json") == 0) {
			csv = csv || a[2] == 'c';
			json = json || a[2] == 'j';
			o.format = a[2] == 'c' ? PERF_FMT_CSV : PERF_FMT_JSON;
			continue;
		}
		static const char *const vals[] = { "--test", "--op",
			"--transport", "--sizes", "--batch", "--stripes",
			"--window", "--chunk", "--iters", "--timeout" };
		int k = -1;
		const char *val = NULL;
		for (int j = 0; j < 10 && k < 0; j++) {
			size_t n = strlen(vals[j]);
			if (strncmp(a, vals[j], n) != 0
			    || (a[n] != '\0' && a[n] != '='))
				continue;
			k = j;
			val = a[n] == '='  ? a + n + 1
			    : i + 1 < argc ? argv[++i]
			                   : NULL;
		}
		if (k < 0)
			return xp_usage("%s '%.64s'",
			    a[0] == '-' ? "it does not take the option"
			                : "unexpected argument",
			    a);
		if (val == NULL)
			return xp_usage("%s needs a value", vals[k]);
		int bad = 0;
		uint64_t v;
		switch (k) {
		case 0:
			if (strcmp(val, "xfer") != 0)
				return xp_usage("xfer runs alone, not with "
				                "other tests");
			break;
		case 1:
			bad = name_list(
			    "--op", val, xo_name, XO_N, o.ops, &o.nops);
			break;
		case 2:
			bad = name_list("--transport", val, xt_name, X_NT,
			    o.transports, &o.ntransports);
			break;
		case 3:
			bad = num_list("--sizes", val, 1, (uint64_t)1 << 30, 1,
			    o.sizes, &o.nsizes);
			sizes_set = true;
			break;
		case 4:
			bad = num_list("--batch", val, 1, 1024, 0, o.batches,
			    &o.nbatches);
			batch_set = true;
			break;
		case 5:
			bad = num_list("--stripes", val, 1, 64, 0, o.stripes,
			    &o.nstripes);
			break;
		case 6:
			if (cli_parse_u64(val, 1, 1024, 0, &o.window) != 0)
				return xp_usage("--window wants 1 to 1024");
			break;
		case 7:
			if (cli_parse_u64(
			        val, 4096, (uint64_t)64 << 20, 1, &o.chunk)
			    != 0)
				return xp_usage("--chunk wants 4K to 64M");
			break;
		case 8:
			if (cli_parse_u64(val, 1, 1000000, 0, &o.iters) != 0)
				return xp_usage("--iters wants 1 to 1000000");
			iters_set = true;
			break;
		case 9:
			if (cli_parse_u64(val, 1, 86400, 0, &v) != 0)
				return xp_usage(
				    "--timeout wants seconds from 1 to 86400");
			o.timeout_ms = (int64_t)v * 1000;
			break;
		}
		if (bad != 0)
			return CLI_USAGE;
	}
	if (csv && json)
		return xp_usage("--csv and --json exclude each other");
	if (quick) {
		if (!sizes_set) {
			o.nsizes = 2;
			o.sizes[0] = 4096;
			o.sizes[1] = 65536;
		}
		if (!batch_set) {
			o.nbatches = 2;
			o.batches[0] = 1;
			o.batches[1] = 4;
		}
		if (!iters_set)
			o.iters = 10;
	}
	for (size_t z = 0; z < o.nsizes; z++)
		for (size_t b = 0; b < o.nbatches; b++)
			if (o.sizes[z] * o.batches[b] > MAX_TOTAL)
				return xp_usage("a block size times a batch "
				                "size is above 1 GiB");
	return run(&o);
}
