/**
 * HTTP byte ranges (RFC 9110 section 14) for image reads: one range of the
 * forms `bytes=first-last`, `bytes=first-` and `bytes=-suffix`. Several
 * ranges, or a header that is not a byte range, are ignored (the whole body
 * is served), as the RFC allows; a satisfiable range gives 206 and an
 * unsatisfiable one 416.
 *
 * @module
 */

/** A resolved byte range: `length` bytes from `offset`. */
export interface ByteRange {
  /** First byte. */
  offset: number;
  /** Number of bytes. */
  length: number;
}

/** What a Range header asks of a body of `sizeBytes`. */
export type RangeRequest =
  | { kind: "whole" }
  | { kind: "partial"; range: ByteRange }
  | { kind: "unsatisfiable" };

/** Parses `header` (the Range header or null) against a body of `sizeBytes`. */
export function parseRange(header: string | null, sizeBytes: number): RangeRequest {
  if (!header) return { kind: "whole" };
  const match = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!match || (match[1] === "" && match[2] === "")) return { kind: "whole" };
  const [, firstText, lastText] = match;
  if (firstText === "") {
    const suffix = Number(lastText);
    if (suffix === 0 || sizeBytes === 0) return { kind: "unsatisfiable" };
    const length = Math.min(suffix, sizeBytes);
    return { kind: "partial", range: { offset: sizeBytes - length, length } };
  }
  const first = Number(firstText);
  if (!Number.isSafeInteger(first) || first >= sizeBytes) return { kind: "unsatisfiable" };
  const last = lastText === "" ? sizeBytes - 1 : Math.min(Number(lastText), sizeBytes - 1);
  if (!Number.isSafeInteger(last) || last < first) return { kind: "whole" };
  return { kind: "partial", range: { offset: first, length: last - first + 1 } };
}
