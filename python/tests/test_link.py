"""tagwire.Link: creation, point-to-point messages, buffers, timeouts,
requests, probes, collectives, child links, close/abort, GC."""

import array
import gc
import hashlib
import queue
import sys
import threading
import time
import weakref

import numpy as np
import pytest

import tagwire
from conftest import (SCHEMES, close_all, create_links, free_tcp_ports, make_desc, run_parallel,
                      run_parties, unique_name)


# ---------------------------------------------------------------------------
# Creation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("n", [2, 3])
def test_create_one_thread_per_party(scheme, n):
    d = make_desc(n, scheme)
    links = create_links(d)
    try:
        for r, l in enumerate(links):
            assert l.rank == r
            assert l.world_size == n
            assert l.id == d.link_id

        # A ring exchange shows every party is connected.
        def ring(r):
            l = links[r]
            l.send(l.next_rank(), "ring", b"from %d" % r)
            return l.recv(l.prev_rank(), "ring")

        got = run_parties(n, ring)
        assert got == [b"from %d" % ((r - 1) % n) for r in range(n)]
    finally:
        close_all(links)


def test_sequential_creation_in_one_thread_times_out():
    d = make_desc(2, "mem", connect_timeout_ms=300)
    result = queue.Queue()

    def body():
        out = []
        for r in range(2):
            t0 = time.monotonic()
            try:
                link = tagwire.create(d, r)
            except BaseException as e:  # noqa: BLE001
                out.append((type(e), time.monotonic() - t0))
            else:
                link.abort()
                link.close()
                out.append((None, time.monotonic() - t0))
        result.put(out)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    try:
        out = result.get(timeout=20)
    except queue.Empty:
        pytest.fail("sequential creation hung instead of timing out")
    for kind, elapsed in out:
        assert kind is tagwire.TimeoutError, out
        assert issubclass(kind, TimeoutError)
        assert 0.25 <= elapsed < 10, out


def test_create_invalid_rank_and_desc():
    d = make_desc(2, "mem")
    with pytest.raises(ValueError):
        tagwire.create(d, 2)
    with pytest.raises((ValueError, OverflowError)):
        tagwire.create(d, -1)
    with pytest.raises(TypeError):
        tagwire.create("not a desc", 0)
    with pytest.raises(ValueError):
        tagwire.create(tagwire.Desc("empty"), 0)


def test_desc_from_env(monkeypatch):
    monkeypatch.setenv("TAGWIRE_PARTIES", "A=mem://a1,B=mem://b1")
    monkeypatch.setenv("TAGWIRE_RANK", "1")
    monkeypatch.delenv("TAGWIRE_LINK_ID", raising=False)
    d, rank = tagwire.Desc.from_env()
    assert rank == 1
    assert d.parties == (("A", "mem://a1"), ("B", "mem://b1"))
    monkeypatch.setenv("TAGWIRE_PARTIES", "mem://a2,mem://b2")
    monkeypatch.setenv("TAGWIRE_RANK", "0")
    d, rank = tagwire.Desc.from_env()
    assert rank == 0 and [a for _, a in d.parties] == ["mem://a2", "mem://b2"]
    d.connect_timeout_ms = 10_000
    links = create_links(d)
    try:
        links[0].send(1, "x", b"env")
        assert links[1].recv(0, "x") == b"env"
    finally:
        close_all(links)


def test_desc_set_root_three_parties_meet_through_rank_0():
    (port,) = free_tcp_ports(1)
    d = tagwire.Desc(unique_name("rdv"))
    d.set_root(f"tcp://127.0.0.1:{port}", 3)
    d.set_secret(b"rendezvous")
    d.connect_timeout_ms = 20_000
    assert d.parties == ()
    with pytest.raises(ValueError):
        d.add_party("p0", "tcp://127.0.0.1:1")
    links = create_links(d, 3)
    try:
        assert [l.world_size for l in links] == [3, 3, 3]
        got = run_parties(3, lambda r: links[r].all_gather(bytes([r])))
        assert got == [[b"\x00", b"\x01", b"\x02"]] * 3
    finally:
        close_all(links)


def test_desc_set_root_rejects_bad_values():
    d = tagwire.Desc("rdv")
    for args in [("mem://x", 2), ("tcp://127.0.0.1:0", 2), ("tcp://127.0.0.1:5", 0),
                 ("tcp://127.0.0.1:5", 65537), ("tcp://127.0.0.1:5", 2, "tcp://0.0.0.0:0")]:
        with pytest.raises(ValueError):
            d.set_root(*args)
    d.set_root("tcp://127.0.0.1:5", 2, bind="tcp://127.0.0.1:0")
    with pytest.raises(TypeError):
        d.set_root("tcp://127.0.0.1:5")


