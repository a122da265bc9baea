"""Prometheus metrics of one node, and the small HTTP server that serves them.

Each :class:`~.node.Node` owns a :class:`NodeMetrics`: a private ``CollectorRegistry``
(several nodes share a process in tests and embeddings; the global default registry is
never used), every series labelled with the node id. Two kinds of series:

* **read at scrape time** (:class:`NodeCollector`): role, term, commit/applied/last
  index and the event counts the node keeps anyway — frames sent and dropped per link,
  frames received, delivered, relayed and unroutable, refusals per reason (the node's
  ``rejected`` counter plus the core's, exactly what ``status`` shows), proposals. The
  hot path pays one integer increment for them, nothing more.
* **observed where they happen**: three histograms — the WAL fsync of each ``Ready``
  (one observation per fsync, which covers a whole batch of entries), the apply of each
  batch of committed entries, and each client request from its call to its result.

:func:`serve_metrics` serves the registry on ``GET /metrics`` (the Prometheus text
format, or OpenMetrics for a scraper that asks for it) from the node's own nursery: it
stops with the node, and the scrape runs on the node's trio thread, so it reads the
node's state between two of its steps. Embedders that run their own exporter can
register :attr:`NodeMetrics.registry` there (its collector then reads the node from
another thread: counts may be a step apart).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import trio
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..core.base import Role
from .errors import NodeError

__all__ = ["MetricsSource", "NodeCollector", "NodeMetrics", "serve_metrics"]

log = logging.getLogger("ruflo_consensus.runtime")

PREFIX = "ruflo"

# fsyncs take from tens of microseconds (tmpfs, a cache) to a second (a dying disk)
_FSYNC_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    float("inf"),
)
_APPLY_BUCKETS = (0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0)
_REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5, 10, 30)


class MetricsSource(Protocol):
    """What :class:`NodeCollector` reads of a node at scrape time."""

    @property
    def node_id(self) -> str:
        """The node's id (the ``node`` label)."""
        ...

    def status(self) -> dict[str, Any]:
        """The node's status map (see :meth:`~.node.Node.status`)."""
        ...


class NodeCollector(Collector):
    """The series read from the node's :meth:`~.node.Node.status` at each scrape."""

    def __init__(self, node: MetricsSource) -> None:
        self.node = node

    def collect(self) -> Iterable[Metric]:
        st = self.node.status()
        node_id = self.node.node_id
        label = [node_id]

        def gauge(name: str, doc: str, value: float | None) -> Metric | None:
            if value is None:
                return None
            g = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["node"])
            g.add_metric(label, value)
            return g

        def counter(name: str, doc: str, value: float) -> Metric:
            c = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["node"])
            c.add_metric(label, value)
            return c

        def by(name: str, doc: str, key: str, values: Mapping[str, float]) -> Metric:
            c = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["node", key])
            for k, v in sorted(values.items()):
                c.add_metric([node_id, k], v)
            return c

        role = GaugeMetricFamily(
            f"{PREFIX}_role",
            "1 for the role the node's core is in, 0 for the others",
            labels=["node", "role"],
        )
        for r in Role:
            role.add_metric([node_id, r.value], 1.0 if st["role"] == r.value else 0.0)
        yield role
        for metric in (
            gauge("term", "The core's current term (Raft) or view", st["term"]),
            gauge("commit_index", "The highest log index known to be committed", st["commit"]),
            gauge("applied_index", "The highest log index applied here", st["applied"]),
            gauge("last_index", "The highest index in the node's log", st["last_index"]),
            gauge("snapshot_index", "The index the latest snapshot covers", st["snapshot_index"]),
        ):
            if metric is not None:
                yield metric
        links = st["links"]
        sent = CounterMetricFamily(
            f"{PREFIX}_frames_sent",
            "Frames written to the outbound link to a direct neighbour",
            labels=["node", "peer"],
        )
        dropped = CounterMetricFamily(
            f"{PREFIX}_frames_dropped",
            "Frames dropped because the link's send queue was full",
            labels=["node", "peer"],
        )
        for link in links:
            sent.add_metric([node_id, link["peer"]], link["sent"])
            dropped.add_metric([node_id, link["peer"]], link["dropped"])
        yield sent
        yield dropped
        yield counter("frames_received", "Frames that arrived on /peer", st["received"])
        yield counter(
            "frames_delivered", "Protocol messages that reached the core", st["delivered"]
        )
        yield counter("frames_relayed", "Frames for other nodes passed on", st["relayed"])
        yield counter(
            "frames_unroutable", "Frames this node sent that had no route", st["unroutable"]
        )
        yield by(
            "frames_rejected",
            "Frames and client requests refused, by reason (as status shows them)",
            "reason",
            st["rejected"],
        )
        yield counter(
            "proposals", "Commands this node proposed to its core as leader", st["proposed"]
        )
        yield by(
            "proposals_dropped",
            "Proposals the core refused or dropped, by reason ('refused': at propose)",
            "reason",
            st["proposals_dropped"],
        )


