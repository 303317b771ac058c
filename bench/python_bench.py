#!/usr/bin/python3
"""python_bench.py: tagwire's Python module side by side with pyzmq and
mpi4py, and with tagwire's own C figure, in one run.

    bench/python_compare.sh [--quick] [--rounds N] [--lat-iters N]
                            [--bw-mib N] [--tsv PATH] [--only LIST] [--pin]
    /usr/bin/python3 bench/python_bench.py --summarize IN.tsv [--tsv OUT]

(python_compare.sh builds the module and the `tagwire` CLI and runs this
with PYTHONPATH and --tagwire-cli set.)

Two workloads, two sections, every figure from two processes:

  lat 8 B    ping-pong of 8-byte messages; the figure is the ONE-WAY
             latency, round trip / 2, median over the timed round trips
             (as `tagwire perf` and bench/*.c report it), in us.
  bw 1 MiB   1 MiB messages streamed one way, blocking sends, one
             acknowledgement at the end (as `tagwire perf --test bw`):
             bytes / wall time, GB/s (1e9 B/s).

  section shm (same host, no network stack where the library has one):
    tagwire-py  shm://NAME addresses; link.send, link.recv_into into a
                preallocated buffer (a numpy array at 1 MiB)
    pyzmq       PAIR sockets over ipc:// (Unix domain sockets: ZeroMQ has
                no shared-memory transport); send/recv at 8 B; at 1 MiB
                send(copy=False) and recv(copy=False), the frame viewed in
                place with np.frombuffer (no copy: pyzmq 24 has no
                recv_into)
    mpi4py      Open MPI, pml ob1, btl self,vader; comm.Send / comm.Recv
                with numpy buffers (the buffer API), Recv into a
                preallocated array
    tagwire-c   `tagwire perf --transport shm` (tw_send / tw_recv_into)
  section tcp (127.0.0.1): the same over tcp:// (tagwire, pyzmq) and btl
    self,tcp on lo (mpi4py).

Each round runs every contender once, in an order that rotates from round
to round; every figure is the median over the rounds (of an even number,
the mean of the middle two).  Ratios are the contender's median over the
other's, as in bench/summarize.awk: for latency below 1 means tagwire is
faster, for bandwidth above 1 means tagwire is faster.

Nothing is pinned unless --pin (then the Python and MPI ranks 0 and 1 go
to the first and second allowed CPU, as bench/peers do; `tagwire perf`
is never pinned).  A contender that cannot run (mpirun missing, a module
missing, a failure) gets a "skipped: reason" row and n/a cells; the exit
status is then 1, after the table, unless it was only missing software.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

LAT_SIZE = 8
BW_SIZE = 1 << 20
SECTIONS = ("shm", "tcp")
WORKLOADS = (("lat 8 B", "one-way median", "us"),
             ("lat 8 B", "one-way p99", "us"),
             ("bw 1 MiB", "bandwidth", "GB/s"))
CONTENDERS = ("tagwire-py", "tagwire-c", "pyzmq", "mpi4py")
# The ratio rows: (contender, baseline).
RATIOS = (("tagwire-py", "pyzmq"), ("tagwire-py", "mpi4py"),
          ("tagwire-py", "tagwire-c"), ("tagwire-c", "pyzmq"),
          ("tagwire-c", "mpi4py"))
# Per section, how each contender gets there.
TRANSPORT = {
    ("tagwire-py", "shm"): "shm://", ("tagwire-py", "tcp"): "tcp://127.0.0.1",
    ("pyzmq", "shm"): "ipc://", ("pyzmq", "tcp"): "tcp://127.0.0.1",
    ("mpi4py", "shm"): "btl vader", ("mpi4py", "tcp"): "btl tcp (lo)",
    ("tagwire-c", "shm"): "perf shm", ("tagwire-c", "tcp"): "perf tcp",
}


class Skip(Exception):
    """A contender that cannot run here (software missing): not a failure."""


# ---------------------------------------------------------------------------
# Workers: one process per rank.  Rank 0 leads, times and prints one line
# "RESULT {json}" on stdout.


def pin(conf, rank):
    if conf.get("pin"):
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2:
            os.sched_setaffinity(0, {cpus[rank]})


def lat_figures(rtt):
    rtt = sorted(rtt)
    n = len(rtt)
    p99 = rtt[min(n - 1, (99 * n) // 100)]
    return {"lat_med_us": statistics.median(rtt) / 2 / 1e3,
            "lat_p99_us": p99 / 2 / 1e3}


def fill(np, n):
    a = np.arange(n, dtype=np.uint32).astype(np.uint8)
    a[:8] = 0x5a
    return a


def result(d):
    sys.stdout.write("RESULT " + json.dumps(d) + "\n")
    sys.stdout.flush()


def worker_tagwire(conf, rank):
    import numpy as np
    import tagwire
    pin(conf, rank)
    d = tagwire.Desc(conf["link_id"])
    for i, a in enumerate(conf["addrs"]):
        d.add_party(f"P{i}", a)
    d.connect_timeout_ms = 20000
    d.recv_timeout_ms = 30000
    peer = 1 - rank
    nlat, wlat = conf["lat_iters"], conf["lat_warm"]
    nbw, wbw = conf["bw_msgs"], conf["bw_warm"]
    now = time.perf_counter_ns
    with tagwire.create(d, rank) as link:
        send, recv_into = link.send, link.recv_into
        tag = "d"  # str: the module takes str or bytes
        # Latency: 8 bytes there and back.
        sbuf = bytearray(b"12345678")
        rbuf = bytearray(LAT_SIZE)
        out = {}
        if rank == 0:
            for _ in range(wlat):
                send(peer, tag, sbuf)
                recv_into(rbuf, peer, tag)
            rtt = [0] * nlat
            for i in range(nlat):
                t0 = now()
                send(peer, tag, sbuf)
                recv_into(rbuf, peer, tag)
                rtt[i] = now() - t0
            if rbuf != sbuf:
                raise SystemExit("tagwire lat: wrong echo")
            out.update(lat_figures(rtt))
        else:
            for _ in range(wlat + nlat):
                recv_into(rbuf, peer, tag)
                send(peer, tag, rbuf)
        # Bandwidth: 1 MiB messages one way, one ack at the end.
        ack = bytearray(1)
        if rank == 0:
            src = fill(np, BW_SIZE)
            for n, timed in ((wbw, False), (nbw, True)):
                t0 = now()
                for _ in range(n):
                    send(peer, tag, src)
                recv_into(ack, peer, "a")
                t = now() - t0
            out["bw_gbps"] = nbw * BW_SIZE / t
            result(out)
        else:
            dst = np.empty(BW_SIZE, dtype=np.uint8)
            for n in (wbw, nbw):
                for _ in range(n):
                    if recv_into(dst, peer, tag) != BW_SIZE:
                        raise SystemExit("tagwire bw: short message")
                send(peer, "a", ack)
            if not np.array_equal(dst, fill(np, BW_SIZE)):
                raise SystemExit("tagwire bw: wrong bytes")


def worker_zmq(conf, rank):
    import numpy as np
    import zmq
    pin(conf, rank)
    ctx = zmq.Context()
    s = ctx.socket(zmq.PAIR)
    s.setsockopt(zmq.LINGER, 2000)
    if rank == 0:
        s.bind(conf["addr"])
    else:
        s.connect(conf["addr"])
    s.setsockopt(zmq.RCVTIMEO, 30000)
    nlat, wlat = conf["lat_iters"], conf["lat_warm"]
    nbw, wbw = conf["bw_msgs"], conf["bw_warm"]
    now = time.perf_counter_ns
    send, recv = s.send, s.recv
    # A handshake: the connection is up before anything is timed.
    if rank == 0:
        recv()
        send(b"h")
    else:
        send(b"h")
        recv()
    out = {}
    sbuf = b"12345678"
    if rank == 0:
        for _ in range(wlat):
            send(sbuf)
            recv()
        rtt = [0] * nlat
        for i in range(nlat):
            t0 = now()
            send(sbuf)
            r = recv()
            rtt[i] = now() - t0
        if r != sbuf:
            raise SystemExit("zmq lat: wrong echo")
        out.update(lat_figures(rtt))
    else:
        for _ in range(wlat + nlat):
            send(recv())
    if rank == 0:
        src = fill(np, BW_SIZE)
        for n in (wbw, nbw):
            t0 = now()
            for _ in range(n):
                send(src, copy=False)
            recv()
            t = now() - t0
        out["bw_gbps"] = nbw * BW_SIZE / t
        result(out)
    else:
        view = None
        for n in (wbw, nbw):
            for _ in range(n):
                f = recv(copy=False)
                view = np.frombuffer(f.buffer, dtype=np.uint8)
                if view.nbytes != BW_SIZE:
                    raise SystemExit("zmq bw: short message")
            send(b"a")
        if not np.array_equal(view, fill(np, BW_SIZE)):
            raise SystemExit("zmq bw: wrong bytes")
    s.close()
    ctx.term()


def worker_mpi(conf):
    import numpy as np
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    pin(conf, rank)
    peer = 1 - rank
    nlat, wlat = conf["lat_iters"], conf["lat_warm"]
    nbw, wbw = conf["bw_msgs"], conf["bw_warm"]
    now = time.perf_counter_ns
    Send, Recv = comm.Send, comm.Recv
    sbuf = np.frombuffer(b"12345678", dtype=np.uint8).copy()
    rbuf = np.empty(LAT_SIZE, dtype=np.uint8)
    comm.Barrier()
    out = {}
    if rank == 0:
        for _ in range(wlat):
            Send(sbuf, peer, 0)
            Recv(rbuf, peer, 0)
        rtt = [0] * nlat
        for i in range(nlat):
            t0 = now()
            Send(sbuf, peer, 0)
            Recv(rbuf, peer, 0)
            rtt[i] = now() - t0
        if not np.array_equal(rbuf, sbuf):
            raise SystemExit("mpi lat: wrong echo")
        out.update(lat_figures(rtt))
    else:
        for _ in range(wlat + nlat):
            Recv(rbuf, peer, 0)
            Send(rbuf, peer, 0)
    ack = np.zeros(1, dtype=np.uint8)
    if rank == 0:
        src = fill(np, BW_SIZE)
        for n in (wbw, nbw):
            t0 = now()
            for _ in range(n):
                Send(src, peer, 1)
            Recv(ack, peer, 2)
            t = now() - t0
        out["bw_gbps"] = nbw * BW_SIZE / t
        result(out)
    else:
        dst = np.empty(BW_SIZE, dtype=np.uint8)
        st = MPI.Status()
        for n in (wbw, nbw):
            for _ in range(n):
                Recv(dst, peer, 1, st)
                if st.Get_count(MPI.BYTE) != BW_SIZE:
                    raise SystemExit("mpi bw: short message")
            Send(ack, peer, 2)
        if not np.array_equal(dst, fill(np, BW_SIZE)):
            raise SystemExit("mpi bw: wrong bytes")
    comm.Barrier()


def worker_main(kind, conf_json, rank):
    conf = json.loads(conf_json)
    if kind == "tagwire":
        worker_tagwire(conf, rank)
    elif kind == "zmq":
        worker_zmq(conf, rank)
    elif kind == "mpi":
        worker_mpi(conf)
    else:
        raise SystemExit(f"unknown worker {kind}")


# ---------------------------------------------------------------------------
# The leader: runs the contenders, round after round.


def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tail(text, n=8):
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return " | ".join(lines[-n:]) if lines else "(no output)"


def parse_result(out):
    for line in reversed(out.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return None


def kill_group(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_pair(kind, conf, limit, env):
    """Two worker processes of this script; the result of rank 0."""
    cmd = [PYTHON, os.path.abspath(__file__), "--worker", kind,
           "--conf", json.dumps(conf)]
    procs = []
    for rank in (0, 1):
        procs.append(subprocess.Popen(
            cmd + ["--rank", str(rank)], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=env,
            start_new_session=True))
    outs, failed = [], None
    deadline = time.monotonic() + limit
    for rank, p in enumerate(procs):
        try:
            o, e = p.communicate(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                kill_group(q)
            o, e = p.communicate()
            failed = failed or f"rank {rank}: timed out after {limit} s"
        outs.append((o, e))
        if p.returncode != 0 and failed is None:
            failed = f"rank {rank}: exit {p.returncode}: {tail(e)}"
            for q in procs:  # the other one would wait for its peer
                if q.poll() is None:
                    kill_group(q)
    if failed:
        raise RuntimeError(failed)
    r = parse_result(outs[0][0])
    if r is None:
        raise RuntimeError(f"rank 0 printed no result: {tail(outs[0][1])}")
    return r


def measure_tagwire(sec, conf, limit, env):
    if conf.get("tw_import_error"):
        raise Skip(conf["tw_import_error"])
    c = dict(conf)
    tag = f"pyb{os.getpid()}x{conf['seq']}"
    c["link_id"] = "L" + tag
    if sec == "shm":
        c["addrs"] = [f"shm://{tag}.p{i}" for i in range(2)]
    else:
        c["addrs"] = [f"tcp://127.0.0.1:{p}" for p in free_ports(2)]
    return run_pair("tagwire", c, limit, env)


def measure_zmq(sec, conf, limit, env):
    if conf.get("zmq_import_error"):
        raise Skip(conf["zmq_import_error"])
    c = dict(conf)
    path = None
    if sec == "shm":
        path = os.path.join(tempfile.gettempdir(),
                            f"twpyb-{os.getpid()}-{conf['seq']}.ipc")
        c["addr"] = "ipc://" + path
    else:
        c["addr"] = f"tcp://127.0.0.1:{free_ports(1)[0]}"
    try:
        return run_pair("zmq", c, limit, env)
    finally:
        if path and os.path.exists(path):
            os.unlink(path)


def measure_mpi(sec, conf, limit, env):
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        raise Skip("mpirun not found (Debian: openmpi-bin)")
    if conf.get("mpi_import_error"):
        raise Skip(conf["mpi_import_error"])
    btl = ["--mca", "btl", "self,vader"] if sec == "shm" else \
        ["--mca", "btl", "self,tcp", "--mca", "btl_tcp_if_include", "lo"]
    cmd = [mpirun, "-n", "2", "--oversubscribe", "--bind-to", "none",
           "--mca", "pml", "ob1"] + btl
    if os.geteuid() == 0:
        cmd.insert(3, "--allow-run-as-root")
    cmd += [PYTHON, os.path.abspath(__file__), "--worker", "mpi",
            "--conf", json.dumps(conf)]
    e = dict(env)
    # No MPI_Init chatter about missing networks or the TMPDIR length.
    e.setdefault("OMPI_MCA_btl_base_warn_component_unused", "0")
    e.setdefault("OMPI_MCA_orte_base_help_aggregate", "1")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=e, start_new_session=True)
    try:
        o, err = p.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        kill_group(p)
        p.communicate()
        raise Skip(f"mpirun timed out after {limit} s")
    r = parse_result(o)
    if p.returncode != 0 or r is None:
        # An MPI that does not start here is reported and left out, as
        # a missing one is: it does not fail the run.
        raise Skip(f"mpirun failed (exit {p.returncode}): {tail(err + o, 4)}")
    return r


def measure_c(conf, limit, env):
    """Both sections at once: `tagwire perf` for lat 8 B and bw 1 MiB."""
    cli = conf.get("cli")
    if not cli or not os.access(cli, os.X_OK):
        raise Skip(f"no tagwire CLI at {cli!r} (pass --tagwire-cli)")
    rows = {}
    for test, size, iters in (("lat", "8", conf["lat_iters"]),
                              ("bw", "1M", conf["bw_msgs"])):
        cmd = [cli, "perf", "--test", test, "--transport", "shm,tcp",
               "--sizes", size, "--iters", str(iters), "--csv",
               "--timeout", "30"]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True,
                               timeout=limit, env=env)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"tagwire perf --test {test}: timed out")
        if p.returncode != 0:
            raise RuntimeError(
                f"tagwire perf --test {test}: exit {p.returncode}: "
                f"{tail(p.stderr + p.stdout)}")
        lines = [l for l in p.stdout.splitlines() if l.strip()]
        hdr = lines[0].split(",")
        for l in lines[1:]:
            row = dict(zip(hdr, l.split(",")))
            sec = row["transport"]
            d = rows.setdefault(sec, {})
            if test == "lat":
                d["lat_med_us"] = float(row["median_us"])
                d["lat_p99_us"] = float(row["p99_us"])
            else:
                d["bw_gbps"] = float(row["gbps"])
    return rows


def to_figs(res):
    return {("lat 8 B", "one-way median"): res.get("lat_med_us"),
            ("lat 8 B", "one-way p99"): res.get("lat_p99_us"),
            ("bw 1 MiB", "bandwidth"): res.get("bw_gbps")}


UNITS = {m: u for _, m, u in WORKLOADS}


def run_all(args):
    env = dict(os.environ)
    conf = {"lat_iters": args.lat_iters, "lat_warm": max(100, args.lat_iters // 10),
            "bw_msgs": args.bw_mib, "bw_warm": max(4, args.bw_mib // 10),
            "pin": args.pin, "cli": args.tagwire_cli}
    # Import checks once, here, so that a missing module is a skip.
    for mod, key in (("tagwire", "tw_import_error"), ("zmq", "zmq_import_error"),
                     ("mpi4py", "mpi_import_error"), ("numpy", "np_import_error")):
        p = subprocess.run([PYTHON, "-c", f"import {mod}"], capture_output=True,
                           text=True, env=env)
        if p.returncode != 0:
            conf[key] = f"python3 cannot import {mod}: {tail(p.stderr, 1)}"
    if conf.get("np_import_error"):
        raise SystemExit(conf["np_import_error"])

    wanted = set(args.only.split(",")) if args.only else set(CONTENDERS)
    units = []  # (name, list of (contender, section) it yields)
    for c in ("tagwire-py", "pyzmq", "mpi4py"):
        if c in wanted:
            for s in SECTIONS:
                units.append((c, s))
    if "tagwire-c" in wanted:
        units.append(("tagwire-c", None))
    rows = []  # (section, workload, contender, metric, unit, round, value)
    skipped = {}  # (contender, section) -> reason
    failures = 0
    limit = args.limit
    seq = 0
    t_start = time.monotonic()
    for rnd in range(1, args.rounds + 1):
        k = (rnd - 1) % len(units)
        order = units[k:] + units[:k]
        for c, s in order:
            keys = [(c, s)] if s else [(c, x) for x in SECTIONS]
            if all(kk in skipped for kk in keys):
                continue
            seq += 1
            conf["seq"] = seq
            t0 = time.monotonic()
            try:
                if c == "tagwire-py":
                    res = {s: measure_tagwire(s, conf, limit, env)}
                elif c == "pyzmq":
                    res = {s: measure_zmq(s, conf, limit, env)}
                elif c == "mpi4py":
                    res = {s: measure_mpi(s, conf, limit, env)}
                else:
                    res = measure_c(conf, limit, env)
            except Skip as e:
                for kk in keys:
                    skipped[kk] = f"skipped: {e}"
                say(f"round {rnd}/{args.rounds} {c}{' ' + s if s else ''}: skipped: {e}")
                continue
            except RuntimeError as e:
                failures += 1
                for kk in keys:
                    skipped[kk] = f"failed in round {rnd}: {e}"
                say(f"round {rnd}/{args.rounds} {c}{' ' + s if s else ''}: FAILED: {e}; dropping it")
                continue
            n = 0
            for sec, r in res.items():
                for (wl, met), v in to_figs(r).items():
                    if v is not None:
                        rows.append((sec, wl, c, met, UNITS[met], str(rnd), v))
                        n += 1
            say(f"round {rnd}/{args.rounds} {c}{' ' + s if s else ''}: "
                f"{n} figures, {time.monotonic() - t0:.1f} s")
    say(f"measured in {time.monotonic() - t_start:.0f} s")
    return rows, skipped, failures


def say(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------
# Medians, ratios, the table, the TSV.


def summarize(rows):
    """Median and ratio rows from the round rows."""
    vals = {}
    for sec, wl, c, met, unit, rnd, v in rows:
        if rnd.isdigit():
            vals.setdefault((sec, wl, c, met, unit), []).append(float(v))
    med = {k: statistics.median(v) for k, v in vals.items()}
    out = []
    order = {c: i for i, c in enumerate(CONTENDERS)}
    wl_order = {(wl, m): i for i, (wl, m, _) in enumerate(WORKLOADS)}

    def key(k):
        sec, wl, c, met, unit = k
        return (SECTIONS.index(sec) if sec in SECTIONS else 9,
                wl_order.get((wl, met), 9), order.get(c, 9), wl, met, c)

    for k in sorted(med, key=key):
        out.append(k + ("median", med[k]))
    for sec in SECTIONS:
        for wl, met, unit in WORKLOADS:
            for c, b in RATIOS:
                a = med.get((sec, wl, c, met, unit))
                bb = med.get((sec, wl, b, met, unit))
                if a is not None and bb:
                    out.append((sec, wl, c, met, f"ratio to {b}", "ratio", a / bb))
    return med, out


def fmt_val(v):
    if v is None:
        return "n/a"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    if v >= 0.1:
        return f"{v:.3f}"
    return f"{v:.2g}"


def fmt_ratio(a, b):
    if a is None or not b:
        return "n/a"
    r = a / b
    return f"{r:.0f}x" if r >= 100 else f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"


def table(med, skipped):
    lines = []
    hdr = ["section", "workload", "metric", "unit"] + list(CONTENDERS) + \
        [f"{a} / {b}" for a, b in RATIOS]
    body = []
    for sec in SECTIONS:
        for wl, met, unit in WORKLOADS:
            cells = [sec, wl, met, unit]
            for c in CONTENDERS:
                cells.append(fmt_val(med.get((sec, wl, c, met, unit))))
            for a, b in RATIOS:
                cells.append(fmt_ratio(med.get((sec, wl, a, met, unit)),
                                       med.get((sec, wl, b, met, unit))))
            body.append(cells)
    w = [max(len(r[i]) for r in [hdr] + body) for i in range(len(hdr))]
    for r in [hdr] + body:
        lines.append("  ".join(x.ljust(w[i]) if i < 4 else x.rjust(w[i])
                               for i, x in enumerate(r)).rstrip())
    lines.append("")
    lines.append("Medians over the rounds.  lat: one-way = round trip / 2, us "
                 "(lower is better); bw: GB/s = 1e9 B/s (higher is better).")
    lines.append("A / B: A's median over B's (latency: below 1 = A faster; "
                 "bandwidth: above 1 = A faster).  n/a: not measured.")
    lines.append("Transports: " + "; ".join(
        f"{c} {TRANSPORT[(c, 'shm')]} / {TRANSPORT[(c, 'tcp')]}"
        for c in CONTENDERS) + ".")
    for (c, s), why in sorted(skipped.items()):
        lines.append(f"{c} {s}: {why}")
    # The goals, stated as measured.
    lines.append("")
    lines.append("Goals (as measured):")
    for sec in SECTIONS:
        tw = med.get((sec, "lat 8 B", "tagwire-py", "one-way median", "us"))
        for peer in ("pyzmq", "mpi4py"):
            p = med.get((sec, "lat 8 B", peer, "one-way median", "us"))
            if tw is None or p is None:
                verdict = "n/a"
            else:
                verdict = ("MET" if tw < p else "NOT MET") + \
                    f" ({fmt_val(tw)} us vs {fmt_val(p)} us, {tw / p:.2f}x)"
            lines.append(f"  {sec}: tagwire-py ahead of {peer} at 8 B: {verdict}")
        py = med.get((sec, "bw 1 MiB", "tagwire-py", "bandwidth", "GB/s"))
        cc = med.get((sec, "bw 1 MiB", "tagwire-c", "bandwidth", "GB/s"))
        if py is None or not cc:
            verdict = "n/a"
        else:
            verdict = ("MET" if py >= 0.9 * cc else "NOT MET") + \
                f" ({fmt_val(py)} vs {fmt_val(cc)} GB/s, {py / cc:.2f}x)"
        lines.append(f"  {sec}: recv_into numpy at 1 MiB >= 0.9x C: {verdict}")
    return "\n".join(lines)


def write_tsv(path, header, rows, extra):
    with open(path, "w") as f:
        for h in header:
            f.write(f"# {h}\n")
        f.write("section\tworkload\tcontender\tmetric\tunit\tround\tvalue\n")
        for r in rows:
            f.write("\t".join(r[:6]) + f"\t{float(r[6]):.6g}\n")
        for r in extra:
            v = f"{r[6]:.4f}" if r[5] == "ratio" else f"{r[6]:.6g}"
            f.write("\t".join(r[:6]) + f"\t{v}\n")


def read_tsv(path):
    rows, skipped = [], {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("# skipped "):
                # "# skipped CONTENDER SECTION: REASON"
                head, _, why = line[len("# skipped "):].partition(": ")
                c, _, s = head.partition(" ")
                skipped[(c, s)] = why
                continue
            if not line or line.startswith("#") or line.startswith("section\t"):
                continue
            f7 = line.split("\t")
            if len(f7) == 7 and f7[5].isdigit():
                rows.append(tuple(f7[:6]) + (float(f7[6]),))
    return rows, skipped


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for l in f:
                if l.startswith("model name"):
                    cpu = l.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"nproc {os.cpu_count()}, CPU \"{cpu}\", kernel {os.uname().release}"


def versions():
    code = ("import sys\n"
            "def v(m):\n"
            "  try:\n"
            "    mod=__import__(m); return getattr(mod,'__version__','?')\n"
            "  except Exception as e: return 'missing'\n"
            "import importlib\n"
            "out=['python '+sys.version.split()[0]]\n"
            "for m in ('tagwire','numpy','zmq','mpi4py'): out.append(m+' '+str(v(m)))\n"
            "try:\n"
            "  import zmq; out.append('libzmq '+zmq.zmq_version())\n"
            "except Exception: pass\n"
            "print(', '.join(out))\n")
    p = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True)
    s = p.stdout.strip()
    m = shutil.which("mpirun")
    if m:
        q = subprocess.run([m, "--version"], capture_output=True, text=True)
        first = (q.stdout.strip().splitlines() or ["?"])[0]
        s += f", {first}"
    return s


def load():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def main():
    ap = argparse.ArgumentParser(
        description="tagwire's Python module against pyzmq, mpi4py and "
        "tagwire's C figure (see the top of this file).")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 3 rounds, 2000 round trips, 64 MiB")
    ap.add_argument("--rounds", type=int, help="rounds (default 9; 3 with --quick)")
    ap.add_argument("--lat-iters", type=int,
                    help="timed round trips per lat figure (default 20000; "
                    "2000 with --quick), after a tenth as warm-up")
    ap.add_argument("--bw-mib", type=int,
                    help="1 MiB messages per bw figure (default 512; 64 "
                    "with --quick), after a tenth as warm-up")
    ap.add_argument("--tsv", metavar="PATH", help="also write every figure as TSV")
    ap.add_argument("--only", metavar="LIST",
                    help="comma-separated subset of " + ",".join(CONTENDERS))
    ap.add_argument("--pin", action="store_true",
                    help="pin the Python and MPI ranks 0 and 1 to the first "
                    "two allowed CPUs")
    ap.add_argument("--tagwire-cli", metavar="PATH",
                    help="the tagwire CLI for the C figure (tagwire perf)")
    ap.add_argument("--limit", type=int, default=120,
                    help="seconds per program run before it is killed (120)")
    ap.add_argument("--summarize", metavar="TSV",
                    help="no measuring: the medians, ratios and table of a "
                    "TSV this program wrote (its round rows)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--conf", help=argparse.SUPPRESS)
    ap.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        worker_main(args.worker, args.conf, args.rank)
        return 0

    if args.summarize:
        rows, skipped = read_tsv(args.summarize)
        med, extra = summarize(rows)
        if args.tsv:
            write_tsv(args.tsv, [f"summarized from {args.summarize}"] +
                      [f"skipped {c} {s}: {w}" for (c, s), w in sorted(skipped.items())],
                      rows, extra)
        print(table(med, skipped))
        return 0

    args.rounds = args.rounds or (3 if args.quick else 9)
    args.lat_iters = args.lat_iters or (2000 if args.quick else 20000)
    args.bw_mib = args.bw_mib or (64 if args.quick else 512)
    for name in ("rounds", "lat_iters", "bw_mib"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be 1 or more")
    if args.only:
        bad = set(args.only.split(",")) - set(CONTENDERS)
        if bad:
            ap.error(f"--only: unknown {','.join(sorted(bad))}")

    header = [
        "bench/python_bench.py: tagwire's Python module vs pyzmq, mpi4py "
        "and tagwire's C figure (tagwire perf)",
        "command: " + " ".join(sys.argv),
        "date (UTC): " + time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "machine: " + machine(),
        "versions: " + versions(),
        "build: " + os.environ.get("TW_PYBENCH_BUILD", "unknown"),
        "load average at the start (1, 5, 15 min): " + load(),
        f"rounds {args.rounds}{' (--quick: a smoke run, figures are rough)' if args.quick else ''}; "
        f"lat {args.lat_iters} round trips of 8 B after {max(100, args.lat_iters // 10)} "
        f"warm-up; bw {args.bw_mib} x 1 MiB after {max(4, args.bw_mib // 10)} warm-up; "
        f"{'pinned' if args.pin else 'nothing pinned'}",
    ]
    for h in header:
        print("# " + h)
    sys.stdout.flush()
    rows, skipped, failures = run_all(args)
    header.append("load average at the end (1, 5, 15 min): " + load())
    print("# " + header[-1])
    print()
    med, extra = summarize(rows)
    print(table(med, skipped))
    if args.tsv:
        write_tsv(args.tsv, header + [f"skipped {c} {s}: {w}"
                                      for (c, s), w in sorted(skipped.items())],
                  rows, extra)
        print(f"\nTSV: {args.tsv}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
