"""The Engine API client against a scripted HTTP server on a unix socket: bodies
by length, chunked and until close, answers cut anywhere, a server that never
answers, the event stream.  (tests/test_docker.py runs it against dockerd.)"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse

import pytest

from tracer.state.dockerapi import DockerClient, EventWatch


def _started_since(before: set, *besides: threading.Thread) -> list[threading.Thread]:
    """The threads started since `before` was taken, but the test's own."""
    return [t for t in threading.enumerate() if t not in before and t not in besides]


class Server:
    """Serves one scripted answer per connection, in order, and keeps each request."""

    def __init__(self, path: str, answers, piece: int = 0) -> None:
        self.path, self.answers, self.piece = path, list(answers), piece
        self.requests = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for answer in self.answers:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed with answers left (the client asked fewer times)
                return
            with conn:
                req = b""
                while b"\r\n\r\n" not in req:
                    data = conn.recv(4096)
                    if not data:
                        break
                    req += data
                self.requests.append(req.decode())
                if callable(answer):
                    answer(conn)
                    continue
                step = self.piece or len(answer) or 1
                try:
                    for i in range(0, len(answer), step):  # in pieces: reads must gather them
                        conn.sendall(answer[i:i + step])
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading: a bad answer was enough

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def serve(tmp_path):
    servers = []

    def start(*answers, piece: int = 0) -> Server:
        s = Server(str(tmp_path / f"docker{len(servers)}.sock"), answers, piece)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


