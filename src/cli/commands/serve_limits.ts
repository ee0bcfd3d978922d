/**
 * The connection and request limits of `blksnap serve`: their flags, the
 * BLKSNAP_* variables behind them, their defaults and their help text, kept
 * apart from the rest of the serve options.
 *
 * @module
 */

import { HTTP_LISTENER_DEFAULTS, type HttpListenerOptions } from "../../api/http_listener.ts";
import type { CliIo, FlagSpec } from "../context.ts";
import { UsageError } from "../exit_codes.ts";

/** Default connection limit of the NBD listeners. */
export const DEFAULT_NBD_MAX_CONNECTIONS = 256;

const d = HTTP_LISTENER_DEFAULTS;

/** Help lines of the limit flags. */
export const LIMITS_HELP = `
Limits (a hostile local client cannot exhaust the service; all have defaults):
  --http-max-connections N   HTTP connections at once, more get 503 (env
                             BLKSNAP_HTTP_MAX_CONNECTIONS, default ${d.maxConnections})
  --nbd-max-connections N    NBD connections at once, more are closed (env
                             BLKSNAP_NBD_MAX_CONNECTIONS, default ${DEFAULT_NBD_MAX_CONNECTIONS})
  --headers-timeout MS       a request head must arrive within this (env
                             BLKSNAP_HEADERS_TIMEOUT_MS, default ${d.headersTimeoutMs})
  --body-timeout MS          a request body must arrive within this after its head (env
                             BLKSNAP_BODY_TIMEOUT_MS, default ${d.bodyTimeoutMs})
  --idle-timeout MS          idle keep-alive connections and stalled response writes are
                             closed after this (env BLKSNAP_IDLE_TIMEOUT_MS, default ${d.idleTimeoutMs})
  --body-bytes-in-flight N   request body bytes held at once across all requests, more get
                             503 (env BLKSNAP_BODY_BYTES_IN_FLIGHT, default ${d.maxBodyBytesInFlight})
`;

const FLAGS = {
  "http-max-connections": ["BLKSNAP_HTTP_MAX_CONNECTIONS", "maxConnections"],
  "headers-timeout": ["BLKSNAP_HEADERS_TIMEOUT_MS", "headersTimeoutMs"],
  "body-timeout": ["BLKSNAP_BODY_TIMEOUT_MS", "bodyTimeoutMs"],
  "idle-timeout": ["BLKSNAP_IDLE_TIMEOUT_MS", "idleTimeoutMs"],
  "body-bytes-in-flight": ["BLKSNAP_BODY_BYTES_IN_FLIGHT", "maxBodyBytesInFlight"],
  "nbd-max-connections": ["BLKSNAP_NBD_MAX_CONNECTIONS", "nbdMaxConnections"],
} as const;

/** The parseArgs declarations of the limit flags. */
export const limitFlags: FlagSpec = Object.fromEntries(
  Object.keys(FLAGS).map((name) => [name, { type: "string" }]),
);

/** The limits after flags and environment are merged. */
export interface ServeLimits {
  /** Options of the HTTP listener. */
  http: HttpListenerOptions;
  /** NBD connection limit. */
  nbdMaxConnections: number;
}

/** Reads the limit flags from parsed `values` (flags win over the environment). */
export function serveLimits(values: Record<string, unknown>, io: CliIo): ServeLimits {
  const http: Record<string, number> = {};
  let nbdMaxConnections = DEFAULT_NBD_MAX_CONNECTIONS;
  for (const [flag, [variable, key]] of Object.entries(FLAGS)) {
    const text = (values[flag] as string | undefined) ?? io.env(variable);
    if (text === undefined) continue;
    const value = Number(text);
    if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(value) || value < 1) {
      throw new UsageError(`--${flag} must be a whole number >= 1, got "${text}"`);
    }
    if (key === "nbdMaxConnections") nbdMaxConnections = value;
    else http[key] = value;
  }
  return { http, nbdMaxConnections };
}
