// The mailbox: (from, key) -> FIFO of messages, with blocking pops.
//
// Design notes.  One mutex guards the whole mailbox; each queue has its own
// condition variable so that a push wakes only the threads waiting for that
// key, and each sender has one for the pushers waiting for space.  A pop
// that finds no queue creates an empty one to wait on.  Empty queues with no
// waiters are kept while there are at most MB_IDLE_KEEP queues, since the
// next message of a tag usually follows at once (creating and deleting the
// queue each time was a third of the cost of a small message), and deleted
// beyond that, so that a link that uses many distinct tags (collective
// rounds, one tag per task) does not grow the table forever.
//
// Flow control counts each data message by its tw__msg_cost, its length
// plus a fixed overhead, so that a flood of empty messages is held back
// like any other (or by its length alone, for an owner whose credit still
// counts bytes: see tw__mailbox_count_by_cost).  Control messages (keys
// "<ns>!<name>", names.h) never wait for space and do not count against
// it, since they are what lets data drain; they are bounded instead by
// keeping only the newest of each (sender, key).
//
// Closing and aborting come in two scopes: the whole mailbox (the owner
// aborted, or a sender is gone) and one link namespace, because the links
// of a family (a root and its spawned children) share one mailbox per peer
// and must fail independently.  A namespace's entries go as soon as both
// sides closed it (mailbox.h), so the lists hold the child links closed or
// aborted on one side only and a linear scan is the right structure.

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

// uthash exits the process when an insertion cannot allocate, unless told
// otherwise; the library must never exit, so a failed insertion raises a
// flag that the caller turns into TW_ENOMEM.
#define HASH_NONFATAL_OOM 1
static _Thread_local int mb_oom;
#define uthash_nonfatal_oom(obj) (mb_oom = 1)
#include <uthash.h>

#include "core/bufpool.h"
#include "core/mailbox.h"
#include "core/names.h"
#include "core/nsset.h"
#include "core/sync.h"

// Queues kept when idle (see above).
#define MB_IDLE_KEEP 64

// Message nodes are kept for reuse (up to MB_SPARE_MAX per mailbox) and
// carry a message of up to MB_INLINE bytes themselves: a small message
// then costs no allocation at all, where a node and a copy of its bytes,
// allocated by the transport's thread and freed by the receiving one,
// were a fifth of the receiving side's time at high message rates (glibc
// moves memory freed by one thread back to another through its arena's
// locked bins).  96-byte nodes keep a queued small message within about
// what the node and a separate copy took before (tw__msg_cost).  A flood
// of small messages queues tens of thousands of them before flow control
// stops the sender, and keeping that many (6 MiB of nodes) spared a
// fifth of a tcp:// flood's time, where 1024 spared little.
#define MB_INLINE 64
#define MB_SPARE_MAX 65536

typedef struct mb_msg {
	struct mb_msg *next;
	void *data; // `inl`, or memory of its own (tw__pool_free)
	size_t len;
	bool counted; // for flow control: a data message, not a control one
	unsigned char inl[MB_INLINE];
} mb_msg;

typedef struct mb_queue {
	UT_hash_handle hh;
	char *hk; // from (4 bytes) followed by the key, the hash key
	size_t hklen;
	uint32_t from;
	const char *key; // points into hk
	mb_msg *head, *tail;
	unsigned waiters;
	pthread_cond_t cv;
} mb_queue;

typedef struct mb_from {
	UT_hash_handle hh;
	uint32_t from;
	bool closed;
	tw__nsset left; // namespaces it closed or aborted
	tw__nsset left_closed; // of those, the ones it closed
	tw__nsset dropped; // namespaces this side closed: refused from it
	// Of data messages, in mb_cost:
	uint64_t queued; // queued now
	uint64_t peak; // most ever queued
	uint64_t taken; // left: popped, dropped or refused
	unsigned pushers; // waiting for space
	pthread_cond_t space;
} mb_from;

struct tw_mailbox {
	pthread_mutex_t mtx;
	mb_queue *queues; // protected by mtx
	unsigned nqueues; // in the table, protected by mtx
	// The last sender and queue looked up (protected by mtx): a push, a
	// probe and a pop of one message look up the same ones.
	mb_from *last_from;
	mb_queue *last_q;
	mb_from *froms; // protected by mtx
	mb_msg *spare; // nodes kept for reuse, protected by mtx
	unsigned nspare;
	tw__nsset aborted_ns;
	// Entries in the `left` sets of every sender: written under mtx, read
	// without it too, so that a send finds none without taking the lock.
	_Atomic size_t nleft;
	// Data messages queued from every sender, and whether anything is
	// refused (aborted, aborted_ns, a sender's dropped or closed): written
	// under mtx, read without it by tw__mailbox_idle.
	_Atomic size_t ndata;
	_Atomic int refusing;
	bool keep_peer_closes; // set before sharing (mailbox.h)
	bool by_cost; // set before sharing (mailbox.h)
	bool aborted; // protected by mtx
	tw__mailbox_taken_fn taken_fn; // set before sharing
	void *taken_arg;
};

