# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A model of what the kernel does with a normal kexec image's pages between load and jump.

kexec_load copies every segment into pages the kernel allocates anywhere in RAM and, at jump
time, relocate_kernel copies them to their destinations page by page, walking an entry list of
(destination, source, indirection) words.  The model replays that with dictionaries so a plan
can report how many pages move and be tested, without root, to deliver every page intact.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..errors import PlanError
from .memmap import align_up


def relocation_model(plan, allocator="top_down"):
    """Replay what the kernel does with this plan's pages between load and jump.

    For normal loads the kernel copies each segment into pages it allocates anywhere in RAM
    ("source pages"), records (destination, source) in its entry list (plus indirection pages
    for the list itself), and at jump time copies source to destination page by page.  An
    allocated page can be another page's destination; kimage_alloc_page() swaps pages as it
    hands them out so that every page is either its own destination or nobody's, which makes
    the in-order copy in relocate_kernel safe.  This runs that pass with dicts (O(pages)), tracking what each page
    holds, then replays the copy and verifies every destination ends up with its data.

    ``allocator`` is "top_down", "bottom_up" or an iterable of page addresses, the order the
    kernel's page allocator would hand pages out.  Crash loads are copied into the reserved
    region at load time: nothing moves at jump time.

    An indirection page holds page_size / 8 entries (kimage_entry_t is an unsigned long), so on a
    64 KiB-page kernel the list needs sixteen times fewer of them.

    Returns a plain dict.
    """
    page_size = plan.page_size
    per_page = page_size // 8
    dest_pages = []
    for idx, seg in enumerate(plan.segments):
        npages = -(-seg.memsz // page_size) if seg.memsz > 0 else 0
        for k in range(npages):
            dest_pages.append((seg.mem - seg.mem % page_size + k * page_size, idx, k))
    total = len(dest_pages)
    if plan.kind == "crash":
        return {
            "kind": plan.kind, "method": "direct", "pages": total, "pages_to_copy": 0,
            "allocated_pages": 0, "indirection_pages": 0, "in_place": total,
            "swaps_destination_conflict": 0, "swaps_source_conflict": 0, "buffer_claims": 0,
            "verified": True,
        }
    pages_iter = iter(_allocation_order(plan, allocator))

    def alloc():
        for page in pages_iter:
            if page not in used:
                used.add(page)
                return page
        raise PlanError("the relocation model ran out of pages: the plan needs %d pages, more than this RAM has" % total)

    used = set()
    # Entry list: ("ind", page) for indirection pages, ("src", page, dest, tag) for sources.
    # An indirection page holds per_page entries; the last links to the next page, and each
    # segment adds one destination entry, so per_page - 1 slots carry the rest.
    entries = []
    slots = 0
    last_dest = None
    for dest, idx, k in dest_pages:
        need = 1 if dest != last_dest else 0
        if slots < need + 1:
            entries.append(["ind", alloc(), None, None])
            slots = per_page - 1
        slots -= need + 1
        entries.append(["src", alloc(), dest, (idx, k)])
        last_dest = dest + page_size
    buffer = alloc()

    content = {}  # physical page -> tag of the data it holds now
    for e in entries:
        if e[0] == "src":
            content[e[1]] = e[3]
    dest_of = {}  # destination page -> entry index (processed source entries)
    page_at = {}  # page held by a processed entry -> entry index
    dst_swaps = src_swaps = claims = 0
    for i, e in enumerate(entries):
        page = e[1]
        # Invariant 2: no earlier entry may have this page as its destination; if one does,
        # give it this page now (its data moves here) and take a spare page instead.
        c = dest_of.get(page)
        if c is not None:
            cpage = entries[c][1]
            content[buffer] = content.get(page)
            content[page] = content.get(cpage)
            entries[c][1] = page
            page_at.pop(cpage, None)
            page_at[page] = c
            e[1] = buffer
            buffer = cpage
            page = e[1]
            dst_swaps += 1
        if e[0] == "src":
            dest = e[2]
            # Invariant 3: our destination must not hold an earlier entry's data; if it does,
            # move that data to the spare page and put ours straight into our destination.
            c = page_at.get(dest)
            if c is not None:
                content[buffer] = content.get(dest)
                content[dest] = content.get(page)
                entries[c][1] = buffer
                page_at[buffer] = c
                e[1] = dest
                buffer = page
                page = dest
                src_swaps += 1
            if buffer == dest:
                content[buffer] = content.get(page)
                e[1] = buffer
                buffer = page
                page = dest
                claims += 1
            dest_of[dest] = i
        page_at[page] = i

    # Replay relocate_kernel: copy each source page to its destination in entry order.
    memory = dict(content)
    written = set()
    copies = 0
    in_place = 0
    intact = True
    for e in entries:
        if e[0] != "src":
            # The copy loop reads each indirection page when it reaches it: an earlier copy
            # must not have overwritten it (kimage_alloc_page() guarantees this).
            intact = intact and e[1] not in written
            continue
        written.add(e[2])
        if e[1] == e[2]:
            in_place += 1
            continue
        memory[e[2]] = memory.get(e[1])
        copies += 1
    verified = intact and all(memory.get(e[2]) == e[3] for e in entries if e[0] == "src")
    return {
        "kind": plan.kind,
        "method": "copy_at_jump",
        "pages": total,
        "pages_to_copy": copies,
        "allocated_pages": len(used),
        "indirection_pages": sum(1 for e in entries if e[0] == "ind"),
        "in_place": in_place,
        "swaps_destination_conflict": dst_swaps,
        "swaps_source_conflict": src_swaps,
        "buffer_claims": claims,
        "verified": verified,
    }


def _allocation_order(plan, allocator):
    if allocator in ("top_down", "bottom_up"):
        ram = plan.memory_map.ram()
        src_limit = plan.destination_limit  # KEXEC_SOURCE_MEMORY_LIMIT equals it on every arch we load

        def gen():
            ranges = reversed(ram) if allocator == "top_down" else ram
            for r in ranges:
                lo = align_up(r.start, plan.page_size)
                hi = min(r.end, src_limit) // plan.page_size * plan.page_size
                if allocator == "top_down":
                    page = hi - plan.page_size
                    while page >= lo:
                        yield page
                        page -= plan.page_size
                else:
                    page = lo
                    while page + plan.page_size <= hi:
                        yield page
                        page += plan.page_size
        return gen()
    return allocator
