"""Just enough of the Docker Engine API: containers' names and images, and the
stream of their creation, over the engine's unix socket.

Plain HTTP/1.1 on the C-level _socket module.  The session asks the engine
for its containers before the first line is written, so this module is on
ctrtrace's start-up path: http.client costs more to import than the few
lines it would save, and the socket module converts every constant of the
platform to enums as it is imported, for nothing used here (bench/README.md,
"Where the code's choices come from").
"""

from __future__ import annotations

import _socket
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..model import jsonparse

DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock"

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def _quote(text: str) -> str:
    """Percent-encoding for a query value (urllib.parse is slow to import: bench/README.md)."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode())


def docker_socket_path() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return host[len("unix://"):]
    return DEFAULT_DOCKER_SOCKET


class _Reader:
    """Buffered reads from a socket (what socket.makefile("rb") would give).
    A read that waits longer than the socket's timeout raises TimeoutError."""

    def __init__(self, sock: _socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()

    def _fill(self) -> bool:
        data = self._sock.recv(65536)
        self._buf += data
        return bool(data)

    def _take(self, n: int) -> bytes:
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def readline(self) -> bytes:
        """Up to and including the next b"\\n"; what is left at the end of the stream."""
        start = 0
        while True:
            i = self._buf.find(b"\n", start)
            if i >= 0:
                return self._take(i + 1)
            start = len(self._buf)
            if not self._fill():
                return self._take(len(self._buf))

    def read(self, n: int = -1) -> bytes:
        """n bytes (fewer at the end of the stream); n < 0: all until its end."""
        while (n < 0 or len(self._buf) < n) and self._fill():
            pass
        return self._take(len(self._buf) if n < 0 else n)


class _Response:
    """An HTTP/1.1 response read from a socket: status, headers, body."""

    def __init__(self, sock: _socket.socket) -> None:
        self._f = _Reader(sock)
        status = self._f.readline().split(None, 2)
        if len(status) < 2 or not status[0].startswith(b"HTTP/"):
            raise OSError("not an HTTP response")
        self.status = int(status[1])
        self.headers: dict[str, str] = {}
        for line in iter(self._f.readline, b"\r\n"):
            if not line:
                raise OSError("connection closed in the headers")
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"

    def _read(self, n: int) -> bytes:
        data = self._f.read(n)
        if len(data) < n:
            raise OSError("connection closed in the body")
        return data

    def chunks(self) -> Iterator[bytes]:
        if not self.chunked:
            n = self.headers.get("content-length")
            yield self._read(int(n)) if n is not None else self._f.read()
            return
        while True:
            size = int(self._f.readline().split(b";")[0], 16)  # b"": ValueError
            if size == 0:
                return
            yield self._read(size)
            self._f.readline()  # the CRLF after each chunk

    def body(self) -> bytes:
        return b"".join(self.chunks())

    def lines(self) -> Iterator[bytes]:
        """A stream of newline-separated records (the events endpoint)."""
        pending = b""
        for chunk in self.chunks():
            pending += chunk
            *done, pending = pending.split(b"\n")
            yield from (d for d in done if d.strip())


def _get(path: str, url: str, timeout: float | None) -> tuple[_socket.socket, _Response]:
    """GET url from the HTTP server on the unix socket at path."""
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(f"GET {url} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n".encode())
        return s, _Response(s)
    except (OSError, ValueError):
        s.close()
        raise OSError("no answer") from None


Callback = Callable[[str, dict[str, str]], None]


class DockerClient:
    """The engine's answers as JSON; None (and reachable False) when it does not answer.

    Safe to share between threads: each call is a connection of its own."""

    def __init__(self, path: str | None = None, timeout: float = 1.0) -> None:
        self.path = path or docker_socket_path()
        self.timeout = timeout
        self.reachable: bool | None = None  # as of the last call; unknown until the first

    def request(self, url: str) -> tuple[int | None, Any]:
        """(HTTP status, the body as JSON or None); (None, None) when the engine
        does not answer."""
        try:
            sock, resp = _get(self.path, url, self.timeout)
            try:
                body = resp.body()
            finally:
                sock.close()
        except (OSError, ValueError):
            self.reachable = False
            return None, None
        self.reachable = True
        if resp.status != 200:
            return resp.status, None
        try:
            return 200, jsonparse.loads(body)
        except jsonparse.NOT_JSON:
            return 200, None

    def _get(self, url: str):
        return self.request(url)[1]

    def _open_events(self, since: int | None = None) -> tuple[_socket.socket, _Response] | None:
        """The event stream of container creations, open; None if the engine does not answer."""
        filters = _quote(json.dumps({"type": ["container"], "event": ["create"]}))
        url = f"/events?filters={filters}"
        if since is not None:
            url += f"&since={since}"
        try:
            sock, resp = _get(self.path, url, self.timeout)
        except OSError:
            self.reachable = False
            return None
        if resp.status != 200:
            sock.close()
            return None
        sock.settimeout(None)  # the stream stays open until we close it
        self.reachable = True
        return sock, resp

    def follow(self, on_container: Callback,
               on_connect: Callable[[], None] | None = None) -> EventWatch:
        """Follow the engine's container creations in a thread, from now on if
        the engine answers now, and from whenever it does if not; reconnected
        when the stream ends, until close().  on_connect runs in that thread
        at each connection after the first attempt."""
        return EventWatch(self, on_container, on_connect, self._open_events())

    def watch(self, on_container: Callback) -> EventWatch | None:
        """follow(), or None (and nothing left running) if the engine does not answer now."""
        first = self._open_events()
        if first is None:
            return None
        return EventWatch(self, on_container, None, first)

    def container(self, cid: str) -> tuple[int | None, dict | None]:
        """(HTTP status, the engine's description of a container, if it is one)."""
        status, data = self.request(f"/containers/{cid}/json")
        return status, described(data)

    def inspect(self, cid: str) -> dict | None:
        return self.container(cid)[1]

    def running(self) -> list[dict]:
        data = self._get("/containers/json")
        return [c for c in data if described(c)] if isinstance(data, list) else []


def described(data: Any) -> dict | None:
    """data if it describes a container as the engine does (an object with a
    string Id), else None: whatever answers on the socket, what the resolver
    reads has the engine's shape (its other fields are checked where read)."""
    return data if isinstance(data, dict) and isinstance(data.get("Id"), str) else None


def text_field(data: dict, key: str) -> str | None:
    """data[key] if it is a non-empty string."""
    value = data.get(key)
    return value if isinstance(value, str) and value else None


class EventWatch:
    """A thread reading the engine's event stream: a container's name and image
    are known from its creation, before its first process runs, so even one
    that is removed at once resolves.

    When the stream ends (the engine stopped or restarted) the thread connects
    again, waiting RETRY_MIN seconds, then twice as long each time up to
    RETRY_MAX, and asks for the events since the stream ended (what a restarted
    engine still has of them)."""

    RETRY_MIN = 0.1
    RETRY_MAX = 2.0

    def __init__(self, client: DockerClient, on_container: Callback,
                 on_connect: Callable[[], None] | None = None,
                 first: tuple[_socket.socket, _Response] | None = None) -> None:
        self._client, self._cb, self._on_connect = client, on_container, on_connect
        self._first = first
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock: _socket.socket | None = None   # the stream being read
        self.connections = 0                            # streams opened so far
        self._thread = threading.Thread(target=self._run, name="docker-events", daemon=True)
        self._thread.start()

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def _run(self) -> None:
        conn, self._first = self._first, None
        delay = self.RETRY_MIN
        since: int | None = None
        while not self._stop.is_set():
            reconnect = conn is None
            if conn is None:
                conn = self._client._open_events(since)
            if conn is None:
                self._stop.wait(delay)
                delay = min(delay * 2, self.RETRY_MAX)
                continue
            sock, resp = conn
            conn = None
            with self._lock:
                if self._stop.is_set():
                    sock.close()
                    return
                self._sock = sock
            self.connections += 1
            if reconnect and self._on_connect is not None:
                self._on_connect()
            opened = time.monotonic()
            self._read(resp)
            with self._lock:
                self._sock = None
            sock.close()
            since = int(time.time()) - 1  # what came while we were away, if the engine kept it
            # a stream that lasted is a fresh start; one cut at once waits longer each time
            if time.monotonic() - opened > self.RETRY_MAX:
                delay = self.RETRY_MIN
            self._stop.wait(delay)
            delay = min(delay * 2, self.RETRY_MAX)

    def _read(self, resp: _Response) -> None:
        try:
            for line in resp.lines():
                try:
                    ev = jsonparse.loads(line)
                except jsonparse.NOT_JSON:
                    continue
                actor = ev.get("Actor") if isinstance(ev, dict) else None
                if isinstance(actor, dict) and text_field(actor, "ID"):
                    attrs = actor.get("Attributes")
                    self._cb(actor["ID"], {k: v for k, v in attrs.items() if isinstance(v, str)}
                             if isinstance(attrs, dict) else {})
        except (OSError, ValueError):
            pass  # the engine went away or we closed the stream

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            if self._sock is not None:
                try:
                    self._sock.shutdown(_socket.SHUT_RDWR)
                except OSError:
                    pass
        self._thread.join(timeout=2)
