/**
 * Field types for binary layouts: fixed-size scalars with an explicit byte
 * order, fixed byte arrays and NUL-padded strings. A {@link FieldType} knows
 * its size and C alignment and reads or writes itself through a DataView.
 *
 * u64 fields decode to `number` and refuse values above
 * `Number.MAX_SAFE_INTEGER` (sizes, offsets and user-space addresses all fit);
 * opaque 64-bit values such as NBD cookies use the `bigint` variants.
 *
 * @module
 */

/** A fixed-size field: its size and alignment in bytes, and how to read and write it. */
export interface FieldType<T> {
  /** Size in bytes. */
  readonly size: number;
  /** Alignment in bytes under the C rules of x86_64. */
  readonly align: number;
  /** Reads the value at `offset` of `view`. */
  read(view: DataView, offset: number): T;
  /** Writes `value` at `offset` of `view`; throws RangeError when it does not fit. */
  write(view: DataView, offset: number, value: T): void;
}

/** The value type a field reads and writes. */
// deno-lint-ignore no-explicit-any
export type FieldValue<F> = F extends FieldType<infer T> ? T : any;

function checkInteger(value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`${value} is not an integer in [${min}, ${max}]`);
  }
}

function integer(
  size: 1 | 2 | 4,
  signed: boolean,
  littleEndian: boolean,
): FieldType<number> {
  const bits = size * 8;
  const min = signed ? -(2 ** (bits - 1)) : 0;
  const max = signed ? 2 ** (bits - 1) - 1 : 2 ** bits - 1;
  const getters = {
    1: signed ? DataView.prototype.getInt8 : DataView.prototype.getUint8,
    2: signed ? DataView.prototype.getInt16 : DataView.prototype.getUint16,
    4: signed ? DataView.prototype.getInt32 : DataView.prototype.getUint32,
  } as const;
  const setters = {
    1: signed ? DataView.prototype.setInt8 : DataView.prototype.setUint8,
    2: signed ? DataView.prototype.setInt16 : DataView.prototype.setUint16,
    4: signed ? DataView.prototype.setInt32 : DataView.prototype.setUint32,
  } as const;
  const get = getters[size];
  const set = setters[size];
  return {
    size,
    align: size,
    read: (view, offset) => get.call(view, offset, littleEndian),
    write: (view, offset, value) => {
      checkInteger(value, min, max);
      set.call(view, offset, value, littleEndian);
    },
  };
}

function bigint64(signed: boolean, littleEndian: boolean): FieldType<bigint> {
  const min = signed ? -(1n << 63n) : 0n;
  const max = signed ? (1n << 63n) - 1n : (1n << 64n) - 1n;
  return {
    size: 8,
    align: 8,
    read: (view, offset) =>
      signed ? view.getBigInt64(offset, littleEndian) : view.getBigUint64(offset, littleEndian),
    write: (view, offset, value) => {
      if (value < min || value > max) throw new RangeError(`${value} does not fit 64 bits`);
      if (signed) view.setBigInt64(offset, value, littleEndian);
      else view.setBigUint64(offset, value, littleEndian);
    },
  };
}

function safe64(signed: boolean, littleEndian: boolean): FieldType<number> {
  const big = bigint64(signed, littleEndian);
  const min = signed ? Number.MIN_SAFE_INTEGER : 0;
  return {
    size: 8,
    align: 8,
    read: (view, offset) => {
      const value = big.read(view, offset);
      const result = Number(value);
      if (!Number.isSafeInteger(result)) {
        throw new RangeError(`64-bit value ${value} is beyond the safe integer range`);
      }
      return result;
    },
    write: (view, offset, value) => {
      checkInteger(value, min, Number.MAX_SAFE_INTEGER);
      big.write(view, offset, BigInt(value));
    },
  };
}

/** Unsigned 8-bit integer. */
export const u8: FieldType<number> = integer(1, false, true);
/** Signed 8-bit integer. */
export const i8: FieldType<number> = integer(1, true, true);
/** Unsigned 16-bit little-endian integer. */
export const u16le: FieldType<number> = integer(2, false, true);
/** Unsigned 16-bit big-endian integer. */
export const u16be: FieldType<number> = integer(2, false, false);
/** Unsigned 32-bit little-endian integer. */
export const u32le: FieldType<number> = integer(4, false, true);
/** Unsigned 32-bit big-endian integer. */
export const u32be: FieldType<number> = integer(4, false, false);
/** Signed 32-bit little-endian integer. */
export const i32le: FieldType<number> = integer(4, true, true);
/** Signed 32-bit big-endian integer. */
export const i32be: FieldType<number> = integer(4, true, false);
/** Unsigned 64-bit little-endian integer as a safe `number`. */
export const u64le: FieldType<number> = safe64(false, true);
/** Unsigned 64-bit big-endian integer as a safe `number`. */
export const u64be: FieldType<number> = safe64(false, false);
/** Signed 64-bit little-endian integer as a safe `number`. */
export const i64le: FieldType<number> = safe64(true, true);
/** Unsigned 64-bit little-endian integer as a `bigint` (opaque values). */
export const u64leBigint: FieldType<bigint> = bigint64(false, true);
/** Unsigned 64-bit big-endian integer as a `bigint` (opaque values such as NBD cookies). */
export const u64beBigint: FieldType<bigint> = bigint64(false, false);

/**
 * A fixed array of `length` bytes. Reading returns a view into the source
 * (no copy); writing copies and zero-fills the rest when the value is shorter.
 */
export function bytes(length: number): FieldType<Uint8Array> {
  return {
    size: length,
    align: 1,
    read: (view, offset) => new Uint8Array(view.buffer, view.byteOffset + offset, length),
    write: (view, offset, value) => {
      if (value.length > length) {
        throw new RangeError(`${value.length} bytes do not fit a ${length}-byte field`);
      }
      const target = new Uint8Array(view.buffer, view.byteOffset + offset, length);
      target.set(value);
      target.fill(0, value.length);
    },
  };
}

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder();

/**
 * A NUL-padded string of at most `length` bytes (UTF-8), as C's `char[length]`.
 * Reading stops at the first NUL; writing refuses strings that leave no room
 * for a terminating NUL unless `terminated` is false.
 */
export function cString(length: number, options: { terminated?: boolean } = {}): FieldType<string> {
  const room = options.terminated === false ? length : length - 1;
  return {
    size: length,
    align: 1,
    read: (view, offset) => {
      const raw = new Uint8Array(view.buffer, view.byteOffset + offset, length);
      const end = raw.indexOf(0);
      return utf8Decoder.decode(end === -1 ? raw : raw.subarray(0, end));
    },
    write: (view, offset, value) => {
      const encoded = utf8Encoder.encode(value);
      if (encoded.length > room) {
        throw new RangeError(`"${value}" is longer than ${room} bytes`);
      }
      const target = new Uint8Array(view.buffer, view.byteOffset + offset, length);
      target.set(encoded);
      target.fill(0, encoded.length);
    },
  };
}

/** A fixed-length array of `count` elements of one field type. */
export function array<T>(element: FieldType<T>, count: number): FieldType<T[]> {
  return {
    size: element.size * count,
    align: element.align,
    read: (view, offset) => {
      const values: T[] = [];
      for (let i = 0; i < count; i++) values.push(element.read(view, offset + i * element.size));
      return values;
    },
    write: (view, offset, value) => {
      if (value.length !== count) {
        throw new RangeError(`array of ${count} elements given ${value.length}`);
      }
      value.forEach((item, i) => element.write(view, offset + i * element.size, item));
    },
  };
}
