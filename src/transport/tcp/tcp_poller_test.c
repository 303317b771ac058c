// Tests of the epoll thread that the tcp:// transport runs on: readiness
// reaches the callback once per arming, tasks run in order on the poller
// thread, and removal — from another thread or from the registration's own
// callback, also while events are in flight — never lets a callback run
// afterwards.  Parking: a parked registration is called back once, readable
// or not, unless its owner claims it back first, and arming or finishing it
// ends the park.  Waits are on condition variables, never on sleeps.

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/sync.h"
#include "platform/posix/poller.h"
#include "testutil.h"

typedef struct probe {
	pthread_mutex_t mtx;
	pthread_cond_t cv;
	int calls; // protected by mtx
	unsigned events; // protected by mtx
	bool on_thread; // protected by mtx
	tw__poller *p;
	tw__pfd *pfd;
	int fd;
	bool fini_in_cb;
	bool rearm;
	int arm_after_fini; // protected by mtx
	int after_fini; // calls seen after fini returned, atomic
	int finished; // atomic
} probe;

static void probe_init(probe *pr, tw__poller *p, int fd)
{
	memset(pr, 0, sizeof(*pr));
	pthread_mutex_init(&pr->mtx, NULL);
	tw__cond_init(&pr->cv);
	pr->p = p;
	pr->fd = fd;
}

static void probe_destroy(probe *pr)
{
	pthread_cond_destroy(&pr->cv);
	pthread_mutex_destroy(&pr->mtx);
}

static void on_ready(tw__pfd *pfd, unsigned events, void *arg)
{
	probe *pr = arg;
	if (__atomic_load_n(&pr->finished, __ATOMIC_ACQUIRE))
		__atomic_add_fetch(&pr->after_fini, 1, __ATOMIC_RELAXED);
	char buf[64];
	if (events & TW__POLL_IN)
		while (read(pr->fd, buf, sizeof(buf)) > 0)
			;
	bool on_thread = tw__poller_on_thread(pr->p);
	// Finish or re-arm before telling the test thread, which may close
	// the descriptor as soon as it hears of the call.
	int arm = TW_OK;
	if (pr->fini_in_cb) {
		tw__pfd_fini(pfd);
		// A finished registration cannot be armed again.
		arm = tw__pfd_arm(pfd, TW__POLL_IN);
	} else if (pr->rearm) {
		tw__pfd_arm(pfd, TW__POLL_IN);
	}
	pthread_mutex_lock(&pr->mtx);
	pr->calls++;
	pr->events |= events;
	pr->on_thread = on_thread;
	pr->arm_after_fini = arm;
	pthread_cond_broadcast(&pr->cv);
	pthread_mutex_unlock(&pr->mtx);
}

// Waits until *count (protected by mtx, signalled on cv) reaches n, or
// `ms` passed; returns it.
static int wait_count(pthread_mutex_t *mtx, pthread_cond_t *cv,
    const int *count, int n, int64_t ms)
{
	int64_t deadline = tw__now_ns() + ms * 1000000;
	pthread_mutex_lock(mtx);
	while (
	    *count < n && tw__cond_wait_until(cv, mtx, deadline) != ETIMEDOUT)
		;
	int got = *count;
	pthread_mutex_unlock(mtx);
	return got;
}

static int wait_calls(probe *pr, int n)
{
	return wait_count(
	    &pr->mtx, &pr->cv, &pr->calls, n, tw_test_scale_ms(10000));
}

static void test_readiness(void **state)
{
	tw__poller *p;
	int sv[2];
	TW_PASS(tw__poller_new(&p));
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	probe pr;
	probe_init(&pr, p, sv[0]);
	TW_PASS(tw__pfd_init(p, sv[0], on_ready, &pr, &pr.pfd));
	assert_true(fcntl(sv[0], F_GETFL) & O_NONBLOCK);
	assert_true(fcntl(sv[0], F_GETFD) & FD_CLOEXEC);
	assert_false(tw__poller_on_thread(p));

	// Disarmed until armed: data waiting does not call back; once armed
	// it does, exactly once (one-shot) until armed again.
	assert_int_equal(write(sv[1], "x", 1), 1);
	TW_PASS(tw__pfd_arm(pr.pfd, TW__POLL_IN));
	assert_int_equal(wait_calls(&pr, 1), 1);
	assert_true(pr.events & TW__POLL_IN);
	assert_true(pr.on_thread);
	assert_int_equal(write(sv[1], "y", 1), 1);
	TW_PASS(tw__pfd_arm(pr.pfd, TW__POLL_IN));
	assert_int_equal(wait_calls(&pr, 2), 2);

	// Writable, and a hang-up reported to an armed reader.
	TW_PASS(tw__pfd_arm(pr.pfd, TW__POLL_OUT));
	assert_int_equal(wait_calls(&pr, 3), 3);
	assert_true(pr.events & TW__POLL_OUT);
	close(sv[1]);
	TW_PASS(tw__pfd_arm(pr.pfd, TW__POLL_IN));
	assert_int_equal(wait_calls(&pr, 4), 4);

	tw__pfd_fini(pr.pfd);
	close(sv[0]);
	tw__poller_free(p);
	probe_destroy(&pr);
}

