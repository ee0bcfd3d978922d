/**
 * The transmission phase (doc/proto.md "Transmission"; nbdkit's protocol.c
 * has the same validate-then-execute shape). One loop reads request headers
 * from the reusable buffer, validates each with validateRequest() (validate.ts)
 * before anything is allocated or executed, receives a WRITE's whole payload,
 * and starts the handler without waiting for it: requests run concurrently
 * and replies leave in completion order (out of order for pipelined
 * requests), serialised by the connection's ReplyWriter.
 *
 * Refused requests get their error and the connection goes on; a refused
 * WRITE's payload is read and dropped (up to 64 MiB; beyond that the
 * connection ends, as the specification allows for payloads large enough to
 * be a denial of service). Bad magic or a truncated message ends the
 * connection; requests already received still complete, and a WRITE whose
 * payload did not fully arrive is never executed. Once the export has ended
 * (NbdExport.ended), every later request is refused with NBD_ESHUTDOWN.
 *
 * Memory is bounded per connection: at most 128 requests or 128 MiB of
 * READ/WRITE payload in flight, and reading pauses while more than 64 MiB of
 * replies wait for the client.
 *
 * @module
 */

import { ServiceError } from "../errors.ts";
import { toDescriptors } from "./block_status.ts";
import {
  BASE_ALLOCATION,
  Command as C,
  CommandFlag as F,
  Limits,
  nameOf,
  NBD_REQUEST_MAGIC,
  NbdError as E,
} from "./constants.ts";
import { nbdFailureOf } from "./errno_map.ts";
import type { NbdExport } from "./export.ts";
import type { Session } from "./handshake.ts";
import type { BufferPool } from "./buffer_pool.ts";
import type { NbdLogger } from "./log.ts";
import type { NbdStats } from "./stats.ts";
import { planRead, type ReadRun } from "./read_plan.ts";
import type { ReadProbeBoard } from "./read_probes.ts";
import { type ContextStatus, ReplySender, RequestHeader } from "./replies.ts";
import type { ReplyWriter } from "./reply_writer.ts";
import type { SocketReader } from "./socket_reader.ts";
import { type Refusal, validateRequest } from "./validate.ts";
import { getU64, READ_HEADROOM, REQ } from "./wire.ts";

const MAX_IN_FLIGHT = 128;
const MAX_IN_FLIGHT_BYTES = 128 * 1024 * 1024;
const MAX_QUEUED_REPLY_BYTES = 64 * 1024 * 1024;
/** Structured READs this long or longer ask the export where the holes are. */
const SPARSE_READ_MIN = 64 * 1024;
/** READs this large or larger are spliced where the export and stream can (smaller ones are copied). */
const PIPED_READ_MIN = 32 * 1024;
const ZERO_WRITE_BYTES = 1024 * 1024;
/** READs this large or larger that the export serves at once are sent before the next request is read. */
const HOT_READ_MIN = 32 * 1024;
const SHUTTING_DOWN: Refusal = { error: E.NBD_ESHUTDOWN, reason: "the server is shutting down" };
const EXPORT_ENDED: Refusal = { error: E.NBD_ESHUTDOWN, reason: "the export is gone" };

let zeroes: Uint8Array | undefined;

/** Dependencies of a {@link Transmission}. */
export interface TransmissionOptions {
  /** Log sink. */
  logger: NbdLogger;
  /** Where requests are counted (none by default). */
  stats?: NbdStats;
  /** Where READs are shown to armed read probes (none by default). */
  readProbes?: ReadProbeBoard;
}

/** The transmission phase of one connection. */
export class Transmission {
  #session: Session;
  #export: NbdExport;
  #reader: SocketReader;
  #writer: ReplyWriter;
  #pool: BufferPool;
  #replies: ReplySender;
  #log: NbdLogger;
  #stats: NbdStats | undefined;
  #readProbes: ReadProbeBoard | undefined;
  #maximum: number;
  #inFlight = 0;
  #inFlightBytes = 0;
  #waiters: { ready: () => boolean; wake: () => void }[] = [];
  #closing = false;

  /** Serves `session` over `reader`/`writer` (from the handshake). */
  constructor(
    session: Session,
    stream: { reader: SocketReader; writer: ReplyWriter; pool: BufferPool },
    options: TransmissionOptions,
  ) {
    this.#session = session;
    this.#export = session.export;
    this.#reader = stream.reader;
    this.#writer = stream.writer;
    this.#pool = stream.pool;
    this.#replies = new ReplySender(stream.writer);
    this.#log = options.logger;
    this.#stats = options.stats;
    this.#readProbes = options.readProbes;
    this.#maximum = session.blockSize.maximum;
  }

