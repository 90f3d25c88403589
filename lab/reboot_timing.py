"""One reboot of a lab VM, timed phase by phase on the host's clock (the benchmark and the demo).

A reboot is triggered the way a user's would be (`systemctl --no-block kexec|reboot`), and the
serial console, stamped as it is printed (lab/console.py), splits it into:

- shutdown: trigger -> "kexec_core: Starting new kernel" (a cold reboot: "reboot: Restarting system"),
- jump: -> the new kernel's first line ("Linux version"): purgatory and the jump, or the firmware,
- boot: -> SSH answering with a new boot_id,
- total: trigger -> SSH answering,

plus the load command's own wall time inside the VM (before the trigger, not part of the total)
and when the new kernel's RNG was ready (`random: crng init done`, from its own log).

Paths: ``ours-classic``/``ours-file`` (the collection's loader), ``kexec-tools-classic``/
``kexec-tools-file`` (Debian's kexec-tools, unpacked into the VM for comparison only: the
collection never needs it) and ``cold`` (nothing loaded, through the firmware).
"""

import os
import re
import shlex
import time

from lab import ssh
from lab.console import ConsoleWatch
from lab.image import LabError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOADER = os.path.join(REPO, "plugins", "module_utils", "kexec")
REMOTE = "/root/reboot-timing"
KEXEC_TOOLS = REMOTE + "/kexec-tools"
PATHS = ("ours-classic", "ours-file", "kexec-tools-classic", "kexec-tools-file", "cold")
PHASES = ("load", "shutdown", "jump", "boot", "total")
KEXEC_MARK = r"kexec_core: Starting new kernel"
RESET_MARK = r"reboot: Restarting system"
FIRST_LINE = r"Linux version \d"
CRNG_DONE = r"\[\s*([0-9.]+)\] random: crng init done"


def load_command(path, release):
    """The shell command that loads ``release`` (its /boot vmlinuz and initrd, the running command
    line) for ``path``; None for a cold reboot."""
    kernel, initrd = "/boot/vmlinuz-" + release, "/boot/initrd.img-" + release
    if path.startswith("ours-"):
        return ("cd %s && python3 -m kexec.cli load --kernel %s --initrd %s --reuse-cmdline --method %s"
                % (REMOTE, kernel, initrd, path.split("-", 1)[1]))
    if path.startswith("kexec-tools-"):
        flag = "-c" if path.endswith("classic") else "-s"
        return ("LD_LIBRARY_PATH=%s %s/kexec %s -l %s --initrd=%s --reuse-cmdline"
                % (KEXEC_TOOLS, KEXEC_TOOLS, flag, kernel, initrd))
    if path == "cold":
        return None
    raise LabError("unknown reboot path %r (known: %s)" % (path, ", ".join(PATHS)))


class RebootTimer:
    """Times reboots of one VM of ``fleet`` (started with allow-reboot, so a cold one comes back)."""

    def __init__(self, fleet, vm, release):
        self.fleet = fleet
        self.vm = vm
        self.release = release

    def run(self, command, timeout=120):
        rc, out, err = self.fleet.run(self.vm.name, command, timeout=timeout)
        if rc != 0:
            raise LabError("%s failed on %s (exit %d): %s%s" % (command, self.vm.name, rc, out, err))
        return out

    def ship(self, kexec_tools_tree=None, library_dir=None):
        """Copy the loader (and, for the kexec-tools paths, its unpacked binary and libraries)."""
        self.fleet.put_tree(self.vm.name, LOADER, REMOTE + "/kexec")
        if kexec_tools_tree:
            self.run("mkdir -p " + KEXEC_TOOLS)
            self.fleet.put_file(self.vm.name, os.path.join(kexec_tools_tree, "sbin", "kexec"), KEXEC_TOOLS + "/kexec")
            for name in sorted(os.listdir(library_dir)):
                if ".so" in name and os.path.isfile(os.path.join(library_dir, name)):
                    self.fleet.put_file(self.vm.name, os.path.join(library_dir, name), KEXEC_TOOLS + "/" + name)
            self.run("chmod 755 %s/kexec" % KEXEC_TOOLS)

    def timed(self, command, timeout=600):
        """Run ``command`` in the VM; its wall time there, in seconds."""
        script = ("s=$(date +%%s%%N); %s >/tmp/reboot-timing.log 2>&1; rc=$?; e=$(date +%%s%%N); "
                  "echo $rc $(( (e - s) / 1000000 ))" % command)
        out = self.run("sh -c %s" % shlex.quote(script), timeout=timeout)
        parts = out.split()
        if len(parts) != 2 or parts[0] != "0":
            log = self.fleet.run(self.vm.name, "cat /tmp/reboot-timing.log")[1]
            raise LabError("%s failed on %s: %s\n%s" % (command, self.vm.name, out, log[-3000:]))
        return int(parts[1]) / 1000.0

    def wait_new_boot(self, old_boot_id, timeout=600):
        """Host time at which the VM answered SSH with a boot_id other than ``old_boot_id``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                rc, out = ssh.run(self.vm.port, self.fleet.key_for(self.vm), "cat /proc/sys/kernel/random/boot_id",
                                  timeout=ssh.PROBE_TIMEOUT)[:2]
                if rc == 0 and out.strip() and out.strip() != old_boot_id:
                    return time.monotonic()
            except Exception:  # pylint: disable=broad-except  # still down: keep probing
                pass
            time.sleep(ssh.PROBE_INTERVAL)
        raise LabError("%s did not come back within %d s; serial log: %s" % (self.vm.name, timeout, self.vm.serial_log))

    def reboot(self, path):
        """One reboot by ``path``: {"load", "shutdown", "jump", "boot", "total", "crng_init_s"}."""
        self.fleet.run(self.vm.name, "cd %s && python3 -m kexec.cli unload >/dev/null 2>&1; true" % REMOTE)
        command = load_command(path, self.release)
        load_s = self.timed(command) if command else None
        boot_id = self.run("cat /proc/sys/kernel/random/boot_id").strip()
        resets_before = self.vm.firmware_reset_count()
        trigger = "systemctl --no-block %s" % ("reboot" if path == "cold" else "kexec")
        mark = RESET_MARK if path == "cold" else KEXEC_MARK
        with ConsoleWatch(self.vm.serial_log) as console:
            t0 = time.monotonic()
            self.run(trigger)
            down = console.wait_for(mark, after=t0, timeout=300)
            if down is None:
                raise LabError("%s: no %r on the console after %s; see %s" % (path, mark, trigger, self.vm.serial_log))
            first = console.wait_for(FIRST_LINE, after=down[0], timeout=600)
            if first is None:
                raise LabError("%s: the new kernel printed nothing; see %s" % (path, self.vm.serial_log))
            t3 = self.wait_new_boot(boot_id)
        release = self.run("uname -r").strip()
        if release != self.release:
            raise LabError("%s: %s came back on %s, not %s" % (path, self.vm.name, release, self.release))
        resets = self.vm.firmware_reset_count() - resets_before
        if resets != (1 if path == "cold" else 0):
            raise LabError("%s: %d firmware resets during one reboot (a kexec has none, a cold reboot one)"
                           % (path, resets))
        match = re.search(CRNG_DONE, self.run("dmesg | grep -m1 'random: crng init done' || true"))
        return {"load": load_s, "shutdown": down[0] - t0, "jump": first[0] - down[0], "boot": t3 - first[0],
                "total": t3 - t0, "crng_init_s": float(match.group(1)) if match else None}
