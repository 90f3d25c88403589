"""The lab's pure parts: cache key, QEMU command line, inventory, exit reasons, state."""

import gzip
import io
import json
import lzma
import os
import shutil
import struct
import subprocess
import sys

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from lab import image as lab_image  # noqa: E402
from lab.fleet import Fleet, inventory_yaml  # noqa: E402
from lab.image import LabError  # noqa: E402
from lab.vm import VM, _proc_start_time, exit_reason  # noqa: E402


class FakeImage:
    directory = "/cache/abc"
    disk = "/cache/abc/disk.raw"
    key = "/cache/abc/id_ed25519"

    def kernel(self, release):
        return "/cache/abc/boot/vmlinuz-" + release

    def initrd(self, release, debian=False):
        return "/cache/abc/boot/%sinitrd.img-%s" % ("debian/" if debian else "", release)

    def manifest(self):
        return {"boot_kernel": "6.1.0-54-amd64"}


def test_recipe_key_is_stable_and_follows_the_recipe(tmp_path, monkeypatch):
    first = lab_image.recipe_key()
    assert first == lab_image.recipe_key()
    copy = tmp_path / "recipe"
    shutil.copytree(lab_image.RECIPE_DIR, str(copy))
    monkeypatch.setattr(lab_image, "RECIPE_DIR", str(copy))
    assert lab_image.recipe_key() == first
    with open(str(copy / "packages.txt"), "a") as f:
        f.write("vim-tiny\n")
    assert lab_image.recipe_key() != first
    assert "vim-tiny" in lab_image.packages()


def test_x86_recipe_key_follows_the_first_boot_initramfs(monkeypatch):
    first = lab_image.recipe_key()
    monkeypatch.setattr(initramfs, "VERSION", initramfs.VERSION + 1)
    assert lab_image.recipe_key() != first
    monkeypatch.undo()
    monkeypatch.setattr(arches.X86_64, "modules", arches.X86_64.modules + ("virtio_scsi",))
    assert lab_image.recipe_key() != first
    monkeypatch.undo()
    assert lab_image.recipe_key() == first


def test_configured_tree_masks_units_and_generators_and_has_no_console_login(tmp_path):
    tree = str(tmp_path / "tree")
    lab_image._configure_tree(tree, "ssh-ed25519 AAAA lab\n")  # pylint: disable=protected-access
    units = os.path.join(tree, "etc/systemd/system")
    generators = os.path.join(tree, "etc/systemd/system-generators")
    for where, recipe in ((units, "masked-units.txt"), (generators, "masked-generators.txt")):
        names = lab_image._recipe_lines(recipe)  # pylint: disable=protected-access
        assert names and sorted(os.listdir(where)) == sorted(names)
        assert all(os.readlink(os.path.join(where, n)) == "/dev/null" for n in names)
    assert "systemd-update-utmp.service" in os.listdir(units)
    # SSH needs none of them; the fstab generator (root's mount options) stays.
    assert "ssh.service" not in os.listdir(units) and "systemd-networkd.service" not in os.listdir(units)
    assert "systemd-fstab-generator" not in os.listdir(generators)
    assert "systemd-getty-generator" in os.listdir(generators)
    assert not [d for d in os.listdir(units) if d.startswith("serial-getty")]
    with open(os.path.join(tree, "root/.ssh/authorized_keys")) as f:
        assert f.read() == "ssh-ed25519 AAAA lab\n"


