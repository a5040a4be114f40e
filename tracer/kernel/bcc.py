"""The bcc backend: the same programs (bpf/ctrtrace.bpf.c), compiled by bcc.

For hosts where bcc is what there is, or CO-RE cannot load.  The programs'
text is the CO-RE build's, with build.bpf.h giving libbpf's vocabulary a bcc
meaning; the records are the same ctrtrace.h records, read by the same
reader and decoder.  What bcc cannot do for us is done here:

- the kernel's structs are declared as the running kernel lays them out
  (kstructs.py, from its BTF), not as the headers bcc compiles with do;
- the maps are created here, as MAPS describes them (tests/test_bcc_backend.py
  holds MAPS to the CO-RE object's), and the programs name them by
  descriptor: compiled with placeholders, relocated here before loading;
- the tunables are a frozen read-only array, what libbpf makes of .rodata,
  so the verifier prunes what is off exactly as under CO-RE, and the
  compiled programs do not depend on them;
- bcc's compiler runs in a child (bcc_compile.py), as LLVM may abort its
  process; its output is cached per kernel build and program text (cache.py),
  so a start that finds it needs no compiler at all.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from typing import NamedTuple

from ..model import jsonparse
from ..model.errors import CtrtraceError, ExitStatus
from . import bpfsys, cache, corebtf, host, kheaders, layout
from .host import LoadConfig, check_host, config_for, ensure_tracefs, ringbuf_size

SOURCE_NAME = "ctrtrace.bpf.c"
BUILD_FORMAT = "ctrtrace-bcc-build 1"
PLACEHOLDER_FD = 0x7E000000  # + the map's index in MAPS: replaced by its fd at load
COMPILE_TIMEOUT_S = 120


class MapSpec(NamedTuple):
    kind: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0


_NS_CALL = ctypes.sizeof(layout.CtNs) + 16  # struct ns_call: before, arg0, arg1
MAPS: dict[str, MapSpec] = {
    "events": MapSpec(bpfsys.MAP_RINGBUF, 0, 0, 0),  # sized at creation
    "counters": MapSpec(bpfsys.MAP_PERCPU_ARRAY, 4, 8, layout.CT_CNT_MAX),
    "exec_heap": MapSpec(bpfsys.MAP_PERCPU_ARRAY, 4, ctypes.sizeof(layout.CtExecEvent), 1),
    "ns_calls": MapSpec(bpfsys.MAP_LRU_HASH, 4, _NS_CALL, 8192),
    "handed_on": MapSpec(bpfsys.MAP_LRU_HASH, 4, 4, 4096),
    "tracked": MapSpec(bpfsys.MAP_HASH, 4, 1, 32768),
    # the tunables: what the CO-RE object's .rodata is
    "config": MapSpec(bpfsys.MAP_ARRAY, 4, ctypes.sizeof(layout.CtConfig), 1,
                      bpfsys.BPF_F_RDONLY_PROG),
}


class Program(NamedTuple):
    name: str
    section: str  # as in the source: "raw_tp/sched_process_exec", "tracepoint/syscalls/..."


def source_dir() -> str:
    """The programs' text: $CTRTRACE_BPF_SOURCE, else installed with the
    package (tracer/bpf/src, which make -C bpf fills)."""
    env = os.environ.get("CTRTRACE_BPF_SOURCE")
    if env:
        return env
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.join(package, "bpf", "src")


_SEC = re.compile(r'^SEC\("([^"]+)"\)\s*\nint\s+(?:BPF_PROG\()?(\w+)', re.M)


def programs(text: str) -> list[Program]:
    """The programs and where each attaches, as the source's SEC() says."""
    return [Program(name, section) for section, name in _SEC.findall(text)]


# -- the build ------------------------------------------------------------------

def _read_sources(directory: str) -> dict[str, bytes]:
    out = {}
    try:
        for name in sorted(os.listdir(directory)):
            if name.endswith((".c", ".h")) and name != "vmlinux.h":
                with open(os.path.join(directory, name), "rb") as f:
                    out[name] = f.read()
    except OSError as e:
        raise CtrtraceError(f"cannot read the BPF programs' source in {directory}: "
                            f"{e.strerror}", ExitStatus.ENVIRONMENT) from None
    if SOURCE_NAME not in out:
        raise CtrtraceError(f"the BPF programs' source is missing ({directory}/{SOURCE_NAME}): "
                            "reinstall ctrtrace, or run 'make -C bpf'", ExitStatus.ENVIRONMENT)
    return out


