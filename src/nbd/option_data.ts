/**
 * A bounds-checked cursor over the data of one handshake option, for the
 * variable-length payloads of NBD_OPT_INFO/GO and the meta context options.
 * Every read returns undefined instead of running past the end, so a
 * malformed option becomes NBD_REP_ERR_INVALID, never an exception.
 *
 * @module
 */

import { Limits } from "./constants.ts";

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** Cursor over option data. */
export class OptionData {
  #bytes: Uint8Array;
  #view: DataView;
  #position = 0;

  /** A cursor at the start of `bytes`. */
  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** Bytes left after the cursor. */
  get remaining(): number {
    return this.#bytes.length - this.#position;
  }

  /** The next big-endian u16, or undefined past the end. */
  u16(): number | undefined {
    if (this.remaining < 2) return undefined;
    const value = this.#view.getUint16(this.#position);
    this.#position += 2;
    return value;
  }

  /** The next big-endian u32, or undefined past the end. */
  u32(): number | undefined {
    if (this.remaining < 4) return undefined;
    const value = this.#view.getUint32(this.#position);
    this.#position += 4;
    return value;
  }

  /**
   * The next `length` bytes as a protocol string, or undefined when they run
   * past the end, exceed 4096 bytes, are not UTF-8 or contain NUL.
   */
  string(length: number): string | undefined {
    if (length > this.remaining || length > Limits.MAX_STRING_BYTES) return undefined;
    const raw = this.#bytes.subarray(this.#position, this.#position + length);
    this.#position += length;
    if (raw.includes(0)) return undefined;
    try {
      return strictUtf8.decode(raw);
    } catch {
      return undefined;
    }
  }
}
