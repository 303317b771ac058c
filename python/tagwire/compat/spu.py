"""libspu's link API (``spu.libspu.link``) over tagwire.

A runtime written for libspu moves over by changing its import::

    import spu.libspu.link as link            # before
    from tagwire.compat import spu as link     # after

    class BaseChannel(link.IChannel):          # unchanged
        def __init__(self, comm, peer):
            super().__init__()
            ...
        def Send(self, key, value): ...
        def Recv(self, key): ...               # honours SetRecvTimeout

    desc = link.Desc()
    desc.id = "root"
    desc.recv_timeout_ms = 100_000
    desc.add_party("alice", "127.0.0.1:9001")
    desc.add_party("bob", "127.0.0.1:9002")
    ctx = link.create_with_channels(desc, rank, channels)   # or create_brpc
    ctx.send(ctx.next_rank(), b"data")
    parts = ctx.all_gather(b"\\x00binary\\xff")              # list of bytes

The mapping
-----------

``Desc`` is libspu's ContextDesc: a mutable record, turned into a
``tagwire.Desc`` when a link is created (``Desc.to_tagwire``):

    id                          the link id
    add_party(id, host)         a party; a host without a scheme
                                ("127.0.0.1:9001") means tcp://host, and
                                tcp://, mem://, shm:// addresses are kept
    recv_timeout_ms             recv_timeout_ms
    connect_retry_times,        connect_timeout_ms = times * interval
    connect_retry_interval_ms   (libspu retried that often, that far apart)
    throttle_window_size        throttle_window
    options                     a dict of further tagwire.Desc options
                                (chunk_size, stripes, heartbeat_ms, ...)

The brpc, http and ssl fields are accepted and ignored (tagwire's tcp://
transport has no brpc protocol to choose; use ``Desc.options`` or
``to_tagwire()`` and ``tagwire.Desc.set_tls`` for TLS).

``IChannel`` is the base class of a user channel.  libspu's pybind
trampoline calls the PascalCase methods, and so does this layer:

    Send(key, value)            the channel's send (required)
    Recv(key) -> bytes          the channel's receive (required); it waits
                                as long as the last SetRecvTimeout(ms) said
                                and raises TimeoutError when nothing came
    SendAsync(key, value)       used for send_async when defined
    TestSend(timeout_ms),       the connect handshake when both are
    TestRecv()                  defined; otherwise the link handshakes with
                                one empty message under "<link id>!hello"
                                each way through Send/Recv
    WaitLinkTaskFinish()        waiting for pending sends, when defined
    Abort()                     waking blocked calls, when defined
    SetRecvTimeout(ms),         kept by the base class (GetRecvTimeout
    GetRecvTimeout()            returns the last value); override freely
    SetThrottleWindowSize(n),   no-ops in the base class
    SetChunkParallelSendSize(n)

Before every Recv the layer calls ``SetRecvTimeout(ms)`` with the time the
link allows that receive (what is left of the link's recv_timeout_ms, of
the timeout given to ``recv``, or of connect_timeout_ms during the
handshake; 2**32-1 for "forever").  The link may wait in slices, and
the channel then sees each slice: 50 ms on the main thread (so that Ctrl-C
works), 10 ms for a channel without Abort or on a child link.  In libspu ``desc.recv_timeout_ms``
never reached a custom channel, whose Recv then waited by its own default.
The timeout is per channel, as in libspu, so two threads receiving from
the same peer at once with different timeouts may see each other's.  A
channel whose Abort is a no-op cannot be woken by abort/close: those then
wait for its Recv to time out.

Mistakes show at ``create_with_channels``, before any traffic: a channel
that lacks Send or Recv, or defines ``send``/``recv`` (lowercase, as
tagwire's own channels do) where libspu calls ``Send``/``Recv``, is a
TypeError that names the method.  An exception that the user's Send or
Recv raises stops the link call that caused it as a ``tagwire.ChannelError``
whose ``__cause__`` is that exception (a TimeoutError from Recv is just a
timeout).  tagwire errors are RuntimeErrors, as libspu's were.

``Context`` is libspu's link Context over a ``tagwire.Link`` (``.link``):

    rank, world_size            properties
    id                          the link id; also callable, ``ctx.id()``, as
                                libspu bound it as a method
    next_rank(strides=1),       the neighbours on the ring
    prev_rank(strides=1)
    send(dst, data),            libspu sends every Python call under one
    send(dst, tag, data)        tag ("PY_CALL"); an explicit tag keeps
    send_async(...)             streams apart.  Data is bytes-like or str
    recv(src, tag="PY_CALL")    (UTF-8).  recv returns bytes.
    all_gather(data, tag=...)   a list of bytes (libspu returned str, which
                                broke on binary data)
    gather(data, root, tag=...) a list of bytes at root, [] elsewhere (as
                                libspu's empty vector)
    broadcast(data, root, tag=...)  bytes
    scatter(parts, root, tag=...)   bytes (parts are read at root only)
    barrier(tag=...)
    wait_link_task_finish()     waits until every message sent so far has
                                been delivered (tagwire's wait_pending)
    stop_link()                 flushes, tells the peers and frees the link
                                (tagwire's close); libspu's stop_link was the
                                same finishing handshake
    spawn(suffix=None)          a child link over the same parties; the
                                suffix defaults to a counter, the same on
                                every party that spawns in the same order
    sub_world(suffix, parties)  a child link over some parties, named by
                                party id or by rank
    close(), with-statement     close
"""