def _bcc_version() -> str:
    """bcc's version, without importing it (a long import, and LLVM)."""
    import importlib.util

    spec = importlib.util.find_spec("bcc")
    if spec is None or not spec.origin:
        raise CtrtraceError(
            "the bcc backend needs bcc's Python module: install python3-bpfcc "
            "(Debian, Ubuntu) or python3-bcc, or use --backend core",
            ExitStatus.ENVIRONMENT)
    try:
        with open(os.path.join(os.path.dirname(spec.origin), "version.py")) as f:
            return f.read().strip()
    except OSError:
        return spec.origin


def _arch_flag() -> str:
    machine = os.uname().machine
    arch = {"x86_64": "x86", "aarch64": "arm64"}.get(machine)
    if arch is None:
        raise CtrtraceError(f"the bcc backend knows x86_64 and aarch64, not {machine}",
                            ExitStatus.ENVIRONMENT)
    return f"-D__TARGET_ARCH_{arch}"


class Build(NamedTuple):
    programs: dict[str, bytes]  # name -> instructions, map fds still placeholders
    cached: bool


class Offsets(NamedTuple):
    """Where the build takes the kernel's struct layouts from."""

    headers: bool      # the kernel's own headers (bcc's native way), not its BTF
    kernel_btf: bool   # the kernel has BTF (typed task pointers for the helpers)

    def describe(self, headers: kheaders.Headers) -> str:
        return f"headers {headers.version}" if self.headers else "btf"


def _cflags(source: str, layout_dir: str, headers: kheaders.Headers,
            offsets: Offsets) -> list[str]:
    return ["-DCT_BCC", _arch_flag(), f"-I{source}", f"-I{layout_dir}",
            *(["-DCT_KERNEL_HEADERS"] if offsets.headers else []),
            *([] if offsets.kernel_btf else ["-DCT_NO_KERNEL_BTF"]),
            *(f"-DCT_FD_{name}={PLACEHOLDER_FD + i}" for i, name in enumerate(MAPS)),
            *headers.cflags]


def _compile(source: str, names: list[str], headers: kheaders.Headers,
             offsets: Offsets) -> dict[str, bytes]:
    """bcc's compiler in a child: the instructions of each program."""
    import tempfile

    from . import kstructs
    from .btf import Btf, BtfError

    with tempfile.TemporaryDirectory(prefix="ctrtrace-bcc-") as tmp:
        if not offsets.headers:
            try:
                text = kstructs.header(Btf.of_kernel(corebtf.KERNEL_BTF))
            except BtfError as e:
                raise CtrtraceError(f"cannot lay out the kernel's structs from its BTF: {e}",
                                    ExitStatus.ENVIRONMENT) from None
            with open(os.path.join(tmp, "ct_kernel.h"), "w") as f:
                f.write(text)
        request = {"source": os.path.join(source, SOURCE_NAME), "programs": names,
                   "cflags": _cflags(source, tmp, headers, offsets), "env": headers.env}
        try:
            r = subprocess.run([sys.executable, "-m", "tracer.kernel.bcc_compile"],
                               input=json.dumps(request), capture_output=True, text=True,
                               timeout=COMPILE_TIMEOUT_S,
                               env={**os.environ, "PYTHONPATH": _package_root()})
        except subprocess.TimeoutExpired:
            raise CtrtraceError(f"bcc's compiler took more than {COMPILE_TIMEOUT_S} s",
                                ExitStatus.BPF) from None
    if r.returncode != 0:
        errors = [line for line in r.stderr.splitlines() if "error" in line.lower()]
        detail = "; ".join(errors[:3]) or (r.stderr.strip().splitlines() or [""])[-1]
        how = (f"was killed by signal {-r.returncode}" if r.returncode < 0
               else f"failed (exit status {r.returncode})")
        raise CtrtraceError(f"bcc's compiler {how}: {detail[:500]}", ExitStatus.BPF)
    try:
        out = jsonparse.loads(r.stdout)
        return {name: bytes.fromhex(out[name]) for name in names}
    except (*jsonparse.NOT_JSON, KeyError, TypeError):
        raise CtrtraceError("bcc's compiler gave no programs", ExitStatus.BPF) from None