def test_import_starts_no_threads():
    import os
    import subprocess

    from conftest import PYTHON
    code = (
        "import os, threading\n"
        "a = (threading.active_count(), len(os.listdir('/proc/self/task')))\n"
        "import tagwire\n"
        "d = tagwire.Desc('x'); d.add_party('A', 'mem://a')\n"
        "b = (threading.active_count(), len(os.listdir('/proc/self/task')))\n"
        "print(a == b, a, b)\n")
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True,
                         timeout=60, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("True"), out.stdout


# ---------------------------------------------------------------------------
# Point to point: buffers
# ---------------------------------------------------------------------------


def _buffers():
    return [
        ("bytes", b"hello\x00\xff", b"hello\x00\xff"),
        ("bytearray", bytearray(b"ba\x00ta"), b"ba\x00ta"),
        ("memoryview", memoryview(b"0123456789")[2:7], b"23456"),
        ("array_d", array.array("d", [1.5, -2.25, 3.0]),
         array.array("d", [1.5, -2.25, 3.0]).tobytes()),
        ("array_i", array.array("i", range(100)),
         array.array("i", range(100)).tobytes()),
    ] + [
        (f"np_{dt}", (np.arange(24) % 7).astype(dt).reshape(4, 6),
         (np.arange(24) % 7).astype(dt).tobytes())
        for dt in ("uint8", "int16", "int32", "int64", "float32", "float64",
                   "complex128", "bool")
    ] + [
        ("np_0d", np.float64(3.5).reshape(()), np.float64(3.5).tobytes()),
        ("np_contig_rows", np.arange(30, dtype="i4").reshape(5, 6)[1:3],
         np.arange(30, dtype="i4").reshape(5, 6)[1:3].tobytes()),
    ]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_p2p_every_buffer_type(make_links, scheme):
    a, b = make_links(2, scheme)
    bufs = _buffers()
    for name, obj, want in bufs:
        a.send(1, name, obj)
    for name, obj, want in bufs:
        got = b.recv(0, name)
        assert type(got) is bytes, name
        assert got == want, name
    # and the other way, with numpy on the receiving side
    arr = np.linspace(0, 1, 1000)
    b.send(0, "np", arr)
    out = np.empty_like(arr)
    assert a.recv_into(out, 1, "np") == arr.nbytes
    assert np.array_equal(out, arr)


def test_p2p_rejects_non_contiguous_and_str(make_links):
    a, b = make_links(2)
    m = np.arange(100, dtype="i4").reshape(10, 10)
    with pytest.raises((TypeError, ValueError)):
        a.send(1, "t", m[:, ::2])
    with pytest.raises((TypeError, ValueError)):
        a.send(1, "t", m.T)
    with pytest.raises(TypeError):
        a.send(1, "t", "a str")
    with pytest.raises(TypeError):
        a.send_async(1, "t", "a str")
    with pytest.raises(TypeError):
        a.send_async_throttled(1, "t", "a str")
    with pytest.raises(TypeError):
        a.send(1, "t", 12345)
    with pytest.raises(TypeError):
        a.send(1, "t", None)
    # read-only or non-contiguous target of recv_into
    a.send(1, "t", b"xyz")
    with pytest.raises(TypeError):
        b.recv_into(b"\x00" * 10, 0, "t")
    with pytest.raises((TypeError, ValueError)):
        b.recv_into(np.zeros((10, 10), "u1")[:, ::2], 0, "t")
    # nothing was sent by the refused calls: the only message is b"xyz"
    assert b.recv(0, "t") == b"xyz"
    assert b.probe(0, "t") is None


