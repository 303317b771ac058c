"""A 3-party tagwire link over a tiny HTTP communicator (standard library).

Each party is a process that runs one HTTP service on 127.0.0.1 (port 0:
the system picks it).  The service has one endpoint, POST /msg, whose
headers say who sent the message and under which key, and whose body is
the message; it pushes the bytes into the party's mailbox, a FIFO per
(sender, key).  The channel to a peer POSTs to the peer's service (one
kept-alive connection) and receives by popping the local mailbox.

That is the "one port" story: the link opens no port of its own and rides
on the port of the service the party already runs, here a toy HTTP server,
in practice the runtime's own web service.

The parent starts the three parties, collects their ports through a queue
and hands every party the list; each party then sends a message to each
other party, receives theirs, runs an all_gather, checks the results and
reports one line, which the parent prints.  The parent prints
"http_link: OK" when all three succeeded and exits 0.

    python3 http_link.py [--parties N]
"""

import argparse
import hashlib
import http.client
import http.server
import multiprocessing as mp
import queue
import sys
import threading
import time
import urllib.parse
from collections import deque

LINK_ID = "http-demo"


# ---------------------------------------------------------------------------
# The communicator: an HTTP service and a mailbox


class Mailbox:
    """Every message received, a FIFO per (sender, key)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._queues = {}
        self._aborted = False

    def push(self, frm, key, data):
        with self._cond:
            self._queues.setdefault((frm, key), deque()).append(data)
            self._cond.notify_all()

    def pop(self, frm, key, timeout):
        """The oldest message from `frm` under `key`; TimeoutError after
        `timeout` seconds (None: forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._aborted:
                    raise ConnectionAbortedError("mailbox aborted")
                q = self._queues.get((frm, key))
                if q:
                    return q.popleft()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"nothing from {frm} under {key!r}")
                self._cond.wait(left)

    def abort(self):
        with self._cond:
            self._aborted = True
            self._cond.notify_all()


def make_service(mailbox):
    """A ThreadingHTTPServer on 127.0.0.1 (port 0) with POST /msg."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one connection per peer

        def do_POST(self):  # noqa: N802 (http.server's name)
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n)
            frm = self.headers.get("X-From")
            key = urllib.parse.unquote(self.headers.get("X-Key", ""))
            if self.path != "/msg" or frm is None:
                self.send_response(404)
            else:
                mailbox.push(int(frm), key, body)
                self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True,
                     name="http-service").start()
    return server


class HttpChannel:
    """A tagwire channel to one peer: send POSTs to the peer's service,
    recv pops this party's mailbox."""

    def __init__(self, me, peer, peer_port, mailbox):
        self.me = me
        self.peer = peer
        self.port = peer_port
        self.mailbox = mailbox
        self._lock = threading.Lock()
        self._conn = None

    def send(self, key, data):
        headers = {"X-From": str(self.me),
                   "X-Key": urllib.parse.quote(key, safe=""),
                   "Content-Type": "application/octet-stream"}
        with self._lock:
            if self._conn is None:
                self._conn = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=30)
            self._conn.request("POST", "/msg", body=bytes(data),
                               headers=headers)
            resp = self._conn.getresponse()
            resp.read()
        if resp.status != 204:
            raise ConnectionError(f"POST /msg to party {self.peer}: "
                                  f"HTTP {resp.status}")

    def recv(self, key, timeout):
        return self.mailbox.pop(self.peer, key, timeout)

    def abort(self):
        self.mailbox.abort()

    def close(self):
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


# ---------------------------------------------------------------------------
# A party


def message(frm, to):
    return b"from P%d to P%d \x00\xff" % (frm, to)


def party_main(rank, n, port_q, ports_q, result_q, stop_q):
    import tagwire  # in the child: each party is its own process

    mailbox = Mailbox()
    server = make_service(mailbox)
    port_q.put((rank, server.server_address[1]))
    ports = ports_q.get(timeout=60)
    try:
        d = tagwire.Desc(LINK_ID)
        for i, p in enumerate(ports):
            # The party's address is its service; the channels carry the
            # traffic, the link opens nothing on it.
            d.add_party(f"P{i}", f"tcp://127.0.0.1:{p}")
        d.connect_timeout_ms = 20_000
        d.recv_timeout_ms = 20_000
        chans = [None if i == rank else HttpChannel(rank, i, ports[i], mailbox)
                 for i in range(n)]
        with tagwire.create_with_channels(d, rank, chans) as link:
            for dst in range(n):
                if dst != rank:
                    link.send(dst, "greet", message(rank, dst))
            got = {src: link.recv(src, "greet")
                   for src in range(n) if src != rank}
            p2p_ok = all(got[s] == message(s, rank) for s in got)
            parts = link.all_gather(b"P%d:%d" % (rank, ports[rank] * (rank + 1)))
            ag_ok = parts == [b"P%d:%d" % (i, ports[i] * (i + 1))
                              for i in range(n)]
            digest = hashlib.sha256(b"|".join(parts)).hexdigest()[:16]
            link.barrier("done")
        line = (f"P{rank}: port={ports[rank]} "
                f"p2p={'ok' if p2p_ok else 'BAD'} "
                f"all_gather={'ok' if ag_ok else 'BAD'} sha256={digest}")
        result_q.put((rank, p2p_ok and ag_ok, digest, line))
    except BaseException as e:
        result_q.put((rank, False, None, f"P{rank}: failed: {e!r}"))
        raise
    finally:
        # Peers may still POST (their close) until every link is closed:
        # the parent says when to stop serving.
        try:
            stop_q.get(timeout=60)
        except queue.Empty:
            pass
        server.shutdown()
        server.server_close()


def collect(q, n, procs, timeout):
    """n items from q; queue.Empty when a party exits without sending its
    item or `timeout` seconds pass."""
    items = []
    deadline = time.monotonic() + timeout
    while len(items) < n:
        try:
            items.append(q.get(timeout=0.5))
        except queue.Empty:
            dead = [p.name for p in procs
                    if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                print(f"parties failed: {dead}" if dead else "timed out",
                      flush=True)
                raise
    return items


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parties", type=int, default=3)
    n = ap.parse_args().parties
    ctx = mp.get_context("spawn")  # fresh interpreters, nothing inherited
    port_q = ctx.Queue()
    result_q = ctx.Queue()
    ports_qs = [ctx.Queue() for _ in range(n)]
    stop_qs = [ctx.Queue() for _ in range(n)]
    procs = [ctx.Process(target=party_main, name=f"P{r}",
                         args=(r, n, port_q, ports_qs[r], result_q, stop_qs[r]))
             for r in range(n)]
    for p in procs:
        p.start()
    ok = True
    try:
        ports = [None] * n
        for r, port in collect(port_q, n, procs, 60):
            ports[r] = port
        print(f"services on 127.0.0.1 ports {ports}", flush=True)
        for q in ports_qs:
            q.put(ports)
        results = {}
        for r, good, digest, line in collect(result_q, n, procs, 90):
            results[r] = (good, digest, line)
        for r in range(n):  # the parent prints: the lines never interleave
            print(results[r][2], flush=True)
        ok = (all(results[r][0] for r in range(n))
              and len({results[r][1] for r in range(n)}) == 1)
    except queue.Empty:
        ok = False
    finally:
        for q in stop_qs:
            q.put("stop")
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join()
                ok = False
            elif p.exitcode != 0:
                ok = False
    print(f"http_link: {'OK' if ok else 'FAILED'} {n} parties", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
