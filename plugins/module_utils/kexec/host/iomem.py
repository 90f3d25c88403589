# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""/proc/iomem as a tree: where RAM, firmware ranges and the crash region are.

Nesting is by indentation (two spaces per level); ``Kernel code`` and ``Crash kernel`` sit under
``System RAM``.  Ends are made half-open, like every Range here.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..errors import HostError


class IomemNode:
    """One /proc/iomem line: [start, end) named ``name``, with its nested children."""

    __slots__ = ("start", "end", "name", "children")

    def __init__(self, start, end, name, children=None):
        self.start = start
        self.end = end
        self.name = name
        self.children = children if children is not None else []

    def walk(self):
        """This node and all descendants, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()

    def to_dict(self):
        """Plain-value form with nested children."""
        return {"start": self.start, "end": self.end, "name": self.name, "children": [c.to_dict() for c in self.children]}

    def __eq__(self, other):
        return isinstance(other, IomemNode) and self.to_dict() == other.to_dict()

    def __ne__(self, other):
        return not self == other

    __hash__ = None

    def __repr__(self):
        return "IomemNode(%#x, %#x, %r, %d children)" % (self.start, self.end, self.name, len(self.children))


class HiddenIomemError(HostError):
    """/proc/iomem read as a non-root user: every address is zero."""


def parse_iomem(text, where="/proc/iomem"):
    """Parse /proc/iomem into a list of top-level IomemNodes (ends made half-open).

    Nesting is by indentation (two spaces per level); ``Kernel code`` and ``Crash kernel`` sit
    under ``System RAM``.  Raises HostError on any malformed line, and when every address is zero,
    which is what non-root readers see.
    """
    roots = []
    stack = []  # (depth, node)
    nonzero = False
    count = 0
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        stripped = line.lstrip(" ")
        indent = len(line) - len(stripped)
        if indent % 2 or "\t" in line[:indent + 1]:
            raise HostError("%s line %d is not indented in steps of two spaces: %r; re-read or re-record it" % (where, lineno, line[:80]))
        depth = indent // 2
        span, sep, name = stripped.partition(" : ")
        lo, dash, hi = span.partition("-")
        try:
            if not sep or not dash:
                raise ValueError(line)
            start, last = int(lo, 16), int(hi, 16)
        except ValueError:
            raise HostError("%s line %d is not 'start-end : name': %r; re-read or re-record it" % (where, lineno, line[:80]))
        if last < start or last >= 1 << 64:
            raise HostError("%s line %d has an end below its start or beyond 64 bits: %r; re-read or re-record it"
                            % (where, lineno, line[:80]))
        if start or last:
            nonzero = True
        node = IomemNode(start, last + 1, name.strip())
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if depth > 0:
            if not stack or stack[-1][0] != depth - 1:
                raise HostError("%s line %d is nested deeper than the line above allows: %r; re-read or "
                                "re-record it" % (where, lineno, line[:80]))
            stack[-1][1].children.append(node)
        else:
            roots.append(node)
        stack.append((depth, node))
        count += 1
    if count and not nonzero:
        raise HiddenIomemError("%s shows only zero addresses: the kernel hides them from non-root users; run as root (become: true)" % where)
    return roots


def crash_regions(iomem):
    """Every ``Crash kernel`` node of the tree, at any depth, as (start, end) pairs in order."""
    found = []
    for root in iomem or ():
        for node in root.walk():
            if node.name == "Crash kernel":
                found.append((node.start, node.end))
    return sorted(found)
