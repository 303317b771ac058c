// One party of a link launched through a root (rdv8.sh): everything it
// knows comes from the environment (tw_desc_from_env, TAGWIRE_ROOT), as
// under mpirun or torchrun.  Only the public API is used.
//
// It checks that the link has TAGWIRE_SIZE parties, sends every other
// party 256 KiB whose bytes depend on (sender, receiver), checks what it
// receives from each, runs an allgather of every party's rank as text
// (checked byte for byte) and a barrier, then closes.  It prints "rank R: ok" and exits 0,
// or prints "rank R: FAIL: ..." and exits 1.  RDV_SHM_LOCAL=1 sets
// TW_OPT_SHM_LOCAL on its description.

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tagwire/tagwire.h>

#include "testdata.h"

#define LEN (256 * 1024)

static size_t me;

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	printf("rank %zu: FAIL: ", me);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	exit(1);
}

static void check(int st, const char *what)
{
	if (st != TW_OK)
		die("%s: %s", what, tw_err_name(st));
}

int main(void)
{
	tw_desc *d;
	check(tw_desc_from_env(&d, &me), "tw_desc_from_env");
	const char *shm_local = getenv("RDV_SHM_LOCAL");
	if (shm_local != NULL && strcmp(shm_local, "1") == 0)
		check(tw_desc_set(d, TW_OPT_SHM_LOCAL, 1), "tw_desc_set");
	tw_link *l;
	check(tw_link_create(d, me, &l), "tw_link_create");
	size_t n = tw_link_size(l);
	if (n != tw_desc_size(d) || n != (size_t)atoi(getenv("TAGWIRE_SIZE")))
		die("the link has %zu parties", n);
	tw_desc_free(d);

	unsigned char *buf = malloc(LEN);
	if (buf == NULL)
		die("out of memory");
	for (size_t p = 0; p < n; p++) {
		if (p == me)
			continue;
		tw_test_fill(buf, LEN, (uint32_t)me, (uint32_t)p, 7);
		check(tw_send_async(l, p, "data", buf, LEN), "tw_send_async");
	}
	for (size_t p = 0; p < n; p++) {
		if (p == me)
			continue;
		size_t got;
		check(tw_recv_into(l, p, "data", buf, LEN, &got),
		    "tw_recv_into");
		if (got != LEN
		    || !tw_test_check(buf, LEN, (uint32_t)p, (uint32_t)me, 7))
			die("the bytes from rank %zu are wrong", p);
	}
	check(tw_link_wait_pending(l), "tw_link_wait_pending");
	free(buf);

	// Every party's rank as text, gathered by everyone.
	char mine[32];
	snprintf(mine, sizeof(mine), "rank-%zu", me);
	tw_buf *all = calloc(n, sizeof(*all));
	if (all == NULL)
		die("out of memory");
	check(
	    tw_allgather(l, "names", mine, strlen(mine), all), "tw_allgather");
	for (size_t p = 0; p < n; p++) {
		char want[32];
		snprintf(want, sizeof(want), "rank-%zu", p);
		if (all[p].len != strlen(want)
		    || memcmp(all[p].data, want, all[p].len) != 0)
			die("allgather entry %zu is wrong", p);
		tw_buf_free(&all[p]);
	}
	free(all);
	check(tw_barrier(l, "end"), "tw_barrier");
	check(tw_link_close(l), "tw_link_close");
	printf("rank %zu: ok\n", me);
	return 0;
}