static void flag_run(void *arg)
{
	probe *pr = arg;
	pthread_mutex_lock(&pr->mtx);
	pr->arm_after_fini = 1; // reused as "the task ran"
	pthread_cond_broadcast(&pr->cv);
	pthread_mutex_unlock(&pr->mtx);
}

// A socket whose peer hung up before it was registered: epoll reports the
// hang-up even to a registration that asked for nothing, and the owner
// must still not hear of it before it arms (it may not even know its
// registration yet).
static void test_hangup_before_arm(void **state)
{
	tw__poller *p;
	int sv[2];
	TW_PASS(tw__poller_new(&p));
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	close(sv[1]);
	probe pr;
	probe_init(&pr, p, sv[0]);
	TW_PASS(tw__pfd_init(p, sv[0], on_ready, &pr, &pr.pfd));
	// A task posted now runs after the thread's pass over the events
	// that were ready when it woke, the hang-up among them.
	tw__poll_task t = { .fn = flag_run, .arg = &pr };
	tw__poller_post(p, &t);
	int64_t deadline = tw__now_ns() + tw_test_scale_ms(10000) * 1000000;
	pthread_mutex_lock(&pr.mtx);
	while (pr.arm_after_fini == 0
	    && tw__cond_wait_until(&pr.cv, &pr.mtx, deadline) != ETIMEDOUT)
		;
	assert_int_equal(pr.arm_after_fini, 1);
	assert_int_equal(pr.calls, 0);
	pthread_mutex_unlock(&pr.mtx);
	// Armed, it is reported.
	TW_PASS(tw__pfd_arm(pr.pfd, TW__POLL_IN));
	assert_int_equal(wait_calls(&pr, 1), 1);
	assert_true(pr.events & (TW__POLL_IN | TW__POLL_ERR));
	tw__pfd_fini(pr.pfd);
	close(sv[0]);
	tw__poller_free(p);
	probe_destroy(&pr);
}

static void test_fini_in_callback(void **state)
{
	tw__poller *p;
	int sv[2];
	TW_PASS(tw__poller_new(&p));
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	probe pr;
	probe_init(&pr, p, sv[0]);
	pr.fini_in_cb = true;
	TW_PASS(tw__pfd_init(p, sv[0], on_ready, &pr, &pr.pfd));
	assert_int_equal(write(sv[1], "x", 1), 1);
	TW_PASS(tw__pfd_arm(pr.pfd, TW__POLL_IN));
	assert_int_equal(wait_calls(&pr, 1), 1);
	assert_int_equal(pr.arm_after_fini, TW_ECLOSED);
	close(sv[0]);
	close(sv[1]);
	// Freeing the poller joins its thread, which freed the registration.
	tw__poller_free(p);
	assert_int_equal(pr.calls, 1);
	probe_destroy(&pr);
}

typedef struct order {
	pthread_mutex_t mtx;
	pthread_cond_t cv;
	int seen[4]; // protected by mtx
	int n; // protected by mtx
	bool gate_running; // protected by mtx
	bool release; // protected by mtx
	tw__poller *p;
	bool on_thread;
} order;

typedef struct order_task {
	tw__poll_task t;
	order *o;
	int id;
} order_task;

static void order_run(void *arg)
{
	order_task *ot = arg;
	pthread_mutex_lock(&ot->o->mtx);
	if (ot->o->n < 4)
		ot->o->seen[ot->o->n] = ot->id;
	ot->o->n++;
	ot->o->on_thread = tw__poller_on_thread(ot->o->p);
	pthread_cond_broadcast(&ot->o->cv);
	pthread_mutex_unlock(&ot->o->mtx);
}