  /**
   * Serves requests until NBD_CMD_DISC or the end of the stream, then waits
   * for the requests in flight and their replies. Throws ServiceError
   * INVALID_ARGUMENT on a protocol violation (after the same wait).
   */
  async run(): Promise<void> {
    const reader = this.#reader;
    const view = reader.view;
    try {
      while (this.#writer.failure === undefined) {
        if (this.#inFlight >= MAX_IN_FLIGHT || this.#inFlightBytes >= MAX_IN_FLIGHT_BYTES) {
          await this.#until(() =>
            this.#inFlight < MAX_IN_FLIGHT && this.#inFlightBytes < MAX_IN_FLIGHT_BYTES
          );
        }
        if (this.#writer.queuedBytes > MAX_QUEUED_REPLY_BYTES) await this.#writer.drained();
        if (reader.buffered < REQ.size && !(await reader.fill(REQ.size))) return;
        const at = reader.take(REQ.size);
        const magic = view.getUint32(at + REQ.magic);
        if (magic !== NBD_REQUEST_MAGIC) {
          throw violation(`bad request magic 0x${magic.toString(16)}`);
        }
        const request = new RequestHeader(
          view.getUint16(at + REQ.type),
          view.getUint16(at + REQ.flags),
          view.getUint32(at + REQ.cookie),
          view.getUint32(at + REQ.cookie + 4),
          getU64(view, at + REQ.offset),
          view.getUint32(at + REQ.length),
        );
        if (request.type === C.NBD_CMD_DISC) return;
        const refusal = this.#closing
          ? SHUTTING_DOWN
          : this.#export.ended?.aborted
          ? EXPORT_ENDED
          : validateRequest(request, this.#session);
        let data: Uint8Array | undefined;
        if (request.type === C.NBD_CMD_WRITE) {
          if (refusal !== undefined) {
            if (request.length > Limits.MAX_DISCARD_BYTES) {
              throw violation(`refused NBD_CMD_WRITE of ${request.length} bytes`);
            }
            await reader.discard(request.length);
          } else {
            data = this.#pool.take(request.length);
            await reader.readInto(data);
          }
        }
        if (refusal !== undefined) {
          this.#refuse(request, refusal);
          continue;
        }
        this.#inFlight++;
        if (request.type <= C.NBD_CMD_WRITE) this.#inFlightBytes += request.length;
        this.#execute(request, data);
        if (request.type === C.NBD_CMD_READ && request.length >= HOT_READ_MIN) {
          await this.#sendServedRead();
        }
      }
    } finally {
      await this.#until(() => this.#inFlight === 0);
      await this.#writer.drained();
    }
  }

  /**
   * Stops executing new requests (they get NBD_ESHUTDOWN) and resolves once
   * the requests in flight are done and every reply is written.
   */
  async quiesce(): Promise<void> {
    this.#closing = true;
    await this.#until(() => this.#inFlight === 0);
    await this.#writer.drained();
  }

  /**
   * Sends the reply of a READ its export served at once (a Worker's pread)
   * before the loop reads the next request, while the data is still in the
   * CPU's cache. Otherwise the loop runs through every request already
   * buffered (up to 512) before any handler goes on, and each reply is
   * copied to the socket megabytes later, from memory rather than cache
   * (measured with nbdcopy reads through Workers: 0-16 MiB queued ahead of
   * each reply, and the server's CPU per 4 GiB fell from 100-141 ticks to
   * 56-97 with this wait). The first turn runs the handler's rest (which
   * queues the reply), the second the writer's pump (which starts sending
   * it). A READ still under way (an async export, the owner) has queued
   * nothing by then, and the loop goes on at once. The wait is for the
   * whole reply (for the main thread, whose socket writes are asynchronous,
   * only that keeps the data in cache: 3.2 against 2.9 GiB/s), so a client
   * that stops taking replies stops the reading of its requests too, as a
   * Worker's blocking send does anyway.
   */
  async #sendServedRead(): Promise<void> {
    await null;
    await null;
    if (this.#writer.queuedBytes > 0) await this.#writer.drained();
  }

  #refuse(request: RequestHeader, refusal: Refusal): void {
    this.#stats?.request(request.type, request.length, true);
    this.#log("debug", `nbd: refused ${nameOf("command", request.type)}: ${refusal.reason}`);
    this.#fail(request, refusal.error, refusal.reason);
  }

  #fail(request: RequestHeader, error: number, message: string): void {
    if (this.#session.structured) this.#replies.errorChunk(request, error, message);
    else this.#replies.simple(request, error);
  }

