"""The lab's pure parts: cache key, QEMU command line, inventory, exit reasons, state."""

import os
import shutil
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

    def initrd(self, release):
        return "/cache/abc/boot/initrd.img-" + release

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


def test_lab_cli_reports_errors_without_traceback(tmp_path, monkeypatch, capsys):
    from lab import cli
    monkeypatch.setenv("FLEETBOOT_LAB_STATE", str(tmp_path))
    assert cli.main(["--name", "ghost", "status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lab: error: no lab fleet named 'ghost'")
    assert "Traceback" not in err
