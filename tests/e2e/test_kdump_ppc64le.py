"""kdump on ppc64le (pseries, 2 GiB, TCG) through the kdump role with our kexec_load crash load.

Two playbook runs on one VM: the first reserves crashkernel= by a kexec reboot (the pseries crash
region shows only in the device tree) and loads the crash kernel with the unit; the second
crashes it with sysrq through the role's kdump_test.  Then, from the dump directory the capture
kernel wrote: its own log says it ran at the address the loader put it (``physical_start``, which
ppc64 prints only when not at 0: __run_at_load worked), the crashed kernel's log has the sysrq
line, and the vmcore's PT_LOADs cover the RAM outside the crash region.
"""

import base64
import re

import pytest

from .foreign_lab import require_qemu
from .kdump_flow import DUMP_DIRS, VM, playbook, readelf_loads, recap, sh, union

MiB = 1 << 20


@pytest.fixture(scope="module")
def fleet(fleet_factory):
    require_qemu("ppc64le")
    return fleet_factory("ppc64le-kdump", hosts=1, arch="ppc64le", memory=2048, no_reboot=False)


def dt_number(fleet, path):
    """A big-endian number from the live device tree (``chosen/linux,crashkernel-base``)."""
    return int(sh(fleet, "od -An -tx1 /proc/device-tree/%s | tr -d ' \\n'" % path).strip(), 16)


def test_kdump_role_and_a_real_crash_on_pseries(fleet, tmp_path):
    pid = fleet.vm(VM).pid
    assert "crashkernel=" not in sh(fleet, "cat /proc/cmdline")
    # The loader's own sparse copy (no makedumpfile): the saved vmcore is then the ELF file our core
    # header describes, read below on the controller.
    args = ["-e", "kdump_method=classic", "-e", "kdump_reboot_ok=true", "-e", "kdump_makedumpfile=never"]

    # The role: crashkernel= from the ppc64le table (384M at 2 GiB), applied by a kexec reboot.
    rc, out = playbook(fleet, *args)
    assert rc == 0, out
    assert fleet.vm(VM).firmware_reset_count() == 0 and fleet.vm(VM).pid == pid
    assert "crashkernel=384M" in sh(fleet, "cat /proc/cmdline").split()
    assert "Crash kernel" not in sh(fleet, "cat /proc/iomem")
    base, size = dt_number(fleet, "chosen/linux,crashkernel-base"), dt_number(fleet, "chosen/linux,crashkernel-size")
    assert size == 384 * MiB and base % (64 << 10) == 0
    rtas = dt_number(fleet, "rtas/linux,rtas-base")
    assert sh(fleet, "cat /sys/kernel/kexec_crash_loaded").strip() == "1"
    journal = sh(fleet, "journalctl -b -u fleetboot-kdump-load.service --no-pager")
    assert re.search(r"method classic\s+kind crash", journal), journal
    # The unit's plan report: "  kernel  <address> <memsz> <bufsz> <sha256>".
    loaded_at = int(re.search(r"\skernel\s+(0x[0-9a-f]+)\s+0x", journal).group(1), 16)
    assert base <= loaded_at < base + size
    assert "maxcpus=1" in journal and "noirqdistrib" in journal  # the ppc64le capture options
    ram = []
    for line in sh(fleet, "cat /proc/iomem").splitlines():
        m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) : System RAM$", line)
        if m:
            start, end = int(m.group(1), 16), int(m.group(2), 16) + 1
            ram += [(s, e) for s, e in ((start, min(end, base)), (max(start, base + size), end)) if s < e]

    # The crash: sysrq, capture kernel, vmcore saved, reboot through the firmware, host back.
    rc, out = playbook(fleet, *(args + ["-e", "kdump_test=true"]))
    assert rc == 0, out
    assert recap(out)["failed"] == 0
    assert fleet.vm(VM).firmware_reset_count() == 1 and fleet.vm(VM).pid == pid
    dumps = sh(fleet, DUMP_DIRS).split()
    assert len(dumps) == 1 and not dumps[0].endswith(".incomplete"), dumps
    dump = "/var/crash/" + dumps[0]
    assert "sysrq: Trigger a crash" in sh(fleet, "cat %s/dmesg.txt" % dump)

    # The capture kernel's own log: it ran where the loader put it, inside the crash region.
    own = sh(fleet, "cat %s/capture-dmesg.txt" % dump)
    m = re.search(r"physical_start\s+= (0x[0-9a-f]+)", own)
    assert m, own[:3000]
    assert int(m.group(1), 16) == loaded_at
    assert "elfcorehdr=" in own and "maxcpus=1" in own

    # The dump's header, read on the controller: its PT_LOADs cover the RAM outside the region.
    head = sh(fleet, "head -c 1048576 %s/vmcore | base64 -w0" % dump, timeout=300)
    local = tmp_path / "vmcore.head"
    local.write_bytes(base64.b64decode(head))
    loads, listing = readelf_loads(str(local))
    covered = union((p, p + n) for p, n in loads)
    for start, end in union(ram):
        assert any(s <= start and end <= e for s, e in covered), (hex(start), hex(end), listing)
    # The region itself is not evidence, except firmware memory in it (RTAS, a page of it).
    in_region = [(p, n) for p, n in loads if p != 0 and base < p + n and p < base + size]
    assert all(p <= rtas < p + n and n <= 1 << 16 for p, n in in_region), (hex(rtas), listing)
    print("ppc64le kdump: region %#x+%#x, kernel loaded at %#x, capture kernel's physical_start %s, %d PT_LOADs"
          % (base, size, loaded_at, m.group(1), len(loads)))
