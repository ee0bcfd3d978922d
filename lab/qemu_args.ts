/**
 * The QEMU command line of a lab run. The guest boots its own kernel directly, sees the run's
 * input and output as virtio disks named by serial number (lab-in, lab-out, plus lab-scratch for
 * cases that need a spare block device), writes its console to one file and its progress to a
 * second serial port, and has user networking restricted to the host's loopback forwards.
 *
 * @module
 */

/** Accelerators the lab can use. */
export type Accelerator = "kvm" | "tcg";

/** What {@link qemuArgs} needs to know about one run. */
export interface QemuRunSpec {
  /** Accelerator chosen by the probe. */
  readonly accel: Accelerator;
  /** Kernel and initrd booted directly: the image's, or a custom kernel without an initrd. */
  readonly kernel: string;
  readonly initrd?: string;
  /** Root disk: a qcow2 overlay over the cached image. */
  readonly rootDisk: string;
  /** Input tar archive (read-only disk), output disk, scratch disk: raw files. */
  readonly inputDisk: string;
  readonly outputDisk: string;
  readonly scratchDisk: string;
  /** Files receiving the console (ttyS0) and the agent's progress (ttyS1). */
  readonly serialLog: string;
  readonly progressLog: string;
  /** QEMU monitor socket and pid file. */
  readonly monitorSocket: string;
  readonly pidFile: string;
  /** Memory in MiB and virtual CPUs. */
  readonly memoryMiB: number;
  readonly cpus: number;
  /** Forward 127.0.0.1:sshPort to the guest's SSH (only for --keep). */
  readonly sshPort?: number;
  /** The public key line that the guest accepts for this boot (only for --keep). */
  readonly sshPublicKey?: string;
  /** Leave the guest running after the suite. */
  readonly keep: boolean;
  /** Detach QEMU from the lab's process (with keep). */
  readonly daemonize: boolean;
}

/** The kernel command line of a run. */
export function kernelCommandLine(spec: Pick<QemuRunSpec, "keep" | "sshPublicKey">): string {
  const args = [
    "root=/dev/vda",
    "rw",
    "console=ttyS0",
    "net.ifnames=0",
    "panic=-1",
    "blksnap_lab.run",
  ];
  if (spec.keep) args.push("blksnap_lab.keep");
  if (spec.sshPublicKey !== undefined) {
    args.push(`blksnap_lab.ssh_key=${btoa(`${spec.sshPublicKey.trim()}\n`)}`);
  }
  return args.join(" ");
}

/** The arguments of qemu-system-x86_64 for `spec` (without the program name). */
export function qemuArgs(spec: QemuRunSpec): string[] {
  const netdev = ["user", "id=n0", "restrict=on"];
  if (spec.sshPort !== undefined) netdev.push(`hostfwd=tcp:127.0.0.1:${spec.sshPort}-:22`);
  const disk = (path: string, name: string, extra: string) => [
    "-drive",
    `file=${path},if=none,id=${name},format=raw${extra}`,
    "-device",
    `virtio-blk-pci,drive=${name},serial=${name}`,
  ];
  return [
    "-machine",
    `pc,accel=${spec.accel}`,
    "-cpu",
    spec.accel === "kvm" ? "host" : "max",
    "-m",
    `${spec.memoryMiB}`,
    "-smp",
    `${spec.cpus}`,
    "-display",
    "none",
    "-vga",
    "none",
    "-no-reboot",
    "-kernel",
    spec.kernel,
    ...(spec.initrd !== undefined ? ["-initrd", spec.initrd] : []),
    "-append",
    kernelCommandLine(spec),
    // Devices are placed on the PCI bus in command-line order: the root disk comes first, so
    // it is the guest's /dev/vda.
    "-drive",
    `file=${spec.rootDisk},if=none,id=root,format=qcow2,cache=unsafe`,
    "-device",
    "virtio-blk-pci,drive=root",
    ...disk(spec.inputDisk, "lab-in", ",readonly=on"),
    ...disk(spec.outputDisk, "lab-out", ""),
    ...disk(spec.scratchDisk, "lab-scratch", ",cache=unsafe"),
    "-netdev",
    netdev.join(","),
    "-device",
    "virtio-net-pci,netdev=n0",
    "-serial",
    `file:${spec.serialLog}`,
    "-serial",
    `file:${spec.progressLog}`,
    "-monitor",
    `unix:${spec.monitorSocket},server,nowait`,
    "-pidfile",
    spec.pidFile,
    ...(spec.daemonize ? ["-daemonize"] : []),
  ];
}
