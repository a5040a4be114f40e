"""Which container a process belongs to.

Three facts, in this order of trust:

1. the cgroup the kernel reported at the event (docker's cgroupfs layout
   ".../docker/<id>", systemd's ".../docker-<id>.scope"; cgroup v1 and v2);
2. the mount namespace: a process that entered a container's mount namespace
   (docker exec, nsenter -m) belongs to it, even before it joins its cgroup;
3. lineage from a containerd shim, whose "-id" names the container: runc and
   the container's first process run before their cgroup is set.

Names and images come from the Docker Engine API on its unix socket, asked
once per container and cached, so that a container that is already gone
still resolves.  Without a reachable engine the id alone is shown.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from .events import Container, ExecEvent, ExitEvent, ForkEvent, Namespaces, ProcessEvent


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def _quote(text: str) -> str:
    """Percent-encoding for a query value (urllib.parse costs 5 ms to import)."""
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode())

DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock"

_HEX64 = re.compile(r"[0-9a-f]{64}")
# systemd scope names of the common runtimes: <prefix>-<id>.scope
_SCOPE = re.compile(r"^(docker|cri-containerd|crio|libpod)-([0-9a-f]{64})\.scope$")
_SCOPE_RUNTIME = {"docker": "docker", "cri-containerd": "containerd", "crio": "cri-o",
                  "libpod": "podman"}
_SHIM = re.compile(r"containerd-shim(-runc-v\d)?$")


def container_from_cgroup(cgroup: str) -> Optional[Tuple[str, str]]:
    """(runtime, id) from a "parent/leaf" cgroup name, or None for a host cgroup."""
    parent, _, leaf = cgroup.rpartition("/")
    m = _SCOPE.match(leaf)
    if m:
        return _SCOPE_RUNTIME[m.group(1)], m.group(2)
    if _HEX64.fullmatch(leaf):
        if parent == "docker":
            return "docker", leaf
        if parent.startswith(("kubepods", "pod")) or parent.endswith(".slice"):
            return "containerd", leaf
    return None


def shim_container(argv: List[str]) -> Optional[Tuple[str, str]]:
    """(containerd namespace, id) from a shim's command line."""
    if not argv or not _SHIM.search(argv[0]):
        return None
    opts = {}
    for i, a in enumerate(argv[:-1]):
        if a.startswith("-"):
            opts[a.lstrip("-")] = argv[i + 1]
    cid = opts.get("id")
    if not cid:
        return None
    return opts.get("namespace", ""), cid


def docker_socket_path() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return host[len("unix://"):]
    return DEFAULT_DOCKER_SOCKET


class _Response:
    """An HTTP/1.1 response read from a unix socket: status, headers, body."""

    def __init__(self, sock: socket.socket) -> None:
        self._f = sock.makefile("rb")
        status = self._f.readline().split(None, 2)
        if len(status) < 2 or not status[0].startswith(b"HTTP/"):
            raise OSError("not an HTTP response")
        self.status = int(status[1])
        self.headers: Dict[str, str] = {}
        for line in iter(self._f.readline, b"\r\n"):
            if not line:
                raise OSError("connection closed in the headers")
            k, _, v = line.decode("latin-1").partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"

    def chunks(self) -> Iterator[bytes]:
        if not self.chunked:
            n = self.headers.get("content-length")
            yield self._f.read(int(n)) if n is not None else self._f.read()
            return
        while True:
            size = int(self._f.readline().split(b";")[0], 16)
            if size == 0:
                return
            yield self._f.read(size)
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