def _package_root() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    parts = [root, os.environ.get("PYTHONPATH", "")]
    return os.pathsep.join(p for p in parts if p)


def parse_build(data: bytes, key: str, names: list[str]) -> dict[str, bytes] | None:
    """A cached build of ours for this key, whole; None otherwise."""
    try:
        magic, _, body = data.partition(b"\n")
        if magic.decode() != BUILD_FORMAT:
            return None
        doc = jsonparse.loads(body)
        if doc.get("key") != key or sorted(doc["programs"]) != sorted(names):
            return None
        progs = {name: bytes.fromhex(doc["programs"][name]) for name in names}
    except (*jsonparse.NOT_JSON, KeyError, TypeError, AttributeError):
        return None
    if any(not insns or len(insns) % 8 for insns in progs.values()):
        return None
    return progs


def build(source: str, headers: kheaders.Headers, offsets: Offsets, reuse: bool = True) -> Build:
    """The compiled programs: from the cache when this kernel, source and bcc
    were built before (and reuse), else compiled (and cached)."""
    sources = _read_sources(source)
    names = [p.name for p in programs(sources[SOURCE_NAME].decode())]
    from . import kstructs

    digest = hashlib.sha256()
    for name, data in sources.items():
        digest.update(name.encode() + b"\0" + data + b"\0")
    digest.update(repr((kstructs.FIELDS, kstructs.ENUMS, _bcc_version(), headers.version,
                        os.uname().machine, MAPS, offsets)).encode())
    try:
        kernel = corebtf.kernel_key()
    except OSError:  # no BTF: the kernel by its release and build
        uname = os.uname()
        kernel = hashlib.sha256(f"{uname.release} {uname.version}".encode()).hexdigest()[:16]
    key = f"{kernel}-{digest.hexdigest()[:24]}"
    directory = cache.directory() if key else None
    path = None
    if directory and cache.safe_dir(directory):
        path = os.path.join(directory, f"bcc-{key}.json")
        cached = cache.read(path, 16 << 20) if reuse else None
        progs = parse_build(cached, key, names) if cached is not None else None
        if progs is not None:
            return Build(progs, True)
    progs = _compile(source, names, headers, offsets)
    if path is not None:
        body = json.dumps({"key": key, "programs": {n: i.hex() for n, i in progs.items()}})
        blob = (BUILD_FORMAT + "\n" + body).encode()

        def fill(fd: int) -> bool:
            return os.write(fd, blob) == len(blob)

        cache.write(path, fill)
    return Build(progs, False)


def relocate(insns: bytes, fds: dict[str, int]) -> bytes:
    """The instructions with each map's placeholder replaced by its fd (in
    the ld_imm64 instructions that name a map or a map's value)."""
    by_placeholder = {PLACEHOLDER_FD + i: fds[name] for i, name in enumerate(MAPS)}
    code = bytearray(insns)
    for at in range(0, len(code) - 15, 8):
        if code[at] == 0x18 and (code[at + 1] >> 4) in (1, 2):  # BPF_LD|BPF_IMM|BPF_DW
            imm = int.from_bytes(code[at + 4:at + 8], "little")
            fd = by_placeholder.get(imm)
            if fd is not None:
                code[at + 4:at + 8] = fd.to_bytes(4, "little")
    return bytes(code)


# -- loaded programs --------------------------------------------------------------

