"""What differs between the lab's architectures: kernels, console, QEMU machine, firmware.

x86_64 is the original lab (lab/image.py builds its image in a chroot, lab/vm.py starts it);
arm64 and ppc64le images are built without running foreign code on this machine (lab/foreign.py)
and their VMs start from the argv built here. Everything is a plain value, so the unit tests check
machines and command lines without QEMU.
"""

from lab import image as lab_image
from lab.image import LabError

# A kernel's reset (reboot through the firmware) and a guest power off look the same on every
# architecture: kernel/reboot.c prints "reboot: Restarting system" / "reboot: Power down" first.


class Arch:
    """One lab architecture."""

    def __init__(self, name, debian, qemu, console, kernels, boot_kernel, kernel_file="vmlinuz-",
                 modules=(), machine=(), uefi=None, accel="tcg", append=""):
        self.name = name                  # uname -m spelling (the loader's arch names)
        self.debian = debian              # Debian's architecture name
        self.qemu = qemu                  # qemu-system-* binary
        self.console = console            # the serial console the kernel writes to
        self.kernels = tuple(kernels)     # installed kernel releases
        self.boot_kernel = boot_kernel    # the one VMs boot; tests kexec into the others
        self.kernel_file = kernel_file    # /boot/<kernel_file><release>
        self.modules = tuple(modules)     # initramfs modules in load order (host-built initrd)
        self.machine = tuple(machine)     # QEMU machine and CPU options
        self.uefi = uefi                  # (code, vars) firmware images for --uefi, or None
        self.accel = accel                # QEMU's -accel value (always TCG here, tuned per arch)
        self.append = append              # kernel parameters every VM of this arch gets

    @property
    def group(self):
        """The inventory group of this architecture's VMs."""
        return "lab_" + self.name

    def base_append(self):
        return ("console=%s root=/dev/vda rw %s" % (self.console, self.append)).strip()

    def __repr__(self):
        return "Arch(%r)" % self.name


# Modules a lab VM's initramfs loads before its root file system can be mounted (LAB-FACTS: virtio PCI
# transport, the disk, the RNG so nothing waits for entropy, ext4 and what it loads by name —
# crc32c through the crypto API — plus the NIC so networkd finds it without waiting for udev
# to load it). Built-in ones are skipped per kernel; dependencies are added from each module's
# own modinfo (lab/initramfs.py).
VIRTIO_MODULES = ("virtio", "virtio_ring", "virtio_pci", "virtio_blk", "virtio_net", "virtio_rng",
                  "crc16", "mbcache", "jbd2", "crc32c_generic", "ext4")

X86_64 = Arch("x86_64", "amd64", "qemu-system-x86_64", "ttyS0", lab_image.KERNELS, lab_image.BOOT_KERNEL,
              modules=VIRTIO_MODULES,
              uefi=("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"))
ARM64 = Arch(
    "arm64", "arm64", "qemu-system-aarch64", "ttyAMA0",
    ("6.1.0-54-arm64", "6.1.0-56-arm64"), "6.1.0-54-arm64",
    modules=VIRTIO_MODULES,
    machine=("-M", "virt", "-cpu", "cortex-a72"),
    # qemu-efi-aarch64's images padded to the 64 MiB pflash size QEMU's virt machine wants.
    uefi=("/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd"),
    # Two TCG costs that are QEMU's, not the guest's (measurements in the README's lab section).
    # A kexec'd kernel rewrites memory that still holds the old kernel's translated blocks, and on
    # aarch64 every such write takes QEMU's slow invalidation path: with the default 1 GiB
    # translation buffer nothing is ever flushed, 500-720 thousand stale blocks are invalidated one
    # by one, and the new kernel took 2-8x as long to reach /init as a first boot (the same with
    # kexec-tools). A 64 MiB buffer is flushed whole every few seconds of boot, so few stale blocks
    # survive: the kexec'd boot is as fast as a first boot (x86_64 and ppc64le showed no such gap
    # and keep the default).
    accel="tcg,tb-size=64",
    # KPTI switches the ASID on every kernel entry and exit, and QEMU drops its whole software TLB
    # on each ASID change (target/arm vmsa_ttbr_write): two full flushes per syscall. The
    # Cortex-A72 is not Meltdown-affected; Linux only forces KPTI on because KASLR is on, and the
    # lab keeps KASLR (the tests check that our kaslr-seed reaches the next kernel).
    append="kpti=0")