def _get(path: str, url: str, timeout: Optional[float]) -> Tuple[socket.socket, _Response]:
    """GET url from the HTTP server on the unix socket at path (the Engine API).
    Plain HTTP/1.1 on a socket: the standard library's client costs more to
    import than the few lines it would save."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(f"GET {url} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n".encode())
        return s, _Response(s)
    except (OSError, ValueError):
        s.close()
        raise OSError("no answer")


class DockerClient:
    """Just enough of the Docker Engine API, over its unix socket."""

    def __init__(self, path: Optional[str] = None, timeout: float = 1.0) -> None:
        self.path = path or docker_socket_path()
        self.timeout = timeout
        self.reachable: Optional[bool] = None  # unknown until the first call

    def _get(self, url: str):
        try:
            sock, resp = _get(self.path, url, self.timeout)
            try:
                body = resp.body()
            finally:
                sock.close()
        except (OSError, ValueError):
            self.reachable = False
            return None
        self.reachable = True
        if resp.status != 200:
            return None
        try:
            return json.loads(body)
        except ValueError:
            return None

    def watch(self, on_container: Callable[[str, Dict[str, str]], None]) -> Optional["EventWatch"]:
        """Follow the engine's container events in a thread; None if unreachable."""
        filters = _quote(json.dumps({"type": ["container"], "event": ["create"]}))
        try:
            sock, resp = _get(self.path, f"/events?filters={filters}", self.timeout)
        except OSError:
            self.reachable = False
            return None
        if resp.status != 200:
            sock.close()
            return None
        sock.settimeout(None)  # the stream stays open until we close it
        self.reachable = True
        return EventWatch(sock, resp, on_container)

    def inspect(self, cid: str) -> Optional[dict]:
        return self._get(f"/containers/{cid}/json")

    def running(self) -> List[dict]:
        return self._get("/containers/json") or []