void tw__mailbox_on_taken(tw_mailbox *m, tw__mailbox_taken_fn fn, void *arg)
{
	m->taken_fn = fn;
	m->taken_arg = arg;
}

// Reports a change of from's taken count; mtx released.
static void taken_report(tw_mailbox *m, uint32_t from, uint64_t taken)
{
	if (m->taken_fn != NULL)
		m->taken_fn(m->taken_arg, from, taken);
}

tw_mailbox *tw_mailbox_new(void)
{
	tw_mailbox *m = calloc(1, sizeof(*m));
	if (m == NULL)
		return NULL;
	pthread_mutex_init(&m->mtx, NULL);
	tw__nsset_init(&m->aborted_ns);
	atomic_init(&m->nleft, 0);
	return m;
}

static void from_free(mb_from *f)
{
	pthread_cond_destroy(&f->space);
	tw__nsset_fini(&f->left);
	tw__nsset_fini(&f->left_closed);
	tw__nsset_fini(&f->dropped);
	free(f);
}

// What a data message of len bytes counts for flow control.
static uint64_t mb_cost(const tw_mailbox *m, size_t len)
{
	return m->by_cost ? tw__msg_cost(len) : (uint64_t)len;
}

// A node for a message, reused when one is spare.  mtx held.
static mb_msg *msg_get(tw_mailbox *m)
{
	mb_msg *msg = m->spare;
	if (msg != NULL) {
		m->spare = msg->next;
		m->nspare--;
	} else if ((msg = malloc(sizeof(*msg))) == NULL) {
		return NULL;
	}
	msg->next = NULL;
	msg->data = NULL;
	msg->len = 0;
	return msg;
}

static bool msg_inline(const mb_msg *msg)
{
	return msg->data == (const void *)msg->inl;
}

// Frees a message's bytes and keeps or frees its node.  mtx held.
static void msg_put(tw_mailbox *m, mb_msg *msg)
{
	if (!msg_inline(msg))
		tw__pool_free(msg->data);
	if (m->nspare < MB_SPARE_MAX) {
		msg->next = m->spare;
		m->spare = msg;
		m->nspare++;
	} else {
		free(msg);
	}
}

void tw__mailbox_count_by_cost(tw_mailbox *m)
{
	m->by_cost = true;
}

static mb_from *from_get(tw_mailbox *m, uint32_t from, bool create)
{
	mb_from *f = m->last_from;
	if (f != NULL && f->from == from)
		return f;
	HASH_FIND(hh, m->froms, &from, sizeof(from), f);
	if (f != NULL)
		m->last_from = f; // senders are never removed
	if (f != NULL || !create)
		return f;
	if ((f = calloc(1, sizeof(*f))) == NULL)
		return NULL;
	f->from = from;
	tw__cond_init(&f->space);
	tw__nsset_init(&f->left);
	tw__nsset_init(&f->left_closed);
	tw__nsset_init(&f->dropped);
	mb_oom = 0;
	HASH_ADD(hh, m->froms, from, sizeof(f->from), f);
	if (mb_oom) {
		from_free(f);
		return NULL;
	}
	return f;
}

// Finds the queue of (from, key), creating it when `create`.  Returns NULL
// when absent or out of memory.
static mb_queue *queue_get(
    tw_mailbox *m, uint32_t from, const char *key, bool create)
{
	mb_queue *q = m->last_q;
	if (q != NULL && q->from == from && strcmp(q->key, key) == 0)
		return q;
	size_t klen = strlen(key);
	char stackbuf[4 + TW_KEY_MAX];
	char *hk = klen + 4 <= sizeof(stackbuf) ? stackbuf : malloc(klen + 4);
	if (hk == NULL)
		return NULL;
	memcpy(hk, &from, 4);
	memcpy(hk + 4, key, klen);
	HASH_FIND(hh, m->queues, hk, klen + 4, q);
	if (q == NULL && create && (q = calloc(1, sizeof(*q))) != NULL) {
		q->hk = malloc(klen + 5);
		if (q->hk == NULL) {
			free(q);
			q = NULL;
		} else {
			memcpy(q->hk, hk, klen + 4);
			q->hk[klen + 4] = '\0';
			q->hklen = klen + 4;
			q->from = from;
			q->key = q->hk + 4;
			tw__cond_init(&q->cv);
			mb_oom = 0;
			HASH_ADD_KEYPTR(hh, m->queues, q->hk, q->hklen, q);
			if (mb_oom) {
				pthread_cond_destroy(&q->cv);
				free(q->hk);
				free(q);
				q = NULL;
			} else {
				m->nqueues++;
			}
		}
	}
	if (hk != stackbuf)
		free(hk);
	if (q != NULL)
		m->last_q = q;
	return q;
}

