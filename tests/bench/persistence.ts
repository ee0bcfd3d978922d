/**
 * The cost of CBT persistence (the write-intent record, cbt_journal.ts) on
 * the product path: `blksnap serve --backend userspace` with
 * `--cbt-persistence on` and `off`, the disk attached through the API and
 * written over its NBD export.
 *
 * - fresh blocks: a new service (new state folder, so a new CBT) and fio
 *   4 KiB writes, one per 64 KiB tracking block (strided zones of one
 *   write each, at a random offset inside its block, the blocks in order:
 *   fio's random map works in 4 KiB units and would hit blocks twice):
 *   every write is a block's first mark, which with persistence costs a
 *   pwrite of the marked byte and a share of an fdatasync;
 * - marked blocks: then, on the same service, 4 KiB random writes anywhere
 *   for the run time: every block is marked already, which costs nothing;
 * - sequential write: nbdcopy of the source file onto a fresh service.
 *
 * The first-mark cost is 1/IOPS(on) - 1/IOPS(off) of fresh-block writes at
 * QD1, in microseconds per write.
 *
 * @module
 */

import { join } from "node:path";
import { runToolOk } from "../_helpers/nbd_fixture.ts";
import { nbdcopy } from "./measure.ts";

const TRACKING_BLOCK_BYTES = 64 * 1024;
const MAIN = new URL("../../src/cli/main.ts", import.meta.url).pathname;

/** One persistence mode's figures. */
export interface PersistenceRow {
  /** 4 KiB writes, each on a fresh tracking block, IOPS at QD1. */
  freshQd1: number;
  /** The same at QD16. */
  freshQd16: number;
  /** 4 KiB random writes on marked blocks, IOPS at QD1. */
  markedQd1: number;
  /** The same at QD16. */
  markedQd16: number;
  /** Sequential write, MiB/s. */
  seqWrite: number;
}

/** Options of {@link benchPersistence}. */
export interface PersistenceBenchOptions {
  /** The bench folder (state folders go under it). */
  dir: string;
  /** The disk to attach. */
  disk: string;
  /** A file of the disk's size to copy onto it. */
  source: string;
  /** Their size. */
  sizeMiB: number;
  /** Seconds per time-based fio point. */
  runtime: number;
}

interface Service {
  uri: string;
  stop(): Promise<void>;
}

async function startService(dir: string, disk: string, persistence: "on" | "off") {
  const stateDir = await Deno.makeTempDir({ dir, prefix: `persist-state-${persistence}-` });
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      "--unstable-no-legacy-abort",
      MAIN,
      "serve",
      "--backend",
      "userspace",
      "--listen",
      "127.0.0.1:0",
      "--nbd-listen",
      "127.0.0.1:0",
      "--state-dir",
      stateDir,
      "--allow-path",
      dir,
      "--cbt-persistence",
      persistence,
    ],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const lines = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  let api: string | undefined;
  let nbd: string | undefined;
  while (api === undefined || nbd === undefined) {
    const { value, done } = await lines.read();
    if (done) throw new Error(`serve ended:\n${text}`);
    text += value;
    api ??= /HTTP API on http:\/\/[^ ]+:(\d+)\/v1/.exec(text)?.[1];
    nbd ??= /NBD exports on nbd:\/\/[^ ]+:(\d+)\//.exec(text)?.[1];
  }
  const drain = (async () => {
    while (!(await lines.read()).done) { /* keep the pipe flowing */ }
  })();
  const response = await fetch(`http://127.0.0.1:${api}/v1/devices`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ path: disk, name: "disk" }),
  });
  if (response.status !== 201) throw new Error(`attach: ${await response.text()}`);
  return {
    uri: `nbd://127.0.0.1:${nbd}/disk`,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await drain;
      await Deno.remove(stateDir, { recursive: true });
    },
  } satisfies Service;
}

