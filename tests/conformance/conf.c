// The runner of the conformance suite.

#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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

enum { ADDR_MAX = 160 };

// The description of party `rank`: every party's names the same parties at
// the same addresses with the same defaults, then the case's adjustments.
static tw_desc *desc_make(const conf_transport *tp, const char *id, size_t n,
    const char (*addrs)[ADDR_MAX], size_t rank, conf_setup_fn setup,
    conf_setup_party_fn setup_party, void *arg)
{
	tw_desc *d = tw_desc_new(id);
	if (d == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		char pid[32];
		snprintf(pid, sizeof(pid), "p%zu", i);
		if (tw_desc_add_party(d, pid, addrs[i]) != TW_OK) {
			tw_desc_free(d);
			return NULL;
		}
	}
	tw_desc_set(d, TW_OPT_RECV_TIMEOUT_MS, conf_scale(20000));
	tw_desc_set(d, TW_OPT_CONNECT_TIMEOUT_MS, conf_scale(20000));
	if (tp->tune != NULL)
		tp->tune(d);
	if (setup != NULL)
		setup(d, arg);
	if (setup_party != NULL)
		setup_party(d, rank, arg);
	return d;
}

int conf_run(const conf_transport *tp, size_t n, int flags,
    conf_setup_fn setup, conf_body_fn body, void *arg)
{
	return conf_run_each(tp, n, flags, setup, NULL, body, arg);
}

int conf_run_each(const conf_transport *tp, size_t n, int flags,
    conf_setup_fn setup, conf_setup_party_fn setup_party, conf_body_fn body,
    void *arg)
{
	char id[64];
	snprintf(id, sizeof(id), "conf%lu",
	    __atomic_add_fetch(&run_counter, 1, __ATOMIC_RELAXED));
	// Addresses are made once per run (make_addr picks free ports), so
	// that every party's description names the same ones.
	char(*addrs)[ADDR_MAX] = calloc(n, sizeof(*addrs));
	tw_desc **descs = calloc(n, sizeof(*descs));
	int rv = addrs != NULL && descs != NULL ? 0 : -1;
	char run_name[96];
	snprintf(run_name, sizeof(run_name), "%ld.%s", (long)getpid(), id);
	for (size_t i = 0; i < n && rv == 0; i++) {
		if (tp->make_addr != NULL)
			tp->make_addr(addrs[i], ADDR_MAX, run_name, i);
		else
			snprintf(
			    addrs[i], ADDR_MAX, tp->addr_fmt, run_name, i);
	}
	for (size_t i = 0; i < n && rv == 0; i++)
		if ((descs[i] = desc_make(
		         tp, id, n, addrs, i, setup, setup_party, arg))
		    == NULL)
			rv = -1;
	free(addrs);
	if (rv != 0) {
		for (size_t i = 0; descs != NULL && i < n; i++)
			tw_desc_free(descs[i]);
		free(descs);
		return -1;
	}
	run_ctx ctx = { .tp = tp, .body = body, .flags = flags };
	ctx.parties = calloc(n, sizeof(*ctx.parties));
	ctx.rvs = calloc(n, sizeof(*ctx.rvs));
	thread_arg *tas = calloc(n, sizeof(*tas));
	pthread_t *th = calloc(n, sizeof(*th));
	if (!tp->builtin)
		ctx.net = testchan_net_new(n, tp->lazy_wait);
	for (size_t i = 0; i < n; i++) {
		ctx.parties[i] = (conf_party) { .desc = descs[i],
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
	for (size_t i = 0; i < n; i++)
		tw_desc_free(descs[i]);
	free(descs);
	return rv;
}

struct conf_board {
	pthread_mutex_t mtx;
	pthread_cond_t cv;
	bool posted[CONF_BOARD_SLOTS];
	uint64_t value[CONF_BOARD_SLOTS];
};

conf_board *conf_board_new(void)
{
	conf_board *b = mmap(NULL, sizeof(*b), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (b == MAP_FAILED)
		return NULL;
	memset(b, 0, sizeof(*b));
	pthread_mutexattr_t ma;
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
	pthread_mutex_init(&b->mtx, &ma);
	pthread_mutexattr_destroy(&ma);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&b->cv, &ca);
	pthread_condattr_destroy(&ca);
	return b;
}

void conf_board_free(conf_board *b)
{
	if (b == NULL)
		return;
	pthread_cond_destroy(&b->cv);
	pthread_mutex_destroy(&b->mtx);
	munmap(b, sizeof(*b));
}

void conf_board_post(conf_board *b, unsigned slot, uint64_t value)
{
	pthread_mutex_lock(&b->mtx);
	b->value[slot] = value;
	b->posted[slot] = true;
	pthread_cond_broadcast(&b->cv);
	pthread_mutex_unlock(&b->mtx);
}

bool conf_board_wait(
    conf_board *b, unsigned slot, int64_t timeout_ms, uint64_t *value)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	int64_t ns = ts.tv_nsec + timeout_ms % 1000 * 1000000;
	ts.tv_sec += (time_t)(timeout_ms / 1000 + ns / 1000000000);
	ts.tv_nsec = (long)(ns % 1000000000);
	pthread_mutex_lock(&b->mtx);
	int rv = 0;
	while (!b->posted[slot] && rv == 0)
		rv = pthread_cond_timedwait(&b->cv, &b->mtx, &ts);
	bool posted = b->posted[slot];
	if (posted && value != NULL)
		*value = b->value[slot];
	pthread_mutex_unlock(&b->mtx);
	return posted;
}