def test_reboot_timing_vms_boot_debians_initrd_as_a_kexec_does(tmp_path):
    """First boots take the lab's small initramfs; a VM whose cold reboots are timed against kexec
    (demo, benchmark) boots the Debian initrd the image keeps a copy of, and remembers that."""
    directory = tmp_path / "image"
    (directory / "boot" / "debian").mkdir(parents=True)
    (directory / "manifest.json").write_text(json.dumps({"boot_kernel": "6.1.0-54-amd64"}))
    for rel in ("boot/initrd.img-6.1.0-56-amd64", "boot/debian/initrd.img-6.1.0-56-amd64"):
        (directory / rel).write_bytes(b"070701")
    image = lab_image.Image(str(directory))
    lab_vm = VM("vm1", str(tmp_path / "vm1"), image, kernel="6.1.0-56-amd64", port=40022)
    timed = VM("vm2", str(tmp_path / "vm2"), image, kernel="6.1.0-56-amd64", port=40023, no_reboot=False,
               debian_initrd=True)
    for vm, expected in ((lab_vm, "boot/initrd.img-6.1.0-56-amd64"), (timed, "boot/debian/initrd.img-6.1.0-56-amd64")):
        cmd = vm.qemu_command()
        assert cmd[cmd.index("-initrd") + 1] == str(directory / expected)
    os.makedirs(timed.directory)
    timed.save()
    assert VM.load(timed.directory, image).debian_initrd is True
    # An image without the copy (arm64, ppc64le: they boot the lab's initramfs everywhere).
    assert image.initrd("6.1.0-54-amd64", debian=True) == str(directory / "boot/initrd.img-6.1.0-54-amd64")


def test_recipe_installs_both_kernels_and_no_kexec_tools():
    pkgs = lab_image.packages()
    assert "linux-image-6.1.0-54-amd64" in pkgs and "linux-image-6.1.0-56-amd64" in pkgs
    assert "kexec-tools" not in pkgs  # the loader under test must do the job alone
    assert lab_image.BOOT_KERNEL == "6.1.0-54-amd64"


def test_qemu_command_line(tmp_path):
    vm = VM("vm1", str(tmp_path), FakeImage(), memory=2048, cpus=2, append="crashkernel=256M",
            port=40022)
    cmd = vm.qemu_command()
    joined = " ".join(cmd)
    assert cmd[0] == "qemu-system-x86_64"
    assert "-accel tcg" in joined and "-no-reboot" in cmd
    assert "-m 2048" in joined and "-smp 2" in joined
    assert "hostfwd=tcp:127.0.0.1:40022-:22" in joined  # loopback only
    assert cmd[cmd.index("-kernel") + 1].endswith("vmlinuz-6.1.0-54-amd64")
    assert cmd[cmd.index("-initrd") + 1].endswith("initrd.img-6.1.0-54-amd64")
    assert cmd[cmd.index("-append") + 1] == "console=ttyS0 root=/dev/vda rw crashkernel=256M"
    assert "file:" + vm.serial_log in cmd
    assert "pflash" not in joined


def test_qemu_command_line_uefi_and_reboot_allowed(tmp_path):
    vm = VM("vm1", str(tmp_path), FakeImage(), uefi=True, no_reboot=False, port=1)
    joined = " ".join(vm.qemu_command())
    assert "-no-reboot" not in joined
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd" in joined
    assert "unit=1,file=%s" % vm.efivars in joined


def test_vm_state_round_trips(tmp_path):
    vm = VM("vm3", str(tmp_path), FakeImage(), memory=1536, append="quiet", port=5555)
    vm.pid, vm.start_time = 1234, 99
    vm.save()
    again = VM.load(str(tmp_path), FakeImage())
    assert again.to_dict() == vm.to_dict()


def test_inventory_is_yaml_with_lab_only_ssh_options():
    text = inventory_yaml([("vm1", 40001, {}), ("vm2", 40002, {"kdump": True})], "/k/id")
    inv = yaml.safe_load(text)
    lab = inv["all"]["children"]["lab"]
    assert lab["hosts"] == {"vm1": {"ansible_port": 40001},
                            "vm2": {"ansible_port": 40002, "kdump": True}}
    assert lab["vars"]["ansible_ssh_private_key_file"] == "/k/id"
    assert "StrictHostKeyChecking=no" in lab["vars"]["ansible_ssh_common_args"]
    assert lab["vars"]["ansible_pipelining"] is True
    assert "vars" not in inv["all"]  # nothing global: other hosts keep host key checking


