"""tagwire.create_with_channels over channel objects written in Python."""

import gc
import queue
import threading
import time
import weakref

import numpy as np
import pytest

import tagwire
from conftest import (ChannelClosed, Mailbox, MailboxChannel, channel_links,
                      close_all, make_desc, run_parties)


class Recorder:
    """A channel that records every call and never works."""

    def __init__(self):
        self.calls = []

    def send(self, key, data):
        self.calls.append("send")
        raise AssertionError("send must not be called")

    def recv(self, key, timeout):
        self.calls.append("recv")
        raise AssertionError("recv must not be called")

    def test_send(self, timeout):
        self.calls.append("test_send")
        raise AssertionError("test_send must not be called")

    def test_recv(self):
        self.calls.append("test_recv")
        raise AssertionError("test_recv must not be called")

    def close(self):
        self.calls.append("close")


def test_channel_list_validated_before_any_call():
    d = make_desc(3, "mem", connect_timeout_ms=500)
    cases = [
        ("too short", 0, lambda: [None, Recorder()]),
        ("too long", 0, lambda: [None, Recorder(), Recorder(), Recorder()]),
        ("self not None", 1, lambda: [Recorder(), Recorder(), Recorder()]),
        ("peer None", 2, lambda: [Recorder(), None, None]),
        ("peer None first", 0, lambda: [None, None, Recorder()]),
    ]
    for what, rank, make in cases:
        chans = make()
        t0 = time.monotonic()
        with pytest.raises(ValueError):
            tagwire.create_with_channels(d, rank, chans)
        assert time.monotonic() - t0 < 0.4, what  # no connect attempt
        for c in chans:
            if c is not None:
                assert c.calls == [], (what, c.calls)
    # not a sequence, a rank out of range
    with pytest.raises((TypeError, ValueError)):
        tagwire.create_with_channels(d, 0, None)
    with pytest.raises(ValueError):
        tagwire.create_with_channels(d, 3, [Recorder(), Recorder(), None])


def test_channel_without_send_or_recv_refused():
    d = make_desc(2, "mem", connect_timeout_ms=500)

    class NoRecv:
        def send(self, key, data):
            raise AssertionError("called")

    class NotCallable:
        send = 5

        def recv(self, key, timeout):
            raise AssertionError("called")

    for bad in (NoRecv(), object(), NotCallable()):
        with pytest.raises((TypeError, ValueError)):
            tagwire.create_with_channels(d, 0, [None, bad])


@pytest.mark.parametrize("n", [2, 3])
def test_channels_p2p_and_collectives(make_channel_links, n):
    links, chans, box = make_channel_links(n)
    for r, l in enumerate(links):
        assert (l.rank, l.world_size) == (r, n)

    def party(r):
        l = links[r]
        l.send(l.next_rank(), "t", b"\x00hi\xff%d" % r)
        arr = np.arange(10, dtype=np.float32) + r
        l.send_async(l.next_rank(), "np", arr).wait()
        got = l.recv(l.prev_rank(), "t")
        out = np.empty(10, np.float32)
        l.recv_into(out, l.prev_rank(), "np")
        ag = l.all_gather(bytes([r]) * r, "ag")
        bc = l.broadcast(b"B\x00" if r == 0 else b"", 0, "bc")
        l.barrier("end")
        return got, out, ag, bc

    res = run_parties(n, party)
    for r, (got, out, ag, bc) in enumerate(res):
        p = (r - 1) % n
        assert got == b"\x00hi\xff%d" % p
        assert np.array_equal(out, np.arange(10, dtype=np.float32) + p)
        assert ag == [bytes([i]) * i for i in range(n)]
        assert bc == b"B\x00"
    # the channels were used, and keys are str
    assert any(c is not None and "send" in c.calls for c in chans[0])


def test_recv_returning_other_bytes_like(make_channel_links):
    class MVChannel(MailboxChannel):
        def recv(self, key, timeout):
            return memoryview(bytearray(super().recv(key, timeout)))

    links, _, _ = make_channel_links(2, cls=MVChannel)
    a, b = links
    a.send(1, "t", b"via memoryview")
    assert b.recv(0, "t") == b"via memoryview"


