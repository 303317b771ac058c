// One epoll thread that tells its clients when their descriptors are ready.
//
// Design notes.  Every descriptor is registered with EPOLLONESHOT: after an
// event it stays disarmed until its owner re-arms it, so exactly one
// callback per descriptor runs at a time and a slow callback never sees
// the same readiness twice (nng's posix_pollq_epoll.c works the same way).
// An eventfd wakes the thread for deferred tasks and for removals.
//
// Removal is the delicate part: epoll_wait may already have returned an
// event for a descriptor that another thread is removing.  tw__pfd_fini
// therefore marks the registration closing and leaves the memory to the
// poller thread, which frees (or releases) it only after the batch of
// events that might still name it is done; the caller waits for that, so
// that when fini returns no callback of the registration is running or
// will run.  Called from the registration's own callback, fini cannot
// wait: it marks and returns, and the thread frees it after the callback.
//
// Parking.  A thread that reads a descriptor itself (tcp://'s reader role)
// disarms it while it reads, so that the poller thread does not wake for
// what it reads; when it is about to come back at once (request/response
// traffic), re-arming it as it leaves and disarming it as it returns cost
// two system calls per message.  It parks the registration instead
// (tw__pfd_park): still disarmed, and the next reader claims it back
// (tw__pfd_unpark) with one compare-and-swap.  Each registration has a
// park timer (a timerfd in the poller's epoll set): when it fires on a
// registration still parked, the poller thread hands its callback a
// readable event (TW__POLL_IN | TW__POLL_PARK, whatever is there), and
// the callback reads and re-arms as after any event, or parks again when
// it knows that its reader is about to come back.  The parker, not the
// poller thread, keeps the timer ahead: a park that finds it due within
// half a period sets it a period ahead again, the period doubling
// (TW__PARK_NS up to 8 ms) while readers keep coming back.  So a reader
// that keeps coming back costs one timerfd_settime per half period and
// never a wake-up of the poller thread, which on a CPU it shares with that
// reader would take the CPU from it; and whatever a park leaves in the
// descriptor is read at most one period (8 ms) after the last reader left
// (later only while the callback parks again: its reader is still busy
// with what it has).  Arming the registration (tw__pfd_arm,
// tw__pfd_swap_fd) ends its park.
//
// Thread-safety: every function may be called from any thread, including
// from callbacks, except tw__poller_free (never from a callback).
// Callbacks run on the poller thread with no lock of the poller held.

#ifndef TW_PLATFORM_POSIX_POLLER_H
#define TW_PLATFORM_POSIX_POLLER_H

#include <stdbool.h>
#include <stdint.h>

typedef struct tw__poller tw__poller;
typedef struct tw__pfd tw__pfd;

enum {
	TW__POLL_IN = 1, // readable, or the peer closed
	TW__POLL_OUT = 2, // writable
	TW__POLL_ERR = 4, // an error or a hang-up (always reported)
	// With TW__POLL_IN: the park timer ended a park (see Parking), so the
	// descriptor may or may not be readable.
	TW__POLL_PARK = 8,
};

// Runs on the poller thread with the events that fired; the registration
// is disarmed until tw__pfd_arm.
typedef void (*tw__pfd_func_t)(tw__pfd *pfd, unsigned events, void *arg);

// A task that runs once on the poller thread (any thread may post it).
// The caller owns the memory; while queued it must stay valid.
typedef struct tw__poll_task {
	void (*fn)(void *arg);
	void *arg;
	struct tw__poll_task *next; // private
	bool queued; // private
} tw__poll_task;

// Starts a poller and its thread.  TW_OK, TW_ENOMEM or TW_ESYS (logged).
int tw__poller_new(tw__poller **out_p);

// Stops the thread and frees the poller; every registration must have been
// finished first.  Never from a callback.
void tw__poller_free(tw__poller *p);

// Is the calling thread the poller's thread?
bool tw__poller_on_thread(const tw__poller *p);

// Registers `fd` (made O_NONBLOCK and FD_CLOEXEC here), disarmed.  The
// descriptor stays the caller's: fini never closes it.  TW_OK, TW_ENOMEM,
// TW_ESYS (logged).
int tw__pfd_init(
    tw__poller *p, int fd, tw__pfd_func_t cb, void *arg, tw__pfd **out_pfd);

