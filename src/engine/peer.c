// A peer: the two-party link to another engine, the thread that sends on
// it and the thread that receives and handles every frame (wire.h).

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/sync.h"
#include "engine/eng.h"
#include "link/link_int.h"

#define TAG "e"

// How long a disconnect waits for its last frames to reach the peer.
#define DRAIN_WAIT_NS INT64_C(2000000000)

int tw__eng_peer_queue(eng_peer *p, const tw__eng_hdr *h, void *owned)
{
	if (p->state == PEER_FAILED) {
		free(owned);
		return TW_OK; // nobody will read it
	}
	eng_out *o = calloc(1, sizeof(*o));
	if (o == NULL)
		return TW_ENOMEM;
	o->h = *h;
	o->owned = owned;
	if (p->out_tail != NULL)
		p->out_tail->next = o;
	else
		p->out = o;
	p->out_tail = o;
	pthread_cond_signal(&p->txcv);
	return TW_OK;
}

void tw__eng_peer_activate(eng_peer *p, eng_op *op)
{
	if (op->active)
		return;
	op->active = true;
	op->next_active = NULL;
	if (p->active_tail != NULL)
		p->active_tail->next_active = op;
	else
		p->active = op;
	p->active_tail = op;
	pthread_cond_signal(&p->txcv);
}

void tw__eng_peer_deactivate(eng_peer *p, eng_op *op)
{
	if (!op->active)
		return;
	eng_op *prev = NULL;
	for (eng_op *o = p->active; o != op; o = o->next_active)
		prev = o;
	if (prev != NULL)
		prev->next_active = op->next_active;
	else
		p->active = op->next_active;
	if (p->active_tail == op)
		p->active_tail = prev;
	op->active = false;
}

void tw__eng_peer_fail(eng_peer *p, int status)
{
	if (p->state == PEER_FAILED)
		return;
	p->state = PEER_FAILED;
	p->status = status;
	tw__eng_fail_peer_xfers(p, status);
	p->stop = true;
	pthread_cond_signal(&p->txcv);
	pthread_cond_broadcast(&p->e->cv);
}

static void out_free(tw_engine *e, eng_out *o)
{
	if (o->reg != NULL)
		tw__eng_reg_unref(e, o->reg);
	free(o->owned);
	free(o);
}

// --- sending ---------------------------------------------------------------------

static int send_hdr(eng_peer *p, const tw__eng_hdr *h)
{
	unsigned char b[TW_ENG_HDR_SIZE];
	tw__eng_hdr_encode(h, b);
	return tw_send(p->link, p->other, TAG, b, sizeof(b));
}

// Sends a queued frame; mtx held, released while sending.
static int send_out(eng_peer *p, eng_out *o)
{
	tw_engine *e = p->e;
	const void *data = o->owned;
	if (o->reg != NULL) {
		if (o->reg->dead) {
			// Deregistered while the reply waited: not a byte of it.
			o->h.status = TW_EINVAL;
			o->h.len = 0;
		} else {
			data = o->reg->base + o->reg_off;
		}
	}
	pthread_mutex_unlock(&e->mtx);
	int status = send_hdr(p, &o->h);
	if (status == TW_OK && tw__eng_hdr_has_data(&o->h))
		status = tw_send(p->link, p->other, TAG, data, o->h.len);
	pthread_mutex_lock(&e->mtx);
	if (status == TW_OK && o->reg != NULL && o->h.status == TW_OK)
		p->st.bytes_sent += o->h.len;
	out_free(e, o);
	return status;
}

