#!/bin/sh
# Builds the lab's base disk offline from Debian packages: mmdebstrap (minbase) of SUITE with the
# chosen kernel package and its headers, the tools the e2e cases drive, and the deno binary; then
# an ext4 filesystem image of it (mkfs.ext4 -d) converted to qcow2, plus the kernel and initrd
# for QEMU's direct kernel boot.
#
# Usage: make-base.sh --out DIR --kernel PKG --sources FILE --deno PATH [--headers PKG]
#                     [--suite SUITE] [--size SIZE]
#   --sources  apt sources (one-line or deb822) for the target system, e.g. derived from the
#              host's apt configuration (deno task lab writes it); no mirror is built in here.
# Writes to DIR: base.qcow2, vmlinuz, initrd.img, kernel-release, packages.txt.
# Needs root (mmdebstrap --mode=root keeps file ownership for mkfs.ext4 -d), mmdebstrap,
# e2fsprogs and qemu-utils.
set -eu

out="" kernel="" headers="" sources="" deno="" suite="bookworm" size="6G"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --kernel) kernel="$2"; shift 2 ;;
    --headers) headers="$2"; shift 2 ;;
    --sources) sources="$2"; shift 2 ;;
    --deno) deno="$2"; shift 2 ;;
    --suite) suite="$2"; shift 2 ;;
    --size) size="$2"; shift 2 ;;
    *) echo "make-base.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
for required in out kernel sources deno; do
  eval "value=\$$required"
  if [ -z "$value" ]; then echo "make-base.sh: --$required is required" >&2; exit 2; fi
done
[ -n "$headers" ] || headers="$(printf '%s' "$kernel" | sed 's/^linux-image-/linux-headers-/')"
if [ "$(id -u)" != 0 ]; then
  echo "make-base.sh: building the base disk needs root (mmdebstrap --mode=root)" >&2
  exit 1
fi

here="$(dirname "$(readlink -f "$0")")"
mkdir -p "$out"
rootfs="$out/rootfs"
rm -rf "$rootfs"
trap 'rm -rf "$rootfs" "$out/disk.raw"' EXIT

packages="$kernel,$headers,systemd-sysv,udev,dbus,openssh-server,iproute2,kmod,procps"
packages="$packages,e2fsprogs,nbd-client,qemu-utils,build-essential"
# The e2e cases: losetup (mount), sfdisk (fdisk), nbdinfo --map (libnbd-bin).
packages="$packages,mount,fdisk,libnbd-bin"

BLKSNAP_LAB_DENO="$(readlink -f "$deno")" mmdebstrap --mode=root --variant=minbase \
  --include="$packages" \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --customize-hook="\"$here/customize.sh\" \"\$1\"" \
  "$suite" "$rootfs" "$sources"

release="$(ls "$rootfs/lib/modules")"
if [ "$(printf '%s\n' "$release" | wc -l)" != 1 ]; then
  echo "make-base.sh: expected one kernel in the image, found: $release" >&2
  exit 1
fi
cp "$rootfs/boot/vmlinuz-$release" "$out/vmlinuz"
cp "$rootfs/boot/initrd.img-$release" "$out/initrd.img"
printf '%s\n' "$release" > "$out/kernel-release"
chroot "$rootfs" dpkg-query -W -f '${Package} ${Version}\n' > "$out/packages.txt"

mkfs.ext4 -q -F -L blksnap-lab -d "$rootfs" "$out/disk.raw" "$size"
qemu-img convert -O qcow2 "$out/disk.raw" "$out/base.qcow2"
echo "make-base.sh: base disk $out/base.qcow2 (kernel $release)"
