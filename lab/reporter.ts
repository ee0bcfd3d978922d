/**
 * Progress output of `deno task lab`. On a terminal: one live status line per step (what is
 * going on and for how long), finished steps and test cases as permanent lines. Elsewhere
 * (CI logs, pipes): plain lines only, no cursor movement.
 *
 * @module
 */

/** Formats a duration for people: "850 ms", "12.3 s", "4 min 05 s". */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const minutes = Math.floor(ms / 60_000);
  const seconds = Math.floor((ms % 60_000) / 1000);
  return `${minutes} min ${String(seconds).padStart(2, "0")} s`;
}

/** Where progress goes. */
export interface Reporter {
  /** Runs `fn` as a named step, reporting its start, its end and how long it took. */
  step<T>(label: string, fn: () => Promise<T>): Promise<T>;
  /** Transient detail of the current step (e.g. the build tool's last line); terminal only. */
  status(text: string): void;
  /** A permanent line. */
  line(text: string): void;
  /** Stops the live display. */
  close(): void;
}

/** A reporter writing to `write`; `live` enables the terminal status line. */
export function createReporter(
  options: { live: boolean; write?: (text: string) => void; columns?: () => number },
): Reporter {
  const write = options.write ??
    ((text: string) => Deno.stdout.writeSync(new TextEncoder().encode(text)));
  return options.live
    ? new LiveReporter(write, options.columns ?? (() => Deno.consoleSize().columns))
    : new PlainReporter(write);
}

class PlainReporter implements Reporter {
  #write: (text: string) => void;

  constructor(write: (text: string) => void) {
    this.#write = write;
  }

  async step<T>(label: string, fn: () => Promise<T>): Promise<T> {
    const started = performance.now();
    this.#write(`${label} ...\n`);
    try {
      const result = await fn();
      this.#write(`${label}: done in ${formatDuration(performance.now() - started)}\n`);
      return result;
    } catch (error) {
      this.#write(`${label}: FAILED after ${formatDuration(performance.now() - started)}\n`);
      throw error;
    }
  }

  status(): void {}

  line(text: string): void {
    this.#write(`${text}\n`);
  }

  close(): void {}
}

class LiveReporter implements Reporter {
  #write: (text: string) => void;
  #columns: () => number;
  #label?: string;
  #started = 0;
  #detail = "";
  #timer?: ReturnType<typeof setInterval>;

  constructor(write: (text: string) => void, columns: () => number) {
    this.#write = write;
    this.#columns = columns;
  }

  async step<T>(label: string, fn: () => Promise<T>): Promise<T> {
    this.#label = label;
    this.#started = performance.now();
    this.#detail = "";
    this.#timer ??= setInterval(() => this.#draw(), 1000);
    this.#draw();
    try {
      const result = await fn();
      this.#finish(`✔ ${label}  ${formatDuration(performance.now() - this.#started)}`);
      return result;
    } catch (error) {
      this.#finish(`✘ ${label}  failed after ${formatDuration(performance.now() - this.#started)}`);
      throw error;
    }
  }

  status(text: string): void {
    this.#detail = text.trim();
    this.#draw();
  }

  line(text: string): void {
    this.#write(`\r\x1b[2K${text}\n`);
    this.#draw();
  }

  close(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    this.#write("\r\x1b[2K");
  }

  #finish(text: string): void {
    this.#label = undefined;
    this.#write(`\r\x1b[2K${text}\n`);
  }

  #draw(): void {
    if (this.#label === undefined) return;
    const elapsed = formatDuration(performance.now() - this.#started);
    let text = `… ${this.#label}  ${elapsed}${this.#detail ? `  ${this.#detail}` : ""}`;
    const width = Math.max(20, this.#columns() - 1);
    if (text.length > width) text = text.slice(0, width - 1) + "…";
    this.#write(`\r\x1b[2K${text}`);
  }
}
