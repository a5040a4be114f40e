"""Which container a process belongs to.

Three facts, in this order of trust:

1. the cgroup the kernel reported at the event (docker's cgroupfs layout
   ".../docker/<id>", systemd's ".../docker-<id>.scope"; cgroup v1 and v2);
2. the mount namespace: a process that entered a container's mount namespace
   (docker exec, nsenter -m) belongs to it, even before it joins its cgroup;
3. lineage from a containerd shim, whose "-id" names the container: runc and
   the container's first process run before their cgroup is set.

Names and images come from the Docker Engine API (dockerapi.py), asked
once per container and cached, so that a container that is already gone
still resolves.  Without a reachable engine the id alone is shown; the ids
it did not answer about are asked again off the event path, each at most
once every RETRY_INTERVAL seconds and all at once when its event stream
(followed again whenever it ends) is back.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import time
from collections.abc import Iterable

from ..model import jsonparse
from ..model.events import Container, ExecEvent, ExitEvent, ForkEvent, Namespaces, ProcessEvent
from ..model.files import read_owned
from .dockerapi import DockerClient, EventWatch, text_field
from .proctable import same_start

_HEX64 = re.compile(r"[0-9a-f]{64}")
# systemd scope names of the common runtimes: <prefix>-<id>.scope
_SCOPE = re.compile(r"^(docker|cri-containerd|crio|libpod)-([0-9a-f]{64})\.scope$")
_SCOPE_RUNTIME = {"docker": "docker", "cri-containerd": "containerd", "crio": "cri-o",
                  "libpod": "podman"}
# podman with the cgroupfs manager (no systemd): libpod_parent/libpod-<id>
_LIBPOD = re.compile(r"^libpod-([0-9a-f]{64})$")
# systemd-nspawn registered with machined: machine.slice/machine-<name>.scope,
# the name escaped as systemd escapes unit names ("-" is \x2d)
_MACHINE = re.compile(r"^machine-(.+)\.scope$")
# LXC 4+: lxc.payload.<name> (the container) and lxc.monitor.<name> (its
# monitor), on cgroup v1 and v2; LXC before 4: lxc/<name>
_LXC = re.compile(r"^lxc\.(payload|monitor)\.(.+)$")
_SHIM = re.compile(r"containerd-shim(-runc-v\d)?$")
RETRY_INTERVAL = 1.0  # seconds between two questions about one id to an engine that was away
# Questions the event path asks the engine itself, a second at most (each
# waits for its answer, a millisecond or two); more (ids made up by cgroup
# names in a user's delegated tree, say) wait for the retry thread.
ASKS_PER_SECOND = 20


def _unescape_unit(name: str) -> str:
    """A systemd unit name's \\xNN escapes undone (systemd-escape(1))."""
    return re.sub(r"\\x([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), name)


# a Kubernetes pod's cgroup: pod<uid> (cgroupfs) or kubepods-<qos>-pod<uid>.slice
# (systemd, the uid's "-" as "_"); a static pod's uid is 32 hex digits
_POD = re.compile(r"(?:^|[-/])pod([0-9a-f]{8}(?:[-_][0-9a-f]{4}){3}[-_][0-9a-f]{12}|[0-9a-f]{32})"
                  r"(?:\.slice)?$")


def pod_of_cgroup(cgroup: str) -> str | None:
    """The uid of the Kubernetes pod whose container a "parent/leaf" cgroup is."""
    m = _POD.search(cgroup.rpartition("/")[0])
    return m.group(1).replace("_", "-") if m else None


def container_from_cgroup(cgroup: str) -> tuple[str, str] | None:
    """(runtime, id) from a "parent/leaf" cgroup name, or None for a host cgroup.

    The forms each runtime makes, with systemd's cgroup manager and without:
    docker (docker/<id>, system.slice/docker-<id>.scope), podman
    (machine.slice/libpod-<id>.scope, libpod_parent/libpod-<id>), Kubernetes
    through CRI (kubepods...pod<uid>.slice/cri-containerd-<id>.scope,
    crio-<id>.scope, kubepods/.../pod<uid>/<id>), systemd-nspawn
    (machine.slice/machine-<name>.scope), LXC (lxc.payload.<name>,
    lxc.monitor.<name>, lxc/<name>).  `ctr run`'s <namespace>/<id> is told
    apart from any other two-level cgroup only by its shim: the resolver
    matches it (ContainerResolver.attribute_process)."""
    parent, _, leaf = cgroup.rpartition("/")
    m = _SCOPE.match(leaf)
    if m:
        return _SCOPE_RUNTIME[m.group(1)], m.group(2)
    m = _LIBPOD.match(leaf)
    if m and parent == "libpod_parent":
        return "podman", m.group(1)
    m = _LXC.match(leaf)
    if m:
        return "lxc", m.group(2)
    if parent in ("lxc", "lxc.payload") and leaf:
        return "lxc", leaf
    m = _MACHINE.match(leaf)
    if m and parent == "machine.slice":
        return "systemd-nspawn", _unescape_unit(m.group(1))
    if _HEX64.fullmatch(leaf):
        if parent == "docker":
            return "docker", leaf
        if parent.startswith(("kubepods", "pod")) or parent.endswith(".slice"):
            return "containerd", leaf
    return None


@functools.lru_cache(maxsize=512)
def shim_container(argv: tuple[str, ...]) -> tuple[str, str] | None:
    """(containerd namespace, id) from a shim's command line (a trace runs the
    same command lines again and again: each is looked at once)."""
    if not argv or not _SHIM.search(argv[0]):
        return None
    shim_options = {}
    for i, arg in enumerate(argv[:-1]):
        if arg.startswith("-"):
            shim_options[arg.lstrip("-")] = argv[i + 1]
    cid = shim_options.get("id")
    if not cid:
        return None
    return shim_options.get("namespace", ""), cid


@functools.lru_cache(maxsize=512)
def conmon_container(argv: tuple[str, ...]) -> tuple[str, str | None, str | None] | None:
    """(id, name, its storage's list of containers) from podman's monitor's
    command line: conmon -c ID -n NAME -b <storage>/<driver>-containers/ID/userdata.
    The list is <storage>/<driver>-containers/containers.json: the rootful
    one (/var/lib/containers) or a rootless user's (~/.local/share/containers)."""
    if not argv or not argv[0].endswith("conmon"):
        return None
    options = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("-")}
    cid = options.get("-c") or options.get("--cid")
    if not cid:
        return None
    bundle = (options.get("-b") or options.get("--bundle") or "").rstrip("/")
    parts = bundle.split("/")
    state = None
    if len(parts) > 3 and parts[-1] == "userdata" and parts[-2] == cid and bundle.startswith("/"):
        state = "/".join(parts[:-2] + ["containers.json"])
    return cid, options.get("-n") or options.get("--name"), state


