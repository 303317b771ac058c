"""tagwire.Engine, Memory and Transfer: the transfer engine binding."""

import gc
import itertools
import os
import select
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import tagwire

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "examples", "engine_numpy.py")

_seq = itertools.count()


def uniq(prefix):
    return f"{prefix}{os.getpid()}-{next(_seq)}"


def make_pair(transport, **opts):
    """Two engines connected to each other: (a, b, peer of b on a, peer of
    a on b).  b connects with a's info; a finds b by name."""
    a = tagwire.Engine(uniq("a"), **opts)
    b = tagwire.Engine(uniq("b"), **opts)
    if transport == "tcp":
        a.listen("tcp://127.0.0.1:0")
        b.listen("tcp://127.0.0.1:0")
    else:
        a.listen("mem://" + uniq("ma"))
        b.listen("mem://" + uniq("mb"))
    pa = b.connect(a.info())
    pb = a.accept(b.name, timeout=10)
    return a, b, pb, pa


@pytest.fixture(params=["tcp", "mem"])
def pair(request):
    a, b, pb, pa = make_pair(request.param)
    yield a, b, pb, pa
    b.close()
    a.close()


@pytest.fixture
def tcp_pair():
    a, b, pb, pa = make_pair("tcp")
    yield a, b, pb, pa
    b.close()
    a.close()


# ---------------------------------------------------------------------------
# Engines, options, connecting


def test_module_constants():
    assert tagwire.ACCESS_READ == 1
    assert tagwire.ACCESS_WRITE == 2
    assert isinstance(tagwire.Engine, type)
    assert isinstance(tagwire.Memory, type)
    assert isinstance(tagwire.Transfer, type)


def test_options_attributes_and_set():
    with tagwire.Engine(uniq("o"), stripes=3) as e:
        assert e.stripes == 3
        assert e.chunk_size == 1 << 20 and e.window == 16
        e.chunk_size = 64 << 10
        e.set("window", 4)
        e.set("heartbeat_ms", 0)
        e.max_msg_size = 4096
        e.connect_timeout_ms = 5000
        e.shm_local = 1
        assert (e.chunk_size, e.window, e.heartbeat_ms, e.max_msg_size,
                e.connect_timeout_ms, e.shm_local) == (
                    64 << 10, 4, 0, 4096, 5000, 1)
        with pytest.raises(ValueError):
            e.stripes = 0
        with pytest.raises(ValueError):
            e.set("no_such_option", 1)
        with pytest.raises(TypeError):
            e.window = "8"
        assert e.stripes == 3
        e.listen("tcp://127.0.0.1:0")
        with pytest.raises(ValueError):
            e.stripes = 2  # too late
        assert e.stripes == 3


def test_invalid_names_and_addresses():
    with pytest.raises(ValueError):
        tagwire.Engine("bad name")
    with pytest.raises(ValueError):
        tagwire.Engine("x" * 65)
    with tagwire.Engine(uniq("n")) as e:
        e.set_secret(b"s" * 16)
        with pytest.raises(TypeError):
            e.set_secret("a str")
        with pytest.raises(ValueError):
            e.set_secret(bytes(1025))
        with pytest.raises(ValueError):
            e.info()  # not listening
        with pytest.raises(ValueError):
            e.listen("udp://nowhere")
        with pytest.raises(ValueError):
            e.listen("mem://bad name")


@pytest.mark.parametrize("transport", ["tcp", "mem"])
def test_connect_accept_by_name(transport):
    a, b, pb, pa = make_pair(transport)
    try:
        assert isinstance(pa, int) and isinstance(pb, int)
        assert a.peer_name(pb) == b.name
        assert b.peer_name(pa) == a.name
        # accept is a lookup, connect again gives the same peer
        assert a.accept(b.name, timeout=0) == pb
        assert b.connect(a.info()) == pa
        with pytest.raises(ValueError):
            a.peer_name(pb + 1000)
        with pytest.raises(ValueError):
            a.peer_name(-1)
        with pytest.raises(TypeError):
            a.peer_name("1")
        assert a.peer_name(np.uint32(pb)) == b.name
    finally:
        b.close()
        a.close()


