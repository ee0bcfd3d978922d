/**
 * The userspace blksnap engine: trackers with CBT maps, snapshots with
 * copy-on-write into a difference storage, and snapshot images, over
 * BlockStore. No I/O of its own.
 *
 * @example
 * ```ts
 * import { Engine } from "./mod.ts";
 * import { MemoryStore } from "../store/memory_store.ts";
 *
 * const engine = new Engine({ params: { chunkMinimumShift: 12 } });
 * const device = await engine.attach("disk", new MemoryStore({ capacityBytes: 1 << 20 }));
 * const storage = new MemoryStore({ capacityBytes: 0, maxBytes: 1 << 20 });
 * const snapshot = await engine.createSnapshot({
 *   storage,
 *   limitSectors: 2048,
 *   trackers: ["disk"],
 * });
 * await snapshot.take();
 * await device.write(0, new Uint8Array(4096).fill(1));
 * const before = new Uint8Array(4096);
 * await snapshot.image("disk").read(0, before); // still zeros
 * await engine.close();
 * ```
 *
 * @module
 */

export type { BlockStore, BlockStoreKind, StoreIdentity } from "./block_store.ts";
export { CBT_MAX_CHANGE_NUMBER, CbtMap } from "./cbt_map.ts";
export { CBT_HEADER_BYTES, CbtHeader } from "./cbt_map.ts";
export type { CbtMapInfo } from "./cbt_map.ts";
export { CHUNK_TABLE_BYTES_PER_CHUNK, ChunkTable } from "./chunk_table.ts";
export {
  Chunk,
  CHUNK_ST_FAILED,
  CHUNK_ST_IN_MEMORY,
  CHUNK_ST_NEW,
  CHUNK_ST_STORED,
  ChunkState,
  chunkStateName,
} from "./chunk.ts";
export type { ChunkStateName } from "./chunk.ts";
export { DiffArea } from "./diff_area.ts";
export type { DiffAreaCounters, DiffAreaOptions } from "./diff_area.ts";
export { DiffBufferPool } from "./diff_buffer_pool.ts";
export { DiffStorage } from "./diff_storage.ts";
export type { DiffStorageCounters, DiffStorageOptions } from "./diff_storage.ts";
export { Engine } from "./engine.ts";
export type { EngineCreateSnapshotOptions, EngineOptions } from "./engine.ts";
export { EventLog } from "../event_log.ts";
export type { EmitEvent, EventInput, EventLogOptions } from "../event_log.ts";
export { SnapshotImage } from "./image.ts";
export type { ImageChunkInfo, SnapshotImageOptions } from "./image.ts";
export { Mutex } from "./mutex.ts";
export {
  chunkSizing,
  DEFAULT_ENGINE_PARAMS,
  resolveEngineParams,
  SECTOR_BYTES,
  trackingBlockSizing,
} from "./params.ts";
export type { EngineParams, Sizing } from "./params.ts";
export { Snapshot, storageLivesOn } from "./snapshot.ts";
export type { SnapshotCreateOptions, SnapshotStateName, SnapshotStorageInfo } from "./snapshot.ts";
export { createEngineStats } from "./stats.ts";
export { StoreQueue } from "./store_queue.ts";
export type { StoreQueueOptions } from "./store_queue.ts";
export type { EngineStats } from "./stats.ts";
export { Tracker, WRITE_SLICE_BYTES, WriteGate } from "./tracker.ts";
export type { SnapshotMembership, TrackerOptions } from "./tracker.ts";
