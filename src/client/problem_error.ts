/**
 * Errors the typed client raises: {@link ProblemError} when the service
 * answered with a problem document, {@link ConnectionError} when it could
 * not be reached or did not answer in time.
 *
 * @module
 */

import type { ProblemDocument } from "../api/problem.ts";
import type { ErrorCode } from "../errors.ts";

/** The service refused or failed a request; carries its problem document. */
export class ProblemError extends Error {
  /** The problem document as the service sent it. */
  readonly problem: ProblemDocument;

  /** Wraps the problem document the service sent. */
  constructor(problem: ProblemDocument) {
    super(`${problem.title}: ${problem.detail}`);
    this.name = "ProblemError";
    this.problem = problem;
  }

  /** HTTP status. */
  get status(): number {
    return this.problem.status;
  }

  /** The stable error code (e.g. "NOT_FOUND"). */
  get code(): ErrorCode {
    return this.problem.code;
  }

  /** The reason within the code (FULL_BACKUP_REQUIRED: "generation_changed", ...), if any. */
  get reason(): string | undefined {
    return this.problem.reason;
  }
}

/** The service could not be reached, or did not answer within the timeout. */
export class ConnectionError extends Error {
  /** `message` says which service could not be reached and why. */
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ConnectionError";
  }
}