class BccPrograms:
    """The maps, the loaded programs and their attachments: what a Session
    reads (the same questions as of a CO-RE BpfObject)."""

    backend = "bcc"

    def __init__(self, ringbuf_bytes: int) -> None:
        self._maps: dict[str, int] = {}
        self._sizes: dict[str, int] = {}
        self._progs: list[int] = []
        self._links: list[int] = []
        try:
            for name, spec in MAPS.items():
                size = ringbuf_bytes if name == "events" else spec.max_entries
                self._maps[name] = bpfsys.map_create(spec.kind, spec.key_size, spec.value_size,
                                                     size, name, spec.flags)
                self._sizes[name] = size
        except bpfsys.BpfSysError as e:
            self.close()
            raise CtrtraceError(f"cannot create the BPF maps: {e.strerror}", ExitStatus.BPF) \
                from None

    def configure(self, config: layout.CtConfig) -> None:
        fd = self._maps["config"]
        bpfsys.map_update(fd, bytes(4), bytes(config))
        bpfsys.map_freeze(fd)

    def load(self, build: Build, program_list: list[Program]) -> list[tuple[Program, int]]:
        """Loads every program, all at once: the verifier takes most of a
        second over each failed-exec program (bench/README.md), and the
        calls run in parallel.  Raises BpfSysError (with the verifier's log)
        on a refusal."""
        fds: dict[str, int] = {}
        errors: list[bpfsys.BpfSysError] = []

        def load_one(program: Program) -> None:
            insns = relocate(build.programs[program.name], self._maps)
            kind = (bpfsys.PROG_RAW_TRACEPOINT if program.section.startswith("raw_tp/")
                    else bpfsys.PROG_TRACEPOINT)
            try:
                try:
                    fds[program.name] = bpfsys.prog_load(kind, program.name, insns)
                except bpfsys.BpfSysError:
                    fds[program.name] = bpfsys.prog_load(kind, program.name, insns,
                                                         log_size=16 << 20)
            except bpfsys.BpfSysError as e:
                errors.append(e)

        threads = [threading.Thread(target=load_one, args=(p,), name="ctrtrace-verify")
                   for p in program_list]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self._progs.extend(fds.values())
        if errors:
            raise errors[0]
        return [(p, fds[p.name]) for p in program_list]

    def attach(self, loaded: list[tuple[Program, int]], tracefs: str) -> None:
        for program, fd in loaded:
            kind, _, target = program.section.partition("/")
            try:
                if kind == "raw_tp":
                    self._links.append(bpfsys.attach_raw_tracepoint(target, fd))
                else:
                    category, _, event = target.partition("/")
                    self._links.append(bpfsys.attach_tracepoint(tracefs, category, event, fd))
            except bpfsys.BpfSysError as e:
                raise CtrtraceError(f"cannot attach BPF program {program.name}: {e.strerror}",
                                    ExitStatus.BPF) from None

    # -- what a Session asks ---------------------------------------------------

    def map_fd(self, name: str) -> int:
        return self._maps[name]

    def max_entries(self, name: str) -> int:
        return self._sizes[name]

    def update(self, name: str, key: ctypes._SimpleCData, value: ctypes._SimpleCData) -> None:
        try:
            bpfsys.map_update(self._maps[name], bytes(key), bytes(value))
        except bpfsys.BpfSysError as e:
            raise CtrtraceError(f"cannot update map {name}: {e.strerror}", ExitStatus.BPF) \
                from None

    def percpu_sum(self, name: str, index: int) -> int:
        ncpu = bpfsys.possible_cpus()
        raw = bpfsys.map_lookup(self._maps[name], index.to_bytes(4, "little"), 8 * ncpu)
        return sum(int.from_bytes(raw[i:i + 8], "little") for i in range(0, 8 * ncpu, 8))

    def close(self) -> None:
        """Detach (all at once: each waits for an RCU grace period, and waits
        that overlap share them), then free the programs and maps."""
        links, self._links = self._links, []
        threads = [threading.Thread(target=os.close, args=(fd,)) for fd in links]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for fd in [*self._progs, *self._maps.values()]:
            try:
                os.close(fd)
            except OSError:
                pass
        self._progs = []
        self._maps = {}


OFFSETS_ENV = "CTRTRACE_BCC_OFFSETS"  # "btf" or "headers": which, when both could serve


