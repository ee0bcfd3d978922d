/**
 * Writes image bytes to a file block by block, leaving holes where a block
 * is all zeros (when the file started empty), the way `cp --sparse` and
 * nbdcopy do. Bytes may arrive in pieces of any size at any position;
 * they are gathered into {@link SPARSE_BLOCK_BYTES} blocks aligned to the
 * image, each checked for zeros, and runs of data blocks leave in writes of
 * up to {@link WRITE_RUN_BYTES}. A file written this way must be truncated
 * to the image's size at the end ({@link SparseWriter.finish}), so a
 * trailing hole counts too.
 *
 * @module
 */

/** Granularity of hole detection: a block is skipped only when all of it is zero. */
export const SPARSE_BLOCK_BYTES = 64 * 1024;

/** The most bytes gathered into one write. */
export const WRITE_RUN_BYTES = 1 << 20;

/** True when `bytes` holds only zeros. */
export function isAllZero(bytes: Uint8Array): boolean {
  const head = Math.min((8 - (bytes.byteOffset % 8)) % 8, bytes.length);
  for (let i = 0; i < head; i++) if (bytes[i] !== 0) return false;
  const words = new BigUint64Array(
    bytes.buffer,
    bytes.byteOffset + head,
    Math.floor((bytes.length - head) / 8),
  );
  for (let i = 0; i < words.length; i++) if (words[i] !== 0n) return false;
  for (let i = head + words.length * 8; i < bytes.length; i++) if (bytes[i] !== 0) return false;
  return true;
}

/** Options of {@link SparseWriter}. */
export interface SparseWriterOptions {
  /** Skip all-zero blocks (the file must read zeros there already: new or truncated). */
  skipZeros: boolean;
}

/** Counts of what a {@link SparseWriter} did, in bytes. */
export interface SparseWriteStats {
  /** Bytes written to the file. */
  writtenBytes: number;
  /** Bytes skipped because they were zeros. */
  skippedBytes: number;
}

/** A block-gathering, zero-skipping writer over an open file. */
export class SparseWriter {
  readonly #file: Deno.FsFile;
  readonly #skipZeros: boolean;
  readonly #block = new Uint8Array(SPARSE_BLOCK_BYTES);
  #blockStart = -1;
  /** Where in the block the gathered bytes begin (a range may start mid-block). */
  #blockFirst = 0;
  #blockFill = 0;
  readonly #run = new Uint8Array(WRITE_RUN_BYTES);
  #runStart = -1;
  #runFill = 0;
  /** What was written and skipped so far. */
  readonly stats: SparseWriteStats = { writtenBytes: 0, skippedBytes: 0 };

  /** A writer into `file`. */
  constructor(file: Deno.FsFile, options: SparseWriterOptions) {
    this.#file = file;
    this.#skipZeros = options.skipZeros;
  }

  /** Writes `data` at byte `offset` of the image. */
  async write(offset: number, data: Uint8Array): Promise<void> {
    let at = 0;
    while (at < data.length) {
      const position = offset + at;
      const blockStart = position - (position % SPARSE_BLOCK_BYTES);
      if (this.#blockStart !== blockStart || position !== blockStart + this.#blockFill) {
        await this.#flushBlock();
        this.#blockStart = blockStart;
        this.#blockFirst = position - blockStart;
        this.#blockFill = this.#blockFirst;
      }
      const n = Math.min(SPARSE_BLOCK_BYTES - this.#blockFill, data.length - at);
      this.#block.set(data.subarray(at, at + n), this.#blockFill);
      this.#blockFill += n;
      at += n;
      if (this.#blockFill === SPARSE_BLOCK_BYTES) await this.#flushBlock();
    }
  }

  /** Writes what is gathered and, when `sizeBytes` is given, sets the file's length to it. */
  async finish(sizeBytes?: number): Promise<void> {
    await this.#flushBlock();
    await this.#flushRun();
    if (sizeBytes !== undefined) await this.#file.truncate(sizeBytes);
  }

  async #flushBlock(): Promise<void> {
    if (this.#blockStart < 0) return;
    const position = this.#blockStart + this.#blockFirst;
    const bytes = this.#block.subarray(this.#blockFirst, this.#blockFill);
    this.#blockStart = -1;
    if (bytes.length === 0) return;
    if (this.#skipZeros && isAllZero(bytes)) {
      this.stats.skippedBytes += bytes.length;
      await this.#flushRun();
      return;
    }
    if (this.#runStart >= 0 && this.#runStart + this.#runFill !== position) await this.#flushRun();
    if (this.#runFill + bytes.length > this.#run.length) await this.#flushRun();
    if (this.#runStart < 0) this.#runStart = position;
    this.#run.set(bytes, this.#runFill);
    this.#runFill += bytes.length;
  }

  async #flushRun(): Promise<void> {
    if (this.#runStart < 0) return;
    await this.#file.seek(this.#runStart, Deno.SeekMode.Start);
    const run = this.#run.subarray(0, this.#runFill);
    for (let done = 0; done < run.length;) done += await this.#file.write(run.subarray(done));
    this.stats.writtenBytes += run.length;
    this.#runStart = -1;
    this.#runFill = 0;
  }
}
