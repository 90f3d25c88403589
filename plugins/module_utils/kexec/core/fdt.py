# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Device trees, stdlib only: read and write flattened trees (DTB), edit ``/chosen``.

arm64 and ppc64 kernels get their hardware description from a device tree, and a kexec loader
must hand the next kernel one: the running kernel's own (``/sys/firmware/fdt``, or
``/proc/device-tree`` flattened again by ``fdt_fs``) with ``/chosen`` rewritten for the new
command line, initrd, seeds and crash-kernel ranges.  libfdt and dtc would do, but host-side code
is stdlib only, so this module holds the tree as plain values and implements chapter 5
"Flattened Devicetree (DTB) Format" of the Devicetree Specification v0.4.

Malformed blobs raise ``ImageFormatError`` naming what is wrong and where; the reader walks the
structure block iteratively and caps nesting, so hostile input costs time linear in its size.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ..errors import ImageFormatError

FDT_MAGIC = 0xD00DFEED
FDT_BEGIN_NODE = 0x1
FDT_END_NODE = 0x2
FDT_PROP = 0x3
FDT_NOP = 0x4
FDT_END = 0x9

#: The version we write and the oldest a reader of ours must understand (spec 5.2).
FDT_VERSION = 17
FDT_LAST_COMP_VERSION = 16

#: The kernel's unflatten_dt_nodes() refuses trees nested deeper than FDT_MAX_DEPTH (64).
MAX_DEPTH = 64

# Header fields in order (spec 5.2, all big-endian u32); v16 lacks size_dt_struct.
_HEADER_FIELDS = ("magic", "totalsize", "off_dt_struct", "off_dt_strings", "off_mem_rsvmap",
                  "version", "last_comp_version", "boot_cpuid_phys", "size_dt_strings",
                  "size_dt_struct")
HEADER_SIZE_V16 = 36
HEADER_SIZE_V17 = 40

# The kernel's defaults when the root lacks #address-cells/#size-cells
# (OF_ROOT_NODE_ADDR_CELLS_DEFAULT and _SIZE_ in drivers/of/of_private.h, 1 on arm64 and powerpc).
# The spec (2.3.5) says 2 and 1; Linux is the reader of what we write, so its rule wins.
DEFAULT_ADDRESS_CELLS = 1
DEFAULT_SIZE_CELLS = 1


def _align4(value):
    return (value + 3) & ~3


def _cells_to_int(data, count, what):
    """of_read_number(): ``count`` big-endian u32 cells as one integer."""
    if count < 0 or count > 4 or len(data) != 4 * count:
        raise ImageFormatError("%s: %d bytes cannot be read as %d cells" % (what, len(data), count))
    return int.from_bytes(data, "big") if data else 0


def _int_to_cells(value, count, what):
    if not isinstance(value, int) or value < 0 or value >> (32 * count):
        raise ImageFormatError("%s: %r does not fit in %d 32-bit cells (the tree's #address-cells/"
                               "#size-cells)" % (what, value, count))
    return value.to_bytes(4 * count, "big")