def test_invalid_arguments(make_links):
    a, b = make_links(2)
    with pytest.raises(ValueError):
        a.send(0, "t", b"to self")
    with pytest.raises((ValueError, OverflowError)):
        a.send(2, "t", b"out of range")
    with pytest.raises((ValueError, OverflowError)):
        a.send(-1, "t", b"negative")
    with pytest.raises(ValueError):
        a.send(1, "nul\x00tag", b"x")
    with pytest.raises(ValueError):
        a.send(1, "x" * 256, b"x")
    with pytest.raises(TypeError):
        a.send(1, 7, b"x")
    with pytest.raises(ValueError):
        a.recv(1, "t", timeout=-1)
    with pytest.raises(TypeError):
        a.recv(1, "t", timeout="soon")
    with pytest.raises(ValueError):
        a.recv(0, "t", timeout=0)
    # bytes tags and the empty tag are fine; bytes and str tags are the same
    a.send(1, b"btag", b"1")
    a.send(1, "", b"2")
    a.send(1, "x" * 255, b"3")
    assert b.recv(0, "btag") == b"1"
    assert b.recv(0, b"") == b"2"
    assert b.recv(0, b"x" * 255) == b"3"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_p2p_empty_and_64mib(make_links, scheme):
    a, b = make_links(2, scheme)
    big = (np.arange(64 << 20, dtype=np.uint64) * 2654435761 % 251).astype(
        np.uint8)
    digest = hashlib.sha256(big).digest()

    def sender():
        a.send(1, "empty", b"")
        a.send(1, "big", big)
        a.send(1, "empty2", bytearray())

    def receiver():
        e = b.recv(0, "empty")
        got = b.recv(0, "big", copy=False)
        e2 = b.recv(0, "empty2")
        return e, got, e2

    _, (e, got, e2) = run_parallel([sender, receiver], timeout=60)
    assert e == b"" and e2 == b""
    assert memoryview(got).nbytes == 64 << 20
    assert hashlib.sha256(got).digest() == digest
    # an empty message received into an empty buffer and probed
    a.send(1, "z", b"")
    a.wait_pending()  # in b's mailbox now: probe sees it
    assert b.probe(0, "z") == 0
    assert b.recv_into(bytearray(0), 0, "z") == 0


def test_shm_local_tcp_link_carries_bytes_and_collectives(make_links):
    # Three parties of one process over tcp:// with shm_local: every pair
    # moves to shared memory once the link is up; messages of every size
    # and the collectives arrive exactly.
    links = make_links(3, "tcp", shm_local=1)
    payload = bytes(range(256)) * 4096  # 1 MiB

    def party(r):
        l = links[r]
        l.send(l.next_rank(), "p", payload[r:])
        got = l.recv(l.prev_rank(), "p")
        return got, l.all_gather(b"r%d" % r, "g")

    got = run_parties(3, party)
    for r, (msg, every) in enumerate(got):
        assert msg == payload[(r - 1) % 3:]
        assert every == [b"r0", b"r1", b"r2"]


def test_too_big(make_links):
    a, b = make_links(2, max_msg_size=1000)
    a.send(1, "ok", bytes(1000))
    with pytest.raises(tagwire.TooBigError) as ei:
        a.send(1, "big", bytes(1001))
    assert ei.value.name == "TW_ETOOBIG"
    assert isinstance(ei.value, tagwire.Error)
    assert b.recv(0, "ok") == bytes(1000)
    assert b.probe(0, "big") is None


# ---------------------------------------------------------------------------
# Order, timeouts, messages, probe, recv_into
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_fifo_per_src_and_tag_with_interleaved_tags(make_links, scheme):
    links = make_links(3, scheme)
    tags = ["a", "b", "c"]
    N = 60

    def party(r):
        l = links[r]
        if r != 2:
            for i in range(N):
                for t in tags:
                    l.send(2, t, f"{r}:{t}:{i}".encode())
            return None
        # read the tags in the reverse order of sending, and the senders
        # interleaved: each (src, tag) stream must come in order
        out = {}
        for t in reversed(tags):
            for i in range(N):
                for src in (1, 0):
                    out.setdefault((src, t), []).append(l.recv(src, t))
        return out

    out = run_parties(3, party)[2]
    for src in (0, 1):
        for t in tags:
            assert out[(src, t)] == [f"{src}:{t}:{i}".encode()
                                     for i in range(N)]


# Timeouts are kept in whole milliseconds by the C library: allow one or two
# of them of rounding against time.monotonic().
EPS = 0.003


def test_recv_timeout_within_bounds(make_links):
    a, b = make_links(2)
    for call in (lambda: b.recv(0, "none", timeout=0.2),
                 lambda: b.recv(0, "none", 0.2),
                 lambda: b.recv_into(bytearray(8), 0, "none", timeout=0.2),
                 lambda: b.recv(0, "none", timeout=0.2, copy=False)):
        t0 = time.monotonic()
        with pytest.raises(TimeoutError) as ei:
            call()
        elapsed = time.monotonic() - t0
        assert isinstance(ei.value, tagwire.TimeoutError)
        assert isinstance(ei.value, tagwire.Error)
        assert isinstance(ei.value, RuntimeError)
        assert ei.value.code == tagwire.TW_ETIMEDOUT
        assert ei.value.name == "TW_ETIMEDOUT"
        assert 0.2 - EPS <= elapsed <= 2.0, elapsed
    # a zero timeout polls
    t0 = time.monotonic()
    with pytest.raises(tagwire.TimeoutError):
        b.recv(0, "none", timeout=0)
    assert time.monotonic() - t0 < 0.5
    # a timed-out receive lost nothing
    a.send(1, "none", b"late")
    assert b.recv(0, "none", timeout=5) == b"late"


