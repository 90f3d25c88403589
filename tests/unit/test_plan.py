"""Segment placement, the kernel's checks and the relocation model (plugins/module_utils/kexec/plan.py)."""

import hashlib
import mmap
import os

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import PlanError
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.host import Host
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core.memmap import PAGE_SIZE, MemoryMap, Range
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core.plan import KEXEC_SEGMENT_MAX, Plan, Segment
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.x86_64 import ARCH as X86_64

P = PAGE_SIZE
HERE = os.path.dirname(os.path.abspath(__file__))
SYSROOTS = os.path.join(os.path.dirname(HERE), "fixtures", "sysroots")


def host(name):
    return Host.read(os.path.join(SYSROOTS, name))


def bzimage_like(plan, kernel=0x900000, initrd=0x2000000):
    """Lay out what a bzImage load makes: kernel low, initrd high below 4 GiB, boot data, purgatory."""
    k = plan.add_segment("kernel", b"\x90" * kernel, memsz=kernel + 0x400000, align=0x200000, min_addr=0x1000000)
    i = plan.add_segment("initrd", b"\x00" * initrd, top_down=True, max_addr=0xffffffff)
    b = plan.add_segment("boot_params", bytearray(P * 2), min_addr=0x10000, max_addr=0xffffffff, top_down=True)
    g = plan.reserve("purgatory", 0x5000, min_addr=0x1000, max_addr=0x7fffffff, top_down=True)
    g.set_buffer(b"\xcc" * 0x4100)
    plan.entry = g.mem
    return k, i, b, g


