#!/bin/sh
# Record the files fleetboot.kexec's Host.read() needs from a live machine into a fixture tree.
#
#   scripts/record_sysroot.sh 'ssh root@10.0.2.15' tests/fixtures/sysroots/lab-q35-ovmf
#   scripts/record_sysroot.sh 'ssh -p 2222 debian@localhost sudo' OUTDIR
#
# HOST_SSH_CMD is a command prefix that runs its argument as a shell command on the machine, as
# root (iomem shows zero addresses and boot_params is unreadable otherwise).  Nothing on the
# machine is changed except a temporary directory, removed afterwards.
#
# Files in /proc and /sys report a size of 0 or 4096 whatever they hold, so tar cannot read them
# directly: the remote side copies each one with cat into a staging directory first.
# Keep the list in step with FILES and DIRS in plugins/module_utils/kexec/host/__init__.py
# (tests/unit/test_host.py checks it).
set -eu

if [ $# -ne 2 ]; then
    echo "usage: $0 HOST_SSH_CMD OUTDIR" >&2
    exit 2
fi
SSH_CMD=$1
OUT=$2

# shellcheck disable=SC2016  # expanded on the remote machine, not here
REMOTE_SCRIPT='
set -eu
T=$(mktemp -d)
trap "rm -rf \"$T\"" EXIT
chmod 755 "$T"  # mktemp makes it 0700 and tar would give OUTDIR that mode
copy() {
    # Missing or unreadable files are simply absent from the recording, as Host.read expects.
    if [ -r "$1" ] && [ -f "$1" ]; then
        mkdir -p "$T$(dirname "$1")"
        cat "$1" > "$T$1" 2>/dev/null || rm -f "$T$1"
    fi
}
for f in \
    /proc/iomem \
    /proc/cmdline \
    /proc/meminfo \
    /proc/cpuinfo \
    /proc/sys/kernel/osrelease \
    /proc/sys/kernel/kexec_load_disabled \
    /proc/sys/kernel/arch \
    /sys/kernel/security/lockdown \
    /sys/kernel/boot_params/data \
    /sys/kernel/kexec_loaded \
    /sys/kernel/kexec_crash_loaded \
    /sys/kernel/kexec_crash_size \
    /sys/kernel/kexec/loaded \
    /sys/kernel/kexec/crash_loaded \
    /sys/kernel/kexec/crash_size \
    /sys/firmware/fdt \
    /sys/firmware/efi/systab \
    /sys/firmware/efi/fw_vendor \
    /sys/firmware/efi/runtime \
    /sys/firmware/efi/config_table \
    /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-e0b98c3b0e8c \
    /proc/device-tree/chosen/linux,crashkernel-base \
    /proc/device-tree/chosen/linux,crashkernel-size \
    "/boot/config-$(uname -r)"
do
    copy "$f"
done
if [ -d /sys/firmware/memmap ]; then
    for d in /sys/firmware/memmap/*; do
        for f in start end type; do copy "$d/$f"; done
    done
fi
if [ -d /sys/firmware/efi ]; then
    mkdir -p "$T/sys/firmware/efi"
    # The EFI runtime map, which bootparams.EfiState.read hands to the next kernel.
    if [ -d /sys/firmware/efi/runtime-map ]; then
        for d in /sys/firmware/efi/runtime-map/*; do
            for f in type phys_addr virt_addr num_pages attribute; do copy "$d/$f"; done
        done
    fi
fi
# The live device tree (arm64 and ppc64): every node a directory, every property a file, copied
# byte for byte whatever its name ("?", commas, "#address-cells"); /proc/device-tree links to
# /sys/firmware/devicetree/base, so the copy starts inside it. On ppc64 it is the only place that
# shows the crash region (chosen/linux,crashkernel-base and -size).
if [ -d /proc/device-tree/ ]; then
    mkdir -p "$T/proc/device-tree"
    (cd /proc/device-tree/ && find . -type d -exec sh -c '"'"'for d; do mkdir -p "$0/$d"; done'"'"' "$T/proc/device-tree" {} + \
        && find . -type f -exec sh -c '"'"'for f; do cat "$f" > "$0/$f"; done'"'"' "$T/proc/device-tree" {} +)
fi
# Crash-kernel facts (root only): per-CPU crash note addresses, the vmcoreinfo note and the
# ELF header of /proc/kcore (its first pages: the kernel text mapping under KASLR).
for f in /sys/kernel/vmcoreinfo /sys/devices/system/cpu/possible /sys/devices/system/cpu/present; do
    copy "$f"
done
for d in /sys/devices/system/cpu/cpu[0-9]*; do
    for f in crash_notes crash_notes_size; do copy "$d/$f"; done
done
if [ -r /proc/kcore ]; then
    mkdir -p "$T/proc"
    head -c 16384 /proc/kcore > "$T/proc/kcore" 2>/dev/null || rm -f "$T/proc/kcore"
fi
uname -m > "$T/machine"
getconf PAGESIZE > "$T/pagesize"
tar -C "$T" -cf - .
'

mkdir -p "$OUT"
# shellcheck disable=SC2086  # HOST_SSH_CMD is deliberately split into words
$SSH_CMD sh -c "'$(printf "%s" "$REMOTE_SCRIPT" | sed "s/'/'\\\\''/g")'" | tar -C "$OUT" -xf -
echo "recorded $(find "$OUT" -type f | wc -l) files into $OUT"
