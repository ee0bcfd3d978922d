#!/bin/sh
# mmdebstrap customize hook for the lab's base disk: called with the root directory of the new
# system as $1 and BLKSNAP_LAB_DENO (the deno binary to install) in the environment.
set -eu
root="$1"
here="$(dirname "$(readlink -f "$0")")"

for file in etc/fstab etc/hostname etc/hosts etc/systemd/network/20-wired.network \
  etc/ssh/sshd_config.d/blksnap-lab.conf etc/systemd/system/blksnap-lab-ssh-key.service; do
  install -D -m 0644 -o root -g root "$here/rootfs/$file" "$root/$file"
done
install -D -m 0755 -o root -g root "$here/rootfs/usr/local/lib/blksnap-lab/install-ssh-key" \
  "$root/usr/local/lib/blksnap-lab/install-ssh-key"
install -D -m 0755 -o root -g root "$BLKSNAP_LAB_DENO" "$root/usr/local/bin/deno"

systemctl --root="$root" enable systemd-networkd.service blksnap-lab-ssh-key.service
# Nothing in the lab may wait for a network it does not have, or spend emulated CPU on
# housekeeping while a test runs.
systemctl --root="$root" mask systemd-networkd-wait-online.service apt-daily.timer \
  apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer man-db.timer

# No root password (the account stays locked), no key on disk: see sshd_config.d/blksnap-lab.conf.
rm -rf "$root/root/.ssh"
