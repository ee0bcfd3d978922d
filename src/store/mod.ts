/**
 * Block stores: the real implementations of the engine's BlockStore
 * interface (regular files, block devices, unnamed files in a directory)
 * and a memory store for tests and benchmarks.
 *
 * @example
 * ```ts
 * import { MemoryStore } from "./mod.ts";
 *
 * const store = new MemoryStore({ capacityBytes: 4096 });
 * await store.write(0, new Uint8Array([1, 2, 3]));
 * const back = new Uint8Array(3);
 * await store.read(0, back);
 * await store.close();
 * ```
 *
 * @module
 */

export { makeDeviceNumber, splitDeviceNumber } from "./dev_numbers.ts";
export type { DeviceNumbers } from "./dev_numbers.ts";
export { FileStore } from "./file_store.ts";
export type { FileStoreInit } from "./file_store.ts";
export { MemoryStore } from "./memory_store.ts";
export type { MemoryStoreOptions } from "./memory_store.ts";
export { fileSystemError, openStore, openStoreVerified } from "./open_store.ts";
export type { OpenedStore, OpenStoreOptions } from "./open_store.ts";
export { openVerified } from "./open_verified.ts";
export type { OpenedObject, OpenVerifiedOptions, VerifyOpened } from "./open_verified.ts";
