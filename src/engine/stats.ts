/**
 * Counters the engine keeps for metrics: plain numbers, only ever increased.
 *
 * @module
 */

/** Engine-wide counters since the engine was created. */
export interface EngineStats {
  /** Writes to originals (tracked devices) that completed. */
  originalWrites: number;
  /** Chunks whose original data was copied before their first overwrite (copy-on-write). */
  cowCopies: number;
  /** Chunks written to a difference storage. */
  chunksStored: number;
  /** Chunks that could not be loaded or stored (each corrupts its snapshot device). */
  storeFailures: number;
  /** Snapshot image reads that completed. */
  imageReads: number;
  /** Snapshot image writes that completed. */
  imageWrites: number;
  /** Snapshot events raised (corrupted and no_space). */
  events: number;
  /** Difference storage growth steps completed. */
  storageGrows: number;
  /** Snapshots taken. */
  snapshotsTaken: number;
}

/** A zeroed {@link EngineStats}. */
export function createEngineStats(): EngineStats {
  return {
    originalWrites: 0,
    cowCopies: 0,
    chunksStored: 0,
    storeFailures: 0,
    imageReads: 0,
    imageWrites: 0,
    events: 0,
    storageGrows: 0,
    snapshotsTaken: 0,
  };
}
