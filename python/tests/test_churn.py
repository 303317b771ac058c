"""Creating and closing links many times leaves threads and memory flat."""

import gc
import threading

import pytest

import tagwire
from conftest import (Mailbox, create_links, close_all, make_desc,
                      rss_bytes, run_parties, task_count)

RSS_SLACK = 4 << 20  # allocator noise and Python's own caches (20 KiB a cycle)


def _cycle(scheme):
    d = make_desc(2, scheme)
    links = create_links(d)
    a, b = links
    a.send(1, "c", b"x" * 1000)
    msg = b.recv(0, "c", copy=False)
    assert bytes(msg) == b"x" * 1000
    run_parties(2, lambda r: links[r].all_gather(b"%d" % r, "g"))
    child = [l.spawn("k") for l in links]
    child[1].send(0, "c", b"child")
    assert child[0].recv(1, "c") == b"child"
    close_all(child)
    close_all(links)


def _channel_cycle():
    box = Mailbox()
    d = make_desc(2, "mem")
    chans = [box.channels(r, 2) for r in range(2)]
    links = run_parties(
        2, lambda r: tagwire.create_with_channels(d, r, chans[r]))
    links[0].send(1, "c", b"y" * 100)
    assert links[1].recv(0, "c") == b"y" * 100
    close_all(links)


def _measure(cycle, n, warmup=10):
    for _ in range(warmup):
        cycle()
    gc.collect()
    threads0, tasks0, rss0 = threading.active_count(), task_count(), rss_bytes()
    for _ in range(n):
        cycle()
    gc.collect()
    threads1, tasks1, rss1 = threading.active_count(), task_count(), rss_bytes()
    assert threads1 == threads0, (threads0, threads1)
    assert tasks1 == tasks0, f"/proc/self/task: {tasks0} -> {tasks1}"
    print(f"RSS growth {(rss1 - rss0) / 1024:.0f} KiB over {n} cycles")
    assert rss1 - rss0 < RSS_SLACK, f"RSS grew by {(rss1 - rss0) >> 10} KiB"


@pytest.mark.parametrize("scheme", ["mem", "tcp"])
def test_200_create_close_cycles_flat(scheme):
    _measure(lambda: _cycle(scheme), 200)


def test_shm_create_close_cycles_flat():
    _measure(lambda: _cycle("shm"), 50, warmup=5)


def test_channel_link_create_close_cycles_flat():
    _measure(_channel_cycle, 200)


def test_abort_and_gc_cycles_flat():
    import warnings

    def cycle():
        links = create_links(make_desc(2, "mem"))
        links[0].abort()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            del links[:]  # garbage-collected while open: aborted locally
            gc.collect()

    _measure(cycle, 200)


def test_messages_do_not_leak():
    links = create_links(make_desc(2, "mem"))
    a, b = links
    try:
        payload = bytes(1 << 20)

        def burst():
            for _ in range(20):
                a.send(1, "m", payload)
                m = b.recv(0, "m", copy=False)
                memoryview(m).release()
                del m
                a.send(1, "m", payload)
                assert len(b.recv(0, "m")) == len(payload)

        burst()
        gc.collect()
        rss0 = rss_bytes()
        for _ in range(10):
            burst()
        gc.collect()
        grown = rss_bytes() - rss0
        print(f"RSS growth {grown >> 10} KiB over 400 MiB of messages")
        # a leaked message would be 1 MiB
        assert grown < 2 * RSS_SLACK, f"RSS grew by {grown >> 10} KiB"
    finally:
        close_all(links)
