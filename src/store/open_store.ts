/**
 * Opens a path as a BlockStore, telling a regular file, a block device and a
 * directory apart.
 *
 * Design note: a directory gets an unnamed file (the way O_TMPFILE would):
 * a uniquely named file is created in it, opened, and unlinked at once while
 * the handle stays open, so nothing is left behind when the store closes or
 * the process dies. Character devices, FIFOs and sockets are refused, as the
 * kernel's difference storage refuses them (seed 003,
 * diff_storage_set_diff_storage).
 *
 * @module
 */

import { constants } from "node:fs";
import { open } from "node:fs/promises";
import { Errno, type ErrnoName, errorFromErrno, ServiceError } from "../errors.ts";
import { FileStore } from "./file_store.ts";

/** Options of {@link openStore}. */
export interface OpenStoreOptions {
  /** Create a regular file when the path does not exist (default false). */
  create?: boolean;
  /** Open for reading only (default false). Not allowed for a directory. */
  readOnly?: boolean;
}

/** The ServiceError for a failed file-system call; `detail` says what could not be done. */
export function fileSystemError(error: unknown, detail: string): ServiceError {
  if (error instanceof ServiceError) return error;
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === "string" && code in Errno) {
    return errorFromErrno(Errno[code as ErrnoName], detail, error);
  }
  return new ServiceError("IO", `${detail}: ${error}`, { cause: error });
}

async function openHandle(
  path: string,
  name: string,
  readOnly: boolean,
  create: boolean,
  isBlockDevice: boolean,
) {
  const flags = (readOnly ? constants.O_RDONLY : constants.O_RDWR) |
    (create ? constants.O_CREAT : 0);
  const handle = await open(path, flags, 0o600);
  try {
    return await FileStore.fromHandle({ name, handle, isBlockDevice, readOnly });
  } catch (error) {
    await handle.close().catch(() => {});
    throw error;
  }
}

/**
 * Opens `path` as a store: a regular file, a block device, or a directory
 * (an unnamed file in it). NOT_FOUND when missing (unless `create`),
 * FORBIDDEN without permission, INVALID_ARGUMENT for other file types or a
 * read-only directory, IO otherwise.
 */
export async function openStore(path: string, options: OpenStoreOptions = {}): Promise<FileStore> {
  const readOnly = options.readOnly ?? false;
  let info: Deno.FileInfo | undefined;
  try {
    info = await Deno.stat(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound && options.create && !readOnly)) {
      throw fileSystemError(error, `Cannot open ${path}`);
    }
  }
  try {
    if (!info || info.isFile) return await openHandle(path, path, readOnly, !info, false);
    if (info.isBlockDevice) return await openHandle(path, path, readOnly, false, true);
  } catch (error) {
    throw fileSystemError(error, `Cannot open ${path}`);
  }
  if (info.isDirectory) {
    if (readOnly) {
      throw new ServiceError(
        "INVALID_ARGUMENT",
        `Cannot open ${path} read-only: a directory only serves to hold a new unnamed file`,
      );
    }
    return await openUnnamed(path);
  }
  throw new ServiceError(
    "INVALID_ARGUMENT",
    `Cannot open ${path}: it is neither a regular file, a block device nor a directory`,
  );
}

async function openUnnamed(directory: string): Promise<FileStore> {
  let temporary: string;
  try {
    temporary = await Deno.makeTempFile({ dir: directory, prefix: ".blksnap-diff-" });
  } catch (error) {
    throw fileSystemError(error, `Cannot create a file in ${directory}`);
  }
  try {
    return await openHandle(temporary, `${directory} (unnamed file)`, false, false, false);
  } catch (error) {
    throw fileSystemError(error, `Cannot open a new file in ${directory}`);
  } finally {
    await Deno.remove(temporary).catch(() => {});
  }
}
