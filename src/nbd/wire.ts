/**
 * The NBD wire messages, each declared once as a packed big-endian layout
 * (src/layout). The handshake encodes and decodes whole values; the
 * transmission hot path reads and writes single fields through a DataView at
 * the offsets derived here from the same layouts, so no offset is written by
 * hand twice.
 *
 * @module
 */

import { bytes, packed, u16be, u32be, u64be, u64beBigint } from "../layout/mod.ts";

/** Server greeting: NBDMAGIC, IHAVEOPT, handshake flags. */
export const Greeting = packed({ magic: u64beBigint, optsMagic: u64beBigint, flags: u16be });

/** Client flags, sent once after the greeting. */
export const ClientFlags = packed({ flags: u32be });

/** Header of every option the client sends; `length` bytes of data follow. */
export const OptionHeader = packed({ magic: u64beBigint, option: u32be, length: u32be });

/** Header of every option reply; `length` bytes of data follow. */
export const OptionReplyHeader = packed({
  magic: u64beBigint,
  option: u32be,
  type: u32be,
  length: u32be,
});

/** The reply that ends NBD_OPT_EXPORT_NAME (124 zero bytes follow unless NO_ZEROES). */
export const ExportNameReply = packed({ size: u64be, flags: u16be });

/** Number of zero bytes after {@link ExportNameReply} when the client did not ask for NO_ZEROES. */
export const EXPORT_NAME_ZEROES = 124;

/** NBD_REP_INFO payload of type NBD_INFO_EXPORT. */
export const InfoExport = packed({ type: u16be, size: u64be, flags: u16be });

/** NBD_REP_INFO payload of type NBD_INFO_BLOCK_SIZE. */
export const InfoBlockSize = packed({
  type: u16be,
  minimum: u32be,
  preferred: u32be,
  maximum: u32be,
});

/** A transmission request; WRITE data follows. The cookie is opaque and echoed back. */
export const Request = packed({
  magic: u32be,
  flags: u16be,
  type: u16be,
  cookie: bytes(8),
  offset: u64be,
  length: u32be,
});

/** A simple reply; READ data follows when there is no error. */
export const SimpleReply = packed({ magic: u32be, error: u32be, cookie: bytes(8) });

/** Header of a structured reply chunk; `length` bytes of payload follow. */
export const ChunkHeader = packed({
  magic: u32be,
  flags: u16be,
  type: u16be,
  cookie: bytes(8),
  length: u32be,
});

/** Start of an NBD_REPLY_TYPE_OFFSET_DATA payload; the data follows. */
export const OffsetDataPrefix = packed({ offset: u64be });

/** Payload of an NBD_REPLY_TYPE_OFFSET_HOLE chunk. */
export const OffsetHole = packed({ offset: u64be, holeSize: u32be });

/** Start of an NBD_REPLY_TYPE_ERROR payload; the message follows. */
export const ErrorPrefix = packed({ error: u32be, messageLength: u16be });

/** Start of an NBD_REPLY_TYPE_BLOCK_STATUS payload; descriptors follow. */
export const BlockStatusPrefix = packed({ contextId: u32be });

/** One extent of an NBD_REPLY_TYPE_BLOCK_STATUS payload. */
export const BlockDescriptor = packed({ length: u32be, flags: u32be });

/** Field offsets of {@link Request}, for the hot path. */
export const REQ = {
  size: Request.size,
  magic: Request.offsetOf("magic"),
  flags: Request.offsetOf("flags"),
  type: Request.offsetOf("type"),
  cookie: Request.offsetOf("cookie"),
  offset: Request.offsetOf("offset"),
  length: Request.offsetOf("length"),
} as const;

/** Field offsets of {@link SimpleReply}, for the hot path. */
export const SIMPLE = {
  size: SimpleReply.size,
  magic: SimpleReply.offsetOf("magic"),
  error: SimpleReply.offsetOf("error"),
  cookie: SimpleReply.offsetOf("cookie"),
} as const;

/** Field offsets of {@link ChunkHeader}, for the hot path. */
export const CHUNK = {
  size: ChunkHeader.size,
  magic: ChunkHeader.offsetOf("magic"),
  flags: ChunkHeader.offsetOf("flags"),
  type: ChunkHeader.offsetOf("type"),
  cookie: ChunkHeader.offsetOf("cookie"),
  length: ChunkHeader.offsetOf("length"),
} as const;

/** Bytes in front of READ data in a structured OFFSET_DATA chunk (header + offset). */
export const OFFSET_DATA_OVERHEAD = ChunkHeader.size + OffsetDataPrefix.size;

/**
 * Room reserved in front of every READ buffer so that either reply header
 * (simple or OFFSET_DATA) can be written in place and header and data leave
 * in one socket write.
 */
export const READ_HEADROOM = Math.max(SimpleReply.size, OFFSET_DATA_OVERHEAD);

/** Writes the u64 `value` (a safe integer) big-endian at `offset` of `view`. */
export function setU64(view: DataView, offset: number, value: number): void {
  view.setUint32(offset, Math.floor(value / 0x100000000));
  view.setUint32(offset + 4, value >>> 0);
}

/**
 * Reads a u64 big-endian at `offset` of `view` as a number. Values beyond
 * 2^53 lose precision but stay beyond any export size, so range checks
 * against a size still refuse them.
 */
export function getU64(view: DataView, offset: number): number {
  return view.getUint32(offset) * 0x100000000 + view.getUint32(offset + 4);
}