@functools.lru_cache(maxsize=512)
def nspawn_container(argv: tuple[str, ...]) -> str | None:
    """The machine systemd-nspawn runs: its -M/--machine name, else its
    -D/--directory's last part (nspawn's own default for the name)."""
    if not argv or not argv[0].endswith("systemd-nspawn"):
        return None
    name = directory = None
    args = iter(argv[1:])
    for arg in args:
        key, eq, value = arg.partition("=")
        if key in ("-M", "--machine", "-D", "--directory") and not eq:
            value = next(args, "")
        elif key.startswith("-M") and len(key) > 2:
            key, value = "-M", key[2:]
        elif key.startswith("-D") and len(key) > 2:
            key, value = "-D", key[2:]
        if key in ("-M", "--machine"):
            name = value
        elif key in ("-D", "--directory"):
            directory = value
        elif not arg.startswith("-"):
            break  # the command to run inside: nspawn's options end here
    if name:
        return name
    if directory:
        return directory.rstrip("/").rsplit("/", 1)[-1] or None
    return None


# What the resolver remembers of ids and cgroups, each: traced processes
# choose them (a process named conmon or containerd-shim names an id; a
# delegated cgroup tree is its user's to name), so they are bounded.
REMEMBERED_MAX = 65_536


class _Recent(dict):
    """A dict that forgets its oldest entry when one more would pass its limit.

    Assigning is the only way in that counts (setdefault and update are not
    used on it).  The engine's watch thread assigns too: an eviction that
    meets the other thread's forgets nothing this time."""

    def __init__(self) -> None:
        super().__init__()
        self.limit = REMEMBERED_MAX

    def __setitem__(self, key, value) -> None:
        if len(self) >= self.limit and key not in self:
            try:
                del self[next(iter(self))]
            except (KeyError, RuntimeError, StopIteration):
                pass
        super().__setitem__(key, value)


