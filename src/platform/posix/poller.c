// The epoll thread: registrations, arming, deferred tasks and safe removal.
// See poller.h for the design.  All the library's epoll code is here.

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <tagwire/status.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/sync.h"
#include "platform/posix/poller.h"

#define POLL_BATCH 64
// The longest park period (see tw__pfd_park): what bytes that nobody
// waits for may wait at most, once readers have kept coming back.
#define PARK_MAX_NS 8000000
// The epoll data of a registration's timer (its park timer, or the timer
// that a tw__ptimer is): its address, tagged.
#define TIMER_TAG ((uintptr_t)1)

// The poller whose thread this is, so that fini can tell a call from a
// callback without reading the pthread_t that pthread_create stores.
static _Thread_local const tw__poller *poll_current;

struct tw__pfd {
	tw__poller *p;
	int fd;
	tw__pfd_func_t cb;
	void *arg;
	bool closing; // protected by p->mtx
	// Armed by its owner since its last event (p->mtx).  epoll reports
	// errors and hang-ups even for a registration that asked for no
	// events, so an event that arrives unarmed (a socket whose peer hung
	// up before the owner armed it) is held back: EPOLLONESHOT has
	// disabled the registration, and the owner's arm brings the event
	// back.
	bool armed;
	bool self_fini; // finished from its own callback; by p->mtx
	bool reaped; // protected by p->mtx
	tw__pfd *reap_next; // protected by p->mtx
	// Parking (tw__pfd_park).  `parked`: the owner disarmed it, and the
	// thread is to hand it a readable event unless the owner claims it
	// back first.  `tfd`: the park timer, a timerfd made at the first
	// park (-1 before; made, set and closed under p->mtx).  `park_at`:
	// when it fires (0: it fired, or was never set); `park_period`: the
	// period its next setting uses (0: the poller's first one).  Both
	// are hints: a stale value only makes a parker set the timer again.
	_Atomic int parked;
	int tfd;
	bool is_timer; // a tw__ptimer: fd is -1, tfd its timer, no parking
	uint64_t ticks; // a tw__ptimer's expiries, for its callback
	_Atomic int64_t park_at;
	_Atomic int64_t park_period;
};

struct tw__poller {
	int epfd;
	int evfd;
	pthread_t thread;
	pthread_mutex_t mtx;
	pthread_cond_t cv; // a reap pass finished
	tw__poll_task *tasks; // protected by mtx, LIFO then reversed
	tw__pfd *reap; // protected by mtx
	_Atomic int64_t park_ns; // the first park period
	_Atomic uint64_t wakeups; // returns from epoll_wait, for tests
	bool stop; // protected by mtx
};

