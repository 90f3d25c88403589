# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read an unflattened device tree (``/proc/device-tree``) into a ``fdt.DeviceTree``.

ppc64 kernels keep no ``/sys/firmware/fdt`` worth reusing (firmware and the kernel edit the live
tree), so the loader flattens the kernel's view of it again: a directory is a node, a regular
file is a property whose bytes are kept exactly.  Names are taken as they are, whatever they
hold (``ibm,ppc-interrupt-server#s``, ``linux,?odd``, ``pci@800000020000000``).

The tree is the kernel's, but the reader still must not trust it blindly: it never follows a
symbolic link (one could lead out of the tree), skips FIFOs, sockets and devices (opening one
could block for ever), opens files non-blocking, and caps depth, node count and bytes read.
Anything it cannot read is a ``HostError`` naming the path.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat

from ..errors import HostError
from .fdt import MAX_DEPTH, DeviceTree, Node, Property

#: Bounds on what one read may cost.  The largest real properties are ppc64's
#: ``ibm,dynamic-memory`` lists (24 bytes per memory block: a few MiB on multi-TiB machines).
MAX_PROPERTY_BYTES = 16 << 20
MAX_TOTAL_BYTES = 64 << 20
MAX_NODES = 200000


def _read_property(path, limit):
    """The bytes of one property file, at most ``limit``; HostError beyond it."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise HostError("cannot read the device tree property %s: %s" % (os.fsdecode(path), err.strerror))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # it changed between lstat and open
            return None
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise HostError("the device tree property %s is larger than %d bytes, what is left of the limits "
                                "on one property and on the whole tree: not a device tree?" % (os.fsdecode(path), limit))
    except OSError as err:
        raise HostError("cannot read the device tree property %s: %s" % (os.fsdecode(path), err.strerror))
    finally:
        os.close(fd)


def _derived_name(node):
    """The ``name`` property the kernel adds to a node that has none (populate_properties()
    in drivers/of/fdt.c): the node name before '@', NUL-terminated."""
    return node.basename.encode("latin-1") + b"\0"


def read_fs(path, keep_name_properties=True, max_total=MAX_TOTAL_BYTES, max_property=MAX_PROPERTY_BYTES,
            max_nodes=MAX_NODES):
    """A DeviceTree from a directory tree such as ``/proc/device-tree``.

    ``path`` itself may be a link (``/proc/device-tree`` points at
    ``/sys/firmware/devicetree/base``); nothing inside is followed.  Entries are read in name
    order so the result does not depend on the file system's ordering.  The kernel shows a
    ``name`` property on every node even when the blob it booted from had none; with
    ``keep_name_properties=False`` a ``name`` equal to that derived one is left out, which
    gives back the flattened tree the kernel read.  The result has no memory reservations and
    ``boot_cpuid_phys`` 0: a directory tree has neither, the caller sets them.
    """
    top = os.path.realpath(os.fsencode(path))
    try:
        if not stat.S_ISDIR(os.stat(top).st_mode):
            raise HostError("%s is not a directory: no unflattened device tree there" % os.fsdecode(path))
    except OSError as err:
        raise HostError("cannot read the device tree at %s: %s" % (os.fsdecode(path), err.strerror))
    root = Node("")
    todo = [(top, root, 0)]
    total, nodes = 0, 1
    while todo:  # iterative, depth-capped walk
        directory, node, depth = todo.pop()
        try:
            names = sorted(os.listdir(directory))
        except OSError as err:
            raise HostError("cannot list the device tree directory %s: %s" % (os.fsdecode(directory), err.strerror))
        subdirs = []
        for raw in names:
            full = os.path.join(directory, raw)
            try:
                mode = os.lstat(full).st_mode
            except OSError as err:
                raise HostError("cannot read the device tree entry %s: %s" % (os.fsdecode(full), err.strerror))
            name = raw.decode("latin-1")
            if stat.S_ISDIR(mode):
                nodes += 1
                if depth + 1 >= MAX_DEPTH or nodes > max_nodes:
                    raise HostError("the device tree at %s is deeper than %d or has more than %d nodes at %s"
                                    % (os.fsdecode(path), MAX_DEPTH, max_nodes, os.fsdecode(full)))
                subdirs.append((full, node.add_child(Node(name)), depth + 1))
            elif stat.S_ISREG(mode):
                value = _read_property(full, min(max_property, max_total - total))
                if value is None:
                    continue
                total += len(value)
                node.add_property(Property(name, value))
            # links, FIFOs, sockets and devices are skipped: the kernel shows none in the tree
        name_prop = node.prop("name")
        if not keep_name_properties and name_prop is not None and name_prop.value == _derived_name(node):
            node.remove("name")
        todo.extend(reversed(subdirs))
    return DeviceTree(root)