// Keeps m->ndata in step with the data messages queued.  mtx held.
static void ndata_add(tw_mailbox *m, int d)
{
	size_t n = atomic_load_explicit(&m->ndata, memory_order_relaxed);
	atomic_store_explicit(
	    &m->ndata, n + (size_t)(ptrdiff_t)d, memory_order_release);
}

// Keeps m->refusing in step after anything it sums up changed.  mtx held.
static void refusing_update(tw_mailbox *m)
{
	bool r = m->aborted || tw__nsset_count(&m->aborted_ns) > 0;
	for (mb_from *f = m->froms; f != NULL && !r; f = f->hh.next)
		r = f->closed || tw__nsset_count(&f->dropped) > 0;
	atomic_store_explicit(&m->refusing, r, memory_order_release);
}

static void queue_free(tw_mailbox *m, mb_queue *q)
{
	for (mb_msg *p = q->head, *n; p != NULL; p = n) {
		n = p->next;
		msg_put(m, p);
	}
	pthread_cond_destroy(&q->cv);
	free(q->hk);
	free(q);
}

static void queue_drop_if_idle(tw_mailbox *m, mb_queue *q)
{
	if (q->head == NULL && q->waiters == 0 && m->nqueues > MB_IDLE_KEEP) {
		HASH_DEL(m->queues, q);
		m->nqueues--;
		if (m->last_q == q)
			m->last_q = NULL;
		queue_free(m, q);
	}
}

// Why a pop on (from, key) cannot succeed now, or TW_OK when it may wait.
// Called with mtx held and the queue found empty.
static int pop_blocked_status(tw_mailbox *m, uint32_t from, const char *key)
{
	mb_from *f = from_get(m, from, false);
	if (f != NULL && (f->closed || tw__nsset_holds(&f->left, key)))
		return TW_EPEER;
	return TW_OK;
}

// Whether nobody here will take messages of (from, key): the mailbox or the
// key's namespace aborted, or that namespace closed here towards `from`.
// mtx held.
static bool key_refused(tw_mailbox *m, uint32_t from, const char *key)
{
	// `refusing` sums up every set looked at below and is kept in step
	// under mtx (refusing_update, before anything here asks): while it is
	// clear, no lookup.  A small message's push and pop asked about three
	// times, some 40 instructions each, a fifth of the push's time.
	if (!atomic_load_explicit(&m->refusing, memory_order_relaxed))
		return false;
	if (m->aborted || tw__nsset_holds(&m->aborted_ns, key))
		return true;
	mb_from *f = from_get(m, from, false);
	return f != NULL && tw__nsset_holds(&f->dropped, key);
}

// Applies `op` to from's `left` set and keeps m->nleft in step.  mtx held.
static int left_update(tw_mailbox *m, mb_from *f,
    int (*op)(tw__nsset *s, const char *name), const char *name)
{
	size_t before = tw__nsset_count(&f->left);
	int status = op(&f->left, name);
	size_t after = tw__nsset_count(&f->left);
	size_t n = atomic_load_explicit(&m->nleft, memory_order_relaxed);
	atomic_store_explicit(
	    &m->nleft, n - before + after, memory_order_release);
	return status;
}

static int op_add(tw__nsset *s, const char *ns)
{
	return tw__nsset_add(s, ns);
}

static int op_remove(tw__nsset *s, const char *ns)
{
	tw__nsset_remove(s, ns);
	return TW_OK;
}

static int op_forget_key(tw__nsset *s, const char *key)
{
	tw__nsset_forget_key(s, key);
	return TW_OK;
}

static int op_forget_ns(tw__nsset *s, const char *ns)
{
	tw__nsset_forget_ns(s, ns);
	return TW_OK;
}

// `from` pushed data under `key`: a namespace it left that holds the key
// was opened again, by a new child link of that name.  mtx held.
static void peer_reopened(tw_mailbox *m, mb_from *f, const char *key)
{
	if (tw__nsset_count(&f->left) == 0)
		return;
	left_update(m, f, op_forget_key, key);
	tw__nsset_forget_key(&f->left_closed, key);
}

// Waits for a message of (from, key) and returns with mtx held and *qp the
// non-empty queue on TW_OK.
static int pop_wait(tw_mailbox *m, uint32_t from, const char *key,
    int64_t deadline, mb_queue **qp)
{
	mb_queue *q = queue_get(m, from, key, true);
	if (q == NULL)
		return TW_ENOMEM;
	int status;
	for (;;) {
		if (key_refused(m, from, key)) {
			status = TW_ECLOSED;
			break;
		}
		if (q->head != NULL) {
			*qp = q;
			return TW_OK;
		}
		if ((status = pop_blocked_status(m, from, key)) != TW_OK)
			break;
		deadline = tw__deadline_fix(deadline); // counts from here
		q->waiters++;
		int rv = tw__cond_wait_until(&q->cv, &m->mtx, deadline);
		q->waiters--;
		if (rv == ETIMEDOUT && q->head == NULL
		    && !key_refused(m, from, key)) {
			status = TW_ETIMEDOUT;
			break;
		}
	}
	queue_drop_if_idle(m, q);
	return status;
}

