/**
 * Opens a path as a BlockStore, telling a regular file, a block device and a
 * directory apart, through {@link openVerified}: the object is opened once,
 * without following a final symlink, its real path checked by the caller's
 * `verify`, and used by descriptor from then on.
 *
 * Design note: a directory gets an unnamed file (O_TMPFILE, or a file
 * created and unlinked at once), so nothing is left behind when the store
 * closes or the process dies. Character devices, FIFOs and sockets are
 * refused, as the kernel's difference storage refuses them (seed 003,
 * diff_storage_set_diff_storage). A new storage file is created exclusively
 * (O_CREAT|O_EXCL|O_NOFOLLOW).
 *
 * @module
 */

import { ServiceError } from "../errors.ts";
import { FileStore } from "./file_store.ts";
import { type CreatedFile, openError, openVerified, type VerifyOpened } from "./open_verified.ts";

/** Options of {@link openStore}. */
export interface OpenStoreOptions {
  /** Create a regular file when the path does not exist (default false). */
  create?: boolean;
  /** Open for reading only (default false). Not allowed for a directory. */
  readOnly?: boolean;
  /** Checks the opened object's real path; throws to refuse it. */
  verify?: VerifyOpened;
  /** Refuse a directory (devices cannot be one; default false: an unnamed file in it). */
  noDirectory?: boolean;
  /** What the store is for, for messages (default "open"). */
  purpose?: string;
  /** Check each write for a file truncated behind the store (see FileStoreInit). */
  guardTruncation?: boolean;
}

/** A store from {@link openStoreVerified} and how it was found. */
export interface OpenedStore {
  /** The store. */
  store: FileStore;
  /** True when the file was created by the open. */
  created: boolean;
  /** For a created file: the way to remove it again (the caller owns it). */
  createdIn?: CreatedFile;
  /** The real path of what was opened. */
  realPath: string;
}

/** The ServiceError for a failed file-system call; `detail` says what could not be done. */
export function fileSystemError(error: unknown, detail: string): ServiceError {
  return openError(error, detail);
}

/**
 * Opens `path` as a store: a regular file, a block device, or a directory
 * (an unnamed file in it). NOT_FOUND when missing (unless `create`),
 * FORBIDDEN without permission or from `verify`, INVALID_ARGUMENT for a
 * symlink, other file types or a read-only directory, IO otherwise.
 */
export async function openStore(path: string, options: OpenStoreOptions = {}): Promise<FileStore> {
  const opened = await openStoreVerified(path, options);
  await opened.createdIn?.release();
  return opened.store;
}

/** As {@link openStore}, also telling whether the file was created and its real path. */
export async function openStoreVerified(
  path: string,
  options: OpenStoreOptions = {},
): Promise<OpenedStore> {
  const readOnly = options.readOnly ?? false;
  const opened = await openVerified(path, {
    readOnly,
    create: options.create,
    directoryFile: !options.noDirectory,
    verify: options.verify,
    purpose: options.purpose,
  });
  if (opened.kind === "directory-file" && readOnly) {
    await opened.handle.close();
    await opened.createdIn?.remove();
    throw new ServiceError(
      "INVALID_ARGUMENT",
      `Cannot open ${path} read-only: a directory only serves to hold a new unnamed file`,
    );
  }
  try {
    const store = await FileStore.fromHandle({
      name: opened.kind === "directory-file" ? `${path} (unnamed file)` : path,
      handle: opened.handle,
      isBlockDevice: opened.kind === "block",
      readOnly,
      guardTruncation: options.guardTruncation,
    });
    return {
      store,
      created: opened.created,
      realPath: opened.realPath,
      createdIn: opened.createdIn,
    };
  } catch (error) {
    await opened.handle.close().catch(() => {});
    await opened.createdIn?.remove();
    throw fileSystemError(error, `Cannot open ${path}`);
  }
}
