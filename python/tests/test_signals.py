"""Ctrl-C, threads and the GIL: blocking calls run signal handlers on the
main thread, lose no message when interrupted, and let other threads run.

Each signal test runs in a child interpreter (sys.executable is not used:
the module is built for /usr/bin/python3) that talks to the test over its
stdin and stdout, line by line."""

import os
import select
import signal
import subprocess
import textwrap
import time

import pytest

from conftest import PYTHON, addresses

CHILD_PRELUDE = textwrap.dedent(r"""
    import faulthandler, os, signal, sys, threading, time
    import tagwire
    faulthandler.register(signal.SIGUSR2, all_threads=True)

    def say(*words):
        sys.stdout.write(" ".join(str(w) for w in words) + "\n")
        sys.stdout.flush()

    addrs = sys.argv[1].split(",")
    d = tagwire.Desc(sys.argv[2])
    for i, a in enumerate(addrs):
        d.add_party("P%d" % i, a)
    d.connect_timeout_ms = 15000
    d.recv_timeout_ms = 30000
    d.recv_buffer = 4096           # a second unreceived message blocks send
    d.throttle_window = 1
    links = [None, None]

    def make(r):
        links[r] = tagwire.create(d, r)

    ts = [threading.Thread(target=make, args=(r,)) for r in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    main_link, peer = links

    def peer_loop():
        # the test drives rank 1 through stdin: "send TAG DATA" or "quit"
        for line in sys.stdin:
            cmd = line.split()
            if not cmd or cmd[0] == "quit":
                break
            if cmd[0] == "send":
                peer.send(0, cmd[1], cmd[2].encode())
    """)