// Unlinks the head of q and accounts for it.  mtx held.
static mb_msg *queue_take(tw_mailbox *m, mb_queue *q)
{
	mb_msg *msg = q->head;
	q->head = msg->next;
	if (q->head == NULL)
		q->tail = NULL;
	if (msg->counted)
		ndata_add(m, -1);
	mb_from *f = from_get(m, q->from, false);
	if (f != NULL && msg->counted) {
		f->queued -= mb_cost(m, msg->len);
		f->taken += mb_cost(m, msg->len);
		if (f->pushers > 0)
			pthread_cond_broadcast(&f->space);
	}
	// Another waiter may have been woken for a message this thread took;
	// pass the signal on so that a second queued message is not stranded.
	if (q->head != NULL && q->waiters > 0)
		pthread_cond_signal(&q->cv);
	queue_drop_if_idle(m, q);
	return msg;
}

// from's taken count after a data message left.  mtx held.
static bool taken_after(
    tw_mailbox *m, uint32_t from, bool counted, uint64_t *taken)
{
	mb_from *f = from_get(m, from, false);
	if (!counted || f == NULL || m->taken_fn == NULL)
		return false;
	*taken = f->taken;
	return true;
}

int tw__mailbox_pop_until(tw_mailbox *m, uint32_t from, const char *key,
    int64_t deadline, tw_buf *out)
{
	if (m == NULL || key == NULL || out == NULL)
		return TW_EINVAL;
	pthread_mutex_lock(&m->mtx);
	mb_queue *q;
	uint64_t taken = 0;
	bool report = false;
	int status = pop_wait(m, from, key, deadline, &q);
	if (status == TW_OK) {
		// The caller owns what it gets: bytes kept in the node get
		// memory of their own, before the message leaves the queue.
		mb_msg *head = q->head;
		void *data = head->data;
		if (msg_inline(head))
			data = head->len > 0 ? malloc(head->len) : NULL;
		if (head->len > 0 && data == NULL) {
			status = TW_ENOMEM;
		} else {
			mb_msg *msg = queue_take(m, q);
			if (msg_inline(msg) && msg->len > 0)
				memcpy(data, msg->data, msg->len);
			msg->data = NULL;
			out->data = data;
			out->len = msg->len;
			report = taken_after(m, from, msg->counted, &taken);
			msg_put(m, msg);
		}
	}
	pthread_mutex_unlock(&m->mtx);
	if (report)
		taken_report(m, from, taken);
	return status;
}

int tw_mailbox_pop(tw_mailbox *m, uint32_t from, const char *tag,
    int64_t timeout_ms, tw_buf *out)
{
	return tw__mailbox_pop_until(
	    m, from, tag, tw__deadline_ms(timeout_ms), out);
}

int tw__mailbox_pop_into(tw_mailbox *m, uint32_t from, const char *key,
    int64_t deadline, void *buf, size_t cap, size_t *len)
{
	if (m == NULL || key == NULL || len == NULL || (buf == NULL && cap))
		return TW_EINVAL;
	pthread_mutex_lock(&m->mtx);
	mb_queue *q;
	void *data = NULL; // to copy from and free outside the lock
	uint64_t taken = 0;
	bool report = false;
	int status = pop_wait(m, from, key, deadline, &q);
	if (status == TW_OK) {
		if (q->head->len > cap) {
			*len = q->head->len;
			// Leave it for the next caller, who may bring a larger
			// buffer; a waiter woken for it must hear about it too.
			if (q->waiters > 0)
				pthread_cond_signal(&q->cv);
			status = TW_ETRUNC;
		} else {
			mb_msg *msg = queue_take(m, q);
			*len = msg->len;
			report = taken_after(m, from, msg->counted, &taken);
			// A few bytes are copied at once; more outside the
			// lock, so that the transport's thread can queue the
			// next message while a large one is copied.
			if (msg_inline(msg)) {
				if (msg->len > 0)
					memcpy(buf, msg->data, msg->len);
			} else {
				data = msg->data;
				msg->data = NULL;
			}
			msg_put(m, msg);
		}
	}
	pthread_mutex_unlock(&m->mtx);
	if (data != NULL) {
		memcpy(buf, data, *len);
		tw__pool_free(data);
	}
	if (report)
		taken_report(m, from, taken);
	return status;
}