static void poller_wake(tw__poller *p)
{
	uint64_t one = 1;
	// EAGAIN means the counter is already non-zero: the thread will wake.
	while (write(p->evfd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

static void poller_drain_wake(tw__poller *p)
{
	uint64_t v;
	while (read(p->evfd, &v, sizeof(v)) < 0 && errno == EINTR)
		;
}

// Runs the queued tasks in the order they were posted.
static void run_tasks(tw__poller *p)
{
	tw__poll_task *list = p->tasks, *rev = NULL;
	p->tasks = NULL;
	while (list != NULL) {
		tw__poll_task *n = list->next;
		list->next = rev;
		rev = list;
		list = n;
	}
	while (rev != NULL) {
		tw__poll_task *t = rev;
		rev = t->next;
		// Unqueued before it runs, so that the task may post itself
		// again; the caller keeps the memory valid meanwhile.
		t->queued = false;
		void (*fn)(void *) = t->fn;
		void *arg = t->arg;
		pthread_mutex_unlock(&p->mtx);
		fn(arg);
		pthread_mutex_lock(&p->mtx);
	}
}

// Frees or releases the registrations finished since the last pass; no
// event of the batch just handled can name them any more.
static void reap(tw__poller *p)
{
	tw__pfd *list = p->reap;
	p->reap = NULL;
	bool signal = false;
	while (list != NULL) {
		tw__pfd *d = list;
		list = d->reap_next;
		if (d->tfd >= 0) {
			close(d->tfd);
			d->tfd = -1;
		}
		if (d->self_fini) {
			free(d);
		} else {
			d->reaped = true; // its finisher frees it
			signal = true;
		}
	}
	if (signal)
		pthread_cond_broadcast(&p->cv);
}

void tw__pfd_park_fired(tw__pfd *d)
{
	atomic_store_explicit(&d->park_at, 0, memory_order_relaxed);
	atomic_store_explicit(&d->park_period, 0, memory_order_relaxed);
	int one = 1;
	if (atomic_compare_exchange_strong(&d->parked, &one, 0))
		d->cb(d, TW__POLL_IN | TW__POLL_PARK, d->arg);
}

// A tw__ptimer fired: its callback runs with the count of expiries since
// the last, unless a new setting reset the count meanwhile.
static void timer_fired(tw__pfd *d)
{
	uint64_t n = 0;
	while (read(d->tfd, &n, sizeof(n)) < 0 && errno == EINTR)
		;
	if (n == 0)
		return;
	d->ticks = n;
	d->cb(d, TW__POLL_IN, d->arg);
}

static void *poller_main(void *arg)
{
	pthread_setname_np(pthread_self(), "tw-io");
	tw__poller *p = arg;
	struct epoll_event ev[POLL_BATCH];
	poll_current = p;
	for (;;) {
		int n = epoll_wait(p->epfd, ev, POLL_BATCH, -1);
		atomic_fetch_add_explicit(
		    &p->wakeups, 1, memory_order_relaxed);
		if (n < 0 && errno != EINTR) {
			// Only a programming error makes epoll_wait fail; the
			// thread keeps going rather than strand its clients.
			TW_LOG_ONCE(TW_LOG_ERROR, "poll", "epoll_wait: %m");
		}
		for (int i = 0; i < n; i++) {
			uintptr_t v = (uintptr_t)ev[i].data.u64;
			tw__pfd *d = (tw__pfd *)(v & ~TIMER_TAG);
			if (d == NULL) {
				poller_drain_wake(p);
				continue;
			}
			pthread_mutex_lock(&p->mtx);
			bool timer = (v & TIMER_TAG) != 0;
			bool skip = d->closing || (!timer && !d->armed);
			if (!timer)
				d->armed = false;
			pthread_mutex_unlock(&p->mtx);
			if (skip)
				continue;
			if (timer && d->is_timer) {
				timer_fired(d);
				continue;
			}
			if (timer) {
				tw__pfd_park_fired(d);
				continue;
			}
			unsigned e = 0;
			if (ev[i].events & (EPOLLIN | EPOLLRDHUP))
				e |= TW__POLL_IN;
			if (ev[i].events & EPOLLOUT)
				e |= TW__POLL_OUT;
			if (ev[i].events & (EPOLLERR | EPOLLHUP))
				e |= TW__POLL_ERR;
			d->cb(d, e, d->arg);
		}
		pthread_mutex_lock(&p->mtx);
		run_tasks(p);
		reap(p);
		bool stop = p->stop;
		pthread_mutex_unlock(&p->mtx);
		if (stop)
			break;
	}
	return NULL;
}

int tw__poller_new(tw__poller **out_p)
{
	tw__poller *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return TW_ENOMEM;
	p->epfd = epoll_create1(EPOLL_CLOEXEC);
	p->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (p->epfd < 0 || p->evfd < 0) {
		TW_ERROR(
		    "poll", "cannot create an epoll or event descriptor: %m");
		goto err_close;
	}
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 0 };
	if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->evfd, &ev) != 0) {
		TW_ERROR("poll", "cannot watch the event descriptor: %m");
		goto err_close;
	}
	pthread_mutex_init(&p->mtx, NULL);
	tw__cond_init(&p->cv);
	atomic_init(&p->park_ns, TW__PARK_NS);
	int rc = pthread_create(&p->thread, NULL, poller_main, p);
	if (rc != 0) {
		errno = rc;
		TW_ERROR("poll", "cannot start the poller thread: %m");
		pthread_cond_destroy(&p->cv);
		pthread_mutex_destroy(&p->mtx);
		goto err_close;
	}
	*out_p = p;
	return TW_OK;

err_close:
	if (p->epfd >= 0)
		close(p->epfd);
	if (p->evfd >= 0)
		close(p->evfd);
	free(p);
	return TW_ESYS;
}

void tw__poller_free(tw__poller *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mtx);
	p->stop = true;
	pthread_mutex_unlock(&p->mtx);
	poller_wake(p);
	pthread_join(p->thread, NULL);
	close(p->epfd);
	close(p->evfd);
	pthread_cond_destroy(&p->cv);
	pthread_mutex_destroy(&p->mtx);
	free(p);
}

bool tw__poller_on_thread(const tw__poller *p)
{
	return poll_current == p;
}