@pytest.mark.parametrize("name", ["seabios-pc-1g", "seabios-q35-2g-crash", "ovmf-q35-2g", "ovmf-q35-2g-crash-sb"])
def test_normal_plan_on_fixtures(name):
    h = host(name)
    plan = Plan(h.memory_map, arch=h.arch, totalram_pages=h.totalram_pages)
    k, i, b, g = bzimage_like(plan)
    plan.check()
    assert k.mem % 0x200000 == 0 and k.mem >= 0x1000000
    assert i.end <= 0x100000000 and i.mem > k.end
    assert all(s.mem % P == 0 and s.memsz % P == 0 for s in plan.segments)
    model = plan.relocation_model()
    assert model["verified"] is True
    assert model["pages"] == sum(s.memsz // P for s in plan.segments)


@pytest.mark.parametrize("name", ["seabios-q35-2g-crash", "ovmf-q35-2g-crash-sb"])
def test_crash_plan_stays_in_crash_region(name):
    h = host(name)
    plan = Plan(h.memory_map, kind="crash", crash_region=h.crash_region, totalram_pages=h.totalram_pages)
    bzimage_like(plan)
    plan.check()
    cr = h.crash_region
    assert all(cr.start <= s.mem and s.end <= cr.end for s in plan.segments)
    assert plan.relocation_model()["pages_to_copy"] == 0


def test_crash_plan_needs_a_region():
    with pytest.raises(PlanError, match="crashkernel="):
        Plan(host("seabios-pc-1g").memory_map, kind="crash")
    with pytest.raises(PlanError, match="unknown load kind"):
        Plan([Range(0, 1 << 30)], kind="bogus")


def test_crash_region_too_small_says_so():
    plan = Plan([Range(0, 1 << 30)], kind="crash", crash_region=(0x1000000, 0x1100000))
    with pytest.raises(PlanError, match="crashkernel="):
        plan.add_segment("initrd", b"x" * 0x200000)


def test_add_segment_takes_holes_in_order_like_add_buffer():
    plan = Plan([Range(0, 0x100000)])
    a = plan.add_segment("a", b"x")
    b = plan.add_segment("b", b"y" * (P + 1))
    c = plan.add_segment("c", b"z", top_down=True)
    assert (a.mem, a.memsz, a.bufsz) == (0, P, 1)
    assert (b.mem, b.memsz) == (P, 2 * P)
    assert c.mem == 0x100000 - P
    assert plan.segment("b") is b and plan.segment("nope") is None


def test_add_segment_refusals():
    plan = Plan([Range(0, 0x100000)])
    with pytest.raises(PlanError, match="larger than its memsz"):
        plan.add_segment("a", b"xx", memsz=1)
    with pytest.raises(PlanError, match="empty"):
        plan.add_segment("a", b"")
    with pytest.raises(PlanError, match="does not fit"):
        plan.add_segment("big", b"x", memsz=0x200000)
    with pytest.raises(PlanError, match="positive"):
        plan.reserve("r", 0)
    seg = plan.reserve("r", 10)
    with pytest.raises(PlanError, match="does not fit its reservation"):
        seg.set_buffer(b"x" * (P + 1))


def test_destination_limit_caps_placement():
    plan = Plan([Range(0, 1 << 50)], destination_limit=(1 << 46) - 1)
    s = plan.add_segment("x", b"x", top_down=True)
    assert s.end <= (1 << 46) - 1
    plan.check()


@pytest.mark.parametrize("la57,limit", [(False, (1 << 46) - 1), (True, (1 << 52) - 1)])
def test_x86_64_destination_limit_follows_the_paging_mode(la57, limit):
    host = Host(arch="x86_64", memory_map=MemoryMap([Range(0, 1 << 53)]), la57=la57, mem_total=1 << 53)
    plan = X86_64.new_plan(host, "normal")
    assert plan.destination_limit == limit
    s = plan.add_segment("x", b"x", top_down=True)
    assert s.end <= limit and (la57 or s.end < 1 << 46)


@pytest.mark.parametrize("page_size", [4096, 16384, 65536])
def test_every_rule_uses_the_hosts_page_size(page_size):
    plan = Plan([Range(0, 1 << 32)], page_size=page_size, totalram_pages=(1 << 32) // page_size)
    seg = plan.add_segment("x", b"x" * 5000, min_addr=0x3000)
    assert seg.mem % page_size == 0 and seg.memsz == max(page_size, 8192) and seg.memsz % page_size == 0
    plan.add_segment_at("four-k", b"y", 0x10001000, 0x1000)
    problems = plan.problems()
    if page_size == 4096:
        assert problems == []
    else:
        assert any("'four-k'" in p and "multiples of %#x" % page_size in p for p in problems), problems


def test_a_page_size_that_is_no_page_size_is_refused():
    for bad in (1024, 12288):
        with pytest.raises(PlanError, match="not a power of two"):
            Plan([Range(0, 1 << 32)], page_size=bad)


def test_check_lists_every_problem_in_hex():
    h = host("seabios-q35-2g-crash")
    plan = Plan(h.memory_map, kind="crash", crash_region=h.crash_region, totalram_pages=0x1000,
                arch="x86_64", destination_limit=(1 << 46) - 1)
    plan.add_segment_at("unaligned", b"x", 0x6d000100, 0x1000)
    plan.add_segment_at("big", b"x" * 0x3000, 0x6e000000, 0x2000)
    plan.add_segment_at("first", b"x", 0x6f000000, 0x4000)
    plan.add_segment_at("second", b"x", 0x6f002000, 0x2000)
    plan.add_segment_at("outside", b"x", 0x1000000, 0x1000)
    plan.add_segment_at("wrap", b"x", (1 << 64) - 0x1000, 0x2000)
    plan.add_segment_at("huge", b"x", 0x70000000, 0x1000000)
    plan.add_segment_at("high", b"x", 1 << 46, 0x1000)
    with pytest.raises(PlanError) as err:
        plan.check()
    msg = str(err.value)
    for needle in ("'unaligned' at 0x6d000100+0x1000 is not page aligned",
                   "'big' at 0x6e000000+0x2000 holds 0x3000 bytes",
                   "'first' (0x6f000000-0x6f004000) and 'second' (0x6f002000-0x6f004000) overlap",
                   "'outside' at 0x1000000+0x1000 lies outside the crash region 0x6d000000-0x7d000000",
                   "'wrap'", "wraps",
                   "'huge' needs 0x1000 pages, more than half of RAM (0x800 pages)",
                   "more than half of RAM",
                   "destination limit 0x3fffffffffff"):
        assert needle in msg, needle


def test_check_normal_refuses_non_ram_and_too_many_segments():
    plan = Plan(host("seabios-q35-2g-crash").memory_map)
    plan.add_segment_at("mmio", b"x", 0xb0000000, P)
    plan.add_segment_at("acpi", b"x", 0x7ffdb000, 2 * P)
    for n in range(KEXEC_SEGMENT_MAX):
        plan.add_segment("s%d" % n, b"x")
    with pytest.raises(PlanError) as err:
        plan.check()
    msg = str(err.value)
    assert "'mmio' at 0xb0000000+0x1000 is not entirely in System RAM" in msg
    assert "'acpi' at 0x7ffdb000+0x2000 is not entirely in System RAM" in msg
    assert "18 segments" in msg and "KEXEC_SEGMENT_MAX" in msg


def test_check_refuses_unfilled_reservation():
    plan = Plan([Range(0, 1 << 30)])
    plan.reserve("purgatory", P)
    with pytest.raises(PlanError, match="never given a buffer"):
        plan.check()


def test_to_dict_and_lazy_sha256():
    plan = Plan([Range(0, 1 << 30)], method="classic")
    data = bytearray(b"abc")
    seg = plan.add_segment("cmdline", data)
    plan.entry = 0x1234
    d = plan.to_dict()
    assert d == {"method": "classic", "kind": "normal", "entry": 0x1234,
                 "segments": [{"what": "cmdline", "mem": 0, "memsz": P, "bufsz": 3,
                               "sha256": hashlib.sha256(b"abc").hexdigest()}]}
    data[0:1] = b"x"  # writable buffers are patched after placement: never a stale digest
    assert seg.sha256 == hashlib.sha256(b"xbc").hexdigest()
    assert seg.sha256_memsz() == hashlib.sha256(b"xbc" + bytes(P - 3)).hexdigest()


def test_mmap_and_memoryview_buffers_are_hashed_without_copies(tmp_path):
    path = tmp_path / "initrd"
    payload = os.urandom(3 * P + 5)
    path.write_bytes(payload)
    with open(str(path), "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        plan = Plan([Range(0, 1 << 30)])
        seg = plan.add_segment("initrd", m)
        assert seg.buf is m and seg.bufsz == len(payload)
        assert seg.sha256 == hashlib.sha256(payload).hexdigest()
        assert seg._sha256 is not None  # read-only: cached
        view = memoryview(payload)[P:]
        seg2 = plan.add_segment("view", view)
        assert seg2.buf is view and seg2.sha256 == hashlib.sha256(payload[P:]).hexdigest()
        wide = memoryview(bytearray(8)).cast("I")
        assert plan.add_segment("wide", wide).bufsz == 8
    finally:
        m.close()


def test_segment_without_buffer():
    seg = Segment("purgatory", None, 0x1000, P)
    assert seg.sha256 is None and seg.bufsz == 0 and seg.end == 0x2000
    assert "purgatory" in repr(seg)


# -- relocation model ----------------------------------------------------------------------------

def test_relocation_model_own_destination_means_no_copy():
    plan = Plan([Range(0, 0x100000)])
    plan.add_segment_at("a", b"x" * (4 * P), 0x10000, 4 * P)
    # The allocator happens to hand out exactly the destinations: everything is in place.
    order = [0x80000, 0x10000, 0x11000, 0x12000, 0x13000, 0x90000]
    model = plan.relocation_model(order)
    assert model["verified"] and model["pages_to_copy"] == 0 and model["in_place"] == 4


def test_relocation_model_initrd_at_top_collides_with_top_down_allocator():
    h = host("seabios-pc-1g")
    plan = Plan(h.memory_map)
    plan.add_segment("initrd", b"x" * (64 * P), top_down=True)
    model = plan.relocation_model("top_down")
    assert model["verified"]
    assert model["swaps_destination_conflict"] + model["swaps_source_conflict"] + model["buffer_claims"] > 0
    clean = plan.relocation_model("bottom_up")
    assert clean["verified"] and clean["pages_to_copy"] == 64


def test_relocation_model_runs_out_of_pages():
    plan = Plan([Range(0, 0x10000)])
    plan.add_segment("a", b"x" * 0xf000)  # 15 pages + 1 indirection + 1 spare > 16
    with pytest.raises(PlanError, match="ran out of pages"):
        plan.relocation_model()


def test_relocation_model_scales_linearly():
    # 256 MiB of segments = 65536 pages; an O(N^2) pass would take minutes.
    plan = Plan([Range(0x100000, 1 << 31)])
    plan.add_segment_at("big", None, 0x40000000, 1 << 28).set_buffer(b"")
    model = plan.relocation_model("top_down")
    assert model["verified"] and model["pages"] == 1 << 16


@settings(deadline=None, max_examples=120)
@given(
    layout=st.lists(st.tuples(st.integers(0, 60), st.integers(1, 6)), min_size=1, max_size=5),
    seed=st.randoms(use_true_random=False),
)
def test_relocation_model_always_delivers_every_page(layout, seed):
    plan = Plan([Range(0, 128 * P)])
    taken = set()
    for n, (start, pages) in enumerate(layout):
        span = set(range(start, start + pages))
        if span & taken:
            continue
        taken |= span
        plan.add_segment_at("s%d" % n, None, start * P, pages * P)
    order = [p * P for p in range(128)]
    seed.shuffle(order)
    assert plan.relocation_model(order)["verified"]


# -- planner properties ---------------------------------------------------------------------------

ram_maps = st.lists(
    st.tuples(st.integers(0, 200), st.integers(1, 64), st.sampled_from(["System RAM", "System RAM", "Reserved"])),
    min_size=1, max_size=6,
).map(lambda rows: MemoryMap([Range(a * P, (a + n) * P, t) for a, n, t in rows]))

requests = st.lists(st.tuples(
    st.integers(1, 12 * P),                    # buffer size
    st.sampled_from([P, 2 * P, 0x10000]),      # align
    st.integers(0, 100),                       # min page
    st.one_of(st.none(), st.integers(1, 300)),  # max page
    st.booleans(),                             # top_down
), max_size=10)


@settings(deadline=None, max_examples=150)
@given(mm=ram_maps, reqs=requests, crash=st.one_of(st.none(), st.tuples(st.integers(0, 150), st.integers(1, 80))))
def test_placed_segments_are_always_valid(mm, reqs, crash):
    if crash is not None:
        cr = Range(crash[0] * P, (crash[0] + crash[1]) * P, "Crash kernel")
        plan = Plan(mm, kind="crash", crash_region=cr, totalram_pages=1 << 40)
    else:
        cr = None
        plan = Plan(mm, totalram_pages=1 << 40)
    for size, align, lo, hi, top in reqs:
        max_addr = None if hi is None else hi * P - 1
        try:
            seg = plan.add_segment("s", b"\x00" * size, align=align, min_addr=lo * P, max_addr=max_addr, top_down=top)
        except PlanError:
            continue
        assert seg.mem % align == 0 and seg.memsz % P == 0 and seg.memsz >= size
        assert seg.mem >= lo * P and (max_addr is None or seg.end - 1 <= max_addr)
        assert mm.contains_ram(seg.mem, seg.end)
        if cr is not None:
            assert cr.start <= seg.mem and seg.end <= cr.end
    segs = sorted(plan.segments, key=lambda s: s.mem)
    for a, b in zip(segs, segs[1:]):
        assert a.end <= b.mem
    if len(plan.segments) <= KEXEC_SEGMENT_MAX:
        plan.check()  # check() agrees with the placer
    else:
        with pytest.raises(PlanError, match="KEXEC_SEGMENT_MAX"):
            plan.check()