import itertools
import re

import tagwire

__all__ = [
    "DEFAULT_TAG", "FOREVER_MS", "Party", "Desc", "IChannel", "Context",
    "create_with_channels", "create_brpc", "create_mem",
]

#: The tag libspu used for every call made from Python.
DEFAULT_TAG = "PY_CALL"

#: The timeout passed to SetRecvTimeout for a receive that waits forever.
FOREVER_MS = 2**32 - 1

_MISSING = object()
_NET_SCHEMES = ("tcp", "mem", "shm")


# ---------------------------------------------------------------------------
# Desc


class Party:
    """One party of a Desc: ``id`` and ``host`` as given to add_party."""

    __slots__ = ("id", "host")

    def __init__(self, id, host):  # noqa: A002 (libspu's name)
        self.id = id
        self.host = host

    def __eq__(self, other):
        if not isinstance(other, Party):
            return NotImplemented
        return (self.id, self.host) == (other.id, other.host)

    def __hash__(self):
        return hash((self.id, self.host))

    def __repr__(self):
        return f"Party(id={self.id}, host={self.host})"


def _address(party):
    """The tagwire address of a party's host: tcp://host when it has no
    scheme; tcp://, mem:// and shm:// as they are."""
    host = party.host
    if "://" not in host:
        return "tcp://" + host
    scheme = host.split("://", 1)[0].lower()
    if scheme not in _NET_SCHEMES:
        raise ValueError(
            f"party {party.id!r}: host {host!r} has scheme {scheme!r}; "
            "tagwire.compat.spu takes HOST:PORT (tcp), tcp://, mem:// or "
            "shm:// addresses")
    return host


class Desc:
    """libspu's link description (ContextDesc), with its defaults.

    Set the fields, add the parties, then pass it to create_with_channels,
    create_brpc or create_mem; ``to_tagwire()`` shows the tagwire.Desc that
    a link is made from (see the module docstring for the mapping)."""

    def __init__(self):
        self.id = "root"
        self.parties = []
        self.connect_retry_times = 10
        self.connect_retry_interval_ms = 1000
        self.recv_timeout_ms = 30 * 1000
        self.throttle_window_size = 10
        # Accepted for compatibility; tagwire has no use for them.
        self.http_max_payload_size = 1024 * 1024
        self.http_timeout_ms = 20 * 1000
        self.brpc_channel_protocol = "baidu_std"
        self.brpc_channel_connection_type = ""
        self.enable_ssl = False
        self.client_ssl_opts = None
        self.server_ssl_opts = None
        self.link_type = None
        self.retry_opts = None
        self.disable_msg_seq_id = False
        #: Further tagwire.Desc options by name, e.g. {"stripes": 4}.
        self.options = {}

    def add_party(self, id, host):  # noqa: A002 (libspu's name)
        """add_party(id, host): appends a party (host as in libspu:
        "HOST:PORT", or a tagwire address)."""
        self.parties.append(Party(str(id), str(host)))

    @property
    def connect_timeout_ms(self):
        """How long creation waits for the peers:
        connect_retry_times * connect_retry_interval_ms (at least one
        interval; a non-positive interval counts as 1000 ms)."""
        interval = int(self.connect_retry_interval_ms)
        if interval <= 0:
            interval = 1000
        return max(1, int(self.connect_retry_times)) * interval

    def to_tagwire(self, addresses=None):
        """The tagwire.Desc for this description.  `addresses` replaces the
        parties' addresses (one per party; create_with_channels and
        create_mem use it); by default each host maps as add_party says."""
        if not self.parties:
            raise ValueError("the Desc has no parties (add_party)")
        d = tagwire.Desc(str(self.id))
        if addresses is None:
            addresses = [_address(p) for p in self.parties]
        for p, addr in zip(self.parties, addresses):
            d.add_party(p.id, addr)
        opts = {
            "recv_timeout_ms": int(self.recv_timeout_ms),
            "connect_timeout_ms": self.connect_timeout_ms,
            "throttle_window": max(0, int(self.throttle_window_size)),
        }
        opts.update(self.options)
        for name, value in opts.items():
            if not hasattr(d, name):
                raise AttributeError(f"tagwire.Desc has no option {name!r}")
            try:
                setattr(d, name, value)
            except ValueError as e:
                raise ValueError(f"Desc option {name}={value!r}: {e}") from e
        return d

    def __repr__(self):
        return f"Desc(id={self.id}, parties={self.parties})"


