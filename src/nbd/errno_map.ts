/**
 * From a thrown error to the NBD error a reply carries, reading the one
 * table in src/errors.ts. Like nbdkit's `nbd_errno()`, the two errors the
 * specification reserves for particular modes are only sent in them:
 * NBD_ENOTSUP answers WRITE_ZEROES with NBD_CMD_FLAG_FAST_ZERO, and
 * NBD_EOVERFLOW answers READ when structured replies are in use; elsewhere
 * both become NBD_EINVAL.
 *
 * @module
 */

import { isServiceError } from "../errors.ts";
import { NbdError } from "./constants.ts";

const allowed = new Set<number>(Object.values(NbdError));

/** What a failed request is answered with. */
export interface NbdFailure {
  /** The NBD error value. */
  error: number;
  /** A message for the human at the client (structured replies only). */
  message: string;
}

/** The negotiated mode that decides which errors may be sent. */
export interface ErrorMode {
  /** The request is WRITE_ZEROES with NBD_CMD_FLAG_FAST_ZERO. */
  fastZero: boolean;
  /** The request is READ and structured replies were negotiated. */
  overflowAllowed: boolean;
}

/**
 * The NBD error for `error`: a ServiceError's table entry, EIO for anything
 * else (an unexpected failure of the export).
 */
export function nbdFailureOf(error: unknown, mode: ErrorMode): NbdFailure {
  if (!isServiceError(error)) {
    const detail = error instanceof Error ? error.message : String(error);
    return { error: NbdError.NBD_EIO, message: `I/O error: ${detail}` };
  }
  return { error: restrict(error.mapping.nbdError, mode), message: error.message };
}

/** `value` if the mode allows sending it, else NBD_EINVAL. */
export function restrict(value: number, mode: ErrorMode): number {
  if (!allowed.has(value)) return NbdError.NBD_EINVAL;
  if (value === NbdError.NBD_ENOTSUP && !mode.fastZero) return NbdError.NBD_EINVAL;
  if (value === NbdError.NBD_EOVERFLOW && !mode.overflowAllowed) return NbdError.NBD_EINVAL;
  return value;
}
