/**
 * Engine fixtures for tests: small parameters (4 KiB chunks and tracking
 * blocks, a store queue of 2, a pool of 2, a 64-sector storage step), memory
 * devices wrapped in FaultyStore, and byte patterns.
 *
 * @module
 */

import { Engine } from "../../src/engine/engine.ts";
import type { EngineParams } from "../../src/engine/params.ts";
import type { Snapshot } from "../../src/engine/snapshot.ts";
import type { Tracker } from "../../src/engine/tracker.ts";
import { MemoryStore } from "../../src/store/memory_store.ts";
import { CopyingStore } from "./copying_store.ts";
import { FaultyStore } from "./faulty_store.ts";

/** Chunk and tracking block size under {@link SMALL_PARAMS}. */
export const CHUNK = 4096;

/** Small parameters that exercise the store queue, pool and storage growth. */
export const SMALL_PARAMS: Partial<EngineParams> = {
  trackingBlockMinimumShift: 12,
  chunkMinimumShift: 12,
  chunkMaximumInQueue: 2,
  freeDiffBufferPoolSize: 2,
  diffStorageMinimumSectors: 64,
};

/** `length` bytes of `value`. */
export function filled(length: number, value: number): Uint8Array {
  return new Uint8Array(length).fill(value);
}

/** A device of the fixture: tracker, its faulty wrapper and the memory behind it. */
export interface FixtureDevice {
  tracker: Tracker;
  store: FaultyStore;
  memory: MemoryStore;
}

/** Options of {@link setupEngine}. */
export interface FixtureOptions {
  /** Device sizes in bytes, named d0, d1, ... */
  sizes: number[];
  /** Fill byte of device i: i + 1 by default. */
  fill?: (index: number) => number;
  /** Parameter overrides on top of {@link SMALL_PARAMS}. */
  params?: Partial<EngineParams>;
  /** Storage limit in sectors (default 1 MiB worth). */
  limitSectors?: number;
  /** Storage memory maximum in bytes (default 4 MiB). */
  storageMaxBytes?: number;
  /** Writable images. */
  writable?: boolean;
  /** Take the snapshot (default true). */
  take?: boolean;
  /** Clock. */
  now?: () => number;
  /** Devices that copy to the storage themselves (CopyingStore, BlockStore.copyTo): default false. */
  kernelCopy?: boolean;
}

/** An engine with devices and a snapshot of all of them. */
export interface Fixture {
  engine: Engine;
  devices: FixtureDevice[];
  storage: FaultyStore;
  snapshot: Snapshot;
  /** Destroys everything. */
  close(): Promise<void>;
}

/** Builds an engine, memory devices filled with a per-device byte, and a snapshot of them. */
export async function setupEngine(options: FixtureOptions): Promise<Fixture> {
  const engine = new Engine({ params: { ...SMALL_PARAMS, ...options.params }, now: options.now });
  const devices: FixtureDevice[] = [];
  for (const [i, size] of options.sizes.entries()) {
    const memory = new MemoryStore({ capacityBytes: size, name: `d${i}` });
    await memory.write(0, filled(size, options.fill?.(i) ?? i + 1));
    const store = options.kernelCopy ? new CopyingStore(memory) : new FaultyStore(memory);
    devices.push({ tracker: await engine.attach(`d${i}`, store), store, memory });
  }
  const storage = new FaultyStore(
    new MemoryStore({ capacityBytes: 0, maxBytes: options.storageMaxBytes ?? 4 << 20 }),
  );
  const snapshot = await engine.createSnapshot({
    storage,
    storagePath: "memory:storage",
    limitSectors: options.limitSectors ?? 2048,
    writable: options.writable,
    trackers: devices.map((device) => device.tracker.name),
  });
  if (options.take ?? true) await snapshot.take();
  return {
    engine,
    devices,
    storage,
    snapshot,
    close: () => engine.close(),
  };
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
