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
#include <unistd.h>

#include <tagwire/status.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/sync.h"
#include "platform/posix/poller.h"

#define POLL_BATCH 64
// Parked registrations called back at once, at most, per pass of the
// thread.
#define PARK_BATCH 16
// The longest a parked registration that its reader keeps claiming back
// waits between two looks of the thread (see park_pass).
#define PARK_MAX_NS 4000000

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
	// back first; `park_gen` changes at each park.  `listed`: on the
	// thread's list of parked registrations (changed under p->mtx, read
	// by parkers without it).
	_Atomic int parked;
	_Atomic uint32_t park_gen;
	_Atomic int listed;
	// The list, and the generation and time when the thread last found
	// it parked again, and how long it then waits: by p->mtx.
	tw__pfd *park_next;
	uint32_t park_seen;
	int64_t park_from, park_period;
};

struct tw__poller {
	int epfd;
	int evfd;
	pthread_t thread;
	pthread_mutex_t mtx;
	pthread_cond_t cv; // a reap pass finished
	tw__poll_task *tasks; // protected by mtx, LIFO then reversed
	tw__pfd *reap; // protected by mtx
	tw__pfd *parked; // protected by mtx
	int64_t park_ns;
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

// Waits for events until `until` on the monotonic clock (0: without end).
static int poll_wait(tw__poller *p, struct epoll_event *ev, int64_t until)
{
	if (until == 0)
		return epoll_wait(p->epfd, ev, POLL_BATCH, -1);
	int64_t left = until - tw__now_ns();
	if (left < 0)
		left = 0;
	// A park period is a fraction of a millisecond: epoll_pwait2 (Linux
	// 5.11) takes nanoseconds.  Where it is missing, or refused by a
	// seccomp filter, whole milliseconds, rounded up, do.
	static _Atomic int no_pwait2;
	if (!atomic_load_explicit(&no_pwait2, memory_order_relaxed)) {
		struct timespec ts = { (time_t)(left / 1000000000),
			(long)(left % 1000000000) };
		int n = epoll_pwait2(p->epfd, ev, POLL_BATCH, &ts, NULL);
		if (n >= 0 || (errno != ENOSYS && errno != EPERM))
			return n;
		atomic_store_explicit(&no_pwait2, 1, memory_order_relaxed);
	}
	return epoll_wait(
	    p->epfd, ev, POLL_BATCH, (int)((left + 999999) / 1000000));
}

// The earlier of two times, 0 meaning none yet.
static int64_t earlier(int64_t next, int64_t at)
{
	return next == 0 || at < next ? at : next;
}

// Hands a readable event to each parked registration that stayed parked,
// unclaimed, for its whole period, and drops from the list those claimed
// back and quiet as long.  One parked again within its period gets a
// period twice as long, up to PARK_MAX_NS: a reader that keeps coming
// back needs watching less and less often, and each look is a wake-up of
// this thread, which on a CPU it shares with the reader costs the reader
// several microseconds.  Returns when the next one is due (0: none is
// listed).
static int64_t park_pass(tw__poller *p)
{
	tw__pfd *due[PARK_BATCH];
	size_t ndue = 0;
	int64_t next = 0;
	pthread_mutex_lock(&p->mtx);
	int64_t now = p->parked != NULL ? tw__now_ns() : 0;
	tw__pfd **link = &p->parked;
	while (*link != NULL) {
		tw__pfd *d = *link;
		int64_t at = d->park_from + d->park_period;
		uint32_t gen
		    = atomic_load_explicit(&d->park_gen, memory_order_relaxed);
		if (now >= at && gen != d->park_seen) {
			d->park_seen = gen;
			d->park_from = now;
			d->park_period *= 2;
			if (d->park_period > PARK_MAX_NS)
				d->park_period = PARK_MAX_NS;
			at = now + d->park_period;
		}
		if (now < at || ndue == PARK_BATCH) {
			at = now < at ? at : now;
			next = earlier(next, at);
			link = &d->park_next;
			continue;
		}
		int one = 1;
		if (atomic_compare_exchange_strong(&d->parked, &one, 0))
			due[ndue++] = d;
		// Off the list, unless it was parked again meanwhile: the
		// parker stores `parked` before it reads `listed`, this thread
		// stores `listed` before it reads `parked` (both seq_cst), so
		// one of the two sees the other's store.
		atomic_store(&d->listed, 0);
		if (atomic_load(&d->parked)) {
			atomic_store(&d->listed, 1);
			d->park_from = now;
			at = now + d->park_period;
			next = earlier(next, at);
			link = &d->park_next;
			continue;
		}
		*link = d->park_next;
	}
	pthread_mutex_unlock(&p->mtx);
	// Finished meanwhile, a registration is still only reaped after this
	// pass, like one whose event fired (see tw__pfd_fini).
	for (size_t i = 0; i < ndue; i++)
		due[i]->cb(due[i], TW__POLL_IN, due[i]->arg);
	return next;
}

static void *poller_main(void *arg)
{
	pthread_setname_np(pthread_self(), "tw-io");
	tw__poller *p = arg;
	struct epoll_event ev[POLL_BATCH];
	poll_current = p;
	int64_t until = 0;
	for (;;) {
		int n = poll_wait(p, ev, until);
		if (n < 0 && errno != EINTR) {
			// Only a programming error makes epoll_wait fail; the
			// thread keeps going rather than strand its clients.
			TW_LOG_ONCE(TW_LOG_ERROR, "poll", "epoll_wait: %m");
		}
		for (int i = 0; i < n; i++) {
			tw__pfd *d = ev[i].data.ptr;
			if (d == NULL) {
				poller_drain_wake(p);
				continue;
			}
			pthread_mutex_lock(&p->mtx);
			bool skip = d->closing || !d->armed;
			d->armed = false;
			pthread_mutex_unlock(&p->mtx);
			if (skip)
				continue;
			unsigned e = 0;
			if (ev[i].events & (EPOLLIN | EPOLLRDHUP))
				e |= TW__POLL_IN;
			if (ev[i].events & EPOLLOUT)
				e |= TW__POLL_OUT;
			if (ev[i].events & (EPOLLERR | EPOLLHUP))
				e |= TW__POLL_ERR;
			d->cb(d, e, d->arg);
		}
		until = park_pass(p);
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
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
	if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->evfd, &ev) != 0) {
		TW_ERROR("poll", "cannot watch the event descriptor: %m");
		goto err_close;
	}
	pthread_mutex_init(&p->mtx, NULL);
	tw__cond_init(&p->cv);
	p->park_ns = TW__PARK_NS;
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
	d->cb = cb;
	d->arg = arg;
	// Registered with no events: EPOLLONESHOT leaves it disarmed until
	// its owner asks.  Errors and hang-ups are reported once armed.
	struct epoll_event ev = { .events = EPOLLONESHOT, .data.ptr = d };
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
	struct epoll_event ev = { .events = EPOLLONESHOT, .data.ptr = d };
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
	struct epoll_event ev = { .events = EPOLLONESHOT, .data.ptr = d };
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
	(void)epoll_ctl(p->epfd, EPOLL_CTL_DEL, d->fd, NULL);
	if (atomic_load(&d->listed)) {
		tw__pfd **link = &p->parked;
		while (*link != d)
			link = &(*link)->park_next;
		*link = d->park_next;
		atomic_store(&d->listed, 0);
	}
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

void tw__pfd_park(tw__pfd *d)
{
	tw__poller *p = d->p;
	// Only the reader-role holder parks, one thread at a time: any change
	// of the generation tells the thread that it was parked again.
	uint32_t gen
	    = atomic_load_explicit(&d->park_gen, memory_order_relaxed);
	atomic_store_explicit(&d->park_gen, gen + 1, memory_order_relaxed);
	atomic_store(&d->parked, 1);
	if (atomic_load(&d->listed))
		return; // the thread looks at it anyway (see park_pass)
	pthread_mutex_lock(&p->mtx);
	bool wake = false;
	if (!d->closing && !atomic_load(&d->listed)) {
		atomic_store(&d->listed, 1);
		d->park_seen = gen + 1;
		d->park_from = tw__now_ns();
		d->park_period = p->park_ns;
		// An empty list: the thread may sleep without end.
		wake = p->parked == NULL;
		d->park_next = p->parked;
		p->parked = d;
	}
	pthread_mutex_unlock(&p->mtx);
	if (wake)
		poller_wake(p);
}

bool tw__pfd_unpark(tw__pfd *d)
{
	int one = 1;
	return atomic_load_explicit(&d->parked, memory_order_relaxed) == 1
	    && atomic_compare_exchange_strong(&d->parked, &one, 0);
}

void tw__poller_set_park_ns(tw__poller *p, int64_t ns)
{
	pthread_mutex_lock(&p->mtx);
	p->park_ns = ns;
	pthread_mutex_unlock(&p->mtx);
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
