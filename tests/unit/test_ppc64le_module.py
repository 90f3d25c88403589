"""The kexec_load and kexec_facts modules on a ppc64le (pseries) host tree, through FakeSyscalls:
the architecture's capture options and KEXEC_ARCH_PPC64, the crash region from the device tree,
kexec_file_load refused on Debian's kernels (no CONFIG_KEXEC_FILE), the ELF kernel in /boot."""

import os
import shutil

import pytest

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.syscalls import numbers
from ansible_collections.fleetboot.kexec.plugins.modules import kexec_facts, kexec_load

from tests.kernels import KernelUnavailable, kernel_package
from tests.unit import ppc64le_host
from tests.unit.conftest import newc_initrd
from tests.unit.test_module_kexec_load import SysrootSyscalls, run_module, set_boot_id

MiB = 1 << 20
VERSION = "6.1.0-56-powerpc64le"


@pytest.fixture(scope="module")
def kernel():
    try:
        return kernel_package(VERSION)
    except KernelUnavailable as err:
        pytest.skip("linux-image-%s unavailable: %s" % (VERSION, str(err).splitlines()[0]))


@pytest.fixture
def sysroot(tmp_path, kernel):
    dtb = ppc64le_host.qemu_dtb_or_skip()
    root = ppc64le_host.make_sysroot(str(tmp_path / "pseries"), dtb, VERSION, config=kernel.config,
                                     crash=(512 * MiB, 384 * MiB))
    set_boot_id(root, "3b1c3e5f-2b4d-4f6a-9c8e-1d3f5a7b9c0e")
    boot = os.path.join(root, "boot")
    shutil.copy(kernel.vmlinuz, os.path.join(boot, "vmlinux-" + VERSION))
    with open(os.path.join(boot, "initrd.img-" + VERSION), "wb") as f:
        f.write(newc_initrd(2 * MiB))
    return root


def load(capsys, sysroot, fake, **args):
    args.setdefault("sysroot", sysroot)
    return run_module(kexec_load.main, capsys, args, syscalls=fake)


def test_facts_find_the_elf_kernel_and_the_crash_region(capsys, sysroot):
    res = run_module(kexec_facts.main, capsys, {"sysroot": sysroot})
    kexec = res["ansible_facts"]["kexec"]
    assert kexec["arch"] == "ppc64le" and kexec["page_size"] == 65536
    assert kexec["crash_region"]["start"] == 512 * MiB and kexec["crash_region"]["size"] == 384 * MiB
    assert kexec["syscalls"] == {"kexec_load": True, "kexec_file_load": False}
    assert [(k["release"], os.path.basename(k["kernel"])) for k in kexec["installed_kernels"]] == \
        [(VERSION, "vmlinux-" + VERSION)]


def test_crash_load_gets_the_ppc64_capture_options_and_arch_flag(capsys, sysroot):
    fake = SysrootSyscalls(sysroot, arch="ppc64le")
    boot = os.path.join(sysroot, "boot")
    res = load(capsys, sysroot, fake, kernel=os.path.join(boot, "vmlinux-" + VERSION),
               initrd=os.path.join(boot, "initrd.img-" + VERSION), type="crash", reuse_cmdline=True)
    assert res["changed"] is True and not res.get("failed"), res
    words = res["cmdline"].split()
    assert words[-5:-1] == ["irqpoll", "maxcpus=1", "noirqdistrib", "reset_devices"]
    assert words[-1].startswith("elfcorehdr=") and "nr_cpus=1" not in words
    call = fake.calls[-1]
    assert call["call"] == "kexec_load"
    assert call["flags"] == numbers.KEXEC_ON_CRASH | numbers.KEXEC_ARCH_PPC64
    assert all(512 * MiB <= s["mem"] and s["mem"] + s["memsz"] <= 896 * MiB for s in call["segments"])
    assert all(s["mem"] % 65536 == 0 and s["memsz"] % 65536 == 0 for s in call["segments"])


def test_file_method_is_refused_before_any_syscall(capsys, sysroot):
    fake = SysrootSyscalls(sysroot, arch="ppc64le")
    res = load(capsys, sysroot, fake, kernel=os.path.join(sysroot, "boot", "vmlinux-" + VERSION), method="file",
               cmdline="root=/dev/vda")
    assert res.get("failed") and fake.calls == []
    assert "refused" in res["msg"] and "nothing was loaded" in res["msg"]
    assert "without kexec_file_load (CONFIG_KEXEC_FILE)" in res["msg"] and "classic" in res["msg"], res["msg"]


def test_auto_loads_with_kexec_load(capsys, sysroot):
    fake = SysrootSyscalls(sysroot, arch="ppc64le")
    res = load(capsys, sysroot, fake, kernel=os.path.join(sysroot, "boot", "vmlinux-" + VERSION),
               cmdline="root=/dev/vda console=hvc0")
    assert res["method"] == "classic" and fake.names() == ["kexec_load"]
    assert fake.calls[0]["flags"] == numbers.KEXEC_ARCH_PPC64
    assert [s["what"] for s in res["segments"]] == ["kernel", "dtb", "purgatory"]