@pytest.mark.parametrize("console,qemu,reason", [
    ("[ 47.4] reboot: Restarting system\n[ 47.4] reboot: machine restart\n", "", "firmware reset"),
    ("[ 3.1] reboot: Power down\n", "", "powered off"),
    ("Kernel panic - not syncing: sysrq triggered crash\n", "", "kernel panic"),
    ("fleetboot purgatory: sha256 mismatch in segment 1, refusing to boot\n", "", "stopped in purgatory"),
    ("[ 9.0] reboot: Restarting system\n", "qemu-system-x86_64: terminating on signal 15 from pid 9\n",
     "killed"),
    ("kexec_core: Starting new kernel\nreboot: Restarting system\n", "", "firmware reset"),
    ("", "qemu: something odd\n", "exited without a known last word (QEMU said: qemu: something odd)"),
])
def test_exit_reason(tmp_path, console, qemu, reason):
    serial, qlog = tmp_path / "serial.log", tmp_path / "qemu.log"
    serial.write_text(console)
    qlog.write_text(qemu)
    assert exit_reason(str(serial), str(qlog)).startswith(reason)


def test_exit_reason_takes_the_last_event(tmp_path):
    serial = tmp_path / "serial.log"
    serial.write_text("reboot: Restarting system\n...booted again...\nreboot: Power down\n")
    assert exit_reason(str(serial)).startswith("powered off")


def test_proc_start_time_tells_live_from_gone():
    assert _proc_start_time(os.getpid()) > 0
    assert _proc_start_time(2 ** 22 + 12345) is None


def test_fleet_without_state_gives_a_clear_error(tmp_path):
    fleet = Fleet("nothing", root=str(tmp_path))
    with pytest.raises(LabError, match="no lab fleet named 'nothing' is up.*python -m lab up"):
        fleet.load()
    fleet.down()  # taking down a fleet that is not up is harmless


def test_fleet_up_without_paramiko_fails_before_starting_a_vm(tmp_path, monkeypatch):
    from lab import fleet as lab_fleet
    started = []
    monkeypatch.setattr(lab_fleet.ssh, "paramiko", None)
    monkeypatch.setattr(lab_fleet.foreign, "image_for", lambda *a, **k: started.append("image"))
    monkeypatch.setattr(VM, "start", lambda vm, **k: started.append(vm.name))
    with pytest.raises(LabError, match=r"paramiko is missing.*\.venv/bin/python -m lab"):
        Fleet("nossh", root=str(tmp_path)).up(hosts=1, out=io.StringIO())
    assert started == [] and not os.path.exists(str(tmp_path / "nossh"))


def test_waiting_for_ssh_without_paramiko_stops_at_once(monkeypatch):
    from lab import ssh as lab_ssh

    class Running:
        name, port = "vm1", 1

        @staticmethod
        def running():
            return True
    monkeypatch.setattr(lab_ssh, "paramiko", None)
    monkeypatch.setattr(lab_ssh.time, "sleep", lambda s: pytest.fail("it waited instead of failing"))
    with pytest.raises(LabError, match="paramiko is missing"):
        lab_ssh.wait_answering(Running(), "/nonexistent/key", timeout=60)


