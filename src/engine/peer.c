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
	if (!p->hold_signal)
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
//
// The sending thread packs what is ready -- control frames, replies and
// chunks -- into one message of at most PACK_MAX bytes, small data inline,
// so that a batch of small posts or a run of acknowledgements costs one
// message, not one each.  A chunk larger than INLINE_MAX ends the pack and
// its bytes go as the next message, straight from registered memory.

#define PACK_MAX (64 * 1024)
#define INLINE_MAX (32 * 1024)
#define SLOTS_MAX 128

typedef struct slot {
	tw__eng_hdr h;
	const unsigned char *src; // the frame's data, or NULL
	eng_op *op; // held (io) while its bytes are copied, or NULL
	eng_reg *reg; // referenced while its bytes are copied, or NULL
	eng_out *o; // the queued frame, freed once sent, or NULL
} slot;

// The next chunk of the oldest active op, issued into *sl.  mtx held.
static void take_chunk(eng_peer *p, slot *sl)
{
	tw_engine *e = p->e;
	eng_op *op = p->active;
	size_t off = op->issued;
	size_t n = op->len - off;
	if (n > (size_t)e->chunk)
		n = (size_t)e->chunk;
	op->issued += n;
	p->inflight += n;
	p->inflight_n++;
	tw__eng_peer_deactivate(p, op);
	if (op->issued < op->len)
		tw__eng_peer_activate(p, op); // round robin between ops
	tw__eng_hdr h = { .len = (uint32_t)n };
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
	*sl = (slot) { .h = h };
	if (op->kind != OP_READ) {
		sl->src = op->ptr + off;
		sl->op = op;
		sl->reg = op->reg;
		sl->reg->refs++;
		op->io++;
	}
}

// A queued frame into *sl.  mtx held.
static void take_out(eng_peer *p, slot *sl)
{
	eng_out *o = p->out;
	p->out = o->next;
	if (p->out == NULL)
		p->out_tail = NULL;
	*sl = (slot) { .h = o->h, .o = o, .src = o->owned };
	if (o->reg != NULL) {
		if (o->reg->dead) {
			// Deregistered while the reply waited: not a byte of it.
			sl->h.status = TW_EINVAL; // len stays: the window's
			sl->src = NULL;
		} else {
			sl->src = o->reg->base + o->reg_off;
		}
	}
}

// Data bytes of what would be taken next (0: none), or -1: nothing.
// mtx held.
static int64_t next_size(eng_peer *p)
{
	if (p->out != NULL) {
		const eng_out *o = p->out;
		if (o->reg != NULL && o->reg->dead)
			return 0;
		return tw__eng_hdr_has_data(&o->h) ? (int64_t)o->h.len : 0;
	}
	if (p->stop || p->active == NULL)
		return -1;
	eng_op *op = p->active;
	size_t n = op->len - op->issued;
	if (n > (size_t)p->e->chunk)
		n = (size_t)p->e->chunk;
	if (p->inflight_n > 0
	    && (p->inflight + n > p->max_inflight
	        || p->inflight_n >= p->max_inflight_n))
		return -1;
	return op->kind == OP_READ ? 0 : (int64_t)n;
}

// Takes what fits one pack into sl[]; *bulk: the last one's data goes as
// its own message.  mtx held.
static size_t gather(eng_peer *p, slot *sl, bool *bulk)
{
	size_t n = 0, used = 0;
	*bulk = false;
	while (n < SLOTS_MAX) {
		int64_t d = next_size(p);
		if (d < 0)
			break;
		bool big = d > INLINE_MAX;
		size_t frame = TW_ENG_HDR_SIZE + (big ? 0 : (size_t)d);
		if (n > 0 && used + frame > PACK_MAX)
			break;
		if (p->out != NULL)
			take_out(p, &sl[n]);
		else
			take_chunk(p, &sl[n]);
		bool data = tw__eng_hdr_has_data(&sl[n].h);
		if (data && !big)
			sl[n].h.flags |= TW_ENG_F_INLINE;
		n++;
		used += frame;
		if (data && big) {
			*bulk = true;
			break;
		}
	}
	return n;
}

