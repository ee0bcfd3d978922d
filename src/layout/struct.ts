/**
 * Struct layouts declared once: C-aligned ({@link struct}) or packed
 * ({@link packed}). A {@link Layout} yields its size, the offset of each field,
 * and encode/decode for whole values, and is itself a field type, so layouts
 * nest (a `blksnap_uuid` inside `blksnap_snapshot_create`).
 *
 * @example
 * ```ts
 * import { struct, u16le } from "./mod.ts";
 * const Version = struct({ major: u16le, minor: u16le, revision: u16le, build: u16le });
 * const bytes = Version.encode({ major: 7, minor: 0, revision: 0, build: 0 });
 * Version.decode(bytes).major; // 7
 * ```
 *
 * @module
 */

import type { FieldType, FieldValue } from "./field.ts";

/** A map from field name to field type, in declaration order. */
// deno-lint-ignore no-explicit-any
export type FieldMap = Record<string, FieldType<any>>;

/** The object type a layout of fields `F` encodes and decodes. */
export type StructValue<F extends FieldMap> = { [K in keyof F]: FieldValue<F[K]> };

/** A struct layout: a field type with named fields and whole-value codecs. */
export interface Layout<F extends FieldMap> extends FieldType<StructValue<F>> {
  /** The field types, in declaration order. */
  readonly fields: F;
  /** Byte offset of the named field. */
  offsetOf(name: keyof F): number;
  /**
   * Encodes `value` into `target` at `offset` (a new zeroed buffer of
   * {@link Layout.size} bytes when `target` is omitted) and returns the target.
   * Padding bytes are left as they are in `target`.
   */
  encode(value: StructValue<F>, target?: Uint8Array, offset?: number): Uint8Array;
  /** Decodes a value from `source` at `offset`; throws RangeError when too short. */
  decode(source: Uint8Array, offset?: number): StructValue<F>;
}

function alignUp(value: number, align: number): number {
  return Math.ceil(value / align) * align;
}

function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function makeLayout<F extends FieldMap>(fields: F, aligned: boolean): Layout<F> {
  const names = Object.keys(fields) as (keyof F & string)[];
  const offsets = new Map<keyof F, number>();
  let cursor = 0;
  let maxAlign = 1;
  for (const name of names) {
    const field = fields[name];
    if (aligned) {
      cursor = alignUp(cursor, field.align);
      maxAlign = Math.max(maxAlign, field.align);
    }
    offsets.set(name, cursor);
    cursor += field.size;
  }
  const size = aligned ? alignUp(cursor, maxAlign) : cursor;
  const entries = names.map((name) => [name, fields[name], offsets.get(name)!] as const);

  function read(view: DataView, offset: number): StructValue<F> {
    const value = {} as StructValue<F>;
    for (const [name, field, fieldOffset] of entries) {
      value[name] = field.read(view, offset + fieldOffset);
    }
    return value;
  }

  function write(view: DataView, offset: number, value: StructValue<F>): void {
    for (const [name, field, fieldOffset] of entries) {
      if (value[name] === undefined) throw new TypeError(`field "${name}" is missing`);
      field.write(view, offset + fieldOffset, value[name]);
    }
  }

  return {
    fields,
    size,
    align: aligned ? maxAlign : 1,
    read,
    write,
    offsetOf(name) {
      const offset = offsets.get(name);
      if (offset === undefined) throw new RangeError(`no field named "${String(name)}"`);
      return offset;
    },
    encode(value, target = new Uint8Array(size), offset = 0) {
      if (target.length - offset < size) {
        throw new RangeError(`${size} bytes needed, ${target.length - offset} available`);
      }
      write(viewOf(target), offset, value);
      return target;
    },
    decode(source, offset = 0) {
      if (source.length - offset < size) {
        throw new RangeError(`${size} bytes needed, ${source.length - offset} available`);
      }
      return read(viewOf(source), offset);
    },
  };
}

/** A struct with C (x86_64) alignment: each field at its natural alignment, size rounded up. */
export function struct<F extends FieldMap>(fields: F): Layout<F> {
  return makeLayout(fields, true);
}

/** A packed struct: fields back to back, no padding (network wire formats). */
export function packed<F extends FieldMap>(fields: F): Layout<F> {
  return makeLayout(fields, false);
}
