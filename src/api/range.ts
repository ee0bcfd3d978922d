/**
 * HTTP byte ranges (RFC 9110 section 14) for image reads.
 *
 * Design note. A Range header `bytes=spec,spec,...` holds at most
 * {@link MAX_RANGES} specs of the forms `first-last`, `first-` and
 * `-suffix`. Parsing follows the RFC's rules:
 * - a header that is not a well-formed byte-range set (another unit, a spec
 *   with last < first, garbage) is ignored: the whole body is served (200);
 * - specs whose first byte lies at or past the end, and `-0`, are
 *   unsatisfiable and dropped; when none is left the answer is 416;
 * - the satisfiable ranges are sorted and coalesced where they overlap or
 *   touch (section 14.3 lets a server coalesce, and requires nothing of the
 *   order of parts), so no byte is sent twice and a client asking for many
 *   adjacent extents gets one part per run;
 * - more than {@link MAX_RANGES} specs is refused (416 with a detail), which
 *   section 14.2 allows: it bounds the parse and the multipart framing, while
 *   a backup client still fetches a few hundred extents in one request.
 *
 * @module
 */

/** The most range specs one Range header may hold. */
export const MAX_RANGES = 256;

/** A resolved byte range: `length` bytes from `offset`. */
export interface ByteRange {
  /** First byte. */
  offset: number;
  /** Number of bytes (at least 1). */
  length: number;
}

/** What a Range header asks of a body of `sizeBytes`. */
export type RangeRequest =
  | { kind: "whole" }
  | { kind: "partial"; ranges: ByteRange[] }
  | { kind: "unsatisfiable"; reason: "beyond" | "too-many" };

const SPEC = /^(\d*)-(\d*)$/;

type Spec = ByteRange | "unsatisfiable" | "invalid";

function resolveSpec(text: string, sizeBytes: number): Spec {
  const match = SPEC.exec(text.trim());
  if (!match || (match[1] === "" && match[2] === "")) return "invalid";
  const [, firstText, lastText] = match;
  if (firstText === "") {
    const suffix = Number(lastText);
    if (!Number.isSafeInteger(suffix)) return "invalid";
    if (suffix === 0 || sizeBytes === 0) return "unsatisfiable";
    const length = Math.min(suffix, sizeBytes);
    return { offset: sizeBytes - length, length };
  }
  const first = Number(firstText);
  const last = lastText === "" ? Number.MAX_SAFE_INTEGER : Number(lastText);
  if (!Number.isSafeInteger(first) || !Number.isSafeInteger(last) || last < first) {
    return "invalid";
  }
  if (first >= sizeBytes) return "unsatisfiable";
  return { offset: first, length: Math.min(last, sizeBytes - 1) - first + 1 };
}

/** Sorts `ranges` and merges those that overlap or touch. */
export function coalesceRanges(ranges: readonly ByteRange[]): ByteRange[] {
  const sorted = [...ranges].sort((a, b) => a.offset - b.offset);
  const merged: ByteRange[] = [];
  for (const range of sorted) {
    const last = merged.at(-1);
    if (last && range.offset <= last.offset + last.length) {
      const end = Math.max(last.offset + last.length, range.offset + range.length);
      last.length = end - last.offset;
    } else {
      merged.push({ ...range });
    }
  }
  return merged;
}

/** Parses `header` (the Range header or null) against a body of `sizeBytes`. */
export function parseRange(header: string | null, sizeBytes: number): RangeRequest {
  if (!header) return { kind: "whole" };
  const unit = /^\s*bytes\s*=(.*)$/is.exec(header);
  if (!unit) return { kind: "whole" };
  const texts = unit[1].split(",").filter((text) => text.trim() !== "");
  if (texts.length === 0) return { kind: "whole" };
  if (texts.length > MAX_RANGES) return { kind: "unsatisfiable", reason: "too-many" };
  const ranges: ByteRange[] = [];
  for (const text of texts) {
    const spec = resolveSpec(text, sizeBytes);
    if (spec === "invalid") return { kind: "whole" };
    if (spec !== "unsatisfiable") ranges.push(spec);
  }
  if (ranges.length === 0) return { kind: "unsatisfiable", reason: "beyond" };
  return { kind: "partial", ranges: coalesceRanges(ranges) };
}