  async #execute(request: RequestHeader, data: Uint8Array | undefined): Promise<void> {
    const exp = this.#export;
    const { offset, length, flags } = request;
    const fua = (flags & F.NBD_CMD_FLAG_FUA) !== 0;
    let failed = false;
    try {
      switch (request.type) {
        case C.NBD_CMD_READ:
          this.#readProbes?.observe(exp.name, offset, length);
          await this.#read(request);
          return;
        case C.NBD_CMD_WRITE:
          try {
            if (length > 0) await exp.write(offset, data!, { fua });
          } finally {
            this.#pool.give(data!);
          }
          break;
        case C.NBD_CMD_FLUSH:
          await exp.flush();
          break;
        case C.NBD_CMD_TRIM:
          if (length > 0) await exp.trim!(offset, length);
          if (fua) await exp.flush();
          break;
        case C.NBD_CMD_WRITE_ZEROES:
          if (length > 0) await this.#writeZeroes(request);
          break;
        case C.NBD_CMD_BLOCK_STATUS:
          await this.#blockStatus(request);
          return;
      }
      this.#replies.simple(request, 0);
    } catch (error) {
      failed = true;
      const failure = nbdFailureOf(error, {
        fastZero: request.type === C.NBD_CMD_WRITE_ZEROES &&
          (flags & F.NBD_CMD_FLAG_FAST_ZERO) !== 0,
        overflowAllowed: request.type === C.NBD_CMD_READ && this.#session.structured,
      });
      this.#log(
        error instanceof ServiceError ? "debug" : "error",
        `nbd: ${nameOf("command", request.type)} at ${offset}+${length} failed: ${failure.message}`,
      );
      this.#fail(request, failure.error, failure.message);
    } finally {
      this.#stats?.request(request.type, length, failed);
      this.#inFlight--;
      if (request.type <= C.NBD_CMD_WRITE) this.#inFlightBytes -= length;
      this.#wake();
    }
  }

  async #read(request: RequestHeader): Promise<void> {
    const exp = this.#export;
    const { offset, length, flags } = request;
    const structured = this.#session.structured;
    if (length === 0) {
      if (structured) this.#replies.none(request);
      else this.#replies.simple(request, 0);
      return;
    }
    if (
      structured && length >= SPARSE_READ_MIN && exp.blockStatus !== undefined &&
      exp.reportsHoles !== false && (flags & F.NBD_CMD_FLAG_DF) === 0
    ) {
      const runs = await this.#holes(request);
      if (runs !== undefined) {
        const data = new Uint8Array(length);
        await Promise.all(
          runs.filter((run) => !run.hole).map((run) =>
            exp.read(
              run.offset,
              data.subarray(run.offset - offset, run.offset - offset + run.length),
            )
          ),
        );
        this.#replies.readRuns(request, runs, data);
        return;
      }
    }
    if (exp.readPiped !== undefined && length >= PIPED_READ_MIN && this.#writer.splices) {
      const piped = await exp.readPiped(offset, length);
      if (piped !== undefined) {
        this.#replies.readPiped(request, piped, structured);
        return;
      }
    }
    const buffer = this.#pool.take(READ_HEADROOM + length);
    try {
      await exp.read(offset, buffer.subarray(READ_HEADROOM));
    } catch (error) {
      this.#pool.give(buffer);
      throw error;
    }
    this.#replies.readData(request, buffer, structured);
  }

  /** The data and hole runs of a READ, or undefined when there is no hole worth sending. */
  async #holes(request: RequestHeader): Promise<ReadRun[] | undefined> {
    try {
      const extents = await this.#export.blockStatus!(
        BASE_ALLOCATION,
        request.offset,
        request.length,
      );
      return planRead(extents, request);
    } catch {
      return undefined;
    }
  }

  async #writeZeroes(request: RequestHeader): Promise<void> {
    const exp = this.#export;
    const { offset, length, flags } = request;
    const fua = (flags & F.NBD_CMD_FLAG_FUA) !== 0;
    const fastZero = (flags & F.NBD_CMD_FLAG_FAST_ZERO) !== 0;
    if (exp.writeZeroes !== undefined) {
      const noHole = (flags & F.NBD_CMD_FLAG_NO_HOLE) !== 0;
      await exp.writeZeroes(offset, length, { noHole, fastZero, fua });
      return;
    }
    if (fastZero) {
      throw new ServiceError(
        "NOT_SUPPORTED",
        "Cannot zero fast: this export can only write zeroes like data",
      );
    }
    zeroes ??= new Uint8Array(ZERO_WRITE_BYTES);
    const step = Math.min(ZERO_WRITE_BYTES, this.#maximum);
    for (let done = 0; done < length; done += step) {
      const count = Math.min(step, length - done);
      await exp.write(offset + done, zeroes.subarray(0, count), { fua: false });
    }
    if (fua) await exp.flush();
  }

  async #blockStatus(request: RequestHeader): Promise<void> {
    const exp = this.#export;
    const { offset, length, flags } = request;
    const query = {
      offset,
      length,
      reqOne: (flags & F.NBD_CMD_FLAG_REQ_ONE) !== 0,
      exportSize: exp.sizeBytes,
    };
    const statuses: ContextStatus[] = [];
    for (const context of this.#session.contexts) {
      const extents = exp.blockStatus === undefined
        ? [{ length, flags: 0 }]
        : await exp.blockStatus(context.name, offset, length);
      statuses.push({ id: context.id, descriptors: toDescriptors(extents, query) });
    }
    this.#replies.blockStatus(request, statuses);
  }

  #until(ready: () => boolean): Promise<void> {
    if (ready()) return Promise.resolve();
    return new Promise((wake) => this.#waiters.push({ ready, wake }));
  }

  #wake(): void {
    if (this.#waiters.length === 0) return;
    this.#waiters = this.#waiters.filter((waiter) => {
      if (!waiter.ready()) return true;
      waiter.wake();
      return false;
    });
  }
}

function violation(what: string): ServiceError {
  return new ServiceError("INVALID_ARGUMENT", `NBD request refused: ${what}`);
}
