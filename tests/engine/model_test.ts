/**
 * Randomized model-based test of the engine against a plain reference model
 * (tests/_helpers/reference_model.ts). It asserts the three invariants of
 * DESIGN.md under random concurrent reads and writes of originals and images
 * of several devices, take/destroy cycles (also destroy with I/O in flight),
 * image writes, mark-dirty and small parameters that exercise the store
 * queue, the buffer pool, storage growth and overflow:
 * 1. every image reads exactly as its device did at take, plus image writes;
 * 2. the CBT never misses a changed block (checked exactly at every take
 *    within a generation);
 * 3. originals never lose a write (random reads and a full comparison).
 *
 * Replay: BLKSNAP_MODEL_SEED=<seed> (printed on failure); BLKSNAP_MODEL_OPS
 * sets the number of reads and writes (default 100,000).
 *
 * @module
 */

import assert from "node:assert/strict";
import { ServiceError } from "../../src/errors.ts";
import { Engine } from "../../src/engine/engine.ts";
import type { SnapshotImage } from "../../src/engine/image.ts";
import type { Snapshot } from "../../src/engine/snapshot.ts";
import type { Tracker } from "../../src/engine/tracker.ts";
import { MemoryStore } from "../../src/store/memory_store.ts";
import { CopyingStore } from "../_helpers/copying_store.ts";
import { FaultyStore } from "../_helpers/faulty_store.ts";
import { Prng, randomSeed } from "../_helpers/prng.ts";
import { BatchRanges, firstDifference, ReferenceModel } from "../_helpers/reference_model.ts";

// Device sizes: a short last chunk (4 KiB chunks), a larger device whose
// chunks and blocks grow to 8 KiB with a short last chunk, an exact fit.
const SIZES = [37 * 4096 + 1536, 300 * 1024 + 512, 64 * 1024];
const GENEROUS_LIMIT_SECTORS = 16_384;
const WARM_UP_CYCLES = 250;

function envNumber(name: string): number | undefined {
  try {
    const value = Deno.env.get(name);
    return value === undefined ? undefined : Number(value);
  } catch {
    return undefined;
  }
}

interface Counters {
  ops: number;
  originWrites: number;
  originReads: number;
  imageReads: number;
  imageWrites: number;
  imageFailures: number;
  takes: number;
  cycles: number;
  generationChanges: number;
  corruptedCycles: number;
}

function expectBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  const at = firstDifference(actual, expected);
  if (at >= 0) {
    assert.fail(`${what}: byte ${at} is ${actual[at]}, expected ${expected[at]}`);
  }
}

class ModelRun {
  readonly counters: Counters = {
    ops: 0,
    originWrites: 0,
    originReads: 0,
    imageReads: 0,
    imageWrites: 0,
    imageFailures: 0,
    takes: 0,
    cycles: 0,
    generationChanges: 0,
    corruptedCycles: 0,
  };
  readonly rng: Prng;
  readonly jitter: Prng;
  readonly engine: Engine;
  memories: MemoryStore[] = [];
  copiers: CopyingStore[] = [];
  trackers: Tracker[] = [];
  model!: ReferenceModel;
  storageReads = 0;

  constructor(seed: number) {
    this.rng = new Prng(seed);
    this.jitter = new Prng(seed ^ 0x9e3779b9);
    this.engine = new Engine({
      params: {
        trackingBlockMinimumShift: 12,
        trackingBlockMaximumShift: 16,
        trackingBlockMaximumCount: 48,
        chunkMinimumShift: 12,
        chunkMaximumShift: 16,
        chunkMaximumCount: 64,
        chunkMaximumInQueue: this.rng.range(2, 4),
        freeDiffBufferPoolSize: 2,
        diffStorageMinimumSectors: 64,
      },
    });
  }

  /** A few microtask yields, so that operations interleave. */
  readonly delay = async (): Promise<void> => {
    for (let i = this.jitter.int(4); i > 0; i--) await Promise.resolve();
  };