def test_connect_to_mem_and_secret():
    addr = "mem://" + uniq("ct")
    a = tagwire.Engine(uniq("a"))
    b = tagwire.Engine(uniq("b"))
    try:
        a.set_secret(b"shared-secret")
        b.set_secret(b"shared-secret")
        a.listen(addr)
        pa = b.connect_to(addr, a.name)
        pb = a.accept(b.name, timeout=10)
        assert a.peer_name(pb) == b.name and b.peer_name(pa) == a.name
    finally:
        b.close()
        a.close()


def test_accept_timeout():
    with tagwire.Engine(uniq("acc")) as e:
        e.listen("tcp://127.0.0.1:0")
        with pytest.raises(tagwire.TimeoutError):
            e.accept("nobody", timeout=0.1)
        with pytest.raises(TimeoutError):  # also the builtin
            e.accept("nobody", timeout=0)


# ---------------------------------------------------------------------------
# Tagged transfers


def exchange(a, b, pb, pa, send_mem, recv_mem, length, tag, timeout=10):
    """b sends send_mem[0:length] to a's recv_mem; both wait."""
    rx = a.transfer(pb, timeout=timeout)
    rx.post_recv(recv_mem, 0, length, tag)
    tx = b.transfer(pa, timeout=timeout)
    tx.post_send(send_mem, 0, length, tag)
    tx.wait()
    rx.wait()
    assert tx.test() is True and rx.test() is True
    rx.close()
    tx.close()


def test_send_recv_numpy(pair):
    a, b, pb, pa = pair
    src = np.random.default_rng(1).standard_normal(300_000)  # 2.4 MB
    dst = np.zeros_like(src)
    ms, md = b.register(src), a.register(dst)
    exchange(a, b, pb, pa, ms, md, src.nbytes, 42)
    assert np.array_equal(src, dst)
    ms.deregister()
    md.deregister()


def test_send_recv_bytearray_offsets_and_tags(pair):
    a, b, pb, pa = pair
    src = bytearray(os.urandom(10_000))
    dst = bytearray(20_000)
    ms, md = b.register(src), a.register(dst)
    # Two receives with different tags into two halves, posted in the
    # opposite order of the sends: tags match, not order.
    rx = a.transfer(pb, timeout=10)
    rx.post_recv(md, 10_000, 4_000, 2)
    rx.post_recv(md, 0, 6_000, 1)
    tx = b.transfer(pa, timeout=10)
    tx.post_send(ms, 0, 6_000, 1)
    tx.post_send(ms, 6_000, 4_000, 2)
    tx.wait()
    rx.wait()
    assert dst[:6_000] == src[:6_000]
    assert dst[10_000:14_000] == src[6_000:10_000]
    assert dst[6_000:10_000] == bytes(4_000)
    assert dst[14_000:] == bytes(6_000)


def test_large_tag_and_striping():
    a, b, pb, pa = make_pair("tcp", stripes=4, chunk_size=64 << 10)
    try:
        src = np.arange(1 << 20, dtype=np.uint32)
        dst = np.zeros_like(src)
        exchange(a, b, pb, pa, b.register(src), a.register(dst),
                 src.nbytes, 2**64 - 1)
        assert np.array_equal(src, dst)
        st = b.stats(pa)
        assert st["bytes_sent"] == src.nbytes
        assert st["xfers_done"] == 1 and st["xfers_failed"] == 0
        assert a.stats(pb)["bytes_recv"] == src.nbytes
        with pytest.raises(ValueError):
            b.transfer(pa).post_send(b.register(src), 0, 4, 2**64)
        with pytest.raises(ValueError):
            b.transfer(pa).post_send(b.register(src), 0, 4, -1)
    finally:
        b.close()
        a.close()