// Issues the next chunk of the oldest active op; mtx held, released while
// sending.
static int send_chunk(eng_peer *p)
{
	tw_engine *e = p->e;
	eng_op *op = p->active;
	size_t off = op->issued;
	size_t n = op->len - off;
	if (n > (size_t)e->chunk)
		n = (size_t)e->chunk;
	op->issued += n;
	p->inflight++;
	tw__eng_peer_deactivate(p, op);
	if (op->issued < op->len)
		tw__eng_peer_activate(p, op); // round robin between ops
	tw__eng_hdr h = { .len = (uint32_t)n };
	const unsigned char *data = NULL;
	if (op->kind == OP_WRITE || op->kind == OP_READ) {
		h.type = op->kind == OP_WRITE ? TW_ENG_WRITE : TW_ENG_READ;
		h.a = op->id;
		h.b = op->rid;
		h.c = op->rkey;
		h.d = op->roff + off;
	} else { // a send, matched
		h.type = TW_ENG_SDATA;
		h.a = op->peer_op;
		h.b = op->match;
		h.c = off;
		h.d = op->id;
	}
	eng_reg *r = NULL;
	if (op->kind != OP_READ) {
		data = op->ptr + off;
		r = op->reg;
		r->refs++;
		op->io++;
	}
	pthread_mutex_unlock(&e->mtx);
	int status = send_hdr(p, &h);
	if (status == TW_OK && data != NULL)
		status = tw_send(p->link, p->other, TAG, data, n);
	pthread_mutex_lock(&e->mtx);
	if (data != NULL) {
		op->io--;
		tw__eng_reg_unref(e, r);
	}
	return status;
}

static void *tx_main(void *arg)
{
	eng_peer *p = arg;
	tw_engine *e = p->e;
	pthread_mutex_lock(&e->mtx);
	while (!p->stop || (p->drain && p->out != NULL)) {
		int status;
		if (p->out != NULL) {
			eng_out *o = p->out;
			p->out = o->next;
			if (p->out == NULL)
				p->out_tail = NULL;
			status = send_out(p, o);
		} else if (p->stop) {
			break;
		} else if (p->active != NULL
		    && p->inflight < p->max_inflight) {
			status = send_chunk(p);
		} else {
			pthread_cond_wait(&p->txcv, &e->mtx);
			continue;
		}
		if (status != TW_OK) {
			tw__eng_peer_fail(
			    p, status == TW_ECLOSED ? TW_ECLOSED : TW_EPEER);
			break;
		}
	}
	pthread_mutex_unlock(&e->mtx);
	return NULL;
}

// --- receiving -------------------------------------------------------------------

// Receives the data message of a frame into dst[0..n).  TW_OK, or an error
// that fails the peer (a message of another length is a protocol error).
static int recv_data(eng_peer *p, void *dst, size_t n)
{
	size_t got = 0;
	int status = tw_recv_into(p->link, p->other, TAG, dst, n, &got);
	if (status == TW_ETRUNC)
		return TW_EPROTO;
	if (status == TW_OK && got != n)
		return TW_EPROTO;
	return status;
}

// Drops the data message of a frame that nothing takes.
static int skip_data(eng_peer *p, size_t n)
{
	tw_buf b = { 0 };
	int status = tw_recv(p->link, p->other, TAG, &b);
	if (status == TW_OK && b.len != n)
		status = TW_EPROTO;
	tw_buf_free(&b);
	return status;
}

// The running op `id` of kind `kind`, or NULL.  mtx held.
static eng_op *find_op(tw_engine *e, uint64_t id, int kind)
{
	eng_op *op = NULL;
	HASH_FIND(hh, e->ops, &id, sizeof(id), op);
	return op != NULL && op->kind == kind && op->x->p != NULL ? op : NULL;
}

// A reply that frees a chunk's window slot.  mtx held.
static int answered(eng_peer *p)
{
	if (p->inflight == 0)
		return TW_EPROTO;
	p->inflight--;
	pthread_cond_signal(&p->txcv);
	return TW_OK;
}

