// Transfers: posts and their ops, completion and failure, deadlines, the
// finished queue behind tw_engine_fd and tw_engine_reap, notifications.
// Everything here runs with the engine mutex held unless it says not.

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/sync.h"
#include "engine/eng.h"

void tw__eng_efd_update(tw_engine *e)
{
	bool want = e->done_head != NULL || e->notes != NULL;
	if (e->efd < 0 || want == e->efd_set)
		return;
	uint64_t v = 1;
	ssize_t r = want ? write(e->efd, &v, sizeof(v))
	                 : read(e->efd, &v, sizeof(v));
	if (r == (ssize_t)sizeof(v))
		e->efd_set = want;
}

static void done_push(tw_engine *e, tw_xfer *x)
{
	if (x->queued)
		return;
	x->queued = true;
	x->next_done = NULL;
	if (e->done_tail != NULL)
		e->done_tail->next_done = x;
	else
		e->done_head = x;
	e->done_tail = x;
	tw__eng_efd_update(e);
}

static void done_remove(tw_engine *e, tw_xfer *x)
{
	if (!x->queued)
		return;
	tw_xfer **pp = &e->done_head, *prev = NULL;
	while (*pp != x) {
		prev = *pp;
		pp = &(*pp)->next_done;
	}
	*pp = x->next_done;
	if (e->done_tail == x)
		e->done_tail = prev;
	x->queued = false;
	tw__eng_efd_update(e);
}

static int queue_note(eng_peer *p, const void *msg, size_t len)
{
	void *copy = NULL;
	if (len > 0 && (copy = malloc(len)) == NULL)
		return TW_ENOMEM;
	if (len > 0)
		memcpy(copy, msg, len);
	tw__eng_hdr h = { .type = TW_ENG_NOTIFY, .len = (uint32_t)len };
	int status = tw__eng_peer_queue(p, &h, copy);
	if (status != TW_OK)
		free(copy);
	return status;
}

// The op leaves every structure that frames reach it through.
static void op_finish(eng_op *op, int state)
{
	tw_engine *e = op->x->e;
	eng_peer *p = op->x->p;
	if (op->id != 0) {
		HASH_DELETE(hh, e->ops, op);
		op->id = 0;
	}
	tw__eng_peer_deactivate(p, op);
	if (op->kind == OP_RECV && op->state == OPS_WAIT) {
		for (size_t i = 0; i < p->nrecvs; i++) {
			if (p->recvs[i] == op) {
				memmove(p->recvs + i, p->recvs + i + 1,
				    (p->nrecvs - i - 1) * sizeof(*p->recvs));
				p->nrecvs--;
				break;
			}
		}
	}
	if (op->reg != NULL) {
		op->reg->users--;
		op->reg = NULL;
	}
	op->state = state;
}

// Tells the peer that an op it knows of is given up, and puts back what
// the peer's side must see again.
static void op_cancel(eng_op *op)
{
	eng_peer *p = op->x->p;
	if (p->state == PEER_FAILED)
		return;
	if (op->kind == OP_SEND
	    && (op->state == OPS_WAIT || op->state == OPS_RUN)) {
		tw__eng_hdr h = { .type = TW_ENG_SCANCEL, .a = op->id };
		tw__eng_peer_queue(p, &h, NULL);
	} else if (op->kind == OP_RECV && op->state == OPS_RUN) {
		tw__eng_hdr h = { .type = TW_ENG_RCANCEL,
			.a = op->peer_op,
			.b = op->match };
		tw__eng_peer_queue(p, &h, NULL);
		// The send pairs with the next receive of its tag: its RTS is
		// the oldest of the tag again.
		eng_rts *r = malloc(sizeof(*r));
		if (r != NULL) {
			*r = (eng_rts) { .next = p->rts,
				.sid = op->peer_op,
				.tag = op->tag,
				.len = op->peer_len };
			p->rts = r;
			if (p->rts_tail == NULL)
				p->rts_tail = r;
			p->nrts++;
		} else {
			tw__eng_peer_fail(p, TW_ENOMEM);
		}
	}
}

static void xfer_complete(tw_xfer *x)
{
	tw_engine *e = x->e;
	x->state = X_DONE;
	x->status = TW_OK;
	x->p->st.xfers_done++;
	if (x->has_note && queue_note(x->p, x->note, x->note_len) != TW_OK) {
		x->state = X_FAILED;
		x->status = TW_ENOMEM;
	}
	done_push(e, x);
	pthread_cond_broadcast(&e->cv);
}

