/**
 * Binary layouts declared once and used for both encoding and decoding:
 * the NBD wire format (packed, big-endian) and the blksnap kernel ABI
 * (C-aligned, little-endian).
 *
 * @module
 */

export * from "./field.ts";
export * from "./struct.ts";