static int on_write(eng_peer *p, const tw__eng_hdr *h)
{
	tw_engine *e = p->e;
	pthread_mutex_lock(&e->mtx);
	eng_reg *r
	    = tw__eng_reg_check(e, h->b, h->c, h->d, h->len, TW_ACCESS_WRITE);
	pthread_mutex_unlock(&e->mtx);
	int status = r != NULL ? recv_data(p, r->base + h->d, h->len)
	                       : skip_data(p, h->len);
	pthread_mutex_lock(&e->mtx);
	if (r != NULL) {
		tw__eng_reg_unref(e, r);
		if (status == TW_OK)
			p->st.bytes_recv += h->len;
	}
	if (status == TW_OK) {
		tw__eng_hdr a = { .type = TW_ENG_WACK,
			.a = h->a,
			.status = r != NULL ? TW_OK : TW_EINVAL,
			.len = r != NULL ? h->len : 0 };
		status = tw__eng_peer_queue(p, &a, NULL);
	}
	pthread_mutex_unlock(&e->mtx);
	return status;
}

static int on_wack(eng_peer *p, const tw__eng_hdr *h)
{
	int status = answered(p);
	eng_op *op = find_op(p->e, h->a, OP_WRITE);
	if (status != TW_OK || op == NULL || op->x->p != p)
		return status;
	if (h->status != TW_OK) {
		tw__eng_op_fail(op, h->status);
		return TW_OK;
	}
	if (h->len > op->issued - op->done)
		return TW_EPROTO;
	op->done += h->len;
	if (op->done == op->len)
		tw__eng_op_done(op);
	return TW_OK;
}

static int on_read(eng_peer *p, const tw__eng_hdr *h)
{
	tw_engine *e = p->e;
	eng_reg *r
	    = tw__eng_reg_check(e, h->b, h->c, h->d, h->len, TW_ACCESS_READ);
	tw__eng_hdr d = { .type = TW_ENG_RDATA, .a = h->a, .b = h->d };
	if (r == NULL) {
		d.status = TW_EINVAL;
		return tw__eng_peer_queue(p, &d, NULL);
	}
	d.len = h->len;
	eng_out *o = calloc(1, sizeof(*o));
	if (o == NULL) {
		tw__eng_reg_unref(e, r);
		return TW_ENOMEM;
	}
	o->h = d;
	o->reg = r;
	o->reg_off = h->d;
	if (p->out_tail != NULL)
		p->out_tail->next = o;
	else
		p->out = o;
	p->out_tail = o;
	pthread_cond_signal(&p->txcv);
	return TW_OK;
}

static int on_rdata(eng_peer *p, const tw__eng_hdr *h)
{
	tw_engine *e = p->e;
	pthread_mutex_lock(&e->mtx);
	int status = answered(p);
	eng_op *op = find_op(e, h->a, OP_READ);
	if (op != NULL && op->x->p != p)
		op = NULL;
	if (status == TW_OK && op != NULL && h->status != TW_OK) {
		tw__eng_op_fail(op, h->status);
		op = NULL;
	}
	if (status != TW_OK || h->status != TW_OK) {
		pthread_mutex_unlock(&e->mtx);
		return status;
	}
	size_t at = 0;
	if (op != NULL) {
		// Where the bytes go: the offset the request named, which must
		// lie in what this op asked for.
		if (h->b < op->roff || h->b - op->roff > op->issued
		    || h->len > op->issued - (h->b - op->roff)) {
			pthread_mutex_unlock(&e->mtx);
			return TW_EPROTO;
		}
		at = h->b - op->roff;
		op->io++;
	}
	eng_reg *r = op != NULL ? op->reg : NULL;
	if (r != NULL)
		r->refs++;
	pthread_mutex_unlock(&e->mtx);
	status = op != NULL ? recv_data(p, op->ptr + at, h->len)
	                    : skip_data(p, h->len);
	pthread_mutex_lock(&e->mtx);
	if (op != NULL) {
		op->io--;
		tw__eng_reg_unref(e, r);
		if (status == TW_OK && op->state == OPS_RUN
		    && find_op(e, h->a, OP_READ) == op) {
			op->done += h->len;
			if (op->done == op->len)
				tw__eng_op_done(op);
		}
	}
	pthread_mutex_unlock(&e->mtx);
	return status;
}

