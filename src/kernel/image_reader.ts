/**
 * Ranged reads of snapshot image devices (`/dev/veeamblksnapimg_254:0`,
 * `/dev/blksnap-254-0`, ...) with node:fs positioned reads, so that
 * concurrent readers never share a file cursor. One read-only handle per
 * image is opened on first use and kept until the snapshot is destroyed or
 * the driver closes.
 *
 * @module
 */

import { type FileHandle, open } from "node:fs/promises";
import { Errno, type ErrnoName, errorFromErrno, ServiceError } from "../errors.ts";

function nodeErrno(error: unknown): number | undefined {
  const code = (error as { code?: unknown })?.code;
  if (typeof code !== "string" || !(code in Errno)) return undefined;
  return Errno[code as ErrnoName];
}

/** The ServiceError for a failed node:fs call on `path`; `what` says what could not be done. */
export function fsError(error: unknown, what: string): ServiceError {
  const errno = nodeErrno(error);
  if (errno === undefined) {
    return new ServiceError("IO", `${what}: ${(error as Error)?.message ?? error}`, {
      cause: error,
    });
  }
  return errorFromErrno(errno, what, error);
}

/** Reads images through cached read-only handles. */
export class ImageReader {
  #handles = new Map<string, Promise<FileHandle>>();
  #sizes = new Map<string, number>();

  /** The size of the image at `path`: `measure()` on first use, then remembered until release. */
  size(path: string, measure: () => number): number {
    let size = this.#sizes.get(path);
    if (size === undefined) {
      size = measure();
      this.#sizes.set(path, size);
    }
    return size;
  }

  #handle(path: string): Promise<FileHandle> {
    let handle = this.#handles.get(path);
    if (!handle) {
      handle = open(path, "r");
      this.#handles.set(path, handle);
      handle.catch(() => this.#handles.delete(path));
    }
    return handle;
  }

  /**
   * Fills `into` with the bytes of the image at `path` from byte `offset`.
   * The caller has checked the range against the image size; an early end
   * of data is an IO error, failed reads map through the errno table (EIO
   * stays IO; the driver turns it into SNAPSHOT_CORRUPTED when the module
   * reports the image corrupted).
   */
  async read(path: string, offset: number, into: Uint8Array): Promise<void> {
    const what = `Cannot read ${into.length} bytes at ${offset} of image ${path}`;
    let handle: FileHandle;
    try {
      handle = await this.#handle(path);
    } catch (error) {
      throw fsError(error, what);
    }
    let done = 0;
    while (done < into.length) {
      let bytesRead: number;
      try {
        ({ bytesRead } = await handle.read(into, done, into.length - done, offset + done));
      } catch (error) {
        throw fsError(error, what);
      }
      if (bytesRead === 0) {
        throw new ServiceError("IO", `${what}: the device ended after ${offset + done} bytes`);
      }
      done += bytesRead;
    }
  }

  /** Closes the handle of `path`, if one is open. */
  async release(path: string): Promise<void> {
    this.#sizes.delete(path);
    const handle = this.#handles.get(path);
    if (!handle) return;
    this.#handles.delete(path);
    try {
      await (await handle).close();
    } catch {
      // The handle never opened, or the device is already gone: nothing to release.
    }
  }

  /** Closes every handle. */
  async close(): Promise<void> {
    this.#sizes.clear();
    await Promise.all([...this.#handles.keys()].map((path) => this.release(path)));
  }
}