def test_recv_timeout_property(make_links):
    a, b = make_links(2, recv_timeout_ms=1500)
    assert a.recv_timeout == pytest.approx(1.5)
    b.recv_timeout = 0.2
    assert b.recv_timeout == pytest.approx(0.2)
    t0 = time.monotonic()
    with pytest.raises(tagwire.TimeoutError):
        b.recv(0, "t")  # None: the link's
    assert 0.2 - EPS <= time.monotonic() - t0 <= 2.0
    # an explicit timeout wins over the link's
    t0 = time.monotonic()
    with pytest.raises(tagwire.TimeoutError):
        b.recv(0, "t", timeout=0.4)
    assert 0.4 - EPS <= time.monotonic() - t0 <= 2.0
    b.recv_timeout = None
    assert b.recv_timeout is None
    b.recv_timeout = 0
    assert b.recv_timeout == 0
    with pytest.raises(ValueError):
        b.recv_timeout = -1
    with pytest.raises(TypeError):
        b.recv_timeout = "1"
    b.recv_timeout = 3
    assert b.recv_timeout == pytest.approx(3.0)
    # the peer's is its own
    assert a.recv_timeout == pytest.approx(1.5)


def test_recv_forever_gets_late_message(make_links):
    a, b = make_links(2)
    b.recv_timeout = None
    started = threading.Event()

    def late():
        started.wait(10)
        a.send(1, "t", b"eventually")

    t = threading.Thread(target=late)
    t.start()
    started.set()
    assert b.recv(0, "t") == b"eventually"
    t.join(10)


def test_message_copy_false_outlives_link(make_links):
    a, b = make_links(2)
    arr = np.arange(1000, dtype=np.float64)
    a.send(1, "m", arr)
    msg = b.recv(0, "m", copy=False)
    assert isinstance(msg, tagwire.Message)
    mv = memoryview(msg)
    assert mv.nbytes == arr.nbytes
    assert len(msg) == arr.nbytes
    assert bytes(msg) == arr.tobytes()
    view = np.frombuffer(msg, dtype=np.float64)
    close_all([a, b])
    gc.collect()
    assert np.array_equal(view, arr)
    # the views keep the memory alive without the Message object
    wr = weakref.ref(msg) if type(msg).__weakrefoffset__ else None
    del msg
    gc.collect()
    assert np.array_equal(view, arr)
    assert mv.tobytes() == arr.tobytes()
    mv.release()
    if wr is not None:
        assert wr() is not None  # numpy still holds it
    del view
    gc.collect()
    if wr is not None:
        assert wr() is None


def test_empty_message_copy_false(make_links):
    a, b = make_links(2)
    a.send(1, "e", b"")
    msg = b.recv(0, "e", copy=False)
    assert isinstance(msg, tagwire.Message)
    assert bytes(msg) == b"" and memoryview(msg).nbytes == 0
    assert np.frombuffer(msg, dtype=np.uint8).size == 0


def test_probe(make_links):
    a, b = make_links(2)
    t0 = time.monotonic()
    assert b.probe(0, "p") is None
    assert time.monotonic() - t0 < 0.5
    a.send(1, "p", b"12345")
    a.send(1, "p", b"1")
    a.wait_pending()
    # probe does not consume, and reports the oldest
    assert b.probe(0, "p") == 5
    assert b.probe(0, "p") == 5
    assert b.probe(0, "other") is None
    assert b.recv(0, "p") == b"12345"
    assert b.probe(0, "p") == 1
    assert b.recv(0, "p") == b"1"
    assert b.probe(0, "p") is None
    with pytest.raises(ValueError):
        b.probe(1, "p")


def test_recv_into(make_links):
    a, b = make_links(2)
    a.send(1, "r", b"abcdef")
    buf = bytearray(16)
    assert b.recv_into(buf, 0, "r") == 6
    assert buf[:6] == b"abcdef" and buf[6:] == bytes(10)
    # exact size, memoryview slice and numpy
    a.send(1, "r", b"12345678")
    mv = memoryview(bytearray(20))[4:12]
    assert b.recv_into(mv, 0, "r") == 8
    assert mv.tobytes() == b"12345678"
    x = np.arange(10, dtype=np.int32)
    a.send(1, "r", x)
    out = np.zeros(10, dtype=np.int32)
    assert b.recv_into(out, 0, "r") == 40
    assert np.array_equal(out, x)


