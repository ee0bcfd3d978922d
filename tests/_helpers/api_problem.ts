/**
 * Assertions on the API's errors: a problem+json response (raw fetch) or a
 * ProblemError (typed client) with the expected status and code, and the
 * fields every problem must carry.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type ErrorCode, errorTable } from "../../src/errors.ts";
import type { ProblemDocument } from "../../src/api/problem.ts";
import { ProblemError } from "../../src/client/problem_error.ts";

/** What a test expects of a problem. */
export interface ExpectedProblem {
  /** HTTP status. */
  status: number;
  /** Stable code. */
  code: ErrorCode;
  /** The field at fault (validation errors). */
  field?: string;
  /** The errno name, when it differs from the code's default. */
  errno?: string;
  /** The reason within the code (FULL_BACKUP_REQUIRED). */
  reason?: string;
}

/**
 * Checks that `problem` is a complete problem document (type, title,
 * status, detail, code, errno) matching `expected`; returns it.
 */
export function assertProblem(
  problem: ProblemDocument,
  expected: ExpectedProblem,
): ProblemDocument {
  const shown = JSON.stringify(problem);
  assert.equal(problem.status, expected.status, shown);
  assert.equal(problem.code, expected.code, shown);
  assert.equal(problem.title, errorTable[expected.code].title, shown);
  assert.match(problem.type, /^urn:blksnap:problem:[a-z-]+$/, shown);
  assert.equal(typeof problem.detail, "string", shown);
  assert.ok(problem.detail.length > 0, shown);
  assert.equal(problem.errno, expected.errno ?? errorTable[expected.code].errno, shown);
  if (expected.field !== undefined) assert.equal(problem.field, expected.field, shown);
  if (expected.reason !== undefined) assert.equal(problem.reason, expected.reason, shown);
  return problem;
}

/** Reads `response` as a problem+json document and checks it against `expected`. */
export async function responseProblem(
  response: Response,
  expected: ExpectedProblem,
): Promise<ProblemDocument> {
  const text = await response.text();
  assert.equal(response.status, expected.status, text);
  assert.equal(response.headers.get("content-type"), "application/problem+json", text);
  return assertProblem(JSON.parse(text) as ProblemDocument, expected);
}

/**
 * Awaits `promise`, which must reject with a ProblemError matching
 * `expected`; returns its problem document.
 */
export async function rejectsWithProblem(
  promise: Promise<unknown>,
  expected: ExpectedProblem,
): Promise<ProblemDocument> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof ProblemError, `expected a ProblemError, got ${error}`);
    assert.equal(error.code, expected.code, error.message);
    assert.equal(error.status, expected.status, error.message);
    return assertProblem(error.problem, expected);
  }
  assert.fail(`expected ${expected.status} ${expected.code}, but the call succeeded`);
}
