"""kexec_facts module: its main() run in-process against writable copies of recorded lab hosts."""

import json
import os
import shutil

import pytest

from ansible_collections.fleetboot.kexec.plugins.modules import kexec_facts

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYSROOTS = os.path.join(REPO, "tests", "fixtures", "sysroots")
BOOT_ID = "8a1c3e5f-2b4d-4f6a-9c8e-1d3f5a7b9c0e"

from tests.unit.module_args import patch_module_args


def facts(capsys, sysroot, check=False):
    args = {"sysroot": sysroot}
    if check:
        args["_ansible_check_mode"] = True
    capsys.readouterr()
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exc:
            kexec_facts.main()
    out = capsys.readouterr().out
    result = json.loads(out)
    assert bool(result.get("failed")) == (exc.value.code != 0), out
    return result


def make_sysroot(tmp_path, name, boot_id=BOOT_ID):
    root = str(tmp_path / name)
    shutil.copytree(os.path.join(SYSROOTS, name), root, symlinks=True)
    os.makedirs(os.path.join(root, "proc/sys/kernel/random"))
    write(root, "proc/sys/kernel/random/boot_id", boot_id + "\n")
    return root


def write(root, rel, text):
    path = os.path.join(root, rel)
    if not os.path.isdir(os.path.dirname(path)):
        os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write(text)
    return path


def test_lab_host_with_two_debian_kernels(capsys, tmp_path):
    root = make_sysroot(tmp_path, "lab-seabios-pc-2g-crash")
    for release in ("6.1.0-54-amd64", "6.1.0-56-amd64"):
        write(root, "boot/vmlinuz-" + release, "kernel")
        write(root, "boot/initrd.img-" + release, "initrd")
        write(root, "boot/System.map-" + release, "map")
    res = facts(capsys, root)
    assert res["changed"] is False and not res.get("failed"), res
    kexec = res["ansible_facts"]["kexec"]
    assert kexec["arch"] == "x86_64" and kexec["release"] == "6.1.0-54-amd64"
    assert kexec["boot_id"] == BOOT_ID
    assert kexec["cmdline"] == "console=ttyS0 root=/dev/vda rw crashkernel=256M"
    assert kexec["loaded"] is False and kexec["crash_loaded"] is False
    region = kexec["crash_region"]
    assert region["size"] == 256 << 20 and region["end"] - region["start"] == region["size"]
    assert kexec["lockdown"] == "none" and kexec["secure_boot"] is False and kexec["efi"] is False
    assert kexec["kexec_load_disabled"] is False
    assert kexec["syscalls"] == {"kexec_load": True, "kexec_file_load": True}
    assert kexec["auto_method"] == "classic"
    assert kexec["installed_kernels"] == [
        {"release": "6.1.0-56-amd64", "kernel": os.path.join(root, "boot/vmlinuz-6.1.0-56-amd64"),
         "initrd": os.path.join(root, "boot/initrd.img-6.1.0-56-amd64")},
        {"release": "6.1.0-54-amd64", "kernel": os.path.join(root, "boot/vmlinuz-6.1.0-54-amd64"),
         "initrd": os.path.join(root, "boot/initrd.img-6.1.0-54-amd64")},
    ]
    assert kexec["loaded_image"] is None and kexec["loaded_crash_image"] is None
    # The two top-level System RAM lines of its iomem; the crash region inside them counts.
    assert kexec["ram_size"] == (0x9fc00 - 0x1000) + (0x7ffdd000 - 0x100000)
    assert kexec["boot_loader_tool"] is None
    assert kexec["makedumpfile"] is None
    # Check mode gathers the same facts (the module only reads).
    assert facts(capsys, root, check=True)["ansible_facts"] == res["ansible_facts"]


def test_boot_loader_tool_prefers_grubby(capsys, tmp_path):
    root = make_sysroot(tmp_path, "lab-ovmf-pc-1g")
    write(root, "usr/sbin/update-grub", "#!/bin/sh\n")
    assert facts(capsys, root)["ansible_facts"]["kexec"]["boot_loader_tool"] == "update-grub"
    write(root, "usr/sbin/grubby", "")
    assert facts(capsys, root)["ansible_facts"]["kexec"]["boot_loader_tool"] == "grubby"


