"""tagwire.compat.spu: libspu's link API over tagwire.

The parties of a link are threads of this process; they synchronise with
events and the link itself, never with sleeps.
"""

import threading
import time
from collections import deque

import pytest

import tagwire
from tagwire.compat import spu as link
from conftest import free_tcp_ports, run_parties, unique_name


# ---------------------------------------------------------------------------
# A libspu-style channel, as runtimes write them


class Comm:
    """Per-(from, to, key) FIFOs shared by the parties (threads)."""

    def __init__(self):
        self.cond = threading.Condition()
        self.queues = {}

    def push(self, frm, to, key, data):
        with self.cond:
            self.queues.setdefault((frm, to, key), deque()).append(
                bytes(data))
            self.cond.notify_all()

    def pop(self, frm, to, key, timeout_s, cancelled):
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while True:
                if cancelled():
                    raise ConnectionAbortedError("aborted")
                q = self.queues.get((frm, to, key))
                if q:
                    return q.popleft()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{frm}->{to} {key!r}")
                self.cond.wait(left)

    def wake(self):
        with self.cond:
            self.cond.notify_all()


class SpuChannel(link.IChannel):
    """PascalCase methods only, as libspu's trampoline calls them; every
    call is recorded as (method, argument)."""

    def __init__(self, comm, me, peer):
        super().__init__()
        self.comm = comm
        self.me = me
        self.peer = peer
        self.timeout_ms = 30_000
        self.aborted = False
        self.lock = threading.Lock()
        self.calls = []

    def note(self, what, arg=None):
        with self.lock:
            self.calls.append((what, arg))

    def names(self):
        with self.lock:
            return [c[0] for c in self.calls]

    def Send(self, key, value):
        self.note("Send", key)
        assert isinstance(key, str) and isinstance(value, bytes)
        self.comm.push(self.me, self.peer, key, value)

    def SendAsync(self, key, value):
        self.note("SendAsync", key)
        self.comm.push(self.me, self.peer, key, value)

    def Recv(self, key):
        self.note("Recv", key)
        return self.comm.pop(self.peer, self.me, key, self.timeout_ms / 1000,
                             lambda: self.aborted)

    def SetRecvTimeout(self, timeout_ms):
        self.note("SetRecvTimeout", timeout_ms)
        self.timeout_ms = timeout_ms

    def GetRecvTimeout(self):
        return self.timeout_ms

    def TestSend(self, timeout):
        self.note("TestSend", timeout)
        self.Send("connect", b"")

    def TestRecv(self):
        self.note("TestRecv")
        self.Recv("connect")

    def WaitLinkTaskFinish(self):
        self.note("WaitLinkTaskFinish")

    def Abort(self):
        self.note("Abort")
        self.aborted = True
        self.comm.wake()

    def SetThrottleWindowSize(self, size):
        pass

    def SetChunkParallelSendSize(self, size):
        pass


def spu_desc(n, **fields):
    d = link.Desc()
    d.id = unique_name("spu")
    d.recv_timeout_ms = 20_000
    d.connect_retry_times = 15
    d.connect_retry_interval_ms = 1000
    for k, v in fields.items():
        setattr(d, k, v)
    for i in range(n):
        d.add_party(f"P{i}", f"127.0.0.1:{9000 + i}")
    return d


def _quiet_close(ctx):
    try:
        ctx.close()
    except Exception:  # noqa: BLE001 (teardown of a failed test)
        pass


@pytest.fixture
def spu_links():
    """spu_links(n, cls=SpuChannel, **desc_fields) -> (contexts, channels
    by rank, desc); what the test leaves open is aborted and closed."""
    made = []

    def make(n=2, cls=SpuChannel, **fields):
        comm = Comm()
        d = spu_desc(n, **fields)
        chans = [[None if i == r else cls(comm, r, i) for i in range(n)]
                 for r in range(n)]
        ctxs = run_parties(
            n, lambda r: link.create_with_channels(d, r, chans[r]))
        made.append(ctxs)
        return ctxs, chans, d

    yield make
    for ctxs in reversed(made):
        for c in ctxs:
            try:
                c.abort()
            except tagwire.Error:
                pass
        threads = [threading.Thread(target=_quiet_close, args=(c,),
                                    daemon=True) for c in ctxs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)


# ---------------------------------------------------------------------------