def test_lab_cli_reports_errors_without_traceback(tmp_path, monkeypatch, capsys):
    from lab import cli
    monkeypatch.setenv("FLEETBOOT_LAB_STATE", str(tmp_path))
    assert cli.main(["--name", "ghost", "status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lab: error: no lab fleet named 'ghost'")
    assert "Traceback" not in err


# -- foreign architectures (arm64, ppc64le) ---------------------------------------------------------

from lab import arches, foreign, initramfs  # noqa: E402


class FakeForeignImage(FakeImage):
    def __init__(self, arch):
        self.arch = arch

    def kernel(self, release):
        return "/cache/abc/boot/%s%s" % (arches.get(self.arch).kernel_file, release)

    def manifest(self):
        return {"boot_kernel": arches.get(self.arch).boot_kernel, "arch": self.arch}


def arg_after(cmd, flag, nth=0):
    """The value following the ``nth`` occurrence of ``flag`` in an argv."""
    positions = [i for i, a in enumerate(cmd) if a == flag]
    return cmd[positions[nth] + 1]


def test_arch_names_lists_and_aliases():
    assert arches.get("aarch64") is arches.ARM64 and arches.get("ppc64el") is arches.PPC64LE
    assert arches.get("amd64") is arches.X86_64
    assert [a.name for a in arches.parse_list("all")] == ["x86_64", "arm64", "ppc64le"]
    assert [a.name for a in arches.parse_list("arm64, x86_64,arm64")] == ["arm64", "x86_64"]
    with pytest.raises(LabError, match="unknown lab architecture 's390x'.*x86_64, arm64, ppc64le"):
        arches.parse_list("arm64,s390x")
    with pytest.raises(LabError, match="no architecture given"):
        arches.parse_list(" , ")
    assert {a.group for a in arches.ARCHES.values()} == {"lab_x86_64", "lab_arm64", "lab_ppc64le"}


def test_arm64_qemu_command_line_with_qemus_device_tree(tmp_path):
    vm = VM("vm1", str(tmp_path), FakeForeignImage("arm64"), memory=2048, append="crashkernel=256M",
            port=40022, arch="arm64")
    cmd = vm.qemu_command()
    assert cmd[0] == "qemu-system-aarch64"
    assert arg_after(cmd, "-M") == "virt" and arg_after(cmd, "-cpu") == "cortex-a72"
    # A 64 MiB translation buffer and no KPTI: the lab's two arm64 TCG speed-ups (lab/arches.py).
    assert arg_after(cmd, "-accel") == "tcg,tb-size=64"
    assert arg_after(cmd, "-smp") == "1" and arg_after(cmd, "-m") == "2048"
    assert arg_after(cmd, "-kernel").endswith("/boot/vmlinuz-6.1.0-54-arm64")
    assert arg_after(cmd, "-initrd").endswith("/boot/initrd.img-6.1.0-54-arm64")
    assert arg_after(cmd, "-append") == "console=ttyAMA0 root=/dev/vda rw kpti=0 crashkernel=256M"
    devices = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-device"]
    assert devices == ["virtio-blk-pci,drive=disk0", "virtio-rng-pci", "virtio-net-pci,netdev=net0"]
    assert "file=%s,if=none,id=disk0,format=qcow2,cache=unsafe" % vm.overlay in cmd
    assert "user,id=net0,hostfwd=tcp:127.0.0.1:40022-:22" in cmd  # loopback only
    assert "-no-reboot" in cmd and "file:" + vm.serial_log in cmd
    assert not any("pflash" in a for a in cmd)  # no firmware: the kernel gets QEMU's own device tree


def test_arm64_uefi_boots_through_aavmf_with_a_per_vm_variable_store(tmp_path):
    vm = VM("vm1", str(tmp_path), FakeForeignImage("arm64"), uefi=True, no_reboot=False, port=1, arch="arm64")
    cmd = vm.qemu_command()
    assert vm.efivars == os.path.join(str(tmp_path), "AAVMF_VARS.fd")
    assert arg_after(cmd, "-drive", 1) == "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/AAVMF/AAVMF_CODE.fd"
    assert arg_after(cmd, "-drive", 2) == "if=pflash,format=raw,unit=1,file=" + vm.efivars
    assert "-no-reboot" not in cmd
    assert "-kernel" in cmd  # QEMU hands the kernel to the firmware (fw_cfg), which runs its EFI stub


def test_ppc64le_qemu_command_line_boots_the_elf_vmlinux_on_pseries(tmp_path):
    vm = VM("vm2", str(tmp_path), FakeForeignImage("ppc64le"), port=40023, arch="ppc64le")
    cmd = vm.qemu_command()
    assert cmd[0] == "qemu-system-ppc64"
    assert arg_after(cmd, "-M").startswith("pseries,") and arg_after(cmd, "-cpu") == "POWER9"
    assert arg_after(cmd, "-kernel").endswith("/boot/vmlinux-6.1.0-54-powerpc64le")
    assert arg_after(cmd, "-append") == "console=hvc0 root=/dev/vda rw"
    assert arg_after(cmd, "-accel") == "tcg"  # the arm64 tuning is arm64's alone
    assert "virtio-rng-pci" in cmd and "-no-reboot" in cmd
    with pytest.raises(LabError, match="ppc64le VMs cannot boot through UEFI"):
        VM("vm3", str(tmp_path / "vm3"), FakeForeignImage("ppc64le"), uefi=True, arch="ppc64le").prepare()


def test_build_vm_has_no_network_and_writes_the_raw_disk():
    cmd = arches.qemu_command(arches.PPC64LE, "b", 1024, 1, "/k", "/i", "console=hvc0 init=/x", "/w/disk.raw",
                              "/w/serial.log", disk_format="raw")
    assert "-nic" in cmd and arg_after(cmd, "-nic") == "none" and "-netdev" not in " ".join(cmd)
    assert "file=/w/disk.raw,if=none,id=disk0,format=raw,cache=unsafe" in cmd
    with pytest.raises(LabError, match="not x86_64"):
        arches.qemu_command(arches.X86_64, "b", 1024, 1, "/k", "/i", "", "/d", "/s")


def test_foreign_vm_state_round_trips_and_old_state_is_x86(tmp_path):
    vm = VM("vm2", str(tmp_path), FakeForeignImage("ppc64le"), port=5555, arch="ppc64le")
    vm.pid, vm.start_time = 1234, 99
    vm.save()
    again = VM.load(str(tmp_path), FakeForeignImage("ppc64le"))
    assert again.to_dict() == vm.to_dict() and again.arch is arches.PPC64LE
    state = json.loads((tmp_path / "vm.json").read_text())
    del state["arch"]  # written before the lab knew other architectures
    (tmp_path / "vm.json").write_text(json.dumps(state))
    assert VM.load(str(tmp_path), FakeImage()).arch is arches.X86_64


def test_mixed_inventory_has_a_group_per_arch():
    text = inventory_yaml([("vm1", 40001, {}), ("vm2", 40002, {"ansible_ssh_private_key_file": "/k/id-arm64"})],
                          "/k/id", groups={"lab_x86_64": ["vm1"], "lab_arm64": ["vm2"]})
    inv = yaml.safe_load(text)["all"]["children"]
    assert set(inv) == {"lab", "lab_x86_64", "lab_arm64"}
    assert set(inv["lab"]["hosts"]) == {"vm1", "vm2"}
    assert inv["lab_arm64"] == {"hosts": {"vm2": None}} or inv["lab_arm64"] == {"hosts": {"vm2": {}}}
    assert inv["lab"]["hosts"]["vm2"]["ansible_ssh_private_key_file"] == "/k/id-arm64"


def test_fleet_keys_per_architecture(tmp_path):
    fleet = Fleet("mixed", root=str(tmp_path))
    fleet.vms = [VM("vm%d" % (i + 1), str(tmp_path / str(i)), FakeForeignImage(a), arch=a)
                 for i, a in enumerate(("x86_64", "arm64", "ppc64le"))]
    assert [fleet.key_for(vm) for vm in fleet.vms] == [
        fleet.key_file, fleet.key_file + "-arm64", fleet.key_file + "-ppc64le"]


def test_foreign_recipe_keys_differ_per_arch_and_follow_kernels_and_initramfs(monkeypatch):
    arm, ppc = foreign.recipe_key(arches.ARM64), foreign.recipe_key(arches.PPC64LE)
    assert arm.startswith("arm64-") and ppc.startswith("ppc64le-") and arm[6:] != ppc[8:]
    assert arm == foreign.recipe_key(arches.ARM64)
    assert lab_image.recipe_key() not in (arm, ppc)
    other = arches.Arch("arm64", "arm64", "qemu-system-aarch64", "ttyAMA0", ("6.1.0-54-arm64",), "6.1.0-54-arm64",
                        modules=arches.ARM64.modules, machine=arches.ARM64.machine)
    assert foreign.recipe_key(other) != arm
    monkeypatch.setattr(initramfs, "VERSION", initramfs.VERSION + 1)
    assert foreign.recipe_key(arches.ARM64) != arm
    monkeypatch.undo()
    monkeypatch.setattr(foreign, "BUILD_STEPS_VERSION", foreign.BUILD_STEPS_VERSION + 1)
    assert foreign.recipe_key(arches.ARM64) != arm


def test_foreign_packages_and_second_stage():
    pkgs = foreign.packages()
    assert not [p for p in pkgs if p.startswith("linux-image-")] and "kexec-tools" not in pkgs
    assert {"systemd", "openssh-server", "python3", "initramfs-tools", "kmod", "linux-base"} <= set(pkgs)
    script = foreign.stage2_script(arches.PPC64LE)
    assert "debootstrap --second-stage" in script and "dpkg -i $S/debs/*.deb" in script
    # update-initramfs is diverted while the kernels install and never runs; the config keeps it off.
    assert script.index("dpkg-divert --local --rename --add /usr/sbin/update-initramfs") < script.index("dpkg -i")
    assert "update_initramfs=no" in script
    assert "for k in 6.1.0-54-powerpc64le 6.1.0-56-powerpc64le 6.12.118+deb12-powerpc64le;" in script
    assert script.rstrip().endswith("finish") and foreign.STAGE2_DONE in script


def test_prune_keeps_other_architectures(tmp_path):
    def image(name, arch=None):
        os.makedirs(str(tmp_path / name))
        if arch is not False:
            manifest = {} if arch is None else {"arch": arch}
            (tmp_path / name / "manifest.json").write_text(json.dumps(manifest))
    image("x86old")
    image("x86new")
    image("arm64-old", "arm64")
    image("arm64-new", "arm64")
    image("ppc64le-a", "ppc64le")
    image("arm64-b.building", False)
    image(".apt-arm64", False)
    image("junk", False)
    lab_image._prune(str(tmp_path), keep="arm64-new", arch="arm64")
    assert sorted(os.listdir(str(tmp_path))) == [".apt-arm64", "arm64-b.building", "arm64-new", "ppc64le-a",
                                                 "x86new", "x86old"]
    lab_image._prune(str(tmp_path), keep="x86new")
    assert sorted(os.listdir(str(tmp_path))) == [".apt-arm64", "arm64-b.building", "arm64-new", "ppc64le-a",
                                                 "x86new"]


# A kernel module is an ELF relocatable object; the initramfs builder reads only its .modinfo.
def fake_module(path, depends="", compress=False):
    modinfo = b"license=GPL\0depends=" + depends.encode() + b"\0vermagic=6.1.0 SMP\0"
    shstrtab = b"\0.modinfo\0.shstrtab\0"
    shoff = 64 + len(modinfo) + len(shstrtab)
    shoff += -shoff % 8
    header = struct.pack("<4sBBBB8xHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 1, 183, 1, 0, 0, shoff, 0,
                         64, 0, 0, 64, 3, 2)
    sections = [struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
                struct.pack("<IIQQQQIIQQ", 1, 1, 2, 0, 64, len(modinfo), 0, 0, 1, 0),
                struct.pack("<IIQQQQIIQQ", 10, 3, 0, 0, 64 + len(modinfo), len(shstrtab), 0, 0, 1, 0)]
    body = header + modinfo + shstrtab
    data = body + b"\0" * (shoff - len(body)) + b"".join(sections)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + (".xz" if compress else ""), "wb") as f:
        f.write(lzma.compress(data) if compress else data)
    return data


