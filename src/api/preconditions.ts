/**
 * Validators and conditional requests (RFC 9110 sections 8.8 and 13) for
 * image reads.
 *
 * Design note. An image of a read-only snapshot never changes: its bytes
 * are those of the device at take, and a snapshot id is taken once. So a
 * strong entity tag needs only to name the snapshot, the device and the
 * take; ours is a hash of the three (and the size), opaque and free of any
 * character an entity tag may not hold. The take time is the Last-Modified
 * date. A writable snapshot's image changes with every write, which the
 * seam does not count, so it carries no validator at all: conditions on it
 * compare as the RFC says they do for a resource without a current
 * representation tag ("*" only), and If-Range never matches (the whole
 * image is sent, which is always safe).
 *
 * The preconditions are evaluated in the order of section 13.2.2:
 * If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since, and then
 * If-Range decides whether a Range is honoured.
 *
 * @module
 */

/** The validators of one image. */
export interface ImageValidators {
  /** The strong entity tag (quoted), absent for writable images. */
  etag?: string;
  /** The take time (ms since the epoch), absent for writable images. */
  lastModifiedMs?: number;
}

/** What the image identifies itself by. */
export interface ImageIdentity {
  /** The snapshot's id. */
  snapshotId: string;
  /** The device's id. */
  deviceId: string;
  /** ISO time of take. */
  takenAt: string;
  /** Image size in bytes. */
  sizeBytes: number;
  /** Whether the image accepts writes (then it has no validators). */
  writable: boolean;
}

/** The validators of an image: a strong ETag and Last-Modified, none when writable. */
export async function imageValidators(image: ImageIdentity): Promise<ImageValidators> {
  if (image.writable) return {};
  const text = [image.snapshotId, image.deviceId, image.takenAt, image.sizeBytes].join("\n");
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)),
  );
  const hex = Array.from(digest.subarray(0, 16), (b) => b.toString(16).padStart(2, "0")).join("");
  return { etag: `"${hex}"`, lastModifiedMs: Date.parse(image.takenAt) };
}

/** The response headers that carry `validators`. */
export function validatorHeaders(validators: ImageValidators): Record<string, string> {
  const headers: Record<string, string> = {};
  if (validators.etag) headers.etag = validators.etag;
  if (validators.lastModifiedMs !== undefined) {
    headers["last-modified"] = new Date(validators.lastModifiedMs).toUTCString();
  }
  return headers;
}

/** The outcome of the preconditions of a GET or HEAD. */
export type PreconditionOutcome =
  | { kind: "proceed"; honourRange: boolean }
  | { kind: "not-modified" }
  | { kind: "failed"; header: string };

interface EntityTag {
  weak: boolean;
  opaque: string;
}

/** Parses a list of entity tags; "*" gives "any"; a malformed member ends the list there. */
function parseEntityTags(header: string): EntityTag[] | "any" {
  if (header.trim() === "*") return "any";
  const tags: EntityTag[] = [];
  for (const match of header.matchAll(/\s*(W\/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(,|$)/gy)) {
    tags.push({ weak: match[1] !== undefined, opaque: match[2] });
  }
  return tags;
}

function matches(header: string, etag: string | undefined, strong: boolean): boolean {
  const tags = parseEntityTags(header);
  if (tags === "any") return true;
  if (!etag) return false;
  return tags.some((tag) => tag.opaque === etag && !(strong && tag.weak));
}

function parseDate(header: string | null): number | undefined {
  if (header === null) return undefined;
  const ms = Date.parse(header);
  return Number.isNaN(ms) ? undefined : ms;
}

/** Seconds precision, as an HTTP date carries. */
function seconds(ms: number): number {
  return Math.floor(ms / 1000);
}

/**
 * Evaluates the conditional headers of a GET/HEAD for an image with
 * `validators`, at time `nowMs` (If-Range's date is strong only once a
 * second has passed since the take).
 */
export function evaluatePreconditions(
  headers: Headers,
  validators: ImageValidators,
  options: { nowMs: number },
): PreconditionOutcome {
  const { etag, lastModifiedMs } = validators;
  const ifMatch = headers.get("if-match");
  if (ifMatch !== null) {
    if (!matches(ifMatch, etag, true)) return { kind: "failed", header: "If-Match" };
  } else {
    const since = parseDate(headers.get("if-unmodified-since"));
    if (since !== undefined && lastModifiedMs !== undefined) {
      if (seconds(lastModifiedMs) > seconds(since)) {
        return { kind: "failed", header: "If-Unmodified-Since" };
      }
    }
  }
  const ifNoneMatch = headers.get("if-none-match");
  if (ifNoneMatch !== null) {
    if (matches(ifNoneMatch, etag, false)) return { kind: "not-modified" };
  } else {
    const since = parseDate(headers.get("if-modified-since"));
    if (since !== undefined && lastModifiedMs !== undefined) {
      if (seconds(lastModifiedMs) <= seconds(since)) return { kind: "not-modified" };
    }
  }
  const ifRange = headers.get("if-range");
  if (ifRange === null || headers.get("range") === null) {
    return { kind: "proceed", honourRange: true };
  }
  return {
    kind: "proceed",
    honourRange: ifRangeMatches(ifRange.trim(), validators, options.nowMs),
  };
}

function ifRangeMatches(value: string, validators: ImageValidators, nowMs: number): boolean {
  if (value.startsWith('"') || value.startsWith("W/")) {
    // A weak tag never matches in If-Range (strong comparison, section 13.1.5).
    return validators.etag !== undefined && value === validators.etag;
  }
  const date = parseDate(value);
  const { lastModifiedMs } = validators;
  if (date === undefined || lastModifiedMs === undefined) return false;
  // A Last-Modified date is strong once the response's Date is a second past it.
  return seconds(date) === seconds(lastModifiedMs) && nowMs >= lastModifiedMs + 1000;
}