async function fioWrites(
  uri: string,
  options: { depth: number; sizeMiB: number } & ({ fresh: true } | { runtime: number }),
): Promise<number> {
  const blocks = (options.sizeMiB * 1024 * 1024) / TRACKING_BLOCK_BYTES;
  const pattern = "fresh" in options
    ? [
      "--zonemode=strided",
      "--zonesize=4k",
      `--zonerange=${TRACKING_BLOCK_BYTES}`,
      `--number_ios=${blocks}`,
    ]
    : [`--runtime=${options.runtime}`, "--time_based"];
  const out = await runToolOk("fio", [
    "--name=persistence",
    "--ioengine=nbd",
    `--uri=${uri}`,
    "--rw=randwrite",
    "--bs=4k",
    `--iodepth=${options.depth}`,
    `--size=${options.sizeMiB}m`,
    ...pattern,
    "--output-format=json",
  ]);
  const report = JSON.parse(out.slice(out.indexOf("{")));
  return Math.round(report.jobs[0].write.iops * 10) / 10;
}

async function withService(
  options: PersistenceBenchOptions,
  persistence: "on" | "off",
  body: (uri: string) => Promise<void>,
): Promise<void> {
  await runToolOk("sync", []);
  const service = await startService(options.dir, options.disk, persistence);
  try {
    await body(service.uri);
  } finally {
    await service.stop();
  }
}

/** Measures one persistence mode. */
export async function benchPersistence(
  options: PersistenceBenchOptions,
  persistence: "on" | "off",
): Promise<PersistenceRow> {
  const { sizeMiB, runtime } = options;
  const row: Partial<PersistenceRow> = {};
  await withService(options, persistence, async (uri) => {
    row.freshQd1 = await fioWrites(uri, { depth: 1, sizeMiB, fresh: true });
  });
  await withService(options, persistence, async (uri) => {
    row.freshQd16 = await fioWrites(uri, { depth: 16, sizeMiB, fresh: true });
    row.markedQd1 = await fioWrites(uri, { depth: 1, sizeMiB, runtime });
    row.markedQd16 = await fioWrites(uri, { depth: 16, sizeMiB, runtime });
  });
  await withService(options, persistence, async (uri) => {
    row.seqWrite = await nbdcopy(options.source, uri, sizeMiB);
  });
  return row as PersistenceRow;
}

/** Markdown table of both modes, their ratio, and the first-mark cost. */
export function formatPersistence(on: PersistenceRow, off: PersistenceRow): string {
  const columns: Array<[keyof PersistenceRow, string]> = [
    ["freshQd1", "fresh 4K QD1 IOPS"],
    ["freshQd16", "fresh 4K QD16 IOPS"],
    ["markedQd1", "marked 4K QD1 IOPS"],
    ["markedQd16", "marked 4K QD16 IOPS"],
    ["seqWrite", "seq write MiB/s"],
  ];
  const line = (label: string, cells: string[]) => `| ${[label, ...cells].join(" | ")} |`;
  const firstMarkUs = (1 / on.freshQd1 - 1 / off.freshQd1) * 1e6;
  return [
    line("tracked device, CBT persistence", columns.map(([, title]) => title)),
    line("---", columns.map(() => "---:")),
    line("on", columns.map(([key]) => String(on[key]))),
    line("off", columns.map(([key]) => String(off[key]))),
    line("ratio on/off", columns.map(([key]) => (on[key] / off[key]).toFixed(2))),
    "",
    `first-mark cost at QD1: ${firstMarkUs.toFixed(0)} µs per write ` +
    "(a pwrite of the marked byte and an fdatasync of the CBT record)",
  ].join("\n");
}

/** The state folders a killed run may have left in `dir`. */
export async function removePersistenceLeftovers(dir: string): Promise<void> {
  for await (const entry of Deno.readDir(dir)) {
    if (entry.name.startsWith("persist-state-")) {
      await Deno.remove(join(dir, entry.name), { recursive: true }).catch(() => {});
    }
  }
}
