"""tagwire: tagged messages and bulk transfers between the parties of a
distributed computation, over threads (mem://), shared memory (shm://) and
TCP (tcp://, one port per process), or over channels you bring.

    import tagwire
    d = tagwire.Desc("root")
    d.add_party("P0", "tcp://127.0.0.1:7000")
    d.add_party("P1", "tcp://127.0.0.1:7001")
    with tagwire.create(d, rank) as link:
        link.send(1 - rank, "hello", b"bytes or any buffer")
        data = link.recv(1 - rank, "hello")

Timeouts are in seconds (None: the link's own).  Every blocking call
releases the GIL; on the main thread Ctrl-C interrupts it.
"""

from tagwire._tagwire import *  # noqa: F401,F403
from tagwire._tagwire import (  # noqa: F401
    Error, TimeoutError, ClosedError, PeerError, ChannelError,
    TruncatedError, TooBigError, AuthError, ProtocolError, Message, Desc,
    version, strerror,
)

__version__ = version
