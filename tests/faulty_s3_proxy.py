"""A fault-injecting HTTP proxy on loopback between s3fs and an S3 API server (moto): a store that throttles and drops.

``faulty_s3_proxy(options, ...)`` takes the ``storage_options`` of :func:`s3server.s3_server`,
listens on 127.0.0.1 on a port the OS picks, and yields a :class:`FaultyS3Proxy` whose
``storage_options`` point s3fs at the proxy instead. Each client connection gets its own
thread; the proxy is stopped (listener and open connections closed) when the block ends.

What passes through is forwarded byte for byte: the request head exactly as the client sent
it (its ``Host``, SigV4 ``Authorization``, ``Content-Length``, ``Expect``...) and the body as
framed on the wire (``Content-Length`` or ``Transfer-Encoding: chunked``, chunk lines and
trailers included), over a fresh upstream connection per request; the upstream's response
goes back unchanged (interim ``100 Continue`` answers excepted: the proxy sends its own).

Faults, drawn per request from a seeded RNG (a share ``rate`` of requests fails, a share
``slow_rate`` of the others is answered late):

* ``slowdown``: ``503 Slow Down`` with S3's ``SlowDown`` XML error body (the whole request
  read first, the connection kept open, as S3 does);
* ``reset``: only for a request with a body (a share ``reset_share`` of the failing ones):
  part of the body is read, then the connection is reset (``SO_LINGER`` 0, an RST), as a
  load balancer dropping an upload; nothing reaches the server. A failing request without a
  body gets ``slowdown``;
* ``slow``: the request is forwarded after ``delay_s``.

``decide(request)`` may replace the draw for a request (return an action, or None to draw):
``"forward"``, ``"slowdown"``, ``"reset"``, ``("slow", seconds)``, ``"not_implemented"``
(``501 NotImplemented``: what an S3-compatible store without conditional writes answers to a
``PUT`` with ``If-None-Match``) or ``"lost_answer"`` (forwarded, and the connection reset
instead of the answer: the store did it, the client cannot know). ``injected`` counts the faults by kind; ``log`` holds one
:class:`Exchange` per request (method, path, headers, the action, the status returned).
Which request draws which fault depends on thread timing; the proportions do not.
"""
from __future__ import annotations

import collections
import contextlib
import copy
import random
import socket
import socketserver
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

SLOWDOWN_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    "<Message>Please reduce your request rate.</Message><RequestId>{rid}</RequestId>"
    "<HostId>faulty-s3-proxy</HostId></Error>"
)
NOT_IMPLEMENTED_BODY = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NotImplemented</Code>'
    "<Message>A header you provided implies functionality that is not implemented</Message>"
    "<Header>If-None-Match</Header><RequestId>{rid}</RequestId></Error>"
)


class _Closed(Exception):
    """The peer closed its side."""