def test_pascalcase_channel_class_works_unchanged(spu_links):
    n = 3
    ctxs, chans, d = spu_links(n)
    for r, c in enumerate(ctxs):
        assert (c.rank, c.world_size) == (r, n)
        assert c.id == d.id and c.id() == d.id  # libspu: ctx.id()
        assert c.party_ids == ["P0", "P1", "P2"]
        assert c.next_rank() == (r + 1) % n
        assert c.prev_rank() == (r - 1) % n
        assert c.next_rank(strides=2) == (r + 2) % n
        assert c.prev_rank(stride=2) == (r - 2) % n
        assert c.recv_timeout_ms == 20_000
    # the handshake went through the user's TestSend/TestRecv, once each
    for r in range(n):
        for ch in chans[r]:
            if ch is not None:
                names = ch.names()
                assert names.count("TestSend") == 1, names
                assert names.count("TestRecv") == 1, names

    def party(r):
        c = ctxs[r]
        nxt, prv = c.next_rank(), c.prev_rank()
        # libspu style: one tag for everything, FIFO
        c.send(nxt, b"first %d" % r)
        c.send(nxt, "second")                       # str data: UTF-8
        c.send_async(nxt, b"third\x00").wait()
        got = [c.recv(prv) for _ in range(3)]
        # explicit tags keep streams apart
        c.send(nxt, "tagB", b"B")
        c.send(nxt, "tagA", b"A")
        tagged = (c.recv(prv, "tagA"), c.recv(prv, "tagB"))
        bc = c.broadcast(b"root says" if r == 1 else None, 1)
        sc = c.scatter([b"s0", b"s1", "s2"] if r == 2 else None, 2)
        ga = c.gather(b"g%d" % r, 0)
        c.barrier()
        c.wait_link_task_finish()
        return got, tagged, bc, sc, ga

    res = run_parties(n, party)
    for r, (got, tagged, bc, sc, ga) in enumerate(res):
        p = (r - 1) % n
        assert got == [b"first %d" % p, b"second", b"third\x00"]
        assert tagged == (b"A", b"B")
        assert bc == b"root says"
        assert sc == [b"s0", b"s1", b"s2"][r]
        assert ga == ([b"g0", b"g1", b"g2"] if r == 0 else [])
    # the traffic went through the user's channels
    for r in range(n):
        for ch in chans[r]:
            if ch is not None:
                assert "Send" in ch.names() and "Recv" in ch.names()
    assert "SendAsync" in chans[0][1].names()

    # spawn and sub_world make child links with libspu's names
    def children(r):
        c = ctxs[r]
        with c.spawn() as child:
            a = child.all_gather(b"%d" % r)
        if r == 1:
            return a, None
        sub = c.sub_world("pair", ["P2", "P0"])  # by party id
        try:
            b = (sub.rank, sub.world_size, sub.party_ids,
                 sub.all_gather(b"sub%d" % r))
        finally:
            sub.close()
        return a, b

    res = run_parties(n, children)
    for r, (a, b) in enumerate(res):
        assert a == [b"0", b"1", b"2"]
    assert res[0][1] == (1, 2, ["P2", "P0"], [b"sub2", b"sub0"])
    assert res[2][1] == (0, 2, ["P2", "P0"], [b"sub2", b"sub0"])
    run_parties(n, lambda r: ctxs[r].stop_link())
    for c in ctxs:
        assert c.link.closed


def test_lowercase_methods_refused_with_clear_typeerror():
    class LowerCase(link.IChannel):
        """tagwire's own names: libspu would call Send and fail later."""

        def __init__(self):
            super().__init__()
            self.calls = []

        def send(self, key, data):
            self.calls.append("send")

        def recv(self, key, timeout):
            self.calls.append("recv")

    class NoRecv(link.IChannel):
        def Send(self, key, value):
            raise AssertionError("called")

    class LowerAbort(link.IChannel):
        def Send(self, key, value):
            raise AssertionError("called")

        def Recv(self, key):
            raise AssertionError("called")

        def abort(self):
            raise AssertionError("called")

    d = spu_desc(2)
    bad = LowerCase()
    t0 = time.monotonic()
    with pytest.raises(TypeError) as ei:
        link.create_with_channels(d, 0, [None, bad])
    assert time.monotonic() - t0 < 1.0  # refused before any connect
    msg = str(ei.value)
    assert "Send" in msg and "send" in msg and "LowerCase" in msg
    assert "channels[1]" in msg
    assert bad.calls == []

    with pytest.raises(TypeError, match=r"Recv"):
        link.create_with_channels(d, 1, [NoRecv(), None])
    with pytest.raises(TypeError, match=r"Abort"):
        link.create_with_channels(d, 0, [None, LowerAbort()])
    # not a channel at all
    with pytest.raises(TypeError, match=r"Send"):
        link.create_with_channels(d, 0, [None, link.IChannel()])


