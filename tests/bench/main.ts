/**
 * `deno task bench`: our NBD server side by side with nbdkit (file plugin,
 * and file plugin + cow filter) and qemu-nbd, on one file (1 GiB by default),
 * over TCP on 127.0.0.1:
 *
 * - sequential read and write, MiB/s (nbdcopy with its defaults);
 * - 4 KiB random read and write, IOPS at queue depth 1 and 16 (fio's nbd
 *   engine, one connection);
 * - first writes under a snapshot (copy-on-write): sequential MiB/s and
 *   4 KiB random-write IOPS at QD16 on a fresh instance, ours after an
 *   engine snapshot is taken against nbdkit's cow filter; our difference
 *   storage and the filter's overlay are both files in the bench directory;
 * - the tracked device through the service with CBT persistence on and off
 *   (persistence.ts; `--only persistence`).
 * - mark-dirty (`--only mark-dirty`, tests/bench/mark_dirty.ts): 65,536
 *   whole-device ranges on a 2,097,152-block device under NBD writes.
 *
 * - engine memory: bytes per chunk and peak RSS of a process whose 512 GiB
 *   device has every chunk copied after a take (memory_row.ts);
 * - sparse copy: nbdcopy of a snapshot image of a 1 GiB file holding
 *   100 MiB of data to a new file: seconds and bytes allocated in the
 *   target, ours (the image export) beside nbdkit's file plugin on the file.
 *
 * Every contender on the disk starts from the same page cache
 * (recacheDisk: dropped, then written whole in 4 KiB writes, then synced).
 *
 * Prints Markdown tables with ratios (ours / nbdkit) and writes
 * results.json to the bench directory. Speeds are reported, never asserted.
 *
 *   deno task bench [--dir D] [--size-mib 1024] [--runtime 5] [--repeat 1] [--only a,b] [--prof]
 *
 * --only takes contender keys, plus `memory` and `sparse` for those rows.
 *
 * --repeat N measures every point N times (contenders interleaved, a fresh
 * server each time) and reports the median: the machine may be shared.
 *
 * --prof runs our server with V8's sampling profiler (--v8-flags=--prof);
 * the isolate logs land in the bench directory.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { runTool, runToolOk, toolsMissing } from "../_helpers/nbd_fixture.ts";
import { type Contender, CONTENDERS, SPARSE_CONTENDERS, startContender } from "./contenders.ts";
import { fio, nbdcopy, sparseCopy } from "./measure.ts";
import { formatTables, type Results } from "./report.ts";
import {
  benchPersistence,
  formatPersistence,
  type PersistenceRow,
  removePersistenceLeftovers,
} from "./persistence.ts";
import { benchMarkDirty, formatMarkDirty } from "./mark_dirty.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    dir: { type: "string", default: `${Deno.env.get("TMPDIR") ?? "/tmp"}/blksnap-bench` },
    "size-mib": { type: "string", default: "1024" },
    runtime: { type: "string", default: "5" },
    repeat: { type: "string", default: "1" },
    only: { type: "string" },
    prof: { type: "boolean", default: false },
  },
});

const dir = values.dir;
const sizeMiB = Number(values["size-mib"]);
const runtime = Number(values.runtime);
const repeat = Number(values.repeat);
const only = values.only?.split(",");

if (toolsMissing("nbdcopy", "fio", "nbdkit", "qemu-nbd")) {
  console.log("bench skipped: install libnbd-bin, fio, nbdkit and qemu-utils");
  Deno.exit(0);
}

await Deno.mkdir(dir, { recursive: true });
const disk = `${dir}/disk.img`;
const source = `${dir}/source.img`;
for (const path of [disk, source]) await prepare(path, sizeMiB);
const sparse = `${dir}/sparse.img`;
if (only === undefined || only.includes("sparse")) await prepareSparse(sparse, sizeMiB);
// Our difference storage and nbdkit's cow overlay (its TMPDIR, contenders.ts)
// lie side by side, in the bench directory on the disk's file system.
const storageDir = dir;

const results: Results = {
  machine: await machine(),
  sizeMiB,
  runtimeSeconds: runtime,
  repeat,
  rows: {},
};
const chosen = CONTENDERS.filter((c) => only === undefined || only.includes(c.key));
const samples = new Map<string, Record<string, number[]>>();
const record = (key: string, row: Record<string, number>) => {
  const all = samples.get(key) ?? {};
  for (const [metric, value] of Object.entries(row)) (all[metric] ??= []).push(value);
  samples.set(key, all);
};

for (let round = 1; round <= repeat; round++) {
  for (const contender of chosen.filter((c) => c.suite)) {
    const row: Record<string, number> = {};
    await withContender(contender, async (uri) => {
      row.seqRead = await nbdcopy(uri, "null:", sizeMiB);
      row.seqWrite = await nbdcopy(source, uri, sizeMiB);
      for (const [rw, key] of [["randread", "randRead"], ["randwrite", "randWrite"]] as const) {
        for (const depth of [1, 16]) {
          row[`${key}Qd${depth}`] = await fio(uri, { rw, depth, runtime, sizeMiB });
        }
      }
    });
    record(contender.key, row);
    console.log(`round ${round}`, contender.label, JSON.stringify(row));
  }
  if (only === undefined || only.includes("sparse")) {
    for (const contender of SPARSE_CONTENDERS) {
      const target = `${dir}/sparse-copy-${contender.key}.raw`;
      const row = await withContender(contender, (uri) => sparseCopy(uri, target), sparse);
      record(contender.key, row);
      console.log(`round ${round}`, contender.label, "sparse copy", JSON.stringify(row));
    }
  }
  if (only === undefined || only.includes("memory")) {
    const row = await memoryRow();
    record("engine-memory", row);
    console.log(`round ${round}`, "engine memory", JSON.stringify(row));
  }
  for (const contender of chosen.filter((c) => c.firstWrite)) {
    const row: Record<string, number> = {};
    await withContender(contender, async (uri) => {
      row.cowSeqWrite = await nbdcopy(source, uri, sizeMiB);
    });
    await withContender(contender, async (uri) => {
      row.cowRandWriteQd16 = await fio(uri, { rw: "randwrite", depth: 16, runtime, sizeMiB });
    });
    record(contender.key, row);
    console.log(`round ${round}`, contender.label, "first writes", JSON.stringify(row));
  }
}
const persistence = { on: [] as PersistenceRow[], off: [] as PersistenceRow[] };
if (only === undefined || only.includes("persistence")) {
  await removePersistenceLeftovers(dir);
  for (let round = 1; round <= repeat; round++) {
    for (const mode of ["on", "off"] as const) {
      const row = await benchPersistence({ dir, disk, source, sizeMiB, runtime }, mode);
      persistence[mode].push(row);
      console.log(`round ${round}`, `CBT persistence ${mode}`, JSON.stringify(row));
    }
  }
}
for (const [key, metrics] of samples) {
  results.rows[key] = Object.fromEntries(
    Object.entries(metrics).map(([metric, values]) => [metric, median(values)]),
  );
}

if (only === undefined || only.includes("mark-dirty")) {
  const markDirty = await benchMarkDirty(dir);
  await Deno.writeTextFile(`${dir}/mark-dirty.json`, JSON.stringify(markDirty, null, 2));
  console.log(formatMarkDirty(markDirty));
}

await removeLeftovers();
await Deno.writeTextFile(`${dir}/results.json`, JSON.stringify(results, null, 2));
console.log(formatTables(results, [...CONTENDERS, ...SPARSE_CONTENDERS]));
if (persistence.on.length > 0) {
  const medians = (rows: PersistenceRow[]) =>
    Object.fromEntries(
      Object.keys(rows[0]).map((k) => [k, median(rows.map((r) => r[k as keyof PersistenceRow]))]),
    ) as unknown as PersistenceRow;
  console.log(`\n${formatPersistence(medians(persistence.on), medians(persistence.off))}`);
}
console.log(`results: ${dir}/results.json`);

async function withContender<T>(
  contender: Contender,
  body: (uri: string) => Promise<T>,
  file = disk,
): Promise<T> {
  if (file === disk) await recacheDisk();
  // Write back the dirty pages first, so that nobody pays for someone else's writeback.
  await runTool("sync", []);
  const running = await startContender(contender, {
    disk: file,
    storageDir,
    dir,
    prof: values.prof,
  });
  try {
    return await body(running.uri);
  } finally {
    await running.stop();
  }
}

/**
 * Gives the disk the same page cache before every contender: dropped from
 * the cache, then written whole from the source in 4 KiB writes, which
 * caches it in 4 KiB folios (then written back by the caller's sync). The
 * contenders share the disk, and its cache's shape moves their figures more
 * than they differ: dd overwrote it whole in 0.09 s when readahead had made
 * large folios and in 0.14-0.17 s with 4 KiB ones, and with large folios a
 * 4 KiB write dirties a whole folio, so random writes ran at the disk's
 * speed for everyone (nbdkit file: 43k IOPS at QD16 against 128k).
 */
