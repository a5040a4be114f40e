"""The kernel's types, read from raw BTF (/sys/kernel/btf/vmlinux).

One reader of the format: corebtf.py checks a cached subset with it, and it
gives the offset of a struct's field by name, as the running kernel lays it
out -- what a BPF program built without CO-RE (bcc compiles against
headers, whose offsets may be another kernel's) must be told.

The format (linux/btf.h): a header, then the types section, each type a
12-byte struct btf_type followed by what its kind adds, and the strings.
Type ids count from 1 in the order of the records (0 is void).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

KERNEL_BTF = "/sys/kernel/btf/vmlinux"
MAGIC = 0xEB9F

# struct btf_header: magic, version, flags, hdr_len; then type_off, type_len,
# str_off, str_len (offsets from the header's end)
_HEADER = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")      # name_off, info, size or type
_MEMBER = struct.Struct("<III")    # name_off, type, offset

INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
# bytes after struct btf_type, by kind: fixed, and per vlen item
_EXTRA = {
    INT: (4, 0), PTR: (0, 0), ARRAY: (12, 0), STRUCT: (0, 12), UNION: (0, 12), ENUM: (0, 8),
    FWD: (0, 0), TYPEDEF: (0, 0), VOLATILE: (0, 0), CONST: (0, 0), RESTRICT: (0, 0),
    FUNC: (0, 0), FUNC_PROTO: (0, 8), VAR: (4, 0), DATASEC: (0, 12), FLOAT: (0, 0),
    DECL_TAG: (4, 0), TYPE_TAG: (0, 0), ENUM64: (0, 12),
}
# kinds that only qualify or name another type: a field's struct is behind them
_ALIASES = {TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG}


class BtfError(ValueError):
    """Data that is not whole, well-formed BTF; or a type or field it lacks."""


@dataclass(frozen=True)
class Field:
    """Where a field is, from the start of the outermost struct named."""

    offset: int          # bytes
    bit_offset: int      # bits within that byte (a bitfield), else 0
    bitfield_size: int   # bits, for a bitfield; 0 otherwise
    type_id: int


class Btf:
    """A parsed BTF blob.  Raises BtfError for data that is not whole,
    well-formed BTF: its header, its sections within the data and ending with
    it, the type records filling their section, their names within the
    strings.  A kind newer than this list ends the walk (the types after it
    are not known here; the ones before are)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        if len(data) < _HEADER.size:
            raise BtfError("shorter than a BTF header")
        magic, version, _, hdr_len, type_off, type_len, str_off, str_len = _HEADER.unpack_from(data)
        if magic != MAGIC or version != 1 or hdr_len < _HEADER.size:
            raise BtfError("not BTF (magic, version or header length)")
        end = hdr_len + max(type_off + type_len, str_off + str_len)
        if end != len(data) or type_off % 4 or str_len == 0:
            raise BtfError("sections outside the data, or no strings")
        self._strings = hdr_len + str_off
        self._str_len = str_len
        if data[self._strings] != 0 or data[self._strings + str_len - 1] != 0:
            raise BtfError("the strings do not start and end with NUL")
        # offset of each type's record, by id (id 0: void, no record)
        self._at: list[int] = [0]
        off, stop = hdr_len + type_off, hdr_len + type_off + type_len
        while off < stop:
            if off + _TYPE.size > stop:
                raise BtfError("a type record cut off")
            name_off, info, _ = _TYPE.unpack_from(data, off)
            kind = info >> 24 & 0x1F
            extra = _EXTRA.get(kind)
            if extra is None:
                if kind < ENUM64:
                    raise BtfError(f"a type of kind {kind}")
                break  # a newer kind: the types before it are known, bpftool knows better
            if name_off >= str_len:
                raise BtfError("a type's name outside the strings")
            self._at.append(off)
            off += _TYPE.size + extra[0] + extra[1] * (info & 0xFFFF)
        else:
            if off != stop:
                raise BtfError("the type records overrun their section")
        self._structs: dict[str, int] | None = None

    @classmethod
    def of_kernel(cls, path: str = KERNEL_BTF) -> Btf:
        try:
            with open(path, "rb") as f:
                return cls(f.read())
        except OSError as e:
            raise BtfError(f"{path}: {e.strerror}") from None

    def __len__(self) -> int:
        """The number of types (void aside)."""
        return len(self._at) - 1

    def _name(self, name_off: int) -> str:
        start = self._strings + name_off
        return self.data[start:self.data.index(b"\0", start)].decode()

    def _type(self, type_id: int) -> tuple[int, int, int, int]:
        """(kind, vlen, size or type, record offset) of a type."""
        if not 0 < type_id < len(self._at):
            raise BtfError(f"no type {type_id}")
        at = self._at[type_id]
        _, info, size_or_type = _TYPE.unpack_from(self.data, at)
        return info >> 24 & 0x1F, info & 0xFFFF, size_or_type, at

    def struct_id(self, name: str) -> int:
        """The id of the struct (or union) of that name that has fields (a
        kernel's BTF has one; a forward declaration is not it)."""
        if self._structs is None:
            structs: dict[str, int] = {}
            for type_id in range(1, len(self._at)):
                kind, vlen, _, at = self._type(type_id)
                if kind in (STRUCT, UNION) and vlen:
                    name_off = _TYPE.unpack_from(self.data, at)[0]
                    if name_off:
                        structs.setdefault(self._name(name_off), type_id)
            self._structs = structs
        try:
            return self._structs[name]
        except KeyError:
            raise BtfError(f"no struct {name}") from None

    def _resolved(self, type_id: int) -> int:
        """The type behind typedefs and qualifiers."""
        for _ in range(32):
            kind, _, next_id, _ = self._type(type_id)
            if kind not in _ALIASES:
                return type_id
            type_id = next_id
        raise BtfError(f"type {type_id}: a chain of typedefs too long")

    def members(self, type_id: int) -> list[tuple[str, int, int, int]]:
        """(name, type id, bit offset, bitfield size) of a struct's or union's
        members, in order; an anonymous member's name is ''."""
        kind, vlen, _, at = self._type(self._resolved(type_id))
        if kind not in (STRUCT, UNION):
            raise BtfError(f"type {type_id} is not a struct or union")
        bitfields = bool(_TYPE.unpack_from(self.data, at)[1] >> 31)  # kind_flag
        out = []
        for i in range(vlen):
            name_off, member_type, offset = _MEMBER.unpack_from(self.data, at + 12 + 12 * i)
            size = offset >> 24 if bitfields else 0
            bits = offset & 0xFFFFFF if bitfields else offset
            out.append((self._name(name_off) if name_off else "", member_type, bits, size))
        return out

    def _find(self, type_id: int, name: str) -> tuple[int, int, int] | None:
        """(type id, bit offset, bitfield size) of a member, looking into
        anonymous structs and unions as C does."""
        for member, member_type, bits, size in self.members(type_id):
            if member == name:
                return member_type, bits, size
            if not member:
                kind = self._type(self._resolved(member_type))[0]
                if kind in (STRUCT, UNION):
                    inner = self._find(member_type, name)
                    if inner is not None:
                        return inner[0], bits + inner[1], inner[2]
        return None

    def member(self, type_id: int, name: str) -> tuple[int, int, int] | None:
        """(type id, bit offset, bitfield size) of a struct's member, found as
        C finds it (through anonymous members); None if it has none of that name."""
        return self._find(type_id, name)

    def field(self, path: str) -> Field:
        """Where STRUCT.FIELD[.FIELD...] is: the later names are fields of the
        struct (or union) the one before them is, embedded, not pointed to
        ("mnt_namespace.ns.inum").  BtfError if the kernel has no such field."""
        struct_name, *names = path.split(".")
        if not names:
            raise BtfError(f"{path}: name a field (struct.field)")
        type_id = self.struct_id(struct_name)
        bits = size = 0
        for i, name in enumerate(names):
            found = self._find(type_id, name)
            if found is None:
                raise BtfError(f"{'.'.join([struct_name, *names[:i]])} has no field {name}")
            type_id, member_bits, size = found
            bits += member_bits
        return Field(bits // 8, bits % 8, size, type_id)

    def offset(self, path: str) -> int:
        """The byte offset of a field that is not a bitfield."""
        f = self.field(path)
        if f.bitfield_size or f.bit_offset:
            raise BtfError(f"{path} is a bitfield")
        return f.offset

    def resolved(self, type_id: int) -> int:
        """The type behind typedefs and qualifiers (0: void)."""
        return self._resolved(type_id) if type_id else 0

    def kind(self, type_id: int) -> int:
        return self._type(type_id)[0] if type_id else 0

    def name_of(self, type_id: int) -> str:
        """A type's own name ('' for an anonymous one or void)."""
        if not type_id:
            return ""
        name_off = _TYPE.unpack_from(self.data, self._type(type_id)[3])[0]
        return self._name(name_off) if name_off else ""

    def size_of(self, type_id: int) -> int:
        """Bytes of an int, enum, struct or union (behind typedefs)."""
        kind, _, size, _ = self._type(self._resolved(type_id))
        if kind == PTR:
            return 8
        if kind == ARRAY:
            elem, count = self.array(type_id)
            return self.size_of(elem) * count
        if kind not in (INT, ENUM, ENUM64, STRUCT, UNION, FLOAT):
            raise BtfError(f"type {type_id} has no size of its own")
        return size

    def int_signed(self, type_id: int) -> bool:
        """Whether an int (behind typedefs) is signed; an enum, by its kind_flag."""
        kind, _, _, at = self._type(self._resolved(type_id))
        if kind == INT:
            return bool(struct.unpack_from("<I", self.data, at + 12)[0] >> 24 & 1)
        if kind in (ENUM, ENUM64):
            return bool(_TYPE.unpack_from(self.data, at)[1] >> 31)
        raise BtfError(f"type {type_id} is not an int or enum")

    def pointee(self, type_id: int) -> int:
        """The type a pointer (behind typedefs) points to."""
        kind, _, target, _ = self._type(self._resolved(type_id))
        if kind != PTR:
            raise BtfError(f"type {type_id} is not a pointer")
        return target

    def array(self, type_id: int) -> tuple[int, int]:
        """(element type, count) of an array (behind typedefs)."""
        kind, _, _, at = self._type(self._resolved(type_id))
        if kind != ARRAY:
            raise BtfError(f"type {type_id} is not an array")
        elem, _, count = struct.unpack_from("<III", self.data, at + 12)
        return elem, count

    def enum_value(self, name: str) -> int | None:
        """The value of an enumerator, by its name, in any enum; None if none has it."""
        for type_id in range(1, len(self._at)):
            kind, vlen, _, at = self._type(type_id)
            if kind == ENUM:
                for i in range(vlen):
                    name_off, value = struct.unpack_from("<Ii", self.data, at + 12 + 8 * i)
                    if self._name(name_off) == name:
                        return value
        return None

    def has(self, path: str) -> bool:
        try:
            self.field(path)
        except BtfError:
            return False
        return True


def valid(data: bytes) -> bool:
    """Whether data is whole, well-formed BTF (see Btf)."""
    try:
        Btf(data)
    except BtfError:
        return False
    return True
