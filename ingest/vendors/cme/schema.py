"""The CME MDP 3.0 SBE schema read from its XML: one numpy structured dtype per root block and group.

Nothing about a template's layout is written by hand: every offset, width, null value, price
exponent, ``blockLength`` and ``sinceVersion`` comes from the schema file, read once at start.
The decoder (`streamctl.ingest.vendors.cme.decoder`) gathers wire blocks into these dtypes; the
encoder writes them back, so both sides share one reading of the schema.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Field", "Block", "Group", "Template", "Schema", "load_schema", "BUNDLED_SCHEMA", "DIMENSIONS"]

BUNDLED_SCHEMA = Path(__file__).with_name("templates_FixBinary.xml")
"""CME's schema id 1 version 9 (see ``docs/cme.md`` for its origin and licence)."""

_PRIMITIVES = {
    "char": ("S1", 1), "int8": ("<i1", 1), "uint8": ("<u1", 1), "int16": ("<i2", 2), "uint16": ("<u2", 2),
    "int32": ("<i4", 4), "uint32": ("<u4", 4), "int64": ("<i8", 8), "uint64": ("<u8", 8),
}

DIMENSIONS = {
    # dimensionType -> (header size, numInGroup offset, numInGroup width)
    "groupSize": (3, 2, 1),
    "groupSize8Byte": (8, 7, 1),
    "groupSizeEncoding": (4, 2, 2),
}
"""Group header layouts: ``u16 blockLength`` first, then ``numInGroup`` at the given offset."""


@dataclass(frozen=True)
class Field:
    """One wire field of a block (composites are flattened to ``Field.member`` names)."""

    name: str
    dtype: str
    offset: int
    size: int
    since_version: int
    null: int | bytes | None
    """The value that means 'no value' (optional fields), else None."""
    exponent: int | None = None
    """Decimal exponent of a price/decimal mantissa (e.g. -9 for PRICE9, -7 for PRICE)."""


@dataclass(frozen=True)
class Block:
    """A fixed-size block (a root or one group entry) and its numpy view."""

    block_length: int
    fields: tuple[Field, ...]
    constants: dict[str, str | int]
    dtype: np.dtype = field(init=False)
    null_row: bytes = field(init=False)
    """A whole block with every field at its null value (absent fields read as this)."""

    def __post_init__(self) -> None:
        dtype = np.dtype({
            "names": [f.name for f in self.fields],
            "formats": [f.dtype for f in self.fields],
            "offsets": [f.offset for f in self.fields],
            "itemsize": self.block_length,
        })
        row = np.zeros(1, dtype)
        for f in self.fields:
            if f.null is not None:
                row[f.name] = f.null
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "null_row", row.tobytes())


@dataclass(frozen=True)
class Group(Block):
    name: str = ""
    dimension: str = "groupSize"
    since_version: int = 0


@dataclass(frozen=True)
class Template:
    id: int
    name: str
    since_version: int
    root: Block
    groups: tuple[Group, ...]


@dataclass(frozen=True)
class Schema:
    id: int
    version: int
    templates: dict[int, Template]
    path: Path

    def template(self, template_id: int) -> Template:
        try:
            return self.templates[template_id]
        except KeyError:
            raise KeyError(f"template {template_id} is not in the schema {self.path}") from None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _int_or_bytes(value: str, primitive: str) -> int | bytes:
    return value.encode() if primitive == "char" else int(value)


