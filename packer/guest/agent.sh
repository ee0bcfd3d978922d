#!/bin/sh
# The lab's guest agent, started at boot when the kernel command line carries blksnap_lab.run.
# The host hands each run over on virtio disks (identified by their serial numbers):
#   lab-in   a tar archive: run.sh (the runner), lab.env (settings), the bundled tests, the
#            module input; extracted to /var/lib/blksnap-lab/in
#   lab-out  an empty disk that receives a tar archive of /var/lib/blksnap-lab/out at the end
# and reads progress lines from the second serial port (ttyS1) while the run goes on. With
# blksnap_lab.keep on the command line the guest stays up afterwards; otherwise it powers off.
set -u
work=/var/lib/blksnap-lab
in_disk=/dev/disk/by-id/virtio-lab-in
out_disk=/dev/disk/by-id/virtio-lab-out
progress=/dev/ttyS1

stty -F "$progress" 115200 raw -echo 2>/dev/null
exec 3>"$progress"
say() { printf 'lab-agent: %s\n' "$*" >&3; echo "lab-agent: $*"; }

finish() {
  rc="$1"
  echo "$rc" > "$work/out/exit-code"
  journalctl -b --no-pager > "$work/out/journal.txt" 2>&1
  dmesg > "$work/out/dmesg.txt" 2>&1
  if tar -C "$work/out" -cf "$out_disk" . && sync; then
    say "results written"
  else
    say "cannot write the results to $out_disk"
  fi
  say "done rc=$rc"
  if ! grep -qw blksnap_lab.keep /proc/cmdline; then systemctl poweroff --no-block; fi
  exit 0
}

say "booted $(uname -r) in $(cut -d' ' -f1 /proc/uptime) s"
rm -rf "$work"
mkdir -p "$work/in" "$work/out"
for _ in $(seq 1 60); do [ -e "$in_disk" ] && [ -e "$out_disk" ] && break; sleep 0.5; done
if ! tar -xf "$in_disk" -C "$work/in"; then
  say "cannot read the run's input from $in_disk"
  finish 3
fi
say "running"
LAB_IN="$work/in" LAB_OUT="$work/out" sh "$work/in/run.sh" >&3 2>&1
finish $?