// Holds the poller thread until the test releases it.
static void gate_run(void *arg)
{
	order *o = arg;
	pthread_mutex_lock(&o->mtx);
	o->gate_running = true;
	pthread_cond_broadcast(&o->cv);
	while (!o->release)
		pthread_cond_wait(&o->cv, &o->mtx);
	pthread_mutex_unlock(&o->mtx);
}

static void order_init(order *o, tw__poller *p)
{
	memset(o, 0, sizeof(*o));
	pthread_mutex_init(&o->mtx, NULL);
	tw__cond_init(&o->cv);
	o->p = p;
}

// Posts `gate` and returns once the poller thread is held in it, with
// o->mtx held; setting o->release (and signalling) lets it go.
static void gate_close(order *o, tw__poll_task *gate)
{
	*gate = (tw__poll_task) { .fn = gate_run, .arg = o };
	tw__poller_post(o->p, gate);
	pthread_mutex_lock(&o->mtx);
	while (!o->gate_running)
		pthread_cond_wait(&o->cv, &o->mtx);
}

static void test_tasks(void **state)
{
	tw__poller *p;
	TW_PASS(tw__poller_new(&p));
	order o;
	order_init(&o, p);
	// While the thread is held in the gate task, three tasks and a
	// repeat of the first (which must not run twice: it is queued
	// already) are posted; they run in order once the gate opens.
	tw__poll_task gate;
	gate_close(&o, &gate);
	order_task t[3];
	for (int i = 0; i < 3; i++) {
		t[i] = (order_task) { .t = { .fn = order_run, .arg = &t[i] },
			.o = &o,
			.id = i };
		tw__poller_post(p, &t[i].t);
	}
	tw__poller_post(p, &t[0].t);
	o.release = true;
	pthread_cond_broadcast(&o.cv);
	int64_t deadline = tw__now_ns() + tw_test_scale_ms(10000) * 1000000;
	while (o.n < 3
	    && tw__cond_wait_until(&o.cv, &o.mtx, deadline) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&o.mtx);
	// The thread has finished its pass once freeing it returns.
	tw__poller_free(p);
	assert_int_equal(o.n, 3);
	for (int i = 0; i < 3; i++)
		assert_int_equal(o.seen[i], i);
	assert_true(o.on_thread);
	pthread_cond_destroy(&o.cv);
	pthread_mutex_destroy(&o.mtx);
}

// Waits until the poller thread has been through one more pass.
static void one_pass(tw__poller *p)
{
	order o;
	memset(&o, 0, sizeof(o));
	pthread_mutex_init(&o.mtx, NULL);
	tw__cond_init(&o.cv);
	o.p = p;
	order_task t = { .t = { .fn = order_run, .arg = &t }, .o = &o };
	tw__poller_post(p, &t.t);
	pthread_mutex_lock(&o.mtx);
	while (o.n < 1)
		pthread_cond_wait(&o.cv, &o.mtx);
	pthread_mutex_unlock(&o.mtx);
	pthread_cond_destroy(&o.cv);
	pthread_mutex_destroy(&o.mtx);
}

// Many registrations that keep firing (re-armed from their callbacks while
// a writer keeps them readable) are finished from this thread: no callback
// may run after fini returns.  Under ThreadSanitizer this also checks that
// the hand-over of the memory is race-free.
static void test_fini_under_fire(void **state)
{
	enum { N = 16, ROUNDS = 20 };
	tw__poller *p;
	TW_PASS(tw__poller_new(&p));
	for (int r = 0; r < ROUNDS; r++) {
		int sv[N][2];
		probe pr[N];
		for (int i = 0; i < N; i++) {
			assert_int_equal(
			    socketpair(AF_UNIX, SOCK_STREAM, 0, sv[i]), 0);
			probe_init(&pr[i], p, sv[i][0]);
			pr[i].rearm = true;
			TW_PASS(tw__pfd_init(
			    p, sv[i][0], on_ready, &pr[i], &pr[i].pfd));
			TW_PASS(tw__pfd_arm(pr[i].pfd, TW__POLL_IN));
			assert_int_equal(write(sv[i][1], "x", 1), 1);
		}
		for (int i = 0; i < N; i++) {
			assert_true(wait_calls(&pr[i], 1) >= 1);
			assert_int_equal(write(sv[i][1], "y", 1), 1);
			tw__pfd_fini(pr[i].pfd);
			__atomic_store_n(&pr[i].finished, 1, __ATOMIC_RELEASE);
			assert_int_equal(write(sv[i][1], "z", 1), 1);
		}
		// One task round trip: every batch that could still have held
		// an event of the finished registrations is over.
		one_pass(p);
		for (int i = 0; i < N; i++) {
			assert_int_equal(__atomic_load_n(&pr[i].after_fini,
			                     __ATOMIC_RELAXED),
			    0);
			close(sv[i][0]);
			close(sv[i][1]);
			probe_destroy(&pr[i]);
		}
	}
	tw__poller_free(p);
}

