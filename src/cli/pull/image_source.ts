/**
 * Where `image read` pulls bytes from: the service's HTTP data route
 * (one GET for up to 256 extents, answered as multipart/byteranges) or the
 * image's NBD export (pipelined READs, and `base:allocation` to skip what
 * the export reports as zeros without reading it). Both yield the bytes of
 * a list of extents as positioned pieces, in order.
 *
 * @module
 */

import type { BlksnapClient } from "../../client/client.ts";
import { ServiceError } from "../../errors.ts";
import { NbdClient } from "../../nbd/client.ts";
import { BASE_ALLOCATION, NBD_STATE_ZERO } from "../../nbd/constants.ts";
import { byterangePieces, type PositionedPiece } from "./byteranges_reader.ts";

/** `length` bytes from byte `offset`. */
export interface ByteExtent {
  /** First byte. */
  offset: number;
  /** Number of bytes. */
  length: number;
}

/** An image to pull from. */
export interface ImageSource {
  /** Image size in bytes. */
  readonly sizeBytes: number;
  /** How the bytes travel, for messages ("HTTP", "NBD"). */
  readonly via: string;
  /**
   * The bytes of `extents` (sorted, disjoint) as positioned pieces, in
   * ascending order; IO when the source ends early.
   */
  read(extents: readonly ByteExtent[]): AsyncIterable<PositionedPiece>;
  /** Extents within `extent` the source reports as reading zeros (sorted); none when unknown. */
  zeroExtents(extent: ByteExtent): Promise<ByteExtent[]>;
  /** Releases connections. */
  close(): Promise<void>;
}

function shortRead(got: number, extent: ByteExtent, why: string): ServiceError {
  return new ServiceError(
    "IO",
    `the image stream ended after ${got} of ${extent.length} bytes at offset ${extent.offset}${
      why ? ` (${why})` : ""
    }`,
  );
}

/** An image read through the service's HTTP data route. */
export async function httpSource(
  client: BlksnapClient,
  image: { snapshotId: string; deviceId: string },
): Promise<ImageSource> {
  const { sizeBytes } = await client.images.locator(image.snapshotId, image.deviceId);
  return {
    sizeBytes,
    via: "HTTP",
    async *read(extents) {
      for (let first = 0; first < extents.length; first += HTTP_RANGES_PER_REQUEST) {
        const batch = extents.slice(first, first + HTTP_RANGES_PER_REQUEST);
        const span = { offset: batch[0].offset, length: sumOf(batch) };
        if (span.length === 0) continue;
        const response = await client.images.read(image.snapshotId, image.deviceId, {
          ranges: batch,
        });
        let got = 0;
        try {
          for await (const piece of byterangePieces(response)) {
            got += piece.bytes.length;
            yield piece;
          }
        } catch (error) {
          throw shortRead(got, span, (error as Error).message);
        }
        if (got !== span.length) throw shortRead(got, span, "the service cut the response");
      }
    },
    zeroExtents: () => Promise.resolve([]),
    close: () => Promise.resolve(),
  };
}

/** Ranges asked for per HTTP request (the service answers up to 256 in one multipart body). */
const HTTP_RANGES_PER_REQUEST = 256;

function sumOf(extents: readonly ByteExtent[]): number {
  return extents.reduce((sum, e) => sum + e.length, 0);
}

/** Bytes per NBD READ. */
const NBD_READ_BYTES = 1 << 20;
/** READs kept in flight. */
const NBD_READ_DEPTH = 4;

/** `extent` of the export as positioned pieces, NBD_READ_DEPTH READs in flight. */
async function* nbdPieces(client: NbdClient, extent: ByteExtent): AsyncGenerator<PositionedPiece> {
  const end = extent.offset + extent.length;
  let next = extent.offset;
  const inFlight: Array<Promise<PositionedPiece>> = [];
  const issue = () => {
    const offset = next;
    const bytes = new Uint8Array(Math.min(NBD_READ_BYTES, end - next));
    const read = client.pread(offset, bytes).then(() => ({ offset, bytes }));
    read.catch(() => {}); // Awaited in order below; this only keeps an early failure handled.
    inFlight.push(read);
    next += bytes.length;
  };
  let got = 0;
  try {
    while (next < end && inFlight.length < NBD_READ_DEPTH) issue();
    while (inFlight.length > 0) {
      const piece = await inFlight.shift()!;
      if (next < end) issue();
      got += piece.bytes.length;
      yield piece;
    }
  } catch (error) {
    throw shortRead(got, extent, (error as Error).message);
  }
}

/** An image read from its NBD export at `uri`. */
export async function nbdSource(uri: string): Promise<ImageSource> {
  const client = await NbdClient.connect(uri, { metaContexts: [BASE_ALLOCATION] });
  return {
    sizeBytes: client.sizeBytes,
    via: "NBD",
    async *read(extents) {
      for (const extent of extents) {
        for await (const bytes of nbdPieces(client, extent)) yield bytes;
      }
    },
    async zeroExtents(extent) {
      if (!client.contexts.has(BASE_ALLOCATION)) return [];
      const zeros: ByteExtent[] = [];
      const end = extent.offset + extent.length;
      for (let at = extent.offset; at < end;) {
        const before = at;
        const extents = await client.blockStatus(
          BASE_ALLOCATION,
          at,
          Math.min(end - at, 0x80000000),
        );
        for (const { length, flags } of extents) {
          const clipped = Math.min(length, end - at);
          if (clipped <= 0) break;
          if (flags & NBD_STATE_ZERO) {
            const last = zeros.at(-1);
            if (last && last.offset + last.length === at) last.length += clipped;
            else zeros.push({ offset: at, length: clipped });
          }
          at += clipped;
        }
        if (at === before) break; // No progress: treat the rest as data.
      }
      return zeros;
    },
    close: () => client.close(),
  };
}

/** The parts of `extent` outside the sorted, disjoint `holes`. */
export function withoutExtents(extent: ByteExtent, holes: readonly ByteExtent[]): ByteExtent[] {
  const kept: ByteExtent[] = [];
  let at = extent.offset;
  const end = extent.offset + extent.length;
  for (const hole of holes) {
    const start = Math.max(hole.offset, at);
    const stop = Math.min(hole.offset + hole.length, end);
    if (stop <= start) continue;
    if (start > at) kept.push({ offset: at, length: start - at });
    at = stop;
  }
  if (at < end) kept.push({ offset: at, length: end - at });
  return kept;
}
