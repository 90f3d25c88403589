#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: kexec_facts
short_description: Gather what a host offers for kexec and which kernels it could jump into
version_added: 0.1.0
description:
  - Reads the running kernel's state as far as kexec cares (release, boot_id, command line, whether
    a normal or a crash image is loaded, the crash region, lockdown, Secure Boot, EFI, which kexec
    syscalls the kernel was built with) and lists the kernels installed in C(/boot) with their
    initrds.
  - Returns them as the C(kexec) fact (C(ansible_facts.kexec)).
  - Only reads files under C(/proc), C(/sys), C(/boot) and C(/run) (and looks for the boot loader
    tools in C(/usr/sbin)); nothing on the host changes.
author:
  - fleetboot.kexec developers (@fleetboot)
extends_documentation_fragment:
  - fleetboot.kexec.host
  - fleetboot.kexec.host.sysroot
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.facts
attributes:
  check_mode:
    support: full
    details:
      - The module only reads, so check mode gathers the same facts.
  diff_mode:
    support: none
  facts:
    support: full
options:
  crashkernel:
    description:
      - A C(crashkernel=) value (V(256M), V(1G-64G:256M,64G-:512M)...) to check against the estimate of what
        the capture kernel needs on this host (RV(ansible_facts.kexec.crash_estimate.check)). Nothing is
        refused here; the C(fleetboot.kexec.kdump) role refuses a value that is too small.
    type: str
  crash_kernel:
    description:
      - The capture kernel the estimate is for; the running release's image in C(/boot) by default.
    type: path
  crash_initrd:
    description:
      - The capture kernel's initrd; the running release's in C(/boot) by default.
    type: path
notes:
  - Root is needed because the kernel hides the addresses in C(/proc/iomem) from other users; the
    module fails saying so.
  - Only Linux hosts; the loader behind it plans loads for x86_64 and arm64 (aarch64).
seealso:
  - module: fleetboot.kexec.kexec_load
  - module: fleetboot.kexec.kexec_reboot
"""

EXAMPLES = r"""
- name: Gather kexec facts
  fleetboot.kexec.kexec_facts:
  become: true

- name: Show the newest installed kernel
  ansible.builtin.debug:
    msg: "{{ ansible_facts.kexec.installed_kernels[0].release }} (running {{ ansible_facts.kexec.release }})"

- name: Load the newest installed kernel unless it already runs
  fleetboot.kexec.kexec_load:
    kernel: "{{ ansible_facts.kexec.installed_kernels[0].kernel }}"
    initrd: "{{ ansible_facts.kexec.installed_kernels[0].initrd }}"
    reuse_cmdline: true
  become: true
  when: ansible_facts.kexec.installed_kernels[0].release != ansible_facts.kexec.release
