"""One lab VM: a QEMU (TCG) process on a copy-on-write overlay of the lab image.

QEMU runs with `-no-reboot` unless asked otherwise: a firmware reset then ends the process, so
a VM whose QEMU process is still the one that started has only ever been re-entered by kexec.
The VM's identity (pid and the kernel's start time for that pid) is kept in vm.json so that a
later `status` or `down` never mistakes a recycled pid for ours.
"""

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import time

from lab import arches
from lab.image import LabError

OVMF_CODE, OVMF_VARS = arches.X86_64.uefi
PR_SET_PDEATHSIG = 1
# What the kernel prints on the console just before it resets the machine through the firmware
# (a kexec prints "kexec_core: Starting new kernel" instead).
FIRMWARE_RESET_MARK = b"reboot: Restarting system"


#: QEMU passes splash-time to the firmware as a 16-bit count of milliseconds.
MAX_POST_DELAY = 65


def post_delay_option(seconds):
    """The -boot value that makes the firmware (SeaBIOS and OVMF alike) wait ``seconds`` in its
    boot menu before booting: how the lab simulates the POST of a real server, which a kexec
    skips and a cold reboot does not."""
    if not 0 < seconds <= MAX_POST_DELAY:
        raise LabError("a simulated POST delay must be between 1 and %d seconds, not %r" % (MAX_POST_DELAY, seconds))
    return "menu=on,splash-time=%d" % int(seconds * 1000)


def free_port():
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_start_time(pid):
    """The pid's start time in clock ticks since boot, or None when there is no such process."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Fields after the parenthesised command name; state is the first, starttime the 20th.
    rest = stat.rsplit(")", 1)[1].split()
    if rest[0] in ("Z", "X"):
        return None
    return int(rest[19])


def _die_with_parent():
    """Child side of Popen: the VM is killed if the process that started it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def exit_reason(serial_log, qemu_log=None):
    """Why a VM's QEMU process is gone, told from the last words of its serial and QEMU logs."""
    def tail(path):
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 65536))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    console = tail(serial_log)
    qemu = tail(qemu_log) if qemu_log else ""
    if "terminating on signal" in qemu:
        return "killed (QEMU terminated by a signal)"
    marks = [
        ("reboot: Restarting system", "firmware reset: the guest rebooted through the firmware"),
        ("reboot: Power down", "powered off by the guest"),
        ("reboot: System halted", "halted by the guest"),
        ("Kernel panic", "kernel panic (with -no-reboot the panic reset ends QEMU)"),
        ("fleetboot purgatory:", "stopped in purgatory"),
    ]
    best, where = None, -1
    for needle, reason in marks:
        pos = console.rfind(needle)
        if pos > where:
            best, where = reason, pos
    if best:
        return best
    last = qemu.strip().splitlines()[-1:] or ["no message"]
    return "exited without a known last word (QEMU said: %s)" % last[0]


def firmware_reset_count(serial_log):
    """How many times the guest reset the machine through the firmware, from its serial log.

    With -no-reboot the first reset ends QEMU; without it (allow_reboot) QEMU boots again into
    the same log, so the count tells a kexec (no new line) from a firmware reboot (one per reset).
    """
    count, carry = 0, b""
    try:
        with open(serial_log, "rb") as f:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                data = carry + chunk
                count += data.count(FIRMWARE_RESET_MARK)
                # Keep a tail shorter than the mark, so a mark split across chunks counts once.
                carry = data[-(len(FIRMWARE_RESET_MARK) - 1):]
    except OSError:
        return 0
    return count


