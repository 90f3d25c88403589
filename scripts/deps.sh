#!/usr/bin/env bash
# Install the system packages the lab and the purgatory build need, only when missing.
# Called by `make deps` (and so by every other target); idempotent and quiet when all is there.
set -eu
need=""
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
have_cmd qemu-system-x86_64 || need="$need qemu-system-x86"
have_cmd qemu-img           || need="$need qemu-utils"
have_cmd debootstrap        || need="$need debootstrap"
have_cmd mkfs.ext4          || need="$need e2fsprogs"
have_cmd ssh                || need="$need openssh-client"
have_cmd ssh-keygen         || need="$need openssh-client"
have_cmd gcc                || need="$need gcc"
have_cmd ld                 || need="$need binutils"
have_pkg ovmf               || need="$need ovmf"
have_cmd zstd               || need="$need zstd"
have_cmd cpio               || need="$need cpio"
have_cmd shellcheck         || need="$need shellcheck"
have_cmd dtc                || need="$need device-tree-compiler"
have_pkg debian-archive-keyring || need="$need debian-archive-keyring"
# Foreign architectures: their QEMU (lab VMs, and the device trees tests dump), cross compilers
# for their purgatories, and the firmware arm64 VMs boot through.
have_cmd qemu-system-aarch64 || need="$need qemu-system-arm"
have_cmd qemu-system-ppc64  || need="$need qemu-system-ppc"
have_cmd aarch64-linux-gnu-gcc || need="$need gcc-aarch64-linux-gnu"
have_cmd powerpc64le-linux-gnu-gcc || need="$need gcc-powerpc64le-linux-gnu"
have_pkg qemu-efi-aarch64   || need="$need qemu-efi-aarch64"
if [ -z "$need" ]; then
    exit 0
fi
echo "deps: installing:$need"
if [ "$(id -u)" != 0 ]; then
    echo "deps: these packages are missing and installing them needs root: sudo apt-get install$need" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $need >/dev/null
echo "deps: done"