def choose_offsets(headers: kheaders.Headers, btf_path: str | None = None) -> Offsets:
    """The kernel's BTF when it has it, else its own headers; the headers
    only if they are this kernel's (another's would be read at the wrong
    offsets, silently).  $CTRTRACE_BCC_OFFSETS=headers takes the headers
    even with BTF there."""
    has_btf = os.path.exists(btf_path or host.BTF_PATH)  # the path check_btf reads
    wanted = os.environ.get(OFFSETS_ENV, "")
    if wanted not in ("", "btf", "headers"):
        raise CtrtraceError(f"{OFFSETS_ENV} is btf or headers, not {wanted!r}", ExitStatus.USAGE)
    if has_btf and wanted != "headers":
        return Offsets(headers=False, kernel_btf=True)
    release = os.uname().release
    if not headers.running:
        why = ("this kernel has no BTF" if not has_btf
               else f"{OFFSETS_ENV}=headers asks for its headers")
        raise CtrtraceError(
            f"{why}, and the kernel headers found are {headers.version}'s, not {release}'s "
            f"(their struct offsets would be wrong): install linux-headers-{release}",
            ExitStatus.ENVIRONMENT)
    return Offsets(headers=True, kernel_btf=has_btf)


class BccLoader:
    """What loader.ProgramLoader is for CO-RE: checks the host now; builds,
    loads and attaches on a thread; result() waits."""

    backend = "bcc"

    def __init__(self, options: LoadConfig) -> None:
        self.options = options
        check_host(options)
        self.headers = kheaders.find()
        if self.headers is None:
            raise CtrtraceError(
                "the bcc backend needs kernel headers for its compiler: install "
                f"linux-headers-{os.uname().release} (or the nearest version), "
                "or use --backend core", ExitStatus.ENVIRONMENT)
        _bcc_version()  # bcc itself: its absence is said now, not after the compile
        self.offsets = choose_offsets(self.headers)
        self.tracefs = ensure_tracefs()
        self.source = source_dir()
        self.cached = False
        self.start_ktime_ns = 0
        self._programs: BccPrograms | None = None
        self._taken = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ctrtrace-bcc", daemon=True)
        self._thread.start()

    @property
    def layout(self) -> str:
        """Where the struct offsets came from."""
        assert self.headers is not None
        return self.offsets.describe(self.headers)

    def _run(self) -> None:
        try:
            self._load()
        except BaseException as e:  # raised again by result(), on the caller's thread
            self._error = e

    def _load(self) -> None:
        assert self.headers is not None
        built = build(self.source, self.headers, self.offsets)
        self.cached = built.cached
        with open(os.path.join(self.source, SOURCE_NAME)) as f:
            program_list = programs(f.read())
        rb_size = ringbuf_size(self.options.ringbuf_bytes)
        progs = self._programs = BccPrograms(rb_size)
        progs.configure(config_for(self.options, rb_size))
        try:
            loaded = progs.load(built, program_list)
        except bpfsys.BpfSysError as e:
            if not built.cached:
                raise _refused(e) from None
            # a cached build the kernel refuses is made again, once
            built = build(self.source, self.headers, self.offsets, reuse=False)
            self.cached = False
            try:
                loaded = progs.load(built, program_list)
            except bpfsys.BpfSysError as e2:
                raise _refused(e2) from None
        pid = self.options.filters.pid
        if pid is not None:
            # before attaching: the process's own events must pass the filter
            progs.update("tracked", ctypes.c_uint32(pid), ctypes.c_uint8(1))
        self.start_ktime_ns = time.monotonic_ns()  # what bpf_ktime_get_ns reads
        progs.attach(loaded, self.tracefs)

    def result(self) -> BccPrograms:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._programs is not None
        self._taken = True
        return self._programs

    def close(self) -> None:
        """Unload what nobody took."""
        self._thread.join()
        if self._programs is not None and not self._taken:
            self._programs.close()
            self._programs = None


def _refused(e: bpfsys.BpfSysError) -> CtrtraceError:
    tail = [line for line in e.log.splitlines() if line.strip()][-12:]
    detail = ("\n" + "\n".join("  " + line for line in tail)) if tail else ""
    return CtrtraceError(f"the kernel refused the BPF programs (bcc build): {e.strerror}{detail}",
                         ExitStatus.BPF)
