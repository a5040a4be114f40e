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
still resolves.  Without a reachable engine the id alone is shown.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Optional, Tuple

from .dockerapi import DockerClient, EventWatch
from .events import Container, ExecEvent, ExitEvent, ForkEvent, Namespaces, ProcessEvent


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
