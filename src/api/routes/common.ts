/**
 * Response helpers and documented error responses shared by the routes.
 *
 * @module
 */

import { problem } from "../models.ts";
import { PROBLEM_CONTENT_TYPE } from "../problem.ts";
import type { ResponseSpec } from "../route.ts";

/** A JSON response (newline-terminated, so terminal tools print it on its own line). */
export function json(value: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(value) + "\n", {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

/** A documented problem+json response. */
export function problemSpec(description: string): ResponseSpec {
  return { description, contentType: PROBLEM_CONTENT_TYPE, schema: problem.jsonSchema() };
}

/** The error responses every route can give. */
export const commonErrors: Record<number, ResponseSpec> = {
  400: problemSpec("Invalid input: the problem names the field."),
  401: problemSpec("A bearer token is required or was wrong."),
};