static int on_cts(eng_peer *p, const tw__eng_hdr *h)
{
	eng_op *op = find_op(p->e, h->a, OP_SEND);
	if (op == NULL || op->x->p != p || op->state != OPS_WAIT)
		return TW_OK; // a send given up meanwhile
	if (h->status == TW_ETRUNC) {
		// The lengths differ: both fail.
		tw__eng_hdr c = { .type = TW_ENG_SCANCEL,
			.status = TW_ETRUNC,
			.a = op->id };
		int status = tw__eng_peer_queue(p, &c, NULL);
		tw__eng_op_abandon(op, TW_ETRUNC);
		return status;
	}
	if (h->status != TW_OK)
		return TW_EPROTO;
	op->peer_op = h->b;
	op->match = h->c;
	op->state = OPS_RUN;
	op->issued = op->done = 0;
	if (op->len == 0)
		tw__eng_op_done(op);
	else
		tw__eng_peer_activate(p, op);
	return TW_OK;
}

static int on_sdata(eng_peer *p, const tw__eng_hdr *h)
{
	tw_engine *e = p->e;
	pthread_mutex_lock(&e->mtx);
	eng_op *op = find_op(e, h->a, OP_RECV);
	if (op != NULL
	    && (op->x->p != p || op->state != OPS_RUN || op->match != h->b))
		op = NULL; // a stale chunk of a match given up
	if (op != NULL && (h->c > op->len || h->len > op->len - h->c)) {
		pthread_mutex_unlock(&e->mtx);
		return TW_EPROTO;
	}
	eng_reg *r = op != NULL ? op->reg : NULL;
	if (op != NULL) {
		op->io++;
		r->refs++;
	}
	pthread_mutex_unlock(&e->mtx);
	int status = op != NULL ? recv_data(p, op->ptr + h->c, h->len)
	                        : skip_data(p, h->len);
	pthread_mutex_lock(&e->mtx);
	bool took = false;
	if (op != NULL) {
		op->io--;
		tw__eng_reg_unref(e, r);
		if (status == TW_OK && find_op(e, h->a, OP_RECV) == op
		    && op->state == OPS_RUN && op->match == h->b) {
			took = true;
			op->done += h->len;
			if (op->done == op->len)
				tw__eng_op_done(op);
		}
	}
	if (status == TW_OK) {
		tw__eng_hdr a = { .type = TW_ENG_SACK,
			.a = h->d,
			.b = h->b,
			.status = took ? TW_OK : TW_ECLOSED,
			.len = took ? h->len : 0 };
		status = tw__eng_peer_queue(p, &a, NULL);
	}
	pthread_mutex_unlock(&e->mtx);
	return status;
}

static int on_sack(eng_peer *p, const tw__eng_hdr *h)
{
	int status = answered(p);
	eng_op *op = find_op(p->e, h->a, OP_SEND);
	if (status != TW_OK || op == NULL || op->x->p != p
	    || op->state != OPS_RUN || op->match != h->b || h->status != TW_OK)
		return status;
	if (h->len > op->issued - op->done)
		return TW_EPROTO;
	op->done += h->len;
	if (op->done == op->len)
		tw__eng_op_done(op);
	return TW_OK;
}

static int on_rcancel(eng_peer *p, const tw__eng_hdr *h)
{
	eng_op *op = find_op(p->e, h->a, OP_SEND);
	if (op == NULL || op->x->p != p || op->state != OPS_RUN
	    || op->match != h->b)
		return TW_OK;
	// The receiver gave up its receive: this send waits for the next one
	// of its tag, from its first byte.
	tw__eng_peer_deactivate(p, op);
	op->state = OPS_WAIT;
	op->issued = op->done = 0;
	op->match = 0;
	return TW_OK;
}

