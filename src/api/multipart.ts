/**
 * `multipart/byteranges` bodies (RFC 9110 section 14.6): one part per
 * range, each with its own Content-Type and Content-Range, separated by a
 * boundary that cannot occur in the framing. The length of the whole body is
 * known before any byte is read, so a HEAD and the Content-Length of a GET
 * agree, and the parts stream piece by piece.
 *
 * @module
 */

import type { ByteRange } from "./range.ts";

/** Reads `into.length` bytes from byte `offset` into `into`. */
export type ReadAt = (offset: number, into: Uint8Array) => Promise<void>;

/** A multipart body: its media type (with the boundary), exact length, and a stream factory. */
export interface MultipartBody {
  /** `multipart/byteranges; boundary=...`. */
  contentType: string;
  /** The exact number of bytes {@link MultipartBody.stream} yields. */
  lengthBytes: number;
  /** A stream of the body; reads each range in pieces of at most `pieceBytes`. */
  stream(read: ReadAt, options: { pieceBytes: number }): ReadableStream<Uint8Array>;
}

/** A random boundary of 32 hex digits (allowed by RFC 2046's bchars). */
function randomBoundary(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The multipart/byteranges body of `ranges` of a `sizeBytes` body whose
 * parts have `partType` (e.g. application/octet-stream).
 */
export function multipartByteranges(
  ranges: readonly ByteRange[],
  sizeBytes: number,
  options: { partType: string; boundary?: string },
): MultipartBody {
  const boundary = options.boundary ?? randomBoundary();
  const encoder = new TextEncoder();
  const heads = ranges.map((range, index) =>
    encoder.encode(
      `${index === 0 ? "" : "\r\n"}--${boundary}\r\n` +
        `Content-Type: ${options.partType}\r\n` +
        `Content-Range: bytes ${range.offset}-${
          range.offset + range.length - 1
        }/${sizeBytes}\r\n\r\n`,
    )
  );
  const tail = encoder.encode(`\r\n--${boundary}--\r\n`);
  const lengthBytes = heads.reduce((sum, head) => sum + head.length, 0) +
    ranges.reduce((sum, range) => sum + range.length, 0) + tail.length;
  return {
    contentType: `multipart/byteranges; boundary=${boundary}`,
    lengthBytes,
    stream(read, { pieceBytes }) {
      let part = 0;
      let position = -1; // -1: the part's head is next.
      let done = false;
      return new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (done) return;
          if (part === ranges.length) {
            controller.enqueue(tail);
            controller.close();
            done = true;
            return;
          }
          const range = ranges[part];
          if (position < 0) {
            controller.enqueue(heads[part]);
            position = range.offset;
            return;
          }
          const end = range.offset + range.length;
          const piece = new Uint8Array(Math.min(pieceBytes, end - position));
          await read(position, piece);
          position += piece.length;
          controller.enqueue(piece);
          if (position >= end) {
            part += 1;
            position = -1;
          }
        },
      }, { highWaterMark: 2 });
    },
  };
}
