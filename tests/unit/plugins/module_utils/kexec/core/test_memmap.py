"""Memory ranges and hole finding (plugins/module_utils/kexec/memmap.py)."""

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import KexecError, PlanError
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core.memmap import (
    PAGE_SIZE, RAM, MemoryMap, Range, align_down, align_up, intersect, merge, subtract,
)

P = PAGE_SIZE

# What a 2 GiB SeaBIOS q35 guest's firmware map says (dmesg BIOS-e820).
Q35 = MemoryMap([
    Range(0, 0x9fc00), Range(0x9fc00, 0xa0000, "Reserved"), Range(0xf0000, 0x100000, "Reserved"),
    Range(0x100000, 0x7ffdc000), Range(0x7ffdc000, 0x80000000, "Reserved"),
    Range(0xb0000000, 0xc0000000, "Reserved"), Range(0xfffc0000, 0x100000000, "Reserved"),
])


def test_range_is_half_open_plain_value():
    r = Range(0x1000, 0x3000)
    assert r.size == 0x2000
    assert r.type == RAM
    assert r.to_dict() == {"start": 0x1000, "end": 0x3000, "type": "System RAM"}
    assert r == Range(0x1000, 0x3000, "System RAM")
    assert len({r, Range(0x1000, 0x3000)}) == 1
    assert r.overlaps(Range(0x2fff, 0x4000)) and not r.overlaps(Range(0x3000, 0x4000))
    assert r.contains(0x1000, 0x3000) and not r.contains(0x1000, 0x3001)
    assert "0x1000" in repr(r)


@pytest.mark.parametrize("start,end", [(5, 4), (-1, 4)])
def test_range_refuses_nonsense(start, end):
    with pytest.raises(ValueError):
        Range(start, end)


def test_align_helpers():
    assert align_up(0x1001, 0x1000) == 0x2000 and align_up(0x2000, 0x1000) == 0x2000
    assert align_down(0x1fff, 0x1000) == 0x1000
    assert align_up(7, 3) == 9


def test_merge_subtract_intersect():
    assert merge([(0, 10), (10, 20), (30, 40), (35, 50), (5, 6)]) == [Range(0, 20), Range(30, 50)]
    assert subtract([Range(0, 100)], [(10, 20), (15, 30), (90, 200)]) == [Range(0, 10), Range(30, 90)]
    assert subtract([Range(0, 10), Range(20, 30)], []) == [Range(0, 10), Range(20, 30)]
    assert subtract([Range(0, 10)], [(0, 10)]) == []
    assert intersect([Range(0, 10), Range(20, 30)], 5, 25) == [Range(5, 10), Range(20, 25)]


def test_ram_merges_and_lets_reserved_win():
    mm = MemoryMap([Range(0, 0x2000), Range(0x2000, 0x8000), Range(0x3000, 0x4000, "Reserved")])
    assert mm.ram() == [Range(0, 0x3000), Range(0x4000, 0x8000)]
    assert mm.total_ram() == 0x7000
    assert mm.contains_ram(0x4000, 0x8000) and not mm.contains_ram(0x2000, 0x5000)
    assert MemoryMap.from_list(mm.to_list()) == mm


def test_from_list_refuses_garbage_with_kexec_error():
    with pytest.raises(KexecError):
        MemoryMap.from_list([{"start": "x", "end": 1, "type": RAM}])
    with pytest.raises(KexecError):
        MemoryMap.from_list([{"start": 1}])


def test_find_hole_bottom_up_and_top_down():
    assert Q35.find_hole(0x1000) == 0
    assert Q35.find_hole(0x100000, min_addr=0x100000) == 0x100000
    assert Q35.find_hole(0x100000, align=0x200000, min_addr=0x1000000) == 0x1000000
    top = Q35.find_hole(0x2000000, top_down=True)
    assert top == 0x7ffdc000 - 0x2000000
    assert Q35.find_hole(0x2000000, align=0x1000000, top_down=True) == 0x7d000000


def test_find_hole_max_addr_is_inclusive():
    mm = MemoryMap([Range(0, 0x200000000)])
    for hi in (0xffffffff, 0x100000000):
        start = mm.find_hole(0x1000, top_down=True, max_addr=hi)
        assert start == 0xfffff000
    assert mm.find_hole(0x1000, top_down=True, max_addr=0x7fffffff) == 0x7ffff000


def test_find_hole_avoids_taken_ranges():
    start = Q35.find_hole(0x1000, min_addr=0x100000, avoid=[(0x100000, 0x180000), Range(0x180000, 0x181000)])
    assert start == 0x181000


def test_find_hole_failure_says_why_in_hex():
    with pytest.raises(PlanError) as err:
        Q35.find_hole(0x90000000)
    msg = str(err.value)
    assert "0x90000000" in msg and "0x100000-0x7ffdc000" in msg


@pytest.mark.parametrize("size,align", [(0, P), (-1, P), (P, 0)])
def test_find_hole_refuses_bad_requests(size, align):
    with pytest.raises(PlanError):
        Q35.find_hole(size, align)


# -- properties: compare with a brute force over a small address space --------------------------

TYPES = st.sampled_from([RAM, RAM, RAM, "Reserved", "ACPI Tables"])
small_range = st.tuples(st.integers(0, 63), st.integers(1, 16), TYPES).map(
    lambda t: Range(t[0] * P, (t[0] + t[1]) * P, t[2]))


@settings(deadline=None, max_examples=200)
@given(
    ranges=st.lists(small_range, max_size=6),
    avoid=st.lists(st.tuples(st.integers(0, 80), st.integers(1, 8)).map(lambda t: (t[0] * P, (t[0] + t[1]) * P)), max_size=4),
    size=st.integers(1, 10 * P),
    align_pages=st.sampled_from([1, 2, 4, 3]),
    lo=st.integers(0, 40),
    hi=st.one_of(st.none(), st.integers(0, 90)),
    top_down=st.booleans(),
)
def test_find_hole_matches_brute_force(ranges, avoid, size, align_pages, lo, hi, top_down):
    mm = MemoryMap(ranges)
    align = align_pages * P
    min_addr = lo * P
    max_addr = None if hi is None else hi * P - 1 + (P // 2)  # an inclusive bound mid-page
    ram = mm.ram()

    def ok(s):
        e = s + size
        if s < min_addr or (max_addr is not None and e - 1 > max_addr):
            return False
        if not any(r.start <= s and e <= r.end for r in ram):
            return False
        return not any(s < ae and a < e for a, ae in avoid)

    fits = [s for s in range(0, 96 * P, align) if ok(s)]
    if not fits:
        with pytest.raises(PlanError):
            mm.find_hole(size, align, min_addr, max_addr, top_down, avoid)
        return
    start = mm.find_hole(size, align, min_addr, max_addr, top_down, avoid)
    assert start % align == 0
    assert ok(start)
    assert start == (max(fits) if top_down else min(fits))