static int on_notify(eng_peer *p, const tw__eng_hdr *h)
{
	tw_engine *e = p->e;
	if (h->len > (uint64_t)e->max_msg)
		return TW_EPROTO;
	eng_note *n = calloc(1, sizeof(*n));
	void *data = malloc(h->len > 0 ? h->len : 1);
	int status = n != NULL && data != NULL ? recv_data(p, data, h->len)
	                                       : TW_ENOMEM;
	if (status != TW_OK) {
		free(n);
		free(data);
		return status;
	}
	n->from = p->id;
	n->data = data;
	n->len = h->len;
	pthread_mutex_lock(&e->mtx);
	if (p->gone) {
		free(n->data);
		free(n);
	} else {
		if (e->notes_tail != NULL)
			e->notes_tail->next = n;
		else
			e->notes = n;
		e->notes_tail = n;
		tw__eng_efd_update(e);
		pthread_cond_broadcast(&e->cv);
	}
	pthread_mutex_unlock(&e->mtx);
	return TW_OK;
}

// Handles one frame.  TW_OK, or an error that fails the peer.
static int on_frame(eng_peer *p, const tw__eng_hdr *h)
{
	tw_engine *e = p->e;
	switch (h->type) {
	case TW_ENG_WRITE:
		return on_write(p, h);
	case TW_ENG_RDATA:
		return on_rdata(p, h);
	case TW_ENG_SDATA:
		return on_sdata(p, h);
	case TW_ENG_NOTIFY:
		return on_notify(p, h);
	default:
		break;
	}
	int status = TW_OK;
	pthread_mutex_lock(&e->mtx);
	switch (h->type) {
	case TW_ENG_HELLO:
		if (p->state != PEER_HELLO
		    || (p->instance != 0 && p->instance != h->a)
		    || h->a == 0) {
			status = TW_EPROTO;
			break;
		}
		p->instance = h->a;
		p->max_notify = h->b;
		p->state = PEER_LIVE;
		pthread_cond_broadcast(&e->cv);
		break;
	case TW_ENG_WACK:
		status = on_wack(p, h);
		break;
	case TW_ENG_READ:
		status = on_read(p, h);
		break;
	case TW_ENG_RTS:
		status = tw__eng_match_rts(p, h->a, h->b, h->c);
		break;
	case TW_ENG_CTS:
		status = on_cts(p, h);
		break;
	case TW_ENG_SACK:
		status = on_sack(p, h);
		break;
	case TW_ENG_SCANCEL:
		tw__eng_cancel_rts(p, h->a, h->status);
		break;
	case TW_ENG_RCANCEL:
		status = on_rcancel(p, h);
		break;
	default:
		status = TW_EPROTO;
	}
	pthread_mutex_unlock(&e->mtx);
	return status;
}

static void *rx_main(void *arg)
{
	eng_peer *p = arg;
	tw_engine *e = p->e;
	int status;
	for (;;) {
		unsigned char b[TW_ENG_HDR_SIZE];
		size_t got = 0;
		status
		    = tw_recv_into(p->link, p->other, TAG, b, sizeof(b), &got);
		if (status == TW_ETRUNC)
			status = TW_EPROTO;
		if (status != TW_OK)
			break;
		tw__eng_hdr h;
		status = tw__eng_hdr_decode(b, got, &h);
		if (status == TW_OK)
			status = on_frame(p, &h);
		if (status != TW_OK)
			break;
	}
	pthread_mutex_lock(&e->mtx);
	if (p->state != PEER_FAILED) {
		if (status == TW_EPROTO)
			LOGE(e, TW_LOG_WARN,
			    "peer '%s' sent a malformed frame: dropped",
			    p->name);
		else if (status != TW_ECLOSED)
			LOGE(e, TW_LOG_INFO, "peer '%s' is gone (%s)", p->name,
			    tw_err_name(status));
		tw__eng_peer_fail(
		    p, status == TW_ECLOSED ? TW_ECLOSED : TW_EPEER);
	}
	pthread_mutex_unlock(&e->mtx);
	// A protocol error or a local failure: the link goes, so that the
	// peer hears of it.
	if (status != TW_EPEER && status != TW_ECLOSED)
		tw_link_abort(p->link);
	return NULL;
}

// --- life ---------------------------------------------------------------------------

