/**
 * The request slot between one Worker and the owner (the main thread): a
 * SharedArrayBuffer holding one request or its answer at a time. The Worker
 * writes the request, sets STATE to ASKED and notifies, then blocks in
 * Atomics.wait until the owner, which waits with Atomics.waitAsync and so
 * keeps serving everything else meanwhile, sets ANSWERED. A Worker serves
 * one connection and asks one thing at a time, so one slot per Worker is
 * enough and no request ever queues behind another Worker's.
 *
 * Layout: Int32 STATE, OP, STATUS, HANDLE, DATA_LENGTH, FLAGS; Float64
 * OFFSET and LENGTH from byte 32; the data area (payloads, UTF-8 JSON) from
 * byte 64. Errors cross as JSON `{ code?, errno?, message }` and become a
 * ServiceError of the same code again, so the NBD error reply is the one
 * the owner's export would have caused.
 *
 * @module
 */

import { type ErrnoName, type ErrorCode, ServiceError } from "../../errors.ts";

/** Bytes of the data area of a slot: the largest piece of a delegated READ or WRITE. */
export const SLOT_DATA_BYTES = 4 << 20;
const HEADER_BYTES = 64;

/** Int32 fields of a slot. */
const F = { STATE: 0, OP: 1, STATUS: 2, HANDLE: 3, DATA_LENGTH: 4, FLAGS: 5 } as const;
const IDLE = 0;
const ASKED = 1;
const ANSWERED = 2;

/** What a Worker asks of the owner. */
export const Op = {
  LOG: 1,
  LIST: 2,
  GET: 3,
  DEFAULT_NAME: 4,
  RELEASE: 5,
  META_CONTEXTS: 6,
  READ: 7,
  WRITE: 8,
  FLUSH: 9,
  TRIM: 10,
  WRITE_ZEROES: 11,
  BLOCK_STATUS: 12,
  PREPARE_WRITE: 13,
  VIEW: 14,
  COUNT: 15,
} as const;

/** A request as the owner's handler sees it. */
export interface SlotRequest {
  /** One of {@link Op}. */
  op: number;
  /** The export handle (from GET). */
  handle: number;
  /** Byte offset. */
  offset: number;
  /** Byte length. */
  length: number;
  /** Op-specific flags. */
  flags: number;
  /** The request's data (a view of the slot: copy what must outlive the handler). */
  data: Uint8Array;
}

/** A new slot's memory. */
export function newSlot(): SharedArrayBuffer {
  return new SharedArrayBuffer(HEADER_BYTES + SLOT_DATA_BYTES);
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The Worker's end of a slot. */
export class SlotClient {
  readonly #ints: Int32Array;
  readonly #numbers: Float64Array;
  /** The data area. */
  readonly data: Uint8Array;

  /** The client of `buffer` (from {@link newSlot}). */
  constructor(buffer: SharedArrayBuffer) {
    this.#ints = new Int32Array(buffer, 0, 8);
    this.#numbers = new Float64Array(buffer, 32, 2);
    this.data = new Uint8Array(buffer, HEADER_BYTES, SLOT_DATA_BYTES);
  }

  /**
   * Asks the owner and blocks until it answers; returns the answer's data
   * length (its bytes are in {@link SlotClient.data}). Throws what the
   * owner's handler threw. `dataLength` bytes of {@link SlotClient.data}
   * were filled by the caller.
   */
  call(
    op: number,
    fields: {
      handle?: number;
      offset?: number;
      length?: number;
      flags?: number;
      dataLength?: number;
    },
  ): number {
    const ints = this.#ints;
    ints[F.OP] = op;
    ints[F.HANDLE] = fields.handle ?? 0;
    ints[F.FLAGS] = fields.flags ?? 0;
    ints[F.DATA_LENGTH] = fields.dataLength ?? 0;
    this.#numbers[0] = fields.offset ?? 0;
    this.#numbers[1] = fields.length ?? 0;
    Atomics.store(ints, F.STATE, ASKED);
    Atomics.notify(ints, F.STATE);
    while (Atomics.load(ints, F.STATE) === ASKED) Atomics.wait(ints, F.STATE, ASKED);
    Atomics.store(ints, F.STATE, IDLE);
    const length = ints[F.DATA_LENGTH];
    if (ints[F.STATUS] !== 0) throw errorFrom(decoder.decode(this.data.subarray(0, length)));
    return length;
  }

  /** {@link SlotClient.call} with a JSON request body (or none) and a JSON answer. */
  callJson<T>(op: number, fields: { handle?: number; body?: unknown } = {}): T {
    const dataLength = fields.body === undefined ? 0 : this.#putJson(fields.body);
    const length = this.call(op, { handle: fields.handle, dataLength });
    return length === 0
      ? undefined as T
      : JSON.parse(decoder.decode(this.data.subarray(0, length)));
  }

  /** Writes `value` as JSON into the data area; returns its length. */
  #putJson(value: unknown): number {
    const { written } = encoder.encodeInto(JSON.stringify(value), this.data);
    return written;
  }
}

/**
 * Serves `buffer`'s requests with `handler` until `stop()` is true (checked
 * whenever the slot is notified). The handler returns the answer: nothing,
 * a byte count it wrote into the data area, or a value sent as JSON.
 */
export async function serveSlot(
  buffer: SharedArrayBuffer,
  handler: (request: SlotRequest, data: Uint8Array) => Promise<number | { json: unknown } | void>,
  stop: () => boolean,
): Promise<void> {
  const ints = new Int32Array(buffer, 0, 8);
  const numbers = new Float64Array(buffer, 32, 2);
  const data = new Uint8Array(buffer, HEADER_BYTES, SLOT_DATA_BYTES);
  while (!stop()) {
    const state = Atomics.load(ints, F.STATE);
    if (state !== ASKED) {
      const wait = Atomics.waitAsync(ints, F.STATE, state);
      if (wait.async) await wait.value;
      continue;
    }
    const request: SlotRequest = {
      op: ints[F.OP],
      handle: ints[F.HANDLE],
      offset: numbers[0],
      length: numbers[1],
      flags: ints[F.FLAGS],
      data: data.subarray(0, ints[F.DATA_LENGTH]),
    };
    let status = 0;
    let length = 0;
    try {
      const answer = await handler(request, data);
      if (typeof answer === "number") length = answer;
      else if (answer !== undefined) {
        length = encoder.encodeInto(JSON.stringify(answer.json), data).written;
      }
    } catch (error) {
      status = 1;
      length = encoder.encodeInto(JSON.stringify(errorJson(error)), data).written;
    }
    ints[F.STATUS] = status;
    ints[F.DATA_LENGTH] = length;
    Atomics.store(ints, F.STATE, ANSWERED);
    Atomics.notify(ints, F.STATE);
  }
}

/** Wakes {@link serveSlot} so that it checks `stop()`. */
export function wakeSlot(buffer: SharedArrayBuffer): void {
  Atomics.notify(new Int32Array(buffer, 0, 8), F.STATE);
}

function errorJson(error: unknown): { code?: ErrorCode; errno?: ErrnoName; message: string } {
  if (error instanceof ServiceError) {
    return { code: error.code, errno: error.errno, message: error.message };
  }
  return { message: error instanceof Error ? error.message : String(error) };
}

function errorFrom(text: string): Error {
  const { code, errno, message } = JSON.parse(text) as ReturnType<typeof errorJson>;
  return code === undefined ? new Error(message) : new ServiceError(code, message, { errno });
}