def test_handshake_over_one_message_per_key_mailbox():
    """A mailbox that holds one message per key (a second push waits for the
    first to be read, then raises): creation, messages and close must not
    need to queue two messages under one key."""
    box = Mailbox(capacity=1, full_wait=5.0)
    links, chans, _ = channel_links(2, box=box, timeout=40)
    a, b = links
    try:
        for i in range(3):
            a.send(1, "t", b"%d" % i)
            assert b.recv(0, "t") == b"%d" % i
        b.send(0, "u", b"back")
        assert a.recv(1, "u") == b"back"
    finally:
        close_all(links, timeout=40)
    assert box.overflows == []


def test_optional_test_send_recv_are_used():
    class Handshaking(MailboxChannel):
        def test_send(self, timeout):
            self._note("test_send")
            self.box.push(self.me, self.peer, "#hello", b"")

        def test_recv(self):
            self._note("test_recv")
            self.box.queue(self.peer, self.me, "#hello").get(timeout=10)

    links, chans, _ = channel_links(2, cls=Handshaking)
    try:
        for r in range(2):
            c = chans[r][1 - r]
            assert c.calls.count("test_send") == 1
            assert c.calls.count("test_recv") == 1
            assert c.calls.index("test_send") < c.calls.index("test_recv")
        links[0].send(1, "t", b"x")
        assert links[1].recv(0, "t") == b"x"
    finally:
        close_all(links)


def test_create_with_channels_times_out_without_peer():
    d = make_desc(2, "mem", connect_timeout_ms=300)
    box = Mailbox()
    chans = box.channels(0, 2)
    result = queue.Queue()

    def body():
        t0 = time.monotonic()
        try:
            tagwire.create_with_channels(d, 0, chans)
        except BaseException as e:  # noqa: BLE001
            result.put((e, time.monotonic() - t0))
        else:
            result.put((None, 0))

    threading.Thread(target=body, daemon=True).start()
    e, elapsed = result.get(timeout=20)
    assert isinstance(e, tagwire.TimeoutError), repr(e)
    assert 0.25 <= elapsed < 10


class Failing(MailboxChannel):
    """Raises `exc` from send or recv once `armed` is set."""
    exc = None
    armed = threading.Event()

    def send(self, key, data):
        if self.armed.is_set() and ":boom" in key:
            raise self.exc
        return super().send(key, data)

    def recv(self, key, timeout):
        if self.armed.is_set() and ":boomr" in key:
            raise self.exc
        return super().recv(key, timeout)


class MyChannelFailure(Exception):
    pass


def test_channel_exception_surfaces_as_channel_error():
    class F(Failing):
        armed = threading.Event()

    links, _, _ = channel_links(2, cls=F)
    a, b = links
    try:
        F.armed.set()
        F.exc = MyChannelFailure("send broke")
        with pytest.raises(tagwire.ChannelError) as ei:
            a.send(1, "boom", b"x")
        assert ei.value.__cause__ is F.exc
        assert isinstance(ei.value, tagwire.Error)
        F.exc = MyChannelFailure("recv broke")
        with pytest.raises(tagwire.ChannelError) as ei:
            b.recv(0, "boomr", timeout=5)
        assert ei.value.__cause__ is F.exc
    finally:
        for l in links:
            l.abort()
        close_all(links)


def test_keyboard_interrupt_in_channel_passes_through():
    class F(Failing):
        armed = threading.Event()

    links, _, _ = channel_links(2, cls=F)
    a, b = links
    try:
        F.armed.set()
        F.exc = KeyboardInterrupt()
        with pytest.raises(KeyboardInterrupt):
            a.send(1, "boom", b"x")
        with pytest.raises(KeyboardInterrupt):
            b.recv(0, "boomr", timeout=5)
        F.armed.clear()
        # the link is still usable afterwards
        a.send(1, "ok", b"fine")
        assert b.recv(0, "ok") == b"fine"
    finally:
        close_all(links)


