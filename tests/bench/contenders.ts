/**
 * The servers the benchmark compares, and how to start and stop each one on
 * a free loopback port.
 *
 * @module
 */

import { Option } from "../../src/nbd/constants.ts";
import { RawNbdClient } from "../_helpers/nbd_raw_client.ts";

/** A server under test. */
export interface Contender {
  /** Short key (for --only and results.json). */
  key: string;
  /** Column title. */
  label: string;
  /** Runs the full read/write suite. */
  suite: boolean;
  /** Runs the first-write (copy-on-write) measurements on fresh instances. */
  firstWrite: boolean;
  /** The command line, given the port and paths. */
  command(port: number, paths: ContenderPaths): string[];
  /** True for our server (started through Deno, profiled with --prof). */
  ours: boolean;
}

/** Paths a contender needs. */
export interface ContenderPaths {
  /** The 1 GiB disk file. */
  disk: string;
  /** Directory for the difference storage file (else the storage is in memory). */
  storageDir?: string;
}

const DENO = Deno.execPath();
const SERVE = new URL("./serve.ts", import.meta.url).pathname;

function ours(mode: string) {
  return (port: number, paths: ContenderPaths) => [
    DENO,
    "run",
    "--allow-all",
    SERVE,
    "--mode",
    mode,
    "--path",
    paths.disk,
    "--port",
    String(port),
    ...((mode.startsWith("snapshot") || mode.startsWith("image")) && paths.storageDir
      ? ["--storage", `${paths.storageDir}/blksnap-bench-diff-${port}`]
      : []),
  ];
}

/** Every contender, in table order. */
export const CONTENDERS: Contender[] = [
  {
    key: "ours-file",
    label: "blksnap (file)",
    suite: true,
    firstWrite: false,
    ours: true,
    command: ours("file"),
  },
  {
    key: "ours-file-sync",
    label: "blksnap (file, sync I/O)",
    suite: true,
    firstWrite: false,
    ours: true,
    command: ours("file-sync"),
  },
  {
    key: "ours-file-ffi",
    label: "blksnap (file, FFI I/O)",
    suite: true,
    firstWrite: false,
    ours: true,
    command: ours("file-ffi"),
  },
  {
    key: "ours-memory",
    label: "blksnap (memory)",
    suite: true,
    firstWrite: false,
    ours: true,
    command: ours("memory"),
  },
  {
    key: "ours-tracker",
    label: "blksnap (tracker, main thread: --nbd-workers 0)",
    suite: true,
    firstWrite: false,
    ours: true,
    command: ours("tracker"),
  },
  {
    key: "ours-tracker-workers",
    label: "blksnap (tracker, NBD Workers: the userspace default)",
    suite: true,
    firstWrite: false,
    ours: true,
    command: ours("tracker-workers"),
  },
  {
    key: "ours-snapshot",
    label: "blksnap (taken snapshot, main thread)",
    suite: false,
    firstWrite: true,
    ours: true,
    command: ours("snapshot"),
  },
  {
    key: "ours-snapshot-workers",
    label: "blksnap (taken snapshot, NBD Workers)",
    suite: false,
    firstWrite: true,
    ours: true,
    command: ours("snapshot-workers"),
  },
  {
    key: "nbdkit-file",
    label: "nbdkit file",
    suite: true,
    firstWrite: false,
    ours: false,
    command: (
      port,
      { disk },
    ) => ["nbdkit", "-f", "-i", "127.0.0.1", "-p", String(port), "file", disk],
  },
  {
    key: "nbdkit-cow",
    label: "nbdkit file+cow",
    suite: true,
    firstWrite: true,
    ours: false,
    command: (port, { disk }) => [
      "nbdkit",
      "-f",
      "-i",
      "127.0.0.1",
      "-p",
      String(port),
      "--filter=cow",
      "file",
      disk,
    ],
  },
  {
    key: "qemu-nbd",
    label: "qemu-nbd",
    suite: true,
    firstWrite: false,
    ours: false,
    command: (port, { disk }) => [
      "qemu-nbd",
      "-f",
      "raw",
      "-t",
      "-e",
      "16",
      "--aio=threads",
      "--cache=writeback",
      "-b",
      "127.0.0.1",
      "-p",
      String(port),
      disk,
    ],
  },
];

/** The sparse copy row's servers: our image export and nbdkit's file plugin. */
export const SPARSE_CONTENDERS: Contender[] = [
  {
    key: "ours-image",
    label: "blksnap (snapshot image, main thread)",
    suite: false,
    firstWrite: false,
    ours: true,
    command: ours("image"),
  },
  {
    key: "ours-image-workers",
    label: "blksnap (snapshot image, NBD Workers)",
    suite: false,
    firstWrite: false,
    ours: true,
    command: ours("image-workers"),
  },
  {
    key: "nbdkit-file-sparse",
    label: "nbdkit file",
    suite: false,
    firstWrite: false,
    ours: false,
    command: CONTENDERS.find((c) => c.key === "nbdkit-file")!.command,
  },
];

/** A started contender. */
export interface Running {
  /** Its NBD URI (default export). */
  uri: string;
  /** Stops it (SIGTERM) and waits for it to exit. */
  stop(): Promise<void>;
}

/** Starts `contender` on a free port and waits until it accepts connections. */
export async function startContender(
  contender: Contender,
  options: { disk: string; storageDir?: string; dir: string; prof: boolean },
): Promise<Running> {
  const port = freePort();
  const [program, ...args] = contender.command(port, options);
  if (contender.ours && options.prof) args.splice(1, 0, "--v8-flags=--prof");
  const child = new Deno.Command(program, {
    args,
    cwd: options.dir,
    // nbdkit's cow filter keeps its overlay in TMPDIR: beside our difference storage.
    env: { TMPDIR: options.dir },
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  try {
    await waitForPort(port);
  } catch (error) {
    child.kill("SIGKILL");
    await child.status;
    throw error;
  }
  return {
    uri: `nbd://127.0.0.1:${port}/`,
    stop: async () => {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Waits until an NBD server answers on `port` (a greeting, then NBD_OPT_ABORT). */
async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 300; i++) {
    let client: RawNbdClient | undefined;
    try {
      client = await RawNbdClient.connect({ port });
      await client.greeting();
      await client.clientFlags();
      await client.option(Option.NBD_OPT_ABORT);
      await client.optionReply();
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 50));
    } finally {
      client?.close();
    }
  }
  throw new Error(`no NBD server answers on port ${port} after 15 s`);
}
