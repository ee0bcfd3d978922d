/**
 * The engine's only window on storage. Original devices, difference storage
 * and test doubles all implement {@link BlockStore}; the engine never touches
 * files or `Deno.*` itself.
 *
 * @module
 */

/** Outcome of {@link BlockStore.copyTo}: done, or refused (read and write instead). */
export type StoreCopyResult = "copied" | "refused";

/** Where {@link BlockStore.copyTo} copies to. */
export interface StoreCopyTarget {
  /** The store receiving the bytes. */
  target: BlockStore;
  /** Byte offset in the target. */
  targetOffset: number;
}

/** What a store is backed by. */
export type BlockStoreKind = "file" | "block" | "memory";

/** Identity of the storage behind a store, to tell whether two stores share a device. */
export interface StoreIdentity {
  /** What backs the store. */
  kind: BlockStoreKind;
  /** For a regular file: the device the file system lives on (st_dev). For a block device: its own number (st_rdev). */
  device: number;
  /** For a regular file: its inode; 0 otherwise. */
  inode: number;
}

/**
 * Random-access storage with positioned, concurrent reads and writes (no
 * shared cursor). Offsets and lengths are in bytes. Reads and writes beyond
 * the capacity reject with a RangeError; I/O failures reject with the
 * underlying error.
 */
export interface BlockStore {
  /** Human name for messages (a path, or "memory"). */
  readonly name: string;
  /** What backs the store and where. */
  readonly identity: StoreIdentity;
  /** Minimum I/O size in bytes (the device's `minimum_io_size`; 512 for files). */
  readonly minIoBytes: number;
  /** Current capacity in bytes (re-read by {@link BlockStore.refreshCapacity}). */
  readonly capacityBytes: number;
  /** Reads `into.length` bytes from `offset` into `into`. */
  read(offset: number, into: Uint8Array): Promise<void>;
  /** Writes `data` at `offset`. */
  write(offset: number, data: Uint8Array): Promise<void>;
  /**
   * Optional: copies `length` bytes from `offset` of this store to
   * `to.targetOffset` of `to.target` without passing them through the
   * caller's memory (a FileStore: a cached range through its own buffer at
   * once, else copy_file_range in the kernel, off the calling thread).
   * Resolves "refused" when these two stores cannot copy this way (nothing
   * was written; the caller reads and writes instead);
   * RangeError past either capacity; rejects with the I/O error (code
   * "ENOSPC" or "EIO") when the copy failed, the target range then undefined.
   */
  copyTo?(offset: number, length: number, to: StoreCopyTarget): Promise<StoreCopyResult>;
  /** Makes completed writes durable. */
  flush(): Promise<void>;
  /**
   * Grows a regular-file store to at least `bytes` (FileStore sets the file
   * size, leaving the new part sparse; see src/store/file_store.ts). Stores
   * that cannot grow (block devices, fixed memory) reject with a RangeError.
   */
  grow(bytes: number): Promise<void>;
  /** Re-reads the capacity from the backing storage (a resized device) and returns it. */
  refreshCapacity(): Promise<number>;
  /** Releases the store; further I/O rejects. */
  close(): Promise<void>;
}
