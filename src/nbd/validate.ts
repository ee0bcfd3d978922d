/**
 * Validate, then execute: {@link validateRequest} checks one transmission
 * request against the negotiated session before anything is allocated or
 * run (nbdkit's `validate_request()` has the same role). Handlers can then
 * assume a known command with valid flags, a range inside the export,
 * alignment to the minimum block size and a payload within the maximum.
 *
 * Errors follow doc/proto.md: EPERM for anything that writes to a read-only
 * export; EINVAL for unknown commands and flags, flags not valid for the
 * command or not negotiated, reads and trims past the end, misalignment and
 * oversized writes; ENOSPC for writes and write-zeroes past the end;
 * EOVERFLOW for reads over the maximum payload when structured replies allow
 * it (EINVAL otherwise).
 *
 * @module
 */

import {
  Command as C,
  CommandFlag as F,
  nameOf,
  NbdError as E,
  TransmissionFlag as TF,
} from "./constants.ts";
import type { Session } from "./handshake.ts";
import type { RequestHeader } from "./replies.ts";

/** Why a request is refused, and the NBD error to reply with. */
export interface Refusal {
  /** The NBD error value. */
  error: number;
  /** Human explanation, sent in structured error replies and logged. */
  reason: string;
}

const KNOWN_FLAGS = F.NBD_CMD_FLAG_FUA | F.NBD_CMD_FLAG_NO_HOLE | F.NBD_CMD_FLAG_DF |
  F.NBD_CMD_FLAG_REQ_ONE | F.NBD_CMD_FLAG_FAST_ZERO;

/** Checks `request` against `session`; undefined when it may run, else the refusal. */
export function validateRequest(request: RequestHeader, session: Session): Refusal | undefined {
  const { type, flags, offset, length } = request;
  const exp = session.export;
  if (type > C.NBD_CMD_BLOCK_STATUS || type === C.NBD_CMD_CACHE) {
    return { error: E.NBD_EINVAL, reason: `unknown command ${nameOf("command", type)}` };
  }
  if ((flags & ~KNOWN_FLAGS) !== 0) {
    return { error: E.NBD_EINVAL, reason: `unknown command flags 0x${flags.toString(16)}` };
  }
  let allowed = session.flags & TF.NBD_FLAG_SEND_FUA ? F.NBD_CMD_FLAG_FUA : 0;
  if (type === C.NBD_CMD_WRITE_ZEROES) {
    allowed |= F.NBD_CMD_FLAG_NO_HOLE | F.NBD_CMD_FLAG_FAST_ZERO;
  } else if (type === C.NBD_CMD_READ && session.structured) allowed |= F.NBD_CMD_FLAG_DF;
  else if (type === C.NBD_CMD_BLOCK_STATUS) allowed |= F.NBD_CMD_FLAG_REQ_ONE;
  const writes = type === C.NBD_CMD_WRITE || type === C.NBD_CMD_WRITE_ZEROES ||
    type === C.NBD_CMD_TRIM;
  if (writes && exp.readOnly) {
    return { error: E.NBD_EPERM, reason: `${nameOf("command", type)} on a read-only export` };
  }
  if ((flags & ~allowed) !== 0) {
    return {
      error: E.NBD_EINVAL,
      reason: `flags 0x${flags.toString(16)} not valid for ${nameOf("command", type)}`,
    };
  }
  if (type === C.NBD_CMD_FLUSH) {
    return offset === 0 && length === 0
      ? undefined
      : { error: E.NBD_EINVAL, reason: "NBD_CMD_FLUSH with an offset or length" };
  }
  if (type === C.NBD_CMD_TRIM && exp.trim === undefined) {
    return { error: E.NBD_EINVAL, reason: "NBD_CMD_TRIM is not supported by this export" };
  }
  if (type === C.NBD_CMD_BLOCK_STATUS) {
    if (session.contexts.length === 0) {
      return { error: E.NBD_EINVAL, reason: "NBD_CMD_BLOCK_STATUS without a meta context" };
    }
    if (length === 0) return { error: E.NBD_EINVAL, reason: "NBD_CMD_BLOCK_STATUS of length 0" };
  }
  if (offset + length > exp.sizeBytes) {
    return {
      error: type === C.NBD_CMD_WRITE || type === C.NBD_CMD_WRITE_ZEROES
        ? E.NBD_ENOSPC
        : E.NBD_EINVAL,
      reason: `${
        nameOf("command", type)
      } at ${offset}+${length} beyond the export size ${exp.sizeBytes}`,
    };
  }
  const { minimum, maximum } = session.blockSize;
  if (
    minimum > 1 &&
    (offset % minimum !== 0 || (length % minimum !== 0 && offset + length !== exp.sizeBytes))
  ) {
    return {
      error: E.NBD_EINVAL,
      reason: `${nameOf("command", type)} not aligned to ${minimum} bytes`,
    };
  }
  if (length > maximum && (type === C.NBD_CMD_READ || type === C.NBD_CMD_WRITE)) {
    return {
      error: type === C.NBD_CMD_READ && session.structured ? E.NBD_EOVERFLOW : E.NBD_EINVAL,
      reason: `${nameOf("command", type)} of ${length} bytes exceeds the maximum ${maximum}`,
    };
  }
  return undefined;
}