static void xfer_fail(tw_xfer *x, int status)
{
	if (x->state != X_RUN && x->state != X_NEW)
		return;
	tw_engine *e = x->e;
	for (size_t i = 0; i < x->nops; i++) {
		eng_op *op = x->ops[i];
		if (op->state == OPS_WAIT || op->state == OPS_RUN) {
			op_cancel(op);
			op_finish(op, OPS_IDLE);
		}
	}
	x->pending = 0;
	x->state = X_FAILED;
	x->status = status;
	x->p->st.xfers_failed++;
	done_push(e, x);
	pthread_cond_broadcast(&e->cv);
}

void tw__eng_op_done(eng_op *op)
{
	if (op->state != OPS_WAIT && op->state != OPS_RUN)
		return;
	op_finish(op, OPS_DONE);
	tw_xfer *x = op->x;
	if (op->kind == OP_SEND || op->kind == OP_WRITE)
		x->p->st.bytes_sent += op->len;
	else
		x->p->st.bytes_recv += op->len;
	if (--x->pending == 0 && x->state == X_RUN)
		xfer_complete(x);
}

void tw__eng_op_abandon(eng_op *op, int status)
{
	if (op->state != OPS_WAIT && op->state != OPS_RUN)
		return;
	op_finish(op, OPS_IDLE);
	xfer_fail(op->x, status);
}

void tw__eng_op_fail(eng_op *op, int status)
{
	if (op->state != OPS_WAIT && op->state != OPS_RUN)
		return;
	op_cancel(op);
	op_finish(op, OPS_IDLE);
	xfer_fail(op->x, status);
}

// Pairs receive op with the peer's send sid of `len` bytes.
// Pairs receive op with the peer's send sid of `len` bytes.  Lengths that
// differ are the sender's to judge: the send may have been given up, in
// which case its SCANCEL puts this receive back in line; otherwise its
// SCANCEL with TW_ETRUNC fails both.
static void match_pair(eng_peer *p, eng_op *op, uint64_t sid, uint64_t len)
{
	op->peer_op = sid;
	op->peer_len = len;
	op->match = ++p->matches;
	op->state = OPS_RUN;
	tw__eng_hdr h = { .type = TW_ENG_CTS,
		.status = len != op->len ? TW_ETRUNC : TW_OK,
		.a = sid,
		.b = op->id,
		.c = op->match };
	if (tw__eng_peer_queue(p, &h, NULL) != TW_OK)
		tw__eng_peer_fail(p, TW_ENOMEM);
	else if (len == 0 && op->len == 0)
		tw__eng_op_done(op);
}

int tw__eng_match_rts(eng_peer *p, uint64_t sid, uint64_t tag, uint64_t len)
{
	for (size_t i = 0; i < p->nrecvs; i++) {
		eng_op *op = p->recvs[i];
		if (op->tag != tag)
			continue;
		memmove(p->recvs + i, p->recvs + i + 1,
		    (p->nrecvs - i - 1) * sizeof(*p->recvs));
		p->nrecvs--;
		match_pair(p, op, sid, len);
		return TW_OK;
	}
	if (p->nrts >= ENG_RTS_MAX)
		return TW_EPROTO;
	eng_rts *r = malloc(sizeof(*r));
	if (r == NULL)
		return TW_ENOMEM;
	*r = (eng_rts) { .sid = sid, .tag = tag, .len = len };
	if (p->rts_tail != NULL)
		p->rts_tail->next = r;
	else
		p->rts = r;
	p->rts_tail = r;
	p->nrts++;
	return TW_OK;
}

// A send of the peer that gave up: out of the waiting list, or its
// matched receive waits again.
void tw__eng_cancel_rts(eng_peer *p, uint64_t sid, int why)
{
	eng_rts *prev = NULL;
	for (eng_rts *r = p->rts; r != NULL; prev = r, r = r->next) {
		if (r->sid != sid)
			continue;
		if (prev != NULL)
			prev->next = r->next;
		else
			p->rts = r->next;
		if (p->rts_tail == r)
			p->rts_tail = prev;
		p->nrts--;
		free(r);
		return;
	}
	tw_engine *e = p->e;
	eng_op *op, *tmp;
	HASH_ITER(hh, e->ops, op, tmp)
	{
		if (op->x->p != p || op->kind != OP_RECV
		    || op->state != OPS_RUN || op->peer_op != sid)
			continue;
		if (why == TW_ETRUNC) {
			tw__eng_op_abandon(op, TW_ETRUNC);
			return;
		}
		// First again among the receives of its tag.
		eng_op **grown = p->recvs;
		if (p->nrecvs == p->caprecvs) {
			size_t cap = p->caprecvs ? 2 * p->caprecvs : 16;
			grown = realloc(p->recvs, cap * sizeof(*grown));
			if (grown == NULL) {
				tw__eng_op_fail(op, TW_ENOMEM);
				return;
			}
			p->recvs = grown;
			p->caprecvs = cap;
		}
		memmove(p->recvs + 1, p->recvs, p->nrecvs * sizeof(*p->recvs));
		p->recvs[0] = op;
		p->nrecvs++;
		op->state = OPS_WAIT;
		op->done = 0;
		op->match = 0;
		return;
	}
}