def test_recv_into_too_small_keeps_message(make_links):
    a, b = make_links(2)
    a.send(1, "r", b"0123456789")
    small = bytearray(4)
    with pytest.raises(tagwire.TruncatedError) as ei:
        b.recv_into(small, 0, "r")
    assert ei.value.size == 10
    assert isinstance(ei.value, tagwire.Error)
    assert small == bytearray(4)
    assert b.probe(0, "r") == 10
    assert b.recv_into(bytearray(10), 0, "r") == 10
    assert b.probe(0, "r") is None


# ---------------------------------------------------------------------------
# Asynchronous and throttled sends, wait_pending, stats
# ---------------------------------------------------------------------------


def test_send_async_copies_and_completes(make_links):
    a, b = make_links(2)
    data = bytearray(b"original")
    req = a.send_async(1, "a", data)
    data[:] = b"CHANGED!"  # the request copied it
    req.wait()
    assert req.test() is True
    assert b.recv(0, "a") == b"original"
    reqs = [a.send_async(1, "a", bytes([i]) * i) for i in range(50)]
    for r in reqs:
        r.wait(timeout=10)
    for i in range(50):
        assert b.recv(0, "a") == bytes([i]) * i
    # numpy input
    arr = np.arange(100, dtype=np.int16)
    a.send_async(1, "n", arr).wait(10)
    assert b.recv(0, "n") == arr.tobytes()


def test_request_test_polls_without_blocking(make_links):
    a, b = make_links(2)
    req = a.send_async(1, "t", b"x" * 1000)
    deadline = time.monotonic() + 10
    while not req.test():
        assert time.monotonic() < deadline, "request never completed"
    assert req.test() is True  # stays done
    req.wait()
    assert b.recv(0, "t") == b"x" * 1000


def test_send_async_throttled(make_links):
    a, b = make_links(2, throttle_window=2)
    sent = queue.Queue()

    def sender():
        for i in range(5):
            a.send_async_throttled(1, "w", bytes([i]))
            sent.put(i)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    assert sent.get(timeout=10) == 0
    assert sent.get(timeout=10) == 1
    # the window is full: the third waits until b consumes one
    with pytest.raises(queue.Empty):
        sent.get(timeout=0.3)
    assert b.recv(0, "w") == b"\x00"
    assert sent.get(timeout=10) == 2
    for i in range(1, 5):
        assert b.recv(0, "w") == bytes([i])
    t.join(10)
    assert not t.is_alive()
    assert sent.get(timeout=10) == 3 and sent.get(timeout=10) == 4


def test_send_async_throttled_times_out(make_links):
    a, b = make_links(2, throttle_window=1)
    a.recv_timeout = 0.2
    a.send_async_throttled(1, "w", b"1")
    t0 = time.monotonic()
    with pytest.raises(tagwire.TimeoutError):
        a.send_async_throttled(1, "w", b"2")
    assert 0.2 - EPS <= time.monotonic() - t0 <= 2.0
    assert b.recv(0, "w") == b"1"
    assert b.probe(0, "w") is None  # the timed-out one was not sent


def test_wait_pending(make_links):
    a, b = make_links(2, scheme="tcp")
    payload = bytes(range(256)) * 64
    for i in range(100):
        a.send_async(1, "p", payload)
    assert a.wait_pending() is None
    # everything has reached b's mailbox: probes see it without waiting
    assert b.probe(0, "p") == len(payload)
    for i in range(100):
        assert b.recv(0, "p", timeout=0) == payload


def test_stats(make_links):
    a, b = make_links(2)
    zero = dict(msgs_sent=0, msgs_recv=0, bytes_sent=0, bytes_recv=0)
    assert {k: a.stats()[k] for k in zero} == zero
    for i in range(3):
        a.send(1, "s", b"0123456789")
    a.send_async(1, "s", b"abc").wait()
    for i in range(4):
        b.recv(0, "s")
    # collectives do not count
    run_parallel([lambda: a.barrier("b"), lambda: b.barrier("b")])
    sa, sb = a.stats(), b.stats()
    assert isinstance(sa, dict)
    assert (sa["msgs_sent"], sa["bytes_sent"]) == (4, 33)
    assert (sa["msgs_recv"], sa["bytes_recv"]) == (0, 0)
    assert (sb["msgs_recv"], sb["bytes_recv"]) == (4, 33)
    assert (sb["msgs_sent"], sb["bytes_sent"]) == (0, 0)


def test_trim(make_links):
    # without heartbeats, so that an idle connection does not trim itself
    a, b = make_links(2, scheme="tcp", heartbeat_ms=0)
    assert a.trim() == 0  # nothing grew yet
    payload = bytes(range(256)) * 8192  # 2 MiB: frames of 256 KiB
    a.send(1, "t", payload)
    assert b.recv(0, "t") == payload
    # b's answer, sent once it had read everything, confirms every frame
    b.send(0, "r", b"ok")
    assert a.recv(1, "r") == b"ok"
    # the ring grew to hold a frame (512 KiB at least)
    assert a.trim() >= 448 << 10
    assert a.trim() == 0
    a.send(1, "t", payload)
    assert b.recv(0, "t") == payload
    m, n = make_links(2)
    assert m.trim() == 0  # mem:// keeps nothing that grows
    a.close()
    with pytest.raises(tagwire.ClosedError):
        a.trim()