def test_length_mismatch_truncated(pair):
    a, b, pb, pa = pair
    ms = b.register(bytearray(b"x" * 1000))
    md = a.register(bytearray(1000))
    rx = a.transfer(pb, timeout=10)
    rx.post_recv(md, 0, 500, 9)
    tx = b.transfer(pa, timeout=10)
    tx.post_send(ms, 0, 1000, 9)
    with pytest.raises(tagwire.TruncatedError):
        tx.wait()
    with pytest.raises(tagwire.TruncatedError):
        rx.wait()
    with pytest.raises(tagwire.TruncatedError):
        rx.test()  # the error stays
    assert b.stats(pa)["xfers_failed"] == 1


def test_out_of_range_posts(pair):
    a, b, pb, pa = pair
    m = b.register(bytearray(100))
    x = b.transfer(pa)
    with pytest.raises(ValueError):
        x.post_send(m, 0, 101, 1)
    with pytest.raises(ValueError):
        x.post_send(m, 100, 1, 1)
    with pytest.raises(ValueError):
        x.post_recv(m, 50, 51, 1)
    with pytest.raises(ValueError):
        x.post_send(m, -1, 10, 1)
    with pytest.raises(ValueError):
        x.post_write(m, 0, 12345, 0, 200)
    with pytest.raises(TypeError):
        x.post_send(bytearray(10), 0, 10, 1)  # not a Memory
    # Another engine's Memory
    other = a.register(bytearray(10))
    with pytest.raises(ValueError):
        x.post_send(other, 0, 10, 1)
    # A remote range outside the registration fails the transfer there.
    rm = a.register(bytearray(100))
    rid = b.unpack(pa, rm.pack())
    x.post_write(m, 0, rid, 50, 100)
    with pytest.raises(ValueError):
        x.wait(10)
    with pytest.raises(ValueError):
        b.unpack(pa, b"garbage")


def test_empty_transfer_completes(pair):
    a, b, pb, pa = pair
    x = b.transfer(pa)
    x.wait(10)
    assert x.test() is True


# ---------------------------------------------------------------------------
# One-sided


def test_write_and_read(pair):
    a, b, pb, pa = pair
    target = np.zeros(4096, dtype=np.int64)
    tmem = a.register(target)  # READ | WRITE by default (writable)
    assert tmem.access == tagwire.ACCESS_READ | tagwire.ACCESS_WRITE
    rid = b.unpack(pa, tmem.pack())
    assert isinstance(rid, int)
    src = np.arange(4096, dtype=np.int64) * 3
    smem = b.register(src)
    x = b.transfer(pa, timeout=10)
    x.post_write(smem, 8 * 100, rid, 8 * 200, 8 * 1000)
    x.wait()
    assert np.array_equal(target[200:1200], src[100:1100])
    assert not target[:200].any() and not target[1200:].any()
    # READ it back into a fresh buffer
    back = bytearray(8 * 1000)
    bmem = b.register(back)
    y = b.transfer(pa, timeout=10)
    y.post_read(bmem, 0, rid, 8 * 200, 8 * 1000)
    y.wait()
    assert np.array_equal(np.frombuffer(back, dtype=np.int64),
                          src[100:1100])


def test_access_enforced_by_target(pair):
    a, b, pb, pa = pair
    ro = a.register(bytearray(64), tagwire.ACCESS_READ)
    rid = b.unpack(pa, ro.pack())
    m = b.register(bytearray(64))
    x = b.transfer(pa, timeout=10)
    x.post_write(m, 0, rid, 0, 64)
    with pytest.raises(ValueError):
        x.wait()
    local = a.register(bytearray(64), 0)  # local use only
    rid2 = b.unpack(pa, local.pack())
    y = b.transfer(pa, timeout=10)
    y.post_read(m, 0, rid2, 0, 64)
    with pytest.raises(ValueError):
        y.wait()


