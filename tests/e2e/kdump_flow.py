"""The kdump story on one lab VM (2 GiB, QEMU allowed to reset), shared by the classic and file
test modules so that each runs on its own xdist worker and VM.

Order, to spend as few boots as possible (TCG: a boot ~25 s, a kexec ~35 s, a capture ~60 s):
check mode (nothing changes) -> the role (memory reserved by a *kexec* reboot, crash kernel
loaded by the unit) -> a second run (no change) -> a crash image too big for the region (refused
with both sizes) -> optionally kdump_enabled: false (all removed, nothing loaded, twice for no
change) -> a real sysrq crash through the role's kdump_test (which turns kdump on again, without a
reboot: the memory is still reserved) -> the dump checked: an ELF sparse copy on the controller
with readelf (its PT_LOADs cover the RAM), or makedumpfile's filtered, compressed dump (the
role's default, installed by it: at least 5x smaller than the RAM it covers, and read again on
the VM by `makedumpfile --dump-dmesg`, an independent reader of the saved file).

The capture kernel reboots through the firmware, as kdump does; the lab then boots QEMU's own
-kernel/-append again (no crashkernel=), which is why the crash comes last: on a real host the
boot loader, whose grub.cfg the role updated, would reserve it again.
"""

import base64
import glob
import json
import os
import re
import subprocess
import time

from .conftest import BIN, REPO

COLLECTIONS = os.path.join(REPO, ".build", "collections")
PLAYBOOK = os.path.join(REPO, "kdump.yml")
VM = "vm1"
# The dump directories under /var/crash (beside them: captures.log, save-vmcore's record).
DUMP_DIRS = "find /var/crash -mindepth 1 -maxdepth 1 -type d -printf '%f\\n' 2>/dev/null || true"
# What the x86 kernel itself keeps out of a kexec_file_load crash header.
LOW_RESERVED = 1 << 20


def playbook(fleet, *extra, check=False, timeout=1500):
    cmd = [os.path.join(BIN, "ansible-playbook"), "-i", fleet.inventory, PLAYBOOK] + list(extra)
    if check:
        cmd.append("--check")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_HOST_KEY_CHECKING="False",
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_RETRY_FILES_ENABLED="False")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          timeout=timeout, env=env, check=False, cwd=REPO)
    return proc.returncode, proc.stdout


def recap(output):
    rows = re.findall(r"^%s\s+:\s+(ok=.*)$" % VM, output, re.M)
    assert rows, output
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", rows[-1])}


def sh(fleet, command, timeout=120):
    rc, out, err = fleet.run(VM, command, timeout=timeout)
    assert rc == 0, (command, out, err)
    return out


def system_ram_outside(iomem, region):
    """[(start, end)] half-open: top-level System RAM of /proc/iomem minus ``region``."""
    out = []
    for line in iomem.splitlines():
        m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) : System RAM$", line)
        if not m:
            continue
        start, end = int(m.group(1), 16), int(m.group(2), 16) + 1
        for s, e in ((start, min(end, region[0])), (max(start, region[1]), end)):
            if s < e:
                out.append((s, e))
    return out


def crash_region(iomem):
    m = re.search(r"^\s+([0-9a-f]+)-([0-9a-f]+) : Crash kernel$", iomem, re.M)
    assert m, iomem
    return int(m.group(1), 16), int(m.group(2), 16) + 1