"""

RETURN = r"""
ansible_facts:
  description: Facts to add to C(ansible_facts).
  returned: always
  type: complex
  contains:
    kexec:
      description: What the host offers for kexec.
      returned: always
      type: complex
      contains:
        arch:
          description: Machine architecture (C(uname -m)), with aliases such as V(amd64) normalized.
          type: str
          sample: x86_64
        page_size:
          description:
            - The running kernel's page size in bytes (4096 on x86_64; arm64 and ppc64le kernels may
              use 16 KiB or 64 KiB pages). The loader aligns every segment to it.
          type: int
          sample: 4096
        ram_size:
          description:
            - Bytes of RAM, the sum of the top-level C(System RAM) ranges of C(/proc/iomem) (a crash kernel
              reservation is nested inside them, so it is the same with and without one). A little less than
              the installed memory, by the firmware's holes.
            - V(null) when C(/proc/iomem) cannot be read.
          type: int
          sample: 2147090432
          version_added: 0.2.0
        release:
          description: Release of the running kernel (C(uname -r)).
          type: str
          sample: 6.1.0-54-amd64
        boot_id:
          description:
            - C(/proc/sys/kernel/random/boot_id), which changes at every boot, kexec included.
            - V(null) when the kernel does not provide it.
          type: str
          sample: 5d2c9a4e-3f8b-4f2e-9d6a-2b1e7c0f4a11
        cmdline:
          description: The running kernel's command line (C(/proc/cmdline)).
          type: str
          sample: console=ttyS0 root=/dev/vda rw
        loaded:
          description:
            - Whether a kexec image is loaded (C(/sys/kernel/kexec_loaded) is 1). V(false) also when
              the kernel lacks kexec support.
          type: bool
          sample: false
        crash_loaded:
          description: Whether a crash (kdump) kernel is loaded (C(/sys/kernel/kexec_crash_loaded) is 1).
          type: bool
          sample: false
        crash_size:
          description:
            - Bytes the kernel reserved for a crash kernel, as it reports them (C(/sys/kernel/kexec/crash_size) on
              newer kernels, else C(/sys/kernel/kexec_crash_size)); V(null) when neither exists.
          type: int
          sample: 268435456
        crash_hotplug:
          description:
            - Whether the kernel updates a loaded crash kernel's core header itself after CPU or memory
              hotplug (C(/sys/devices/system/cpu/crash_hotplug), C(/sys/devices/system/memory/crash_hotplug)
              read 1; Linux 6.5+ with CONFIG_CRASH_HOTPLUG). V(null) when the file does not exist. Where it
              is not V(true) the C(fleetboot.kexec.kdump) role's udev rule reloads the crash kernel.
          type: dict
          contains:
            cpu:
              description: For CPU hotplug.
              type: bool
            memory:
              description: For memory hotplug.
              type: bool
        crash_estimate:
          description:
            - What the capture environment needs on this host, in bytes (see C(crash/sizing.py)), for
              O(crash_kernel) and O(crash_initrd); V(null) when the kernel cannot be read
              (RV(ansible_facts.kexec.crash_estimate_error) says why).
            - The larger of booting (kernel, initrd, initramfs unpacked) and saving (kernel, capture userspace,
              makedumpfile's two page bitmaps over the host's RAM), plus the loader's 2 MiB.
          type: dict
          contains:
            ram:
              description: Bytes of RAM the dump covers (the memory map's System RAM).
              type: int
            kernel:
              description: The kernel's size in memory (a bzImage's init_size).
              type: int
            initrd:
              description: The initrd's size.
              type: int
            initrd_unpacked:
              description: Estimated size of the unpacked initramfs (compressed parts at 3x).
              type: int
            makedumpfile_bitmaps:
              description: makedumpfile's two bitmaps of one bit per page of RAM.
              type: int
            capture_userspace:
              description: The capture userspace's allowance (systemd, udev, python3, ssh, makedumpfile's buffers).
              type: int
            needed:
              description: Bytes the reservation should hold.
              type: int
            suggested_crashkernel:
              description: A C(crashkernel=) size holding RV(ansible_facts.kexec.crash_estimate.needed).
              type: str
              sample: 192M
            reserved:
              description: Size of the current crash region, or V(null) when none is reserved.
              type: int
            check:
              description:
                - With O(crashkernel), whether it reserves enough on this host, as C(value), C(bytes), C(enough)
                  (V(null) when the value cannot be read) and C(message) (when it is too small, naming the size to use).
              type: dict
        crash_estimate_error:
          description: Why RV(ansible_facts.kexec.crash_estimate) is V(null).
          type: str
        crash_region:
          description:
            - The memory reserved with C(crashkernel=) for a crash kernel (the largest one when there
              are several), or V(null) when none is reserved.
          type: dict
          contains:
            start:
              description: Physical start address.
              type: int
              sample: 1828716544
            end:
              description: Physical end address (exclusive).
              type: int
              sample: 2097152000
            size:
              description: Size in bytes.
              type: int
              sample: 268435456
        lockdown:
          description:
            - Kernel lockdown mode (V(none), V(integrity), V(confidentiality)), or V(null) when the kernel
              has no lockdown support. Under lockdown only signed kernels load, by C(kexec_file_load).
          type: str
          sample: none
        secure_boot:
          description: Whether UEFI Secure Boot is on; V(null) when the EFI variable cannot be read.
          type: bool
          sample: false
        efi:
          description: Whether the host booted through UEFI.
          type: bool
          sample: false
        kexec_load_disabled:
          description:
            - Whether C(/proc/sys/kernel/kexec_load_disabled) is set, which refuses every kexec load until
              the next reboot; V(null) when the kernel lacks the setting.
          type: bool
          sample: false
        syscalls:
          description:
            - Which kexec syscalls the running kernel was built with, from C(/boot/config-<release>),
              else from the symbols in C(/proc/kallsyms). A value is V(null) when neither tells.
          type: dict
          contains:
            kexec_load:
              description: Whether the kernel offers C(kexec_load) (CONFIG_KEXEC).
              type: bool
              sample: true
            kexec_file_load:
              description: Whether the kernel offers C(kexec_file_load) (CONFIG_KEXEC_FILE).
              type: bool
              sample: true
        auto_method:
          description:
            - The method C(method=auto) of M(fleetboot.kexec.kexec_load) picks on this host, V(classic)
              (C(kexec_load)) or V(file) (C(kexec_file_load), under lockdown or Secure Boot).
          type: str
          sample: classic
        installed_kernels:
          description:
            - Kernels found in C(/boot) (C(vmlinuz-<release>), or C(vmlinux-<release>), the ELF image
              ppc64el kernels install), newest release first, each with its initrd
              (C(initrd.img-<release>), C(initramfs-<release>.img) or C(initrd-<release>)).
          type: list
          elements: dict
          contains:
            release:
              description: Release named in the file name.
              type: str
              sample: 6.1.0-56-amd64
            kernel:
              description: Path of the kernel image.
              type: str
              sample: /boot/vmlinuz-6.1.0-56-amd64
            initrd:
              description: Path of its initrd, or V(null) when there is none.
              type: str
              sample: /boot/initrd.img-6.1.0-56-amd64
        boot_loader_tool:
          description:
            - The tool that puts a kernel argument on every boot entry of this host, as the
              C(fleetboot.kexec.kdump) role uses it for C(crashkernel=) - V(grubby) (C(/usr/sbin/grubby),
              RHEL and Fedora), else V(update-grub) (C(/usr/sbin/update-grub), Debian and Ubuntu, which
              regenerates C(grub.cfg)), else V(null).
          type: str
          sample: update-grub
          version_added: 0.2.0
        makedumpfile:
          description:
            - Path of C(makedumpfile) in the first directory of the module's C(PATH), or of C(/usr/local/sbin),
              C(/usr/local/bin), C(/usr/sbin), C(/usr/bin), C(/sbin), C(/bin), that has it as an executable file,
              or V(null) when none has. The C(fleetboot.kexec.kdump) role installs it when it is missing.
          type: str
          sample: /usr/bin/makedumpfile
          version_added: 0.2.0
        loaded_image:
          description:
            - What M(fleetboot.kexec.kexec_load) recorded in C(/run/fleetboot-kexec/normal.json) when it
              loaded the image that is loaded now, or V(null) when nothing is loaded, the record is
              missing, or it is from an earlier boot.
          type: dict
          contains:
            kernel:
              description: Path of the loaded kernel.
              type: str
            initrd:
              description: Path of the loaded initrd, or V(null).
              type: str
            cmdline:
              description: Command line the image was loaded with.
              type: str
            type:
              description: V(normal) or V(crash).
              type: str
            method:
              description: V(classic) or V(file).
              type: str
            kernel_sha256:
              description: sha256 of the kernel file.
              type: str
            initrd_sha256:
              description: sha256 of the initrd file, or V(null).
              type: str
            cmdline_sha256:
              description: sha256 of the command line.
              type: str
            boot_id:
              description: boot_id of the boot the image was loaded in.
              type: str
          sample:
            kernel: /boot/vmlinuz-6.1.0-56-amd64
            initrd: /boot/initrd.img-6.1.0-56-amd64
            cmdline: console=ttyS0 root=/dev/vda rw
            type: normal
            method: classic
            kernel_sha256: 3f0c0e5b3a0d9a4c2f8e1b7d6a5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c
            initrd_sha256: 9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b
            cmdline_sha256: 0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f
            boot_id: 5d2c9a4e-3f8b-4f2e-9d6a-2b1e7c0f4a11
        loaded_crash_image:
          description:
            - Like RV(ansible_facts.kexec.loaded_image), for the crash kernel
              (C(/run/fleetboot-kexec/crash.json)).
          type: dict