  async setup(): Promise<void> {
    const contents = SIZES.map((size) => this.rng.bytes(size));
    for (const [d, size] of SIZES.entries()) {
      const memory = new MemoryStore({ capacityBytes: size, name: `m${d}` });
      await memory.write(0, contents[d]);
      this.memories.push(memory);
      const store = new CopyingStore(memory, { delay: this.delay });
      this.copiers.push(store);
      this.trackers.push(await this.engine.attach(`d${d}`, store));
    }
    this.model = new ReferenceModel(
      contents,
      this.trackers.map((tracker) => tracker.cbt.blockSizeBytes),
      this.trackers.map((tracker) => tracker.cbt.generationId),
    );
  }

  #length(size: number): number {
    const kind = this.rng.next();
    const max = kind < 0.4 ? 600 : kind < 0.85 ? 16_384 : 45_000;
    return this.rng.range(1, Math.min(max, size));
  }

  /** Invariant 2, checked right after a take: exactly the changed blocks read >= changesNumber. */
  #checkCbt(members: number[], dirtyBefore: Map<number, Uint8Array>): void {
    for (const d of members) {
      const info = this.trackers[d].cbt.info();
      const expected = this.model.cbt[d];
      if (info.generationId !== expected.generationId) {
        this.counters.generationChanges += 1;
        expected.generationId = info.generationId;
        continue;
      }
      const table = this.trackers[d].cbt.read(0, info.blockCount);
      const dirty = dirtyBefore.get(d)!;
      for (let block = 0; block < info.blockCount; block++) {
        const changed = table[block] >= info.changesNumber;
        if (dirty[block] && !changed) {
          assert.fail(
            `CBT of d${d} missed block ${block}: ${table[block]} < ${info.changesNumber}`,
          );
        }
        if (!dirty[block] && changed) {
          assert.fail(`CBT of d${d} reports unchanged block ${block} as changed`);
        }
      }
    }
  }

  async cycle(members: number[], opsInCycle: number, budget: number): Promise<void> {
    const rng = this.rng;
    const generous = rng.chance(0.85);
    const limitSectors = generous ? GENEROUS_LIMIT_SECTORS : rng.range(16, 240);
    const writable = rng.chance(0.7);
    const storage = new FaultyStore(
      new MemoryStore({ capacityBytes: 0, maxBytes: 16 << 20 }),
      { delay: this.delay },
    );
    const first = members.filter((_, i) => i === 0 || rng.chance(0.5));
    const snapshot = await this.engine.createSnapshot({
      storage,
      limitSectors,
      writable,
      trackers: first.map((d) => `d${d}`),
    });
    for (const d of members) if (!first.includes(d)) snapshot.add(this.trackers[d]);
    await this.#batches(rng.range(0, 6), undefined, budget);
    // Half the devices copy chunks straight into the storage (copyTo), half refuse to.
    for (const d of members) this.copiers[d].refuseCopy = rng.chance(0.5);
    await snapshot.take();
    this.counters.takes += members.length;
    this.#checkCbt(members, this.model.take(members));
    const images = new Map(members.map((d) => [d, snapshot.image(`d${d}`)]));
    const corrupted = new Set<number>();
    const context = { snapshot, images, corrupted, generous, writable, destroying: false };
    await this.#batches(opsInCycle, context, budget);
    if (rng.chance(0.3)) {
      // Destroy with a batch of I/O in flight.
      context.destroying = true;
      const ranges = new BatchRanges();
      const pending: Promise<void>[] = [];
      const destroyAt = rng.int(8);
      let destroying: Promise<void> | undefined;
      for (let i = 0; i < 8; i++) {
        if (i === destroyAt) destroying = snapshot.destroy();
        const op = this.#operation(ranges, context);
        if (op) pending.push(op);
      }
      await Promise.all([...pending, destroying]);
    } else {
      await snapshot.destroy();
    }
    if (snapshot.state !== "destroyed") assert.fail("snapshot not destroyed");
    if (corrupted.size > 0) this.counters.corruptedCycles += 1;
    this.model.destroy();
    assert.equal(storage.closed, true, "storage closed at destroy");
    assert.equal(storage.usedAfterClose, 0, "nothing used the storage after close");
    this.storageReads += storage.counts.reads;
    this.counters.cycles += 1;
  }

  async #batches(count: number, context: CycleContext | undefined, budget: number): Promise<void> {
    const start = this.counters.ops;
    while (this.counters.ops - start < count && this.counters.ops < budget) {
      const ranges = new BatchRanges();
      const pending: Promise<void>[] = [];
      for (let i = this.rng.range(1, 8); i > 0; i--) {
        const op = this.#operation(ranges, context);
        if (op) pending.push(op);
      }
      await Promise.all(pending);
      if (context) {
        for (const d of context.images.keys()) {
          if (context.snapshot.deviceError(`d${d}`) !== 0) context.corrupted.add(d);
        }
        if (context.generous && context.snapshot.state === "corrupted") {
          assert.fail("a snapshot with ample storage became corrupted");
        }
      }
    }
  }

  #operation(ranges: BatchRanges, context: CycleContext | undefined): Promise<void> | undefined {
    const rng = this.rng;
    const d = rng.int(SIZES.length);
    const size = SIZES[d];
    const length = this.#length(size);
    const offset = rng.int(size - length + 1);
    const tracker = this.trackers[d];
    const kind = rng.next();
    const image = context?.images.get(d);
    if (kind < 0.02) {
      const offsetSectors = Math.floor(offset / 512);
      const countSectors = Math.ceil((offset + length) / 512) - offsetSectors;
      tracker.cbt.markDirtySectors([{ offsetSectors, countSectors }]);
      this.model.markDirty(d, offsetSectors * 512, countSectors * 512);
      return undefined;
    }
    if (kind < 0.34) {
      if (!ranges.claim(`o${d}`, offset, offset + length, true)) return undefined;
      this.counters.ops += 1;
      this.counters.originWrites += 1;
      if (rng.chance(0.05)) {
        this.model.write(d, offset, new Uint8Array(length));
        return tracker.writeZeroes(offset, length);
      }
      const data = rng.bytes(length);
      this.model.write(d, offset, data);
      return tracker.write(offset, data);
    }
    if (kind < 0.52 || !image || !context) {
      if (!ranges.claim(`o${d}`, offset, offset + length, false)) return undefined;
      this.counters.ops += 1;
      this.counters.originReads += 1;
      const expected = this.model.read(d, offset, length);
      const into = new Uint8Array(length);
      return tracker.read(offset, into).then(() => {
        expectBytes(into, expected, `read of d${d} at ${offset}+${length}`);
      });
    }
    if (kind < 0.8 || (!context.writable && !rng.chance(0.05))) {
      if (!ranges.claim(`i${d}`, offset, offset + length, false)) return undefined;
      return this.#imageRead(d, image, offset, length, context);
    }
    if (!ranges.claim(`i${d}`, offset, offset + length, true)) return undefined;
    return this.#imageWrite(d, image, offset, length, context);
  }

  #imageFailure(error: unknown, context: CycleContext, d: number, what: string): void {
    this.counters.imageFailures += 1;
    if (!(error instanceof ServiceError)) throw error;
    if (error.code === "UNAVAILABLE" && context.destroying) return;
    if (error.code !== "SNAPSHOT_CORRUPTED" || context.generous) {
      assert.fail(`${what} failed unexpectedly: ${error.code} ${error.message}`);
    }
    if (context.snapshot.deviceError(`d${d}`) === 0 && !context.destroying) {
      assert.fail(`${what} failed as corrupted, but d${d} is not`);
    }
    context.corrupted.add(d);
  }

  #imageRead(
    d: number,
    image: SnapshotImage,
    offset: number,
    length: number,
    context: CycleContext,
  ): Promise<void> {
    this.counters.ops += 1;
    this.counters.imageReads += 1;
    const expected = this.model.readImage(d, offset, length);
    const mustFail = context.corrupted.has(d);
    const into = new Uint8Array(length);
    const what = `image read of d${d} at ${offset}+${length}`;
    return image.read(offset, into).then(
      () => {
        if (mustFail) assert.fail(`${what} succeeded after d${d} was corrupted`);
        expectBytes(into, expected, what);
      },
      (error) => this.#imageFailure(error, context, d, what),
    );
  }

  #imageWrite(
    d: number,
    image: SnapshotImage,
    offset: number,
    length: number,
    context: CycleContext,
  ): Promise<void> {
    this.counters.ops += 1;
    this.counters.imageWrites += 1;
    const data = this.rng.bytes(length);
    const what = `image write of d${d} at ${offset}+${length}`;
    if (!context.writable) {
      return image.write(offset, data).then(
        () => assert.fail(`${what} succeeded on a read-only snapshot`),
        (error) => assert.equal(error.code, "READ_ONLY"),
      );
    }
    this.model.markDirty(d, offset, length);
    const mustFail = context.corrupted.has(d);
    return image.write(offset, data).then(
      () => {
        if (mustFail) assert.fail(`${what} succeeded after d${d} was corrupted`);
        this.model.writeImage(d, offset, data);
      },
      (error) => this.#imageFailure(error, context, d, what),
    );
  }

  async run(budget: number): Promise<void> {
    await this.setup();
    const rng = this.rng;
    // Warm-up: many short cycles that always include d2, so that its CBT
    // change number wraps (255 -> 1, new generation) during the run.
    for (let i = 0; i < WARM_UP_CYCLES && this.counters.ops < budget; i++) {
      const members = [2, ...[0, 1].filter(() => rng.chance(0.2))];
      await this.cycle(members, rng.range(0, 6), budget);
    }
    while (this.counters.ops < budget) {
      const members = [0, 1, 2].filter(() => rng.chance(0.7));
      if (members.length === 0) members.push(rng.int(3));
      const ops = rng.chance(0.5) ? rng.range(0, 20) : rng.range(500, 4000);
      await this.cycle(members, ops, budget);
      if (rng.chance(0.2)) await this.#batches(rng.range(10, 200), undefined, budget);
    }
    // Invariant 3: a full comparison of every original.
    for (const [d, memory] of this.memories.entries()) {
      expectBytes(memory.snapshotBytes(), this.model.devices[d], `final content of d${d}`);
    }
    await this.engine.close();
    for (const memory of this.memories) await memory.close();
  }
}