// Releases what the slots held, once sent (ok) or not.  mtx held.
static void release(eng_peer *p, slot *sl, size_t n, bool ok)
{
	tw_engine *e = p->e;
	for (size_t i = 0; i < n; i++) {
		if (sl[i].op != NULL)
			sl[i].op->io--;
		if (sl[i].reg != NULL)
			tw__eng_reg_unref(e, sl[i].reg);
		if (sl[i].o != NULL) {
			if (ok && sl[i].o->reg != NULL
			    && sl[i].h.status == TW_OK)
				p->st.bytes_sent += sl[i].h.len;
			out_free(e, sl[i].o);
		}
	}
}

static void *tx_main(void *arg)
{
	eng_peer *p = arg;
	tw_engine *e = p->e;
	slot *sl = malloc(SLOTS_MAX * sizeof(*sl));
	unsigned char *pack = malloc(PACK_MAX);
	pthread_mutex_lock(&e->mtx);
	if (sl == NULL || pack == NULL)
		tw__eng_peer_fail(p, TW_ENOMEM);
	while (sl != NULL && pack != NULL
	    && (!p->stop || (p->drain && p->out != NULL))) {
		bool bulk;
		size_t n = gather(p, sl, &bulk);
		if (n == 0) {
			if (p->stop)
				break;
			pthread_cond_wait(&p->txcv, &e->mtx);
			continue;
		}
		pthread_mutex_unlock(&e->mtx);
		size_t used = 0;
		for (size_t i = 0; i < n; i++) {
			tw__eng_hdr_encode(&sl[i].h, pack + used);
			used += TW_ENG_HDR_SIZE;
			if ((sl[i].h.flags & TW_ENG_F_INLINE)
			    && sl[i].h.len > 0) {
				memcpy(pack + used, sl[i].src, sl[i].h.len);
				used += sl[i].h.len;
			}
		}
		int status = tw_send(p->link, p->other, TAG, pack, used);
		if (status == TW_OK && bulk)
			status = tw_send(p->link, p->other, TAG, sl[n - 1].src,
			    sl[n - 1].h.len);
		pthread_mutex_lock(&e->mtx);
		release(p, sl, n, status == TW_OK);
		if (status != TW_OK) {
			tw__eng_peer_fail(
			    p, status == TW_ECLOSED ? TW_ECLOSED : TW_EPEER);
			break;
		}
	}
	pthread_mutex_unlock(&e->mtx);
	free(sl);
	free(pack);
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

// The running op `id` of kind `kind` of a transfer to p, or NULL.  mtx
// held.
static eng_op *find_op(eng_peer *p, uint64_t id, int kind)
{
	eng_op *op = NULL;
	HASH_FIND(hh, p->e->ops, &id, sizeof(id), op);
	return op != NULL && op->kind == kind && op->x->p == p ? op : NULL;
}

// The peer confirmed n more bytes of op (WACK, SACK).  mtx held.
static int confirmed(eng_op *op, uint64_t n)
{
	if (n > op->issued - op->done)
		return TW_EPROTO;
	op->done += n;
	if (op->done == op->len)
		tw__eng_op_done(op);
	return TW_OK;
}

// A reply to a chunk of n bytes: its part of the window comes back.  mtx
// held.
static int answered(eng_peer *p, uint64_t n)
{
	if (p->inflight_n == 0 || n > p->inflight)
		return TW_EPROTO;
	p->inflight -= n;
	p->inflight_n--;
	pthread_cond_signal(&p->txcv);
	return TW_OK;
}

// The data handlers below run with the engine mutex held.  Inline data
// (at most 32 KiB) is copied under it; bulk data is received with it
// released, the memory pinned by counts.

// Releases the mutex around the receipt of bulk data (inl == NULL).
static int copy_in(eng_peer *p, void *dst, size_t n, const unsigned char *inl)
{
	if (inl != NULL) {
		if (n > 0)
			memcpy(dst, inl, n);
		return TW_OK;
	}
	pthread_mutex_unlock(&p->e->mtx);
	int status = recv_data(p, dst, n);
	pthread_mutex_lock(&p->e->mtx);
	return status;
}

static int drop_in(eng_peer *p, size_t n, const unsigned char *inl)
{
	if (inl != NULL)
		return TW_OK;
	pthread_mutex_unlock(&p->e->mtx);
	int status = skip_data(p, n);
	pthread_mutex_lock(&p->e->mtx);
	return status;
}

static int on_write(
    eng_peer *p, const tw__eng_hdr *h, const unsigned char *inl)
{
	tw_engine *e = p->e;
	eng_reg *r
	    = tw__eng_reg_check(e, h->b, h->c, h->d, h->len, TW_ACCESS_WRITE);
	int status = r != NULL ? copy_in(p, r->base + h->d, h->len, inl)
	                       : drop_in(p, h->len, inl);
	if (r != NULL) {
		tw__eng_reg_unref(e, r);
		if (status == TW_OK)
			p->st.bytes_recv += h->len;
	}
	if (status == TW_OK) {
		tw__eng_hdr a = { .type = TW_ENG_WACK,
			.a = h->a,
			.status = r != NULL ? TW_OK : TW_EINVAL,
			.len = h->len };
		status = tw__eng_peer_queue(p, &a, NULL);
	}
	return status;
}

static int on_wack(eng_peer *p, const tw__eng_hdr *h)
{
	int status = answered(p, h->len);
	eng_op *op = find_op(p, h->a, OP_WRITE);
	if (status != TW_OK || op == NULL)
		return status;
	if (h->status != TW_OK) {
		tw__eng_op_fail(op, h->status);
		return TW_OK;
	}
	return confirmed(op, h->len);
}

static int on_read(eng_peer *p, const tw__eng_hdr *h)
{
	tw_engine *e = p->e;
	eng_reg *r
	    = tw__eng_reg_check(e, h->b, h->c, h->d, h->len, TW_ACCESS_READ);
	tw__eng_hdr d
	    = { .type = TW_ENG_RDATA, .a = h->a, .b = h->d, .len = h->len };
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

static int on_rdata(
    eng_peer *p, const tw__eng_hdr *h, const unsigned char *inl)
{
	tw_engine *e = p->e;
	int status = answered(p, h->len);
	eng_op *op = find_op(p, h->a, OP_READ);
	if (status == TW_OK && op != NULL && h->status != TW_OK) {
		tw__eng_op_fail(op, h->status);
		op = NULL;
	}
	if (status != TW_OK || h->status != TW_OK)
		return status;
	size_t at = 0;
	if (op != NULL) {
		// Where the bytes go: the offset the request named, which must
		// lie in what this op asked for.
		if (h->b < op->roff || h->b - op->roff > op->issued
		    || h->len > op->issued - (h->b - op->roff))
			return TW_EPROTO;
		at = h->b - op->roff;
		op->io++;
	}
	eng_reg *r = op != NULL ? op->reg : NULL;
	if (r != NULL)
		r->refs++;
	status = op != NULL ? copy_in(p, op->ptr + at, h->len, inl)
	                    : drop_in(p, h->len, inl);
	if (op != NULL) {
		op->io--;
		tw__eng_reg_unref(e, r);
		if (status == TW_OK && op->state == OPS_RUN
		    && find_op(p, h->a, OP_READ) == op) {
			op->done += h->len;
			if (op->done == op->len)
				tw__eng_op_done(op);
		}
	}
	return status;
}

static int on_cts(eng_peer *p, const tw__eng_hdr *h)
{
	eng_op *op = find_op(p, h->a, OP_SEND);
	if (op == NULL || op->state != OPS_WAIT)
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

static int on_sdata(
    eng_peer *p, const tw__eng_hdr *h, const unsigned char *inl)
{
	tw_engine *e = p->e;
	eng_op *op = find_op(p, h->a, OP_RECV);
	if (op != NULL && (op->state != OPS_RUN || op->match != h->b))
		op = NULL; // a stale chunk of a match given up
	if (op != NULL && (h->c > op->len || h->len > op->len - h->c))
		return TW_EPROTO;
	eng_reg *r = op != NULL ? op->reg : NULL;
	if (op != NULL) {
		op->io++;
		r->refs++;
	}
	int status = op != NULL ? copy_in(p, op->ptr + h->c, h->len, inl)
	                        : drop_in(p, h->len, inl);
	bool took = false;
	if (op != NULL) {
		op->io--;
		tw__eng_reg_unref(e, r);
		if (status == TW_OK && find_op(p, h->a, OP_RECV) == op
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
			.len = h->len };
		status = tw__eng_peer_queue(p, &a, NULL);
	}
	return status;
}

static int on_sack(eng_peer *p, const tw__eng_hdr *h)
{
	int status = answered(p, h->len);
	eng_op *op = find_op(p, h->a, OP_SEND);
	if (status != TW_OK || op == NULL || op->state != OPS_RUN
	    || op->match != h->b || h->status != TW_OK)
		return status;
	return confirmed(op, h->len);
}

static int on_rcancel(eng_peer *p, const tw__eng_hdr *h)
{
	eng_op *op = find_op(p, h->a, OP_SEND);
	if (op == NULL || op->state != OPS_RUN || op->match != h->b)
		return TW_OK;
	// The receiver gave up its receive: this send waits for the next one
	// of its tag, from its first byte.
	tw__eng_peer_deactivate(p, op);
	op->state = OPS_WAIT;
	op->issued = op->done = 0;
	op->match = 0;
	return TW_OK;
}

static int on_notify(
    eng_peer *p, const tw__eng_hdr *h, const unsigned char *inl)
{
	tw_engine *e = p->e;
	if (h->len > (uint64_t)e->max_msg)
		return TW_EPROTO;
	eng_note *n = calloc(1, sizeof(*n));
	void *data = malloc(h->len > 0 ? h->len : 1);
	int status = n != NULL && data != NULL ? copy_in(p, data, h->len, inl)
	                                       : TW_ENOMEM;
	if (status != TW_OK) {
		free(n);
		free(data);
		return status;
	}
	n->from = p->id;
	n->data = data;
	n->len = h->len;
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
	return TW_OK;
}

// Handles one frame, the engine mutex held.  TW_OK, or an error that
// fails the peer.
static int on_frame(
    eng_peer *p, const tw__eng_hdr *h, const unsigned char *inl)
{
	tw_engine *e = p->e;
	int status = TW_OK;
	switch (h->type) {
	case TW_ENG_WRITE:
		return on_write(p, h, inl);
	case TW_ENG_RDATA:
		return on_rdata(p, h, inl);
	case TW_ENG_SDATA:
		return on_sdata(p, h, inl);
	case TW_ENG_NOTIFY:
		return on_notify(p, h, inl);
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
	return status;
}

// Handles the frames of one pack (wire.h).  TW_OK, or an error that fails
// the peer.
static int on_pack(eng_peer *p, const unsigned char *b, size_t n)
{
	size_t at = 0;
	if (n == 0)
		return TW_EPROTO;
	tw_engine *e = p->e;
	int status;
	pthread_mutex_lock(&e->mtx);
	// The sending thread hears of the replies once, at the end.
	p->hold_signal = true;
	for (;;) {
		tw__eng_hdr h;
		const unsigned char *inl;
		status = tw__eng_pack_next(b, n, &at, &h, &inl);
		if (status == TW_EAGAIN) {
			status = TW_OK;
			break;
		}
		if (status == TW_OK)
			status = on_frame(p, &h, inl);
		if (status != TW_OK)
			break;
	}
	p->hold_signal = false;
	if (p->out != NULL || p->active != NULL)
		pthread_cond_signal(&p->txcv);
	pthread_mutex_unlock(&e->mtx);
	return status;
}

static void *rx_main(void *arg)
{
	eng_peer *p = arg;
	tw_engine *e = p->e;
	int status;
	for (;;) {
		tw_buf m = { 0 };
		status = tw_recv(p->link, p->other, TAG, &m);
		if (status != TW_OK)
			break;
		status = on_pack(p, m.data, m.len);
		tw_buf_free(&m);
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
	p->max_inflight = (uint64_t)(e->stripes * e->window * e->chunk);
	p->max_inflight_n = (uint64_t)(e->stripes * e->window * 64);
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