class _Types:
    """Resolves a field's ``type`` attribute to wire members (name suffix, dtype, offset, null, exponent)."""

    def __init__(self, types: ET.Element):
        self.simple: dict[str, ET.Element] = {}
        self.composite: dict[str, ET.Element] = {}
        self.encoded: dict[str, str] = {}  # enum/set name -> encodingType
        for el in types:
            kind, name = _local(el.tag), el.get("name", "")
            if kind == "type":
                self.simple[name] = el
            elif kind == "composite":
                self.composite[name] = el
            elif kind in ("enum", "set"):
                self.encoded[name] = el.get("encodingType", "")

    def constant(self, type_name: str) -> str | None:
        el = self.simple.get(type_name)
        if el is not None and el.get("presence") == "constant":
            return (el.text or "").strip()
        return None

    def _simple(self, el: ET.Element) -> tuple[str, int, int | bytes | None]:
        primitive = el.get("primitiveType", "")
        code, width = _PRIMITIVES[primitive]
        length = int(el.get("length", "1"))
        if primitive == "char" and length > 1:
            code, width = f"S{length}", length
        null_text = el.get("nullValue")
        null = _int_or_bytes(null_text, primitive) if el.get("presence") == "optional" and null_text else None
        return code, width, null

    def members(self, type_name: str) -> list[tuple[str, str, int, int, int | bytes | None, int | None]]:
        """(suffix, dtype, offset within the field, size, null, exponent) of each wire member."""
        if type_name in self.encoded:
            type_name = self.encoded[type_name]
        if type_name in _PRIMITIVES:  # an enum encoded straight on a primitive (e.g. uint8)
            code, width = _PRIMITIVES[type_name]
            return [("", code, 0, width, None, None)]
        if type_name in self.simple:
            code, width, null = self._simple(self.simple[type_name])
            return [("", code, 0, width, null, None)]
        comp = self.composite[type_name]
        exponent = None
        wire: list[tuple[str, str, int, int, int | bytes | None]] = []
        offset = 0
        for member in comp:
            if member.get("presence") == "constant":
                if member.get("name") == "exponent":
                    exponent = int((member.text or "0").strip())
                continue
            if member.get("offset") is not None:
                offset = int(member.get("offset", "0"))
            code, width, null = self._simple(member)
            wire.append((member.get("name", ""), code, offset, width, null))
            offset += width
        if exponent is not None and len(wire) == 1 and wire[0][0] == "mantissa":
            return [("", wire[0][1], 0, wire[0][3], wire[0][4], exponent)]
        return [(f".{name}", code, off, width, null, None) for name, code, off, width, null in wire]


def _block(elements: list[ET.Element], block_length: int, types: _Types) -> tuple[list[Field], dict[str, str | int]]:
    fields: list[Field] = []
    constants: dict[str, str | int] = {}
    offset = 0
    for el in elements:
        name, type_name = el.get("name", ""), el.get("type", "")
        const = types.constant(type_name)
        if const is not None or el.get("presence") == "constant":
            constants[name] = const if const is not None else (el.text or "").strip()
            continue
        if el.get("offset") is not None:
            offset = int(el.get("offset", "0"))
        since = int(el.get("sinceVersion", "0"))
        size = 0
        for suffix, code, off, width, null, exponent in types.members(type_name):
            fields.append(Field(name + suffix, code, offset + off, width, since, null, exponent))
            size = max(size, off + width)
        offset += size
    if fields and max(f.offset + f.size for f in fields) > block_length:
        raise ValueError(f"fields past blockLength {block_length}: {[f.name for f in fields]}")
    return fields, constants


def load_schema(path: str | Path = BUNDLED_SCHEMA) -> Schema:
    """Read an MDP 3.0 SBE schema XML; raises ValueError naming the file on anything unreadable."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise ValueError(f"`schema` {path} cannot be read: {exc}") from None
    types_el = next((el for el in root if _local(el.tag) == "types"), None)
    if types_el is None:
        raise ValueError(f"`schema` {path} has no <types>")
    types = _Types(types_el)
    templates: dict[int, Template] = {}
    for msg in root:
        if _local(msg.tag) != "message":
            continue
        fields = [el for el in msg if _local(el.tag) == "field"]
        root_fields, root_consts = _block(fields, int(msg.get("blockLength", "0")), types)
        groups = []
        for g in (el for el in msg if _local(el.tag) == "group"):
            g_fields, g_consts = _block([el for el in g if _local(el.tag) == "field"], int(g.get("blockLength", "0")),
                                        types)
            groups.append(Group(int(g.get("blockLength", "0")), tuple(g_fields), g_consts, name=g.get("name", ""),
                                dimension=g.get("dimensionType", "groupSize"),
                                since_version=int(g.get("sinceVersion", "0"))))
        tid = int(msg.get("id", "0"))
        templates[tid] = Template(tid, msg.get("name", ""), int(msg.get("sinceVersion", "0")),
                                  Block(int(msg.get("blockLength", "0")), tuple(root_fields), root_consts),
                                  tuple(groups))
    return Schema(int(root.get("id", "0")), int(root.get("version", "0")), templates, path)