"""

import os
import re

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import loader
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import KexecError
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.host import Host
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.records import loaded_record

BOOT_ID = "proc/sys/kernel/random/boot_id"
# Kernel images by name: vmlinuz-<release> (x86, arm64), vmlinux-<release> (ppc64el's ELF kernels).
KERNEL_PREFIXES = ("vmlinuz-", "vmlinux-")
CPU_CRASH_HOTPLUG = "sys/devices/system/cpu/crash_hotplug"
MEMORY_CRASH_HOTPLUG = "sys/devices/system/memory/crash_hotplug"
# The tools that put a kernel argument on every boot entry, in the order the kdump role prefers them
# (RHEL/Fedora's grubby edits entries; Debian/Ubuntu's update-grub regenerates grub.cfg).
BOOT_LOADER_TOOLS = (("grubby", "usr/sbin/grubby"), ("update-grub", "usr/sbin/update-grub"))
# Where a program is looked for after the module's PATH (a non-login shell may leave sbin out).
PROGRAM_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
# initrd names by distribution: Debian/Ubuntu, Fedora/RHEL (dracut), SUSE.
INITRD_PATTERNS = ("initrd.img-%s", "initramfs-%s.img", "initrd-%s")
# Symbols that exist only when the kernel was built with the syscall (any arch prefix).
KALLSYMS_SYMBOLS = {"kexec_load": re.compile(r"\s\S*sys_kexec_load$"),
                    "kexec_file_load": re.compile(r"\s\S*sys_kexec_file_load$")}


def read_text(sysroot, rel):
    """Stripped text of a file under ``sysroot``, or None when it cannot be read."""
    try:
        with open(os.path.join(sysroot, rel), "rb") as f:
            return f.read().decode("utf-8", "replace").strip()
    except (IOError, OSError):
        return None


def version_key(release):
    """Sort key comparing releases the way version sorts do: digit runs as numbers."""
    key = []
    for part in re.findall(r"\d+|[^\d]+", release):
        key.append((1, int(part), "") if part.isdigit() else (0, 0, part))
    return key


def installed_kernels(sysroot):
    """[{release, kernel, initrd}] for every /boot/vmlinuz-<release> (or vmlinux-<release> when a release
    has no vmlinuz), newest first."""
    boot = os.path.join(sysroot, "boot")
    try:
        names = os.listdir(boot)
    except (IOError, OSError):
        return []
    found = []
    releases = set()
    for prefix in KERNEL_PREFIXES:
        for name in sorted(names):
            if not name.startswith(prefix) or name.endswith((".old", ".hmac", ".sig")):
                continue
            release = name[len(prefix):]
            kernel = os.path.join(boot, name)
            if release and release not in releases and os.path.isfile(kernel):
                releases.add(release)
                found.append({"release": release, "kernel": kernel})
    for entry in found:
        release = entry["release"]
        entry["initrd"] = None
        for pattern in INITRD_PATTERNS:
            candidate = os.path.join(boot, pattern % release)
            if os.path.isfile(candidate):
                entry["initrd"] = candidate
                break
    found.sort(key=lambda k: version_key(k["release"]), reverse=True)
    return found


def offered_syscalls(host, sysroot):
    """{kexec_load, kexec_file_load}: from the kernel config the loader read, else kallsyms."""
    known = host.syscalls
    if known is not None:
        return {"kexec_load": known.get("kexec_load"), "kexec_file_load": known.get("kexec_file_load")}
    out = {"kexec_load": None, "kexec_file_load": None}
    try:
        with open(os.path.join(sysroot, "proc/kallsyms")) as f:
            seen = dict((name, False) for name in KALLSYMS_SYMBOLS)
            for line in f:
                for name, pattern in KALLSYMS_SYMBOLS.items():
                    if not seen[name] and pattern.search(line.rstrip("\n")):
                        seen[name] = True
            out = seen
    except (IOError, OSError, UnicodeDecodeError):
        pass
    return out


def boot_loader_tool(sysroot):
    """The first of BOOT_LOADER_TOOLS installed under ``sysroot``, or None."""
    for name, rel in BOOT_LOADER_TOOLS:
        if os.path.isfile(os.path.join(sysroot, rel)):
            return name
    return None


def find_program(sysroot, name):
    """The path (as the host sees it) of executable ``name`` in PATH or PROGRAM_DIRS under ``sysroot``, or None."""
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d.startswith("/")] + list(PROGRAM_DIRS)
    for directory in dirs:
        path = os.path.join(sysroot, directory.lstrip("/"), name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return os.path.join(directory, name)
    return None


def ram_size(host):
    """Bytes of the top-level System RAM ranges of /proc/iomem (the crash region is nested inside
    them, so the sum is the same with and without a reservation); None when iomem is unreadable."""
    if not host.iomem:
        return None
    return sum(node.end - node.start for node in host.iomem if node.name == "System RAM")


def read_flag(sysroot, rel):
    """True/False for a 1/0 file under ``sysroot``, None when it is missing or says something else."""
    text = read_text(sysroot, rel)
    return {"1": True, "0": False}.get(text)


def estimate(host, sysroot, kernels, crashkernel=None, kernel=None, initrd=None):
    """(crash_estimate, error): the capture environment's needs for ``kernel``/``initrd`` (the running
    release's by default)."""
    running = [k for k in kernels if k["release"] == host.release]
    kernel = kernel or (running[0]["kernel"] if running else None)
    if initrd is None and running:
        initrd = running[0]["initrd"]
    if not kernel:
        return None, "no kernel image for the running release %s in /boot" % host.release
    if sysroot not in ("/", "") and not kernel.startswith(sysroot):
        kernel = os.path.join(sysroot, kernel.lstrip("/"))
        initrd = os.path.join(sysroot, initrd.lstrip("/")) if initrd else None
    try:
        return loader.crash_estimate(host, kernel, initrd, crashkernel), None
    except KexecError as err:
        return None, str(err)