void tw__eng_op_start(eng_op *op)
{
	tw_xfer *x = op->x;
	tw_engine *e = x->e;
	eng_peer *p = x->p;
	x->pending++;
	op->state = OPS_WAIT; // so that a failure below finishes it
	op->issued = op->done = 0;
	op->match = op->peer_op = 0;
	eng_reg *r = tw__eng_reg_find(e, op->mem_id);
	if (r == NULL || op->off > r->len || op->len > r->len - op->off) {
		tw__eng_op_fail(op, TW_EINVAL);
		return;
	}
	r->users++;
	op->reg = r;
	op->ptr = r->base + op->off;
	op->id = ++e->next_op_id;
	HASH_ADD(hh, e->ops, id, sizeof(op->id), op);
	if (p->state == PEER_FAILED) {
		tw__eng_op_fail(op, p->status);
		return;
	}
	switch (op->kind) {
	case OP_WRITE:
	case OP_READ: {
		eng_rmem *m = tw__eng_rmem_find(p, op->rmem_id);
		if (m == NULL) {
			tw__eng_op_fail(op, TW_EINVAL);
			return;
		}
		op->rid = m->rid;
		op->rkey = m->key;
		op->state = OPS_RUN;
		if (op->len == 0)
			tw__eng_op_done(op);
		else
			tw__eng_peer_activate(p, op);
		return;
	}
	case OP_SEND: {
		tw__eng_hdr h = { .type = TW_ENG_RTS,
			.a = op->id,
			.b = op->tag,
			.c = op->len };
		if (tw__eng_peer_queue(p, &h, NULL) != TW_OK)
			tw__eng_op_fail(op, TW_ENOMEM);
		return;
	}
	default: { // OP_RECV
		eng_rts *prev = NULL;
		for (eng_rts *q = p->rts; q != NULL; prev = q, q = q->next) {
			if (q->tag != op->tag)
				continue;
			if (prev != NULL)
				prev->next = q->next;
			else
				p->rts = q->next;
			if (p->rts_tail == q)
				p->rts_tail = prev;
			p->nrts--;
			uint64_t sid = q->sid, len = q->len;
			free(q);
			match_pair(p, op, sid, len);
			return;
		}
		if (p->nrecvs == p->caprecvs) {
			size_t cap = p->caprecvs ? 2 * p->caprecvs : 16;
			eng_op **grown
			    = realloc(p->recvs, cap * sizeof(*grown));
			if (grown == NULL) {
				tw__eng_op_fail(op, TW_ENOMEM);
				return;
			}
			p->recvs = grown;
			p->caprecvs = cap;
		}
		p->recvs[p->nrecvs++] = op;
		return;
	}
	}
}

void tw__eng_fail_peer_xfers(eng_peer *p, int status)
{
	for (tw_xfer *x = p->e->all; x != NULL; x = x->next_all)
		if (x->p == p && x->state == X_RUN)
			xfer_fail(x, status);
}

// --- deadlines -----------------------------------------------------------------

static void *timer_main(void *arg)
{
	tw_engine *e = arg;
	pthread_mutex_lock(&e->mtx);
	while (!e->timer_stop) {
		int64_t now = tw__now_ns(), next = TW_FOREVER;
		for (tw_xfer *x = e->all; x != NULL; x = x->next_all) {
			if (x->state != X_RUN || x->deadline == TW_FOREVER)
				continue;
			if (x->deadline <= now)
				xfer_fail(x, TW_ETIMEDOUT);
			else if (x->deadline < next)
				next = x->deadline;
		}
		tw__cond_wait_until(&e->timer_cv, &e->mtx, next);
	}
	pthread_mutex_unlock(&e->mtx);
	return NULL;
}

