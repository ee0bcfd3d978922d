/**
 * A logger whose lines a test can read: JSON lines collected in memory, parsed.
 *
 * @module
 */

import { Logger, type LogLevel } from "../../src/log/logger.ts";

/** One parsed JSON log line. */
export type LogRecord = Record<string, unknown> & {
  timestamp: string;
  level: LogLevel;
  message: string;
};

/** A JSON logger at `level` and the records it wrote so far. */
export function collectingLogger(level: LogLevel = "debug"): {
  logger: Logger;
  records: LogRecord[];
} {
  const records: LogRecord[] = [];
  const logger = new Logger({
    level,
    format: "json",
    write: (line) => records.push(JSON.parse(line)),
  });
  return { logger, records };
}

/** Waits (bounded) until a record satisfies `test`, and returns it. */
export async function waitForRecord(
  records: LogRecord[],
  test: (record: LogRecord) => boolean,
  what: string,
): Promise<LogRecord> {
  for (let i = 0; i < 500; i++) {
    const found = records.find(test);
    if (found) return found;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`no log line ${what} in:\n${records.map((r) => JSON.stringify(r)).join("\n")}`);
}