interface CycleContext {
  snapshot: Snapshot;
  images: Map<number, SnapshotImage>;
  corrupted: Set<number>;
  generous: boolean;
  writable: boolean;
  destroying: boolean;
}

Deno.test("model: images, CBT and originals match a reference model under random concurrent I/O", async () => {
  const seed = envNumber("BLKSNAP_MODEL_SEED") ?? randomSeed();
  const budget = envNumber("BLKSNAP_MODEL_OPS") ?? 100_000;
  const started = performance.now();
  const run = new ModelRun(seed);
  try {
    await run.run(budget);
  } catch (error) {
    console.error(
      `model test failed after ${run.counters.ops} operations; replay with ` +
        `BLKSNAP_MODEL_SEED=${seed} BLKSNAP_MODEL_OPS=${budget}`,
    );
    throw error;
  }
  const seconds = (performance.now() - started) / 1000;
  const c = run.counters;
  const stats = run.engine.stats;
  console.log(
    `model test: seed ${seed}: ${c.ops} reads and writes (${c.originWrites} original writes, ` +
      `${c.originReads} original reads, ${c.imageReads} image reads, ${c.imageWrites} image ` +
      `writes, ${c.imageFailures} image failures) in ${seconds.toFixed(1)} s; ${c.cycles} ` +
      `snapshots, ${c.takes} device takes, ${c.generationChanges} CBT generation changes, ` +
      `${c.corruptedCycles} corrupted snapshots; ${stats.cowCopies} chunk copies, ` +
      `${stats.chunksStored} chunks stored, ${stats.storageGrows} storage grows, ` +
      `${stats.events} events`,
  );
  assert.ok(c.ops >= budget);
  if (budget >= 100_000) {
    // The paths the small parameters are there to exercise were taken.
    assert.ok(stats.chunksStored > 0 && run.storageReads > 0, "store queue and stored reads");
    assert.ok(stats.storageGrows > c.cycles, "storage growth beyond the first step");
    assert.ok(c.generationChanges > 0, "a CBT generation change");
    const copies = run.copiers.map((store) => store.copyCounts);
    assert.ok(copies.some((n) => n.copies > n.refused), "chunks copied with copyTo");
    assert.ok(copies.some((n) => n.refused > 0), "copyTo refused, chunks loaded instead");
  }
});