async function recacheDisk(): Promise<void> {
  await runToolOk("dd", [`if=${disk}`, "iflag=nocache", "count=0", "status=none"]);
  await runToolOk("dd", [`if=${source}`, `of=${disk}`, "bs=4k", "conv=notrunc", "status=none"]);
}

/** The engine memory row, in its own process (so that its peak RSS is its own). */
async function memoryRow(): Promise<Record<string, number>> {
  const script = new URL("./memory_row.ts", import.meta.url).pathname;
  const out = await runTool(Deno.execPath(), [
    "run",
    "--allow-all",
    "--v8-flags=--expose-gc",
    script,
    "--size-gib",
    "512",
  ]);
  if (out.code !== 0) throw new Error(`memory row failed: ${out.stderr}`);
  const { bytesPerChunk, peakRssBytes, chunks, seconds } = JSON.parse(out.stdout);
  return { bytesPerChunk, peakRssMiB: Math.round(peakRssBytes / 2 ** 20), chunks, seconds };
}

/**
 * A sparse file of `sizeMiB` MiB with 100 MiB of random data in 1 MiB
 * pieces spread evenly over it, unless it exists with that size.
 */
async function prepareSparse(path: string, sizeMiB: number): Promise<void> {
  try {
    if ((await Deno.stat(path)).size === sizeMiB * 2 ** 20) return;
  } catch {
    // created below
  }
  console.log(`preparing ${path} (${sizeMiB} MiB, 100 MiB of data)`);
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    await file.truncate(sizeMiB * 2 ** 20);
    const piece = new Uint8Array(2 ** 20);
    const pieces = Math.min(100, sizeMiB);
    for (let i = 0; i < pieces; i++) {
      crypto.getRandomValues(piece.subarray(0, 65536));
      for (let at = 65536; at < piece.length; at *= 2) piece.copyWithin(at, 0, at);
      await file.seek(Math.floor((i * sizeMiB) / pieces) * 2 ** 20, Deno.SeekMode.Start);
      for (let done = 0; done < piece.length;) done += await file.write(piece.subarray(done));
    }
  } finally {
    file.close();
  }
}

/** Removes difference storage files a killed server may have left behind. */
async function removeLeftovers(): Promise<void> {
  for await (const entry of Deno.readDir(storageDir)) {
    if (entry.name.startsWith("blksnap-bench-diff-")) {
      await Deno.remove(`${storageDir}/${entry.name}`).catch(() => {});
    }
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** Creates `path` with `sizeMiB` MiB of incompressible data unless it is already that size. */
async function prepare(path: string, sizeMiB: number): Promise<void> {
  const want = sizeMiB * 1024 * 1024;
  try {
    if ((await Deno.stat(path)).size === want) return;
  } catch {
    // created below
  }
  console.log(`preparing ${path} (${sizeMiB} MiB of random data)`);
  await runTool("dd", [
    "if=/dev/urandom",
    `of=${path}`,
    "bs=1M",
    `count=${sizeMiB}`,
    "status=none",
  ]);
}

async function machine(): Promise<string> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const model = cpuinfo.match(/model name\s*:\s*(.*)/)?.[1] ?? "unknown CPU";
  const cores = navigator.hardwareConcurrency;
  const kernel = (await runTool("uname", ["-r"])).stdout.trim();
  return `${model}, ${cores} cores, Linux ${kernel}, Deno ${Deno.version.deno}`;
}
