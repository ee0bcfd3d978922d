/**
 * The bench's engine memory row, run as its own process:
 *
 *   deno run -A --v8-flags=--expose-gc tests/bench/memory_row.ts [--size-gib 512]
 *
 * Attaches a sparse device of `--size-gib` GiB (a NullStore: nothing stored,
 * see null_store.ts) with the kernel's default parameters, takes a snapshot
 * into a NullStore difference storage, writes once into every chunk through
 * the tracker (16 MiB writes, so every chunk is copied on write and stored),
 * waits for the store queue to drain, and prints one JSON line: chunks, the
 * engine's bytes per chunk, the process's peak RSS (VmHWM) and the seconds
 * the copying took. Bytes per chunk: the growth of V8's heap (after a full
 * GC) from before attach to after the copies, plus the SharedArrayBuffers of
 * the CBT map, the chunk table and the write gate (their sizes as the
 * engine allocated them; V8 reports no reliable external figure for them).
 * The buffers the difference area's pool keeps for reuse are a fixed cost
 * (at most freeDiffBufferPoolSize chunks, whatever the device size) and
 * printed apart.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Engine } from "../../src/engine/engine.ts";
import { NullStore } from "./null_store.ts";

const { values } = parseArgs({ args: Deno.args, options: { "size-gib": { type: "string" } } });
const sizeBytes = Number(values["size-gib"] ?? "512") * 2 ** 30;
const WRITE_BYTES = 16 << 20;

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error("run with --v8-flags=--expose-gc");

/** Heap bytes in use after a full collection. */
async function heapBytes(): Promise<number> {
  gc!();
  await new Promise((resolve) => setTimeout(resolve, 100));
  gc!();
  return Deno.memoryUsage().heapUsed;
}

async function peakRssBytes(): Promise<number> {
  const status = await Deno.readTextFile("/proc/self/status");
  return Number(status.match(/VmHWM:\s+(\d+) kB/)![1]) * 1024;
}

const data = new Uint8Array(WRITE_BYTES);
const before = await heapBytes();
const engine = new Engine();
const tracker = await engine.attach("big", new NullStore("big", sizeBytes));
const snapshot = await engine.createSnapshot({
  storage: new NullStore("storage", 0),
  limitSectors: (2 * sizeBytes) / 512,
  trackers: ["big"],
});
await snapshot.take();
const area = snapshot.diffArea("big")!;
const start = performance.now();
for (let offset = 0; offset < sizeBytes; offset += WRITE_BYTES) {
  await tracker.write(offset, data.subarray(0, Math.min(WRITE_BYTES, sizeBytes - offset)));
}
while (area.counters().storing || area.counters().queued > engine.params.chunkMaximumInQueue) {
  await new Promise((resolve) => setTimeout(resolve, 10));
}
const seconds = (performance.now() - start) / 1000;
const stored = engine.stats.chunksStored;
const after = await heapBytes();
const poolBytes = area.counters().freeBuffers * area.chunkSizeBytes;
const sharedBytes = area.table.buffer.byteLength + tracker.cbt.buffer.byteLength +
  tracker.gate.buffer.byteLength;
const engineTotal = after - before + sharedBytes;
console.log(JSON.stringify({
  chunks: area.chunkCount,
  copied: engine.stats.cowCopies,
  stored,
  bytesPerChunk: Math.round((engineTotal / area.chunkCount) * 10) / 10,
  heapBytes: after - before,
  sharedBytes,
  poolBytes,
  peakRssBytes: await peakRssBytes(),
  seconds: Math.round(seconds * 10) / 10,
}));
await engine.close();
