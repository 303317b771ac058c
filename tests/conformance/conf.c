// The runner of the conformance suite.

#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "testdata.h"
#include "testchan.h"

double conf_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int64_t conf_scale(int64_t ms)
{
	const char *m = getenv("TW_TEST_TIMEOUT_MULTIPLIER");
	long f = m ? strtol(m, NULL, 10) : 1;
	return ms * (f > 0 ? f : 1);
}

void conf_failf(conf_party *p, int line, const char *fmt, ...)
{
	if (p->err[0] != '\0')
		return; // keep the first failure: later ones follow from it
	int n = snprintf(
	    p->err, sizeof(p->err), "rank %zu line %d: ", p->rank, line);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(p->err + n, sizeof(p->err) - (size_t)n, fmt, ap);
	va_end(ap);
}

void conf_fill(void *buf, size_t len, uint32_t a, uint32_t b, uint32_t c)
{
	tw_test_fill(buf, len, a, b, c);
}

bool conf_check(
    const void *buf, size_t len, uint32_t a, uint32_t b, uint32_t c)
{
	return tw_test_check(buf, len, a, b, c);
}

typedef struct run_ctx {
	const conf_transport *tp;
	conf_body_fn body;
	int flags;
	testchan_net *net;
	conf_party *parties;
	int *rvs;
} run_ctx;

typedef struct thread_arg {
	run_ctx *ctx;
	size_t rank;
} thread_arg;

static int create_user(run_ctx *ctx, conf_party *p, tw_link **out)
{
	tw_channel **chans = calloc(p->size, sizeof(*chans));
	if (chans == NULL)
		return TW_ENOMEM;
	int rv = testchan_make(ctx->net, p->rank, chans);
	if (rv == TW_OK)
		rv = tw_link_create_with_channels(
		    p->desc, p->rank, chans, out);
	if (rv != TW_OK)
		for (size_t i = 0; i < p->size; i++)
			if (chans[i] != NULL)
				chans[i]->ops->destroy(chans[i]);
	free(chans);
	return rv;
}

int conf_create(conf_party *p, tw_link **out)
{
	if (p->tp->builtin)
		return tw_link_create(p->desc, p->rank, out);
	return create_user(p->priv, p, out);
}

static int party_run(run_ctx *ctx, conf_party *p)
{
	int rv = 0;
	if (!(ctx->flags & CONF_OWN_CREATE)) {
		int st = conf_create(p, &p->link);
		if (st != TW_OK) {
			conf_failf(
			    p, __LINE__, "link create: %s", tw_err_name(st));
			return -1;
		}
	}
	rv = ctx->body(p);
	if (p->link != NULL) {
		int st = tw_link_close(p->link);
		if (st != TW_OK && st != TW_EPEER && rv == 0) {
			conf_failf(
			    p, __LINE__, "link close: %s", tw_err_name(st));
			rv = -1;
		}
	}
	return rv;
}

static void *party_thread(void *a)
{
	thread_arg *ta = a;
	ta->ctx->rvs[ta->rank]
	    = party_run(ta->ctx, &ta->ctx->parties[ta->rank]);
	return NULL;
}

