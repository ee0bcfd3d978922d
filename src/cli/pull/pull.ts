/**
 * The copies `image read` makes.
 *
 * Design note. A full copy goes to a temporary file beside the output and
 * is renamed over it only once every byte is written and synced, so a
 * failed read (the snapshot destroyed, the service gone) leaves nothing
 * half-written. It is sparse: extents the source reports as zeros are not
 * even read, and blocks that read as zeros are not written (the file is
 * truncated to the image's size at the end, so they stay holes), as
 * nbdcopy does. A synthetic full (`--since TOKEN --into FILE`) applies the
 * changed extents to an existing full copy of the previous backup: by
 * default to a copy of FILE made with `cp --reflink=auto --sparse=always`
 * (instant on btrfs/XFS, hole-preserving elsewhere) that then replaces FILE,
 * so FILE is always either the old or the new backup; with `inPlace` the
 * extents go straight into FILE (no copy; a failure leaves it mixed, and
 * says so). Changed extents are written whole, zeros included, since the
 * old bytes under them must go.
 *
 * @module
 */

import { basename, dirname, join } from "node:path";
import { ServiceError } from "../../errors.ts";
import { type ByteExtent, type ImageSource, withoutExtents } from "./image_source.ts";
import { SparseWriter, type SparseWriteStats } from "./sparse_writer.ts";

/** What reports progress (the CLI's progress bar). */
export interface ProgressSink {
  /** `bytes` more are done. */
  advance(bytes: number): void;
}

/** What a copy did. */
export interface PullResult extends SparseWriteStats {
  /** Bytes of the image the copy covers. */
  bytes: number;
  /** Bytes not read because the source reported them as zeros. */
  unreadBytes: number;
}

/** A temporary path beside `path`, hidden, unique. */
function temporaryPath(path: string): string {
  const tag = crypto.randomUUID().slice(0, 8);
  return join(dirname(path), `.${basename(path)}.${tag}.part`);
}

async function removeQuietly(path: string): Promise<void> {
  await Deno.remove(path).catch(() => {});
}

async function copyExtents(
  source: ImageSource,
  extents: readonly ByteExtent[],
  options: { writer: SparseWriter; base: number; progress: ProgressSink },
): Promise<void> {
  for await (const { offset, bytes } of source.read(extents)) {
    await options.writer.write(offset - options.base, bytes);
    options.progress.advance(bytes.length);
  }
}

/** Options of {@link pullFull}. */
export interface PullFullOptions {
  /** Where the copy goes: a regular file (replaced at the end) or an existing device. */
  output: string;
  /** The part of the image to copy (default all of it); the output holds just that part. */
  extent?: ByteExtent;
  /** Progress of the copy. */
  progress: ProgressSink;
}

/** Copies the image (or a part) from `source` to a file, sparse, replacing it only on success. */
export async function pullFull(source: ImageSource, options: PullFullOptions): Promise<PullResult> {
  const extent = options.extent ?? { offset: 0, length: source.sizeBytes };
  const existing = await Deno.stat(options.output).catch(() => undefined);
  const direct = existing !== undefined && !existing.isFile;
  const target = direct ? options.output : temporaryPath(options.output);
  const file = await Deno.open(
    target,
    direct ? { write: true } : {
      write: true,
      createNew: true,
      mode: 0o600,
    },
  );
  let closed = false;
  try {
    const zeros = direct ? [] : await source.zeroExtents(extent);
    const unreadBytes = zeros.reduce((sum, z) => sum + z.length, 0);
    options.progress.advance(unreadBytes);
    const writer = new SparseWriter(file, { skipZeros: !direct });
    await copyExtents(source, withoutExtents(extent, zeros), {
      writer,
      base: extent.offset,
      progress: options.progress,
    });
    await writer.finish(direct ? undefined : extent.length);
    await file.sync();
    file.close();
    closed = true;
    if (!direct) {
      if (existing) await Deno.chmod(target, existing.mode! & 0o7777);
      await Deno.rename(target, options.output);
    }
    return { bytes: extent.length, unreadBytes, ...writer.stats };
  } catch (error) {
    if (!closed) file.close();
    if (!direct) await removeQuietly(target);
    throw error;
  }
}

/** Options of {@link applyChanges}. */
export interface ApplyChangesOptions {
  /** The existing full copy to bring up to date; it must have the image's size. */
  into: string;
  /** Write into FILE itself instead of a copy that replaces it. */
  inPlace: boolean;
  /** Progress of the copy. */
  progress: ProgressSink;
}

async function cloneFile(from: string, to: string): Promise<void> {
  const output = await new Deno.Command("cp", {
    args: ["--reflink=auto", "--sparse=always", "--", from, to],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!output.success) {
    const why = new TextDecoder().decode(output.stderr).trim().split("\n")[0];
    throw new ServiceError("IO", `cannot copy ${from} to ${to}: ${why}`);
  }
}

/**
 * Checks that `path` is a regular file of `sizeBytes`, as a full copy of the
 * image must be. NOT_FOUND when it cannot be opened, INVALID_ARGUMENT otherwise.
 */
export async function checkFullCopy(path: string, sizeBytes: number): Promise<void> {
  const info = await Deno.stat(path).catch((cause) => {
    throw new ServiceError("NOT_FOUND", `${path} cannot be opened: ${cause.message}`);
  });
  if (!info.isFile) throw new ServiceError("INVALID_ARGUMENT", `${path} is not a regular file`);
  if (info.size !== sizeBytes) {
    throw new ServiceError(
      "INVALID_ARGUMENT",
      `${path} has ${info.size} bytes but the image has ${sizeBytes}: it is not a full copy of this device`,
    );
  }
}

/**
 * Writes the `extents` of the image from `source` into an existing full copy
 * (a synthetic full). INVALID_ARGUMENT when the copy's size differs from the image's.
 */
export async function applyChanges(
  source: ImageSource,
  extents: readonly ByteExtent[],
  options: ApplyChangesOptions,
): Promise<PullResult> {
  await checkFullCopy(options.into, source.sizeBytes);
  const target = options.inPlace ? options.into : temporaryPath(options.into);
  if (!options.inPlace) await cloneFile(options.into, target);
  let file: Deno.FsFile | undefined;
  try {
    file = await Deno.open(target, { write: true });
    const writer = new SparseWriter(file, { skipZeros: false });
    await copyExtents(source, extents, { writer, base: 0, progress: options.progress });
    await writer.finish();
    await file.sync();
    file.close();
    file = undefined;
    if (!options.inPlace) await Deno.rename(target, options.into);
    const bytes = extents.reduce((sum, e) => sum + e.length, 0);
    return { bytes, unreadBytes: 0, ...writer.stats };
  } catch (error) {
    file?.close();
    if (!options.inPlace) await removeQuietly(target);
    else {
      throw new ServiceError(
        "IO",
        `${(error as Error).message}; ${options.into} is partly updated (--in-place)`,
        { cause: error },
      );
    }
    throw error;
  }
}

/** Streams the image (or a part) from `source` to `writable` (standard output), not sparse. */
export async function pullToStream(
  source: ImageSource,
  writable: WritableStream<Uint8Array>,
  options: { extent?: ByteExtent; progress: ProgressSink },
): Promise<number> {
  const extent = options.extent ?? { offset: 0, length: source.sizeBytes };
  const writer = writable.getWriter();
  let bytes = 0;
  try {
    for await (const piece of source.read([extent])) {
      await writer.write(piece.bytes);
      bytes += piece.bytes.length;
      options.progress.advance(piece.bytes.length);
    }
  } finally {
    writer.releaseLock();
  }
  return bytes;
}