PODMAN_STATE = "/var/lib/containers/storage/overlay-containers/containers.json"
# A storage's list is read as root and a rootless one is its user's to
# write: what is read, parsed and kept of it is bounded.  Podman writes some
# 500 bytes and five brackets a container; a list with more than one bracket
# in 32 bytes is not podman's (and would parse into millions of objects).
PODMAN_STATE_MAX = 16 << 20     # root's (rootful podman, or a storage root chose)
PODMAN_USER_STATE_MAX = 2 << 20  # a user's: some 4,000 containers
PODMAN_STATE_DENSITY = 32       # bytes a bracket at least
PODMAN_STATES_MAX = 16          # storages followed (rootful, and a rootless one a user)
PODMAN_ENTRIES_MAX = 4096       # containers kept of each list: its last, the newest
PODMAN_TEXT_MAX = 255           # characters kept of a name or an image


class _StateFile:
    """One storage's list of containers, read again only when it changed;
    what the last read found (id -> (name, image)) replaces what came before."""

    def __init__(self, owner: int) -> None:
        self.owner = owner
        self.seen: tuple[int, int] | None = None
        self.read_at = -RETRY_INTERVAL
        self.entries: dict[str, tuple[str | None, str | None]] = {}


def _text(value: object) -> str | None:
    return value[:PODMAN_TEXT_MAX] if isinstance(value, str) else None


