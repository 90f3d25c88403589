"""Reading a crashed ppc64le kernel's log from its vmcore: a synthetic EM_PPC64 core whose printk
ringbuffer lives in the linear map (KERNELBASE + physical), as on Book3S-64."""

import struct

import pytest

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import arch as archmod
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.arch.ppc64le.memory import Ppc64Memory
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.dump import printk, vmcore

from tests.unit import vmcore_builder as vb

KERNELBASE = 0xC000000000000000
EM_PPC64 = 21


class PpcKernel:
    """RAM from physical 0, the kernel image at 0, and a vmcoreinfo note: what the ringbuffer
    builder needs (it places the ring in the image, which is in the linear map on ppc64)."""

    def __init__(self, page_size, ram=((0, 0x40000), (0x100000, 0x20000))):
        self.mem = vb.PhysMemory(ram)
        self.image_next = 0x8000  # past the first page of "vectors"
        self.info = {"OSRELEASE": "6.1.0-56-powerpc64le", "PAGESIZE": str(page_size)}

    def image_var(self, size, align=8):
        paddr = (self.image_next + align - 1) & ~(align - 1)
        self.image_next = paddr + size
        assert self.image_next <= 0x40000
        return KERNELBASE + paddr, paddr

    def vmcoreinfo(self):
        return "".join("%s=%s\n" % kv for kv in self.info.items()).encode()


def ring(n):
    r = vb.Ringbuffer(count_bits=5, size_bits=11)
    for k in range(n):
        r.add(("ppc64 message %d" % k).encode(), ts_nsec=1000 * k + 3, caller_id=7)
    return r


@pytest.mark.parametrize("page_size", [65536, 4096])
def test_the_log_of_a_ppc64_dump(tmp_path, page_size):
    kernel = PpcKernel(page_size)
    r = ring(50)
    r.place(kernel, where="image")
    path = vb.write_core(str(tmp_path / "core"), kernel, machine=EM_PPC64)
    log = printk.kernel_log(path, archmod.vmcore_memory)
    assert log["osrelease"] == "6.1.0-56-powerpc64le"
    assert [(x["seq"], x["ts_nsec"], x["text"].encode()) for x in log["records"]] == r.expected()
    assert log["records"][-1]["text"] == "ppc64 message 49"
    assert archmod.for_elf_machine(EM_PPC64).name == "ppc64le"


def test_linear_map_reads_cross_pages_and_segments(tmp_path):
    kernel = PpcKernel(65536, ram=((0, 0x20000), (0x20000, 0x20000)))
    kernel.mem.write(0x1FFF8, b"ABCDEFGH")
    kernel.mem.write(0x20000, b"12345678")
    path = vb.write_core(str(tmp_path / "core"), kernel, machine=EM_PPC64)
    with vmcore.ElfCore(path) as core:
        mem = Ppc64Memory(core, core.vmcoreinfo())
        assert mem.page_size == 65536
        assert mem.read(KERNELBASE + 0x1FFF8, 16) == b"ABCDEFGH12345678"  # across a 64 KiB page and a PT_LOAD
        assert mem.u64(KERNELBASE + 0x20000) == struct.unpack("<Q", b"12345678")[0]
        assert mem.vtop(KERNELBASE + 0x123) == 0x123
        with pytest.raises(vmcore.VmcoreError, match="outside the crashed kernel's linear map"):
            mem.read(0xC008000000000000, 8)  # vmalloc
        with pytest.raises(vmcore.VmcoreError, match="outside"):
            mem.vtop(KERNELBASE + 0x40000)  # past the dump's memory


def test_a_page_size_that_is_no_page_size_is_refused(tmp_path):
    kernel = PpcKernel(12345)
    path = vb.write_core(str(tmp_path / "core"), kernel, machine=EM_PPC64)
    with vmcore.ElfCore(path) as core, pytest.raises(vmcore.VmcoreError, match="PAGESIZE=12345"):
        Ppc64Memory(core, core.vmcoreinfo())
