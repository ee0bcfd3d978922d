/**
 * Opens a device, a storage file or a directory once, and checks the object
 * opened, never the name again.
 *
 * Design note. A name checked and then opened can be swapped in between (a
 * folder of the path replaced by a symlink, a symlink planted at a new
 * storage name). So:
 * 1. The parent folder is opened (O_DIRECTORY; symlinks above the last
 *    component are followed here, and judged by step 3).
 * 2. The last component is opened in that very folder, through
 *    `/proc/self/fd/DIR/NAME`, with O_PATH|O_NOFOLLOW: a symlink there is
 *    not followed but opened as itself, and refused. A new storage file is
 *    created in the same way with O_CREAT|O_EXCL|O_NOFOLLOW, after the
 *    folder's real path passed the check: nothing is ever created outside.
 * 3. The real path of the descriptor (the `/proc/self/fd/N` link, which the
 *    kernel keeps for the object itself) goes to the caller's `verify`,
 *    which throws (FORBIDDEN) when it lies outside the allowed prefixes.
 * 4. The object is reopened for I/O through `/proc/self/fd/N`, which opens
 *    the same inode whatever happened to its name meanwhile. A folder gets
 *    an unnamed file (O_TMPFILE, or a file created and unlinked at once
 *    where the file system has no O_TMPFILE).
 * Callers that hand a path to someone else (the kernel module) pass
 * {@link OpenedObject.procPath}, which names the verified object.
 *
 * @module
 */

import { constants } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { Errno, type ErrnoName, errorFromErrno, ServiceError } from "../errors.ts";

const O_PATH = 0o10000000;
const O_TMPFILE = 0o20200000;
const O_CLOEXEC = 0o2000000;

/** Checks the real path of an opened object; throws (FORBIDDEN) to refuse it. */
export type VerifyOpened = (realPath: string) => void;

/** What {@link openVerified} opened ("directory" only with `pathOnly`). */
export type OpenedKind = "file" | "block" | "directory-file" | "directory";

/** Options of {@link openVerified}. */
export interface OpenVerifiedOptions {
  /** Open for reading only (default false). */
  readOnly?: boolean;
  /** Create a regular file (exclusively) when nothing exists at the path (default false). */
  create?: boolean;
  /** Give a directory an unnamed file in it (default false: a directory is refused). */
  directoryFile?: boolean;
  /** The check of the opened object's real path (none by default). */
  verify?: VerifyOpened;
  /** What the open is for, for messages ("attach", "use as difference storage"). */
  purpose?: string;
  /**
   * Keep the O_PATH descriptor (no I/O on it, no unnamed file for a
   * directory): for handing {@link OpenedObject.procPath} to the kernel
   * module, which opens the object itself. Default false.
   */
  pathOnly?: boolean;
}

/** An object opened and verified by {@link openVerified}. */
export interface OpenedObject {
  /** The handle for I/O; the caller owns it. */
  handle: FileHandle;
  /** What was opened: a regular file, a block device, or an unnamed file in a directory. */
  kind: OpenedKind;
  /** The real path of the object as opened (of the directory, for an unnamed file). */
  realPath: string;
  /** True when the file was created by this call. */
  created: boolean;
  /**
   * For a file created by this call: its folder, kept open, to remove it
   * from there later whatever happens to the folder's name. The caller owns it.
   */
  createdIn?: CreatedFile;
  /** `/proc/self/fd/N` naming the opened object while the handle is open. */
  procPath: string;
}

/** The ServiceError for a failed open; `detail` says what could not be done. */
export function openError(error: unknown, detail: string): ServiceError {
  if (error instanceof ServiceError) return error;
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === "string" && code in Errno) {
    return errorFromErrno(Errno[code as ErrnoName], detail, error);
  }
  return new ServiceError("IO", `${detail}: ${error}`, { cause: error });
}

function realPathOf(fd: number): string {
  return Deno.readLinkSync(`/proc/self/fd/${fd}`);
}

async function closeQuietly(handle: FileHandle | undefined): Promise<void> {
  await handle?.close().catch(() => {});
}

/**
 * Opens `path` as described in the module note. NOT_FOUND when it (or its
 * folder) is missing, INVALID_ARGUMENT for a symlink, a directory (unless
 * `directoryFile`) or another file type, FORBIDDEN from `verify` or without
 * permission, IO otherwise.
 */