def test_next_prev_rank(make_links):
    links = make_links(3)
    assert [l.next_rank() for l in links] == [1, 2, 0]
    assert [l.prev_rank() for l in links] == [2, 0, 1]
    assert [l.next_rank(2) for l in links] == [2, 0, 1]
    assert [l.prev_rank(stride=2) for l in links] == [1, 2, 0]
    assert links[0].next_rank(3) == 0


# ---------------------------------------------------------------------------
# Threads and the GIL
# ---------------------------------------------------------------------------


def test_gil_released_while_blocked_in_recv(make_links):
    a, b = make_links(2)
    counted = []

    def counter():
        # counts in pure Python (needs the GIL), then sends the message the
        # main thread waits for: a recv that held the GIL would time out
        n = 0
        while n < 300_000:
            n += 1
        counted.append(n)
        a.send(1, "gil", b"done")

    t = threading.Thread(target=counter)
    t.start()
    assert b.recv(0, "gil", timeout=20) == b"done"
    t.join(10)
    assert counted == [300_000]

    # and a thread makes progress during a recv that times out
    stop = threading.Event()
    progress = [0]

    def spin():
        while not stop.is_set():
            progress[0] += 1

    s = threading.Thread(target=spin)
    s.start()
    try:
        with pytest.raises(tagwire.TimeoutError):
            b.recv(0, "never", timeout=0.3)
    finally:
        stop.set()
        s.join(10)
    assert progress[0] > 10_000


def test_four_threads_p2p_on_own_tags(make_links):
    a, b = make_links(2)
    N = 200

    def worker(k):
        def send():
            for i in range(N):
                a.send(1, f"w{k}", f"{k}.{i}".encode())
            for i in range(N):
                assert a.recv(1, f"w{k}") == f"back{k}.{i}".encode()
            return k

        def recv():
            for i in range(N):
                assert b.recv(0, f"w{k}") == f"{k}.{i}".encode()
                b.send(0, f"w{k}", f"back{k}.{i}".encode())
            return k
        return send, recv

    fns = []
    for k in range(4):
        fns.extend(worker(k))
    assert run_parallel(fns, timeout=60) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_reference_counts_return_to_baseline(make_links):
    a, b = make_links(2)
    bufs = [bytearray(64), np.zeros(16, dtype=np.int32),
            array.array("b", bytes(64)), b"x" * 64]
    for buf in bufs:
        base = sys.getrefcount(buf)
        for _ in range(20):
            a.send(1, "rc", buf)
            a.send_async(1, "rc", buf).wait()
            a.send_async_throttled(1, "rc", buf)
        a.wait_pending()
        assert sys.getrefcount(buf) == base, type(buf)
        if not isinstance(buf, bytes):
            for _ in range(60):
                assert b.recv_into(buf, 0, "rc") == memoryview(buf).nbytes
            assert sys.getrefcount(buf) == base, type(buf)
        else:
            for _ in range(60):
                b.recv(0, "rc")
    # error paths release too
    buf = bytearray(4)
    base = sys.getrefcount(buf)
    a.send(1, "big", bytes(10))
    for _ in range(10):
        with pytest.raises(tagwire.TruncatedError):
            b.recv_into(buf, 0, "big")
        with pytest.raises(tagwire.TimeoutError):
            b.recv_into(buf, 0, "none", timeout=0)
        with pytest.raises(ValueError):
            a.send(0, "self", buf)
    assert sys.getrefcount(buf) == base
    tag = "a-tag-" + "x" * 10
    tbase = sys.getrefcount(tag)
    for _ in range(10):
        a.send(1, tag, b"")
        b.recv(0, tag)
    assert sys.getrefcount(tag) == tbase


# ---------------------------------------------------------------------------
# Collectives
# ---------------------------------------------------------------------------

BIN = [b"\x00\xff\x00", b"", b"\xff" * 1000 + b"\x00", b"\x00"]


