#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fleetboot.kexec developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: kexec_load
short_description: Load (or unload) a kernel for a later kexec jump, or as the crash kernel
version_added: 0.1.0
description:
  - Loads a kernel and its initrd into the running kernel so that a later kexec
    (M(fleetboot.kexec.kexec_reboot)) boots it without going through the firmware, or loads it as the
    crash (kdump) kernel. O(state=unloaded) unloads it again.
  - The loading is done by the collection's own userspace loader, in Python on the host; the host
    needs neither kexec-tools nor anything beyond Python 3.8 and its standard library.
  - Every check the kernel would make is done before the syscall; when anything is wrong (a file
    that is not a kernel, segments that do not fit, a wrong checksum, a kernel that refuses the
    load) the task fails with the loader's message and nothing is loaded.
  - Idempotent. After a load the module records what it loaded (paths and sha256 of the kernel,
    initrd and command line, the method and the boot_id) in C(/run/fleetboot-kexec/<type>.json). A
    later run with the same files and command line, in the same boot, while the kernel still
    reports the image as loaded, changes nothing.
author:
  - fleetboot.kexec developers (@fleetboot)
extends_documentation_fragment:
  - fleetboot.kexec.host
  - fleetboot.kexec.host.sysroot
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - Builds the whole plan (segments, entry, method) and returns it as RV(plan), without any syscall.
  diff_mode:
    support: none
options:
  kernel:
    description:
      - Path of the kernel image on the host (an x86 bzImage such as C(/boot/vmlinuz-6.1.0-56-amd64),
        or an ELF vmlinux; on arm64 the Image, bare or with its EFI stub such as
        C(/boot/vmlinuz-6.1.0-56-arm64), an Image.gz or an EFI zboot image).
      - Required with O(state=loaded).
    type: path
  initrd:
    description:
      - Path of the initial ramdisk on the host. Without it the kernel boots with no initrd.
    type: path
  cmdline:
    description:
      - Command line for the new kernel.
      - Mutually exclusive with O(reuse_cmdline=true).
    type: str
  reuse_cmdline:
    description:
      - Start from the running kernel's command line (C(/proc/cmdline)) without the options that only
        describe the current boot, C(BOOT_IMAGE=), C(elfcorehdr=) and C(kexec_jump_back_entry=), and,
        for O(type=crash), C(crashkernel=).
      - O(remove) and O(append) then edit it.
    type: bool
    default: false
  append:
    description:
      - Options added at the end of the command line (after O(remove) was applied). An option that is
        already there, word for word, is not added twice.
      - Each item may hold several space-separated options.
    type: list
    elements: str
    default: []
  remove:
    description:
      - Options dropped from the command line. V(quiet) or V(console) drop every option of that name
        (V(console=ttyS0) included); V(console=ttyS0) drops only that exact option.
    type: list
    elements: str
    default: []
  type:
    description:
      - V(normal) loads the kernel a kexec reboot jumps into.
      - V(crash) loads the kernel the running kernel boots when it panics (kdump); the host must have
        memory reserved with C(crashkernel=).
    type: str
    choices: [normal, crash]
    default: normal
  capture_options:
    description:
      - Options added to a crash kernel's command line (O(type=crash) only), unless the command line
        already has an option of that name. The defaults make the capture kernel run on one CPU,
        reset devices the crashed kernel left running and poll interrupts it cannot trust.
      - When not set, the host architecture's defaults apply, C(irqpoll nr_cpus=1 reset_devices) on
        x86_64 and C(irqpoll maxcpus=1 noirqdistrib reset_devices) on ppc64le (what the kernel's kdump
        documentation gives for each).
      - With O(method=classic) the module also adds C(elfcorehdr=), the address of the ELF core
        header it builds (with O(method=file) the kernel builds and adds it).
      - Set to an empty string for none.
    type: str
  method:
    description:
      - V(classic) uses the C(kexec_load) syscall (the module places the segments and links its own
        purgatory, which verifies the sha256 of every segment before the jump).
      - V(file) uses C(kexec_file_load) (the kernel reads the files itself and checks their signature
        when lockdown or Secure Boot require it).
      - V(auto) uses V(classic) unless lockdown, Secure Boot or C(kexec_load_disabled) forbid it, then
        V(file); when C(kexec_file_load) cannot handle the image (not when it refuses a signature) it
        falls back to V(classic) if that is permitted.
      - With O(state=unloaded), the syscall used to unload.
    type: str
    choices: [auto, classic, file]
    default: auto
  state:
    description:
      - V(loaded) loads the image unless the same one is loaded already.
      - V(unloaded) unloads the image of O(type) if one is loaded, and removes the record.
    type: str
    choices: [loaded, unloaded]
    default: loaded
  kernel_checksum:
    description:
      - Expected checksum of O(kernel), as V(sha256:<hex digest>). The file is verified before anything
        is loaded; a mismatch fails the task, naming both values.
    type: str
  initrd_checksum:
    description:
      - Expected checksum of O(initrd), as V(sha256:<hex digest>), verified like O(kernel_checksum).
    type: str
