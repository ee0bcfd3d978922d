/**
 * The NBD server's logging seam: one function the embedding service
 * provides (the CLI prints, tests collect or discard).
 *
 * @module
 */

/** Severity of a log message. */
export type NbdLogLevel = "debug" | "info" | "warn" | "error";

/** Receives the server's log messages. */
export type NbdLogger = (level: NbdLogLevel, message: string) => void;

/** A logger that drops everything. */
export const silentLogger: NbdLogger = (): void => {};