@pytest.mark.parametrize("scheme", ["mem", "tcp"])
@pytest.mark.parametrize("n", [2, 3, 4])
def test_collectives_binary_safe(make_links, scheme, n):
    links = make_links(n, scheme)
    contrib = [BIN[r % len(BIN)] + bytes([r]) for r in range(n)]

    def party(r):
        l = links[r]
        out = {}
        assert l.barrier("c") is None
        out["ag"] = l.all_gather(contrib[r], "c")
        out["ag_np"] = l.all_gather(np.full(3, r, dtype=np.int64), "c2")
        out["g"] = l.gather(bytearray(contrib[r]), 1 % n, "c")
        out["bc"] = l.broadcast(b"\x00root\xff" if r == 0 else b"", 0, "c")
        parts = [b"\x00" * i + b"\xff" + bytes([i]) for i in range(n)]
        out["sc"] = l.scatter(parts if r == n - 1 else None, n - 1, "c")
        l.barrier("end")
        return out

    res = run_parties(n, party)
    for r, out in enumerate(res):
        assert isinstance(out["ag"], list)
        assert all(type(x) is bytes for x in out["ag"])
        assert out["ag"] == contrib
        assert out["ag_np"] == [np.full(3, i, dtype=np.int64).tobytes()
                                for i in range(n)]
        if r == 1 % n:
            assert out["g"] == contrib
            assert all(type(x) is bytes for x in out["g"])
        else:
            assert out["g"] is None
        assert type(out["bc"]) is bytes
        assert out["bc"] == b"\x00root\xff"
        assert out["sc"] == b"\x00" * r + b"\xff" + bytes([r])
        assert type(out["sc"]) is bytes


def test_collectives_do_not_meet_p2p_and_bad_root(make_links):
    a, b = make_links(2)
    a.send(1, "t", b"p2p")

    def party(r):
        l = (a, b)[r]
        return l.all_gather(b"coll%d" % r, "t")

    assert run_parties(2, party) == [[b"coll0", b"coll1"]] * 2
    assert b.recv(0, "t") == b"p2p"
    with pytest.raises(ValueError):
        a.broadcast(b"x", 5, "t")
    with pytest.raises(ValueError):
        a.gather(b"x", 2, "t")


# ---------------------------------------------------------------------------
# Child links
# ---------------------------------------------------------------------------


def test_spawn_isolation(make_links):
    a, b = make_links(2)
    ca, cb = a.spawn("kid"), b.spawn("kid")
    try:
        assert ca.id == a.id + "/kid"
        assert (ca.rank, ca.world_size) == (0, 2)
        a.send(1, "same", b"parent")
        ca.send(1, "same", b"child")
        a.send(1, "same", b"parent2")
        assert cb.recv(0, "same") == b"child"
        assert cb.probe(0, "same") is None
        assert b.recv(0, "same") == b"parent"
        assert b.recv(0, "same") == b"parent2"
        # collectives on the child
        assert run_parallel([lambda: ca.all_gather(b"A", "g"),
                             lambda: cb.all_gather(b"B", "g")]) == \
            [[b"A", b"B"]] * 2
    finally:
        close_all([ca, cb])
    # the parent still works after the child is closed
    b.send(0, "after", b"ok")
    assert a.recv(1, "after") == b"ok"
    with pytest.raises(ValueError):
        a.spawn("bad:suffix")


def test_sub(make_links):
    links = make_links(3)

    def party(r):
        l = links[r]
        if r == 1:
            with pytest.raises(ValueError):
                l.sub("s", [2, 0])
            return None
        s = l.sub("s", [2, 0])
        try:
            assert s.world_size == 2
            assert s.rank == {2: 0, 0: 1}[r]
            assert s.id == l.id + "/s"
            if s.rank == 0:
                s.send(1, "x", b"from parent rank 2")
                got = s.recv(1, "x")
            else:
                got = s.recv(0, "x")
                s.send(0, "x", b"from parent rank 0")
            return got
        finally:
            s.barrier("end")
            s.close()

    res = run_parties(3, party)
    assert res == [b"from parent rank 2", None, b"from parent rank 0"]
    with pytest.raises(ValueError):
        links[0].sub("bad", [0, 0])
    with pytest.raises(ValueError):
        links[0].sub("bad", [0, 7])
    with pytest.raises(ValueError):
        links[0].sub("bad", [])