// A poller with one registration of one end of a socket pair.
typedef struct solo {
	tw__poller *p;
	int sv[2];
	probe pr;
} solo;

static void solo_up(solo *s, int64_t park_ns)
{
	TW_PASS(tw__poller_new(&s->p));
	if (park_ns > 0)
		tw__poller_set_park_ns(s->p, park_ns);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, s->sv), 0);
	probe_init(&s->pr, s->p, s->sv[0]);
	TW_PASS(tw__pfd_init(s->p, s->sv[0], on_ready, &s->pr, &s->pr.pfd));
}

static void solo_down(solo *s)
{
	tw__pfd_fini(s->pr.pfd);
	close(s->sv[0]);
	close(s->sv[1]);
	tw__poller_free(s->p);
	probe_destroy(&s->pr);
}

// A parked registration that nobody claims is called back on the poller
// thread with TW__POLL_IN | TW__POLL_PARK once its period has passed, with
// bytes waiting or without, exactly once per park.
static void test_park_fires(void **state)
{
	(void)state;
	solo s;
	solo_up(&s, 1000000);
	tw__poller *p = s.p;
	probe *pr = &s.pr;
	int *sv = s.sv;
	assert_false(tw__pfd_unpark(pr->pfd)); // never parked

	assert_int_equal(write(sv[1], "x", 1), 1);
	assert_true(tw__pfd_park(pr->pfd));
	assert_int_equal(wait_calls(pr, 1), 1);
	assert_int_equal(pr->events, TW__POLL_IN | TW__POLL_PARK);
	assert_true(pr->on_thread);
	assert_false(tw__pfd_unpark(pr->pfd)); // the thread had it
	assert_true(tw__pfd_park(pr->pfd)); // nothing to read this time
	assert_int_equal(wait_calls(pr, 2), 2);

	// Parked, claimed and parked again, many times over: still one
	// callback for the last park.
	int before = 2;
	for (int i = 0; i < 100; i++) {
		assert_true(tw__pfd_park(pr->pfd));
		if (!tw__pfd_unpark(pr->pfd)) {
			before++;
			assert_int_equal(wait_calls(pr, before), before);
		}
	}
	assert_true(tw__pfd_park(pr->pfd));
	assert_int_equal(wait_calls(pr, before + 1), before + 1);
	one_pass(p);
	assert_int_equal(pr->calls, before + 1);
	solo_down(&s);
}

// Claimed back within its period, a parked registration is the claimer's:
// the thread never calls it back.  Arming ends a park: the claim fails and
// the callback comes from the event.
static void test_park_claim(void **state)
{
	(void)state;
	tw__poller *p;
	int sv[2];
	TW_PASS(tw__poller_new(&p));
	tw__poller_set_park_ns(p, INT64_C(3600) * 1000000000); // never due
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	probe pr;
	probe_init(&pr, p, sv[0]);
	TW_PASS(tw__pfd_init(p, sv[0], on_ready, &pr, &pr.pfd));

	assert_int_equal(write(sv[1], "x", 1), 1);
	assert_true(tw__pfd_park(pr.pfd));
	one_pass(p); // the thread saw it parked
	assert_true(tw__pfd_unpark(pr.pfd));
	assert_false(tw__pfd_unpark(pr.pfd)); // once
	one_pass(p);
	assert_int_equal(wait_calls(&pr, 0), 0);

	assert_true(tw__pfd_park(pr.pfd));
	TW_PASS(tw__pfd_arm(pr.pfd, TW__POLL_IN));
	assert_false(tw__pfd_unpark(pr.pfd));
	assert_int_equal(wait_calls(&pr, 1), 1);
	one_pass(p);
	assert_int_equal(wait_calls(&pr, 0), 1);

	// Finished while parked: its timer goes with it, it is never called
	// back, and the poller goes on with the others.
	assert_true(tw__pfd_park(pr.pfd));
	tw__pfd_fini(pr.pfd);
	__atomic_store_n(&pr.finished, 1, __ATOMIC_RELEASE);
	tw__poller_set_park_ns(p, 1000);
	int sw[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sw), 0);
	probe other;
	probe_init(&other, p, sw[0]);
	TW_PASS(tw__pfd_init(p, sw[0], on_ready, &other, &other.pfd));
	assert_true(tw__pfd_park(other.pfd));
	assert_int_equal(wait_calls(&other, 1), 1);
	tw__pfd_fini(other.pfd);
	assert_int_equal(pr.calls, 1);
	assert_int_equal(__atomic_load_n(&pr.after_fini, __ATOMIC_RELAXED), 0);
	close(sv[0]);
	close(sv[1]);
	close(sw[0]);
	close(sw[1]);
	tw__poller_free(p);
	probe_destroy(&pr);
	probe_destroy(&other);
}