// A deadline was set: the timer looks again (starting it on first use).
static int timer_kick(tw_engine *e)
{
	if (!e->timer_started) {
		if (pthread_create(&e->timer, NULL, timer_main, e) != 0)
			return TW_ESYS;
		e->timer_started = true;
	}
	pthread_cond_signal(&e->timer_cv);
	return TW_OK;
}

// --- the API ----------------------------------------------------------------------

int tw_xfer_create(
    tw_engine *e, tw_peer peer, int64_t timeout_ms, tw_xfer **out)
{
	if (e == NULL || out == NULL)
		return TW_EINVAL;
	tw_xfer *x = calloc(1, sizeof(*x));
	if (x == NULL)
		return TW_ENOMEM;
	pthread_mutex_lock(&e->mtx);
	eng_peer *p = tw__eng_peer_get(e, peer);
	if (p == NULL) {
		pthread_mutex_unlock(&e->mtx);
		free(x);
		return TW_EINVAL;
	}
	x->e = e;
	x->p = p;
	x->timeout_ms = timeout_ms;
	x->deadline = tw__deadline_ms(timeout_ms);
	x->state = X_NEW;
	x->next_all = e->all;
	if (e->all != NULL)
		e->all->prev_all = x;
	e->all = x;
	pthread_mutex_unlock(&e->mtx);
	*out = x;
	return TW_OK;
}

// Whether x takes posts now.
// A transfer whose posts are all done is finished (and queued for reap),
// but takes more posts until something reported it finished.
static bool open_for_posts(const tw_xfer *x)
{
	return (x->state == X_NEW || x->state == X_RUN || x->state == X_DONE)
	    && !x->has_note && !x->reported;
}

// A finished transfer takes a post: running again.
static void reopen(tw_xfer *x)
{
	if (x->state != X_DONE)
		return;
	done_remove(x->e, x);
	x->p->st.xfers_done--;
	x->state = X_RUN;
}

static int post(tw_xfer *x, const eng_op *tmpl)
{
	if (x == NULL)
		return TW_EINVAL;
	tw_engine *e = x->e;
	eng_op *op = malloc(sizeof(*op));
	if (op == NULL)
		return TW_ENOMEM;
	*op = *tmpl;
	op->x = x;
	pthread_mutex_lock(&e->mtx);
	int status = TW_OK;
	eng_reg *r = tw__eng_reg_find(e, op->mem_id);
	if (!open_for_posts(x) || r == NULL || op->off > r->len
	    || op->len > r->len - op->off
	    || ((op->kind == OP_WRITE || op->kind == OP_READ)
	        && tw__eng_rmem_find(x->p, op->rmem_id) == NULL)) {
		status = TW_EINVAL;
	} else if (x->nops == x->capops) {
		size_t cap = x->capops ? 2 * x->capops : 8;
		eng_op **grown = realloc(x->ops, cap * sizeof(*grown));
		if (grown == NULL) {
			status = TW_ENOMEM;
		} else {
			x->ops = grown;
			x->capops = cap;
		}
	}
	if (status != TW_OK) {
		pthread_mutex_unlock(&e->mtx);
		free(op);
		return status;
	}
	x->ops[x->nops++] = op;
	reopen(x);
	if (x->state == X_NEW) {
		x->state = X_RUN;
		if (x->deadline != TW_FOREVER && timer_kick(e) != TW_OK) {
			xfer_fail(x, TW_ESYS);
			pthread_mutex_unlock(&e->mtx);
			return TW_OK;
		}
	}
	tw__eng_op_start(op);
	pthread_mutex_unlock(&e->mtx);
	return TW_OK;
}

int tw_xfer_post_send(
    tw_xfer *x, uint64_t mem_id, size_t off, size_t len, uint64_t tag)
{
	eng_op t = { .kind = OP_SEND,
		.mem_id = mem_id,
		.off = off,
		.len = len,
		.tag = tag };
	return post(x, &t);
}

int tw_xfer_post_recv(
    tw_xfer *x, uint64_t mem_id, size_t off, size_t len, uint64_t tag)
{
	eng_op t = { .kind = OP_RECV,
		.mem_id = mem_id,
		.off = off,
		.len = len,
		.tag = tag };
	return post(x, &t);
}

