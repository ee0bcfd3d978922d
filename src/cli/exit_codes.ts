/**
 * The CLI's exit statuses, decided in one place from the error that ended a
 * command.
 *
 * @module
 */

import { isServiceError } from "../errors.ts";
import { ConnectionError, ProblemError } from "../client/problem_error.ts";

/** Exit statuses. */
export const ExitCode = {
  /** Success. */
  OK: 0,
  /** An unexpected failure (a bug, or the service failed internally). */
  FAILURE: 1,
  /** The command line was wrong (unknown command or flag, missing argument). */
  USAGE: 2,
  /** The service refused the request (a problem document: not found, conflict, ...). */
  API: 3,
  /** The service could not be reached or did not answer in time. */
  CONNECTION: 4,
} as const;

/** A command-line mistake: printed with the command's usage hint, exit status 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/**
 * The command failed for a reason of its own, outside the service (a local
 * file it cannot write, an image stream that broke off): exit status 1.
 */
export class CliFailure extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "CliFailure";
  }
}

/** The exit status for `error`. */
export function exitCodeFor(error: unknown): number {
  if (error instanceof UsageError) return ExitCode.USAGE;
  if (error instanceof ProblemError) {
    return error.status >= 500 && error.code === "INTERNAL" ? ExitCode.FAILURE : ExitCode.API;
  }
  if (error instanceof ConnectionError) return ExitCode.CONNECTION;
  if (isServiceError(error)) {
    return error.code === "INVALID_ARGUMENT" ? ExitCode.USAGE : ExitCode.FAILURE;
  }
  if (error instanceof TypeError && /parseArgs|Unknown option|argument/i.test(error.message)) {
    return ExitCode.USAGE;
  }
  return ExitCode.FAILURE;
}