def gather(sysroot="/", crashkernel=None, crash_kernel=None, crash_initrd=None):
    """The kexec fact for the host under ``sysroot``; raises KexecError when it cannot be read."""
    host = Host.read(sysroot)
    boot_id = read_text(sysroot, BOOT_ID)
    region = host.crash_region
    loaded = bool(host.kexec_loaded)
    crash_loaded = bool(host.kexec_crash_loaded)
    kernels = installed_kernels(sysroot)
    crash_estimate, estimate_error = estimate(host, sysroot, kernels, crashkernel, crash_kernel, crash_initrd)
    return {
        "arch": host.arch,
        "page_size": host.page_size,
        "ram_size": ram_size(host),
        "release": host.release,
        "boot_id": boot_id,
        "cmdline": host.cmdline,
        "loaded": loaded,
        "crash_loaded": crash_loaded,
        "crash_region": None if region is None else
        {"start": region.start, "end": region.end, "size": region.end - region.start},
        "lockdown": host.lockdown,
        "secure_boot": host.secure_boot,
        "efi": bool(host.efi),
        "kexec_load_disabled": host.kexec_load_disabled,
        "syscalls": offered_syscalls(host, sysroot),
        "auto_method": loader.status(host)["auto_method"],
        "installed_kernels": kernels,
        "boot_loader_tool": boot_loader_tool(sysroot),
        "makedumpfile": find_program(sysroot, "makedumpfile"),
        "crash_size": host.kexec_crash_size,
        "crash_hotplug": {"cpu": read_flag(sysroot, CPU_CRASH_HOTPLUG), "memory": read_flag(sysroot, MEMORY_CRASH_HOTPLUG)},
        "crash_estimate": crash_estimate,
        "crash_estimate_error": estimate_error,
        "loaded_image": loaded_record(sysroot, "normal", boot_id, loaded),
        "loaded_crash_image": loaded_record(sysroot, "crash", boot_id, crash_loaded),
    }


def main():
    module = AnsibleModule(
        argument_spec=dict(sysroot=dict(type="path", default="/"), crashkernel=dict(type="str"),
                           crash_kernel=dict(type="path"), crash_initrd=dict(type="path")),
        supports_check_mode=True,
    )
    p = module.params
    try:
        facts = gather(p["sysroot"], p["crashkernel"], p["crash_kernel"], p["crash_initrd"])
    except KexecError as err:
        module.fail_json(msg=str(err))
    module.exit_json(changed=False, ansible_facts={"kexec": facts})


if __name__ == "__main__":
    main()