int tw_xfer_post_write(tw_xfer *x, uint64_t mem_id, size_t off,
    uint64_t rmem_id, size_t roff, size_t len)
{
	eng_op t = { .kind = OP_WRITE,
		.mem_id = mem_id,
		.off = off,
		.len = len,
		.rmem_id = rmem_id,
		.roff = roff };
	return post(x, &t);
}

int tw_xfer_post_read(tw_xfer *x, uint64_t mem_id, size_t off,
    uint64_t rmem_id, size_t roff, size_t len)
{
	eng_op t = { .kind = OP_READ,
		.mem_id = mem_id,
		.off = off,
		.len = len,
		.rmem_id = rmem_id,
		.roff = roff };
	return post(x, &t);
}

int tw_xfer_notify(tw_xfer *x, const void *msg, size_t len)
{
	if (x == NULL || (msg == NULL && len > 0))
		return TW_EINVAL;
	tw_engine *e = x->e;
	void *copy = malloc(len > 0 ? len : 1);
	if (copy == NULL)
		return TW_ENOMEM;
	if (len > 0)
		memcpy(copy, msg, len);
	pthread_mutex_lock(&e->mtx);
	int status = TW_OK;
	if (!open_for_posts(x))
		status = TW_EINVAL;
	else if (len > x->p->max_notify)
		status = TW_ETOOBIG;
	if (status != TW_OK) {
		pthread_mutex_unlock(&e->mtx);
		free(copy);
		return status;
	}
	x->note = copy;
	x->note_len = len;
	x->has_note = true;
	if (x->state == X_DONE) {
		// Finished before its notification came: it goes now.
		if (queue_note(x->p, x->note, x->note_len) != TW_OK) {
			x->state = X_FAILED;
			x->status = TW_ENOMEM;
		}
	} else if (x->state == X_NEW) {
		x->state = X_RUN;
		xfer_complete(x);
	}
	pthread_mutex_unlock(&e->mtx);
	return TW_OK;
}

// What test reports (mtx held).
static int test_locked(tw_xfer *x)
{
	switch (x->state) {
	case X_NEW:
		x->reported = true;
		return 1;
	case X_DONE:
		x->reported = true;
		return 1;
	case X_FAILED:
		x->reported = true;
		return x->status;
	default:
		return 0;
	}
}

int tw_xfer_test(tw_xfer *x)
{
	if (x == NULL)
		return TW_EINVAL;
	pthread_mutex_lock(&x->e->mtx);
	int r = test_locked(x);
	pthread_mutex_unlock(&x->e->mtx);
	return r;
}

int tw_xfer_wait(tw_xfer *x, int64_t timeout_ms)
{
	if (x == NULL)
		return TW_EINVAL;
	tw_engine *e = x->e;
	int64_t deadline = tw__deadline_ms(timeout_ms);
	pthread_mutex_lock(&e->mtx);
	int r;
	while ((r = test_locked(x)) == 0
	    && tw__cond_wait_until(&e->cv, &e->mtx, deadline) != ETIMEDOUT)
		;
	if (r == 0)
		r = test_locked(x);
	pthread_mutex_unlock(&e->mtx);
	return r == 1 ? TW_OK : r == 0 ? TW_EAGAIN : r;
}

int tw_xfer_repost(tw_xfer *x)
{
	if (x == NULL)
		return TW_EINVAL;
	tw_engine *e = x->e;
	pthread_mutex_lock(&e->mtx);
	if (x->state == X_RUN) {
		pthread_mutex_unlock(&e->mtx);
		return TW_EAGAIN;
	}
	done_remove(e, x);
	// Copies of the last run's data may still be under way (a reply that
	// arrived as it failed): none may land in the new one.
	for (size_t i = 0; i < x->nops; i++)
		while (x->ops[i]->io > 0)
			pthread_cond_wait(&e->io_cv, &e->mtx);
	x->reported = false;
	x->deadline = tw__deadline_ms(x->timeout_ms);
	x->state = X_RUN;
	x->status = TW_OK;
	x->pending = 0;
	if (x->deadline != TW_FOREVER && timer_kick(e) != TW_OK)
		xfer_fail(x, TW_ESYS);
	for (size_t i = 0; i < x->nops && x->state == X_RUN; i++)
		tw__eng_op_start(x->ops[i]);
	if (x->nops == 0 && x->state == X_RUN)
		xfer_complete(x);
	pthread_mutex_unlock(&e->mtx);
	return TW_OK;
}