// Queues a message: `data` (owned, passed on TW_OK) or, when `src` is not
// NULL, a copy of src[0..len) that this makes (in the node when it fits).
static int push(tw_mailbox *m, uint32_t from, const char *key, void *data,
    const void *src, size_t len, uint64_t limit, int64_t deadline,
    const _Atomic int *cancel)
{
	bool counted = !tw__key_is_ctl(key);
	int status = TW_OK;
	uint64_t taken = 0;
	bool report = false;
	pthread_mutex_lock(&m->mtx);
	mb_from *f = from_get(m, from, true);
	if (f == NULL) {
		status = TW_ENOMEM;
		goto out;
	}
	for (;;) {
		if (key_refused(m, from, key)) {
			// Refused data has left as far as its sender's credit
			// is concerned: nobody will ever take it.
			if (counted) {
				f->taken += mb_cost(m, len);
				report = taken_after(m, from, counted, &taken);
			}
			status = TW_ECLOSED;
			goto out;
		}
		if (f->closed) {
			status = TW_EPEER;
			goto out;
		}
		if (cancel != NULL
		    && atomic_load_explicit(cancel, memory_order_acquire)) {
			status = TW_ECLOSED;
			goto out;
		}
		// One message is always admitted into an empty box, so that a
		// message larger than the limit can still be sent.
		if (!counted || f->queued == 0
		    || f->queued + mb_cost(m, len) <= limit)
			break;
		f->pushers++;
		int rv = tw__cond_wait_until(&f->space, &m->mtx, deadline);
		f->pushers--;
		if (rv == ETIMEDOUT) {
			status = TW_ETIMEDOUT;
			goto out;
		}
	}
	mb_queue *q = queue_get(m, from, key, true);
	mb_msg *msg = q != NULL ? msg_get(m) : NULL;
	if (msg == NULL) {
		status = TW_ENOMEM;
		goto out;
	}
	msg->len = len;
	msg->counted = counted;
	msg->data = data;
	if (src != NULL) {
		msg->data = msg->inl; // push_copy copied anything larger
		if (len > 0)
			memcpy(msg->inl, src, len);
	}
	// A sender never sends on a namespace it closed: data there comes
	// from a new child link of the same name, which reopens it.  Not a
	// control message: it may have overtaken the close (shm:// carries
	// control in a lane of its own).
	if (counted)
		peer_reopened(m, f, key);
	if (!counted && q->head != NULL) {
		// A control message carries state, not a stream: an ack's
		// count is cumulative and a hello says the peer is up, so the
		// newest says all that older ones of its key said.  Keeping
		// one per key bounds them however many come, and whether or
		// not anyone takes them (a sender without a throttle window
		// never takes the acks of a receiver with one).
		mb_msg *old = q->head;
		q->head = q->tail = msg;
		msg_put(m, old);
		goto out;
	}
	if (q->tail != NULL)
		q->tail->next = msg;
	else
		q->head = msg;
	q->tail = msg;
	if (counted) {
		f->queued += mb_cost(m, len);
		ndata_add(m, 1);
	}
	if (f->queued > f->peak)
		f->peak = f->queued;
	if (q->waiters > 0)
		pthread_cond_signal(&q->cv);
out:
	pthread_mutex_unlock(&m->mtx);
	if (report)
		taken_report(m, from, taken);
	return status;
}

int tw__mailbox_push_owned(tw_mailbox *m, uint32_t from, const char *key,
    void *data, size_t len, uint64_t limit, int64_t deadline,
    const _Atomic int *cancel)
{
	if (m == NULL || key == NULL || (data == NULL && len > 0))
		return TW_EINVAL;
	return push(m, from, key, data, NULL, len, limit, deadline, cancel);
}

int tw__mailbox_push_copy(tw_mailbox *m, uint32_t from, const char *key,
    const void *src, size_t len, uint64_t limit, int64_t deadline,
    const _Atomic int *cancel)
{
	if (m == NULL || key == NULL || (src == NULL && len > 0))
		return TW_EINVAL;
	if (len <= MB_INLINE)
		return push(m, from, key, NULL, src != NULL ? src : "", len,
		    limit, deadline, cancel);
	void *copy = tw__pool_alloc(len);
	if (copy == NULL)
		return TW_ENOMEM;
	memcpy(copy, src, len);
	int status
	    = push(m, from, key, copy, NULL, len, limit, deadline, cancel);
	if (status != TW_OK)
		tw__pool_free(copy);
	return status;
}

// --- runs (mailbox.h) ---------------------------------------------------

_Static_assert(TW_MB_RUN_BYTES <= MB_INLINE, "a staged message fits a node");

void tw__mailbox_run_init(tw__mailbox_run *r)
{
	memset(r, 0, sizeof(*r)); // slots are copied whole (run_queue)
}

void tw__mailbox_run_fini(tw__mailbox_run *r)
{
	r->n = 0;
}

