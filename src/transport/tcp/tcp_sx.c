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
// tw_link_wait_pending still means delivered.
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
	unsigned char *buf;
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

// Recomputes the oldest incomplete announcement and tells the main
// connection.  mtx held.
static void update_hold(tcp_sx *sx, tcp_conn *main)
{
	uint64_t hold = UINT64_MAX;
	for (sx_entry *e = sx->entries; e != NULL; e = e->next)
		if (e->announced && !e->cancelled && e->seq < hold)
			hold = e->seq;
	if (hold != sx->hold) {
		sx->hold = hold;
		tw__tcp_conn_hold_acks(main, hold);
	}
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
	if (e == NULL
	    || (e->buf = tw__pool_alloc((size_t)ck->total)) == NULL) {
		free(e);
		return TW_ENOMEM;
	}
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
	free(e->buf);
	free(e);
}

static bool complete(const sx_entry *e)
{
	return e->got == e->total && e->writers == 0;
}

// Delivers mc's held messages from the head as far as they are complete.
// mtx held.
static int flush(tcp_sx *sx, tcp_chan *mc)
{
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

int tw__tcp_sx_data_copy(
    tcp_sx *sx, tcp_chan *mc, const char *key, const void *src, size_t len)
{
	if (atomic_load_explicit(&mc->held_n, memory_order_acquire) == 0)
		return tw__tcp_chan_deliver_copy(mc, key, src, len);
	// Held behind a striped message: the bytes need memory of their own.
	void *data = len > 0 ? malloc(len) : NULL;
	if (len > 0 && data == NULL)
		return TW_ENOMEM;
	if (len > 0)
		memcpy(data, src, len);
	return tw__tcp_sx_data(sx, mc, key, data, len);
}

int tw__tcp_sx_announce(tcp_sx *sx, tcp_conn *main, tcp_chan *mc,
    uint32_t slot, const char *key, const tw__tcp_chunk *ck, uint64_t seq)
{
	pthread_mutex_lock(&sx->mtx);
	sx_entry *e = NULL;
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
		update_hold(sx, main);
		tw__tcp_conn_rx_handled(main);
		status = hold(mc, key, NULL, 0, e);
	}
	if (status == TW_OK) {
		status = flush(sx, mc);
		update_hold(sx, main);
	}
	pthread_mutex_unlock(&sx->mtx);
	return status;
}

int tw__tcp_sx_chunk_begin(tcp_sx *sx, tcp_chan *mc, uint32_t slot,
    const tw__tcp_chunk *ck, size_t n, void **entry, unsigned char **dst)
{
	pthread_mutex_lock(&sx->mtx);
	sx_entry *e = NULL;
	int status = TW_OK;
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
		e->got += n;
		e->writers++;
	}
	if (status == TW_OK) {
		*entry = e;
		*dst = e != NULL ? e->buf + ck->offset : NULL;
	}
	pthread_mutex_unlock(&sx->mtx);
	return status;
}

int tw__tcp_sx_chunk_end(
    tcp_sx *sx, tcp_conn *main, tcp_chan *mc, void *entry, size_t n, bool ok)
{
	sx_entry *e = entry;
	if (e == NULL)
		return TW_OK;
	pthread_mutex_lock(&sx->mtx);
	e->writers--;
	if (!ok)
		e->got -= n; // a resumed connection brings the chunk again
	int status = TW_OK;
	if (e->cancelled) {
		if (e->writers == 0)
			drop_entry(sx, e);
	} else if (ok && complete(e) && e->announced && !sx->failed) {
		status = flush(sx, mc);
		update_hold(sx, main);
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
		if (e->writers == 0)
			drop_entry(sx, e);
		tw__tcp_chan_dropped(mc, total);
		status = flush(sx, mc);
		update_hold(sx, main);
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