class NodeMetrics:
    """The metrics of one node: its registry, collector and histograms."""

    def __init__(self, node: MetricsSource) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        node_id = node.node_id
        self.fsync = Histogram(
            f"{PREFIX}_wal_fsync_seconds",
            "Time of each WAL fsync the node waits for before it sends (one per Ready)",
            ["node"],
            registry=self.registry,
            buckets=_FSYNC_BUCKETS,
        ).labels(node_id)
        self.apply = Histogram(
            f"{PREFIX}_apply_seconds",
            "Time to apply one batch of committed entries to the state machine",
            ["node"],
            registry=self.registry,
            buckets=_APPLY_BUCKETS,
        ).labels(node_id)
        self._requests = Histogram(
            f"{PREFIX}_client_request_seconds",
            "Client requests (submit, read) from the call to the result, by outcome",
            ["node", "op", "outcome"],
            registry=self.registry,
            buckets=_REQUEST_BUCKETS,
        )
        self._request_children: dict[tuple[str, str], Any] = {}
        self._node_id = node_id
        self.registry.register(NodeCollector(node))

    def request(self, op: str, outcome: str, seconds: float) -> None:
        """One client request ``op`` (``submit``/``read``) ended with ``outcome``
        (``ok``, ``timeout``, ``error``) after ``seconds``."""
        key = (op, outcome)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self._requests.labels(self._node_id, op, outcome)
        child.observe(seconds)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    def scrape(self, accept: str = "") -> tuple[bytes, str]:
        """What a scrape with the ``Accept`` header ``accept`` returns: the body and its
        content type (the Prometheus text format, or OpenMetrics when asked for)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


_MAX_HEAD = 8192
_REQUEST_TIMEOUT_S = 10.0
_MAX_CONNECTIONS = 16  # scrapes served at once; more connections are closed at once


async def serve_metrics(
    metrics: NodeMetrics,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``GET /metrics`` on ``host:port`` until cancelled; reports the bound port
    (``port`` 0 binds any free one). One request per connection (``Connection: close``),
    at most 16 connections at once, each closed after 10 s. Raises :class:`NodeError`
    when the address cannot be bound (in use, not an address of this host)."""
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise NodeError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    if port == 0:  # a name with several addresses got a free port for each: keep one
        for extra in listeners[1:]:
            await extra.aclose()
        listeners = listeners[:1]
    bound = int(listeners[0].socket.getsockname()[1])
    slots = trio.Semaphore(_MAX_CONNECTIONS)

    async def handle(stream: trio.SocketStream) -> None:
        try:
            slots.acquire_nowait()
        except trio.WouldBlock:
            await trio.aclose_forcefully(stream)
            return
        try:
            await _answer(stream, metrics)
        finally:
            slots.release()

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        log.info("metrics on http://%s:%d/metrics", host, bound)
        task_status.started(bound)


async def _answer(stream: trio.SocketStream, metrics: NodeMetrics) -> None:
    try:
        with trio.move_on_after(_REQUEST_TIMEOUT_S):
            head = b""
            while b"\r\n\r\n" not in head and b"\n\n" not in head:
                if len(head) > _MAX_HEAD:
                    await _respond(stream, 431, b"request head too large\n")
                    return
                data = await stream.receive_some(4096)
                if not data:
                    return
                head += data
            lines = head.split(b"\n\n" if b"\r\n\r\n" not in head else b"\r\n\r\n")[0]
            first, *header_lines = lines.decode("latin-1").splitlines()
            request_line = first.strip().split()
            headers = {}
            for line in header_lines:
                name, _, text = line.partition(":")
                headers[name.strip().lower()] = text.strip()
            if len(request_line) != 3:
                await _respond(stream, 400, b"bad request\n")
                return
            method, target, _version = request_line
            path = target.split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                await _respond(stream, 405, b"only GET\n", extra="Allow: GET, HEAD\r\n")
            elif path not in ("/metrics", "/"):
                await _respond(stream, 404, b"try /metrics\n")
            else:
                body, content_type = metrics.scrape(headers.get("accept", ""))
                await _respond(stream, 200, body, content_type, head_only=method == "HEAD")
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


async def _respond(
    stream: trio.SocketStream,
    status: int,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    *,
    extra: str = "",
    head_only: bool = False,
) -> None:
    reason = _REASONS.get(status, "Request Header Fields Too Large")
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: close\r\n{extra}\r\n"
    )
    await stream.send_all(head.encode("latin-1") + (b"" if head_only else body))