int tw__pfd_init(
    tw__poller *p, int fd, tw__pfd_func_t cb, void *arg, tw__pfd **out_pfd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0
	    || fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
		TW_ERROR(
		    "poll", "cannot make descriptor %d non-blocking: %m", fd);
		return TW_ESYS;
	}
	tw__pfd *d = calloc(1, sizeof(*d));
	if (d == NULL)
		return TW_ENOMEM;
	d->p = p;
	d->fd = fd;
	d->tfd = -1;
	d->cb = cb;
	d->arg = arg;
	// Registered with no events: EPOLLONESHOT leaves it disarmed until
	// its owner asks.  Errors and hang-ups are reported once armed.
	struct epoll_event ev
	    = { .events = EPOLLONESHOT, .data.u64 = (uintptr_t)d };
	if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
		TW_ERROR("poll", "cannot watch descriptor %d: %m", fd);
		free(d);
		return TW_ESYS;
	}
	*out_pfd = d;
	return TW_OK;
}

int tw__pfd_arm(tw__pfd *d, unsigned events)
{
	tw__poller *p = d->p;
	struct epoll_event ev
	    = { .events = EPOLLONESHOT, .data.u64 = (uintptr_t)d };
	if (events & TW__POLL_IN)
		ev.events |= EPOLLIN | EPOLLRDHUP;
	if (events & TW__POLL_OUT)
		ev.events |= EPOLLOUT;
	// Under the lock, so that arming never races with the removal of
	// the descriptor from epoll in fini.
	pthread_mutex_lock(&p->mtx);
	int status = d->closing ? TW_ECLOSED : TW_OK;
	if (status == TW_OK) {
		d->armed = true;
		// Armed, it is no longer the thread's to arm nor its owner's to
		// claim back disarmed.
		atomic_store_explicit(&d->parked, 0, memory_order_relaxed);
		if (epoll_ctl(p->epfd, EPOLL_CTL_MOD, d->fd, &ev) != 0) {
			TW_ERROR(
			    "poll", "cannot arm descriptor %d: %m", d->fd);
			status = TW_ESYS;
		}
	}
	pthread_mutex_unlock(&p->mtx);
	return status;
}

int tw__pfd_swap_fd(tw__pfd *d, int fd)
{
	tw__poller *p = d->p;
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0
	    || fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
		TW_ERROR(
		    "poll", "cannot make descriptor %d non-blocking: %m", fd);
		return TW_ESYS;
	}
	struct epoll_event ev
	    = { .events = EPOLLONESHOT, .data.u64 = (uintptr_t)d };
	pthread_mutex_lock(&p->mtx);
	int status = d->closing ? TW_ECLOSED : TW_OK;
	if (status == TW_OK
	    && epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
		TW_ERROR("poll", "cannot watch descriptor %d: %m", fd);
		status = TW_ESYS;
	}
	if (status == TW_OK) {
		(void)epoll_ctl(p->epfd, EPOLL_CTL_DEL, d->fd, NULL);
		d->fd = fd;
		// An event of the old descriptor that epoll_wait returned
		// already is skipped: the registration is not armed.
		d->armed = false;
		atomic_store_explicit(&d->parked, 0, memory_order_relaxed);
	}
	pthread_mutex_unlock(&p->mtx);
	return status;
}

void tw__pfd_fini(tw__pfd *d)
{
	tw__poller *p = d->p;
	bool own = tw__poller_on_thread(p);
	pthread_mutex_lock(&p->mtx);
	d->closing = true;
	d->self_fini = own;
	// The descriptor may already be closed by a confused caller; the
	// registration goes away regardless, so the error is ignored.
	if (d->fd >= 0)
		(void)epoll_ctl(p->epfd, EPOLL_CTL_DEL, d->fd, NULL);
	// The timer is closed by the reap, on the thread: an expiry that
	// epoll_wait returned already may be being read there now (a
	// ptimer's, timer_fired), and its number must not be reused before.
	if (d->tfd >= 0)
		(void)epoll_ctl(p->epfd, EPOLL_CTL_DEL, d->tfd, NULL);
	d->reap_next = p->reap;
	p->reap = d;
	if (own) {
		pthread_mutex_unlock(&p->mtx);
		return;
	}
	pthread_mutex_unlock(&p->mtx);
	poller_wake(p);
	pthread_mutex_lock(&p->mtx);
	while (!d->reaped)
		pthread_cond_wait(&p->cv, &p->mtx);
	pthread_mutex_unlock(&p->mtx);
	free(d);
}

// A timerfd in the poller's epoll set for registration d, edge-triggered:
// each expiry is one event, and nothing needs to read the timer to quiet
// it.  -1 (errno set) when none can be had.
static int timer_new(tw__pfd *d)
{
	int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN | EPOLLET,
		.data.u64 = (uintptr_t)d | TIMER_TAG };
	if (tfd >= 0 && epoll_ctl(d->p->epfd, EPOLL_CTL_ADD, tfd, &ev) != 0) {
		int err = errno;
		close(tfd);
		errno = err;
		return -1;
	}
	return tfd;
}

