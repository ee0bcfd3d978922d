/**
 * RFC 9457 problem details for every error the API returns. A ServiceError
 * becomes a problem+json document with its stable code, the errno behind it
 * and, for validation errors, the field at fault. Anything else is an
 * internal error whose detail does not leak internals.
 *
 * @module
 */

import { type ErrorCode, errorTable, isServiceError } from "../errors.ts";

/** Media type of problem documents. */
export const PROBLEM_CONTENT_TYPE = "application/problem+json";

/** The problem document the API sends (and the typed client parses). */
export interface ProblemDocument {
  /** A URI naming the kind of problem: `urn:blksnap:problem:<code>`. */
  type: string;
  /** Short, stable title of the code. */
  title: string;
  /** HTTP status. */
  status: number;
  /** What could not be done and why. */
  detail: string;
  /** The stable error code. */
  code: ErrorCode;
  /** The errno name behind the error, where one exists. */
  errno?: string;
  /** The request field at fault (validation errors). */
  field?: string;
  /** Why, within the code (FULL_BACKUP_REQUIRED: generation_changed, other_device, ...). */
  reason?: string;
  /** The request path. */
  instance?: string;
}

/** Builds the problem document for `error` raised while serving `instance`. */
export function problemFor(error: unknown, instance?: string): ProblemDocument {
  if (isServiceError(error)) {
    const mapping = errorTable[error.code];
    return {
      type: `urn:blksnap:problem:${error.code.toLowerCase().replaceAll("_", "-")}`,
      title: mapping.title,
      status: mapping.status,
      detail: error.message,
      code: error.code,
      errno: error.errno,
      ...(error.field ? { field: error.field } : {}),
      ...(error.reason ? { reason: error.reason } : {}),
      ...(instance ? { instance } : {}),
    };
  }
  const mapping = errorTable.INTERNAL;
  return {
    type: "urn:blksnap:problem:internal",
    title: mapping.title,
    status: mapping.status,
    detail: "The service failed unexpectedly; the service log has the details.",
    code: "INTERNAL",
    ...(instance ? { instance } : {}),
  };
}

/** A problem+json response for `error`. */
export function problemResponse(
  error: unknown,
  instance?: string,
  headers: Record<string, string> = {},
): Response {
  const problem = problemFor(error, instance);
  return new Response(JSON.stringify(problem) + "\n", {
    status: problem.status,
    headers: { "content-type": PROBLEM_CONTENT_TYPE, ...headers },
  });
}