def fake_kernel_tree(root, release="6.1.0-99-arm64"):
    mods = os.path.join(str(root), "lib", "modules", release)
    fake_module(os.path.join(mods, "kernel/fs/ext4/ext4.ko"), "mbcache,jbd2,crc16")
    fake_module(os.path.join(mods, "kernel/fs/jbd2/jbd2.ko"))
    fake_module(os.path.join(mods, "kernel/fs/mbcache.ko"), compress=True)
    fake_module(os.path.join(mods, "kernel/lib/crc16.ko"))
    fake_module(os.path.join(mods, "kernel/drivers/block/virtio_blk.ko"), "virtio,virtio_ring")
    fake_module(os.path.join(mods, "kernel/drivers/char/hw_random/virtio-rng.ko"), "virtio")
    fake_module(os.path.join(mods, "kernel/drivers/scsi/unused.ko"))
    with open(os.path.join(mods, "modules.builtin"), "w") as f:
        f.write("kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\n")
    return release


def test_initramfs_modules_in_dependency_order_without_builtins(tmp_path):
    release = fake_kernel_tree(tmp_path)
    mods = initramfs.KernelModules(str(tmp_path), release)
    assert mods.load_order(["virtio", "virtio_blk", "virtio-rng", "ext4"]) == [
        "virtio_blk", "virtio_rng", "mbcache", "jbd2", "crc16", "ext4"]
    assert mods.stored_path("mbcache") == "kernel/fs/mbcache.ko"  # stored decompressed
    assert mods.data("mbcache")[:4] == b"\x7fELF"
    with pytest.raises(LabError, match="kernel 6.1.0-99-arm64 has no module virtio_net"):
        mods.load_order(["virtio_net"])