def test_notification_after_write(pair):
    a, b, pb, pa = pair
    n = 1 << 18  # 2 MiB of float64, several chunks
    dst = np.zeros(n)
    dmem = a.register(dst, tagwire.ACCESS_WRITE)  # lives while registered
    rid = b.unpack(pa, dmem.pack())
    src = np.empty(n)
    smem = b.register(src, tagwire.ACCESS_READ)
    for round_ in range(1, 6):
        src[:] = round_
        x = b.transfer(pa, timeout=10)
        x.post_write(smem, 0, rid, 0, src.nbytes)
        x.notify(f"round {round_}".encode())
        # a learns of the data from the notification alone
        peer, note = a.recv_notify(timeout=10)
        assert peer == pb
        assert note == f"round {round_}".encode()
        assert (dst == round_).all(), f"round {round_}: data after note"
        x.wait()
        x.close()
        a.notify(pb, b"ack")  # b writes the next round after this
        assert b.recv_notify(timeout=10) == (pa, b"ack")
    with pytest.raises(ValueError):
        y = b.transfer(pa)
        y.notify(b"one")
        y.notify(b"two")  # one notification per transfer


def test_post_after_notify_refused(pair):
    a, b, pb, pa = pair
    m = b.register(bytearray(8))
    x = b.transfer(pa)
    x.notify(memoryview(b"note"))
    with pytest.raises(ValueError):
        x.post_send(m, 0, 8, 1)
    x.wait(10)
    assert a.recv_notify(timeout=10) == (pb, b"note")


def test_notify_alone_and_recv_notify_timeout(pair):
    a, b, pb, pa = pair
    with pytest.raises(tagwire.TimeoutError):
        a.recv_notify(timeout=0.1)
    with pytest.raises(tagwire.TimeoutError):
        a.recv_notify(timeout=0)
    for i in range(5):
        b.notify(pa, b"n%d" % i)
    assert [a.recv_notify(timeout=10) for _ in range(5)] == [
        (pb, b"n%d" % i) for i in range(5)]
    with pytest.raises(tagwire.TimeoutError):
        a.recv_notify(timeout=0)
    with pytest.raises(ValueError):
        b.notify(pa + 1000, b"x")


def test_notification_too_big():
    a, b, pb, pa = make_pair("tcp", max_msg_size=1024)
    try:
        with pytest.raises(tagwire.TooBigError):
            b.notify(pa, bytes(2048))
        b.notify(pa, bytes(1024))
        assert a.recv_notify(timeout=10) == (pb, bytes(1024))
    finally:
        b.close()
        a.close()


def test_transfer_reporting_and_repr(pair):
    a, b, pb, pa = pair
    m = b.register(bytearray(16))
    md = a.register(bytearray(16))
    x = b.transfer(pa, timeout=10)
    assert "peer" in repr(x) and "closed" not in repr(x)
    x.post_send(m, 0, 16, 1)  # repr() reported nothing
    with a.transfer(pb, timeout=10) as rx:
        rx.post_recv(md, 0, 16, 1)
        rx.wait()
        assert rx.peer == pb and rx.engine is a
    assert rx.closed
    x.wait()
    # Reported finished: it takes no more posts (repost runs it again).
    with pytest.raises(ValueError):
        x.post_send(m, 0, 16, 2)
    with pytest.raises(TypeError):
        tagwire.Transfer()
    with pytest.raises(TypeError):
        tagwire.Memory()


# ---------------------------------------------------------------------------
# Timeouts, reap, repost


def test_transfer_deadline_timeout(pair):
    a, b, pb, pa = pair
    m = b.register(bytearray(100))
    x = b.transfer(pa, timeout=0.2)
    x.post_send(m, 0, 100, 77)  # a never posts the receive
    with pytest.raises(tagwire.TimeoutError):
        x.wait()
    with pytest.raises(tagwire.TimeoutError):
        x.test()
    assert b.stats(pa)["xfers_failed"] == 1


