// dial_independent: one link's dial must not hold up another link's.
// Process A creates links X and Y to process B at the same addresses; A's
// address sorts first, so A dials.  B creates Y only, so X's dials to B
// keep being refused (closed unanswered, or refused while nothing
// listens) until X's connect timeout.
//
// The test listens on B's port itself first, to see X's first dial arrive
// (it closes that connection unanswered, as a process without the link
// would); only then does A start Y, and B start.  A's Y must come up
// within 2 s (scaled), far below X's connect timeout (8 s, scaled), and
// carry a message each way; X ends with TW_ETIMEDOUT at its timeout.

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "parts.h"
#include "testutil.h"
#include "tf.h"

typedef struct dialer {
	tw_desc *d;
	int status;
	int64_t ms;
	tw_link *l;
	int done_fd;
} dialer;

static void *dialer_main(void *arg)
{
	dialer *x = arg;
	int64_t t0 = tf_now_ms();
	x->status = tw_link_create(x->d, 0, &x->l);
	x->ms = tf_now_ms() - t0;
	if (x->done_fd >= 0)
		(void)tf_say(x->done_fd, "done");
	return NULL;
}

static void talk(tw_link *l, size_t me)
{
	tw_buf b = { 0 };
	if (me == 0) {
		TF_OK(tw_send(l, 1, "hi", "from a", 6));
		TF_OK(tw_recv(l, 1, "ho", &b));
		if (b.len != 6 || memcmp(b.data, "from b", 6) != 0)
			tf_die("wrong message from B");
	} else {
		TF_OK(tw_recv(l, 0, "hi", &b));
		if (b.len != 6 || memcmp(b.data, "from a", 6) != 0)
			tf_die("wrong message from A");
		TF_OK(tw_send(l, 0, "ho", "from b", 6));
	}
	tw_buf_free(&b);
}

// dial_a PORT_A PORT_B X_TIMEOUT_MS CMD_FD REPORT_FD
int role_dial_a(int argc, char **argv)
{
	tf_who = "A";
	unsigned ports[2] = { (unsigned)strtoul(argv[0], NULL, 10),
		(unsigned)strtoul(argv[1], NULL, 10) };
	int64_t x_timeout = strtoll(argv[2], NULL, 10);
	int cmd = atoi(argv[3]), report = atoi(argv[4]);
	dialer x
	    = { .d = tf_desc("x", ports, 2, x_timeout, 10000), .done_fd = -1 };
	dialer y
	    = { .d = tf_desc("y", ports, 2, x_timeout, 10000), .done_fd = -1 };
	pthread_t tx, ty;
	if (pthread_create(&tx, NULL, dialer_main, &x) != 0)
		tf_die("pthread_create failed");
	char line[16];
	if (tf_hear(cmd, line, sizeof(line), tf_now_ms() + x_timeout) < 0)
		tf_die("no word to start Y");
	if (pthread_create(&ty, NULL, dialer_main, &y) != 0)
		tf_die("pthread_create failed");
	pthread_join(ty, NULL);
	tf_say(report, "y %d %lld", y.status, (long long)y.ms);
	if (y.status == TW_OK) {
		talk(y.l, 0);
		int st = tw_link_close(y.l);
		if (st != TW_OK && st != TW_EPEER)
			tf_die("closing Y: %s", tw_err_name(st));
	}
	pthread_join(tx, NULL);
	tf_say(report, "x %d %lld", x.status, (long long)x.ms);
	if (x.status == TW_OK)
		tw_link_close(x.l);
	tw_desc_free(x.d);
	tw_desc_free(y.d);
	return 0;
}

// dial_b PORT_A PORT_B TIMEOUT_MS
int role_dial_b(int argc, char **argv)
{
	tf_who = "B";
	unsigned ports[2] = { (unsigned)strtoul(argv[0], NULL, 10),
		(unsigned)strtoul(argv[1], NULL, 10) };
	tw_desc *d = tf_desc("y", ports, 2, strtoll(argv[2], NULL, 10), 10000);
	tw_link *l = NULL;
	TF_OK(tw_link_create(d, 1, &l));
	talk(l, 1);
	int st = tw_link_close(l);
	if (st != TW_OK && st != TW_EPEER)
		tf_die("tw_link_close: %s", tw_err_name(st));
	tw_desc_free(d);
	return 0;
}

static int listen_on(unsigned port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sa = { .sin_family = AF_INET,
		.sin_port = htons((uint16_t)port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0
	    || listen(fd, 16) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

void test_dial_independent(void **state)
{
	unsigned ports[2];
	int lfd;
	do {
		assert_int_equal(tf_ports(ports, 2, NULL, 0), 0);
		lfd = listen_on(ports[1]);
	} while (lfd < 0);
	char pa[16], pb[16], sx[24], scmd[16], srep[16];
	int64_t x_timeout = tf_scale_ms(8000);
	snprintf(pa, sizeof(pa), "%u", ports[0]);
	snprintf(pb, sizeof(pb), "%u", ports[1]);
	snprintf(sx, sizeof(sx), "%lld", (long long)x_timeout);
	int cmd[2], rep[2];
	tf_pipe(cmd);
	tf_pipe(rep);
	snprintf(scmd, sizeof(scmd), "%d", cmd[0]);
	snprintf(srep, sizeof(srep), "%d", rep[1]);
	const char *aargs[] = { pa, pb, sx, scmd, srep, NULL };
	int keep[2] = { cmd[0], rep[1] };
	pid_t pids[2];
	pids[0] = tf_spawn("dial_a", aargs, keep, 2);
	assert_true(pids[0] > 0);
	close(cmd[0]);
	close(rep[1]);

	// X's first dial.
	struct pollfd p = { .fd = lfd, .events = POLLIN };
	if (poll(&p, 1, (int)tf_scale_ms(10000)) != 1)
		fail_msg("X never dialed B's address");
	int cfd = accept(lfd, NULL, NULL);
	assert_true(cfd >= 0);
	close(cfd);
	close(lfd);

	int64_t t0 = tf_now_ms();
	assert_int_equal(tf_say(cmd[1], "go"), 0);
	const char *bargs[] = { pa, pb, sx, NULL };
	pids[1] = tf_spawn("dial_b", bargs, NULL, 0);
	assert_true(pids[1] > 0);

	char line[64];
	int ys = 1, xs = 1;
	long long yms = -1, xms = -1;
	int r = tf_hear(rep[0], line, sizeof(line), t0 + x_timeout * 2);
	if (r < 0 || sscanf(line, "y %d %lld", &ys, &yms) != 2)
		fail_msg("A did not report Y");
	printf("Y: %s after %lld ms (X's connect timeout: %lld ms)\n",
	    tw_err_name(ys), yms, (long long)x_timeout);
	r = tf_hear(rep[0], line, sizeof(line), t0 + x_timeout * 2);
	if (r < 0 || sscanf(line, "x %d %lld", &xs, &xms) != 2)
		fail_msg("A did not report X");
	printf("X: %s after %lld ms\n", tw_err_name(xs), xms);
	static const char *const names[] = { "A", "B" };
	char why[256];
	bool ok = tf_wait_all(pids, names, 2, tf_now_ms() + tf_scale_ms(20000),
	    why, sizeof(why));
	close(cmd[1]);
	close(rep[0]);
	TW_PASS(ys);
	assert_true(yms <= tf_scale_ms(2000));
	TW_FAIL(xs, TW_ETIMEDOUT);
	if (!ok)
		fail_msg("%s", why);
}