int tw__eng_peer_start(tw_engine *e, tw_link *link, size_t other,
    const char *name, uint64_t instance, eng_peer **out)
{
	eng_peer *p = calloc(1, sizeof(*p));
	if (p == NULL)
		return TW_ENOMEM;
	p->e = e;
	p->link = link;
	p->other = other;
	snprintf(p->name, sizeof(p->name), "%s", name);
	p->instance = instance;
	p->state = PEER_HELLO;
	p->max_inflight = (uint64_t)(e->stripes * e->window);
	tw__cond_init(&p->txcv);
	pthread_mutex_lock(&e->mtx);
	eng_peer **grown = realloc(e->peers, (e->npeers + 1) * sizeof(*grown));
	if (grown == NULL) {
		pthread_mutex_unlock(&e->mtx);
		pthread_cond_destroy(&p->txcv);
		free(p);
		return TW_ENOMEM;
	}
	e->peers = grown;
	e->peers[e->npeers++] = p;
	p->id = (tw_peer)e->npeers;
	p->refs = 1; // the table's
	tw__eng_hdr h = { .type = TW_ENG_HELLO,
		.a = e->instance,
		.b = (uint64_t)e->max_msg };
	int status = tw__eng_peer_queue(p, &h, NULL);
	if (status == TW_OK && pthread_create(&p->tx, NULL, tx_main, p) != 0)
		status = TW_ESYS;
	if (status == TW_OK && pthread_create(&p->rx, NULL, rx_main, p) != 0) {
		p->stop = true;
		pthread_cond_signal(&p->txcv);
		pthread_mutex_unlock(&e->mtx);
		pthread_join(p->tx, NULL);
		pthread_mutex_lock(&e->mtx);
		status = TW_ESYS;
	}
	if (status != TW_OK) {
		// Keeps its number, unknown from now on; the link stays the
		// caller's.
		e->peers[p->id - 1] = NULL;
		p->gone = true;
		p->link = NULL;
		while (p->out != NULL) {
			eng_out *o = p->out;
			p->out = o->next;
			out_free(e, o);
		}
		pthread_mutex_unlock(&e->mtx);
		pthread_cond_destroy(&p->txcv);
		free(p);
		return status;
	}
	p->threads = true;
	pthread_mutex_unlock(&e->mtx);
	*out = p;
	return TW_OK;
}

void tw__eng_peer_stop(eng_peer *p, bool graceful)
{
	tw_engine *e = p->e;
	pthread_mutex_lock(&e->mtx);
	p->stop = true;
	pthread_cond_signal(&p->txcv);
	pthread_mutex_unlock(&e->mtx);
	if (p->threads) {
		if (graceful) {
			// The control frames queued (notifications, replies)
			// go, and reach the peer, before the link does.
			pthread_join(p->tx, NULL);
			tw__link_wait_pending_until(
			    p->link, tw__now_ns() + DRAIN_WAIT_NS);
			tw_link_abort(p->link);
		} else {
			tw_link_abort(p->link);
			pthread_join(p->tx, NULL);
		}
		pthread_join(p->rx, NULL);
		p->threads = false;
	}
	if (p->link != NULL) {
		tw_link_close(p->link);
		p->link = NULL;
	}
	pthread_mutex_lock(&e->mtx);
	while (p->out != NULL) {
		eng_out *o = p->out;
		p->out = o->next;
		out_free(e, o);
	}
	p->out_tail = NULL;
	while (p->rts != NULL) {
		eng_rts *r = p->rts;
		p->rts = r->next;
		free(r);
	}
	p->rts_tail = NULL;
	p->nrts = 0;
	pthread_mutex_unlock(&e->mtx);
}

eng_peer *tw__eng_peer_get(tw_engine *e, tw_peer id)
{
	if (id == 0 || id > e->npeers)
		return NULL;
	eng_peer *p = e->peers[id - 1];
	if (p == NULL || p->gone)
		return NULL;
	p->refs++;
	return p;
}

void tw__eng_peer_unref(eng_peer *p)
{
	if (--p->refs > 0)
		return;
	tw__eng_rmems_free(p);
	free(p->recvs);
	pthread_cond_destroy(&p->txcv);
	free(p);
}