class Child:
    def __init__(self, body, scheme="mem", prelude=None):
        code = (CHILD_PRELUDE if prelude is None else prelude) \
            + textwrap.dedent(body)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.p = subprocess.Popen(
            [PYTHON, "-c", code, ",".join(addresses(scheme, 2)),
             f"sig{os.getpid()}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env, bufsize=0)
        self.buf = b""

    def line(self, timeout=20):
        """The child's next stdout line (str), waiting at most `timeout`."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"child said nothing within {timeout} s; stderr: "
                    + self.stderr())
            r, _, _ = select.select([self.p.stdout], [], [], left)
            if r:
                chunk = os.read(self.p.stdout.fileno(), 4096)
                if not chunk:
                    raise AssertionError(
                        f"child exited ({self.p.wait()}); stderr: "
                        + self.stderr())
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def tell(self, text):
        # A child may be done already (a collective interrupted into
        # ClosedError ends the script): what it said is still read, and
        # line() reports an exit that was not expected.
        try:
            self.p.stdin.write(text.encode() + b"\n")
            self.p.stdin.flush()
        except BrokenPipeError:
            pass

    def stderr(self):
        if self.p.poll() is None:
            # a stack dump of every thread, for the report
            self.p.send_signal(signal.SIGUSR2)
            try:
                self.p.wait(0.5)
            except subprocess.TimeoutExpired:
                pass
            self.p.kill()
        return self.p.stderr.read().decode(errors="replace")[-3000:]

    def finish(self, timeout=30):
        self.tell("quit")
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            raise AssertionError("child did not exit: " + self.stderr())
        err = self.p.stderr.read().decode(errors="replace")
        assert rc == 0, err[-3000:]
        return err


CALLS = {
    "recv": 'main_link.recv(1, "t", timeout=None)',
    "recv_timeout": 'main_link.recv(1, "t", timeout=20)',
    "recv_copy_false": 'main_link.recv(1, "t", copy=False)',
    "recv_into": 'main_link.recv_into(bytearray(64), 1, "t")',
    # the peer never receives "fill": flow control holds the sender
    "send_flow_control":
        '[main_link.send(1, "fill", bytes(4096)) for _ in range(100)]',
    "send_async_throttled":
        '[main_link.send_async_throttled(1, "w", b"x") for _ in range(100)]',
}


@pytest.mark.parametrize("scheme,call", [("mem", c) for c in CALLS]
                         + [("tcp", "recv"), ("shm", "recv")])
def test_sigint_interrupts_blocking_call_and_loses_nothing(scheme, call):
    c = Child(r"""
        t = threading.Thread(target=peer_loop)
        t.start()
        for i in range(2):
            try:
                say("ready", i)
                %s
                say("not-interrupted")
            except KeyboardInterrupt:
                say("interrupted")
        # nothing was lost: the next messages arrive, in order
        say("got", main_link.recv(1, "t").decode(),
            main_link.recv(1, "t").decode())
        t.join()
        if %r:
            # what the peer never received cannot be flushed by close
            main_link.abort()
            peer.abort()
        peer.close()
        main_link.close()
        say("bye")
        """ % (CALLS[call], call.startswith("send")), scheme)
    try:
        for i in range(2):
            assert c.line() == f"ready {i}"
            t0 = time.monotonic()
            c.p.send_signal(signal.SIGINT)
            # due within 0.25 s: waiting longer only tells a slow one from
            # one that is never interrupted
            assert c.line(timeout=3) == "interrupted"
            elapsed = time.monotonic() - t0
            assert elapsed < 0.25, f"KeyboardInterrupt after {elapsed:.3f} s"
        c.tell("send t first")
        c.tell("send t second")
        assert c.line() == "got first second"
        c.tell("quit")
        assert c.line() == "bye"
        c.finish()
    finally:
        if c.p.poll() is None:
            c.p.kill()
            c.p.wait()


COLLECTIVES = {
    "barrier": 'main_link.barrier("never-joined")',
    "all_gather": 'main_link.all_gather(b"x", "never-joined")',
    "broadcast": 'main_link.broadcast(b"", 1, "never-joined")',
}


@pytest.mark.parametrize("call", COLLECTIVES)
def test_sigint_interrupts_collective(call):
    """A collective the peer never joins is interrupted within 0.25 s.  A
    collective cannot stop half way and stay usable, so afterwards the link
    may have been aborted (ClosedError); if it was not, nothing was lost."""
    c = Child(r"""
        t = threading.Thread(target=peer_loop, daemon=True)
        t.start()
        try:
            say("ready")
            %s
            say("not-interrupted")
        except KeyboardInterrupt:
            say("interrupted")
        try:
            say("got", main_link.recv(1, "t").decode(),
                main_link.recv(1, "t").decode())
        except tagwire.ClosedError:
            say("closed")
        main_link.abort()
        peer.abort()
        main_link.close()
        peer.close()
        say("bye")
        """ % COLLECTIVES[call])
    try:
        assert c.line() == "ready"
        t0 = time.monotonic()
        c.p.send_signal(signal.SIGINT)
        assert c.line(timeout=3) == "interrupted"
        elapsed = time.monotonic() - t0
        assert elapsed < 0.25, f"KeyboardInterrupt after {elapsed:.3f} s"
        c.tell("send t first")
        c.tell("send t second")
        assert c.line() in ("got first second", "closed")
        assert c.line() == "bye"
        c.finish()
    finally:
        if c.p.poll() is None:
            c.p.kill()
            c.p.wait()


def test_signals_while_messages_flow_lose_nothing():
    """Signals whose handler returns (SIGUSR1) land while messages flow, and
    a SIGINT interrupts a receive between two bursts: every message arrives
    exactly once, in order.  (A SIGINT is only sent while the child waits
    for a message that is not yet sent: a KeyboardInterrupt raised between
    two bytecodes of the test's own loop would lose a message by itself.)"""
    c = Child(r"""
        N = 200
        permits = threading.Semaphore(0)
        hits = []
        signal.signal(signal.SIGUSR1, lambda s, f: hits.append(s))
        def control():
            for line in sys.stdin:
                cmd = line.split()
                if cmd and cmd[0] == "more":
                    for _ in range(int(cmd[1])):
                        permits.release()
                else:
                    break
        def sender():
            for i in range(N):
                permits.acquire()
                peer.send(0, "s", b"%d" % i)
        ct = threading.Thread(target=control)
        st = threading.Thread(target=sender)
        ct.start()
        st.start()
        got = []
        interrupts = 0
        said = False
        say("ready")
        while len(got) < N:
            try:
                if len(got) == N // 2 and not said:
                    said = True
                    say("half")
                try:
                    got.append(int(main_link.recv(1, "s", timeout=5)))
                except tagwire.TimeoutError:
                    say("lost: got %d messages, missing %r"
                        % (len(got), sorted(set(range(N)) - set(got))))
                    break
            except KeyboardInterrupt:
                interrupts += 1
                say("interrupted")
        st.join()
        say("ok" if got == list(range(N)) else "bad %r" % got[:20],
            interrupts, len(hits) > 0)
        ct.join()
        peer.close()
        main_link.close()
        """)
    try:
        assert c.line() == "ready"
        for _ in range(20):
            c.p.send_signal(signal.SIGUSR1)
            c.tell("more 5")
        assert c.line() == "half"
        t0 = time.monotonic()
        c.p.send_signal(signal.SIGINT)
        assert c.line() == "interrupted"
        assert time.monotonic() - t0 < 0.25
        for _ in range(20):
            c.p.send_signal(signal.SIGUSR1)
            c.tell("more 5")
        assert c.line() == "ok 1 True"
        c.finish()
    finally:
        if c.p.poll() is None:
            c.p.kill()
            c.p.wait()


def test_signal_handler_that_does_not_raise_keeps_waiting():
    c = Child(r"""
        hits = []
        signal.signal(signal.SIGUSR1, lambda s, f: (hits.append(s), say("handled")))
        t = threading.Thread(target=peer_loop)
        t.start()
        say("ready")
        data = main_link.recv(1, "t")
        say("got", data.decode(), len(hits))
        t.join()
        peer.close()
        main_link.close()
        """)
    try:
        assert c.line() == "ready"
        t0 = time.monotonic()
        c.p.send_signal(signal.SIGUSR1)
        assert c.line() == "handled"
        assert time.monotonic() - t0 < 0.25
        c.tell("send t payload")
        assert c.line() == "got payload 1"
        c.finish()
    finally:
        if c.p.poll() is None:
            c.p.kill()
            c.p.wait()


def test_sigint_reaches_main_thread_while_worker_blocks():
    """A worker thread blocked in recv is not interrupted; the main thread
    gets the KeyboardInterrupt, and the worker still receives."""
    c = Child(r"""
        got = []
        def worker():
            got.append(main_link.recv(1, "w", timeout=None))
        w = threading.Thread(target=worker)
        w.start()
        t = threading.Thread(target=peer_loop)
        t.start()
        try:
            say("ready")
            threading.Event().wait(30)
            say("not-interrupted")
        except KeyboardInterrupt:
            say("interrupted", w.is_alive())
        w.join()
        say("worker got", got[0].decode())
        t.join()
        peer.close()
        main_link.close()
        """)
    try:
        assert c.line() == "ready"
        t0 = time.monotonic()
        c.p.send_signal(signal.SIGINT)
        assert c.line() == "interrupted True"
        assert time.monotonic() - t0 < 0.25
        c.tell("send w hello")
        assert c.line() == "worker got hello"
        c.finish()
    finally:
        if c.p.poll() is None:
            c.p.kill()
            c.p.wait()


def test_blocked_calls_release_the_gil_in_every_thread():
    """Four threads block in recv at once while a fifth counts: the counting
    thread finishes first and then feeds them."""
    import threading

    import tagwire
    from conftest import create_links, make_desc

    d = make_desc(2, "mem")
    a, b = create_links(d)
    try:
        results = {}

        def waiter(k):
            results[k] = b.recv(0, f"g{k}", timeout=20)

        ws = [threading.Thread(target=waiter, args=(k,)) for k in range(4)]
        for w in ws:
            w.start()
        n = 0
        while n < 500_000:
            n += 1
        for k in range(4):
            a.send(1, f"g{k}", b"%d" % k)
        for w in ws:
            w.join(20)
        assert results == {k: b"%d" % k for k in range(4)}
    finally:
        for l in (a, b):
            l.abort()
        a.close()
        b.close()
    assert isinstance(tagwire.Error("x"), RuntimeError)


CREATE_PRELUDE = textwrap.dedent(r"""
    import faulthandler, signal, sys, threading, time
    import tagwire
    faulthandler.register(signal.SIGUSR2, all_threads=True)

    def say(*words):
        sys.stdout.write(" ".join(str(w) for w in words) + "\n")
        sys.stdout.flush()

    addrs = sys.argv[1].split(",")
    d = tagwire.Desc(sys.argv[2])
    for i, a in enumerate(addrs):
        d.add_party("P%d" % i, a)
    d.connect_timeout_ms = 20000
    """)


@pytest.mark.parametrize("scheme", ["mem", "tcp"])
def test_sigint_during_create_raised_when_create_returns(scheme):
    """create is not interrupted (the C library has no way to cancel a
    creation half way, and documents so): a SIGINT while it waits for a
    peer that never comes is raised as KeyboardInterrupt as soon as create
    gives up at the connect timeout, and nothing is left behind."""
    c = Child(r"""
        d.connect_timeout_ms = 600
        try:
            say("ready")
            tagwire.create(d, 0)
            say("created")
        except KeyboardInterrupt:
            say("interrupted")
        except TimeoutError:
            say("timeout-without-interrupt")
        d.connect_timeout_ms = 20000
        # the interrupted creation left nothing behind: both parties can
        # now create the link
        links = [None, None]
        def make(r):
            links[r] = tagwire.create(d, r)
        ts = [threading.Thread(target=make, args=(r,)) for r in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        links[0].send(1, "t", b"ok")
        say("after", links[1].recv(0, "t").decode())
        for l in links:
            l.close()
        """, scheme, prelude=CREATE_PRELUDE)
    try:
        assert c.line() == "ready"
        t0 = time.monotonic()
        c.p.send_signal(signal.SIGINT)
        assert c.line(timeout=10) == "interrupted"
        elapsed = time.monotonic() - t0
        assert elapsed < 5, f"KeyboardInterrupt after {elapsed:.3f} s"
        assert c.line() == "after ok"
        c.finish()
    finally:
        if c.p.poll() is None:
            c.p.kill()
            c.p.wait()