// Queues r's staged messages as push() would one by one; the checks that
// depend on the sender and the key alone are made once.  Nodes come from
// the spares as a push's do (the most recently freed: warm).  mtx held.
// *report says whether the sender's taken count changed.
static int run_queue(
    tw_mailbox *m, tw__mailbox_run *r, bool *report, uint64_t *taken)
{
	mb_from *f = from_get(m, r->from, true);
	mb_queue *q = f != NULL ? queue_get(m, r->from, r->key, true) : NULL;
	if (q == NULL)
		return TW_ENOMEM;
	if (key_refused(m, r->from, r->key)) {
		for (unsigned i = 0; i < r->n; i++)
			f->taken += mb_cost(m, r->len[i]);
		*report = taken_after(m, r->from, true, taken);
		return TW_OK; // dropped as a push drops them
	}
	// Not refused when the sender closed meanwhile (a push then
	// returns TW_EPEER): they were taken off the transport before that
	// close could be seen, and pushed one by one they would have been
	// queued; pops drain them, then return TW_EPEER.
	peer_reopened(m, f, r->key);
	int status = TW_OK;
	unsigned i = 0;
	for (; i < r->n; i++) {
		uint64_t cost = mb_cost(m, r->len[i]);
		if (f->queued != 0 && f->queued + cost > r->limit) {
			status = TW_ETIMEDOUT;
			break;
		}
		mb_msg *msg = msg_get(m);
		if (msg == NULL) {
			status = TW_ENOMEM;
			break;
		}
		msg->len = r->len[i];
		msg->counted = true;
		msg->data = msg->inl;
		// All of the slot: a copy of constant size is two moves,
		// where one of the message's size was a slow string move.
		memcpy(msg->inl, r->bytes[i], TW_MB_RUN_BYTES);
		if (q->tail != NULL)
			q->tail->next = msg;
		else
			q->head = msg;
		q->tail = msg;
		f->queued += cost;
	}
	if (f->queued > f->peak)
		f->peak = f->queued;
	ndata_add(m, (int)i);
	// One wakes one waiter; a waiter that takes a message passes the
	// signal on while more are queued (queue_take).
	if (i > 0 && q->waiters > 0)
		pthread_cond_signal(&q->cv);
	return status;
}

int tw__mailbox_run_flush(tw__mailbox_run *r)
{
	if (r->n == 0)
		return TW_OK;
	tw_mailbox *m = r->m;
	bool report = false;
	uint64_t taken = 0;
	pthread_mutex_lock(&m->mtx);
	int status = run_queue(m, r, &report, &taken);
	pthread_mutex_unlock(&m->mtx);
	r->n = 0;
	if (report)
		taken_report(m, r->from, taken);
	return status;
}

int tw__mailbox_run_push(tw__mailbox_run *r, tw_mailbox *m, uint32_t from,
    const char *key, const void *src, size_t len, uint64_t limit)
{
	if (r == NULL || m == NULL || key == NULL || (src == NULL && len > 0))
		return TW_EINVAL;
	bool joins = len <= TW_MB_RUN_BYTES && r->n > 0 && r->n < TW_MB_RUN_MAX
	    && r->m == m && r->from == from && r->limit == limit
	    && strcmp(r->key, key) == 0;
	if (!joins) {
		int status = tw__mailbox_run_flush(r);
		if (status != TW_OK)
			return status;
		// The key is looked at when a run starts, not per message.
		size_t klen = strlen(key);
		if (len > TW_MB_RUN_BYTES || klen >= sizeof(r->key)
		    || tw__key_is_ctl(key))
			return tw__mailbox_push_copy(
			    m, from, key, src, len, limit, 0, NULL);
		memcpy(r->key, key, klen + 1);
		r->m = m;
		r->from = from;
		r->limit = limit;
	}
	r->len[r->n] = (unsigned char)len;
	if (len > 0)
		memcpy(r->bytes[r->n], src, len);
	r->n++;
	return TW_OK;
}

int tw_mailbox_push(
    tw_mailbox *m, uint32_t from, const char *tag, const void *buf, size_t len)
{
	if (m == NULL || tag == NULL || (buf == NULL && len > 0))
		return TW_EINVAL;
	return tw__mailbox_push_copy(
	    m, from, tag, buf, len, UINT64_MAX, TW_FOREVER, NULL);
}

int tw_mailbox_probe(
    tw_mailbox *m, uint32_t from, const char *tag, size_t *len)
{
	if (m == NULL || tag == NULL || len == NULL)
		return TW_EINVAL;
	pthread_mutex_lock(&m->mtx);
	int status;
	mb_queue *q = queue_get(m, from, tag, false);
	if (key_refused(m, from, tag)) {
		status = TW_ECLOSED;
	} else if (q != NULL && q->head != NULL) {
		*len = q->head->len;
		status = TW_OK;
	} else {
		status = pop_blocked_status(m, from, tag);
		if (status == TW_OK)
			status = TW_EAGAIN;
	}
	pthread_mutex_unlock(&m->mtx);
	return status;
}

