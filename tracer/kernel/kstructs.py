"""The kernel structs the programs read, declared for bcc as the running
kernel lays them out.

bcc compiles against headers, and the headers at hand may be another
kernel's (kheaders.py): their struct layouts would be read at the wrong
offsets, silently.  So under bcc the programs are given ct_kernel.h instead:
each struct they read, with just the fields they read, every field at the
offset the running kernel's BTF gives it (btf.py) and the struct at its size.
Each field sits behind padding in a member struct of an anonymous union,
and the header asserts every offset, so a declaration the compiler lays out
otherwise does not compile.  It also says which of the fields that kernels
rename or lack this one has (CT_HAS_<struct>_<field>), where the bitfields
are (CT_BITFIELD_<field>: bit offset, bits) and an enum value
(CT_ENUM_<name>, -1 when the kernel has none): what compat.bpf.h decides by.

FIELDS lists what the programs read; a field missing from it is a compile
error under bcc, never a wrong read.
"""

from __future__ import annotations

from collections.abc import Iterable

from . import btf as btfmod
from .btf import Btf, BtfError

# struct -> its fields as the programs name them; "a.b" reads b inside the
# embedded a; "?" marks what some kernels lack (declared when present);
# "!" a bitfield
FIELDS: dict[str, tuple[str, ...]] = {
    "task_struct": ("tgid", "pid", "real_parent", "group_leader", "real_cred", "start_time",
                    "thread_pid", "comm", "nsproxy", "cgroups", "signal", "mm", "children",
                    "flags", "exit_code", "thread_info.status?", "thread_info.flags?",
                    "thread_node?", "thread_group?"),
    "cred": ("uid.val", "gid.val", "user_ns"),
    "signal_struct": ("live.counter", "is_child_subreaper!", "has_child_subreaper!",
                      "thread_head?"),
    "upid": ("nr", "ns"),  # before pid, whose numbers[] it is
    "pid": ("level", "numbers"),
    "pid_namespace": ("ns.inum", "child_reaper"),
    "nsproxy": ("mnt_ns", "uts_ns", "ipc_ns", "pid_ns_for_children", "net_ns", "cgroup_ns",
                "time_ns?", "time_ns_for_children?"),
    "uid_gid_extent": ("first", "lower_first", "count"),  # before uid_gid_map's extent[]
    "uid_gid_map": ("nr_extents", "extent", "reverse"),  # before user_namespace's maps
    "user_namespace": ("ns.inum", "level", "uid_map", "gid_map"),
    "mnt_namespace": ("ns.inum",),
    "uts_namespace": ("ns.inum",),
    "ipc_namespace": ("ns.inum",),
    "net": ("ns.inum",),
    "cgroup_namespace": ("ns.inum",),
    "time_namespace": ("ns.inum",),
    "css_set": ("dfl_cgrp", "subsys"),
    "cgroup_subsys_state": ("cgroup",),
    "cgroup": ("level", "kn"),
    "kernfs_node": ("id", "name", "__parent?", "parent?"),
    "mm_struct": ("arg_start", "arg_end"),
    "linux_binprm": ("filename",),
    # a syscall's number and arguments, where they are on x86 and on arm64
    "pt_regs": ("orig_ax?", "di?", "si?", "dx?", "syscallno?", "orig_x0?", "regs?"),
}
# structs of bcc's prelude that fields here embed or point to: declared there,
# with a layout that has not changed in the kernel's history
PRELUDE = frozenset({"list_head"})
ENUMS = ("memory_cgrp_id",)

_INTS = {(1, False): "__u8", (1, True): "__s8", (2, False): "__u16", (2, True): "__s16",
         (4, False): "__u32", (4, True): "__s32", (8, False): "__u64", (8, True): "__s64"}


def _ident(name: str) -> str:
    return name.replace(".", "_")


