/**
 * A progress bar for long transfers, drawn on standard error only when it is
 * a terminal (never in pipes or logs), at most ten times a second. Every
 * frame returns to the start of the line and erases what an earlier, longer
 * frame left (ESC [K), so no residue stays behind; the final frame shows the
 * elapsed time instead of an estimate.
 *
 * @module
 */

const KIB = 1024;
const MIB = 1024 * KIB;
const GIB = 1024 * MIB;

/** Erases from the cursor to the end of the line. */
export const ERASE_TO_END = "\x1b[K";

/** `bytes` in the largest binary unit that keeps it at 1 or more. */
export function formatBytes(bytes: number): string {
  if (bytes >= GIB) return `${(bytes / GIB).toFixed(2)} GiB`;
  if (bytes >= MIB) return `${(bytes / MIB).toFixed(1)} MiB`;
  if (bytes >= KIB) return `${(bytes / KIB).toFixed(1)} KiB`;
  return `${bytes} B`;
}

/** `seconds` as "42s", "3m07s" or "1h02m". */
export function formatDuration(seconds: number): string {
  const whole = Math.max(0, Math.round(seconds));
  if (whole < 60) return `${whole}s`;
  if (whole < 3600) return `${Math.floor(whole / 60)}m${String(whole % 60).padStart(2, "0")}s`;
  return `${Math.floor(whole / 3600)}h${String(Math.floor(whole / 60) % 60).padStart(2, "0")}m`;
}

/** Progress of a transfer of `totalBytes` (0 when the size is unknown). */
export class Progress {
  readonly #totalBytes: number;
  readonly #write: ((text: string) => void) | undefined;
  readonly #now: () => number;
  readonly #started: number;
  #lastDraw = -Infinity;
  #doneBytes = 0;

  /** `write` draws on the terminal (undefined draws nothing); `now` is a millisecond clock. */
  constructor(
    totalBytes: number,
    write: ((text: string) => void) | undefined,
    options: { now?: () => number } = {},
  ) {
    this.#totalBytes = totalBytes;
    this.#write = write;
    this.#now = options.now ?? (() => performance.now());
    this.#started = this.#now();
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
    const now = this.#now();
    if (now - this.#lastDraw >= 100) {
      this.#lastDraw = now;
      this.#draw(now, false);
    }
  }

  /** Draws the final state and ends the line. */
  finish(): void {
    if (!this.#write) return;
    this.#draw(this.#now(), true);
    this.#write("\n");
  }

  #draw(now: number, final: boolean): void {
    if (!this.#write) return;
    const seconds = Math.max((now - this.#started) / 1000, 0.001);
    const rate = this.#doneBytes / seconds;
    const known = this.#totalBytes > 0;
    const fraction = known ? Math.min(this.#doneBytes / this.#totalBytes, 1) : 0;
    const width = 30;
    const filled = Math.round(fraction * width);
    const bar = known ? `[${"#".repeat(filled)}${" ".repeat(width - filled)}] ` : "";
    const percent = known ? `${(fraction * 100).toFixed(0).padStart(3)}% ` : "";
    const amount = known
      ? `${formatBytes(this.#doneBytes)} of ${formatBytes(this.#totalBytes)}`
      : formatBytes(this.#doneBytes);
    const speed = this.#doneBytes > 0 ? `  ${formatBytes(rate)}/s` : "";
    let time = "";
    if (final) time = `  in ${formatDuration(seconds)}`;
    else if (known && rate > 0) {
      time = `  ETA ${formatDuration((this.#totalBytes - this.#doneBytes) / rate)}`;
    }
    this.#write(`\r${bar}${percent}${amount}${speed}${time}${ERASE_TO_END}`);
  }
}