# ---------------------------------------------------------------------------
# Abort, close, peers, context manager, GC
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_abort_wakes_blocked_recv(make_links, scheme):
    a, b = make_links(2, scheme)
    b.recv_timeout = None
    entering = threading.Event()
    result = queue.Queue()

    def blocked():
        entering.set()
        t0 = time.monotonic()
        try:
            b.recv(0, "never")
        except BaseException as e:  # noqa: BLE001
            result.put((e, time.monotonic() - t0))
        else:
            result.put((None, 0))

    t = threading.Thread(target=blocked, daemon=True)
    t.start()
    assert entering.wait(10)
    b.abort()
    e, _ = result.get(timeout=5)
    assert isinstance(e, tagwire.ClosedError), repr(e)
    assert e.name == "TW_ECLOSED"
    t.join(5)
    b.abort()  # idempotent
    with pytest.raises(tagwire.ClosedError):
        b.send(0, "x", b"after abort")
    with pytest.raises(tagwire.ClosedError):
        b.recv(0, "x", timeout=0)
    # the peer learns of it
    with pytest.raises(tagwire.PeerError):
        a.recv(1, "x", timeout=10)
    b.close()
    a.close()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_peer_close_gives_peer_error(make_links, scheme):
    a, b = make_links(2, scheme)
    b.send(0, "t", b"last words")
    b.close()
    # what was delivered is still received, then PeerError
    assert a.recv(1, "t", timeout=10) == b"last words"
    with pytest.raises(tagwire.PeerError) as ei:
        a.recv(1, "t", timeout=10)
    assert isinstance(ei.value, ConnectionError)
    assert ei.value.name == "TW_EPEER"
    with pytest.raises(tagwire.PeerError):
        a.send(1, "t", b"to nobody")
    a.close()


def test_close_then_use_raises_closed(make_links):
    a, b = make_links(2)
    close_all([a, b])
    for call in (lambda: a.send(1, "t", b"x"), lambda: a.recv(1, "t"),
                 lambda: a.probe(1, "t"), lambda: a.barrier("b"),
                 lambda: a.spawn("c"), lambda: a.wait_pending()):
        with pytest.raises(tagwire.ClosedError):
            call()
    a.close()  # a second close is harmless
    a.abort()


def test_context_manager():
    d = make_desc(2, "mem")

    def party(r):
        with tagwire.create(d, r) as link:
            assert link.rank == r
            if r == 0:
                link.send(1, "cm", b"inside")
            else:
                assert link.recv(0, "cm") == b"inside"
            link.barrier("done")
        return link

    links = run_parties(2, party)
    for l in links:
        with pytest.raises(tagwire.ClosedError):
            l.send(1 - l.rank, "x", b"x")


def test_context_manager_exception_propagates():
    d = make_desc(2, "mem")

    def party(r):
        with pytest.raises(KeyError):
            with tagwire.create(d, r) as link:
                link.barrier("b")
                raise KeyError("mine")
        return link

    for l in run_parties(2, party):
        with pytest.raises(tagwire.ClosedError):
            l.recv(0 if l.rank else 1, "x", timeout=0)


def test_gc_of_open_link_warns_and_does_not_hang():
    d = make_desc(2, "mem")
    a, b = create_links(d)
    done = queue.Queue()

    def collect():
        nonlocal a
        with pytest.warns(ResourceWarning):
            ref = weakref.ref(a) if type(a).__weakrefoffset__ else None
            del a
            gc.collect()
        done.put(ref)

    t = threading.Thread(target=collect, daemon=True)
    t.start()
    try:
        ref = done.get(timeout=20)
    except queue.Empty:
        pytest.fail("garbage-collecting an open link hung")
    t.join(5)
    if ref is not None:
        assert ref() is None
    # it was aborted locally: the peer sees it gone
    with pytest.raises(tagwire.PeerError):
        b.recv(0, "x", timeout=10)
    b.close()


def test_close_while_another_thread_blocks_in_recv(make_links):
    """close() from one thread while another blocks in recv on the same
    link: no crash; the blocked call ends with ClosedError (or the close
    waits for it), and close returns."""
    a, b = make_links(2)
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

    t = threading.Thread(target=blocked, daemon=True)
    t.start()
    assert entering.wait(10)
    closer = threading.Thread(target=b.close, daemon=True)
    closer.start()
    e = result.get(timeout=10)
    assert isinstance(e, tagwire.ClosedError), repr(e)
    closer.join(10)
    assert not closer.is_alive(), "close() hung"
    with pytest.raises(tagwire.ClosedError):
        b.recv(0, "never", timeout=0)


def test_async_send_to_closed_peer_reports_peer_error(make_links):
    a, b = make_links(2)
    b.close()
    # the close reaches a: a receive from b now fails
    with pytest.raises(tagwire.PeerError):
        a.recv(1, "x", timeout=10)
    with pytest.raises(tagwire.PeerError):
        req = a.send_async(1, "x", b"lost")
        req.wait(timeout=10)
        a.wait_pending()


def test_spawn_suffix_reusable_after_close(make_links):
    a, b = make_links(2)
    for round_ in range(3):
        ca, cb = a.spawn("again"), b.spawn("again")
        ca.send(1, "t", b"%d" % round_)
        assert cb.recv(0, "t") == b"%d" % round_
        close_all([ca, cb])