notes:
  - The record lives under C(/run), which is emptied at every boot; it also carries the boot_id, so a
    record can never vouch for an image of an earlier boot.
  - If something else (kexec-tools) loaded an image, the module does not know what it is and loads
    the requested one over it (reporting a change).
  - A kernel refuses C(kexec_load) under lockdown; O(method=auto) then uses C(kexec_file_load),
    which needs a kernel signed by a key the running kernel trusts (the distribution's signed kernel).
seealso:
  - module: fleetboot.kexec.kexec_facts
  - module: fleetboot.kexec.kexec_reboot
"""

EXAMPLES = r"""
- name: Load the new kernel with the running kernel's command line
  fleetboot.kexec.kexec_load:
    kernel: /boot/vmlinuz-6.1.0-56-amd64
    initrd: /boot/initrd.img-6.1.0-56-amd64
    reuse_cmdline: true
  become: true

- name: Load a verified kernel, dropping quiet and every console= option, adding others
  fleetboot.kexec.kexec_load:
    kernel: /boot/vmlinuz-6.1.0-56-amd64
    initrd: /boot/initrd.img-6.1.0-56-amd64
    kernel_checksum: "sha256:{{ kernel_sha256 }}"
    reuse_cmdline: true
    remove:
      - quiet
      - console
    append:
      - console=ttyS0,115200
      - systemd.show_status=1
    method: classic
  become: true

- name: Show where each segment would go, touching nothing
  fleetboot.kexec.kexec_load:
    kernel: /boot/vmlinuz-6.1.0-56-amd64
    initrd: /boot/initrd.img-6.1.0-56-amd64
    cmdline: root=/dev/vda rw console=ttyS0
  check_mode: true
  register: planned

- name: Load the crash kernel (kdump)
  fleetboot.kexec.kexec_load:
    type: crash
    kernel: /boot/vmlinuz-6.1.0-56-amd64
    initrd: /boot/initrd.img-6.1.0-56-amd64
    reuse_cmdline: true
    append:
      - irqpoll nr_cpus=1 reset_devices
  become: true

- name: Unload the normal kexec image
  fleetboot.kexec.kexec_load:
    state: unloaded
  become: true
"""

RETURN = r"""
type:
  description: Which image the task acted on, V(normal) or V(crash).
  returned: always
  type: str
  sample: normal
method:
  description:
    - The syscall that loaded (or in check mode would load, or unloaded) the image, V(classic)
      (C(kexec_load)) or V(file) (C(kexec_file_load)).
    - V(null) with O(state=unloaded) when nothing was loaded.
  returned: always
  type: str
  sample: classic
kernel:
  description: Path of the loaded kernel.
  returned: when O(state=loaded)
  type: str
  sample: /boot/vmlinuz-6.1.0-56-amd64
initrd:
  description: Path of the loaded initrd, or V(null).
  returned: when O(state=loaded)
  type: str
  sample: /boot/initrd.img-6.1.0-56-amd64
cmdline:
  description: The command line the new kernel gets.
  returned: when O(state=loaded)
  type: str
  sample: console=ttyS0 root=/dev/vda rw
entry:
  description:
    - Physical address the jump starts at (our purgatory's entry with V(classic)); V(0) with V(file),
      where the kernel chooses.
  returned: when O(state=loaded)
  type: int
  sample: 1073737728
segments:
  description:
    - The segments handed to the kernel. With V(file) the kernel places them itself and RV(segments[].mem)
      is V(null).
  returned: when O(state=loaded)
  type: list
  elements: dict
  contains:
    what:
      description: What the segment holds (V(kernel), V(initrd), V(boot_params), V(purgatory), ...).
      type: str
    mem:
      description: Physical destination address.
      type: int
    memsz:
      description: Size in memory, in bytes.
      type: int
    bufsz:
      description: Bytes of data (the rest of RV(segments[].memsz) is zeroed).
      type: int
    sha256:
      description:
        - sha256 of the data.
        - V(null) for a segment of a real C(kexec_file_load) whose digest was not computed anyway, since the
          kernel reads and verifies those files itself (this module always knows the kernel's and
          initrd's, which it records).
      type: str
  sample:
    - {what: kernel, mem: 16777216, memsz: 45314048, bufsz: 7968544, sha256: 1f0e...}
kernel_sha256:
  description: sha256 of the kernel file.
  returned: when O(state=loaded)
  type: str
  sample: 3f0c0e5b3a0d9a4c2f8e1b7d6a5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c
initrd_sha256:
  description: sha256 of the initrd file, or V(null).
  returned: when O(state=loaded)
  type: str
  sample: 9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b
plan:
  description:
    - The whole plan, as C(fleetboot-kexec plan --json) prints it (method, kind, entry, flags, cmdline,
      segments, warnings).
  returned: in check mode, when a load would happen
  type: dict
  sample:
    method: classic
    kind: normal
    entry: 1073737728
    flags: 4063232
    cmdline: console=ttyS0 root=/dev/vda rw
    segments: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import arch as kexec_arch
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import loader
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import records
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec import syscalls as kexec_syscalls
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.cmdline import (
    add_capture_options, edit_cmdline, reuse_cmdline)
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.errors import KexecError
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.host import Host
from ansible_collections.fleetboot.kexec.plugins.module_utils.kexec.request import Request

ARGUMENT_SPEC = dict(
    kernel=dict(type="path"),
    initrd=dict(type="path"),
    cmdline=dict(type="str"),
    reuse_cmdline=dict(type="bool", default=False),
    append=dict(type="list", elements="str", default=[]),
    remove=dict(type="list", elements="str", default=[]),
    type=dict(type="str", choices=["normal", "crash"], default="normal"),
    capture_options=dict(type="str"),
    method=dict(type="str", choices=["auto", "classic", "file"], default="auto"),
    state=dict(type="str", choices=["loaded", "unloaded"], default="loaded"),
    kernel_checksum=dict(type="str"),
    initrd_checksum=dict(type="str"),
    sysroot=dict(type="path", default="/"),
)


def compose_cmdline(host, kind, cmdline=None, reuse=False, remove=(), append=()):
    """The next kernel's command line: the given one or the running one's (cmdline.reuse_cmdline),
    edited by ``remove`` and ``append`` (cmdline.edit_cmdline)."""
    if reuse:
        if host.cmdline is None:
            raise KexecError("reuse_cmdline: cannot read /proc/cmdline; give cmdline instead")
        base = reuse_cmdline(host.cmdline, kind)
    else:
        base = cmdline or ""
    return edit_cmdline(base, remove, append)


def result_from(report, wanted):
    return dict(method=report["method"], entry=report["entry"], segments=report["segments"],
                cmdline=report["cmdline"], kernel=wanted["kernel"], initrd=wanted["initrd"],
                type=wanted["type"], kernel_sha256=wanted["kernel_sha256"],
                initrd_sha256=wanted["initrd_sha256"])


def ensure_loaded(module, host, syscalls):
    p = module.params
    sysroot, kind = p["sysroot"], p["type"]
    cmdline = compose_cmdline(host, kind, p["cmdline"], p["reuse_cmdline"], p["remove"], p["append"])
    if kind == "crash":
        options = p["capture_options"]
        if options is None:
            options = kexec_arch.for_host(host).capture_options
        cmdline = add_capture_options(cmdline, options)
    request = Request(p["kernel"], initrd=p["initrd"], cmdline=cmdline, kind=kind, method=p["method"])

    if p["initrd_checksum"] and not request.initrd:
        raise KexecError("initrd_checksum is given but no initrd; give initrd or drop initrd_checksum")
    # Both files at once (the loader reuses these digests in its report instead of hashing again).
    files = [(request.kernel, "kernel")] + ([(request.initrd, "initrd")] if request.initrd else [])
    digests = loader.files_sha256(files)
    kernel_sha256, initrd_sha256 = digests[0], (digests[1] if request.initrd else None)
    records.verify_checksum("kernel", request.kernel, p["kernel_checksum"], kernel_sha256)
    if request.initrd:
        records.verify_checksum("initrd", request.initrd, p["initrd_checksum"], initrd_sha256)
    known = {request.kernel: kernel_sha256}
    if request.initrd:
        known[request.initrd] = initrd_sha256
    wanted = dict(kernel=request.kernel, initrd=request.initrd, cmdline=cmdline, type=kind,
                  kernel_sha256=kernel_sha256, initrd_sha256=initrd_sha256,
                  cmdline_sha256=records.cmdline_sha256(cmdline),
                  boot_id=records.read_boot_id(sysroot))

    record = records.read_record(sysroot, kind)
    if records.still_loaded(record, wanted, host, kind, p["method"]):
        return dict(changed=False, method=record.get("method"), entry=record.get("entry"),
                    segments=record.get("segments"), cmdline=record.get("kernel_cmdline", cmdline),
                    kernel=wanted["kernel"], initrd=wanted["initrd"], type=kind,
                    kernel_sha256=kernel_sha256, initrd_sha256=initrd_sha256), None

    if module.check_mode:
        with loader.make_plan(request, host, known_digests=known) as prep:
            report = prep.to_dict()
        result = result_from(report, wanted)
        result.update(changed=True, plan=report)
        return result, report

    # The old record must not outlive the image it describes, whatever happens next.
    records.remove_record(sysroot, kind)
    if syscalls is None:
        syscalls = kexec_syscalls.default_syscalls(host.arch, host)
    report = loader.load(request, syscalls, host, known_digests=known)
    record = dict(wanted, method=report["method"], entry=report["entry"], segments=report["segments"],
                  kernel_cmdline=report["cmdline"])
    try:
        records.write_record(sysroot, kind, record)
    except (IOError, OSError) as err:
        module.warn("the image is loaded, but its record %s could not be written (%s); the next run "
                    "will load it again" % (records.record_path(sysroot, kind), err))
    result = result_from(report, wanted)
    result["changed"] = True
    return result, report


def ensure_unloaded(module, host, syscalls):
    p = module.params
    sysroot, kind = p["sysroot"], p["type"]
    result = dict(changed=False, type=kind, method=None)
    if records.is_loaded(host, kind):
        result["changed"] = True
        if module.check_mode:
            return result
        if syscalls is None:
            syscalls = kexec_syscalls.default_syscalls(host.arch, host)
        result["method"] = loader.unload(syscalls, host, kind=kind, method=p["method"])["method"]
    if not module.check_mode:
        records.remove_record(sysroot, kind)
    return result


def run(module, syscalls=None):
    """The module's work on parsed parameters; ``syscalls`` lets tests pass a FakeSyscalls."""
    p = module.params
    host = Host.read(p["sysroot"])
    if p["state"] == "unloaded":
        return ensure_unloaded(module, host, syscalls)
    result, report = ensure_loaded(module, host, syscalls)
    if report is not None:
        for warning in report.get("warnings") or ():
            module.warn(warning)
        if report.get("fallback_from"):
            module.warn("kexec_file_load failed (%s); loaded with kexec_load instead"
                        % report["fallback_from"]["error"])
    return result


def main(syscalls=None):
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_if=[("state", "loaded", ["kernel"])],
        supports_check_mode=True,
    )
    if module.params["reuse_cmdline"] and module.params["cmdline"] is not None:
        module.fail_json(msg="cmdline and reuse_cmdline=true are mutually exclusive: give one of them "
                             "(use append and remove to edit the reused command line)")
    try:
        result = run(module, syscalls)
    except KexecError as err:
        module.fail_json(msg=str(err))
    except (IOError, OSError) as err:
        where = getattr(err, "filename", None) or "a file"
        module.fail_json(msg="cannot read or write %s: %s" % (where, getattr(err, "strerror", None) or err))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