// Wakes every waiter; each re-checks its own condition.  mtx held.
static void wake_all(tw_mailbox *m)
{
	for (mb_queue *q = m->queues; q != NULL; q = q->hh.next)
		if (q->waiters > 0)
			pthread_cond_broadcast(&q->cv);
	for (mb_from *f = m->froms; f != NULL; f = f->hh.next)
		if (f->pushers > 0)
			pthread_cond_broadcast(&f->space);
}

int tw_mailbox_close_from(tw_mailbox *m, uint32_t from)
{
	if (m == NULL)
		return TW_EINVAL;
	pthread_mutex_lock(&m->mtx);
	mb_from *f = from_get(m, from, true);
	int status = f == NULL ? TW_ENOMEM : TW_OK;
	if (f != NULL)
		f->closed = true;
	wake_all(m);
	refusing_update(m);
	pthread_mutex_unlock(&m->mtx);
	return status;
}

// --- namespaces (mailbox.h) ---------------------------------------------

// Both sides closed `ns`: from now on `from` sends nothing there, and
// nothing about ns needs remembering for it.  mtx held.
static void both_closed(tw_mailbox *m, mb_from *f, const char *ns)
{
	left_update(m, f, op_remove, ns);
	tw__nsset_remove(&f->left_closed, ns);
	tw__nsset_remove(&f->dropped, ns);
}

int tw__mailbox_close_ns(tw_mailbox *m, uint32_t from, const char *ns)
{
	if (m == NULL || ns == NULL)
		return TW_EINVAL;
	pthread_mutex_lock(&m->mtx);
	mb_from *f = from_get(m, from, true);
	int status = f == NULL ? TW_ENOMEM : TW_OK;
	if (f != NULL && tw__nsset_remove(&f->dropped, ns)) {
		both_closed(m, f, ns);
	} else if (f != NULL) {
		status = left_update(m, f, op_add, ns);
		if (status == TW_OK)
			status = tw__nsset_add(&f->left_closed, ns);
	}
	wake_all(m);
	refusing_update(m);
	pthread_mutex_unlock(&m->mtx);
	return status;
}

int tw__mailbox_peer_abort_ns(tw_mailbox *m, uint32_t from, const char *ns)
{
	if (m == NULL || ns == NULL)
		return TW_EINVAL;
	pthread_mutex_lock(&m->mtx);
	mb_from *f = from_get(m, from, true);
	int status = f == NULL ? TW_ENOMEM : left_update(m, f, op_add, ns);
	wake_all(m);
	pthread_mutex_unlock(&m->mtx);
	return status;
}

// Frees the messages queued under keys that nobody will pop any more:
// `from`'s in namespace `ns`, or with `ns` NULL those refused here (an
// abort).  Their data counts as taken.  mtx held.  Returns whether any
// data left.
static bool drop_queued(tw_mailbox *m, uint32_t from, const char *ns)
{
	bool dropped = false;
	mb_queue *q, *qt;
	HASH_ITER(hh, m->queues, q, qt)
	{
		if (q->head == NULL)
			continue;
		if (ns != NULL ? q->from != from || !tw__key_in_ns(q->key, ns)
		               : !key_refused(m, q->from, q->key))
			continue;
		mb_from *f = from_get(m, q->from, false);
		for (mb_msg *p = q->head, *n; p != NULL; p = n) {
			n = p->next;
			if (p->counted)
				ndata_add(m, -1);
			if (p->counted && f != NULL) {
				f->queued -= mb_cost(m, p->len);
				f->taken += mb_cost(m, p->len);
				dropped = true;
			}
			msg_put(m, p);
		}
		q->head = q->tail = NULL;
		queue_drop_if_idle(m, q);
	}
	return dropped;
}

// Reports every sender's taken count (after drop_queued).  The counts are
// read under the lock and reported outside it.
static void report_all(tw_mailbox *m)
{
	if (m->taken_fn == NULL)
		return;
	pthread_mutex_lock(&m->mtx);
	unsigned n = HASH_COUNT(m->froms), i = 0;
	struct {
		uint32_t from;
		uint64_t taken;
	} *v = n > 0 ? malloc(n * sizeof(*v)) : NULL;
	for (mb_from *f = m->froms; v != NULL && f != NULL; f = f->hh.next) {
		v[i].from = f->from;
		v[i++].taken = f->taken;
	}
	pthread_mutex_unlock(&m->mtx);
	for (unsigned k = 0; k < i; k++)
		taken_report(m, v[k].from, v[k].taken);
	free(v);
}

int tw__mailbox_drop_ns(tw_mailbox *m, uint32_t from, const char *ns)
{
	if (m == NULL || ns == NULL)
		return TW_EINVAL;
	pthread_mutex_lock(&m->mtx);
	mb_from *f = from_get(m, from, true);
	int status = f == NULL ? TW_ENOMEM : TW_OK;
	// A close ends the abort before it: what the abort refused, the
	// close now refuses sender by sender, until each closed ns too.
	tw__nsset_remove(&m->aborted_ns, ns);
	bool dropped = drop_queued(m, from, ns);
	if (f != NULL && tw__nsset_remove(&f->left_closed, ns))
		both_closed(m, f, ns);
	else if (f != NULL)
		status = tw__nsset_add(&f->dropped, ns);
	wake_all(m);
	refusing_update(m);
	pthread_mutex_unlock(&m->mtx);
	if (dropped)
		report_all(m);
	return status;
}

