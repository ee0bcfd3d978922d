/**
 * Bearer-token authentication. When the service has a token every request
 * must carry `Authorization: Bearer <token>`; tokens are compared in constant
 * time (SHA-256 digests of equal length through timingSafeEqual).
 *
 * @module
 */

import { createHash, timingSafeEqual } from "node:crypto";
import type { MiddlewareHandler } from "hono";
import { ServiceError } from "../errors.ts";
import { problemResponse } from "./problem.ts";

function digest(value: string): Uint8Array {
  return createHash("sha256").update(value).digest();
}

/** True when `presented` equals `expected`, in time independent of where they differ. */
export function tokensMatch(presented: string, expected: string): boolean {
  return timingSafeEqual(digest(presented), digest(expected));
}

/**
 * Middleware that refuses requests without the bearer `token` (401
 * problem+json). The token is trimmed (a trailing newline from a file or an
 * environment variable is no part of it); an empty one is a RangeError, so
 * that a misconfiguration never opens the API to everyone.
 */
export function bearerAuth(configured: string): MiddlewareHandler {
  const token = configured.trim();
  if (!token) throw new RangeError("The bearer token is empty");
  return async (c, next) => {
    const header = c.req.header("authorization") ?? "";
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (!match || !tokensMatch(match[1], token)) {
      const detail = match
        ? "The bearer token is not valid"
        : "This service requires a bearer token: send Authorization: Bearer <token>";
      return problemResponse(
        new ServiceError("UNAUTHORIZED", detail),
        c.req.path,
        { "www-authenticate": 'Bearer realm="blksnap"' },
      );
    }
    await next();
  };
}
