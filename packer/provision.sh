#!/bin/sh
# Packer's shell provisioner: installs what Packer uploaded to /tmp/payload (the lab's guest agent
# and, when the service's CLI exists, its bundle at /opt/blksnap/blksnap.js), checks the image, and
# leaves no login behind.
set -eu
payload=/tmp/payload

install -D -m 0755 "$payload/guest/agent.sh" /usr/local/lib/blksnap-lab/agent
install -D -m 0644 "$payload/guest/blksnap-lab-agent.service" \
  /etc/systemd/system/blksnap-lab-agent.service
if [ -f "$payload/blksnap.js" ]; then
  install -D -m 0644 "$payload/blksnap.js" /opt/blksnap/blksnap.js
fi
install -D -m 0644 "$payload/manifest.json" /etc/blksnap-lab/manifest.json
systemctl enable blksnap-lab-agent.service

# The image must be able to do what the e2e cases need: the chosen kernel (and its headers) is the
# one running, deno runs, the tools are there.
kernel_package="${KERNEL_PACKAGE:-linux-image-amd64}"
headers_package="$(printf '%s' "$kernel_package" | sed 's/^linux-image-/linux-headers-/')"
for package in "$kernel_package" "$headers_package"; do
  if [ "$(dpkg-query -W -f '${db:Status-Status}' "$package" 2>/dev/null)" != installed ]; then
    echo "provision.sh: $package is not installed in the base disk" >&2
    exit 1
  fi
done
running_package="$(dpkg-query -S "/boot/vmlinuz-$(uname -r)" | cut -d: -f1)"
depends="$(dpkg-query -W -f '${Depends}' "$kernel_package" | sed 's/ *([^)]*)//g; s/ *[,|] */\n/g')"
if [ "$running_package" != "$kernel_package" ] &&
  ! printf '%s\n' "$depends" | grep -qxF "$running_package"; then
  echo "provision.sh: the running kernel comes from $running_package, not $kernel_package" >&2
  exit 1
fi
echo "kernel $(uname -r) from $running_package (chosen: $kernel_package)"
test -f "/lib/modules/$(uname -r)/build/Makefile"
deno --version
for tool in make gcc modprobe insmod nbd-client qemu-nbd nbdinfo mkfs.ext4 debugfs dumpe2fs \
  e2fsck filefrag fsfreeze mount losetup sfdisk blockdev; do
  command -v "$tool" >/dev/null
done

# No login survives: the build's key is in /run (tmpfs) only; no other key; root has no password.
rm -rf /root/.ssh "$payload"
apt-get clean
journalctl --rotate >/dev/null 2>&1 || true
journalctl --vacuum-time=1s >/dev/null 2>&1 || true
sync
