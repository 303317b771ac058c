// Messages longer than a frame: reassembly from chunks, and delivery in
// order.
//
// Design notes.  A message longer than TW_TCP_FRAME_MAX is announced on
// the peer's main connection by a STRIPED frame, which takes the message's
// place in the order of its link, and its bytes travel as CHUNK frames of
// at most TW_TCP_FRAME_MAX bytes, on the main connection alone or spread
// over the main connection and its stripes (TW_OPT_STRIPES > 1).  Streams
// are independent, so chunks may arrive before or after the announcement
// and in any order: whichever comes first makes the entry, whose buffer is
// the one the application receives, and every chunk is read straight into
// its place.
//
// Order.  Once a link has an announced message that is not complete, the
// messages that follow it on that link wait in the channel's held list
// behind it, and the list is delivered from its head as far as it is
// complete.  Other links are not held up.  The main connection's acks
// stop short of the oldest incomplete announcement, so that
// tw_link_wait_pending still means delivered, and move past it before the
// messages it held back are delivered, so that the application never has
// a message that its side has not acknowledged yet.
//
// Posted receives.  An application thread that waits in tw_recv_into
// reads the main connection itself (tw__tcp_conn_poll), and says what it
// waits for (tcp_post).  A striped message of that key that it reads the
// announcement or a chunk of, that fits its buffer, and that is next in
// line (the head of the held list, with nothing of that key in the
// mailbox) is assembled in that buffer instead of memory of its own: what
// arrived of it already moves in ("adopted"), and the copy of the whole
// message into the application's memory is saved.  Only the poster reads
// from a socket into that buffer, while it holds the main connection's
// reader role; a chunk that another connection brings meanwhile (a
// stripe) is read into memory of its own ("strays") and copied in under
// the mutex once it is whole.  The poster keeps the role until its
// receive's deadline, asleep on the socket when nothing comes.  When it
// lets go before the message is complete (its wait ended), the message
// moves back out into memory of its own (tw__tcp_sx_unpost), under the
// mutex, so that no stray reaches the buffer later, and arrives through
// the mailbox as any other.  A message completed in place counts as taken
// at once, for credit.
//
// Giving up.  A sender whose link is aborted between two chunks sends
// CANCEL: what arrived of the message is dropped (its cost returns as
// credit), and chunks of it still on their way over other connections are
// recognised by id and skipped.
//
// Bounds.  A chunk can make an entry before its announcement, so entries
// are bounded per peer (count) and by the link's largest message (size),
// and the bytes a chunk claims must fit its entry; a sender within its
// credit never comes near either.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/bufpool.h"
#include "core/names.h"
#include "transport/tcp/tcp.h"

// Entries (announced or not) a peer may have open at once.
#define SX_ENTRIES_MAX 256
// Recently cancelled ids remembered, to skip their late chunks.
#define SX_CANCELLED 64

_Atomic uint64_t tw__tcp_rx_placed, tw__tcp_rx_adopted, tw__tcp_rx_moved,
    tw__tcp_rx_strays, tw__tcp_rx_placed_small, tw__tcp_rx_moved_small;

