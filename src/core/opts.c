#include "core/opts.h"

#define KiB ((int64_t)1024)
#define MiB (1024 * KiB)
#define GiB (1024 * MiB)

const tw__opt_info tw__opts[TW_OPT_COUNT] = {
	[TW_OPT_RECV_TIMEOUT_MS]
	= { "RECV_TIMEOUT_MS", 60000, -1, (int64_t)1 << 40,
	    "how long a receive, a throttled send or a send held by flow "
	    "control waits, in ms (-1 = forever, 0 = do not wait)" },
	[TW_OPT_CONNECT_TIMEOUT_MS]
	= { "CONNECT_TIMEOUT_MS", 30000, 1, (int64_t)1 << 31,
	    "how long link creation waits for every peer, in ms" },
	[TW_OPT_THROTTLE_WINDOW] = { "THROTTLE_WINDOW", 0, 0, (int64_t)1 << 31,
	    "messages to one peer not yet consumed there before "
	    "tw_send_async_throttled blocks (0 = no limit)" },
	[TW_OPT_CHUNK_SIZE] = { "CHUNK_SIZE", 1 * MiB, 4 * KiB, 1 * GiB,
	    "bytes of a long message sent on one connection before the next "
	    "takes over (with STRIPES > 1); frames are at most 256 KiB" },
	[TW_OPT_STRIPES] = { "STRIPES", 1, 1, 64,
	    "connections per pair of processes over which bulk data is "
	    "striped" },
	[TW_OPT_MAX_MSG_SIZE] = { "MAX_MSG_SIZE", 1 * GiB, 0, (int64_t)1 << 40,
	    "largest message; a larger send is TW_ETOOBIG" },
	[TW_OPT_RECV_BUFFER]
	= { "RECV_BUFFER", 64 * MiB, 4 * KiB, (int64_t)1 << 40,
	    "what a receiver holds per peer of messages not yet received "
	    "before the sender waits, each counted as its length plus 64 "
	    "bytes (one larger message is always admitted alone)" },
	[TW_OPT_HEARTBEAT_MS] = { "HEARTBEAT_MS", 1000, 0, 3600000,
	    "interval of liveness checks on connections, in ms "
	    "(0 = off, else at least 10); a peer silent for three is gone" },
	[TW_OPT_SHM_LOCAL] = { "SHM_LOCAL", 0, 0, 1,
	    "1 = a tcp:// peer on the same host is reached over shared "
	    "memory" },
	[TW_OPT_WINDOW] = { "WINDOW", 16, 1, 1024,
	    "transfer engine: chunks waiting for their reply per connection "
	    "(links ignore it)" },
};

int tw__opt_check(int opt, int64_t value)
{
	if (opt < 0 || opt >= TW_OPT_COUNT)
		return TW_EINVAL;
	const tw__opt_info *o = &tw__opts[opt];
	if (value < o->min || value > o->max)
		return TW_EINVAL;
	if (opt == TW_OPT_HEARTBEAT_MS && value != 0 && value < 10)
		return TW_EINVAL;
	return TW_OK;
}