def ok(body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 200 OK\r\n{head}\r\n".encode() + body


def chunked(*parts: bytes) -> bytes:
    out = b"".join(f"{len(p):x};ext=1\r\n".encode() + p + b"\r\n" for p in parts)
    return out + b"0\r\n\r\n"


CONTAINERS = [{"Id": "a" * 64, "Names": ["/one"]}, {"Id": "b" * 64, "Names": ["/two"]}]
BODY = json.dumps(CONTAINERS).encode()


@pytest.mark.parametrize("answer", [
    ok(BODY, f"Content-Length: {len(BODY)}", "Content-Type: application/json"),
    ok(chunked(BODY[:7], BODY[7:30], BODY[30:]), "Transfer-Encoding: chunked"),
    ok(BODY),  # neither: the body runs until the server closes
], ids=["content-length", "chunked", "until-close"])
@pytest.mark.parametrize("piece", [0, 1, 5], ids=["whole", "bytewise", "fives"])
def test_bodies(serve, answer, piece):
    server = serve(answer, piece=piece)
    client = DockerClient(server.path)
    assert client.running() == CONTAINERS
    assert client.reachable is True
    assert server.requests[0].startswith("GET /containers/json HTTP/1.1\r\n")
    assert "\r\nConnection: close\r\n" in server.requests[0]


def test_status_other_than_200_is_no_answer_from_a_reachable_engine(serve):
    server = serve(b'HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}')
    client = DockerClient(server.path)
    assert client.inspect("c" * 64) is None
    assert client.reachable is True
    assert server.requests[0].startswith(f"GET /containers/{'c' * 64}/json ")


@pytest.mark.parametrize("answer,reachable", [
    (b"", False),                                                  # closed at once
    (b"SSH-2.0-OpenSSH\r\n", False),                               # not HTTP
    (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n", False),          # closed in the headers
    (ok(b"[1]", "Content-Length: 9"), False),                      # closed in the body
    (ok(b"5\r\nabc", "Transfer-Encoding: chunked"), False),        # closed in a chunk
    (ok(b"3\r\n[1]\r\n", "Transfer-Encoding: chunked"), False),    # closed before the last chunk
    (ok(b"zz\r\n", "Transfer-Encoding: chunked"), False),          # a chunk size that is no number
    (ok(b"[1,", "Content-Length: 3"), True),                       # whole, but not JSON
], ids=["closed", "not-http", "cut-headers", "cut-body", "cut-chunk", "no-last-chunk",
        "bad-chunk-size", "not-json"])
def test_broken_answers_give_none(serve, answer, reachable):
    client = DockerClient(serve(answer).path)
    assert client.running() == []
    assert client.reachable is reachable


def test_answers_not_shaped_as_the_engines_are_not_taken(serve):
    """Whatever answers on the socket: a list of containers keeps only what
    describes one (an object with a string Id); an inspection that is not
    one is no answer; nesting past the parser's depth is not JSON."""
    good = {"Id": "a" * 64, "Names": ["/one"]}
    listed = json.dumps([1, "x", None, [good], {"Id": 5}, {"Names": []}, good]).encode()
    client = DockerClient(serve(ok(listed), ok(b"[" * 5000), ok(b'{"Id": 1}'),
                               ok(b'["' + b"a" * 64 + b'"]'), ok(b"{}" * 3)).path)
    assert client.running() == [good]
    assert client.running() == []
    assert client.inspect("a" * 64) is None
    assert client.inspect("a" * 64) is None
    assert client.container("a" * 64) == (200, None) and client.reachable is True


def test_nobody_listening(tmp_path):
    path = str(tmp_path / "dead.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()
    client = DockerClient(path)
    assert client.running() == [] and client.reachable is False
    assert DockerClient(str(tmp_path / "absent.sock")).inspect("x") is None


def test_an_engine_that_never_answers_costs_the_timeout(serve):
    gone = threading.Event()
    server = serve(lambda conn: gone.wait(5))
    client = DockerClient(server.path, timeout=0.2)
    t = time.monotonic()
    assert client.running() == []
    assert 0.15 < time.monotonic() - t < 2
    assert client.reachable is False
    gone.set()


def test_event_stream(serve):
    ids = ["d" * 64, "e" * 64, "f" * 64]
    opened, release = threading.Event(), threading.Event()

    def stream(conn):
        conn.sendall(ok(b"", "Transfer-Encoding: chunked"))
        line0 = json.dumps({"Type": "container", "Action": "create",
                            "Actor": {"ID": ids[0], "Attributes": {"name": "one", "image": "alpine"}}})
        line1 = json.dumps({"Actor": {"ID": ids[1]}})
        # not the engine's shapes: skipped, or only their strings taken
        odd = ['[1, 2]', '{"Actor": [1]}', '{"Actor": {"ID": 7}}', '"' + "[" * 3000 + '"',
               "[" * 5000, json.dumps({"Actor": {"ID": ids[2], "Attributes": {
                   "name": ["x"], "image": "alpine"}}})]
        # a record split over chunks, two records in one chunk, garbage, a blank line
        data = [line0[:10], line0[10:] + "\n", "not json\n\n" + line1 + "\n",
                "\n".join(odd) + "\n"]
        for part in data:
            conn.sendall(f"{len(part):x}\r\n{part}\r\n".encode())
        opened.set()
        release.wait(5)

    server = serve(stream)
    seen = []
    before = set(threading.enumerate())
    client = DockerClient(server.path)
    watch = client.watch(lambda cid, attrs: seen.append((cid, attrs)))
    assert watch is not None and client.reachable is True
    assert len(_started_since(before)) == 1  # the watch's thread
    assert opened.wait(5)
    deadline = time.monotonic() + 5
    while len(seen) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [(ids[0], {"name": "one", "image": "alpine"}), (ids[1], {}),
                    (ids[2], {"image": "alpine"})]
    query = server.requests[0].split()[1]
    assert query.startswith("/events?filters=")
    # the filter, percent-encoded: nothing but unreserved characters and %XX
    value = query.split("=", 1)[1]
    assert all(c.isalnum() or c in "%_.-~" for c in value), value
    assert json.loads(urllib.parse.unquote(value)) == \
        {"type": ["container"], "event": ["create"]}
    t = time.monotonic()
    watch.close()  # the server still holds the stream open: close ends the thread anyway
    assert time.monotonic() - t < 1
    assert not _started_since(before)
    release.set()


def test_watch_without_an_engine(tmp_path):
    client = DockerClient(str(tmp_path / "absent.sock"))
    assert client.watch(lambda cid, attrs: None) is None
    assert client.reachable is False


def _wait(pred, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while not pred() and time.monotonic() < end:
        time.sleep(0.01)
    return pred()


def _one_event(cid: str, then=None):
    """A stream answer: one creation, then then() (default: the stream ends)."""
    def stream(conn):
        conn.sendall(ok(b"", "Transfer-Encoding: chunked"))
        line = json.dumps({"Actor": {"ID": cid, "Attributes": {"name": cid[:4]}}}) + "\n"
        conn.sendall(f"{len(line):x}\r\n{line}\r\n".encode())
        if then is not None:
            then()
    return stream


def test_the_event_stream_reconnects_when_it_ends(serve, monkeypatch):
    monkeypatch.setattr(EventWatch, "RETRY_MAX", 0.2)
    release = threading.Event()
    # the engine cuts the first stream (it stopped); the second stays open
    server = serve(_one_event("a" * 64), _one_event("b" * 64, lambda: release.wait(5)))
    seen, connects = [], []
    before = set(threading.enumerate())
    watch = DockerClient(server.path).follow(lambda cid, a: seen.append(cid),
                                             lambda: connects.append(1))
    assert _wait(lambda: len(seen) == 2), seen
    assert seen == ["a" * 64, "b" * 64]
    assert connects == [1]  # at the reconnection, not the first connection
    assert watch.connections == 2 and watch.connected
    first, again = (r.split()[1] for r in server.requests)
    assert "since=" not in first
    # what came meanwhile, as far as the engine kept it: since the stream ended
    since = int(urllib.parse.parse_qs(again.split("?", 1)[1])["since"][0])
    assert abs(since - time.time()) < 5
    t = time.monotonic()
    watch.close()
    assert time.monotonic() - t < 1 and not _started_since(before)
    release.set()


def test_follow_waits_for_an_engine_that_is_not_there_yet(tmp_path, monkeypatch):
    monkeypatch.setattr(EventWatch, "RETRY_MAX", 0.2)
    path = str(tmp_path / "later.sock")
    seen, connects = [], []
    before = set(threading.enumerate())
    client = DockerClient(path)
    watch = client.follow(lambda cid, a: seen.append(cid), lambda: connects.append(1))
    assert client.reachable is False and not watch.connected
    time.sleep(0.3)
    release = threading.Event()
    server = Server(path, [_one_event("c" * 64, lambda: release.wait(5))])
    try:
        assert _wait(lambda: seen == ["c" * 64])
        assert connects == [1] and client.reachable is True
    finally:
        watch.close()
        release.set()
        server.close()
    assert not _started_since(before, server.thread)


def test_close_while_waiting_to_reconnect_is_prompt(tmp_path):
    before = set(threading.enumerate())
    watch = DockerClient(str(tmp_path / "absent.sock")).follow(lambda cid, a: None)
    time.sleep(0.5)  # in its back-off
    assert len(_started_since(before)) == 1
    t = time.monotonic()
    watch.close()
    assert time.monotonic() - t < 0.5 and not _started_since(before)


def test_a_stream_cut_at_once_is_not_reopened_in_a_tight_loop(tmp_path):
    # an engine that accepts the stream and ends it at once, over and over
    answers = [ok(b"0\r\n\r\n", "Transfer-Encoding: chunked")] * 50
    server = Server(str(tmp_path / "flappy.sock"), answers)
    watch = DockerClient(server.path).follow(lambda cid, a: None)
    time.sleep(1.0)
    watch.close()
    server.close()
    # back-off 0.1, 0.2, 0.4 s...: a handful, not hundreds
    assert 2 <= len(server.requests) <= 6, len(server.requests)


def test_request_tells_no_answer_from_not_found(serve, tmp_path):
    server = serve(b'HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}',
                   ok(b'{"Id": "x"}', "Content-Length: 11"))
    client = DockerClient(server.path)
    assert client.request("/containers/x/json") == (404, None)
    assert client.request("/containers/x/json") == (200, {"Id": "x"})
    assert DockerClient(str(tmp_path / "absent.sock")).request("/x") == (None, None)