static void count(_Atomic uint64_t *c)
{
	atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

// A chunk that arrived on another connection while its message was
// being assembled in a posted buffer: read into memory of its own, then
// copied to wherever the message is when it is in.
typedef struct sx_stray {
	uint64_t off;
	size_t n;
	unsigned char bytes[];
} sx_stray;

typedef struct sx_entry {
	struct sx_entry *next;
	uint64_t id;
	uint32_t slot; // the peer's slot
	uint64_t total;
	uint64_t got; // bytes claimed by chunks (read or being read)
	unsigned writers; // chunks being read into buf
	bool announced;
	bool cancelled; // dropped once its writers are done
	uint64_t seq; // of the announcement
	uint64_t hi; // every byte claimed so far lies below this
	unsigned char *buf; // made at the first chunk that needs it
	unsigned char *user; // or the posted buffer it is assembled in
	tcp_post *post; // that buffer's post
} sx_entry;

typedef struct sx_item {
	struct sx_item *next;
	char key[TW_KEY_MAX];
	void *data; // a plain message (entry == NULL)
	size_t len;
	sx_entry *entry; // or a striped one, delivered when complete
} sx_item;

struct tcp_sx {
	pthread_mutex_t mtx;
	sx_entry *entries;
	unsigned count;
	uint64_t hold; // the oldest incomplete announcement, or UINT64_MAX
	bool failed;
	uint64_t cancelled[SX_CANCELLED]; // ring of ids (0: none)
	unsigned cancelled_next;
};

tcp_sx *tw__tcp_sx_new(void)
{
	tcp_sx *sx = calloc(1, sizeof(*sx));
	if (sx == NULL)
		return NULL;
	pthread_mutex_init(&sx->mtx, NULL);
	sx->hold = UINT64_MAX;
	return sx;
}

void tw__tcp_sx_free(tcp_sx *sx)
{
	if (sx == NULL)
		return;
	while (sx->entries != NULL) {
		sx_entry *e = sx->entries;
		sx->entries = e->next;
		free(e->buf);
		free(e);
	}
	pthread_mutex_destroy(&sx->mtx);
	free(sx);
}

void tw__tcp_sx_fail(tcp_sx *sx)
{
	pthread_mutex_lock(&sx->mtx);
	sx->failed = true;
	pthread_mutex_unlock(&sx->mtx);
}

static bool complete(const sx_entry *e)
{
	return e->got == e->total && e->writers == 0;
}

// Recomputes the oldest incomplete announcement and tells the main
// connection.  mtx held.  Called before flush delivers what a message
// that became complete held back: once the application has a message, the
// next frame it sends (its link's UNBIND, when it closes at once) must
// acknowledge it, or the peer's tw_link_wait_pending takes it for lost.
// True when the peer asked for the ack that this frees: the caller sends
// it (tw__tcp_conn_send_ack) after that flush, so that an ack never runs
// ahead of the delivery it confirms.
static bool update_hold(tcp_sx *sx, tcp_conn *main)
{
	uint64_t hold = UINT64_MAX;
	for (sx_entry *e = sx->entries; e != NULL; e = e->next)
		if (e->announced && !e->cancelled && !complete(e)
		    && e->seq < hold)
			hold = e->seq;
	if (hold == sx->hold)
		return false;
	sx->hold = hold;
	return tw__tcp_conn_hold_acks(main, hold);
}

static sx_entry *find(tcp_sx *sx, uint64_t id)
{
	for (sx_entry *e = sx->entries; e != NULL; e = e->next)
		if (e->id == id)
			return e;
	return NULL;
}

static bool was_cancelled(const tcp_sx *sx, uint64_t id)
{
	for (unsigned i = 0; i < SX_CANCELLED; i++)
		if (sx->cancelled[i] == id)
			return true;
	return false;
}

// The entry of message `id`, made when absent.  mtx held.
static int get_entry(tcp_sx *sx, tcp_chan *mc, uint32_t slot,
    const tw__tcp_chunk *ck, sx_entry **out)
{
	sx_entry *e = find(sx, ck->id);
	if (e != NULL) {
		if (e->total != ck->total || e->slot != slot)
			return TW_EPROTO;
		*out = e;
		return TW_OK;
	}
	if (ck->id == 0 || ck->total > mc->ep->max_msg
	    || sx->count >= SX_ENTRIES_MAX)
		return TW_EPROTO;
	e = calloc(1, sizeof(*e));
	if (e == NULL)
		return TW_ENOMEM;
	e->id = ck->id;
	e->slot = slot;
	e->total = ck->total;
	e->next = sx->entries;
	sx->entries = e;
	sx->count++;
	*out = e;
	return TW_OK;
}

static void drop_entry(tcp_sx *sx, sx_entry *e)
{
	sx_entry **pp = &sx->entries;
	while (*pp != e)
		pp = &(*pp)->next;
	*pp = e->next;
	sx->count--;
	if (e->post != NULL)
		e->post->entry = NULL;
	free(e->buf);
	free(e);
}

// Whether entry e may be assembled in post's buffer from now on (see the
// design notes), and if so moves it there.  mtx held, by the poster.
// Chunks being read elsewhere (writers) would land in the old place: then
// not yet.
static void try_place(tcp_chan *mc, sx_entry *e, tcp_post *post)
{
	if (post == NULL || post->mc != mc || post->entry != NULL
	    || post->small
	    || atomic_load_explicit(&post->done, memory_order_relaxed)
	    || !e->announced || e->cancelled || e->user != NULL
	    || e->writers > 0 || e->total > post->cap || mc->held == NULL
	    || mc->held->entry != e || strcmp(mc->held->key, post->key) != 0)
		return;
	size_t len;
	// TW_EAGAIN: nothing of that key queued before it, and the key is
	// neither aborted nor closed.
	tw_mailbox *mb = mc->ep->mb;
	if (!tw__mailbox_idle(mb, post->key)
	    && tw_mailbox_probe(mb, mc->peer_rank, post->key, &len)
	        != TW_EAGAIN)
		return;
	if (e->buf != NULL) {
		memcpy(post->buf, e->buf, (size_t)e->hi);
		free(e->buf);
		e->buf = NULL;
		count(&tw__tcp_rx_adopted);
	}
	e->user = post->buf;
	e->post = post;
	post->entry = e;
	post->used = true;
}

// The whole of e is in its posted buffer: the receive is done, and the
// message counts as taken.  mtx held.
static void deliver_placed(tcp_sx *sx, tcp_chan *mc, sx_entry *e)
{
	tcp_post *post = e->post;
	uint64_t total = e->total;
	post->len = (size_t)total;
	e->user = NULL;
	drop_entry(sx, e);
	atomic_store_explicit(&post->done, true, memory_order_release);
	count(&tw__tcp_rx_placed);
	tw__tcp_chan_dropped(mc, total);
}

void (*_Atomic tw__tcp_sx_deliver_hook)(tcp_conn *main);

// Delivers mc's held messages from the head as far as they are complete.
// mtx held.
static int flush(tcp_sx *sx, tcp_conn *main, tcp_chan *mc)
{
	void (*hook)(tcp_conn *) = atomic_load_explicit(
	    &tw__tcp_sx_deliver_hook, memory_order_relaxed);
	int status = TW_OK;
	while (mc->held != NULL) {
		sx_item *it = mc->held;
		if (it->entry != NULL && !complete(it->entry))
			break;
		mc->held = it->next;
		if (mc->held == NULL)
			mc->held_tail = NULL;
		void *data = it->data;
		size_t len = it->len;
		if (it->entry != NULL && hook != NULL)
			hook(main);
		if (it->entry != NULL && it->entry->user != NULL) {
			deliver_placed(sx, mc, it->entry);
			free(it);
			atomic_fetch_sub_explicit(
			    &mc->held_n, 1, memory_order_release);
			continue;
		}
		if (it->entry != NULL) {
			data = it->entry->buf;
			len = (size_t)it->entry->total;
			it->entry->buf = NULL;
			drop_entry(sx, it->entry);
		}
		int st = tw__tcp_chan_deliver(mc, it->key, data, len);
		if (status == TW_OK)
			status = st;
		free(it);
		atomic_fetch_sub_explicit(
		    &mc->held_n, 1, memory_order_release);
	}
	return status;
}

static int hold(
    tcp_chan *mc, const char *key, void *data, size_t len, sx_entry *e)
{
	sx_item *it = calloc(1, sizeof(*it));
	if (it == NULL)
		return TW_ENOMEM;
	snprintf(it->key, sizeof(it->key), "%s", key);
	it->data = data;
	it->len = len;
	it->entry = e;
	if (mc->held_tail != NULL)
		mc->held_tail->next = it;
	else
		mc->held = it;
	mc->held_tail = it;
	atomic_fetch_add_explicit(&mc->held_n, 1, memory_order_release);
	return TW_OK;
}

int tw__tcp_sx_data(
    tcp_sx *sx, tcp_chan *mc, const char *key, void *data, size_t len)
{
	// Only the main connection's reader holds messages back, and it is
	// the one calling: with nothing held, nothing can be held meanwhile.
	if (atomic_load_explicit(&mc->held_n, memory_order_acquire) == 0)
		return tw__tcp_chan_deliver(mc, key, data, len);
	pthread_mutex_lock(&sx->mtx);
	int status = mc->held == NULL
	    ? tw__tcp_chan_deliver(mc, key, data, len)
	    : hold(mc, key, data, len, NULL);
	pthread_mutex_unlock(&sx->mtx);
	if (status == TW_ENOMEM)
		free(data);
	return status;
}

bool tw__tcp_sx_claim_small(
    tcp_chan *mc, const char *key, size_t len, tcp_post *post)
{
	// The poster's own thread calls (it holds the reader role), and it
	// stops reading once done is set: the buffer is ours to fill.
	if (post == NULL || post->mc != mc || post->used || len > post->cap
	    || atomic_load_explicit(&mc->held_n, memory_order_acquire) != 0
	    || strcmp(key, post->key) != 0)
		return false;
	size_t n;
	tw_mailbox *mb = mc->ep->mb;
	if (!tw__mailbox_idle(mb, key)
	    && tw_mailbox_probe(mb, mc->peer_rank, key, &n) != TW_EAGAIN)
		return false;
	post->used = true;
	post->small = true;
	return true;
}

void tw__tcp_sx_placed_small(tcp_chan *mc, tcp_post *post, size_t len)
{
	post->len = len;
	atomic_store_explicit(&post->done, true, memory_order_release);
	count(&tw__tcp_rx_placed_small);
	// It skipped the mailbox, which would have counted it when taken.
	tw__tcp_chan_dropped(mc, len);
}

int tw__tcp_sx_data_copy(tcp_sx *sx, tcp_chan *mc, const char *key,
    const void *src, size_t len, tcp_post *post, tw__mailbox_run *run)
{
	bool staged = run != NULL && tw__mailbox_run_staged(run);
	if (!staged && tw__tcp_sx_claim_small(mc, key, len, post)) {
		if (len > 0)
			memcpy(post->buf, src, len);
		tw__tcp_sx_placed_small(mc, post, len);
		return TW_OK;
	}
	if (atomic_load_explicit(&mc->held_n, memory_order_acquire) == 0)
		return run != NULL
		    ? tw__tcp_chan_deliver_run(mc, run, key, src, len)
		    : tw__tcp_chan_deliver_copy(mc, key, src, len);
	// Held behind a striped message: the bytes need memory of their own.
	// (Nothing is staged in the run then: the frame that began the hold
	// flushed it, tcp_peer.c, and nothing is staged while it lasts.)
	void *data = len > 0 ? malloc(len) : NULL;
	if (len > 0 && data == NULL)
		return TW_ENOMEM;
	if (len > 0)
		memcpy(data, src, len);
	return tw__tcp_sx_data(sx, mc, key, data, len);
}

int tw__tcp_sx_announce(tcp_sx *sx, tcp_conn *main, tcp_chan *mc,
    uint32_t slot, const char *key, const tw__tcp_chunk *ck, uint64_t seq,
    tcp_post *post)
{
	pthread_mutex_lock(&sx->mtx);
	sx_entry *e = NULL;
	bool owed = false;
	int status = was_cancelled(sx, ck->id)
	    ? TW_EPROTO
	    : get_entry(sx, mc, slot, ck, &e);
	if (status == TW_OK && e->announced)
		status = TW_EPROTO; // announced twice
	if (status == TW_OK) {
		e->announced = true;
		e->seq = seq;
		// The hold first: acks must not pass the announcement while
		// the message is incomplete.
		owed = update_hold(sx, main);
		tw__tcp_conn_rx_handled(main);
		status = hold(mc, key, NULL, 0, e);
	}
	if (status == TW_OK) {
		try_place(mc, e, post);
		// Complete already: chunks came first.
		owed |= update_hold(sx, main);
		status = flush(sx, main, mc);
	}
	if (owed)
		tw__tcp_conn_send_ack(main);
	pthread_mutex_unlock(&sx->mtx);
	return status;
}

// Where a chunk of entry e goes, at `off`: the posted buffer when its
// poster reads it, memory of its own when another thread does meanwhile,
// else the entry's buffer.  mtx held.
static int chunk_dst(sx_entry *e, uint64_t off, size_t n, tcp_post *post,
    tcp_sx_claim *claim, unsigned char **dst)
{
	if (e->user != NULL && e->post == post) {
		*dst = e->user + off;
		return TW_OK;
	}
	if (e->user != NULL) {
		sx_stray *st = malloc(sizeof(*st) + n);
		if (st == NULL)
			return TW_ENOMEM;
		st->off = off;
		st->n = n;
		claim->stray = st;
		*dst = st->bytes;
		count(&tw__tcp_rx_strays);
		return TW_OK;
	}
	if (e->buf == NULL
	    && (e->buf = tw__pool_alloc((size_t)e->total)) == NULL)
		return TW_ENOMEM;
	*dst = e->buf + off;
	return TW_OK;
}

int tw__tcp_sx_chunk_begin(tcp_sx *sx, tcp_chan *mc, uint32_t slot,
    const tw__tcp_chunk *ck, size_t n, tcp_post *post, tcp_sx_claim *claim,
    unsigned char **dst)
{
	pthread_mutex_lock(&sx->mtx);
	sx_entry *e = NULL;
	int status = TW_OK;
	claim->entry = NULL;
	claim->stray = NULL;
	*dst = NULL;
	if (sx->failed)
		status = TW_EPEER;
	else if (was_cancelled(sx, ck->id))
		e = NULL; // late: skipped
	else
		status = get_entry(sx, mc, slot, ck, &e);
	if (status == TW_OK && e != NULL
	    && (n > e->total - ck->offset || n > e->total - e->got))
		status = TW_EPROTO; // past the end, or more than the message
	if (status == TW_OK && e != NULL) {
		try_place(mc, e, post);
		status = chunk_dst(e, ck->offset, n, post, claim, dst);
	}
	if (status == TW_OK && e != NULL) {
		e->got += n;
		e->writers++;
		if (ck->offset + n > e->hi)
			e->hi = ck->offset + n;
		claim->entry = e;
	}
	pthread_mutex_unlock(&sx->mtx);
	return status;
}

// A stray chunk is in: it goes where the message is now, the posted
// buffer (which nobody reads or leaves while we hold mtx) or the entry's
// own.  mtx held.
static void stray_end(sx_entry *e, sx_stray *st, bool ok)
{
	unsigned char *to = e->user != NULL ? e->user : e->buf;
	if (ok && !e->cancelled && to != NULL)
		memcpy(to + st->off, st->bytes, st->n);
	free(st);
}

int tw__tcp_sx_chunk_end(tcp_sx *sx, tcp_conn *main, tcp_chan *mc,
    const tcp_sx_claim *claim, size_t n, bool ok)
{
	sx_entry *e = claim->entry;
	if (e == NULL)
		return TW_OK;
	pthread_mutex_lock(&sx->mtx);
	e->writers--;
	if (!ok)
		e->got -= n; // a resumed connection brings the chunk again
	if (claim->stray != NULL)
		stray_end(e, claim->stray, ok);
	int status = TW_OK;
	if (e->cancelled) {
		if (e->writers == 0)
			drop_entry(sx, e);
	} else if (ok && complete(e) && e->announced && !sx->failed) {
		bool owed = update_hold(sx, main);
		status = flush(sx, main, mc);
		if (owed)
			tw__tcp_conn_send_ack(main);
	}
	pthread_mutex_unlock(&sx->mtx);
	return status;
}

int tw__tcp_sx_unpost(tcp_sx *sx, tcp_conn *main, tcp_post *post)
{
	// A receive that found no long message: none can be here.
	if (!post->used || post->small)
		return TW_OK;
	pthread_mutex_lock(&sx->mtx);
	sx_entry *e = post->entry;
	int status = TW_OK;
	if (e != NULL) {
		unsigned char *user = e->user;
		post->entry = NULL;
		e->post = NULL;
		e->user = NULL;
		unsigned char *to = NULL;
		if (!sx->failed && !e->cancelled) {
			to = tw__pool_alloc((size_t)e->total);
			if (to == NULL)
				status = TW_ENOMEM;
		}
		if (to != NULL) {
			// Bytes claimed but not yet read come along as they
			// are: the reader overwrites them in their new place.
			memcpy(to, user, (size_t)e->hi);
			e->buf = to;
			count(&tw__tcp_rx_moved);
		}
		// The chunk being read goes on into the new place, or
		// nowhere when the message has none.
		tw__tcp_conn_rx_rebase(main, user, (size_t)e->total, to);
	}
	pthread_mutex_unlock(&sx->mtx);
	return status;
}

int tw__tcp_sx_cancel(tcp_sx *sx, tcp_conn *main, tcp_chan *mc, uint64_t id)
{
	pthread_mutex_lock(&sx->mtx);
	sx_entry *e = find(sx, id);
	int status = TW_OK;
	if (e == NULL || !e->announced || e->slot != mc->peer_slot
	    || e->cancelled || complete(e)) {
		status = TW_EPROTO; // nothing the peer may give up
	} else {
		sx->cancelled[sx->cancelled_next++ % SX_CANCELLED] = id;
		// Its place in the held list goes; what waited behind it
		// may now be delivered.
		sx_item **pp = &mc->held, *prev = NULL;
		while (*pp != NULL && (*pp)->entry != e) {
			prev = *pp;
			pp = &(*pp)->next;
		}
		if (*pp != NULL) {
			sx_item *it = *pp;
			*pp = it->next;
			if (mc->held_tail == it)
				mc->held_tail = prev;
			free(it);
			atomic_fetch_sub_explicit(
			    &mc->held_n, 1, memory_order_release);
		}
		uint64_t total = e->total;
		e->cancelled = true;
		if (e->post != NULL) {
			// Nothing of it reaches the posted buffer any more.
			e->post->entry = NULL;
			e->post = NULL;
			e->user = NULL;
		}
		if (e->writers == 0)
			drop_entry(sx, e);
		tw__tcp_chan_dropped(mc, total);
		bool owed = update_hold(sx, main);
		status = flush(sx, main, mc);
		if (owed)
			tw__tcp_conn_send_ack(main);
	}
	pthread_mutex_unlock(&sx->mtx);
	return status;
}

void tw__tcp_sx_chan_free(tcp_chan *mc)
{
	// Held items are the channel's; the entries they name are the
	// peer's (freed with it).
	while (mc->held != NULL) {
		sx_item *it = mc->held;
		mc->held = it->next;
		free(it->data);
		free(it);
	}
	mc->held_tail = NULL;
}