class VM:
    """A lab VM's settings and the files of its state directory."""

    def __init__(self, name, directory, image, memory=1024, cpus=1, append="", uefi=False,
                 no_reboot=True, kernel=None, port=None, arch="x86_64", post_delay=0, debian_initrd=False):
        self.name = name
        self.arch = arches.get(arch)
        self.directory = directory
        self.image = image
        self.memory = memory
        self.cpus = cpus
        self.append = append
        self.uefi = uefi
        self.no_reboot = no_reboot
        self.kernel = kernel or image.manifest()["boot_kernel"]
        self.port = port
        # Seconds the firmware waits before it boots (a simulated server POST; 0: none).
        self.post_delay = post_delay
        # Boot Debian's initrd through the firmware too, not the lab's small one: for timings
        # that compare a cold reboot with a kexec, which loads Debian's (lab/image.py).
        self.debian_initrd = debian_initrd
        self.pid = None
        self.start_time = None
        self.process = None

    # -- files -------------------------------------------------------------------------------
    @property
    def overlay(self):
        return os.path.join(self.directory, "overlay.qcow2")

    @property
    def serial_log(self):
        return os.path.join(self.directory, "serial.log")

    @property
    def qemu_log(self):
        return os.path.join(self.directory, "qemu.log")

    @property
    def state_file(self):
        return os.path.join(self.directory, "vm.json")

    @property
    def efivars(self):
        return os.path.join(self.directory, "AAVMF_VARS.fd" if self.arch.name == "arm64" else "OVMF_VARS.fd")

    @property
    def foreign(self):
        """True for arm64 and ppc64le VMs (their argv comes from lab/arches.py)."""
        return self.arch.name in arches.FOREIGN

    def to_dict(self):
        return {"name": self.name, "arch": self.arch.name, "memory": self.memory, "cpus": self.cpus,
                "append": self.append, "uefi": self.uefi, "no_reboot": self.no_reboot,
                "kernel": self.kernel, "port": self.port, "pid": self.pid,
                "start_time": self.start_time, "post_delay": self.post_delay,
                "debian_initrd": self.debian_initrd}

    def save(self):
        with open(self.state_file + ".tmp", "w") as f:
            json.dump(self.to_dict(), f, indent=2)
        os.replace(self.state_file + ".tmp", self.state_file)

    @classmethod
    def load(cls, directory, image):
        with open(os.path.join(directory, "vm.json")) as f:
            d = json.load(f)
        vm = cls(d["name"], directory, image, d["memory"], d["cpus"], d["append"], d["uefi"],
                 d["no_reboot"], d["kernel"], d["port"], d.get("arch", "x86_64"), d.get("post_delay", 0),
                 d.get("debian_initrd", False))
        vm.pid, vm.start_time = d["pid"], d["start_time"]
        return vm

    # -- QEMU ---------------------------------------------------------------------------------
    def kernel_cmdline(self):
        return (self.arch.base_append() + " " + self.append).strip()

    def qemu_command(self):
        """The QEMU argv for this VM (a plain list, so tests can check it without QEMU)."""
        if self.foreign:
            return arches.qemu_command(
                self.arch, self.name, self.memory, self.cpus, self.image.kernel(self.kernel),
                self.image.initrd(self.kernel, debian=self.debian_initrd), self.kernel_cmdline(), self.overlay,
                self.serial_log,
                port=self.port, no_reboot=self.no_reboot, uefi_vars=self.efivars if self.uefi else None)
        cmd = [
            "qemu-system-x86_64", "-name", self.name,
            "-accel", self.arch.accel, "-m", str(self.memory), "-smp", str(self.cpus),
            "-nodefaults", "-display", "none", "-monitor", "none",
            "-serial", "file:" + self.serial_log,
            "-kernel", self.image.kernel(self.kernel),
            "-initrd", self.image.initrd(self.kernel, debian=self.debian_initrd),
            "-append", self.kernel_cmdline(),
            "-drive", "file=%s,if=virtio,format=qcow2,cache=unsafe" % self.overlay,
            "-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:%d-:22" % self.port,
            "-device", "virtio-net-pci,netdev=net0",
            "-device", "virtio-rng-pci",
        ]
        if self.no_reboot:
            cmd.append("-no-reboot")
        if self.post_delay:
            cmd += ["-boot", post_delay_option(self.post_delay)]
        if self.uefi:
            cmd += ["-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + OVMF_CODE,
                    "-drive", "if=pflash,format=raw,unit=1,file=" + self.efivars]
        return cmd

    def prepare(self):
        """Create the state directory and a fresh overlay on the lab image."""
        if self.uefi:
            if self.arch.uefi is None:
                raise LabError("%s VMs cannot boot through UEFI in the lab (drop --uefi)" % self.arch.name)
            if not os.path.exists(self.arch.uefi[0]):
                raise LabError("UEFI boot on %s needs %s: run `make deps`" % (self.arch.name, self.arch.uefi[0]))
        os.makedirs(self.directory, exist_ok=True)
        for path in (self.overlay, self.serial_log, self.qemu_log):
            if os.path.exists(path):
                os.unlink(path)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
                        "-b", self.image.disk, self.overlay], check=True)
        if self.post_delay and (self.uefi or self.foreign):
            # OVMF boots a -kernel image at once, without its boot-menu timeout; -boot menu= is SeaBIOS's.
            raise LabError("a simulated POST delay works with SeaBIOS (x86_64 without --uefi) only; "
                           "drop --post-delay or use such a VM")
        if self.uefi:
            shutil.copyfile(self.arch.uefi[1], self.efivars)

    def start(self, die_with_parent=False, attempts=3):
        """Start QEMU in its own process group; retry with another port if it was taken."""
        for attempt in range(attempts):  # pylint: disable=unused-variable
            if self.port is None:
                self.port = free_port()
            with open(self.qemu_log, "w") as log:
                self.process = subprocess.Popen(
                    self.qemu_command(), stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True,
                    preexec_fn=_die_with_parent if die_with_parent else None)
            self.pid = self.process.pid
            time.sleep(0.5)
            self.start_time = _proc_start_time(self.pid)
            if self.process.poll() is None and self.start_time is not None:
                self.save()
                return
            with open(self.qemu_log) as f:
                said = f.read().strip()
            if "host forwarding" not in said:
                raise LabError("QEMU for %s exited at once: %s\n(full log: %s)"
                               % (self.name, said or "no message", self.qemu_log))
            self.port = None
        raise LabError("QEMU for %s could not bind an SSH port after %d tries" % (self.name, attempts))

    def running(self):
        """True while the QEMU process that this VM started is alive (not a recycled pid)."""
        if self.pid is None:
            return False
        if self.process is not None and self.process.poll() is not None:
            return False
        now = _proc_start_time(self.pid)
        return now is not None and now == self.start_time

    def exit_reason(self):
        return exit_reason(self.serial_log, self.qemu_log)

    def firmware_reset_count(self):
        """Firmware resets since the VM started (see firmware_reset_count())."""
        return firmware_reset_count(self.serial_log)

    def stop(self, timeout=10):
        """End the VM's QEMU process group; safe to call when it is already gone."""
        if self.running():
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.time() + timeout
                while time.time() < deadline and self.running():
                    time.sleep(0.1)
                if not self.running():
                    break
        if self.process is not None:
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass

    def serial_tail(self, lines=40):
        try:
            with open(self.serial_log, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return "(no serial log yet)"
        return "\n".join(text.replace("\r", "").splitlines()[-lines:])