class _Stream:
    """Buffered reads from a socket that keep the raw bytes (nothing is re-encoded)."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buf = sock, b""

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise _Closed
        self.buf += data

    def until(self, marker: bytes, limit: int = 1 << 20) -> bytes:
        while marker not in self.buf:
            if len(self.buf) > limit:
                raise ValueError("header too long")
            self._fill()
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def to_eof(self) -> bytes:
        with contextlib.suppress(_Closed):
            while True:
                self._fill()
        out, self.buf = self.buf, b""
        return out


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    """(start line, lower-cased headers) of a request or response head."""
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return lines[0], headers


def _chunked(stream: _Stream) -> bytes:
    """A chunked body as it was on the wire: size lines, data, the last chunk and the trailers."""
    raw = b""
    while True:
        line = stream.until(b"\r\n")
        raw += line
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            while True:  # trailers, up to the empty line
                t = stream.until(b"\r\n")
                raw += t
                if t == b"\r\n":
                    return raw
        raw += stream.exactly(size + 2)


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    head: bytes  # as received
    has_body: bool

    @property
    def path(self) -> str:
        return urlsplit(self.target).path


@dataclass
class Exchange:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    action: str
    status: int | None = None  # what the client got; None for a reset


@dataclass
class Faults:
    rate: float = 0.1  # share of requests that fail (slowdown, or reset for requests with a body)
    reset_share: float = 0.5  # share of the failing requests with a body that are reset (the others: slowdown)
    slow_rate: float = 0.0  # share of the other requests answered late
    delay_s: float = 0.3
    seed: int = 0


@dataclass
class FaultyS3Proxy:
    upstream: tuple[str, int]
    faults: Faults
    decide: Callable[[Request], object] | None = None
    storage_options: dict = field(default_factory=dict)
    injected: collections.Counter = field(default_factory=collections.Counter)
    log: list[Exchange] = field(default_factory=list)
    requests: int = 0

    def __post_init__(self):
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()

    def _action(self, req: Request) -> object:
        if self.decide is not None:
            chosen = self.decide(req)
            if chosen is not None:
                return chosen
        with self._lock:
            u, v, w = self._rng.random(), self._rng.random(), self._rng.random()
        if u < self.faults.rate:
            return "reset" if req.has_body and v < self.faults.reset_share else "slowdown"
        if w < self.faults.slow_rate:
            return ("slow", self.faults.delay_s)
        return "forward"

    def _note(self, req: Request, action: str) -> Exchange:
        parts = urlsplit(req.target)
        ex = Exchange(req.method, parts.path, parts.query, req.headers, action)
        with self._lock:
            self.requests += 1
            self.log.append(ex)
            if action != "forward":
                self.injected[action] += 1
        return ex

    def exchanges(self, method: str | None = None, path_suffix: str = "") -> list[Exchange]:
        with self._lock:
            return [e for e in self.log if (method is None or e.method == method) and e.path.endswith(path_suffix)]

    # -- one client connection ----------------------------------------------------------------------------------
    def serve(self, sock: socket.socket) -> None:
        client = _Stream(sock)
        while True:
            try:
                head = client.until(b"\r\n\r\n")
            except (_Closed, OSError, ValueError):
                return
            start, headers = _parse_head(head)
            method, target = start.split(" ")[:2]
            chunked = "chunked" in headers.get("transfer-encoding", "").lower()
            length = int(headers.get("content-length", "0") or 0)
            req = Request(method, target, headers, head, has_body=chunked or length > 0)
            action = self._action(req)
            kind = action[0] if isinstance(action, tuple) else action
            ex = self._note(req, kind)
            expect = headers.get("expect", "").lower() == "100-continue"
            try:
                if expect and req.has_body:  # the client waits for this before it sends the body
                    sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                if kind == "reset":
                    # part of the body, then an RST: the upload dies mid-way and the server never sees it
                    client.exactly(max(1, length // 2)) if not chunked else client.until(b"\r\n")
                    _reset(sock)
                    return
                body = _chunked(client) if chunked else client.exactly(length)
                if kind == "slowdown":
                    ex.status = 503
                    sock.sendall(_error(503, "Slow Down", SLOWDOWN_BODY, method))
                    continue
                if kind == "not_implemented":
                    ex.status = 501
                    sock.sendall(_error(501, "Not Implemented", NOT_IMPLEMENTED_BODY, method))
                    continue
                if kind == "slow":
                    time.sleep(action[1])
                status, response, keep = self._forward(req, body)
                if kind == "lost_answer":
                    _reset(sock)
                    return
                ex.status = status
                sock.sendall(response)
                if not keep:
                    return
            except (_Closed, OSError):
                return

    def _forward(self, req: Request, body: bytes) -> tuple[int, bytes, bool]:
        """(status, the upstream's response as received, whether the client connection stays open)."""
        with socket.create_connection(self.upstream, timeout=60) as up:
            up.sendall(req.head + body)
            stream = _Stream(up)
            while True:
                head = stream.until(b"\r\n\r\n")
                start, headers = _parse_head(head)
                status = int(start.split(" ")[1])
                if status >= 200:
                    break  # a 1xx (100 Continue) was answered to the client by the proxy already
            keep = headers.get("connection", "").lower() != "close"
            if req.method == "HEAD" or status in (204, 304):
                rest = b""
            elif "chunked" in headers.get("transfer-encoding", "").lower():
                rest = _chunked(stream)
            elif "content-length" in headers:
                rest = stream.exactly(int(headers["content-length"]))
            else:  # delimited by the close
                rest, keep = stream.to_eof(), False
            return status, head + rest, keep


def _reset(sock: socket.socket) -> None:
    """Close with an RST now (linger 0; socketserver's own close would send a FIN first)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _error(status: int, reason: str, template: str, method: str) -> bytes:
    rid = uuid.uuid4().hex[:16].upper()
    body = b"" if method == "HEAD" else template.format(rid=rid).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
        f"x-amz-request-id: {rid}\r\nServer: AmazonS3\r\n\r\n"
    )
    return head.encode() + body


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, proxy: FaultyS3Proxy):
        self.proxy = proxy
        self.open: set[socket.socket] = set()
        self.open_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: _Server = self.server  # type: ignore[assignment]
        with server.open_lock:
            server.open.add(self.request)
        try:
            server.proxy.serve(self.request)
        finally:
            with server.open_lock:
                server.open.discard(self.request)


@contextlib.contextmanager
def faulty_s3_proxy(
    options: dict, faults: Faults | None = None, decide: Callable[[Request], object] | None = None
) -> Iterator[FaultyS3Proxy]:
    """A proxy in front of the S3 server that ``options`` (``s3_server()``'s) point at; stopped when the block ends."""
    endpoint = urlsplit(options["client_kwargs"]["endpoint_url"])
    proxy = FaultyS3Proxy((endpoint.hostname, endpoint.port), faults or Faults(), decide)
    server = _Server(proxy)
    thread = threading.Thread(target=server.serve_forever, name="faulty-s3-proxy", daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        proxy.storage_options = copy.deepcopy(options)
        proxy.storage_options["client_kwargs"]["endpoint_url"] = f"http://{host}:{port}"
        yield proxy
    finally:
        server.shutdown()
        with server.open_lock:
            for s in list(server.open):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
        server.server_close()
        thread.join(timeout=10)
