/**
 * The service log: leveled lines in one of two formats, written whole to
 * one sink (standard error by default, which systemd sends to the journal).
 *
 * - `text`: `2026-12-01T09:30:00.123Z info  attached device id=vda path=/dev/vdb`
 *   (values with spaces, quotes or `=` are JSON-quoted);
 * - `json`: one object per line,
 *   `{"timestamp":"…","level":"info","message":"attached device","id":"vda",…}`.
 *
 * @module
 */

/** Severities, least severe first. */
export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;

/** A severity. */
export type LogLevel = typeof LOG_LEVELS[number];

/** Line formats. */
export const LOG_FORMATS = ["text", "json"] as const;

/** A line format. */
export type LogFormat = typeof LOG_FORMATS[number];

/** Structured fields of a line; undefined values are left out. */
export type LogFields = Record<string, string | number | boolean | null | undefined>;

/** Options of {@link Logger}. */
export interface LoggerOptions {
  /** The least severe level written (default info). */
  level?: LogLevel;
  /** Line format (default text). */
  format?: LogFormat;
  /** Receives each line, newline included (default: standard error). */
  write?: (line: string) => void;
  /** The clock (default: now). */
  now?: () => Date;
}

const encoder = new TextEncoder();

function writeStderr(line: string): void {
  Deno.stderr.writeSync(encoder.encode(line));
}

function textValue(value: string | number | boolean | null): string {
  const text = String(value);
  return text === "" || /[\s"=\\]/.test(text) ? JSON.stringify(text) : text;
}

/** Writes log lines; {@link Logger.child} adds fields to every line of the child. */
export class Logger {
  readonly #threshold: number;
  readonly #format: LogFormat;
  readonly #write: (line: string) => void;
  readonly #now: () => Date;
  readonly #fields: LogFields;

  /** A logger writing lines at `options.level` and above. */
  constructor(options: LoggerOptions = {}, fields: LogFields = {}) {
    this.#threshold = LOG_LEVELS.indexOf(options.level ?? "info");
    this.#format = options.format ?? "text";
    this.#write = options.write ?? writeStderr;
    this.#now = options.now ?? (() => new Date());
    this.#fields = fields;
  }

  /** A logger that writes nothing. */
  static silent(): Logger {
    return new Logger({ level: "error", write: () => {} });
  }

  /** Whether lines of `level` are written. */
  enabled(level: LogLevel): boolean {
    return LOG_LEVELS.indexOf(level) >= this.#threshold;
  }

  /** A logger writing to the same sink with `fields` added to every line. */
  child(fields: LogFields): Logger {
    const child = new Logger({
      level: LOG_LEVELS[this.#threshold],
      format: this.#format,
      write: this.#write,
      now: this.#now,
    }, { ...this.#fields, ...fields });
    return child;
  }

  /** Writes `message` with `fields` at `level` (when enabled). */
  log(level: LogLevel, message: string, fields: LogFields = {}): void {
    if (!this.enabled(level)) return;
    const all = { ...this.#fields, ...fields };
    const timestamp = this.#now().toISOString();
    if (this.#format === "json") {
      const record: Record<string, unknown> = { timestamp, level, message };
      for (const [key, value] of Object.entries(all)) {
        if (value !== undefined && !(key in record)) record[key] = value;
      }
      this.#write(JSON.stringify(record) + "\n");
      return;
    }
    const parts = [timestamp, level.padEnd(5), message.replaceAll("\n", " ")];
    for (const [key, value] of Object.entries(all)) {
      if (value !== undefined) parts.push(`${key}=${textValue(value)}`);
    }
    this.#write(parts.join(" ") + "\n");
  }

  /** Writes a debug line. */
  debug(message: string, fields?: LogFields): void {
    this.log("debug", message, fields);
  }

  /** Writes an info line. */
  info(message: string, fields?: LogFields): void {
    this.log("info", message, fields);
  }

  /** Writes a warning. */
  warn(message: string, fields?: LogFields): void {
    this.log("warn", message, fields);
  }

  /** Writes an error line. */
  error(message: string, fields?: LogFields): void {
    this.log("error", message, fields);
  }
}