int tw__mailbox_abort_ns(tw_mailbox *m, const char *ns)
{
	if (m == NULL || ns == NULL)
		return TW_EINVAL;
	pthread_mutex_lock(&m->mtx);
	int status = tw__nsset_add(&m->aborted_ns, ns);
	if (status != TW_OK)
		m->aborted = true; // failing safe: abort more, never less
	refusing_update(m); // before drop_queued asks key_refused
	bool dropped = drop_queued(m, 0, NULL);
	wake_all(m);
	pthread_mutex_unlock(&m->mtx);
	if (dropped)
		report_all(m);
	return TW_OK;
}

int tw__mailbox_reopen_ns(tw_mailbox *m, const char *ns)
{
	if (m == NULL || ns == NULL)
		return TW_EINVAL;
	pthread_mutex_lock(&m->mtx);
	tw__nsset_forget_ns(&m->aborted_ns, ns);
	for (mb_from *f = m->froms; f != NULL; f = f->hh.next) {
		tw__nsset_forget_ns(&f->dropped, ns);
		if (m->keep_peer_closes)
			continue;
		left_update(m, f, op_forget_ns, ns);
		tw__nsset_forget_ns(&f->left_closed, ns);
	}
	refusing_update(m);
	pthread_mutex_unlock(&m->mtx);
	return TW_OK;
}

void tw__mailbox_keep_peer_closes(tw_mailbox *m)
{
	m->keep_peer_closes = true;
}

bool tw__mailbox_peer_left(tw_mailbox *m, uint32_t from, const char *key)
{
	if (atomic_load_explicit(&m->nleft, memory_order_acquire) == 0)
		return false;
	pthread_mutex_lock(&m->mtx);
	mb_from *f = from_get(m, from, false);
	bool left = f != NULL && tw__nsset_holds(&f->left, key);
	pthread_mutex_unlock(&m->mtx);
	return left;
}

bool tw__mailbox_idle_data(tw_mailbox *m)
{
	return atomic_load_explicit(&m->ndata, memory_order_acquire) == 0
	    && !atomic_load_explicit(&m->refusing, memory_order_acquire)
	    && atomic_load_explicit(&m->nleft, memory_order_acquire) == 0;
}

bool tw__mailbox_idle(tw_mailbox *m, const char *key)
{
	return tw__mailbox_idle_data(m) && !tw__key_is_ctl(key);
}

size_t tw__mailbox_ns_entries(tw_mailbox *m)
{
	pthread_mutex_lock(&m->mtx);
	size_t n = tw__nsset_count(&m->aborted_ns);
	for (mb_from *f = m->froms; f != NULL; f = f->hh.next)
		n += tw__nsset_count(&f->left)
		    + tw__nsset_count(&f->left_closed)
		    + tw__nsset_count(&f->dropped);
	pthread_mutex_unlock(&m->mtx);
	return n;
}

void tw_mailbox_abort(tw_mailbox *m)
{
	if (m == NULL)
		return;
	pthread_mutex_lock(&m->mtx);
	m->aborted = true;
	wake_all(m);
	refusing_update(m);
	pthread_mutex_unlock(&m->mtx);
}

void tw__mailbox_kick(tw_mailbox *m)
{
	if (m == NULL)
		return;
	pthread_mutex_lock(&m->mtx);
	for (mb_from *f = m->froms; f != NULL; f = f->hh.next)
		if (f->pushers > 0)
			pthread_cond_broadcast(&f->space);
	pthread_mutex_unlock(&m->mtx);
}

uint64_t tw__mailbox_peak(tw_mailbox *m, uint32_t from)
{
	pthread_mutex_lock(&m->mtx);
	mb_from *f = from_get(m, from, false);
	uint64_t peak = f != NULL ? f->peak : 0;
	pthread_mutex_unlock(&m->mtx);
	return peak;
}

void tw_mailbox_free(tw_mailbox *m)
{
	if (m == NULL)
		return;
	mb_queue *q, *qt;
	HASH_ITER(hh, m->queues, q, qt)
	{
		HASH_DEL(m->queues, q);
		queue_free(m, q);
	}
	for (mb_msg *p = m->spare, *n; p != NULL; p = n) {
		n = p->next;
		free(p);
	}
	mb_from *f, *ft;
	HASH_ITER(hh, m->froms, f, ft)
	{
		HASH_DEL(m->froms, f);
		from_free(f);
	}
	tw__nsset_fini(&m->aborted_ns);
	pthread_mutex_destroy(&m->mtx);
	free(m);
}
