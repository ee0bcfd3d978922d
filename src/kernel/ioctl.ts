/**
 * Linux ioctl request numbers (asm-generic/ioctl.h, as on x86_64):
 * `dir << 30 | size << 16 | type << 8 | nr`, with direction none 0, write 1,
 * read 2, read+write 3. Sizes come from the argument's layout, so a request
 * number cannot drift from the struct it carries.
 *
 * @module
 */

/** Anything with a byte size: a layout from `src/layout/`. */
export interface Sized {
  /** Size in bytes. */
  readonly size: number;
}

/** Direction bits of a request number: the user-space view of the transfer. */
export const IocDirection = { none: 0, write: 1, read: 2, readWrite: 3 } as const;

const NR_BITS = 8;
const TYPE_BITS = 8;
const SIZE_BITS = 14;
const SIZE_SHIFT = NR_BITS + TYPE_BITS;
const DIR_SHIFT = SIZE_SHIFT + SIZE_BITS;

function checkField(value: number, bits: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value >= 2 ** bits) {
    throw new RangeError(`ioctl ${what} ${value} does not fit ${bits} bits`);
  }
}

/**
 * The request number for direction `dir`, type `type` (a character code such
 * as `"V"` or a number) and command `nr`, carrying `size` bytes. Throws
 * RangeError when a part does not fit its bit field.
 */
export function ioc(dir: number, type: number | string, nr: number, size: number): number {
  const typeCode = typeof type === "string" ? type.charCodeAt(0) : type;
  checkField(dir, 2, "direction");
  checkField(typeCode, TYPE_BITS, "type");
  checkField(nr, NR_BITS, "number");
  checkField(size, SIZE_BITS, "size");
  // Multiplication instead of `<<`: the result must stay an unsigned number.
  return dir * 2 ** DIR_SHIFT + size * 2 ** SIZE_SHIFT + typeCode * 2 ** NR_BITS + nr;
}

/** `_IO(type, nr)`: a request without an argument. */
export function _IO(type: number | string, nr: number): number {
  return ioc(IocDirection.none, type, nr, 0);
}

/** `_IOR(type, nr, T)`: the kernel writes a `T` to user space. */
export function _IOR(type: number | string, nr: number, layout: Sized): number {
  return ioc(IocDirection.read, type, nr, layout.size);
}

/** `_IOW(type, nr, T)`: the kernel reads a `T` from user space. */
export function _IOW(type: number | string, nr: number, layout: Sized): number {
  return ioc(IocDirection.write, type, nr, layout.size);
}

/** `_IOWR(type, nr, T)`: the kernel reads and writes a `T`. */
export function _IOWR(type: number | string, nr: number, layout: Sized): number {
  return ioc(IocDirection.readWrite, type, nr, layout.size);
}

/** The parts of a request number, for messages and tests. */
export interface RequestParts {
  /** Direction bits (see {@link IocDirection}). */
  dir: number;
  /** Argument size in bytes. */
  size: number;
  /** Type byte. */
  type: number;
  /** Command number. */
  nr: number;
}

/** Splits a request number into its fields. */
export function parseRequest(request: number): RequestParts {
  return {
    dir: Math.floor(request / 2 ** DIR_SHIFT) & 0x3,
    size: Math.floor(request / 2 ** SIZE_SHIFT) & (2 ** SIZE_BITS - 1),
    type: Math.floor(request / 2 ** NR_BITS) & 0xff,
    nr: request & 0xff,
  };
}

/** The request number as `0xC0205601`, for messages. */
export function formatRequest(request: number): string {
  return `0x${request.toString(16).toUpperCase().padStart(8, "0")}`;
}