enum { PARK_ROUNDS = 8000 };

typedef struct parker {
	probe pr;
	int parks, claims;
} parker;

static void *park_loop(void *arg)
{
	parker *k = arg;
	for (int i = 0; i < PARK_ROUNDS; i++) {
		assert_true(tw__pfd_park(k->pr.pfd));
		k->parks++;
		// One park in four is left to the thread; the others are
		// claimed back after a while, racing with it.
		if (i % 4 != 0) {
			for (volatile int j = 0; j < (i % 3) * 500; j++)
				;
			if (tw__pfd_unpark(k->pr.pfd)) {
				k->claims++;
				continue;
			}
		}
		int want = k->parks - k->claims;
		assert_int_equal(wait_calls(&k->pr, want), want);
	}
	return NULL;
}

// Parks and claims race with the thread's callbacks (a period of 1 us):
// every park ends exactly once, by a claim or by a callback, on four
// registrations at once, and one that nobody claims is always called back.  Under ThreadSanitizer this checks the hand-over.
static void test_park_race(void **state)
{
	(void)state;
	enum { N = 4 };
	tw__poller *p;
	TW_PASS(tw__poller_new(&p));
	tw__poller_set_park_ns(p, 1000);
	int sv[N][2];
	parker k[N];
	pthread_t th[N];
	for (int i = 0; i < N; i++) {
		assert_int_equal(
		    socketpair(AF_UNIX, SOCK_STREAM, 0, sv[i]), 0);
		memset(&k[i], 0, sizeof(k[i]));
		probe_init(&k[i].pr, p, sv[i][0]);
		TW_PASS(tw__pfd_init(
		    p, sv[i][0], on_ready, &k[i].pr, &k[i].pr.pfd));
		assert_int_equal(
		    pthread_create(&th[i], NULL, park_loop, &k[i]), 0);
	}
	int callbacks = 0;
	for (int i = 0; i < N; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		one_pass(p);
		tw__pfd_fini(k[i].pr.pfd);
		assert_int_equal(k[i].parks, PARK_ROUNDS);
		assert_int_equal(k[i].pr.calls + k[i].claims, k[i].parks);
		callbacks += k[i].pr.calls;
		close(sv[i][0]);
		close(sv[i][1]);
		probe_destroy(&k[i].pr);
	}
	// At least the parks left alone.
	assert_true(callbacks >= N * PARK_ROUNDS / 4);
	print_message("park race: %d of %d parks called back\n", callbacks,
	    N * PARK_ROUNDS);
	tw__poller_free(p);
}