def podman_entries(data: bytes) -> dict[str, tuple[str | None, str | None]] | None:
    """id -> (name, image) of a storage's list of containers (containers.json),
    or None if it is not one."""
    if data.count(b"{") + data.count(b"[") > max(16, len(data) // PODMAN_STATE_DENSITY):
        return None
    try:
        entries = jsonparse.loads(data)
    except jsonparse.NOT_JSON:
        return None
    if not isinstance(entries, list):
        return None
    found: dict[str, tuple[str | None, str | None]] = {}
    for e in entries[-PODMAN_ENTRIES_MAX:]:
        if not isinstance(e, dict) or not isinstance(e.get("id"), str):
            continue
        names = e.get("names")
        try:
            meta = jsonparse.loads(e.get("metadata") or "{}")
        except (*jsonparse.NOT_JSON, TypeError):
            meta = None
        image = meta.get("image-name") if isinstance(meta, dict) else None
        found[e["id"][:PODMAN_TEXT_MAX]] = (
            _text(names[0]) if isinstance(names, list) and names else None, _text(image))
    return found


class PodmanState:
    """Names and images of podman's containers, rootful and rootless, from
    each storage's own list, read again only when it changed and an id is
    not in it: never a `podman inspect` per event.  The rootful storage is
    always followed; a rootless one once its monitor (conmon) names it."""

    def __init__(self, path: str = PODMAN_STATE) -> None:
        self._files: dict[str, _StateFile] = {path: _StateFile(0)}
        # the storage each monitor named for its id: a lookup of that id reads
        # that one list, and a user's lists are read for the user's ids only
        self._storage_of: dict[str, str] = _Recent()

    def follow(self, path: str, owner: int, cid: str) -> None:
        """A storage's list, as a monitor run by owner (a uid) names it for cid."""
        if path not in self._files and len(self._files) < PODMAN_STATES_MAX:
            self._files[path] = _StateFile(owner)
        if path in self._files:
            self._storage_of[cid] = path

    def lookup(self, cid: str) -> tuple[str | None, str | None] | None:
        """(name, image) of a container id, or None."""
        path = self._storage_of.get(cid)
        # an id no monitor named (a libpod cgroup's): root's lists only
        paths = [path] if path is not None else [
            p for p, state in self._files.items() if state.owner == 0]
        for p in paths:
            state = self._files[p]
            if cid not in state.entries:
                self._read(p, state)
            if cid in state.entries:
                return state.entries[cid]
        return None

    def _read(self, path: str, state: _StateFile) -> None:
        now = time.monotonic()
        if now - state.read_at < RETRY_INTERVAL:  # asked about an id it lacks: not every event
            return
        state.read_at = now
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            return
        if (st.st_mtime_ns, st.st_size) == state.seen:
            return
        limit = PODMAN_STATE_MAX if st.st_uid == 0 else PODMAN_USER_STATE_MAX
        data = read_owned(path, {0, state.owner}, limit)
        if data is None:
            return
        state.seen = (st.st_mtime_ns, st.st_size)
        found = podman_entries(data)
        if found is not None:
            state.entries = found


def _info(cid: str, data: dict | None, runtime: str, source: str) -> Container:
    """A container as the engine describes it (dockerapi.described)."""
    if not data:
        return Container(id=cid, runtime=runtime, source=source)
    name = (text_field(data, "Name") or "").lstrip("/") or None
    config = data.get("Config")
    image = (text_field(config, "Image") if isinstance(config, dict) else None) or text_field(
        data, "Image")
    return Container(id=data["Id"], name=name, image=image, runtime=runtime, source=source)


class ContainerResolver:
    """Attributes events to containers; keeps what it learned for later events."""

    def __init__(self, client: DockerClient | None, host_ns: Namespaces) -> None:
        self.client = client
        self.host_mnt = host_ns.mnt
        self._details: dict[str, Container] = _Recent()   # id -> name/image (source ignored)
        # (id, source) -> (the details it was made from, the container)
        self._variants: dict[tuple[str, str], tuple[Container | None, Container]] = {}
        self._by_cgroup: dict[str, tuple[str, str] | None] = _Recent()
        self._pods: dict[str, str] = _Recent()              # id -> its Kubernetes pod's uid
        # "<namespace>/<id>" of each containerd shim seen: the cgroup a plain
        # containerd client (ctr run) puts that container's processes in
        self._shim_cgroups: dict[str, tuple[str, str]] = _Recent()
        self.podman = PodmanState()
        self._by_mnt: dict[int, tuple[str, str]] = {}      # mount ns inode -> (runtime, id)
        # shims and their descendants: pid -> (start_ns, read from /proc, (runtime, id));
        # a process is its pid and its start time (proctable.same_start)
        self._by_pid: dict[int, tuple[int, bool, tuple[str, str]]] = {}
        self._missing: dict[str, None] = _Recent()         # ids the engine did not name when asked
        self._watch: EventWatch | None = None
        # Ids asked about while the engine did not answer, to ask again (the
        # engine did not know the others in _missing: they are not asked
        # again, though their creation event may still name them).  The
        # retry thread asks; the event path only adds.
        self.retry_interval = RETRY_INTERVAL
        self._retry: dict[str, None] = _Recent()
        self._engine_down = False      # the last question went unanswered: ask later, not now
        self._asks_since, self._asks = 0.0, 0  # the event path's questions this second
        self._lock = threading.Lock()  # _retry and _retrier
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._retrier: threading.Thread | None = None

    # -- what is known before the trace starts --------------------------------

    def seed(self, table: Iterable, ns_of_pid) -> None:
        """What existed before the trace: shims (from /proc's command lines) and
        their descendants, and the running containers' names, images and
        mount namespaces (from Docker)."""
        procs = sorted(table, key=lambda p: (p.start_ns, p.pid))  # parents first
        for proc in procs:
            shim = shim_container(proc.argv)
            if shim is not None:
                self._by_pid[proc.pid] = (proc.start_ns, True, self._shim_key(*shim))
            monitor = conmon_container(proc.argv)
            if monitor is not None:
                self._monitor(proc.pid, proc.start_ns, True, monitor, proc.uid)
            machine = nspawn_container(proc.argv)
            if machine is not None:
                self._by_pid[proc.pid] = (proc.start_ns, True, ("systemd-nspawn", machine))
            elif proc.pid not in self._by_pid and proc.ppid in self._by_pid:
                # a container's init and the rest below its runtime's monitor: by
                # lineage too (a rootless podman container has no cgroup of its own)
                self._by_pid[proc.pid] = (proc.start_ns, True, self._by_pid[proc.ppid][2])
        if self.client is None:
            return
        self._watch = self.client.follow(self._on_created, self._on_engine_back)
        running = self.client.running()
        self._engine_down = self.client.reachable is False  # first sightings: ask later
        for c in running:
            data = self.client.inspect(c["Id"])
            if not data:
                continue
            self._details[data["Id"]] = _info(data["Id"], data, "docker", "cgroup")
            state = data.get("State")
            pid = state.get("Pid") if isinstance(state, dict) else None
            if isinstance(pid, int) and pid > 0:
                mnt = ns_of_pid(pid).mnt
                if mnt and mnt != self.host_mnt:
                    self._by_mnt[mnt] = ("docker", data["Id"])

    # -- per event --------------------------------------------------------------

    def _lineage(self, pid: int, start: int) -> tuple[str, str] | None:
        """The shim lineage of process (pid, start): none for another process
        that had the pid (whose exit was lost)."""
        entry = self._by_pid.get(pid)
        if entry is None:
            return None
        if not same_start(entry[0], entry[1], start):
            del self._by_pid[pid]
            return None
        return entry[2]

    def attribute_process(self, cgroup: str, mnt: int, pid: int,
                          start: int = 0, teaches: bool = True,
                          vpid: int = 0) -> Container | None:
        """The decision, in order of trust, for a process (seen at start-up or
        at an event); start: its start time (0: unknown).  teaches: whether a
        process in a container's cgroup, or the container's init (vpid 1)
        known by its runtime's lineage, teaches that its mount namespace is
        the container's -- not as it exits: the members a container's init
        leaves behind exit after it, and the namespace's inode is free for
        reuse once they have (by a rootless podman container, say).  Other
        processes of a lineage do not teach: a rootless podman's monitor and
        runc share one mount namespace with every container of that user."""
        try:
            found = self._by_cgroup[cgroup]
        except KeyError:  # a cgroup seen for the first time
            found = container_from_cgroup(cgroup)
            if found is None and cgroup in self._shim_cgroups:
                found = self._shim_cgroups[cgroup]  # ctr run's <namespace>/<id>
            self._by_cgroup[cgroup] = found
            pod = pod_of_cgroup(cgroup) if found is not None else None
            if pod is not None and found is not None:
                self._pods[found[1]] = pod
        if found is not None:
            if teaches and mnt and mnt != self.host_mnt:
                self._by_mnt.setdefault(mnt, found)  # who enters this mount namespace joins it
            return self._details_for(found[0], found[1], "cgroup")
        found = self._by_mnt.get(mnt)
        if found is not None:
            return self._details_for(found[0], found[1], "namespace")
        if pid in self._by_pid:  # most processes are no shim's: no call for them
            found = self._lineage(pid, start)
            if found is not None:
                if teaches and vpid == 1 and mnt and mnt != self.host_mnt:
                    self._by_mnt.setdefault(mnt, found)
                return self._details_for(found[0], found[1], "shim")
        return None

    def _shim_key(self, namespace: str, cid: str) -> tuple[str, str]:
        # docker's containerd namespace is "moby"; others are containerd's own (k8s.io, ...)
        key = ("docker" if namespace == "moby" else "containerd", cid)
        if namespace and namespace != "moby":
            cgroup = f"{namespace}/{cid}"
            if cgroup not in self._shim_cgroups:
                self._shim_cgroups[cgroup] = key
                if self._by_cgroup.get(cgroup, key) is None:
                    del self._by_cgroup[cgroup]  # decided before the shim was seen
        return key

    def _on_created(self, cid: str, attrs: dict[str, str]) -> None:
        # runs in the watch thread; a dict assignment is atomic
        self._details[cid] = Container(id=cid, name=attrs.get("name"), image=attrs.get("image"),
                                       runtime="docker")

    def remembered(self) -> dict[str, int]:
        """How much it holds of what traced processes name, by kind: each
        bounded (REMEMBERED_MAX), or by the processes alive."""
        return {"ids": len(self._details), "cgroups": len(self._by_cgroup),
                "shim cgroups": len(self._shim_cgroups), "asked": len(self._missing),
                "lineage": len(self._by_pid), "mount namespaces": len(self._by_mnt),
                "pods": len(self._pods)}

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        with self._lock:
            retrier, self._retrier = self._retrier, None
        if retrier is not None:
            retrier.join(timeout=2)

    def _details_for(self, runtime: str, cid: str, source: str) -> Container:
        known = self._details.get(cid)
        if known is not None and known.runtime != runtime:
            # another runtime's word for the id: a process named conmon may
            # claim a Docker container's id, and name it
            known = None
        if (known is None or known.image is None) and runtime == "podman":
            found = self.podman.lookup(cid)
            if found is not None:
                known = self._details[cid] = Container(id=cid, name=found[0], image=found[1],
                                                       runtime="podman")
        if known is None:
            if self.client is not None and runtime == "docker" and cid not in self._missing:
                known = self._ask(cid, runtime, source)
        if known is not None and known.source == source:
            return known
        # The same object for the same answer, event after event: the writers
        # cache each container's JSON by the object.  Remade when the details
        # change (a name learned later).
        hit = self._variants.get((cid, source))
        if hit is not None and hit[0] is known:
            return hit[1]
        if known is None:
            # not (yet) known: the event stream, or asking again, may still name
            # it; a runtime whose ids are names (LXC, nspawn, ctr run) is named
            made = Container(id=cid, name=None if _HEX64.fullmatch(cid) else cid,
                             runtime=runtime, source=source, pod=self._pods.get(cid))
        else:
            made = Container(id=known.id, name=known.name, image=known.image,
                             runtime=known.runtime, source=source,
                             pod=known.pod or self._pods.get(cid))
        if len(self._variants) >= 4096:
            self._variants.clear()
        self._variants[(cid, source)] = (known, made)
        return made

    # -- asking the engine ---------------------------------------------------

    def _ask(self, cid: str, runtime: str, source: str) -> Container | None:
        """The first question about an id: now, unless the engine is away (a
        question to an engine that hangs costs the client's timeout) or was
        asked ASKS_PER_SECOND questions this second; later if it does not
        answer, or was not asked."""
        assert self.client is not None
        self._missing[cid] = None
        now = time.monotonic()
        if now - self._asks_since >= 1.0:
            self._asks_since, self._asks = now, 0
        self._asks += 1
        if not self._engine_down and self._asks <= ASKS_PER_SECOND:
            status, data = self.client.container(cid)
            if data:
                known = self._details[cid] = _info(cid, data, runtime, source)
                return known
            if status is not None:
                return None  # the engine does not know it
            self._engine_down = True
        with self._lock:
            self._retry[cid] = None
            if self._retrier is None and not self._closed.is_set():
                self._retrier = threading.Thread(target=self._ask_again, name="docker-retry",
                                                 daemon=True)
                self._retrier.start()
        return None

    def _on_engine_back(self) -> None:
        """The event stream connected again (in its thread): ask at once."""
        self._engine_down = False
        self._wake.set()

    def _ask_again(self) -> None:
        """The retry thread: a round of questions at most every retry_interval,
        while ids wait for an answer."""
        assert self.client is not None
        last = time.monotonic()  # the first question was just asked
        while True:
            self._wake.wait(self.retry_interval)
            self._wake.clear()
            pause = last + self.retry_interval - time.monotonic()
            if pause > 0 and self._closed.wait(pause):
                return
            if self._closed.is_set():
                return
            last = time.monotonic()
            with self._lock:
                ids = list(self._retry)
            for cid in ids:
                if self._closed.is_set():
                    return
                if cid not in self._details:  # else named by its creation event meanwhile
                    status, data = self.client.container(cid)
                    if status is None:
                        self._engine_down = True
                        break  # still away: the others wait for the next round too
                    self._engine_down = False
                    if data:
                        self._details[cid] = _info(cid, data, "docker", "cgroup")
                with self._lock:
                    self._retry.pop(cid, None)
            with self._lock:
                if not self._retry:  # nothing left to ask: _ask starts another thread
                    if self._retrier is threading.current_thread():
                        self._retrier = None
                    return

    def attribute(self, ev: ProcessEvent) -> Container | None:
        """The container of an event's process (None: the host)."""
        # lineage first: it must follow every fork and shim exec, attributed or not
        if type(ev) is ForkEvent:
            if not ev.thread:
                self.on_fork(ev.pid, ev.parent_pid, ev.ppid, ev.start_ns, ev.parent_start_ns)
        elif type(ev) is ExecEvent and not ev.ret:
            self.on_exec(ev.pid, ev.argv, ev.start_ns, ev.uid)
        found = self.attribute_process(ev.cgroup, ev.ns.mnt, ev.pid, ev.start_ns,
                                       type(ev) is not ExitEvent, ev.vpid)
        if type(ev) is ExitEvent:
            self.on_exit(ev.pid, ev.vpid, ev.ns.mnt, found, ev.start_ns)
        return found

    def on_fork(self, pid: int, parent_pid: int, ppid: int, start: int = 0,
                parent_start: int = 0) -> None:
        """A process (not a thread) was created: it inherits its parent's shim
        lineage, the caller's (parent_pid: running, so the holder of its pid)
        or, under CLONE_PARENT, its parent's (ppid, started at parent_start)."""
        by_pid = self._by_pid
        if parent_pid not in by_pid and ppid not in by_pid:  # most forks: no call
            if pid in by_pid:
                del by_pid[pid]  # an earlier process of this pid, whose exit was lost
            return
        inherited = self._lineage(parent_pid, 0) or self._lineage(ppid, parent_start)
        if inherited is not None:
            by_pid[pid] = (start, False, inherited)
        elif pid in by_pid:
            del by_pid[pid]

    def on_exec(self, pid: int, argv: tuple[str, ...], start: int = 0, uid: int = 0) -> None:
        """A process ran a program: a shim's (containerd) or a monitor's
        (podman's conmon, run by uid) names its container."""
        shim = shim_container(argv)
        if shim is not None:
            self._by_pid[pid] = (start, False, self._shim_key(*shim))
            return
        monitor = conmon_container(argv)
        if monitor is not None:
            self._monitor(pid, start, False, monitor, uid)
            return
        machine = nspawn_container(argv)
        if machine is not None:  # without systemd, nspawn makes no cgroup: its lineage
            self._by_pid[pid] = (start, False, ("systemd-nspawn", machine))

    def _monitor(self, pid: int, start: int, from_proc: bool,
                 monitor: tuple[str, str | None, str | None], uid: int) -> None:
        """podman's monitor (conmon, run by uid): its lineage is its container's,
        its command line names it and the storage that knows its image."""
        cid, name, storage = monitor
        self._by_pid[pid] = (start, from_proc, ("podman", cid))
        if storage:
            self.podman.follow(storage, uid, cid)
        if name and cid not in self._details:
            self._details[cid] = Container(id=cid, name=name, runtime="podman")

    def on_exit(self, pid: int, vpid: int, mnt: int, found: Container | None,
                start: int = 0) -> None:
        if pid in self._by_pid:
            self._lineage(pid, start)  # drops another process's entry
            self._by_pid.pop(pid, None)
        if vpid == 1 and found is not None:
            # the container's init is gone, and inode numbers are reused
            self._by_mnt.pop(mnt, None)