class _Writer:
    def __init__(self, kernel: Btf) -> None:
        self.btf = kernel

    def declarator(self, type_id: int, name: str, subfields: list[str], where: str) -> str:
        """C declaration of a member of this type (subfields: what is read inside it)."""
        b = self.btf
        t = b.resolved(type_id)
        kind = b.kind(t)
        if kind == btfmod.INT:
            size = b.size_of(t)
            if size == 1 and b.name_of(t) == "char":
                return f"char {name}"
            return f"{_INTS[size, b.int_signed(t)]} {name}"
        if kind in (btfmod.ENUM, btfmod.ENUM64):
            return f"{_INTS[b.size_of(t), b.int_signed(t)]} {name}"
        if kind == btfmod.PTR:
            target = b.resolved(b.pointee(t))
            tkind = b.kind(target)
            if tkind in (btfmod.STRUCT, btfmod.UNION, btfmod.FWD) and b.name_of(target):
                word = "union" if tkind == btfmod.UNION else "struct"
                return f"{word} {b.name_of(target)} *{name}"
            if tkind == btfmod.INT and b.size_of(target) == 1:
                return f"char *{name}"
            return f"void *{name}"
        if kind == btfmod.ARRAY:
            elem, count = b.array(t)
            # a flexible array stays one: indexed at run time
            return self.declarator(elem, f"{name}[{count}]", subfields, where)
        if kind in (btfmod.STRUCT, btfmod.UNION):
            tname = b.name_of(t)
            if tname in FIELDS or tname in PRELUDE:
                return f"struct {tname} {name}"
            if not subfields:
                raise BtfError(f"{where}: say which fields of it are read")
            body = self.body(t, [(f, False) for f in subfields], where)
            return f"struct {{ {body} }} {name}"
        raise BtfError(f"{where}: a type ctrtrace cannot declare (kind {kind})")

    def body(self, struct_id: int, fields: list[tuple[str, bool]], where: str,
             size: int | None = None) -> str:
        """The members of a struct laid out at their offsets: a union of padded
        structs, one per field, and the struct's size."""
        grouped: dict[str, list[str]] = {}
        for path, _ in fields:
            head, _, rest = path.partition(".")
            grouped.setdefault(head, [])
            if rest:
                grouped[head].append(rest)
        parts = []
        for head, sub in grouped.items():
            type_id, bits, _ = self._member(struct_id, head, where)
            decl = self.declarator(type_id, head, sub, f"{where}.{head}")
            parts.append(f"struct {{ char __at_{head}[{bits // 8}]; {decl}; }};")
        if size is not None:
            parts.append(f"char __size[{size}];")
        return "union { " + " ".join(parts) + " };"

    def _member(self, struct_id: int, name: str, where: str) -> tuple[int, int, int]:
        found = self.btf.member(struct_id, name)
        if found is None:
            raise BtfError(f"{where} has no field {name}")
        return found


def header(kernel: Btf, fields: dict[str, tuple[str, ...]] = FIELDS,
           enums: Iterable[str] = ENUMS) -> str:
    """ct_kernel.h for this kernel.  BtfError if it lacks a field that is not optional."""
    w = _Writer(kernel)
    out = ["/* The kernel structs ctrtrace's programs read, as this kernel lays them out:",
           " * made from its BTF by tracer/kernel/kstructs.py. */",
           "#ifndef CT_KERNEL_H", "#define CT_KERNEL_H", ""]
    out += [f"struct {name};" for name in fields]
    out.append("")
    asserts = []
    for name, paths in fields.items():
        struct_id = kernel.struct_id(name)
        present: list[tuple[str, bool]] = []
        for spec in paths:
            path = spec.rstrip("?!")
            optional, bitfield = spec.endswith("?"), spec.endswith("!")
            has = kernel.has(f"{name}.{path}")
            if optional:
                out.append(f"#define CT_HAS_{name}_{_ident(path)} {int(has)}")
            if not has:
                if optional:
                    continue
                raise BtfError(f"this kernel's {name} has no field {path}")
            f = kernel.field(f"{name}.{path}")
            if bitfield:
                out.append(f"#define CT_BITFIELD_{path} {f.offset * 8 + f.bit_offset}, "
                           f"{f.bitfield_size}")
                continue
            present.append((path, optional))
            asserts.append(f"_Static_assert(__builtin_offsetof(struct {name}, {path}) == "
                           f"{f.offset}, \"{name}.{path}\");")
        size = kernel.size_of(struct_id)
        out.append(f"struct {name} {{ {w.body(struct_id, present, name, size)} }};")
        asserts.append(f"_Static_assert(sizeof(struct {name}) == {size}, \"sizeof {name}\");")
    out.append("")
    for enum in enums:
        value = kernel.enum_value(enum)
        out.append(f"#define CT_ENUM_{enum} {-1 if value is None else value}")
    out += ["", *asserts, "", "#endif", ""]
    return "\n".join(out)