// A reader that keeps coming back costs the poller thread no wake-up: each
// park that finds the timer due within half a period sets it ahead again,
// so it never fires while parks keep coming.  Only a gap between two parks
// of half the first period or more (the machine took the CPU away) may let
// it fire, and each such gap wakes the thread at most once.  Once the
// parks stop, the thread calls the registration back.
static void test_park_keeps_ahead(void **state)
{
	(void)state;
	enum { FIRST_NS = 2000000, RUN_NS = 100000000 };
	solo s;
	solo_up(&s, FIRST_NS);
	tw__poller *p = s.p;
	probe *pr = &s.pr;
	one_pass(p);
	uint64_t before = tw__poller_wakeups(p);
	int64_t start = tw__now_ns(), last = start;
	int parks = 0, gaps = 0, lost = 0;
	for (int64_t now = start; now - start < RUN_NS; now = tw__now_ns()) {
		if (now - last >= FIRST_NS / 2)
			gaps++;
		assert_true(tw__pfd_park(pr->pfd));
		parks++;
		bool kept = tw__pfd_unpark(pr->pfd);
		// A stall between the park and the unpark counts too: on a
		// loaded machine it was the one that let the timer fire.
		last = tw__now_ns();
		if (last - now >= FIRST_NS / 2)
			gaps++;
		if (!kept) {
			lost++; // the thread had it: wait for its callback
			assert_int_equal(wait_calls(pr, lost), lost);
			last = tw__now_ns();
		}
	}
	uint64_t woke = tw__poller_wakeups(p) - before;
	print_message("park ahead: %d parks in %d ms, %d gaps, %d lost, "
	              "%llu wake-ups\n",
	    parks, RUN_NS / 1000000, gaps, lost, (unsigned long long)woke);
	assert_true(parks > 1000);
	assert_true(woke <= (uint64_t)gaps);
	assert_int_equal(pr->calls, lost);
	assert_true(tw__pfd_park(pr->pfd));
	assert_int_equal(wait_calls(pr, lost + 1), lost + 1);
	solo_down(&s);
}

// Without a park timer (no descriptor left for one), a park refuses and
// changes nothing: the caller re-arms instead.  Parking works again once a
// descriptor is free.
static void test_park_no_timer(void **state)
{
	(void)state;
	solo s;
	solo_up(&s, 0);
	struct rlimit old;
	tw_test_fd_squeeze(1, &old);
	int spare = dup(s.sv[1]);
	assert_true(spare >= 0);
	assert_int_equal(dup(s.sv[1]), -1);
	assert_int_equal(errno, EMFILE);
	assert_false(tw__pfd_park(s.pr.pfd));
	assert_false(tw__pfd_unpark(s.pr.pfd)); // not parked
	close(spare);
	assert_true(tw__pfd_park(s.pr.pfd));
	assert_true(tw__pfd_unpark(s.pr.pfd));
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	one_pass(s.p);
	assert_int_equal(s.pr.calls, 0);
	solo_down(&s);
}

// A tw__ptimer: its callback counts calls and the largest tick count.
typedef struct tick_probe {
	pthread_mutex_t mtx;
	pthread_cond_t cv;
	int calls; // protected by mtx
	uint64_t ticks, most; // summed and largest, by mtx
	bool on_thread; // by mtx
	tw__poller *p;
} tick_probe;

static void on_tick(tw__pfd *pfd, unsigned events, void *arg)
{
	tick_probe *tp = arg;
	uint64_t n = tw__ptimer_ticks(pfd);
	pthread_mutex_lock(&tp->mtx);
	tp->calls++;
	tp->ticks += n;
	if (n > tp->most)
		tp->most = n;
	tp->on_thread = tw__poller_on_thread(tp->p) && events == TW__POLL_IN;
	pthread_cond_broadcast(&tp->cv);
	pthread_mutex_unlock(&tp->mtx);
}

static void tick_probe_init(tick_probe *tp, tw__poller *p)
{
	memset(tp, 0, sizeof(*tp));
	pthread_mutex_init(&tp->mtx, NULL);
	tw__cond_init(&tp->cv);
	tp->p = p;
}

static void tick_probe_fini(tick_probe *tp)
{
	pthread_cond_destroy(&tp->cv);
	pthread_mutex_destroy(&tp->mtx);
}

// Waits until the timer was called `n` times, or `ms` passed; returns the
// count.
static int wait_ticks(tick_probe *tp, int n, int64_t ms)
{
	return wait_count(&tp->mtx, &tp->cv, &tp->calls, n, ms);
}