def test_wait_timeout_then_close(pair):
    a, b, pb, pa = pair
    buf = bytearray(100)
    m = b.register(buf)
    x = b.transfer(pa)  # no deadline
    x.post_send(m, 0, 100, 5)
    with pytest.raises(tagwire.TimeoutError):
        x.wait(0.1)
    assert x.test() is False  # still going
    assert x.closed is False
    x.close()
    assert x.closed is True
    x.close()  # idempotent
    with pytest.raises(tagwire.ClosedError):
        x.test()
    with pytest.raises(tagwire.ClosedError):
        x.wait(0)
    # Its memory is free again
    m.deregister()
    assert not m.registered
    buf.extend(b"x")


def test_fileno_and_reap(pair):
    a, b, pb, pa = pair
    fd = b.fileno()
    assert isinstance(fd, int) and fd >= 0
    assert select.select([fd], [], [], 0)[0] == []
    assert b.reap() == []
    ms, md = b.register(bytearray(b"r" * 5000)), a.register(bytearray(5000))
    rx = a.transfer(pb, timeout=10)
    rx.post_recv(md, 0, 5000, 3)
    tx = b.transfer(pa, timeout=10)
    tx.post_send(ms, 0, 5000, 3)
    r, _, _ = select.select([fd], [], [], 10)
    assert r == [fd]
    done = b.reap()
    assert done == [tx] and done[0] is tx
    assert tx.test() is True
    assert b.reap() == []  # each once
    assert select.select([fd], [], [], 0)[0] == []
    rx.wait()
    # A closed transfer is never reaped.
    fast = b.transfer(pa, timeout=0.05)
    fast.post_send(ms, 0, 10, 99)
    with pytest.raises(tagwire.TimeoutError):
        fast.wait()
    slow = b.transfer(pa, timeout=10)
    slow.post_send(ms, 0, 10, 98)
    srx = a.transfer(pb, timeout=10)
    srx.post_recv(md, 0, 10, 98)
    srx.wait()
    assert select.select([fd], [], [], 10)[0] == [fd]
    fast.close()
    del fast
    gc.collect()
    # The descriptor may have turned readable for fast's failure: slow
    # completes when the receiver's word comes back, which can be after
    # srx.wait() returned.  Whatever comes, fast never does.
    got, end = b.reap(), time.monotonic() + 10
    while not got and time.monotonic() < end:
        select.select([fd], [], [], max(0.0, end - time.monotonic()))
        got = b.reap()
    assert got == [slow]
    # Failed transfers are reaped too, and a dead one vanishes.
    f = b.transfer(pa, timeout=0.05)
    f.post_send(ms, 0, 10, 100)
    assert select.select([fd], [], [], 10)[0] == [fd]
    assert b.reap() == [f]
    g = b.transfer(pa, timeout=0.05)
    g.post_send(ms, 0, 10, 101)
    with pytest.raises(tagwire.TimeoutError):
        g.wait()
    del g
    assert b.reap() == []


def test_repost(pair):
    a, b, pb, pa = pair
    src = np.zeros(1000, dtype=np.int32)
    dst = np.zeros(1000, dtype=np.int32)
    dmem = a.register(dst)
    rid = b.unpack(pa, dmem.pack())
    x = b.transfer(pa, timeout=10)
    src[:] = 1  # before the post: posts start at once
    x.post_write(b.register(src), 0, rid, 0, src.nbytes)  # x keeps it
    x.wait()
    assert (dst == 1).all()
    with pytest.raises(ValueError):
        x.post_write(x.engine.register(src), 0, rid, 0, 4)  # reported
    for i in range(2, 5):
        src[:] = i
        x.repost()
        x.wait()
        assert (dst == i).all()


def test_disconnect_fails_transfers(pair):
    a, b, pb, pa = pair
    m = b.register(bytearray(10))
    x = b.transfer(pa)
    x.post_send(m, 0, 10, 1)
    b.disconnect(pa)
    with pytest.raises(tagwire.ClosedError):
        x.wait(10)
    with pytest.raises(ValueError):
        b.transfer(pa)  # unknown peer now
    with pytest.raises(ValueError):
        b.disconnect(pa)


# ---------------------------------------------------------------------------
# Registration rules and reference counts


