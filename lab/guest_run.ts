/**
 * One boot of the lab image: a disposable qcow2 overlay over the cached image, the run's disks,
 * QEMU in the foreground (or detached with --keep), and the guest's progress followed from its
 * second serial port until the agent reports the end of the suite.
 *
 * @module
 */

import { ServiceError } from "../src/errors.ts";
import { LineSplitter, type ProgressEvent, ProgressParser } from "./progress.ts";
import { runLogged } from "./process.ts";
import { makeSshKey } from "./ssh_key.ts";
import { type Accelerator, qemuArgs } from "./qemu_args.ts";
import type { LabImage } from "./lab_image.ts";

/** The files of a run folder. */
export interface RunFiles {
  /** The run's input folder and its tar archive (the lab-in disk). */
  readonly inDir: string;
  readonly inputTar: string;
  /** Raw disks: lab-out (results) and lab-scratch (for the cases). */
  readonly outputDisk: string;
  readonly scratchDisk: string;
  /** qcow2 overlay over the cached image. */
  readonly rootDisk: string;
  /** Guest console, agent progress, QEMU's own output. */
  readonly serialLog: string;
  readonly progressLog: string;
  readonly qemuLog: string;
  /** QEMU monitor socket and pid file. */
  readonly monitorSocket: string;
  readonly pidFile: string;
  /** Private key of a --keep run's SSH login. */
  readonly sshKey: string;
  /** Where the guest's output folder is unpacked. */
  readonly resultsDir: string;
}

/** Files of the run folder `runDir`. */
export function runFiles(runDir: string): RunFiles {
  return {
    inDir: `${runDir}/in`,
    inputTar: `${runDir}/in.tar`,
    outputDisk: `${runDir}/out.img`,
    scratchDisk: `${runDir}/scratch.img`,
    rootDisk: `${runDir}/root.qcow2`,
    serialLog: `${runDir}/serial.log`,
    progressLog: `${runDir}/progress.log`,
    monitorSocket: `${runDir}/monitor.sock`,
    pidFile: `${runDir}/qemu.pid`,
    qemuLog: `${runDir}/qemu.log`,
    sshKey: `${runDir}/ssh_key`,
    resultsDir: `${runDir}/results`,
  };
}

/** Options of {@link bootGuest}. */
export interface BootOptions {
  readonly image: LabImage;
  /** A kernel to boot instead of the image's (booted without an initrd). */
  readonly kernel?: string;
  readonly runDir: string;
  readonly accel: Accelerator;
  readonly keep: boolean;
  readonly memoryMiB?: number;
  readonly cpus?: number;
  /** Output disk and scratch disk sizes in bytes. */
  readonly outputBytes?: number;
  readonly scratchBytes?: number;
}

/** A booted guest. */
export interface Guest {
  /** Resolves with QEMU's exit status (never, for a detached --keep guest). */
  readonly exited: Promise<number>;
  /** SSH port on 127.0.0.1 (--keep only). */
  readonly sshPort?: number;
  /** Stops QEMU (SIGTERM). */
  kill(): void;
}

async function sparseFile(path: string, bytes: number): Promise<void> {
  await Deno.writeFile(path, new Uint8Array());
  await Deno.truncate(path, bytes);
}

function freeLoopbackPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/**
 * Creates the run's disks and starts QEMU.
 *
 * @throws {ServiceError} UNAVAILABLE when QEMU is missing, IO when it fails to start.
 */
export async function bootGuest(options: BootOptions): Promise<Guest> {
  const files = runFiles(options.runDir);
  await runLogged("qemu-img", [
    "create",
    "-q",
    "-f",
    "qcow2",
    "-F",
    "qcow2",
    "-b",
    options.image.qcow2,
    files.rootDisk,
  ]);
  await sparseFile(files.outputDisk, options.outputBytes ?? 512 * 1024 * 1024);
  await sparseFile(files.scratchDisk, options.scratchBytes ?? 2 * 1024 * 1024 * 1024);
  let sshPort: number | undefined;
  let sshPublicKey: string | undefined;
  if (options.keep) {
    sshPublicKey = await makeSshKey(files.sshKey, "blksnap-lab-run");
    sshPort = freeLoopbackPort();
  }
  const args = qemuArgs({
    accel: options.accel,
    ...(options.kernel !== undefined
      ? { kernel: options.kernel }
      : { kernel: options.image.kernel, initrd: options.image.initrd }),
    rootDisk: files.rootDisk,
    inputDisk: files.inputTar,
    outputDisk: files.outputDisk,
    scratchDisk: files.scratchDisk,
    serialLog: files.serialLog,
    progressLog: files.progressLog,
    monitorSocket: files.monitorSocket,
    pidFile: files.pidFile,
    memoryMiB: options.memoryMiB ?? 2048,
    cpus: options.cpus ?? 2,
    keep: options.keep,
    daemonize: options.keep,
    ...(sshPort !== undefined ? { sshPort, sshPublicKey } : {}),
  });
  await Deno.writeTextFile(files.qemuLog, `qemu-system-x86_64 ${args.join(" ")}\n`);
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("qemu-system-x86_64", {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    throw new ServiceError("UNAVAILABLE", "Cannot start qemu-system-x86_64: it is not installed", {
      cause: error,
    });
  }
  // One appending handle per stream: a writable stream takes one pipe at a time.
  const copied = Promise.all([child.stdout, child.stderr].map(async (stream) => {
    const log = await Deno.open(files.qemuLog, { append: true });
    await stream.pipeTo(log.writable);
  }));
  const exited = child.status.then(async (status) => {
    await copied;
    return status.code;
  });
  if (options.keep) {
    // -daemonize: the first process exits once the VM runs; the VM lives on.
    const code = await exited;
    if (code !== 0) {
      throw new ServiceError(
        "IO",
        `QEMU did not start (exit status ${code}): ${await Deno.readTextFile(files.qemuLog)}`,
      );
    }
    const pid = Number((await Deno.readTextFile(files.pidFile)).trim());
    return {
      exited: new Promise<number>(() => {}),
      sshPort,
      kill: () => {
        try {
          Deno.kill(pid, "SIGTERM");
        } catch {
          // already gone
        }
      },
    };
  }
  return {
    exited,
    kill: () => {
      try {
        child.kill("SIGTERM");
      } catch {
        // already gone
      }
    },
  };
}

/**
 * Follows the progress file `path` as the guest writes it, yielding events until the agent
 * reports "done", the guest exits, or `deadline` (epoch ms) passes.
 */
export async function* followProgress(
  path: string,
  options: { exited: Promise<number>; deadline: number },
): AsyncGenerator<ProgressEvent> {
  let hasExited = false;
  options.exited.then(() => hasExited = true);
  const splitter = new LineSplitter();
  const parser = new ProgressParser();
  let offset = 0;
  const buffer = new Uint8Array(64 * 1024);
  while (true) {
    const finalRound = hasExited;
    let file: Deno.FsFile | undefined;
    try {
      file = await Deno.open(path, { read: true });
    } catch {
      file = undefined;
    }
    if (file !== undefined) {
      try {
        await file.seek(offset, Deno.SeekMode.Start);
        while (true) {
          const count = await file.read(buffer);
          if (count === null || count === 0) break;
          offset += count;
          for (const line of splitter.push(buffer.subarray(0, count))) {
            const event = parser.parse(line);
            yield event;
            if (event.kind === "done") return;
          }
        }
      } finally {
        file.close();
      }
    }
    if (finalRound) {
      for (const line of splitter.flush()) yield parser.parse(line);
      return;
    }
    if (Date.now() > options.deadline) return;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}
