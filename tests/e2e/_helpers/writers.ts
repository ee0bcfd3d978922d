/**
 * Writers that keep a file system busy while a case takes a snapshot, and whose output can be
 * checked afterwards:
 *
 * - {@link AppendWriter} appends numbered 64-byte lines to a file from this process, so what it
 *   wrote is known exactly (`expected(n)` is its first n bytes);
 * - {@link DdWriter} runs `dd if=/dev/urandom oflag=dsync` in the background, appending 64 KiB
 *   blocks of random data to a file, each written through before the next.
 *
 * A file captured at any moment of an appending writer is a prefix of what that writer wrote in
 * the end: that is what an image taken while they run must show.
 *
 * @module
 */

/** Bytes of one line of {@link AppendWriter}. */
export const LINE_BYTES = 64;

/** Line `index` of an {@link AppendWriter}: its number, padding, a newline (64 bytes). */
export function appendLine(index: number): string {
  const head = `line ${String(index).padStart(10, "0")} `;
  return head +
    "abcdefghijklmnopqrstuvwxyz0123456789".repeat(2).slice(0, LINE_BYTES - 1 - head.length) +
    "\n";
}

/** Appends numbered lines to a file, 16 lines (1 KiB) per write, until stopped. */
export class AppendWriter {
  #lines = 0;
  #stopping = false;
  #done: Promise<void>;

  /** Starts appending to `path` (created if missing). */
  constructor(path: string) {
    this.#done = this.#loop(path);
  }

  async #loop(path: string): Promise<void> {
    using file = await Deno.open(path, { append: true, create: true });
    const encoder = new TextEncoder();
    while (!this.#stopping) {
      let batch = "";
      for (let i = 0; i < 16; i++) batch += appendLine(this.#lines + i);
      const bytes = encoder.encode(batch);
      for (let done = 0; done < bytes.length;) done += await file.write(bytes.subarray(done));
      this.#lines += 16;
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
  }

  /** Bytes appended so far. */
  get bytesWritten(): number {
    return this.#lines * LINE_BYTES;
  }

  /** Stops after the current write; resolves with the bytes written in all. */
  async stop(): Promise<number> {
    this.#stopping = true;
    await this.#done;
    return this.bytesWritten;
  }

  /** The first `length` bytes this writer writes. */
  static expected(length: number): Uint8Array {
    const lines = Math.ceil(length / LINE_BYTES);
    let text = "";
    for (let i = 0; i < lines; i++) text += appendLine(i);
    return new TextEncoder().encode(text).subarray(0, length);
  }
}

/** `dd` appending random 64 KiB blocks with O_DSYNC, in the background. */
export class DdWriter {
  #child: Deno.ChildProcess;
  #output: Promise<Deno.CommandOutput>;
  /** The file dd writes. */
  readonly path: string;

  /** Starts dd writing at most `maxBlocks` blocks of 64 KiB to `path`. */
  constructor(path: string, maxBlocks: number) {
    this.path = path;
    this.#child = new Deno.Command("dd", {
      args: [
        "if=/dev/urandom",
        `of=${path}`,
        "bs=64K",
        `count=${maxBlocks}`,
        "oflag=dsync",
        "status=none",
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.#output = this.#child.output();
  }

  /** Current size of the file in bytes (0 before dd created it). */
  size(): number {
    try {
      return Deno.statSync(this.path).size;
    } catch {
      return 0;
    }
  }

  /**
   * Stops dd (SIGTERM) unless it finished; resolves when it has exited.
   *
   * @throws {Error} when dd failed on its own (its stderr is in the message).
   */
  async stop(): Promise<void> {
    let killed = false;
    try {
      this.#child.kill("SIGTERM");
      killed = true;
    } catch {
      // it has exited already
    }
    const output = await this.#output;
    if (!killed && !output.success) {
      throw new Error(`dd to ${this.path} failed: ${new TextDecoder().decode(output.stderr)}`);
    }
  }
}
