import assert from "node:assert/strict";
import { kernelCommandLine, qemuArgs, type QemuRunSpec } from "../../lab/qemu_args.ts";

const spec: QemuRunSpec = {
  accel: "tcg",
  kernel: "/c/vmlinuz",
  initrd: "/c/initrd.img",
  rootDisk: "/r/root.qcow2",
  inputDisk: "/r/in.tar",
  outputDisk: "/r/out.img",
  scratchDisk: "/r/scratch.img",
  serialLog: "/r/serial.log",
  progressLog: "/r/progress.log",
  monitorSocket: "/r/monitor.sock",
  pidFile: "/r/qemu.pid",
  memoryMiB: 2048,
  cpus: 2,
  keep: false,
  daemonize: false,
};

function valuesOf(args: string[], flag: string): string[] {
  return args.flatMap((arg, i) => arg === flag ? [args[i + 1]] : []);
}

Deno.test("qemuArgs boots the image's kernel directly on TCG with the run's disks by serial", () => {
  const args = qemuArgs(spec);
  assert.deepEqual(valuesOf(args, "-machine"), ["pc,accel=tcg"]);
  assert.deepEqual(valuesOf(args, "-cpu"), ["max"]);
  assert.deepEqual(valuesOf(args, "-kernel"), ["/c/vmlinuz"]);
  assert.deepEqual(valuesOf(args, "-initrd"), ["/c/initrd.img"]);
  assert.deepEqual(valuesOf(args, "-device").filter((d) => d.startsWith("virtio-blk")), [
    "virtio-blk-pci,drive=root",
    "virtio-blk-pci,drive=lab-in,serial=lab-in",
    "virtio-blk-pci,drive=lab-out,serial=lab-out",
    "virtio-blk-pci,drive=lab-scratch,serial=lab-scratch",
  ]);
  const drives = valuesOf(args, "-drive");
  assert.equal(drives[0], "file=/r/root.qcow2,if=none,id=root,format=qcow2,cache=unsafe");
  assert.ok(drives.includes("file=/r/in.tar,if=none,id=lab-in,format=raw,readonly=on"));
  assert.deepEqual(valuesOf(args, "-serial"), ["file:/r/serial.log", "file:/r/progress.log"]);
  assert.ok(!args.includes("-daemonize"));
});

Deno.test("qemuArgs keeps networking restricted and forwards only loopback", () => {
  assert.deepEqual(valuesOf(qemuArgs(spec), "-netdev"), ["user,id=n0,restrict=on"]);
  const kept = qemuArgs({ ...spec, keep: true, daemonize: true, sshPort: 40022 });
  assert.deepEqual(valuesOf(kept, "-netdev"), [
    "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22",
  ]);
  assert.ok(kept.includes("-daemonize"));
});

Deno.test("qemuArgs uses the host CPU model under KVM", () => {
  const args = qemuArgs({ ...spec, accel: "kvm" });
  assert.deepEqual(valuesOf(args, "-machine"), ["pc,accel=kvm"]);
  assert.deepEqual(valuesOf(args, "-cpu"), ["host"]);
});

Deno.test("kernelCommandLine asks for the agent, and carries a --keep key as one base64 word", () => {
  assert.equal(
    kernelCommandLine({ keep: false }),
    "root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=-1 blksnap_lab.run",
  );
  const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ8 blksnap-lab-run\n";
  const line = kernelCommandLine({ keep: true, sshPublicKey: key });
  const words = line.split(" ");
  assert.ok(words.includes("blksnap_lab.keep"));
  const encoded = words.find((w) => w.startsWith("blksnap_lab.ssh_key="))!;
  assert.equal(atob(encoded.slice("blksnap_lab.ssh_key=".length)), key);
});

Deno.test("qemuArgs boots a custom kernel without an initrd", () => {
  const { initrd: _initrd, ...withoutInitrd } = spec;
  const args = qemuArgs({ ...withoutInitrd, kernel: "/k/bzImage" });
  assert.deepEqual(valuesOf(args, "-kernel"), ["/k/bzImage"]);
  assert.ok(!args.includes("-initrd"));
  assert.match(valuesOf(args, "-append")[0], /^root=\/dev\/vda rw /);
});