def test_register_type_rules():
    with tagwire.Engine(uniq("r")) as e:
        with pytest.raises(TypeError):
            e.register(b"read-only", tagwire.ACCESS_WRITE)
        with pytest.raises(TypeError):
            e.register(memoryview(bytearray(8)).toreadonly(),
                       tagwire.ACCESS_READ | tagwire.ACCESS_WRITE)
        with pytest.raises(TypeError):
            e.register("a str")
        with pytest.raises(TypeError):
            e.register(12)
        with pytest.raises((TypeError, ValueError)):
            e.register(np.zeros((10, 10))[:, 1])  # not contiguous
        with pytest.raises(ValueError):
            e.register(bytearray())
        with pytest.raises(ValueError):
            e.register(bytearray(8), 4)
        ro = e.register(b"read-only bytes")  # default: READ only
        assert ro.access == tagwire.ACCESS_READ and not ro.writable
        assert len(ro) == 15 and ro.id > 0
        arr = np.zeros(8)
        arr.flags.writeable = False
        ro2 = e.register(arr)
        assert not ro2.writable
        rw = e.register(bytearray(8), tagwire.ACCESS_READ)
        assert rw.writable and rw.access == tagwire.ACCESS_READ
        e.listen("mem://" + uniq("reg"))
        peer = tagwire.Engine(uniq("p"))
        try:
            p = peer.connect(e.info())
            q = e.accept(peer.name, timeout=10)
            x = e.transfer(q)
            with pytest.raises(TypeError):
                x.post_recv(ro, 0, 4, 1)  # into a read-only buffer
            rid = e.unpack(q, peer.register(bytearray(8)).pack())
            with pytest.raises(TypeError):
                x.post_read(ro2, 0, rid, 0, 8)
            x.post_send(ro, 0, 4, 1)  # reading it is fine
            assert p
        finally:
            peer.close()


def test_refcount_register_deregister():
    with tagwire.Engine(uniq("rc")) as e:
        buf = bytearray(1000)
        arr = np.zeros(100)
        base_buf, base_arr = sys.getrefcount(buf), sys.getrefcount(arr)
        m = e.register(buf)
        n = e.register(arr)
        assert sys.getrefcount(buf) > base_buf
        assert sys.getrefcount(arr) > base_arr
        with pytest.raises(BufferError):
            buf.extend(b"x")  # pinned
        with pytest.raises(ValueError):
            arr.resize(200)
        m.deregister()
        m.deregister()  # idempotent
        e.deregister(n)
        assert sys.getrefcount(buf) == base_buf
        assert sys.getrefcount(arr) == base_arr
        buf.extend(b"x")
        assert len(buf) == 1001
        with pytest.raises(tagwire.ClosedError):
            m.pack()
        # A Memory that dies releases its buffer.
        m2 = e.register(buf)
        with pytest.raises(BufferError):
            buf.append(1)
        del m2
        assert sys.getrefcount(buf) == base_buf
        buf.append(1)
        # As a context manager
        with e.register(buf) as m3:
            assert m3.registered
        assert sys.getrefcount(buf) == base_buf


def test_refcount_engine_close():
    e = tagwire.Engine(uniq("rc"))
    bufs = [bytearray(100) for _ in range(5)]
    base = [sys.getrefcount(b) for b in bufs]
    mems = [e.register(b) for b in bufs]
    e.close()
    assert [sys.getrefcount(b) for b in bufs] == base
    assert not any(m.registered for m in mems)
    for b in bufs:
        b.extend(b"more")
    # Engine garbage-collected with Memories alive: they keep it.
    e2 = tagwire.Engine(uniq("rc"))
    buf = bytearray(10)
    b0 = sys.getrefcount(buf)
    m = e2.register(buf)
    del e2
    assert m.registered
    assert sys.getrefcount(buf) > b0
    del m  # the Memory, then the Engine, go
    assert sys.getrefcount(buf) == b0