def test_makedumpfile_is_found_where_a_shell_would_find_it(capsys, tmp_path, monkeypatch):
    root = make_sysroot(tmp_path, "lab-ovmf-pc-1g")
    monkeypatch.setenv("PATH", "/opt/tools/bin:relative/bin:/usr/bin")
    write(root, "relative/bin/makedumpfile", "")
    os.chmod(os.path.join(root, "relative/bin/makedumpfile"), 0o755)
    write(root, "usr/bin/makedumpfile", "not executable")
    assert facts(capsys, root)["ansible_facts"]["kexec"]["makedumpfile"] is None
    os.chmod(write(root, "usr/sbin/makedumpfile", ""), 0o755)  # not on PATH: one of the usual directories
    assert facts(capsys, root)["ansible_facts"]["kexec"]["makedumpfile"] == "/usr/sbin/makedumpfile"
    os.chmod(write(root, "opt/tools/bin/makedumpfile", ""), 0o755)  # PATH first
    assert facts(capsys, root)["ansible_facts"]["kexec"]["makedumpfile"] == "/opt/tools/bin/makedumpfile"


def test_efi_host_without_crash_region(capsys, tmp_path):
    root = make_sysroot(tmp_path, "lab-ovmf-pc-1g")
    kexec = facts(capsys, root)["ansible_facts"]["kexec"]
    assert kexec["efi"] is True and kexec["crash_region"] is None
    assert kexec["installed_kernels"] == []


def test_ppc64el_elf_kernels_are_found_and_vmlinuz_wins_a_tie(capsys, tmp_path):
    root = make_sysroot(tmp_path, "lab-seabios-pc-1g")
    for name in ("vmlinux-6.1.0-56-powerpc64le", "initrd.img-6.1.0-56-powerpc64le", "vmlinux-6.1.0-54-powerpc64le",
                 "vmlinux-6.1.0-10-amd64", "vmlinuz-6.1.0-10-amd64", "vmlinux-6.1.0-9-amd64.old"):
        write(root, "boot/" + name, "x")
    kernels = facts(capsys, root)["ansible_facts"]["kexec"]["installed_kernels"]
    boot = os.path.join(root, "boot")
    assert [(k["release"], os.path.relpath(k["kernel"], boot), k["initrd"] and os.path.relpath(k["initrd"], boot))
            for k in kernels] == [
        ("6.1.0-56-powerpc64le", "vmlinux-6.1.0-56-powerpc64le", "initrd.img-6.1.0-56-powerpc64le"),
        ("6.1.0-54-powerpc64le", "vmlinux-6.1.0-54-powerpc64le", None),
        ("6.1.0-10-amd64", "vmlinuz-6.1.0-10-amd64", None),
    ]


def test_kernels_sort_by_version_and_find_each_distributions_initrd(capsys, tmp_path):
    root = make_sysroot(tmp_path, "lab-seabios-pc-1g")
    for name in ("vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-10-amd64", "vmlinuz-5.14.0-362.8.1.el9_3.x86_64",
                 "vmlinuz-6.10.2-1-default", "vmlinuz-6.1.0-10-amd64.old",
                 "initrd.img-6.1.0-10-amd64", "initramfs-5.14.0-362.8.1.el9_3.x86_64.img",
                 "initrd-6.10.2-1-default", "initrd.img-6.1.0-11-amd64"):
        write(root, "boot/" + name, "x")
    os.mkdir(os.path.join(root, "boot", "vmlinuz-not-a-file"))
    kernels = facts(capsys, root)["ansible_facts"]["kexec"]["installed_kernels"]
    boot = os.path.join(root, "boot")
    assert [(k["release"], k["initrd"] and os.path.relpath(k["initrd"], boot)) for k in kernels] == [
        ("6.10.2-1-default", "initrd-6.10.2-1-default"),
        ("6.1.0-10-amd64", "initrd.img-6.1.0-10-amd64"),
        ("6.1.0-9-amd64", None),
        ("5.14.0-362.8.1.el9_3.x86_64", "initramfs-5.14.0-362.8.1.el9_3.x86_64.img"),
    ]


