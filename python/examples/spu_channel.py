"""A libspu channel class run unchanged over tagwire.compat.spu.

MPLang-style runtimes hand libspu a ``BaseChannel(link.IChannel)`` per peer:
a class with libspu's PascalCase methods over the runtime's own
communicator.  Below is such a class, over a communicator of thread
mailboxes, and the only line that changed for tagwire is the import.

Three parties (threads) build a link over those channels, pass binary data
around the ring, run an all_gather of binary data, and check the results.
The output ends with "spu_channel: OK" when every check held.

    python3 spu_channel.py [--parties N]
"""

import argparse
import hashlib
import sys
import threading
import time
from collections import deque

# import spu.libspu.link as link             # libspu
from tagwire.compat import spu as link       # tagwire: the only change


class ThreadCommunicator:
    """The runtime's communicator: per-(sender, receiver, key) FIFO queues
    shared by the parties (threads) of this process."""

    def __init__(self):
        self._cond = threading.Condition()
        self._queues = {}

    def send(self, frm, to, key, data):
        with self._cond:
            self._queues.setdefault((frm, to, key), deque()).append(
                bytes(data))
            self._cond.notify_all()

    def recv(self, frm, to, key, timeout_s, cancelled=lambda: False):
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                if cancelled():
                    raise ConnectionAbortedError("channel aborted")
                q = self._queues.get((frm, to, key))
                if q:
                    return q.popleft()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"recv {frm}->{to} {key!r}: nothing after "
                        f"{timeout_s:.3f} s")
                self._cond.wait(left)

    def wake(self):
        """Wakes every recv, so that a cancelled one returns."""
        with self._cond:
            self._cond.notify_all()


class BaseChannel(link.IChannel):
    """libspu IChannel over the communicator, as an MPLang runtime writes
    it: one instance per (local party, peer)."""

    def __init__(self, comm, local_rank, peer_rank, tag_prefix="spu"):
        super().__init__()
        self._comm = comm
        self._local = local_rank
        self._peer = peer_rank
        self._prefix = tag_prefix
        self._recv_timeout_ms = 30 * 1000
        self._aborted = False
        self.recv_timeouts_seen = []

    def _key(self, key):
        return f"{self._prefix}:{key}"

    def SendImpl(self, key, value):
        self._comm.send(self._local, self._peer, self._key(key), value)

    def Send(self, key, value):
        self.SendImpl(key, value)

    def SendAsync(self, key, value):
        self.SendImpl(key, bytes(value))

    def SendAsyncThrottled(self, key, value):
        self.SendImpl(key, bytes(value))

    def Recv(self, key):
        return self._comm.recv(self._peer, self._local, self._key(key),
                               self._recv_timeout_ms / 1000.0,
                               cancelled=lambda: self._aborted)

    def SetRecvTimeout(self, timeout_ms):
        self._recv_timeout_ms = timeout_ms
        self.recv_timeouts_seen.append(timeout_ms)

    def GetRecvTimeout(self):
        return self._recv_timeout_ms

    def TestSend(self, timeout):
        self.Send("__connect__", b"")

    def TestRecv(self):
        self.Recv("__connect__")

    def WaitLinkTaskFinish(self):
        pass  # sends are synchronous

    def Abort(self):
        self._aborted = True
        self._comm.wake()

    def SetThrottleWindowSize(self, size):
        pass

    def SetChunkParallelSendSize(self, size):
        pass


def payload(rank):
    """Binary data: NULs, 0xff, invalid UTF-8, and its rank."""
    return bytes([0, 0xFF, 0xC3, 0x28, rank]) + bytes(range(256)) * (rank + 1)


def party(rank, n, comm, results):
    desc = link.Desc()
    desc.id = "spu_channel_demo"
    desc.recv_timeout_ms = 20_000
    for i in range(n):
        desc.add_party(f"P{i}", f"127.0.0.1:{9100 + i}")  # unused by channels
    channels = [None if i == rank else BaseChannel(comm, rank, i)
                for i in range(n)]
    ctx = link.create_with_channels(desc, rank, channels)
    try:
        # point to point around the ring, libspu style (one tag)
        ctx.send(ctx.next_rank(), payload(rank))
        got = ctx.recv(ctx.prev_rank())
        p2p_ok = got == payload(ctx.prev_rank())
        # all_gather of binary data: bytes, not str
        parts = ctx.all_gather(payload(rank))
        ag_ok = parts == [payload(i) for i in range(n)] and all(
            isinstance(p, bytes) for p in parts)
        digest = hashlib.sha256(b"".join(parts)).hexdigest()[:16]
        # the link's recv timeout reached the user's channel
        seen = channels[ctx.prev_rank()].recv_timeouts_seen
        timeout_ok = bool(seen) and 0 < max(seen) <= desc.recv_timeout_ms
        ctx.barrier()
        results[rank] = (p2p_ok, ag_ok, timeout_ok, digest, ctx.world_size)
    finally:
        ctx.stop_link()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parties", type=int, default=3)
    n = ap.parse_args().parties
    comm = ThreadCommunicator()
    results = [None] * n
    errors = [None] * n

    def body(r):
        try:
            party(r, n, comm, results)
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors[r] = e

    threads = [threading.Thread(target=body, args=(r,), daemon=True)
               for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ok = True
    for r in range(n):
        if threads[r].is_alive():
            print(f"P{r}: did not finish", flush=True)
            ok = False
        elif errors[r] is not None:
            print(f"P{r}: failed: {errors[r]!r}", flush=True)
            ok = False
        else:
            p2p_ok, ag_ok, timeout_ok, digest, size = results[r]
            print(f"P{r}: world_size={size} p2p={'ok' if p2p_ok else 'BAD'} "
                  f"all_gather={'ok' if ag_ok else 'BAD'} "
                  f"recv_timeout={'ok' if timeout_ok else 'BAD'} "
                  f"sha256={digest}", flush=True)
            ok = ok and p2p_ok and ag_ok and timeout_ok
    digests = {results[r][3] for r in range(n) if results[r] is not None}
    ok = ok and len(digests) == 1
    print(f"spu_channel: {'OK' if ok else 'FAILED'} {n} parties", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