def test_refcount_after_transfers(pair):
    a, b, pb, pa = pair
    src, dst = bytearray(os.urandom(3000)), bytearray(3000)
    bs, bd = sys.getrefcount(src), sys.getrefcount(dst)
    ms, md = b.register(src), a.register(dst)
    exchange(a, b, pb, pa, ms, md, 3000, 11)
    assert dst == src
    ms.deregister()
    md.deregister()
    assert (sys.getrefcount(src), sys.getrefcount(dst)) == (bs, bd)


def test_deregister_while_in_use():
    a, b, pb, pa = make_pair("mem")
    try:
        buf = bytearray(100)
        m = b.register(buf)
        x = b.transfer(pa)
        x.post_send(m, 0, 100, 1)
        with pytest.raises(tagwire.Error) as ei:
            m.deregister()
        assert ei.value.name == "TW_EAGAIN"
        assert m.registered
        with pytest.raises(BufferError):
            buf.extend(b"x")  # still pinned
        # the transfer still works
        md = a.register(bytearray(100))
        rx = a.transfer(pb)
        rx.post_recv(md, 0, 100, 1)
        x.wait(10)
        rx.wait(10)
        m.deregister()  # finished: allowed now
        assert not m.registered
        buf.extend(b"x")
        with pytest.raises(tagwire.ClosedError):
            b.transfer(pa).post_send(m, 0, 10, 1)
    finally:
        b.close()
        a.close()


def test_transfer_keeps_memory_and_engine_alive():
    a, b, pb, pa = make_pair("tcp")
    try:
        src = bytearray(b"k" * 4096)
        dst = bytearray(4096)
        base = sys.getrefcount(src)
        rx = a.transfer(pb, timeout=10)
        rx.post_recv(a.register(dst), 0, 4096, 8)  # no other reference
        tx = b.transfer(pa, timeout=10)
        tx.post_send(b.register(src), 0, 4096, 8)
        gc.collect()
        tx.wait()
        rx.wait()
        assert dst == src
        del tx
        gc.collect()
        assert sys.getrefcount(src) == base  # Memory died with tx
        # The engine lives while a Transfer refers to it
        eng = tagwire.Engine(uniq("alive"))
        eng.listen("mem://" + uniq("alive"))
        a.connect(eng.info())
        q = eng.accept(a.name, timeout=10)
        x = eng.transfer(q, timeout=10)
        del eng
        gc.collect()
        assert not x.engine.closed
        assert x.engine.peer_name(q) == a.name
        x.wait()
        x.engine.close()
        assert x.closed
    finally:
        b.close()
        a.close()


def test_gc_cycles():
    class Holder:
        pass

    a, b, pb, pa = make_pair("mem")
    try:
        h = Holder()
        h.data = bytearray(256)
        base = sys.getrefcount(h.data)
        data = h.data
        # h -> Memory -> (buffer of) h.data; h -> Transfer -> Memory
        h.mem = b.register(memoryview(h.data))
        h.xfer = b.transfer(pa)
        h.xfer.post_send(h.mem, 0, 256, 4)  # in flight, never received
        h.self = h
        del h
        gc.collect()
        assert sys.getrefcount(data) == base
        data.extend(b"free")
    finally:
        b.close()
        a.close()


# ---------------------------------------------------------------------------
# Closing