def test_recv_timeout_reaches_the_custom_channel(spu_links):
    link_ms = 700
    ctxs, chans, d = spu_links(2, recv_timeout_ms=link_ms,
                               connect_retry_times=10,
                               connect_retry_interval_ms=1500)
    connect_ms = 15_000
    ch = chans[0][1]  # rank 0's channel to rank 1
    set_calls = [a for w, a in ch.calls if w == "SetRecvTimeout"]
    # at creation the desc's recv_timeout_ms, then connect_timeout_ms for
    # the handshake's TestRecv
    assert set_calls[0] == link_ms
    assert connect_ms - 2000 < set_calls[1] <= connect_ms
    done = threading.Event()

    def party(r):
        c = ctxs[r]
        if r == 1:
            assert done.wait(30)
            c.barrier("end")
            return None
        with ch.lock:
            ch.calls.clear()
        t0 = time.monotonic()
        with pytest.raises(tagwire.TimeoutError) as ei:
            c.recv(1, "never")
        waited = time.monotonic() - t0
        assert isinstance(ei.value, TimeoutError)  # the builtin, too
        link_calls = [a for w, a in ch.calls if w == "SetRecvTimeout"]
        with ch.lock:
            ch.calls.clear()
        # an explicit timeout reaches the channel as well
        with pytest.raises(TimeoutError):
            c.recv(1, "never", timeout=0.25)
        explicit_calls = [a for w, a in ch.calls if w == "SetRecvTimeout"]
        done.set()
        c.barrier("end")
        return link_calls, explicit_calls, waited

    link_calls, explicit_calls, waited = run_parties(2, party)[0]
    # the first Recv was told the link's timeout (less what had passed),
    # and the channel's Recv waited for it
    assert link_calls, "SetRecvTimeout was never called"
    assert link_ms - 200 <= link_calls[0] <= link_ms, link_calls
    assert all(0 <= ms <= link_ms for ms in link_calls), link_calls
    assert waited >= (link_ms - 50) / 1000
    assert explicit_calls and 150 <= explicit_calls[0] <= 250, explicit_calls


def test_all_gather_is_binary_safe_and_returns_bytes(spu_links):
    n = 3
    ctxs, _, _ = spu_links(n)
    blobs = [bytes([0, 0xFF, 0xC3, 0x28, r]) + bytes(range(256)) * r
             for r in range(n)]  # NULs and invalid UTF-8

    def party(r):
        c = ctxs[r]
        return c.all_gather(blobs[r]), c.all_gather("text%d" % r, "t"), \
            c.all_gather(b"")

    for a, t, e in run_parties(n, party):
        assert a == blobs
        assert all(type(x) is bytes for x in a + t + e)
        assert t == [b"text0", b"text1", b"text2"]
        assert e == [b""] * n


def test_desc_maps_to_a_tagwire_desc():
    d = link.Desc()
    assert (d.id, d.recv_timeout_ms, d.connect_retry_times,
            d.connect_retry_interval_ms, d.throttle_window_size) == (
        "root", 30_000, 10, 1000, 10)
    d.id = "job-7"
    d.recv_timeout_ms = 100_000
    d.connect_retry_times = 4
    d.connect_retry_interval_ms = 250
    d.throttle_window_size = 32
    d.http_timeout_ms = 5  # accepted, unused
    d.options = {"stripes": 2}
    d.add_party("alice", "127.0.0.1:9001")
    d.add_party("bob", "tcp://10.0.0.2:9002")
    d.add_party("carol", "mem://carol")
    assert [(p.id, p.host) for p in d.parties] == [
        ("alice", "127.0.0.1:9001"), ("bob", "tcp://10.0.0.2:9002"),
        ("carol", "mem://carol")]
    assert repr(d.parties[0]) == "Party(id=alice, host=127.0.0.1:9001)"
    t = d.to_tagwire()
    assert isinstance(t, tagwire.Desc)
    assert t.link_id == "job-7"
    assert t.parties == (("alice", "tcp://127.0.0.1:9001"),
                         ("bob", "tcp://10.0.0.2:9002"),
                         ("carol", "mem://carol"))
    assert t.recv_timeout_ms == 100_000
    assert t.connect_timeout_ms == 4 * 250 == d.connect_timeout_ms
    assert t.throttle_window == 32
    assert t.stripes == 2

    bad = link.Desc()
    bad.add_party("x", "http://127.0.0.1:1")
    with pytest.raises(ValueError, match="http"):
        bad.to_tagwire()
    with pytest.raises(ValueError):
        link.Desc().to_tagwire()  # no parties
    unknown = link.Desc()
    unknown.add_party("x", "127.0.0.1:1")
    unknown.options = {"no_such_option": 1}
    with pytest.raises(AttributeError, match="no_such_option"):
        unknown.to_tagwire()


