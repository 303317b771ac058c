"""Moves a numpy array between two tagwire engines with a one-sided WRITE
followed by a notification.

The two engines run in two threads of this process and talk over
tcp://127.0.0.1 (any free port); a queue stands in for the control plane
that would carry the engine info and the memory description between
machines.  The target learns that the data is in place from the
notification alone: the engine delivers a transfer's notification only
after the transfer's data.

    python3 engine_numpy.py [N]

prints the checksum of the array on both sides and "engine_numpy: OK".
"""

import queue
import sys
import threading

import numpy as np

import tagwire


def target(n, to_initiator, from_initiator, result):
    with tagwire.Engine("target") as eng:
        eng.listen("tcp://127.0.0.1:0")
        to_initiator.put(eng.info())
        peer = eng.accept("initiator", timeout=30)
        # The array the initiator writes into, registered for WRITE.
        dst = np.zeros(n, dtype=np.float32)
        mem = eng.register(dst, tagwire.ACCESS_WRITE)
        to_initiator.put(mem.pack())
        sender, note = eng.recv_notify(timeout=30)
        assert sender == peer
        # The notification came after the data: dst is complete here.
        result["note"] = note
        result["sum"] = float(dst.astype(np.float64).sum())
        result["equal"] = bool(np.array_equal(dst, expected(n)))
        mem.deregister()
        from_initiator.get(timeout=30)  # the initiator is done


def expected(n):
    return np.arange(n, dtype=np.float32) * np.float32(0.5)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1 << 20
    to_initiator, from_initiator = queue.Queue(), queue.Queue()
    result = {}
    t = threading.Thread(
        target=target, args=(n, to_initiator, from_initiator, result))
    t.start()
    try:
        with tagwire.Engine("initiator", stripes=2,
                            chunk_size=256 << 10) as eng:
            peer = eng.connect(to_initiator.get(timeout=30))
            remote = eng.unpack(peer, to_initiator.get(timeout=30))
            src = expected(n)
            mem = eng.register(src, tagwire.ACCESS_READ)
            xfer = eng.transfer(peer, timeout=30)
            xfer.post_write(mem, 0, remote, 0, src.nbytes)
            xfer.notify(b"array-ready")
            xfer.wait()
            xfer.close()
            sent = float(src.astype(np.float64).sum())
            stats = eng.stats(peer)
            from_initiator.put("done")
    finally:
        t.join()
    print(f"sent {n} float32 ({src.nbytes} bytes), checksum {sent:.1f}")
    print(f"received notification {result['note']!r}, "
          f"checksum {result['sum']:.1f}")
    print(f"initiator stats: bytes_sent={stats['bytes_sent']} "
          f"xfers_done={stats['xfers_done']}")
    ok = result["equal"] and result["sum"] == sent
    print("engine_numpy: OK" if ok else "engine_numpy: MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