class Property:
    """One property: a name and its raw big-endian bytes, with typed readers and constructors."""

    __slots__ = ("name", "value")

    def __init__(self, name, value=b""):
        self.name = name
        self.value = bytes(value)

    def __eq__(self, other):
        return isinstance(other, Property) and (self.name, self.value) == (other.name, other.value)

    def __repr__(self):
        return "Property(%r, %r)" % (self.name, self.value)

    def cells(self, per_value=1):
        """The value as a list of integers of ``per_value`` cells each (``<...>`` in dts)."""
        step = 4 * per_value
        if per_value < 1 or len(self.value) % step:
            raise ImageFormatError("property %s is %d bytes, not a list of %d-cell values"
                                   % (self.name, len(self.value), per_value))
        return [int.from_bytes(self.value[i:i + step], "big") for i in range(0, len(self.value), step)]

    def u32(self):
        """A single u32 (``#address-cells``, ``phandle``...); any other length is an error."""
        return self._single(4)

    def u64(self):
        """A single u64 (``kaslr-seed``); any other length is an error."""
        return self._single(8)

    def number(self):
        """The value as one number of len/4 cells, as early_init_dt_check_for_initrd() reads it."""
        return _cells_to_int(self.value, len(self.value) // 4, "property " + self.name)

    def _single(self, size):
        if len(self.value) != size:
            raise ImageFormatError("property %s is %d bytes, expected %d" % (self.name, len(self.value), size))
        return int.from_bytes(self.value, "big")

    def strings(self):
        """A string list (``compatible``): NUL-terminated strings back to back."""
        if not self.value.endswith(b"\0"):
            raise ImageFormatError("property %s is not a NUL-terminated string" % self.name)
        return [s.decode("latin-1") for s in self.value[:-1].split(b"\0")]

    def string(self):
        """A single string (``bootargs``, ``stdout-path``)."""
        values = self.strings()
        if len(values) != 1:
            raise ImageFormatError("property %s holds %d strings, expected one" % (self.name, len(values)))
        return values[0]

    @classmethod
    def from_cells(cls, name, values, per_value=1):
        return cls(name, b"".join(_int_to_cells(v, per_value, "property " + name) for v in values))

    @classmethod
    def from_u32(cls, name, *values):
        return cls.from_cells(name, values, 1)

    @classmethod
    def from_u64(cls, name, *values):
        return cls.from_cells(name, values, 2)

    @classmethod
    def from_strings(cls, name, *values):
        return cls(name, b"".join(v.encode("latin-1") + b"\0" for v in values))


class Node:
    """A node: its name with the unit address (``memory@40000000``), properties, children.

    Properties and children keep their order (the order of the blob or directory) and their
    names are unique within a node, as spec 2.2.1 and 2.2.4 require; a node does not know its
    parent, so a tree is a plain value that compares and prints without cycles.
    """

    __slots__ = ("name", "_props", "_children")

    def __init__(self, name="", properties=(), children=()):
        self.name = name
        self._props = {}
        self._children = {}
        for prop in properties:
            self.add_property(prop)
        for child in children:
            self.add_child(child)

    @property
    def properties(self):
        return list(self._props.values())

    @property
    def children(self):
        return list(self._children.values())

    @property
    def basename(self):
        """The name without its unit address: ``memory`` for ``memory@0``."""
        return self.name.split("@", 1)[0]

    def prop(self, name):
        """The Property called ``name``, or None."""
        return self._props.get(name)

    def add_property(self, prop):
        if prop.name in self._props:
            raise ImageFormatError("node %r has two properties called %r" % (self.name, prop.name))
        self._props[prop.name] = prop
        return prop

    def set(self, name, value):
        """Set a property's raw bytes; an existing one keeps its place in the order."""
        self._props[name] = Property(name, value)
        return self._props[name]

    def set_u32(self, name, *values):
        return self.set(name, Property.from_u32(name, *values).value)

    def set_u64(self, name, *values):
        return self.set(name, Property.from_u64(name, *values).value)

    def set_strings(self, name, *values):
        return self.set(name, Property.from_strings(name, *values).value)

    set_string = set_strings

    def remove(self, name):
        """Remove a property; True if it was there."""
        return self._props.pop(name, None) is not None

    def child(self, name):
        """The child called exactly ``name``, or None."""
        return self._children.get(name)

    def find_child(self, name):
        """fdt_subnode_offset() matching: the exact name, or a child whose name before '@' is it."""
        found = self._children.get(name)
        if found is None and "@" not in name:
            found = next((c for c in self._children.values() if c.basename == name), None)
        return found

    def add_child(self, node):
        if node.name in self._children:
            raise ImageFormatError("node %r has two children called %r" % (self.name, node.name))
        self._children[node.name] = node
        return node

    def remove_child(self, name):
        """Remove a child node (and its subtree); True if it was there."""
        return self._children.pop(name, None) is not None

    def reg(self, address_cells, size_cells):
        """``reg`` as (address, size) pairs under the parent's cells; size None if #size-cells is 0."""
        prop = self.prop("reg")
        return [] if prop is None else decode_ranges(prop, address_cells, size_cells)

    def __eq__(self, other):
        pairs = [(self, other)]
        while pairs:  # iterative: a deep tree must not exhaust the recursion limit
            mine, theirs = pairs.pop()
            if not isinstance(theirs, Node) or mine.name != theirs.name \
                    or mine.properties != theirs.properties \
                    or list(mine._children) != list(theirs._children):
                return False
            pairs.extend(zip(mine.children, theirs.children))
        return True

    def __repr__(self):
        return "Node(%r, %d properties, %d children)" % (self.name, len(self._props), len(self._children))

    def to_dict(self):
        """JSON-ready: ``{"name", "properties": {name: hex}, "children": [...]}``."""
        out = {}
        todo = [(self, out)]
        while todo:
            node, into = todo.pop()
            into.update(name=node.name, properties=dict((p.name, p.value.hex()) for p in node.properties),
                        children=[{} for _child in node._children])
            todo.extend(zip(node.children, into["children"]))
        return out


def decode_ranges(prop, address_cells, size_cells):
    """(address, size) pairs of a reg-style property; size is None when size_cells is 0."""
    if address_cells > 4 or size_cells > 4:
        raise ImageFormatError("property %s: #address-cells %d / #size-cells %d are not plausible"
                               % (prop.name, address_cells, size_cells))
    step = 4 * (address_cells + size_cells)
    if step == 0 or len(prop.value) % step:
        raise ImageFormatError("property %s is %d bytes, not a list of (%d address + %d size) cells"
                               % (prop.name, len(prop.value), address_cells, size_cells))
    out = []
    for at in range(0, len(prop.value), step):
        mid = at + 4 * address_cells
        address = _cells_to_int(prop.value[at:mid], address_cells, prop.name)
        size = _cells_to_int(prop.value[mid:at + step], size_cells, prop.name) if size_cells else None
        out.append((address, size))
    return out


def encode_ranges(name, ranges, address_cells, size_cells):
    """The bytes of a reg-style property from (address, size) pairs."""
    return b"".join(_int_to_cells(a, address_cells, name + " address") + _int_to_cells(s, size_cells, name + " size")
                    for a, s in ranges)


class DeviceTree:
    """A whole tree: the root node, the memory reservation block and ``boot_cpuid_phys``.

    ``reservations`` are (address, size) pairs: the regions the next kernel must not touch
    (spec 5.3), e.g. where a loader put the DTB itself on ppc64.
    """

    def __init__(self, root=None, reservations=(), boot_cpuid_phys=0):
        self.root = Node("") if root is None else root
        self.reservations = [(int(a), int(s)) for a, s in reservations]
        self.boot_cpuid_phys = boot_cpuid_phys

    def __eq__(self, other):
        return isinstance(other, DeviceTree) and self.root == other.root \
            and self.reservations == other.reservations and self.boot_cpuid_phys == other.boot_cpuid_phys

    def to_dict(self):
        return {"boot_cpuid_phys": self.boot_cpuid_phys,
                "reservations": [list(r) for r in self.reservations], "root": self.root.to_dict()}

    def walk(self):
        """Every (path, node), parents before children, in tree order."""
        todo = [("/", self.root)]
        while todo:
            path, node = todo.pop()
            yield path, node
            base = path.rstrip("/")
            todo.extend(reversed([(base + "/" + c.name, c) for c in node.children]))

    def alias(self, name):
        """The path ``/aliases/<name>`` points to, or None."""
        aliases = self.root.child("aliases")
        prop = aliases.prop(name) if aliases is not None else None
        return prop.string() if prop is not None else None

    def _resolve(self, path):
        """fdt_path_offset(): a path may start with an alias instead of '/'."""
        if path.startswith("/"):
            return path
        first, _sep, rest = path.partition("/")
        target = self.alias(first)
        if target is None or not target.startswith("/"):
            return None
        return target.rstrip("/") + ("/" + rest if rest else "")

    def node(self, path, create=False):
        """The node at ``path`` (or ``alias/rest``), or None; ``create`` adds missing nodes."""
        resolved = self._resolve(path)
        if resolved is None:
            if create:
                raise ImageFormatError("cannot create %r: not an absolute path or a known alias" % path)
            return None
        node = self.root
        for part in [p for p in resolved.split("/") if p]:
            found = node.find_child(part)
            if found is None:
                if not create:
                    return None
                found = node.add_child(Node(part))
            node = found
        return node

    def by_phandle(self, phandle):
        """The node whose ``phandle`` (or old ``linux,phandle``) is ``phandle``, or None."""
        for _path, node in self.walk():
            for name in ("phandle", "linux,phandle"):
                prop = node.prop(name)
                if prop is not None and len(prop.value) == 4 and prop.u32() == phandle:
                    return node
        return None

    def _chain(self, path):
        """The nodes from the root down to ``path``; ImageFormatError if there is no such node."""
        resolved = self._resolve(path)
        chain = [self.root]
        for part in [p for p in (resolved or "").split("/") if p]:
            chain.append(chain[-1].find_child(part))
            if chain[-1] is None:
                break
        if resolved is None or chain[-1] is None:
            raise ImageFormatError("the device tree has no node %s" % path)
        return chain

    @staticmethod
    def _cells(chain):
        # of_n_addr_cells()/of_n_size_cells(): the nearest node up the chain that sets them
        found = {}
        for node in reversed(chain):
            for key in ("#address-cells", "#size-cells"):
                if key not in found and node.prop(key) is not None:
                    found[key] = node.prop(key).u32()
        return found.get("#address-cells", DEFAULT_ADDRESS_CELLS), found.get("#size-cells", DEFAULT_SIZE_CELLS)

    def child_cells(self, path):
        """(#address-cells, #size-cells) the node at ``path`` sets for its children's ``reg``;
        a node without them inherits from its ancestors, the root falls back to the defaults."""
        return self._cells(self._chain(path))

    def root_cells(self):
        """The root's cells, as early_init_dt_scan_root() reads them for /chosen and memory."""
        return self._cells([self.root])

    def reg(self, path):
        """(address, size) pairs of the node's ``reg`` in its parent bus's cells (no ``ranges``
        translation: on the machines we load, memory and the console UART sit on the root bus)."""
        chain = self._chain(path)
        return chain[-1].reg(*self._cells(chain[:-1])) if len(chain) > 1 else []

    def memory(self):
        """RAM the tree describes, as early_init_dt_scan_memory() finds it: the root's children
        with device_type "memory" (``linux,usable-memory`` over ``reg``, disabled nodes skipped)."""
        address_cells, size_cells = self.root_cells()
        out = []
        for node in self.root.children:
            kind, status = node.prop("device_type"), node.prop("status")
            if kind is None or kind.value.rstrip(b"\0") != b"memory" \
                    or (status is not None and status.value.rstrip(b"\0") not in (b"okay", b"ok")):
                continue
            prop = node.prop("linux,usable-memory") or node.prop("reg")
            if prop is not None:
                out.extend(r for r in decode_ranges(prop, address_cells, size_cells) if r[1])
        return out

    def reserved_memory(self):
        """(name, address, size) of each ``/reserved-memory`` child with a static ``reg``."""
        parent = self.root.child("reserved-memory")
        if parent is None:
            return []
        address_cells, size_cells = self.child_cells("/reserved-memory")
        return [(child.name, a, s) for child in parent.children for a, s in child.reg(address_cells, size_cells)]

    def stdout_path(self):
        """The node ``/chosen`` names as the console (``stdout-path``, options after ':' dropped),
        as early_init_dt_scan_chosen_stdout() resolves it; None if there is none."""
        chosen = self.node("/chosen")
        prop = chosen and (chosen.prop("stdout-path") or chosen.prop("linux,stdout-path"))
        if not prop:
            return None
        path = self._resolve(prop.value.split(b"\0", 1)[0].decode("latin-1").split(":", 1)[0])
        return path if path and self.node(path) is not None else None


# ---------------------------------------------------------------------------------------------
# Reading a flattened tree (spec chapter 5)

def _check_block(name, offset, size, header_size, totalsize, align):
    if offset < header_size or offset + size > totalsize or offset % align:
        raise ImageFormatError("device tree blob: the %s block [%#x, %#x) is not inside [%#x, totalsize %#x) "
                               "or not %d-byte aligned (spec 5.2)" % (name, offset, offset + size, header_size,
                                                                      totalsize, align))


def read_header(buf):
    """The header fields as a dict, each checked against the buffer (spec 5.2)."""
    size = len(buf)
    if size < 4:
        raise ImageFormatError("device tree blob truncated to %d bytes: the header field magic is missing" % size)
    if struct.unpack_from(">I", buf, 0)[0] != FDT_MAGIC:
        raise ImageFormatError("not a flattened device tree: no magic 0xd00dfeed at offset 0")
    header = {}
    for index, name in enumerate(_HEADER_FIELDS):
        if name == "size_dt_struct" and header["version"] < 17:
            header[name] = None  # v16 has no size_dt_struct
            break
        if index * 4 + 4 > size:
            raise ImageFormatError("device tree blob truncated to %d bytes: the header field %s (offset %d) "
                                   "is missing" % (size, name, index * 4))
        header[name] = struct.unpack_from(">I", buf, index * 4)[0]
        if name == "last_comp_version":
            if header["version"] < 16:
                raise ImageFormatError("device tree blob version %d: only versions 16 and later are read"
                                       % header["version"])
            if header[name] > FDT_VERSION or header[name] > header["version"]:
                raise ImageFormatError("device tree blob version %d needs a reader of version %d or later; "
                                       "this one reads 17" % (header["version"], header[name]))
    header_size = HEADER_SIZE_V16 if header["size_dt_struct"] is None else HEADER_SIZE_V17
    total = header["totalsize"]
    if total < header_size or total > size:
        raise ImageFormatError("device tree blob: totalsize %#x is outside [%#x, %#x], the %d bytes given "
                               "(truncated?)" % (total, header_size, size, size))
    if header["size_dt_struct"] is None:  # v16: the structure block ends at the strings or the blob's end
        after = header["off_dt_strings"] if header["off_dt_strings"] > header["off_dt_struct"] else total
        header["size_dt_struct"] = max(0, after - header["off_dt_struct"])
    _check_block("structure", header["off_dt_struct"], header["size_dt_struct"], header_size, total, 4)
    _check_block("strings", header["off_dt_strings"], header["size_dt_strings"], header_size, total, 1)
    _check_block("memory reservation", header["off_mem_rsvmap"], 16, header_size, total, 8)
    struct_end = header["off_dt_struct"] + header["size_dt_struct"]
    strings_end = header["off_dt_strings"] + header["size_dt_strings"]
    if header["size_dt_strings"] and header["off_dt_strings"] < struct_end and header["off_dt_struct"] < strings_end:
        raise ImageFormatError("device tree blob: the structure block [%#x, %#x) and the strings block [%#x, %#x) "
                               "overlap" % (header["off_dt_struct"], struct_end, header["off_dt_strings"], strings_end))
    return header


def _read_reservations(buf, offset, limit):
    """Memory reservation block (spec 5.3): (address, size) u64 pairs ended by (0, 0)."""
    out = []
    while True:
        if offset + 16 > limit:
            raise ImageFormatError("device tree blob: the memory reservation block has no (0, 0) terminator "
                                   "before %#x" % limit)
        address, size = struct.unpack_from(">QQ", buf, offset)
        if address == 0 and size == 0:
            return out
        out.append((address, size))
        offset += 16


def _cstring(block, at, what, base):
    end = block.find(b"\0", at)
    if end < 0:
        raise ImageFormatError("device tree blob: %s at %#x is not NUL-terminated inside its block" % (what, base + at))
    return block[at:end].decode("latin-1"), end + 1


def _at(where, add, item):
    try:
        add(item)
    except ImageFormatError as err:
        raise ImageFormatError("device tree blob at %#x: %s" % (where, err))


def parse_fdt(buf):
    """A DeviceTree from a flattened blob (bytes, bytearray, mmap, memoryview).

    Bytes past ``totalsize`` are ignored, so a padded ``/sys/firmware/fdt`` reads as it is.
    """
    header = read_header(buf)
    total = header["totalsize"]
    start = header["off_dt_struct"]
    block = bytes(buf[start:start + header["size_dt_struct"]])
    strings = bytes(buf[header["off_dt_strings"]:header["off_dt_strings"] + header["size_dt_strings"]])
    reservations = _read_reservations(buf, header["off_mem_rsvmap"], total)
    stack, root, pos = [], None, 0

    def u32(at, what):
        if at + 4 > len(block):
            raise ImageFormatError("device tree blob: %s at %#x runs past the structure block's end %#x"
                                   % (what, start + at, start + len(block)))
        return struct.unpack_from(">I", block, at)[0]

    while True:  # spec 5.4: a flat token stream; nesting is kept on an explicit stack
        token = u32(pos, "structure token")
        where = start + pos
        pos += 4
        if token == FDT_BEGIN_NODE:
            name, pos = _cstring(block, pos, "node name", start)
            pos = _align4(pos)
            if root is not None and not stack:
                raise ImageFormatError("device tree blob: a second root node at %#x" % where)
            if len(stack) >= MAX_DEPTH:
                raise ImageFormatError("device tree blob: nodes nested deeper than %d at %#x" % (MAX_DEPTH, where))
            node = Node(name)
            if stack:
                if not name or "/" in name:
                    raise ImageFormatError("device tree blob: invalid node name %r at %#x" % (name, where))
                _at(where, stack[-1].add_child, node)
            else:
                root = node
            stack.append(node)
        elif token == FDT_END_NODE:
            if not stack:
                raise ImageFormatError("device tree blob: FDT_END_NODE outside any node at %#x" % where)
            stack.pop()
        elif token == FDT_PROP:
            length, nameoff = u32(pos, "property length"), u32(pos + 4, "property name offset")
            pos += 8
            if not stack:
                raise ImageFormatError("device tree blob: a property outside any node at %#x" % where)
            if nameoff >= len(strings):
                raise ImageFormatError("device tree blob: property name offset %#x at %#x is outside the "
                                       "strings block (%#x bytes)" % (nameoff, where, len(strings)))
            name = _cstring(strings, nameoff, "property name", header["off_dt_strings"])[0]
            if not name or pos + length > len(block):
                raise ImageFormatError("device tree blob: property %r at %#x has an empty name or runs past "
                                       "the structure block (%d bytes)" % (name, where, length))
            _at(where, stack[-1].add_property, Property(name, block[pos:pos + length]))
            pos = _align4(pos + length)
        elif token == FDT_END:
            if stack or root is None:
                raise ImageFormatError("device tree blob: FDT_END at %#x with %s" % (
                    where, "no root node" if root is None else "node %r still open" % stack[-1].name))
            break
        elif token != FDT_NOP:
            raise ImageFormatError("device tree blob: unknown token %#x at %#x" % (token, where))
    return DeviceTree(root, reservations, header["boot_cpuid_phys"])


# ---------------------------------------------------------------------------------------------
# Writing a flattened tree

def build_fdt(tree, pad=0):
    """The tree as a version 17 blob: header, reservation block, structure, strings, ``pad``
    zero bytes of room to grow (counted in totalsize).  Same tree, same bytes."""
    strings, offsets = bytearray(), {}
    out = bytearray()

    def begin(node, depth):
        if depth >= MAX_DEPTH:
            raise ImageFormatError("device tree: nodes nested deeper than %d" % MAX_DEPTH)
        if depth and (not node.name or "/" in node.name) or "\0" in node.name:
            raise ImageFormatError("device tree: invalid node name %r" % node.name)
        out.extend(struct.pack(">I", FDT_BEGIN_NODE) + node.name.encode("latin-1") + b"\0")
        out.extend(b"\0" * (_align4(len(out)) - len(out)))
        for prop in node.properties:
            if not prop.name or "\0" in prop.name:
                raise ImageFormatError("device tree: invalid property name %r in node %r" % (prop.name, node.name))
            if prop.name not in offsets:  # spec 5.5: each name stored once
                offsets[prop.name] = len(strings)
                strings.extend(prop.name.encode("latin-1") + b"\0")
            out.extend(struct.pack(">III", FDT_PROP, len(prop.value), offsets[prop.name]) + prop.value)
            out.extend(b"\0" * (_align4(len(out)) - len(out)))

    begin(tree.root, 0)
    stack = [iter(tree.root.children)]
    while stack:
        child = next(stack[-1], None)
        if child is None:
            out.extend(struct.pack(">I", FDT_END_NODE))
            stack.pop()
        else:
            begin(child, len(stack))
            stack.append(iter(child.children))
    out.extend(struct.pack(">I", FDT_END))
    for address, size in tree.reservations:
        if not 0 <= address < 1 << 64 or not 0 <= size < 1 << 64 or (address, size) == (0, 0):
            raise ImageFormatError("device tree: reservation (%#x, %#x) is not a u64 pair" % (address, size))
    rsvmap = b"".join(struct.pack(">QQ", a, s) for a, s in list(tree.reservations) + [(0, 0)])
    off_rsvmap = HEADER_SIZE_V17  # 40: already 8-byte aligned (spec 5.3)
    off_struct = off_rsvmap + len(rsvmap)  # a multiple of 8, so 4-byte aligned (spec 5.4)
    off_strings = off_struct + len(out)
    total = off_strings + len(strings) + pad
    if not 0 <= tree.boot_cpuid_phys < 1 << 32 or pad < 0 or total >= 1 << 32:
        raise ImageFormatError("device tree: boot_cpuid_phys %r, pad %r or total size %d does not fit a u32 "
                               "header field" % (tree.boot_cpuid_phys, pad, total))
    header = struct.pack(">10I", FDT_MAGIC, total, off_struct, off_strings, off_rsvmap, FDT_VERSION,
                         FDT_LAST_COMP_VERSION, tree.boot_cpuid_phys, len(strings), len(out))
    return header + rsvmap + bytes(out) + bytes(strings) + b"\0" * pad


# ---------------------------------------------------------------------------------------------
# /chosen for the next kernel (read by early_init_dt_scan_chosen() in drivers/of/fdt.c)

#: The /chosen properties the functions below manage: a loader drops them all from the running
#: kernel's tree before setting its own, so nothing stale (an old initrd, a used seed) survives.
CHOSEN_PROPERTIES = ("bootargs", "linux,initrd-start", "linux,initrd-end", "kaslr-seed", "rng-seed",
                     "linux,elfcorehdr", "linux,usable-memory-range")


def chosen(tree):
    """The ``/chosen`` node, created if missing (the kernel also accepts ``/chosen@0``)."""
    return tree.node("/chosen", create=True)


def _set_chosen(tree, name, value):
    if value is None:
        chosen(tree).remove(name)
    else:
        chosen(tree).set(name, value)


def set_bootargs(tree, cmdline):
    """The next kernel's command line; None removes it."""
    _set_chosen(tree, "bootargs", None if cmdline is None else Property.from_strings("bootargs", cmdline).value)


def set_initrd(tree, start, end):
    """``linux,initrd-start`` / ``-end`` (end exclusive); None removes both.

    early_init_dt_check_for_initrd() reads each as one number of len/4 cells, so u32 and u64
    both work; we always write u64, because RAM (and so the initrd) may lie above 4 GiB on arm64
    and ppc64, and the length, unlike the root's #address-cells, is what the kernel honours here.
    """
    if start is not None and end < start:
        raise ImageFormatError("initrd end %#x is below its start %#x" % (end, start))
    for name, value in (("linux,initrd-start", start), ("linux,initrd-end", end)):
        _set_chosen(tree, name, None if start is None else Property.from_u64(name, value).value)


def set_kaslr_seed(tree, seed):
    """``kaslr-seed``: arm64's get_kaslr_seed() uses it only when it is exactly a u64."""
    _set_chosen(tree, "kaslr-seed", None if seed is None else Property.from_u64("kaslr-seed", seed).value)


def set_rng_seed(tree, data):
    """``rng-seed``: any non-empty bytes, credited to the RNG by early_init_dt_scan_chosen()."""
    _set_chosen(tree, "rng-seed", bytes(data) if data else None)


def set_elfcorehdr(tree, address, size):
    """``linux,elfcorehdr`` for a capture kernel, in the root's address/size cells
    (early_init_dt_check_for_elfcorehdr()); None removes it."""
    _set_chosen(tree, "linux,elfcorehdr", None if address is None else
                encode_ranges("linux,elfcorehdr", [(address, size)], *tree.root_cells()))


def set_usable_memory_range(tree, ranges):
    """``linux,usable-memory-range``: the RAM a capture kernel may use, root cells.

    early_init_dt_check_for_usable_mem_range() caps memory to the first range and adds the
    second (at most two; by convention the low region is last).  None or [] removes it.
    """
    if ranges and len(ranges) > 2:
        raise ImageFormatError("linux,usable-memory-range: the kernel reads at most 2 ranges, got %d" % len(ranges))
    _set_chosen(tree, "linux,usable-memory-range", None if not ranges else
                encode_ranges("linux,usable-memory-range", ranges, *tree.root_cells()))


def drop_chosen_properties(tree, names):
    """Remove the named properties from /chosen; returns the names that were there."""
    node = chosen(tree)
    return [name for name in names if node.remove(name)]