// Runs every party in a forked process; each reports its first failure on
// a pipe.  A party that dies of a signal fails the run, and once one party
// failed the others are killed rather than left to time out.
static void run_procs(run_ctx *ctx, size_t n)
{
	pid_t *pids = calloc(n, sizeof(*pids));
	int(*fds)[2] = calloc(n, sizeof(*fds));
	fflush(NULL);
	for (size_t i = 0; i < n; i++) {
		if (pipe(fds[i]) != 0) {
			ctx->rvs[i] = -1;
			continue;
		}
		pids[i] = fork();
		if (pids[i] == 0) {
			close(fds[i][0]);
			conf_party *p = &ctx->parties[i];
			int rv = party_run(ctx, p);
			ssize_t w = write(fds[i][1], p->err, strlen(p->err));
			(void)w;
			_exit(rv == 0 ? 0 : 1);
		}
		close(fds[i][1]);
	}
	for (size_t done = 0; done < n; done++) {
		int st;
		pid_t pid = wait(&st);
		size_t i = 0;
		while (i < n && pids[i] != pid)
			i++;
		if (i == n)
			continue;
		conf_party *p = &ctx->parties[i];
		ssize_t r = read(fds[i][0], p->err, sizeof(p->err) - 1);
		p->err[r > 0 ? r : 0] = '\0';
		close(fds[i][0]);
		ctx->rvs[i] = WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
		if (WIFSIGNALED(st))
			snprintf(p->err, sizeof(p->err), "killed by signal %d",
			    WTERMSIG(st));
		if (ctx->rvs[i] != 0)
			for (size_t j = 0; j < n; j++)
				if (pids[j] > 0 && j != i)
					kill(pids[j], SIGKILL);
	}
	free(fds);
	free(pids);
}

static unsigned long run_counter;

int conf_run(const conf_transport *tp, size_t n, int flags,
    conf_setup_fn setup, conf_body_fn body, void *arg)
{
	char id[64];
	snprintf(id, sizeof(id), "conf%lu",
	    __atomic_add_fetch(&run_counter, 1, __ATOMIC_RELAXED));
	tw_desc *d = tw_desc_new(id);
	if (d == NULL)
		return -1;
	for (size_t i = 0; i < n; i++) {
		char pid[32], addr[160];
		snprintf(pid, sizeof(pid), "p%zu", i);
		char run_name[96];
		snprintf(
		    run_name, sizeof(run_name), "%ld.%s", (long)getpid(), id);
		if (tp->make_addr != NULL)
			tp->make_addr(addr, sizeof(addr), run_name, i);
		else
			snprintf(
			    addr, sizeof(addr), tp->addr_fmt, run_name, i);
		if (tw_desc_add_party(d, pid, addr) != TW_OK) {
			tw_desc_free(d);
			return -1;
		}
	}
	tw_desc_set(d, TW_OPT_RECV_TIMEOUT_MS, conf_scale(20000));
	tw_desc_set(d, TW_OPT_CONNECT_TIMEOUT_MS, conf_scale(20000));
	if (tp->tune != NULL)
		tp->tune(d);
	if (setup != NULL)
		setup(d, arg);
	run_ctx ctx = { .tp = tp, .body = body, .flags = flags };
	ctx.parties = calloc(n, sizeof(*ctx.parties));
	ctx.rvs = calloc(n, sizeof(*ctx.rvs));
	thread_arg *tas = calloc(n, sizeof(*tas));
	pthread_t *th = calloc(n, sizeof(*th));
	if (!tp->builtin)
		ctx.net = testchan_net_new(n);
	for (size_t i = 0; i < n; i++) {
		ctx.parties[i] = (conf_party) { .desc = d,
			.rank = i,
			.size = n,
			.tp = tp,
			.arg = arg,
			.priv = &ctx };
		tas[i] = (thread_arg) { &ctx, i };
	}
	if (tp->procs) {
		run_procs(&ctx, n);
	} else {
		for (size_t i = 0; i < n; i++)
			pthread_create(&th[i], NULL, party_thread, &tas[i]);
		for (size_t i = 0; i < n; i++)
			pthread_join(th[i], NULL);
	}
	int rv = 0;
	for (size_t i = 0; i < n; i++) {
		if (ctx.rvs[i] != 0) {
			fprintf(stderr, "  party %zu failed: %s\n", i,
			    ctx.parties[i].err[0] ? ctx.parties[i].err
			                          : "(no message)");
			rv = -1;
		}
	}
	testchan_net_free(ctx.net);
	free(th);
	free(tas);
	free(ctx.rvs);
	free(ctx.parties);
	tw_desc_free(d);
	return rv;
}