void tw_xfer_free(tw_xfer *x)
{
	if (x == NULL)
		return;
	tw_engine *e = x->e;
	pthread_mutex_lock(&e->mtx);
	if (x->state == X_RUN)
		xfer_fail(x, TW_ECLOSED);
	done_remove(e, x);
	// A copy into or out of its memory that the engine's threads began
	// ends first; none starts later, since no frame finds its ops.
	for (size_t i = 0; i < x->nops; i++)
		while (x->ops[i]->io > 0)
			pthread_cond_wait(&e->io_cv, &e->mtx);
	if (x->prev_all != NULL)
		x->prev_all->next_all = x->next_all;
	else
		e->all = x->next_all;
	if (x->next_all != NULL)
		x->next_all->prev_all = x->prev_all;
	tw__eng_peer_unref(x->p);
	pthread_mutex_unlock(&e->mtx);
	for (size_t i = 0; i < x->nops; i++)
		free(x->ops[i]);
	free(x->ops);
	free(x->note);
	free(x);
}

// --- finished transfers and notifications -------------------------------------

int tw_engine_fd(tw_engine *e)
{
	return e == NULL ? -1 : e->efd;
}

int tw_engine_reap(tw_engine *e, tw_xfer **done, size_t cap, size_t *n)
{
	if (e == NULL || n == NULL || (done == NULL && cap > 0))
		return TW_EINVAL;
	pthread_mutex_lock(&e->mtx);
	size_t k = 0;
	while (k < cap && e->done_head != NULL) {
		tw_xfer *x = e->done_head;
		done_remove(e, x);
		x->reported = true;
		done[k++] = x;
	}
	pthread_mutex_unlock(&e->mtx);
	*n = k;
	return TW_OK;
}

int tw_engine_notify(tw_engine *e, tw_peer peer, const void *msg, size_t len)
{
	if (e == NULL || (msg == NULL && len > 0))
		return TW_EINVAL;
	pthread_mutex_lock(&e->mtx);
	eng_peer *p = tw__eng_peer_get(e, peer);
	int status = TW_OK;
	if (p == NULL)
		status = TW_EINVAL;
	else if (p->state == PEER_FAILED)
		status = TW_EPEER;
	else if (len > p->max_notify)
		status = TW_ETOOBIG;
	else
		status = queue_note(p, msg, len);
	if (p != NULL)
		tw__eng_peer_unref(p);
	pthread_mutex_unlock(&e->mtx);
	return status;
}

int tw_notify_recv(
    tw_engine *e, tw_peer *peer, tw_buf *msg, int64_t timeout_ms)
{
	if (e == NULL || msg == NULL)
		return TW_EINVAL;
	int64_t deadline = tw__deadline_ms(timeout_ms);
	pthread_mutex_lock(&e->mtx);
	while (e->notes == NULL
	    && tw__cond_wait_until(&e->cv, &e->mtx, deadline) != ETIMEDOUT)
		;
	eng_note *n = e->notes;
	if (n != NULL) {
		e->notes = n->next;
		if (e->notes == NULL)
			e->notes_tail = NULL;
		tw__eng_efd_update(e);
	}
	pthread_mutex_unlock(&e->mtx);
	if (n == NULL)
		return TW_ETIMEDOUT;
	if (peer != NULL)
		*peer = n->from;
	msg->data = n->data;
	msg->len = n->len;
	free(n);
	return TW_OK;
}

void tw__eng_notes_free(tw_engine *e)
{
	while (e->notes != NULL) {
		eng_note *n = e->notes;
		e->notes = n->next;
		free(n->data);
		free(n);
	}
	e->notes_tail = NULL;
}

void tw__eng_xfers_shutdown(tw_engine *e)
{
	pthread_mutex_lock(&e->mtx);
	e->timer_stop = true;
	pthread_cond_signal(&e->timer_cv);
	bool started = e->timer_started;
	pthread_mutex_unlock(&e->mtx);
	if (started)
		pthread_join(e->timer, NULL);
	while (e->all != NULL)
		tw_xfer_free(e->all);
}

int tw_engine_stats(tw_engine *e, tw_peer peer, tw_xfer_stats *out)
{
	if (e == NULL || out == NULL)
		return TW_EINVAL;
	pthread_mutex_lock(&e->mtx);
	eng_peer *p = tw__eng_peer_get(e, peer);
	if (p != NULL) {
		*out = p->st;
		tw__eng_peer_unref(p);
	}
	pthread_mutex_unlock(&e->mtx);
	return p != NULL ? TW_OK : TW_EINVAL;
}