# ---------------------------------------------------------------------------
# Channels


class IChannel:
    """The base class of a libspu-style channel (one per peer).

    Subclasses define Send(key, value) and Recv(key) -> bytes, and may
    define SendAsync, TestSend(timeout_ms), TestRecv, WaitLinkTaskFinish
    and Abort; the base class keeps the receive timeout
    (SetRecvTimeout/GetRecvTimeout) and ignores SetThrottleWindowSize and
    SetChunkParallelSendSize.  ``super().__init__()`` is optional."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._tw_recv_timeout_ms = 30 * 1000

    def SetRecvTimeout(self, timeout_ms):  # noqa: N802 (libspu's names)
        """Called by the link before each Recv with the ms it may wait."""
        self._tw_recv_timeout_ms = int(timeout_ms)

    def GetRecvTimeout(self):  # noqa: N802
        return getattr(self, "_tw_recv_timeout_ms", 30 * 1000)

    def SetThrottleWindowSize(self, size):  # noqa: N802
        pass

    def SetChunkParallelSendSize(self, size):  # noqa: N802
        pass


# (PascalCase method, the tagwire name a user may have written instead)
_REQUIRED = (("Send", "send"), ("Recv", "recv"))
_OPTIONAL = (("SendAsync", "send_async"), ("TestSend", "test_send"),
             ("TestRecv", "test_recv"),
             ("WaitLinkTaskFinish", "wait_pending"), ("Abort", "abort"))


def _defines(obj, name):
    """Whether obj has a callable `name` of its own (not IChannel's)."""
    if name in getattr(obj, "__dict__", {}):
        return callable(obj.__dict__[name])
    for cls in type(obj).__mro__:
        if cls is IChannel or cls is object:
            continue
        if name in vars(cls):
            return callable(getattr(obj, name, None))
    return False


def _is_spu_channel(obj):
    return isinstance(obj, IChannel) or any(
        _defines(obj, pascal) for pascal, _ in _REQUIRED + _OPTIONAL)


def _ms(timeout):
    if timeout is None:
        return FOREVER_MS
    return min(FOREVER_MS, max(0, int(round(timeout * 1000))))


class _Adapter:
    """A tagwire channel (send/recv/...) over a libspu IChannel.

    tagwire looks the optional methods up on this object and treats None
    as absent, so an op the user's channel lacks is set to None here."""

    def __init__(self, channel, connect_ms):
        self.channel = channel
        self._connect_ms = connect_ms
        self._send = channel.Send
        self._recv = channel.Recv
        self._set_timeout = getattr(channel, "SetRecvTimeout", None)
        if not callable(self._set_timeout):
            self._set_timeout = None
        have = {pascal: _defines(channel, pascal) for pascal, _ in _OPTIONAL}
        if not have["SendAsync"]:
            self.send_async = None
        if not (have["TestSend"] and have["TestRecv"]):
            self.test_send = self.test_recv = None
        if not have["WaitLinkTaskFinish"]:
            self.wait_pending = None
        if not have["Abort"]:
            self.abort = None

    def send(self, key, data):
        self._send(key, data)

    def send_async(self, key, data):
        self.channel.SendAsync(key, data)

    def recv(self, key, timeout):
        if self._set_timeout is not None:
            self._set_timeout(_ms(timeout))
        data = self._recv(key)
        if isinstance(data, str):
            data = data.encode()
        return data

    def test_send(self, timeout):
        self.channel.TestSend(_ms(timeout))

    def test_recv(self):
        if self._set_timeout is not None:
            self._set_timeout(
                FOREVER_MS if self._connect_ms < 0 else self._connect_ms)
        self.channel.TestRecv()

    def wait_pending(self):
        self.channel.WaitLinkTaskFinish()

    def abort(self):
        self.channel.Abort()

    def __repr__(self):
        return f"<tagwire.compat.spu adapter for {self.channel!r}>"


def _check_channel(i, ch):
    """TypeError for a channel that libspu would fail on later."""
    name = type(ch).__name__
    for pascal, lower in _REQUIRED:
        if _defines(ch, pascal):
            continue
        if _defines(ch, lower):
            raise TypeError(
                f"channels[{i}] ({name}) defines {lower}() but not "
                f"{pascal}(): libspu's IChannel (and tagwire.compat.spu) "
                f"calls the PascalCase methods; rename {lower} to {pascal}")
        raise TypeError(
            f"channels[{i}] ({name}) has no {pascal}() method; an IChannel "
            "defines Send(key, value) and Recv(key) -> bytes")
    for pascal, lower in _OPTIONAL:
        if _defines(ch, lower) and not _defines(ch, pascal):
            raise TypeError(
                f"channels[{i}] ({name}) defines {lower}() but not "
                f"{pascal}(): libspu's IChannel calls the PascalCase "
                f"methods; rename {lower} to {pascal}")


def _adapt(i, ch, connect_ms):
    if ch is None:
        return None
    if not _is_spu_channel(ch):
        if _defines(ch, "send") and _defines(ch, "recv"):
            return ch  # already a tagwire channel: used as it is
    _check_channel(i, ch)
    return _Adapter(ch, connect_ms)


# ---------------------------------------------------------------------------
# Context


class _LinkId(str):
    """The link id; calling it returns it too (libspu's ctx.id())."""

    def __call__(self):
        return str(self)


def _data(x):
    return x.encode() if isinstance(x, str) else x


def _tag_data(tag_or_data, data, what):
    if data is _MISSING:
        return DEFAULT_TAG, _data(tag_or_data)
    if not isinstance(tag_or_data, str):
        raise TypeError(f"{what}(dst, tag, data): the tag is a str")
    return tag_or_data, _data(data)


class Context:
    """libspu's link Context over a tagwire.Link (``.link``); see the
    module docstring for the names."""

    def __init__(self, link, party_ids):
        self._link = link
        self._party_ids = list(party_ids)
        self._spawned = itertools.count()

    @property
    def link(self):
        """The tagwire.Link underneath (probe, recv_into, stats, ...)."""
        return self._link

    @property
    def id(self):  # noqa: A003
        return _LinkId(self._link.id)

    @property
    def rank(self):
        return self._link.rank

    @property
    def world_size(self):
        return self._link.world_size

    @property
    def party_ids(self):
        """The parties' ids, by rank."""
        return list(self._party_ids)

    def party_id_by_rank(self, rank):
        return self._party_ids[rank]

    @property
    def recv_timeout_ms(self):
        """The link's receive timeout in ms (-1: forever); settable."""
        t = self._link.recv_timeout
        return -1 if t is None else int(round(t * 1000))

    @recv_timeout_ms.setter
    def recv_timeout_ms(self, ms):
        self._link.recv_timeout = None if ms < 0 else ms / 1000.0

    def next_rank(self, strides=1, *, stride=None):
        return self._link.next_rank(strides if stride is None else stride)

    def prev_rank(self, strides=1, *, stride=None):
        return self._link.prev_rank(strides if stride is None else stride)

    # point to point

    def send(self, dst, tag_or_data, data=_MISSING):
        """send(dst, data) under DEFAULT_TAG, or send(dst, tag, data)."""
        tag, data = _tag_data(tag_or_data, data, "send")
        self._link.send(dst, tag, data)

    def send_async(self, dst, tag_or_data, data=_MISSING):
        """send_async(dst, data) or send_async(dst, tag, data) ->
        tagwire.Request (libspu returned None; the request may be
        ignored)."""
        tag, data = _tag_data(tag_or_data, data, "send_async")
        return self._link.send_async(dst, tag, data)

    def recv(self, src, tag=DEFAULT_TAG, timeout=None):
        """recv(src, tag=DEFAULT_TAG, timeout=None) -> bytes; timeout in
        seconds, None: the link's recv_timeout_ms."""
        return self._link.recv(src, tag, timeout)

    # collectives

    def barrier(self, tag=DEFAULT_TAG):
        self._link.barrier(tag)

    def all_gather(self, data, tag=DEFAULT_TAG):
        """-> list of bytes, one per rank."""
        return self._link.all_gather(_data(data), tag)

    def gather(self, data, root, tag=DEFAULT_TAG):
        """-> list of bytes at root, [] elsewhere."""
        r = self._link.gather(_data(data), root, tag)
        return [] if r is None else r

    def broadcast(self, data, root, tag=DEFAULT_TAG):
        """-> bytes: root's data (data is ignored elsewhere)."""
        return self._link.broadcast(
            _data(data) if data is not None else b"", root, tag)

    def scatter(self, parts, root, tag=DEFAULT_TAG):
        """-> bytes: this rank's part of root's parts."""
        if self._link.rank == root:
            parts = [_data(p) for p in parts]
        return self._link.scatter(parts, root, tag)

    # lifetime

    def wait_link_task_finish(self, timeout=None):
        """Waits until every message sent so far has been delivered."""
        self._link.wait_pending(timeout)

    def stop_link(self):
        """Flushes, tells the peers and frees the link (close)."""
        self._link.close()

    def close(self):
        self._link.close()

    def abort(self):
        self._link.abort()

    def spawn(self, suffix=None):
        """A child Context over the same parties.  Every party spawns its
        children in the same order (the default suffix is a counter)."""
        if suffix is None:
            suffix = f"s{next(self._spawned)}"
        return Context(self._link.spawn(suffix), self._party_ids)

    def sub_world(self, suffix, parties):
        """A child Context over `parties` (party ids or ranks, this party
        among them); its ranks follow their order here."""
        ranks = []
        for p in parties:
            if isinstance(p, str):
                try:
                    ranks.append(self._party_ids.index(p))
                except ValueError:
                    raise ValueError(
                        f"sub_world: no party {p!r} in "
                        f"{self._party_ids}") from None
            else:
                ranks.append(int(p))
        child = self._link.sub(suffix, ranks)
        ids = [self._party_ids[r] for r in ranks]
        return Context(child, ids)

    def stats(self):
        return self._link.stats()

    def __enter__(self):
        self._link.__enter__()
        return self

    def __exit__(self, *exc):
        return self._link.__exit__(*exc)

    def __repr__(self):
        try:
            return (f"Link(id={self._link.id}, "
                    f"rank={self.rank}/{self.world_size})")
        except tagwire.ClosedError:
            return f"Link(id={self._link.id}, closed)"


# ---------------------------------------------------------------------------
# create


def _as_tagwire(desc, addresses=None):
    if isinstance(desc, tagwire.Desc):
        return desc, [p[0] for p in desc.parties]
    if not isinstance(desc, Desc):
        raise TypeError(
            f"expected a tagwire.compat.spu.Desc, not {type(desc).__name__}")
    return desc.to_tagwire(addresses), [p.id for p in desc.parties]


def create_with_channels(desc, self_rank, channels):
    """create_with_channels(desc, self_rank, channels) -> Context over the
    user's channels (one per party, None at self_rank).  The channels are
    checked (and wrapped) before any traffic; the hosts in desc are not
    used, as in libspu."""
    if not isinstance(desc, (Desc, tagwire.Desc)):
        raise TypeError(
            f"expected a tagwire.compat.spu.Desc, not {type(desc).__name__}")
    n = len(desc.parties)
    tdesc, ids = _as_tagwire(
        desc, [f"mem://spu-compat.{i}" for i in range(n)]
        if isinstance(desc, Desc) else None)
    channels = list(channels)
    if len(channels) != n:
        raise ValueError(
            f"channels has {len(channels)} entries; the link has {n} "
            "parties")
    connect_ms = tdesc.connect_timeout_ms
    adapted = [_adapt(i, ch, connect_ms) for i, ch in enumerate(channels)]
    for ch in adapted:
        if isinstance(ch, _Adapter) and ch._set_timeout is not None:
            ch._set_timeout(_ms(None) if tdesc.recv_timeout_ms < 0
                            else tdesc.recv_timeout_ms)
    link = tagwire.create_with_channels(tdesc, self_rank, adapted)
    return Context(link, ids)


def create_brpc(desc, self_rank, *, log_details=False):
    """create_brpc(desc, self_rank) -> Context over tagwire's tcp://
    transport (HOST:PORT hosts become tcp://HOST:PORT).  Each party listens
    on its own host's port; every party calls this concurrently."""
    tdesc, ids = _as_tagwire(desc)
    return Context(tagwire.create(tdesc, self_rank), ids)


def create_mem(desc, self_rank):
    """create_mem(desc, self_rank) -> Context over tagwire's mem://
    transport: the parties are threads of this process; the hosts are not
    used."""
    if isinstance(desc, tagwire.Desc):
        return Context(tagwire.create(desc, self_rank),
                       [p[0] for p in desc.parties])
    base = re.sub(r"[^A-Za-z0-9._-]", "_", str(desc.id))[:40]
    tdesc, ids = _as_tagwire(
        desc, [f"mem://spu.{base}.{i}" for i in range(len(desc.parties))])
    return Context(tagwire.create(tdesc, self_rank), ids)