PPC64LE = Arch(
    "ppc64le", "ppc64el", "qemu-system-ppc64", "hvc0",
    # 6.1 uses 64 KiB pages, 6.12 4 KiB pages: the loader is proven on both.
    ("6.1.0-54-powerpc64le", "6.1.0-56-powerpc64le", "6.12.118+deb12-powerpc64le"), "6.1.0-54-powerpc64le",
    kernel_file="vmlinux-",
    modules=VIRTIO_MODULES,
    # TCG cannot provide the speculation-barrier capabilities pseries asks for by default and warns
    # on every start; say plainly that they are absent (the guest then skips those flushes).
    machine=("-M", "pseries,cap-cfpc=broken,cap-sbbc=broken,cap-ibs=broken,cap-ccf-assist=off",
             "-cpu", "POWER9"))

ARCHES = {a.name: a for a in (X86_64, ARM64, PPC64LE)}
FOREIGN = ("arm64", "ppc64le")
# `uname -m` and Debian spellings a user may type.
ALIASES = {"amd64": "x86_64", "aarch64": "arm64", "ppc64el": "ppc64le"}


def get(name):
    """The Arch called ``name`` (uname -m, Debian or lab spelling)."""
    arch = ARCHES.get(ALIASES.get(name, name))
    if arch is None:
        raise LabError("unknown lab architecture %r: choose from %s" % (name, ", ".join(ARCHES)))
    return arch


def parse_list(text):
    """``x86_64,arm64`` or ``all`` -> [Arch]; each architecture once, in the order given."""
    names = list(ARCHES) if text.strip() == "all" else [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise LabError("no architecture given: use x86_64, arm64, ppc64le, a comma list, or all")
    result = []
    for name in names:
        arch = get(name)
        if arch not in result:
            result.append(arch)
    return result


def qemu_command(arch, name, memory, cpus, kernel, initrd, append, disk, serial_log, disk_format="qcow2",
                 port=None, no_reboot=True, uefi_vars=None):
    """The argv of a foreign VM (arm64 virt or ppc64le pseries), TCG.

    ``port`` forwards SSH (no network when None: the image build's second stage needs none);
    ``uefi_vars`` boots arm64 through the UEFI firmware with that per-VM variable store, so the
    kernel runs as an EFI application and the guest gets ACPI and the EFI memory map.
    """
    if arch.name not in FOREIGN:
        raise LabError("qemu_command is for foreign architectures, not %s" % arch.name)
    cmd = [arch.qemu, "-name", name] + list(arch.machine) + [
        "-accel", arch.accel, "-m", str(memory), "-smp", str(cpus),
        "-nodefaults", "-display", "none", "-monitor", "none",
        "-serial", "file:" + serial_log,
        "-kernel", kernel, "-initrd", initrd, "-append", append,
        "-drive", "file=%s,if=none,id=disk0,format=%s,cache=unsafe" % (disk, disk_format),
        "-device", "virtio-blk-pci,drive=disk0",
        "-device", "virtio-rng-pci",
    ]
    if port is not None:
        cmd += ["-netdev", "user,id=net0,hostfwd=tcp:127.0.0.1:%d-:22" % port,
                "-device", "virtio-net-pci,netdev=net0"]
    else:
        cmd += ["-nic", "none"]
    if no_reboot:
        cmd.append("-no-reboot")
    if uefi_vars:
        if arch.uefi is None:
            raise LabError("%s VMs have no UEFI firmware in the lab (pseries boots through SLOF)" % arch.name)
        cmd += ["-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + arch.uefi[0],
                "-drive", "if=pflash,format=raw,unit=1,file=" + uefi_vars]
    return cmd
