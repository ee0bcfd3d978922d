/**
 * Chooses the accelerator: KVM only when a short test boot under KVM prints the kernel's banner
 * within the probe time, else TCG. /dev/kvm can exist and still hang every guest (nested
 * virtualisation without vmx/svm, as on the lab's reference machine), so its presence alone
 * proves nothing. The answer is remembered per host boot.
 *
 * @module
 */

import type { Accelerator } from "./qemu_args.ts";
import type { AccelChoice } from "./args.ts";

/** The decision and why. */
export interface AccelDecision {
  readonly accel: Accelerator;
  readonly reason: string;
}

/** Options of {@link chooseAccelerator}. */
export interface ProbeOptions {
  /** A kernel to boot (the image's vmlinuz). */
  kernel: string;
  /** Folder for the probe's console log and the remembered answer. */
  cacheDir: string;
  /** How long the test boot may take (default 10 s). */
  timeoutMs?: number;
}

async function hostBootId(): Promise<string> {
  try {
    return (await Deno.readTextFile("/proc/sys/kernel/random/boot_id")).trim();
  } catch {
    return "unknown";
  }
}

function kvmUsable(): boolean {
  try {
    Deno.openSync("/dev/kvm", { read: true, write: true }).close();
    return true;
  } catch {
    return false;
  }
}

/**
 * Boots `kernel` under KVM for up to `timeoutMs` and reports whether its banner reached the
 * serial console.
 */
export async function probeKvm(options: ProbeOptions): Promise<boolean> {
  const log = `${options.cacheDir}/kvm-probe.log`;
  await Deno.mkdir(options.cacheDir, { recursive: true });
  await Deno.remove(log).catch(() => {});
  const controller = new AbortController();
  const child = new Deno.Command("qemu-system-x86_64", {
    args: [
      "-machine",
      "pc,accel=kvm",
      "-cpu",
      "host",
      "-m",
      "256",
      "-display",
      "none",
      "-nodefaults",
      "-no-reboot",
      "-kernel",
      options.kernel,
      "-append",
      "console=ttyS0 panic=-1",
      "-serial",
      `file:${log}`,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "null",
    signal: controller.signal,
  }).spawn();
  const deadline = Date.now() + (options.timeoutMs ?? 10_000);
  let answered = false;
  while (Date.now() < deadline) {
    const text = await Deno.readTextFile(log).catch(() => "");
    if (text.includes("Linux version")) {
      answered = true;
      break;
    }
    const exited = await Promise.race([
      child.status.then(() => true),
      new Promise<false>((resolve) => setTimeout(() => resolve(false), 200)),
    ]);
    if (exited) break;
  }
  try {
    controller.abort();
  } catch {
    // already exited
  }
  await child.status;
  return answered;
}

/**
 * Decides the accelerator for `choice`: tcg and kvm are taken as given; auto probes KVM (once per
 * host boot) and falls back to TCG.
 */
export async function chooseAccelerator(
  choice: AccelChoice,
  options: ProbeOptions,
): Promise<AccelDecision> {
  if (choice !== "auto") return { accel: choice, reason: `--accel ${choice}` };
  if (!kvmUsable()) return { accel: "tcg", reason: "/dev/kvm is absent or not accessible" };
  const remembered = `${options.cacheDir}/kvm-probe.json`;
  const bootId = await hostBootId();
  try {
    const previous = JSON.parse(await Deno.readTextFile(remembered));
    if (previous.bootId === bootId && (previous.accel === "kvm" || previous.accel === "tcg")) {
      return { accel: previous.accel, reason: `${previous.reason} (probed earlier this boot)` };
    }
  } catch {
    // no answer yet
  }
  const seconds = (options.timeoutMs ?? 10_000) / 1000;
  const decision: AccelDecision = await probeKvm(options)
    ? { accel: "kvm", reason: `a KVM test boot answered within ${seconds} s` }
    : { accel: "tcg", reason: `a KVM test boot printed nothing within ${seconds} s` };
  await Deno.writeTextFile(remembered, JSON.stringify({ bootId, ...decision }));
  return decision;
}