def record(root, kind, boot_id):
    data = {"kernel": "/boot/vmlinuz-6.1.0-56-amd64", "initrd": "/boot/initrd.img-6.1.0-56-amd64",
            "cmdline": "root=/dev/vda", "type": kind, "method": "classic", "kernel_sha256": "a" * 64,
            "initrd_sha256": "b" * 64, "cmdline_sha256": "c" * 64, "boot_id": boot_id}
    write(root, "run/fleetboot-kexec/%s.json" % kind, json.dumps(data))
    return data


def test_loaded_image_is_our_record_while_it_is_current(capsys, tmp_path):
    root = make_sysroot(tmp_path, "lab-seabios-pc-2g-crash")
    normal = record(root, "normal", BOOT_ID)
    crash = record(root, "crash", BOOT_ID)
    # Recorded, but the kernel says nothing is loaded (unloaded by someone else): no image.
    kexec = facts(capsys, root)["ansible_facts"]["kexec"]
    assert kexec["loaded_image"] is None and kexec["loaded_crash_image"] is None

    write(root, "sys/kernel/kexec_loaded", "1\n")
    write(root, "sys/kernel/kexec_crash_loaded", "1\n")
    kexec = facts(capsys, root)["ansible_facts"]["kexec"]
    assert kexec["loaded"] is True and kexec["crash_loaded"] is True
    assert kexec["loaded_image"] == normal and kexec["loaded_crash_image"] == crash

    # A record from an earlier boot says nothing about what is loaded now.
    write(root, "proc/sys/kernel/random/boot_id", "00000000-0000-4000-8000-000000000000\n")
    kexec = facts(capsys, root)["ansible_facts"]["kexec"]
    assert kexec["loaded"] is True and kexec["loaded_image"] is None


def test_secure_boot_and_lockdown(capsys, tmp_path):
    root = make_sysroot(tmp_path, "ovmf-q35-2g-crash-sb")
    kexec = facts(capsys, root)["ansible_facts"]["kexec"]
    assert kexec["secure_boot"] is True and kexec["lockdown"] == "integrity"
    assert kexec["auto_method"] == "file"


def test_syscalls_from_kallsyms_without_a_kernel_config(capsys, tmp_path):
    root = make_sysroot(tmp_path, "lab-seabios-pc-1g")
    for name in os.listdir(os.path.join(root, "boot")):
        os.unlink(os.path.join(root, "boot", name))
    write(root, "proc/kallsyms", "0000000000000000 T __x64_sys_kexec_load\n"
                                 "0000000000000000 T __x64_sys_reboot\n")
    kexec = facts(capsys, root)["ansible_facts"]["kexec"]
    assert kexec["syscalls"] == {"kexec_load": True, "kexec_file_load": False}
    os.unlink(os.path.join(root, "proc/kallsyms"))
    kexec = facts(capsys, root)["ansible_facts"]["kexec"]
    assert kexec["syscalls"] == {"kexec_load": None, "kexec_file_load": None}


def test_unreadable_host_fails_with_the_loaders_message(capsys, tmp_path):
    root = make_sysroot(tmp_path, "lab-seabios-pc-1g")
    write(root, "proc/iomem", "00000000-00000000 : System RAM\n")
    shutil.rmtree(os.path.join(root, "sys/firmware/memmap"))
    res = facts(capsys, root)
    assert res["failed"] is True
    assert "hides them from non-root users" in res["msg"] and "become: true" in res["msg"], res["msg"]


def test_version_key():
    releases = ["6.1.0-9-amd64", "6.1.0-10-amd64", "5.10.0-28-amd64", "6.1.0-10-cloud-amd64"]
    ordered = sorted(releases, key=kexec_facts.version_key, reverse=True)
    assert ordered[0].startswith("6.1.0-10") and ordered[-2:] == ["6.1.0-9-amd64", "5.10.0-28-amd64"]