def readelf_loads(path):
    """[(paddr, memsz)] of the PT_LOADs `readelf -lW` lists (the header is all we fetched)."""
    out = subprocess.run(["readelf", "-lW", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, check=False).stdout
    loads = []
    for m in re.finditer(r"^\s+LOAD\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)",
                         out, re.M):
        loads.append((int(m.group(3), 16), int(m.group(5), 16)))
    assert loads, out
    return loads, out


def union(pairs):
    out = []
    for s, e in sorted(pairs):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def run_kdump_story(fleet, tmp_path, method, disable_round=False, makedumpfile="auto"):
    """The story; ``makedumpfile`` is the role's kdump_makedumpfile (auto: installed and used)."""
    pid = fleet.vm(VM).pid
    assert "crashkernel=" not in sh(fleet, "cat /proc/cmdline")
    boot0 = sh(fleet, "cat /proc/sys/kernel/random/boot_id").strip()
    args = ["-e", "kdump_method=%s" % method, "-e", "kdump_reboot_ok=true", "-e", "kdump_makedumpfile=%s" % makedumpfile]
    assert sh(fleet, "command -v makedumpfile || echo none").strip() == "none", "the lab image has no makedumpfile"

    # Check mode: predicts changes, makes none (no file, no reboot, nothing loaded).
    rc, out = playbook(fleet, *args, check=True)
    assert rc == 0, out
    assert recap(out)["changed"] > 0, out
    assert sh(fleet, "cat /proc/sys/kernel/random/boot_id").strip() == boot0
    assert sh(fleet, "ls /etc/default/grub.d/fleetboot-kdump.cfg /etc/fleetboot 2>/dev/null; "
                     "systemctl list-unit-files 'fleetboot-kdump*' --no-legend; "
                     "cat /sys/kernel/kexec_crash_loaded").split() == ["0"], out

    # The role: crashkernel= for the boot loader, applied now by a kexec reboot (no firmware).
    rc, out = playbook(fleet, *args)
    assert rc == 0, out
    installed = sh(fleet, "command -v makedumpfile || echo none; dpkg-query -W -f '${Status}' kexec-tools 2>/dev/null "
                          "| grep -c 'ok installed' || true").split()
    if makedumpfile == "never":
        assert installed == ["none", "0"], installed
        assert "dumps by sparse-copy to /var/crash" in out, out
    else:
        # Installed by the role, without Debian's recommends (kexec-tools would be a second loader).
        assert installed == ["/usr/bin/makedumpfile", "0"], installed
        assert re.search(r"dumps by makedumpfile 1\.\d+\.\d+ \(-d 31,\s+(lzo|zstd)\) to /var/crash", out), out
    assert fleet.vm(VM).firmware_reset_count() == 0 and fleet.vm(VM).pid == pid and fleet.vm(VM).running()
    assert sh(fleet, "cat /proc/sys/kernel/random/boot_id").strip() != boot0
    cmdline = sh(fleet, "cat /proc/cmdline")
    assert "crashkernel=256M" in cmdline.split(), cmdline
    assert "crashkernel=256M" in sh(fleet, "grep -h crashkernel= /boot/grub/grub.cfg | head -1")
    assert sh(fleet, "cat /sys/kernel/kexec_crash_loaded").strip() == "1"
    journal = sh(fleet, "journalctl -b -u fleetboot-kdump-load.service --no-pager")
    assert re.search(r"method %s\s+kind crash" % method, journal), journal
    iomem = sh(fleet, "cat /proc/iomem")
    region = crash_region(iomem)
    assert region[1] - region[0] == 256 << 20

    # A second run changes nothing; neither does check mode now.
    for check in (False, True):
        rc, out = playbook(fleet, *args, check=check)
        assert rc == 0 and recap(out)["changed"] == 0, out

    # A crash image too big for the region: refused before any syscall, naming both sizes.
    sh(fleet, "printf 070701 > /root/big.img && truncate -s 300M /root/big.img")
    rc, out, err = fleet.run(VM, "fleetboot-kexec load --crash --method %s --kernel /boot/vmlinuz-$(uname -r) "
                                 "--initrd /root/big.img --reuse-cmdline" % method)
    assert rc == 1, (out, err)
    assert "does not fit the crash region" in err and "initrd 300.0 MiB" in err and "holds 256.0 MiB" in err, err
    assert sh(fleet, "rm /root/big.img; cat /sys/kernel/kexec_crash_loaded").strip() == "1"

    if disable_round:
        # kdump_enabled: false unloads and removes all the role installed; the reservation stays
        # until the next reboot. A second run changes nothing.
        rc, out = playbook(fleet, *(args + ["-e", "kdump_enabled=false"]))
        assert rc == 0 and recap(out)["changed"] > 0, out
        assert sh(fleet, "cat /sys/kernel/kexec_crash_loaded").strip() == "0"
        left = sh(fleet, "ls -d /etc/default/grub.d/fleetboot-kdump.cfg /etc/fleetboot /usr/sbin/fleetboot-kexec "
                         "/usr/lib/fleetboot-kexec 2>/dev/null; systemctl list-unit-files 'fleetboot-kdump*' "
                         "--no-legend; grep -c crashkernel= /boot/grub/grub.cfg || true")
        assert left.split() == ["0"], (left, out)
        assert "crashkernel=256M" in sh(fleet, "cat /proc/cmdline").split()
        rc, out = playbook(fleet, *(args + ["-e", "kdump_enabled=false"]))
        assert rc == 0 and recap(out)["changed"] == 0, out
        # The crash run below turns it on again: the memory is still reserved, so without a reboot.

    # The real thing: sysrq crash, capture kernel, vmcore saved, firmware reboot, host back.
    result = crash_and_check_dump(fleet, tmp_path, args, iomem, region, pid,
                                  low_reserved=LOW_RESERVED if method == "file" else 0)
    if disable_round:
        assert re.search(r"Reboot by kexec to reserve the memory\] \**\nskipping", result["out"]), result["out"]
    return result


def crash_and_check_dump(fleet, tmp_path, args, iomem, region, pid, low_reserved=0):
    """Crash the VM through the role's kdump_test, and check what the capture kernel saved: one
    new dump, its dmesg.txt with the sysrq line, and either an ELF header whose PT_LOADs cover the
    RAM /proc/iomem showed outside the crash region (from ``low_reserved`` up: x86's
    kexec_file_load leaves the low 1 MiB out, Linux 5.13+ reserves it), or makedumpfile's dump
    (see check_makedumpfile_dump)."""
    dumps_before = sh(fleet, DUMP_DIRS).split()
    rc, out = playbook(fleet, *(args + ["-e", "kdump_test=true"]))
    assert rc == 0, out
    assert fleet.vm(VM).firmware_reset_count() == 1 and fleet.vm(VM).pid == pid, "the capture kernel reboots through the firmware"
    assert "/proc/vmcore" not in sh(fleet, "ls /proc/vmcore 2>/dev/null || true")
    dumps = [d for d in sh(fleet, DUMP_DIRS).split() if d not in dumps_before]
    assert len(dumps) == 1 and not dumps[0].endswith(".incomplete"), dumps
    dump = "/var/crash/" + dumps[0]
    dmesg = sh(fleet, "cat %s/dmesg.txt" % dump)
    assert "sysrq: Trigger a crash" in dmesg and "Kernel panic - not syncing" in dmesg, dmesg[-2000:]
    size = int(sh(fleet, "stat -c %%s %s/vmcore" % dump))
    if sh(fleet, "head -c 8 %s/vmcore" % dump) == "KDUMP   ":
        checked = check_makedumpfile_dump(fleet, dump, size, iomem, region)
        return dict(checked, dump=dump, vmcore_size=size, out=out)

    # The dump's ELF header, read on the controller: its PT_LOADs cover the RAM /proc/iomem showed.
    head = sh(fleet, "head -c 1048576 %s/vmcore | base64 -w0" % dump, timeout=300)
    local = tmp_path / "vmcore.head"
    local.write_bytes(base64.b64decode(head))
    loads, listing = readelf_loads(str(local))
    ram = [(max(s, low_reserved), e) for s, e in union(system_ram_outside(iomem, region)) if e > low_reserved]
    covered = union((p, p + n) for p, n in loads)
    for start, end in ram:
        assert any(s <= start and end <= e for s, e in covered), (hex(start), hex(end), listing)
    return {"dump": dump, "vmcore_size": size, "loads": loads, "out": out}


def last_capture(fleet):
    """save-vmcore's report of the last capture (the last line of /var/crash/captures.log)."""
    return json.loads(sh(fleet, "tail -n 1 /var/crash/captures.log"))


def check_makedumpfile_dump(fleet, dump, size, iomem, region):
    """makedumpfile wrote the dump: filtered and compressed to at most a fifth of the RAM it covers
    (the RAM outside the crash region), and makedumpfile --dump-dmesg, reading the saved file
    rather than /proc/vmcore, finds the sysrq line in it."""
    ram = sum(e - s for s, e in union(system_ram_outside(iomem, region)))
    assert size * 5 <= ram, "the dump (%d bytes) is not 5x smaller than the RAM it covers (%d bytes)" % (size, ram)
    report = last_capture(fleet)
    assert report["method"] == "makedumpfile" and report["path"] == dump, report
    assert report["compression"] in ("lzo", "zstd") and report["dump_level"] == 31, report
    assert report["dmesg_source"] == "makedumpfile", report
    reread = sh(fleet, "rm -f /tmp/reread.txt; makedumpfile --dump-dmesg %s/vmcore /tmp/reread.txt >/dev/null && "
                       "cat /tmp/reread.txt" % dump, timeout=300)
    assert "sysrq: Trigger a crash" in reread and "Kernel panic - not syncing" in reread, reread[-2000:]
    kept, fetch_s = keep_dump(fleet, dump)
    return {"ram_covered": ram, "ratio": round(ram / float(size), 1), "compression": report["compression"],
            "capture_seconds": report["seconds"], "source_size": report["source_size"], "memory": report.get("memory"),
            "kept_for_crash_check": kept, "fetch_seconds": fetch_s}


def keep_dump(fleet, dump, keep=2):
    """Copy the dump to ~/.cache/fleetboot/dumps/ for benchmarks/kdump_crash_check.py, which opens it
    with `crash` and Debian's debug vmlinux (too big a download for make test: see the README)."""
    cache = os.path.join(os.path.expanduser("~"), ".cache", "fleetboot", "dumps")
    os.makedirs(cache, exist_ok=True)
    release = sh(fleet, "uname -r").strip()
    local = os.path.join(cache, "%s-%s.vmcore" % (release, os.path.basename(dump)))
    started = time.monotonic()
    fleet.get_file(VM, dump + "/vmcore", local + ".part")
    os.rename(local + ".part", local)
    for old in sorted(glob.glob(os.path.join(cache, "*.vmcore")), key=os.path.getmtime)[:-keep]:
        os.unlink(old)
    return local, round(time.monotonic() - started, 1)


def summary_line(result):
    return json.dumps({k: v for k, v in result.items() if k != "out"}, default=str)