def test_create_brpc_over_tcp_loopback():
    d = link.Desc()
    d.id = unique_name("brpc")
    d.recv_timeout_ms = 20_000
    d.connect_retry_times = 15
    for i, port in enumerate(free_tcp_ports(2)):
        d.add_party(f"P{i}", f"127.0.0.1:{port}")  # no scheme, as libspu

    def party(r):
        with link.create_brpc(d, r) as c:
            c.send(1 - r, b"over tcp from %d\x00" % r)
            got = c.recv(1 - r)
            ag = c.all_gather(b"\xff%d" % r)
            c.barrier()
            return got, ag, c.world_size

    for r, (got, ag, size) in enumerate(run_parties(2, party)):
        assert got == b"over tcp from %d\x00" % (1 - r)
        assert ag == [b"\xff0", b"\xff1"]
        assert size == 2


def test_create_mem_threads():
    d = spu_desc(2)
    res = run_parties(2, lambda r: _mem_party(d, r))
    assert res == [[b"m0", b"m1"]] * 2


def _mem_party(d, r):
    with link.create_mem(d, r) as c:
        return c.all_gather(b"m%d" % r)


class Boom(Exception):
    pass


def test_errors_of_the_users_send_surface_as_channel_error(spu_links):
    class Breakable(SpuChannel):
        broken = False

        def Send(self, key, value):
            if self.broken:
                raise Boom(f"cannot send {key}")
            super().Send(key, value)

        def Recv(self, key):
            if self.broken:
                raise Boom(f"cannot recv {key}")
            return super().Recv(key)

    ctxs, chans, _ = spu_links(2, cls=Breakable)
    chans[0][1].broken = True
    with pytest.raises(tagwire.ChannelError) as ei:
        ctxs[0].send(1, b"x")
    assert isinstance(ei.value.__cause__, Boom)
    assert "cannot send" in str(ei.value.__cause__)
    assert isinstance(ei.value, RuntimeError)  # as libspu's errors were
    with pytest.raises(tagwire.ChannelError) as ei:
        ctxs[0].recv(1)
    assert isinstance(ei.value.__cause__, Boom)
    assert "cannot recv" in str(ei.value.__cause__)


def test_duck_typed_and_native_channels():
    """A PascalCase object that does not subclass IChannel is wrapped; a
    tagwire channel (send/recv) passes through unchanged."""

    class Duck:
        def __init__(self, comm, me, peer):
            self.inner = SpuChannel(comm, me, peer)

        def Send(self, key, value):
            self.inner.Send(key, value)

        def Recv(self, key):
            return self.inner.Recv(key)

    class Native:
        def __init__(self, comm, me, peer):
            self.comm, self.me, self.peer = comm, me, peer
            self.used = False

        def send(self, key, data):
            self.used = True
            self.comm.push(self.me, self.peer, key, data)

        def recv(self, key, timeout):
            return self.comm.pop(self.peer, self.me, key,
                                 5 if timeout is None else timeout,
                                 lambda: False)

    for cls in (Duck, Native):
        comm = Comm()
        d = spu_desc(2, connect_retry_times=10)
        chans = [[None, cls(comm, 0, 1)], [cls(comm, 1, 0), None]]

        def party(r):
            with link.create_with_channels(d, r, chans[r]) as c:
                return c.all_gather(b"%s%d" % (cls.__name__.encode(), r))

        name = cls.__name__.encode()
        assert run_parties(2, party) == [[name + b"0", name + b"1"]] * 2
        if cls is Native:
            assert chans[0][1].used
        else:
            assert "Send" in chans[0][1].inner.names()