// Arms the registration for `events` (TW__POLL_IN | TW__POLL_OUT) once.
// TW_OK, TW_ECLOSED (being finished) or TW_ESYS (logged).
int tw__pfd_arm(tw__pfd *pfd, unsigned events);

// Watches `fd` (made O_NONBLOCK and FD_CLOEXEC here) instead of the
// registration's descriptor, disarmed, keeping the callback: for a
// connection resumed on a new socket.  The old descriptor stays the
// caller's, unwatched.  An event of the old one that is already on its
// way is not delivered unless the owner re-armed meanwhile (then it is a
// spurious wake-up of the new one).  TW_OK, TW_ECLOSED, TW_ESYS (logged).
int tw__pfd_swap_fd(tw__pfd *pfd, int fd);

// Removes the registration.  From another thread: returns once no callback
// of it runs or will run.  From its own callback: returns at once; no
// further callback runs.  The memory is freed by the poller.
void tw__pfd_fini(tw__pfd *pfd);

// A timer whose callback runs on the poller thread, with TW__POLL_IN, each
// time it fires (its owner reads nothing and re-arms nothing; the poller
// thread reads the timerfd it made).  Not armed until tw__ptimer_set; finished (and its
// descriptor closed) by tw__pfd_fini.  Only tw__ptimer_set and
// tw__pfd_fini apply to it.  TW_OK, TW_ENOMEM, TW_ESYS (errno set; not
// logged: the caller says what it goes without).
int tw__ptimer_init(
    tw__poller *p, tw__pfd_func_t cb, void *arg, tw__pfd **out_pfd);
// Makes the timer fire at `at` (tw__now_ns's clock; one in the past fires
// at once), then every `period_ns` (0: once); `at` 0 stops it.  Not after
// tw__pfd_fini.  TW_OK, or TW_ESYS (logged once).
int tw__ptimer_set(tw__pfd *pfd, int64_t at, int64_t period_ns);
// From the timer's callback: how many expiries this call stands for (more
// than one when the poller thread did not run for a period or more).
uint64_t tw__ptimer_ticks(const tw__pfd *pfd);

// The first park period: how long a registration parked once waits for
// its owner before the poller thread calls it back
// (tw__poller_set_park_ns changes it for tests).
#define TW__PARK_NS 250000

// Parks the registration, which the caller disarmed or found disarmed
// (see Parking above).  True: parked (or already ended by the thread or an
// arm).  False: no park timer could be made or set (logged once), nothing
// changed, and the caller re-arms the registration itself.  Never blocks
// (takes the poller's mutex once per half period); never wakes the poller
// thread.  For one thread at a time per registration.
bool tw__pfd_park(tw__pfd *pfd);
// tw__pfd_park with `now`, a reading of tw__now_ns's clock that the
// caller took shortly before, for a caller that has one: reading the
// clock costs more than the rest of a park.  The older the reading, the sooner after
// the park the timer may end it (never later).
bool tw__pfd_park_at(tw__pfd *pfd, int64_t now);

// Claims a parked registration back: true when it was parked and nothing
// armed it or called it back since, so that it is still disarmed and now
// the caller's; false otherwise (nothing changes).
bool tw__pfd_unpark(tw__pfd *pfd);

void tw__poller_set_park_ns(tw__poller *p, int64_t ns);

// What the poller thread does when the park timer fires: unless the owner
// claimed the registration back meanwhile, its callback runs with
// TW__POLL_IN | TW__POLL_PARK (here, on the caller's thread), and the next
// park starts again from the first period.  Tests call it to end a park
// at a point of their choosing.
void tw__pfd_park_fired(tw__pfd *pfd);

// How many times the poller thread has woken up so far (for tests).
uint64_t tw__poller_wakeups(const tw__poller *p);

// Queues `t` to run on the poller thread (nothing if already queued).
void tw__poller_post(tw__poller *p, tw__poll_task *t);

#endif // TW_PLATFORM_POSIX_POLLER_H