def test_initramfs_archive_is_what_the_kernel_and_cpio_read(tmp_path):
    release = fake_kernel_tree(tmp_path / "k")
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF-not-run-here")
    out = str(tmp_path / "initrd.img")
    held = initramfs.build(str(tmp_path / "k"), release, str(busybox), out, ["virtio_blk", "ext4"])
    assert held["modules"] == ["virtio_blk", "mbcache", "jbd2", "crc16", "ext4"]
    assert "lib/modules/%s/kernel/fs/mbcache.ko" % release in held["files"]
    assert not [f for f in held["files"] if "unused" in f]
    with open(out, "rb") as f:
        data = f.read()
    assert data[:2] == b"\x1f\x8b"
    from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.core.initramfs import check_initramfs
    check_initramfs(data, out)  # the loader's own walk of what the kernel's unpacker accepts
    listing = subprocess.run(["cpio", "-itv"], input=gzip.decompress(data), stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, check=True).stdout.decode()
    lines = {line.split()[-1] if "->" not in line else line.split()[-3]: line for line in listing.splitlines()}
    assert lines["dev/console"].split()[0] == "crw-------" and lines["dev/console"].split()[4:6] == ["5,", "1"]
    assert lines["init"].startswith("-rwxr-xr-x") and lines["bin/busybox"].startswith("-rwxr-xr-x")
    assert lines["bin/switch_root"].endswith("-> busybox")
    init = subprocess.run(["cpio", "-i", "--to-stdout", "init"], input=gzip.decompress(data),
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True).stdout.decode()
    assert init.startswith("#!/bin/busybox sh\n")
    stored = ("drivers/block/virtio_blk.ko", "fs/mbcache.ko", "fs/jbd2/jbd2.ko", "lib/crc16.ko", "fs/ext4/ext4.ko")
    order = " ".join("kernel/" + p for p in stored)
    assert "for module in %s; do" % order in init
    assert 'exec switch_root /root "$init"' in init


