"""ppc64le (pseries, SLOF, TCG) without kexec-tools: our loader and purgatory on one VM.

In order, to spend one boot: ``--method file`` refused (Debian's ppc64el kernels have no
kexec_file_load); 6.1.0-54 -> 6.1.0-56 by kexec_load, 64 KiB pages, the new kernel moved to 0
as a normal ppc64 kernel does; 6.1.0-56 -> 6.12 (4 KiB pages); on 6.12 a segment corrupted
after digesting stops in purgatory with its message on the hypervisor console.
"""

import re

from .foreign_lab import answers_ansible_on_the_older_kernel, require_qemu
from .jump import cli, halted_in_purgatory, jump, ship_loader, wait_new_boot

OLD, NEW, NEW_4K = "6.1.0-54-powerpc64le", "6.1.0-56-powerpc64le", "6.12.118+deb12-powerpc64le"
MESSAGE = "fleetboot purgatory: sha256 mismatch in segment"


def load_args(release, method):
    return ["load", "--kernel", "/boot/vmlinux-" + release, "--initrd", "/boot/initrd.img-" + release,
            "--reuse-cmdline", "--method", method]


def read(fleet, vm, command):
    rc, out, err = fleet.run(vm.name, command)
    assert rc == 0, (command, out, err)
    return out.strip()


def kexec_into(fleet, vm, release, identity):
    """Load ``release`` by kexec_load, jump, and check the VM answers on it from the same QEMU."""
    rc, out, err = cli(fleet, vm.name, load_args(release, "classic"))
    assert rc == 0, out + err
    assert "kind normal" in out and "purgatory" in out, out
    assert read(fleet, vm, "cat /sys/kernel/kexec_loaded") == "1"
    old = jump(fleet, vm.name)
    assert wait_new_boot(fleet, vm.name, old, timeout=420) != old
    assert read(fleet, vm, "uname -r") == release
    assert vm.running() and (vm.pid, vm.start_time) == identity, vm.exit_reason()
    assert fleet.firmware_resets() == []
    # A normal ppc64 kernel copies itself down to 0 (it was loaded above the old one): _stext is
    # at KERNELBASE, and it does not report a non-zero physical_start.
    assert read(fleet, vm, "grep -w _stext /proc/kallsyms").split()[0] == "c000000000000000"
    log = read(fleet, vm, "dmesg")
    assert "physical_start" not in log
    # Our /chosen/rng-seed: the RNG is ready before init runs, not after waiting for entropy.
    lines = log.splitlines()
    crng = [i for i, line in enumerate(lines) if "crng init done" in line]
    init = [i for i, line in enumerate(lines) if "Run /init as init process" in line]
    assert crng and init and crng[0] < init[0], "\n".join(lines[:80])


def test_kexec_on_pseries_and_a_halt_in_purgatory(fleet_factory):
    require_qemu("ppc64le")
    fleet = fleet_factory("ppc64le-kexec", hosts=1, arch="ppc64le")
    vm = fleet.vms[0]
    identity = (vm.pid, vm.start_time)
    # The lab itself first: Ansible reaches the VM in its group, booted by SLOF on the older kernel.
    answers_ansible_on_the_older_kernel(fleet, "ppc64le")
    with open(vm.serial_log, "rb") as f:
        assert b"SLOF" in f.read()
    assert read(fleet, vm, "command -v kexec || echo absent; uname -r; getconf PAGESIZE").split() == \
        ["absent", OLD, "65536"]
    ship_loader(fleet, vm.name)

    # kexec_file_load does not exist in this kernel: refused up front, with the way out, nothing loaded.
    rc, out, err = cli(fleet, vm.name, load_args(NEW, "file"))
    assert rc == 1 and "Traceback" not in err, out + err
    assert "built without kexec_file_load (CONFIG_KEXEC_FILE)" in err and "--method classic" in err, err
    assert read(fleet, vm, "cat /sys/kernel/kexec_loaded") == "0"

    kexec_into(fleet, vm, NEW, identity)
    with open(vm.serial_log, errors="replace") as f:
        console = f.read()
    assert "kexec_core: Starting new kernel" in console and MESSAGE not in console

    kexec_into(fleet, vm, NEW_4K, identity)
    assert read(fleet, vm, "getconf PAGESIZE") == "4096"

    # Running a 4 KiB-page kernel now: a corrupted kernel segment must stop in purgatory.
    rc, out, err = cli(fleet, vm.name, load_args(NEW, "classic"), env={"FLEETBOOT_TEST_CORRUPT_SEGMENT": "kernel"})
    assert rc == 0 and "TEST HOOK: corrupted kernel" in out, out + err
    segments = re.findall(r"^\s+(\w+)\s+0x", out, re.M)
    jump(fleet, vm.name)
    line = halted_in_purgatory(fleet, vm, MESSAGE)
    assert line == "%s %d, refusing to boot" % (MESSAGE, segments.index("kernel")), line