class EventWatch:
    """A thread reading the engine's event stream: a container's name and image
    are known from its creation, before its first process runs, so even one
    that is removed at once resolves."""

    def __init__(self, sock: socket.socket, resp: _Response,
                 on_container: Callable[[str, Dict[str, str]], None]) -> None:
        self._sock, self._resp, self._cb = sock, resp, on_container
        self._thread = threading.Thread(target=self._run, name="docker-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for line in self._resp.lines():
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                actor = ev.get("Actor") or {}
                if actor.get("ID"):
                    self._cb(actor["ID"], actor.get("Attributes") or {})
        except (OSError, ValueError):
            pass  # the engine went away or we closed the stream

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._thread.join(timeout=2)
        self._sock.close()


def _info(cid: str, data: Optional[dict], runtime: str, source: str) -> Container:
    if not data:
        return Container(id=cid, runtime=runtime, source=source)
    name = (data.get("Name") or "").lstrip("/") or None
    image = (data.get("Config") or {}).get("Image") or data.get("Image") or None
    return Container(id=data.get("Id", cid), name=name, image=image, runtime=runtime, source=source)


class ContainerResolver:
    """Attributes events to containers; keeps what it learned for later events."""

    def __init__(self, client: Optional[DockerClient], host_ns: Namespaces) -> None:
        self.client = client
        self.host_mnt = host_ns.mnt
        self._details: Dict[str, Container] = {}          # id -> name/image (source ignored)
        self._by_cgroup: Dict[str, Optional[Tuple[str, str]]] = {}
        self._by_mnt: Dict[int, Tuple[str, str]] = {}      # mount ns inode -> (runtime, id)
        self._by_pid: Dict[int, Tuple[str, str]] = {}      # shims and their descendants
        self._missing: set = set()                         # ids the engine did not know
        self._watch: Optional[EventWatch] = None

    # -- what is known before the trace starts --------------------------------

    def seed(self, table: Iterable, ns_of_pid) -> None:
        """What existed before the trace: shims (from /proc's command lines), and
        the running containers' names, images and mount namespaces (from Docker)."""
        for proc in table:
            shim = shim_container(proc.argv)
            if shim is not None:
                self._by_pid[proc.pid] = self._shim_key(*shim)
        if self.client is None:
            return
        self._watch = self.client.watch(self._on_created)
        for c in self.client.running():
            data = self.client.inspect(c["Id"])
            if not data:
                continue
            self._details[data["Id"]] = _info(data["Id"], data, "docker", "cgroup")
            pid = (data.get("State") or {}).get("Pid") or 0
            if pid:
                mnt = ns_of_pid(pid).mnt
                if mnt and mnt != self.host_mnt:
                    self._by_mnt[mnt] = ("docker", data["Id"])

    # -- per event --------------------------------------------------------------

    def attribute_process(self, cgroup: str, mnt: int, pid: int) -> Optional[Container]:
        """The decision, in order of trust, for a process (seen at start-up or at an event)."""
        found = self._by_cgroup.get(cgroup, ())
        if found == ():
            found = self._by_cgroup[cgroup] = container_from_cgroup(cgroup)
        if found is not None:
            if mnt and mnt != self.host_mnt:
                self._by_mnt.setdefault(mnt, found)  # who enters this mount namespace joins it
            return self._details_for(found[0], found[1], "cgroup")
        found = self._by_mnt.get(mnt)
        if found is not None:
            return self._details_for(found[0], found[1], "namespace")
        found = self._by_pid.get(pid)
        if found is not None:
            return self._details_for(found[0], found[1], "shim")
        return None

    @staticmethod
    def _shim_key(namespace: str, cid: str) -> Tuple[str, str]:
        # docker's containerd namespace is "moby"; others are containerd's own (k8s.io, ...)
        return ("docker" if namespace == "moby" else "containerd", cid)

    def _on_created(self, cid: str, attrs: Dict[str, str]) -> None:
        # runs in the watch thread; a dict assignment is atomic
        self._details[cid] = Container(id=cid, name=attrs.get("name"), image=attrs.get("image"),
                                       runtime="docker")

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def _details_for(self, runtime: str, cid: str, source: str) -> Container:
        known = self._details.get(cid)
        if known is None:
            data = None
            if self.client is not None and runtime == "docker" and cid not in self._missing:
                data = self.client.inspect(cid)
            if data:
                known = self._details[cid] = _info(cid, data, runtime, source)
            else:
                # not (yet) known: the event stream may still name it
                self._missing.add(cid)
                return Container(id=cid, runtime=runtime, source=source)
        if known.source != source:
            return Container(id=known.id, name=known.name, image=known.image,
                             runtime=known.runtime, source=source)
        return known

    def attribute(self, ev: ProcessEvent) -> Optional[Container]:
        # lineage first: it must follow every fork and shim exec, attributed or not
        if isinstance(ev, ForkEvent):
            if not ev.thread:
                self.on_fork(ev.pid, ev.parent_pid, ev.ppid)
        elif isinstance(ev, ExecEvent):
            if ev.ret == 0:
                self.on_exec(ev.pid, ev.argv)
        found = self.attribute_process(ev.cgroup, ev.ns.mnt, ev.pid)
        if isinstance(ev, ExitEvent):
            self.on_exit(ev.pid, ev.vpid, ev.ns.mnt, found)
        return found

    # The steps of attribute(), by the numbers they need: recordlines.RecordLines
    # takes them straight from records.

    def on_fork(self, pid: int, parent_pid: int, ppid: int) -> None:
        """A process (not a thread) was created: it inherits its parent's shim lineage."""
        inherited = self._by_pid.get(parent_pid) or self._by_pid.get(ppid)
        if inherited is not None:
            self._by_pid[pid] = inherited

    def on_exec(self, pid: int, argv: List[str]) -> None:
        shim = shim_container(argv)
        if shim is not None:
            self.on_shim_exec(pid, shim)

    def on_shim_exec(self, pid: int, shim: Tuple[str, str]) -> None:
        """on_exec() of a shim: shim_container(argv), decided once per command line."""
        self._by_pid[pid] = self._shim_key(*shim)

    def on_exit(self, pid: int, vpid: int, mnt: int, found: Optional[Container]) -> None:
        self._by_pid.pop(pid, None)
        if vpid == 1 and found is not None:
            # the container's init is gone, and inode numbers are reused
            self._by_mnt.pop(mnt, None)