@pytest.mark.parametrize("release,first,absent", [
    ("6.1.0-56-powerpc64le", ["virtio_ring", "virtio", "virtio_pci_modern_dev"], []),
    ("6.12.118+deb12-powerpc64le", ["virtio_blk"], ["virtio", "virtio_pci"]),  # built in, .ko.xz modules
    ("6.1.0-56-arm64", ["virtio_pci_modern_dev"], ["virtio", "virtio_ring"]),
])
def test_initramfs_modules_of_real_debian_kernels(release, first, absent):
    from tests.kernels import KernelUnavailable, kernel_package
    try:
        package = kernel_package(release)
    except KernelUnavailable as err:
        pytest.skip("linux-image-%s unavailable: %s" % (release, str(err).splitlines()[0]))
    order = initramfs.KernelModules(package.root, release).load_order(arches.VIRTIO_MODULES)
    assert order[:len(first)] == first
    assert not set(absent) & set(order)
    assert order[-1] == "ext4" and {"virtio_blk", "virtio_net", "virtio_rng", "crc32c_generic"} <= set(order)
    assert order.index("jbd2") < order.index("ext4") and order.index("mbcache") < order.index("ext4")


def test_mixed_fleet_up_writes_one_inventory_with_arch_groups(tmp_path, monkeypatch):
    from lab import fleet as lab_fleet

    def image_for(arch, log_to=None):
        directory = tmp_path / "cache" / arch.name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "id_ed25519").write_text("key of " + arch.name)
        (directory / "manifest.json").write_text(json.dumps({"arch": arch.name, "boot_kernel": arch.boot_kernel,
                                                             "kernels": list(arch.kernels)}))
        return lab_image.Image(str(directory))

    started = []

    def start(vm, die_with_parent=False):
        vm.port, vm.pid = 40001 + len(started), 1000 + len(started)
        started.append(vm.qemu_command()[0])
        vm.save()

    monkeypatch.setattr(lab_fleet.foreign, "image_for", image_for)
    monkeypatch.setattr(VM, "prepare", lambda vm: os.makedirs(vm.directory, exist_ok=True))
    monkeypatch.setattr(VM, "start", start)
    monkeypatch.setattr(Fleet, "wait_all", lambda self, timeout: None)
    quiet = io.StringIO()
    fleet = Fleet("mixed", root=str(tmp_path / "state")).up(hosts=1, arch="x86_64,arm64,ppc64le", uefi=True, out=quiet)
    assert started == ["qemu-system-x86_64", "qemu-system-aarch64", "qemu-system-ppc64"]
    assert [(vm.name, vm.arch.name, vm.uefi) for vm in fleet.vms] == [
        ("vm1", "x86_64", True), ("vm2", "arm64", True), ("vm3", "ppc64le", False)]  # pseries has no UEFI
    inv = yaml.safe_load(open(fleet.inventory))["all"]["children"]
    assert set(inv["lab"]["hosts"]) == {"vm1", "vm2", "vm3"}
    assert {g: set(inv[g]["hosts"]) for g in ("lab_x86_64", "lab_arm64", "lab_ppc64le")} == {
        "lab_x86_64": {"vm1"}, "lab_arm64": {"vm2"}, "lab_ppc64le": {"vm3"}}
    with open(inv["lab"]["hosts"]["vm3"]["ansible_ssh_private_key_file"]) as f:
        assert f.read() == "key of ppc64le"
    again = Fleet("mixed", root=str(tmp_path / "state")).load()
    assert [(vm.arch.name, vm.image.directory) for vm in again.vms] == [
        (a, str(tmp_path / "cache" / a)) for a in ("x86_64", "arm64", "ppc64le")]
    with pytest.raises(LabError, match="has no kernel 6.12.1"):
        Fleet("k", root=str(tmp_path / "state")).up(hosts=1, arch="arm64", kernel="6.12.1", out=quiet)