def test_link_holds_channels_until_closed():
    box = Mailbox()
    d = make_desc(2, "mem")
    held = [[box.channels(r, 2) for r in range(2)]]
    refs = [weakref.ref(held[0][r][1 - r]) for r in range(2)]
    links = run_parties(
        2, lambda r: tagwire.create_with_channels(d, r, held[0][r]))
    held.clear()  # only the links refer to the channels now
    gc.collect()
    assert all(r() is not None for r in refs)
    links[0].send(1, "t", b"still here")
    assert links[1].recv(0, "t") == b"still here"
    kept = [r() for r in refs]
    close_all(links)
    assert [c.close_calls for c in kept] == [1, 1]
    del kept
    gc.collect()
    assert all(r() is None for r in refs), "the link kept its channels"


def test_abort_on_channel_link_wakes_recv():
    class Abortable(MailboxChannel):
        aborted = False

        def abort(self):
            self._note("abort")
            self.aborted = True
            self.closed.set()

        in_recv = threading.Event()

        def recv(self, key, timeout):
            if key.endswith(":never"):
                Abortable.in_recv.set()
            try:
                return super().recv(key, timeout)
            except ChannelClosed:
                if self.aborted:
                    raise tagwire.ClosedError("channel aborted") from None
                raise

    links, chans, _ = channel_links(2, cls=Abortable)
    a, b = links
    b.recv_timeout = None
    entering = threading.Event()
    result = queue.Queue()

    def blocked():
        entering.set()
        try:
            b.recv(0, "never")
        except BaseException as e:  # noqa: BLE001
            result.put(e)
        else:
            result.put(None)

    threading.Thread(target=blocked, daemon=True).start()
    assert entering.wait(10)
    # abort while the receive is inside the channel's recv: the channel's
    # abort wakes it with tagwire.ClosedError, which the link must report
    # as ClosedError (this side closed), not as a failing channel
    assert Abortable.in_recv.wait(10)
    b.abort()
    e = result.get(timeout=5)
    assert isinstance(e, tagwire.ClosedError), repr(e)
    assert "abort" in chans[1][0].calls
    close_all(links)


def test_peer_close_over_channels_gives_peer_error(make_channel_links):
    """The mailbox channel reports a closed peer as a socket would (its recv
    raises ConnectionError once the queue is empty): the link reports it as
    a failed peer, after what was delivered."""
    links, _, _ = make_channel_links(2)
    a, b = links
    b.send(0, "t", b"bye")
    b.close()
    assert a.recv(1, "t", timeout=10) == b"bye"
    with pytest.raises((tagwire.PeerError, tagwire.ChannelError)) as ei:
        a.recv(1, "t", timeout=10)
    assert ei.value.name == "TW_EPEER"
    if isinstance(ei.value, tagwire.ChannelError):
        assert isinstance(ei.value.__cause__, ConnectionError)


def test_gc_of_open_channel_link_warns_and_does_not_hang():
    links, chans, box = channel_links(2)
    ref = weakref.ref(chans[0][1])
    done = queue.Queue()

    def collect():
        with pytest.warns(ResourceWarning):
            del links[0]
            gc.collect()
        done.put(True)

    t = threading.Thread(target=collect, daemon=True)
    t.start()
    try:
        assert done.get(timeout=20)
    except queue.Empty:
        pytest.fail("garbage-collecting an open channel link hung")
    del chans[0]
    gc.collect()
    assert ref() is None, "the collected link still holds its channel"
    links[0].close()


def test_optional_send_async_and_wait_pending_are_used():
    class Async(MailboxChannel):
        def send_async(self, key, data):
            self._note("send_async")
            self.box.push(self.me, self.peer, key, bytes(data))

        def wait_pending(self):
            self._note("wait_pending")

    links, chans, _ = channel_links(2, cls=Async)
    a, b = links
    try:
        a.send_async(1, "t", b"async").wait()
        a.wait_pending()
        assert b.recv(0, "t") == b"async"
        calls = chans[0][1].calls
        assert "send_async" in calls
        assert "wait_pending" in calls
    finally:
        close_all(links)

