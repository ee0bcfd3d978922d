/**
 * The response to `GET`/`HEAD .../images/{device}/data`: validators
 * (ETag, Last-Modified), conditional requests, and one range (206 with
 * Content-Range), several (206 multipart/byteranges), none (200) or none
 * satisfiable (416). A HEAD gets the very headers a GET would, with the
 * real Content-Length, and reads nothing.
 *
 * A GET reads the first piece before it answers, so a read that fails at
 * once (a corrupted snapshot) is a problem document rather than a cut body.
 *
 * @module
 */

import type { SnapshotDriver } from "../driver.ts";
import { ServiceError } from "../errors.ts";
import { multipartByteranges, type ReadAt } from "./multipart.ts";
import { evaluatePreconditions, imageValidators, validatorHeaders } from "./preconditions.ts";
import { problemResponse } from "./problem.ts";
import { type ByteRange, MAX_RANGES, parseRange, type RangeRequest } from "./range.ts";

/** Bytes read from the image per piece of the body. */
export const READ_PIECE_BYTES = 1 << 20;

const PART_TYPE = "application/octet-stream";

/** A stream of `range` read in pieces. */
function rangeStream(read: ReadAt, range: ByteRange): ReadableStream<Uint8Array> {
  let position = range.offset;
  const end = range.offset + range.length;
  return new ReadableStream({
    async pull(controller) {
      const piece = new Uint8Array(Math.min(READ_PIECE_BYTES, end - position));
      await read(position, piece);
      position += piece.length;
      controller.enqueue(piece);
      if (position >= end) controller.close();
    },
  }, { highWaterMark: 2 });
}

/** Reads the first piece at `offset` now; `read` then serves that piece from memory once. */
async function primed(read: ReadAt, offset: number, lengthBytes: number): Promise<ReadAt> {
  const first = new Uint8Array(Math.min(READ_PIECE_BYTES, lengthBytes));
  await read(offset, first);
  let pending: Uint8Array | undefined = first;
  return async (at, into) => {
    if (pending && at === offset && into.length === pending.length) {
      into.set(pending);
      pending = undefined;
      return;
    }
    await read(at, into);
  };
}

/** What the data route needs to know about the request. */
export interface ImageDataRequest {
  /** The snapshot's id. */
  snapshotId: string;
  /** The device's id. */
  deviceId: string;
  /** The HTTP request (method and headers). */
  request: Request;
  /** The request path, for problem documents. */
  path: string;
}

/** Answers a GET or HEAD of an image's data. */
export async function imageDataResponse(
  driver: SnapshotDriver,
  { snapshotId, deviceId, request, path }: ImageDataRequest,
): Promise<Response> {
  const snapshot = await driver.snapshotInfo(snapshotId);
  const sizeBytes = await driver.imageSize(snapshotId, deviceId);
  const validators = await imageValidators({
    snapshotId,
    deviceId,
    takenAt: snapshot.takenAt ?? snapshot.createdAt,
    sizeBytes,
    writable: snapshot.writable,
  });
  const common = { "accept-ranges": "bytes", ...validatorHeaders(validators) };
  const outcome = evaluatePreconditions(request.headers, validators, { nowMs: Date.now() });
  if (outcome.kind === "failed") {
    return problemResponse(
      new ServiceError(
        "PRECONDITION_FAILED",
        `The ${outcome.header} condition does not hold for the image of ${deviceId} in snapshot ${snapshotId}`,
        { field: outcome.header.toLowerCase() },
      ),
      path,
      common,
    );
  }
  if (outcome.kind === "not-modified") return new Response(null, { status: 304, headers: common });
  const rangeHeader = request.headers.get("range");
  const ranges: RangeRequest = outcome.honourRange
    ? parseRange(rangeHeader, sizeBytes)
    : { kind: "whole" };
  if (ranges.kind === "unsatisfiable") {
    const detail = ranges.reason === "too-many"
      ? `The Range header holds more than ${MAX_RANGES} ranges; ask for fewer per request`
      : `The range ${rangeHeader} is beyond the image of ${sizeBytes} bytes`;
    return problemResponse(new ServiceError("RANGE_NOT_SATISFIABLE", detail), path, {
      ...common,
      "content-range": `bytes */${sizeBytes}`,
    });
  }
  const head = request.method === "HEAD";
  const read: ReadAt = (at, into) => driver.readImage(snapshotId, deviceId, at, into);
  if (ranges.kind === "partial" && ranges.ranges.length > 1) {
    const body = multipartByteranges(ranges.ranges, sizeBytes, { partType: PART_TYPE });
    const headers = {
      ...common,
      "content-type": body.contentType,
      "content-length": String(body.lengthBytes),
    };
    if (head) return new Response(null, { status: 206, headers });
    const first = ranges.ranges[0];
    const stream = body.stream(await primed(read, first.offset, first.length), {
      pieceBytes: READ_PIECE_BYTES,
    });
    return new Response(stream, { status: 206, headers });
  }
  const range = ranges.kind === "partial" ? ranges.ranges[0] : { offset: 0, length: sizeBytes };
  const headers: Record<string, string> = {
    ...common,
    "content-type": PART_TYPE,
    "content-length": String(range.length),
  };
  const status = ranges.kind === "partial" ? 206 : 200;
  if (status === 206) {
    headers["content-range"] = `bytes ${range.offset}-${
      range.offset + range.length - 1
    }/${sizeBytes}`;
  }
  if (head || range.length === 0) return new Response(null, { status, headers });
  const stream = rangeStream(await primed(read, range.offset, range.length), range);
  return new Response(stream, { status, headers });
}