def test_use_after_close():
    a, b, pb, pa = make_pair("tcp")
    mem = b.register(bytearray(64))
    rm = a.register(bytearray(64))
    rid = b.unpack(pa, rm.pack())
    x = b.transfer(pa)
    x.post_write(mem, 0, rid, 0, 64)
    x.wait(10)
    pending = b.transfer(pa)
    pending.post_send(mem, 0, 64, 1)  # never matched
    b.close()
    b.close()  # idempotent
    assert b.closed and x.closed and pending.closed
    assert not mem.registered
    calls = [
        lambda: mem.pack(), lambda: mem.deregister(),
        lambda: x.test(), lambda: x.wait(), lambda: x.repost(),
        lambda: x.post_send(mem, 0, 1, 1), lambda: x.notify(b"n"),
        lambda: pending.wait(0),
        lambda: b.listen("tcp://127.0.0.1:0"), lambda: b.info(),
        lambda: b.connect(a.info()), lambda: b.transfer(pa),
        lambda: b.register(bytearray(8)), lambda: b.deregister(mem),
        lambda: b.unpack(pa, rm.pack()), lambda: b.fileno(),
        lambda: b.reap(), lambda: b.notify(pa, b"x"),
        lambda: b.recv_notify(timeout=0), lambda: b.accept("x"),
        lambda: b.stats(pa), lambda: b.peer_name(pa),
        lambda: b.disconnect(pa), lambda: b.set("window", 2),
    ]
    for i, call in enumerate(calls):
        with pytest.raises(tagwire.ClosedError):
            call()
    x.close()  # fine
    repr(x), repr(mem), repr(b)
    # the peer sees the engine go: a's transfers to it fail
    y = a.transfer(pb, timeout=10)
    y.post_send(rm, 0, 64, 2)
    with pytest.raises((tagwire.PeerError, tagwire.TimeoutError)):
        y.wait()
    a.close()


def test_context_manager():
    with tagwire.Engine(uniq("cm")) as e:
        e.listen("tcp://127.0.0.1:0")
        assert not e.closed
    assert e.closed
    with pytest.raises(tagwire.ClosedError):
        e.info()
    with pytest.raises(tagwire.ClosedError):
        with e:
            pass


def test_close_ends_blocking_calls_of_other_threads(tcp_pair):
    a, b, pb, pa = tcp_pair
    m = a.register(bytearray(10))
    x = a.transfer(pb)
    x.post_send(m, 0, 10, 1)  # never received
    errors = {}
    started = threading.Barrier(3)

    def run(key, fn):
        started.wait()
        try:
            fn()
        except BaseException as e:  # noqa: BLE001
            errors[key] = e

    threads = [
        threading.Thread(target=run, args=("note", a.recv_notify)),
        threading.Thread(target=run, args=("wait", x.wait)),
    ]
    for t in threads:
        t.start()
    started.wait()
    a.close()
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    # Each either ran into the close or had not started its call yet.
    assert set(errors) == {"note", "wait"}
    assert all(isinstance(e, tagwire.ClosedError) for e in errors.values())


def test_transfer_close_ends_wait_of_other_thread(tcp_pair):
    a, b, pb, pa = tcp_pair
    m = a.register(bytearray(10))
    x = a.transfer(pb)
    x.post_send(m, 0, 10, 1)
    err = []
    started = threading.Event()

    def waiter():
        started.set()
        try:
            x.wait()
        except tagwire.ClosedError as e:
            err.append(e)

    t = threading.Thread(target=waiter)
    t.start()
    started.wait()
    x.close()
    t.join(10)
    assert not t.is_alive() and len(err) == 1
    m.deregister()


def test_ctrl_c_interrupts_recv_notify():
    code = (
        "import tagwire, sys\n"
        "e = tagwire.Engine('sig')\n"
        "e.listen('mem://sig')\n"
        "try:\n"
        "    print('ready', flush=True)\n"
        "    e.recv_notify()\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
        "    sys.exit(3)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         text=True, env=os.environ.copy())
    try:
        assert p.stdout.readline().strip() == "ready"
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 3 and "interrupted" in out


# ---------------------------------------------------------------------------
# The example


def test_example_engine_numpy():
    r = subprocess.run([sys.executable, EXAMPLE, "200000"],
                       capture_output=True, text=True, timeout=100,
                       env=os.environ.copy())
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1] == "engine_numpy: OK"
    expect = float((np.arange(200000, dtype=np.float32)
                    * np.float32(0.5)).astype(np.float64).sum())
    assert f"checksum {expect:.1f}" in lines[0]
    assert f"b'array-ready', checksum {expect:.1f}" in lines[1]
    assert "bytes_sent=800000 xfers_done=1" in lines[2]
