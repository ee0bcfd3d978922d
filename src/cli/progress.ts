/**
 * A progress bar for long transfers, drawn on standard error only when it is
 * a terminal (never in pipes or logs), at most ten times a second.
 *
 * @module
 */

const MIB = 1024 * 1024;

function formatBytes(bytes: number): string {
  return bytes >= 1024 * MIB
    ? `${(bytes / 1024 / MIB).toFixed(2)} GiB`
    : `${(bytes / MIB).toFixed(1)} MiB`;
}

/** Progress of a transfer of `totalBytes`. */
export class Progress {
  readonly #totalBytes: number;
  readonly #write: ((text: string) => void) | undefined;
  readonly #started = performance.now();
  #lastDraw = 0;
  #doneBytes = 0;

  /** `write` draws on the terminal; pass undefined to draw nothing. */
  constructor(totalBytes: number, write: ((text: string) => void) | undefined) {
    this.#totalBytes = totalBytes;
    this.#write = write;
  }

  /** A progress bar on standard error when it is a terminal, silent otherwise. */
  static onStderr(totalBytes: number): Progress {
    const encoder = new TextEncoder();
    const terminal = Deno.stderr.isTerminal();
    return new Progress(
      totalBytes,
      terminal ? (text) => void Deno.stderr.writeSync(encoder.encode(text)) : undefined,
    );
  }

  /** Records `bytes` more transferred. */
  advance(bytes: number): void {
    this.#doneBytes += bytes;
    const now = performance.now();
    if (now - this.#lastDraw >= 100) {
      this.#lastDraw = now;
      this.#draw(now);
    }
  }

  /** Draws the final state and ends the line. */
  finish(): void {
    if (!this.#write) return;
    this.#draw(performance.now());
    this.#write("\n");
  }

  #draw(now: number): void {
    if (!this.#write) return;
    const fraction = this.#totalBytes ? this.#doneBytes / this.#totalBytes : 1;
    const width = 30;
    const filled = Math.round(fraction * width);
    const seconds = Math.max((now - this.#started) / 1000, 0.001);
    const rate = this.#doneBytes / seconds;
    const eta = rate > 0 ? Math.ceil((this.#totalBytes - this.#doneBytes) / rate) : 0;
    this.#write(
      `\r[${"#".repeat(filled)}${" ".repeat(width - filled)}] ${
        (fraction * 100).toFixed(0).padStart(3)
      }% ` +
        `${formatBytes(this.#doneBytes)} of ${formatBytes(this.#totalBytes)}  ${
          formatBytes(rate)
        }/s  ` +
        `ETA ${eta}s `,
    );
  }
}