export async function openVerified(
  path: string,
  options: OpenVerifiedOptions = {},
): Promise<OpenedObject> {
  const what = `Cannot ${options.purpose ?? "open"} ${path}`;
  const name = basename(path);
  if (name === "" || name === "." || name === "..") {
    throw new ServiceError("INVALID_ARGUMENT", `${what}: the path must name a file`);
  }
  let folder: FileHandle | undefined;
  let object: FileHandle | undefined;
  let createdIn: CreatedFile | undefined;
  try {
    folder = await open(dirname(path), constants.O_RDONLY | constants.O_DIRECTORY | O_CLOEXEC);
    const inFolder = `/proc/self/fd/${folder.fd}/${name}`;
    let created = false;
    try {
      object = await open(inFolder, O_PATH | constants.O_NOFOLLOW | O_CLOEXEC);
    } catch (error) {
      if ((error as { code?: string }).code !== "ENOENT" || !options.create || options.readOnly) {
        throw error;
      }
      options.verify?.(join(realPathOf(folder.fd), name));
      const flags = constants.O_RDWR | constants.O_CREAT | constants.O_EXCL |
        constants.O_NOFOLLOW | O_CLOEXEC;
      object = await open(inFolder, flags, 0o600);
      created = true;
    }
    if (created) {
      createdIn = new CreatedFile(folder, name, await object.stat());
      folder = undefined;
    }
    const realPath = realPathOf(object.fd);
    const info = await object.stat();
    if (info.isSymbolicLink()) {
      throw new ServiceError("INVALID_ARGUMENT", `${what}: it is a symbolic link`, {
        errno: "ELOOP",
      });
    }
    if (!info.isFile() && !info.isBlockDevice() && !(info.isDirectory() && options.directoryFile)) {
      throw new ServiceError(
        "INVALID_ARGUMENT",
        `${what}: it is neither a regular file nor a block device${
          options.directoryFile ? " nor a directory" : ""
        }`,
      );
    }
    options.verify?.(realPath);
    const procPath = `/proc/self/fd/${object.fd}`;
    if (options.pathOnly || created) {
      const handle = object;
      object = undefined;
      const kind = info.isDirectory() ? "directory" : info.isBlockDevice() ? "block" : "file";
      return { handle, kind, realPath, created, procPath, createdIn };
    }
    if (info.isDirectory()) {
      const handle = await unnamedFile(procPath);
      return { handle, kind: "directory-file", realPath, created: false, procPath };
    }
    const flags = options.readOnly ? constants.O_RDONLY : constants.O_RDWR;
    const handle = await open(procPath, flags | O_CLOEXEC);
    const kind = info.isBlockDevice() ? "block" : "file";
    return { handle, kind, realPath, created, procPath: `/proc/self/fd/${handle.fd}` };
  } catch (error) {
    await createdIn?.remove();
    throw openError(error, what);
  } finally {
    await closeQuietly(object);
    await closeQuietly(folder);
  }
}

/**
 * A file this service created, with the folder it was created in (kept
 * open): {@link CreatedFile.remove} unlinks it from that very folder, and only
 * while the name still holds the same inode, so a folder renamed or swapped
 * for a symlink meanwhile neither leaves the file behind nor removes another.
 */
export class CreatedFile {
  #folder: FileHandle | undefined;
  #name: string;
  #device: number;
  #inode: number;

  /** Takes ownership of `folder`; `info` identifies the created file. */
  constructor(folder: FileHandle, name: string, info: { dev: number; ino: number }) {
    this.#folder = folder;
    this.#name = name;
    this.#device = info.dev;
    this.#inode = info.ino;
  }

  /** Closes the folder, leaving the file (its removal is someone else's then). Idempotent. */
  async release(): Promise<void> {
    const folder = this.#folder;
    this.#folder = undefined;
    await closeQuietly(folder);
  }

  /** Removes the file if its name still holds it, then closes the folder. Idempotent. */
  async remove(): Promise<void> {
    const folder = this.#folder;
    if (folder === undefined) return;
    this.#folder = undefined;
    const inFolder = `/proc/self/fd/${folder.fd}/${this.#name}`;
    try {
      const info = await Deno.lstat(inFolder);
      if (info.isFile && info.dev === this.#device && info.ino === this.#inode) {
        await Deno.remove(inFolder);
      }
    } catch {
      // gone already
    } finally {
      await closeQuietly(folder);
    }
  }
}

/**
 * Removes the file at `path` only when it is still the object `identity`
 * names (a file this service created): the name is looked up in its folder
 * opened once, compared by device and inode, and unlinked in that same
 * folder, so a folder swapped for a symlink cannot make this remove a file
 * elsewhere. Quietly does nothing when the file is gone or is another one.
 */
export async function removeCreated(
  path: string,
  identity: { device: number; inode: number },
): Promise<void> {
  let folder: FileHandle | undefined;
  try {
    folder = await open(dirname(path), constants.O_RDONLY | constants.O_DIRECTORY | O_CLOEXEC);
    const inFolder = `/proc/self/fd/${folder.fd}/${basename(path)}`;
    const info = await Deno.lstat(inFolder);
    if (info.isFile && info.dev === identity.device && info.ino === identity.inode) {
      await Deno.remove(inFolder);
    }
  } catch {
    // gone already, or not ours: nothing to remove
  } finally {
    await closeQuietly(folder);
  }
}

/** An unnamed regular file in the directory at `directory` (a /proc/self/fd path). */
async function unnamedFile(directory: string): Promise<FileHandle> {
  try {
    return await open(directory, constants.O_RDWR | O_TMPFILE | O_CLOEXEC, 0o600);
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code !== "EOPNOTSUPP" && code !== "EISDIR" && code !== "EINVAL") throw error;
  }
  const name = join(directory, `.blksnap-diff-${crypto.randomUUID()}`);
  const flags = constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
  const handle = await open(name, flags | O_CLOEXEC, 0o600);
  await Deno.remove(name).catch(() => {});
  return handle;
}