// Sets timer tfd to fire at `at` (0: never), then every `period` ns
// (0: once).
static bool timer_set(int tfd, int64_t at, int64_t period)
{
	struct itimerspec its = { 0 };
	if (at != 0)
		tw__deadline_ts(at, &its.it_value);
	tw__deadline_ts(period, &its.it_interval);
	return timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) == 0;
}

// Sets the park timer to fire at `at`, making the timer at the first
// park.  Under p->mtx.
static bool park_timer_set(tw__pfd *d, int64_t at)
{
	if (d->closing)
		return false;
	if (d->tfd < 0 && (d->tfd = timer_new(d)) < 0) {
		TW_LOG_ONCE(TW_LOG_WARN, "poll",
		    "cannot make a park timer (%m); re-arming instead");
		return false;
	}
	return timer_set(d->tfd, at, 0);
}

bool tw__pfd_park(tw__pfd *d)
{
	return tw__pfd_park_at(d, tw__now_ns());
}

bool tw__pfd_park_at(tw__pfd *d, int64_t now)
{
	tw__poller *p = d->p;
	atomic_store(&d->parked, 1);
	// The timer fires no earlier than half a period from now: it still
	// ends this park in time (a stored time, once set, is that of the
	// timer, or one the timer has passed and will report).
	int64_t at = atomic_load_explicit(&d->park_at, memory_order_relaxed);
	int64_t period
	    = atomic_load_explicit(&d->park_period, memory_order_relaxed);
	if (at != 0 && at - now >= period / 2)
		return true;
	// Set again before it fired: the reader keeps coming back, and one
	// twice as long needs setting half as often.
	if (period == 0)
		period
		    = atomic_load_explicit(&p->park_ns, memory_order_relaxed);
	else if (at != 0 && period < PARK_MAX_NS)
		period = period * 2 < PARK_MAX_NS ? period * 2 : PARK_MAX_NS;
	pthread_mutex_lock(&p->mtx);
	bool set = park_timer_set(d, now + period);
	if (set) {
		atomic_store_explicit(
		    &d->park_period, period, memory_order_relaxed);
		atomic_store_explicit(
		    &d->park_at, now + period, memory_order_relaxed);
	}
	pthread_mutex_unlock(&p->mtx);
	if (set)
		return true;
	// Without a timer nothing would end the park: undone, unless the
	// thread or an arm ended it already (then it is no longer ours).
	return !tw__pfd_unpark(d);
}

int tw__ptimer_init(
    tw__poller *p, tw__pfd_func_t cb, void *arg, tw__pfd **out_pfd)
{
	tw__pfd *d = calloc(1, sizeof(*d));
	if (d == NULL)
		return TW_ENOMEM;
	d->p = p;
	d->fd = -1;
	d->is_timer = true;
	d->cb = cb;
	d->arg = arg;
	// Under the mutex, which the poller thread takes before it calls a
	// registration back: it sees tfd.
	pthread_mutex_lock(&p->mtx);
	d->tfd = timer_new(d);
	pthread_mutex_unlock(&p->mtx);
	if (d->tfd < 0) {
		int err = errno;
		free(d);
		errno = err;
		return TW_ESYS;
	}
	*out_pfd = d;
	return TW_OK;
}

uint64_t tw__ptimer_ticks(const tw__pfd *d)
{
	return d->ticks;
}

int tw__ptimer_set(tw__pfd *d, int64_t at, int64_t period_ns)
{
	if (timer_set(d->tfd, at, period_ns))
		return TW_OK;
	TW_LOG_ONCE(TW_LOG_WARN, "poll", "cannot set a timer: %m");
	return TW_ESYS;
}

bool tw__pfd_unpark(tw__pfd *d)
{
	int one = 1;
	return atomic_load_explicit(&d->parked, memory_order_relaxed) == 1
	    && atomic_compare_exchange_strong(&d->parked, &one, 0);
}

void tw__poller_set_park_ns(tw__poller *p, int64_t ns)
{
	atomic_store_explicit(&p->park_ns, ns, memory_order_relaxed);
}

uint64_t tw__poller_wakeups(const tw__poller *p)
{
	return atomic_load_explicit(&p->wakeups, memory_order_relaxed);
}

void tw__poller_post(tw__poller *p, tw__poll_task *t)
{
	pthread_mutex_lock(&p->mtx);
	bool wake = false;
	if (!t->queued) {
		t->queued = true;
		t->next = p->tasks;
		p->tasks = t;
		wake = true;
	}
	pthread_mutex_unlock(&p->mtx);
	if (wake)
		poller_wake(p);
}