// A timer calls back on the poller thread: once when set once, every
// period when periodic, with the expiries that a stalled thread missed
// counted, never once stopped or finished; without a descriptor, none is
// made.
static void test_timer(void **state)
{
	(void)state;
	tw__poller *p;
	TW_PASS(tw__poller_new(&p));
	tick_probe tp;
	tick_probe_init(&tp, p);
	tw__pfd *t;
	TW_PASS(tw__ptimer_init(p, on_tick, &tp, &t));
	int64_t wait_ms = tw_test_scale_ms(10000);
	one_pass(p);
	assert_int_equal(tp.calls, 0); // not set yet

	// Once, 1 ms from now.
	TW_PASS(tw__ptimer_set(t, tw__now_ns() + 1000000, 0));
	assert_int_equal(wait_ticks(&tp, 1, wait_ms), 1);
	assert_true(tp.on_thread);
	assert_int_equal(tp.ticks, 1);
	one_pass(p);
	assert_int_equal(wait_ticks(&tp, 2, 20), 1); // and not again

	// Every millisecond; held up for 10 periods, the poller thread then
	// reports the expiries it missed in one call.
	TW_PASS(tw__ptimer_set(t, tw__now_ns(), 1000000));
	assert_true(wait_ticks(&tp, 4, wait_ms) >= 4);
	order o;
	order_init(&o, p);
	tw__poll_task gate;
	gate_close(&o, &gate);
	int64_t held_until = tw__now_ns() + 10 * 1000000;
	while (tw__cond_wait_until(&o.cv, &o.mtx, held_until) != ETIMEDOUT)
		;
	o.release = true;
	pthread_cond_broadcast(&o.cv);
	pthread_mutex_unlock(&o.mtx);
	int before = wait_ticks(&tp, 0, 0);
	assert_true(wait_ticks(&tp, before + 1, wait_ms) > before);
	pthread_mutex_lock(&tp.mtx);
	assert_true(tp.most >= 2);
	assert_true(tp.ticks >= (uint64_t)tp.calls);
	pthread_mutex_unlock(&tp.mtx);

	// Stopped: a call already on its way may still come, none after.
	TW_PASS(tw__ptimer_set(t, 0, 0));
	one_pass(p);
	int stopped = wait_ticks(&tp, 0, 0);
	assert_int_equal(wait_ticks(&tp, stopped + 1, 20), stopped);

	// Finished while periodic: no call once fini returned.
	TW_PASS(tw__ptimer_set(t, tw__now_ns(), 1000000));
	int running = wait_ticks(&tp, stopped + 1, wait_ms);
	assert_true(running > stopped);
	tw__pfd_fini(t);
	int finished = wait_ticks(&tp, 0, 0);
	assert_int_equal(wait_ticks(&tp, finished + 1, 20), finished);

	// Out of descriptors.
	struct rlimit old;
	tw_test_fd_squeeze(0, &old);
	assert_int_equal(tw__ptimer_init(p, on_tick, &tp, &t), TW_ESYS);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);

	tw__poller_free(p);
	pthread_cond_destroy(&o.cv);
	pthread_mutex_destroy(&o.mtx);
	tick_probe_fini(&tp);
}

// Timers finished while they fire: the timer's descriptor stays open
// until the thread is done with the expiry it may be reading, so that its
// number is never reused under that read (ThreadSanitizer saw fini close
// it during timer_fired's read).  A fast periodic timer keeps the thread
// reading; each round finishes it at a different moment.
static void test_timer_fini_firing(void **state)
{
	(void)state;
	tw__poller *p;
	TW_PASS(tw__poller_new(&p));
	tick_probe tp;
	tick_probe_init(&tp, p);
	int64_t wait_ms = tw_test_scale_ms(10000);
	for (int round = 0; round < 300; round++) {
		tw__pfd *t;
		TW_PASS(tw__ptimer_init(p, on_tick, &tp, &t));
		int calls = wait_ticks(&tp, 0, 0);
		TW_PASS(tw__ptimer_set(t, tw__now_ns(), 20000));
		assert_true(wait_ticks(&tp, calls + 1, wait_ms) > calls);
		tw__pfd_fini(t);
	}
	tw__poller_free(p);
	tick_probe_fini(&tp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_readiness),
		cmocka_unit_test(test_hangup_before_arm),
		cmocka_unit_test(test_fini_in_callback),
		cmocka_unit_test(test_tasks),
		cmocka_unit_test(test_fini_under_fire),
		cmocka_unit_test(test_park_fires),
		cmocka_unit_test(test_park_claim),
		cmocka_unit_test(test_park_race),
		cmocka_unit_test(test_park_keeps_ahead),
		cmocka_unit_test(test_park_no_timer),
		cmocka_unit_test(test_timer),
		cmocka_unit_test(test_timer_fini_firing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
