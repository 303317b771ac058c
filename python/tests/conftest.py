"""Shared helpers for the tagwire link tests.

Everything here synchronises with events, queues and joins, never with
sleeps.  A party of a link is a thread of this process (mem://, shm:// and
tcp://127.0.0.1 all work with one thread per party).
"""

import atexit
import collections
import itertools
import os
import queue
import random
import socket
import sys
import threading
import time

import pytest

import tagwire

# Debian's interpreter: the one the module is built against.
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

SCHEMES = ("mem", "shm", "tcp")

_seq = itertools.count()


def unique_name(prefix="t"):
    """A name unique in this test run and among concurrent runs (the pid)."""
    return f"{prefix}{os.getpid()}x{next(_seq)}"


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Reservations of the ports handed out (see _reserve); the oldest are
# dropped once their parties have long since bound or given up.
_held = collections.deque(maxlen=256)
atexit.register(lambda: [s.close() for s in _held])


def _reserve(port):
    """Reserve `port` for this process; return whether it was free.

    The probe binds the wildcard address without SO_REUSEADDR, so it fails
    while any socket holds the port (another test's link or reservation, a
    connection in TIME_WAIT). It then stays open with SO_REUSEADDR set: the
    tcp:// transport binds with SO_REUSEADDR too, so the link given the port
    binds past its reservation while other tests' probes still find it
    taken. A probe closed at once would leave a gap in which two tests
    running at once both find the port free.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("0.0.0.0", port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    except OSError:
        s.close()
        return False
    if len(_held) == _held.maxlen:
        _held.popleft().close()
    _held.append(s)
    return True


_rng = random.Random(os.getpid() ^ time.time_ns())


def free_tcp_ports(n):
    """n distinct ports of 127.0.0.1 that are free now, reserved (_reserve).

    They are drawn from below the kernel's ephemeral range, which serves
    every outgoing connection and every bind to port 0, so neither can take
    a port before the link binds it.
    """
    low = _ephemeral_low()
    base = max(1024, low - 16384)
    ports = []
    for _ in range(1000 * n):
        if len(ports) == n:
            break
        p = _rng.randrange(base, low)
        if p not in ports and _reserve(p):
            ports.append(p)
    if len(ports) != n:
        raise RuntimeError("no free ports below the ephemeral range")
    return ports


def addresses(scheme, n):
    base = unique_name(scheme[0])
    if scheme == "mem":
        return [f"mem://{base}.p{i}" for i in range(n)]
    if scheme == "shm":
        return [f"shm://{base}.p{i}" for i in range(n)]
    if scheme == "tcp":
        return [f"tcp://127.0.0.1:{p}" for p in free_tcp_ports(n)]
    raise ValueError(scheme)


DEFAULT_OPTS = dict(connect_timeout_ms=15_000, recv_timeout_ms=20_000)


def make_desc(n=2, scheme="mem", link_id=None, **opts):
    """A description of an n-party link over `scheme` with unique addresses.
    Receives time out after 20 s by default so that a broken test fails
    instead of hanging."""
    d = tagwire.Desc(link_id or unique_name("L"))
    for i, a in enumerate(addresses(scheme, n)):
        d.add_party(f"P{i}", a)
    for k, v in {**DEFAULT_OPTS, **opts}.items():
        setattr(d, k, v)
    return d


class PartyFailed(AssertionError):
    pass


def _wait_tasks_gone(tids, deadline):
    """Python's join returns once a thread's interpreter state is gone, a
    moment before its kernel task ends; a thread count taken right after
    the join could still see it.  Waits for the tasks themselves."""
    tids = [t for t in tids if t is not None]
    while any(os.path.exists(f"/proc/self/task/{t}") for t in tids):
        if time.monotonic() > deadline:
            raise PartyFailed(f"joined threads' tasks still running: {tids}")
        os.sched_yield()


def run_parallel(fns, timeout=60):
    """Runs each callable in its own thread; returns their results in order.
    Re-raises the first exception (by index); fails when one does not end
    within `timeout` seconds."""
    n = len(fns)
    results = [None] * n
    errors = [None] * n

    def body(i):
        try:
            results[i] = fns[i]()
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors[i] = e

    threads = [threading.Thread(target=body, args=(i,), daemon=True,
                                name=f"party-{i}") for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    hung = [t.name for t in threads if t.is_alive()]
    if hung:
        raise PartyFailed(f"threads did not finish within {timeout} s: {hung}")
    _wait_tasks_gone([t.native_id for t in threads], deadline)
    for e in errors:
        if e is not None:
            raise e
    return results


def run_parties(n, fn, timeout=60):
    """fn(rank) in one thread per rank; the results by rank."""
    return run_parallel([(lambda r=r: fn(r)) for r in range(n)], timeout)


def create_links(d, n=None, timeout=60):
    """Creates every party of `d` concurrently (one thread each)."""
    n = len(d.parties) if n is None else n
    return run_parties(n, lambda r: tagwire.create(d, r), timeout)


def close_all(links, timeout=60):
    """Closes the links concurrently (a close may wait for its peers)."""
    run_parallel([l.close for l in links], timeout)


def _quiet_close(link):
    try:
        link.close()
    except Exception:  # noqa: BLE001 (teardown of a test that failed)
        pass


def _close_made(made):
    """Closes, newest first, the links a fixture made and the test left
    open; each party in a thread of its own, as close may wait for peers."""
    for links in reversed(made):
        threads = [threading.Thread(target=_quiet_close, args=(l,),
                                    daemon=True) for l in links]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)


@pytest.fixture
def make_links():
    """make_links(n=2, scheme="mem", **opts) -> list of links, created
    concurrently; whatever the test leaves open is closed at teardown."""
    made = []

    def make(n=2, scheme="mem", desc=None, **opts):
        d = desc if desc is not None else make_desc(n, scheme, **opts)
        links = create_links(d, len(d.parties))
        made.append(links)
        return links

    yield make
    _close_made(made)


# ---------------------------------------------------------------------------
# Python channels: a mailbox shared by the parties of one process.
# ---------------------------------------------------------------------------


class ChannelClosed(Exception):
    """Raised by a MailboxChannel used after close()."""


class Mailbox:
    """Messages keyed by (from, to, key), each key a FIFO queue.
    capacity 0 = unbounded; capacity 1 = at most one message per key: a
    second push waits (up to `full_wait` s) for the first to be read, then
    raises OverflowError, and the overflow is recorded in .overflows."""

    def __init__(self, capacity=0, full_wait=5.0):
        self.capacity = capacity
        self.full_wait = full_wait
        self._lock = threading.Lock()
        self._queues = {}
        self.overflows = []
        self.gone = set()  # (me, peer): `me` closed its end towards `peer`

    def queue(self, src, dst, key):
        with self._lock:
            q = self._queues.get((src, dst, key))
            if q is None:
                q = self._queues[(src, dst, key)] = queue.Queue(self.capacity)
            return q

    def push(self, src, dst, key, data):
        q = self.queue(src, dst, key)
        if self.capacity == 0:
            q.put(data)
            return
        try:
            q.put(data, timeout=self.full_wait)
        except queue.Full:
            self.overflows.append((src, dst, key))
            raise OverflowError(
                f"a second message under {key!r} ({src}->{dst}) was pushed "
                "and the first was never read")

    def channels(self, rank, n, cls=None, **kw):
        cls = cls or MailboxChannel
        return [None if i == rank else cls(self, rank, i, **kw)
                for i in range(n)]


class MailboxChannel:
    """This party's (`me`) end of the connection to `peer`."""

    def __init__(self, box, me, peer):
        self.box = box
        self.me = me
        self.peer = peer
        self.closed = threading.Event()
        self.close_calls = 0
        self.lock = threading.Lock()
        self.calls = []  # method names, in order

    def _note(self, what):
        with self.lock:
            self.calls.append(what)

    def send(self, key, data):
        self._note("send")
        if self.closed.is_set():
            raise ChannelClosed("send after close")
        if (self.peer, self.me) in self.box.gone:
            return  # the peer closed its end: nobody will read it
        self.box.push(self.me, self.peer, key, bytes(data))

    def recv(self, key, timeout):
        self._note("recv")
        q = self.box.queue(self.peer, self.me, key)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.closed.is_set():
                raise ChannelClosed("recv after close")
            left = 0.05 if deadline is None else min(
                0.05, deadline - time.monotonic())
            try:
                if left <= 0:
                    return q.get_nowait()
                return q.get(timeout=left)
            except queue.Empty:
                if (self.peer, self.me) in self.box.gone and q.empty():
                    # like a socket's EOF once everything was read
                    raise ConnectionError(f"peer {self.peer} closed")
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"nothing under {key!r}")

    def close(self):
        self._note("close")
        self.close_calls += 1
        self.box.gone.add((self.me, self.peer))
        self.closed.set()


def channel_links(n=2, link_id=None, box=None, cls=None, timeout=60, **opts):
    """An n-party link over Python mailbox channels, one thread per party.
    Returns (links, per-rank channel lists, box)."""
    box = box if box is not None else Mailbox()
    d = make_desc(n, "mem", link_id=link_id, **opts)
    chans = [box.channels(r, n, cls) for r in range(n)]
    links = run_parties(
        n, lambda r: tagwire.create_with_channels(d, r, chans[r]), timeout)
    return links, chans, box


@pytest.fixture
def make_channel_links():
    made = []

    def make(n=2, **kw):
        links, chans, box = channel_links(n, **kw)
        made.append(links)
        return links, chans, box

    yield make
    _close_made(made)


def task_count():
    """Threads of this process as the kernel sees them."""
    return len(os.listdir("/proc/self/task"))


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
