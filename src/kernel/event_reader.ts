/**
 * One internal reader per snapshot drains the module's event queue
 * (SNAPSHOT_WAIT_EVENT) into the snapshot's {@link EventLog}, which every
 * consumer then reads after an id: nobody takes an event from anybody.
 *
 * Design note:
 * - The kernel call runs on a {@link BlockingIoctl} (a worker thread), one
 *   call in flight per watched snapshot, started again as soon as one ends.
 * - Each call asks for at most {@link EventReaderOptions.sliceMs} (250 ms):
 *   the module holds a reference to the snapshot while a wait sleeps, so a
 *   destroyed snapshot (its image, its difference storage) is released
 *   within a slice; on the out-of-tree module, which reads `timeout_ms` as
 *   jiffies, a slice lasts up to 1 s on a 250 Hz kernel. Events are never
 *   lost between slices: the module queues them until the next wait.
 * - A call that ends empty (ENOENT, EINTR) before its slice is over (a fake
 *   that does not block) waits out the rest of the slice, so the loop never
 *   spins. Any other failure stops the reader: waits in progress reject with
 *   the mapped errno and the reader starts again; with nobody waiting, the
 *   failure is kept for the next wait, which rejects with it and restarts
 *   the reader (a persistent failure is then reported once per wait).
 * - Forgetting a snapshot (destroyed) closes its log and stops its reader:
 *   waits in progress reject with NOT_FOUND; the call in flight is ignored
 *   when it ends, within a slice.
 *
 * @module
 */

import type { EventPage, SnapshotEvent, WaitEventsOptions } from "../driver.ts";
import { ServiceError } from "../errors.ts";
import { EventLog } from "../event_log.ts";
import { BlksnapSnapshotEvent, IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT } from "./abi.ts";
import type { BlockingIoctl } from "./blocking_ioctl.ts";
import { ioctlError, KernelErrno } from "./errno.ts";

/** An event as the kernel wrote it. */
export interface RawEvent {
  /** Event code (0 corrupted, 1 no_space). */
  code: number;
  /** `ktime_get()` of the event, nanoseconds of CLOCK_MONOTONIC. */
  timeLabelNs: number;
  /** The event's payload (4064 bytes). */
  data: Uint8Array;
}

/** Turns a kernel event into a driver event (undefined for unknown codes, which are skipped). */
export type DecodeEvent = (raw: RawEvent) => SnapshotEvent | undefined;

/** Options of {@link EventReader}. */
export interface EventReaderOptions {
  /** The longest `timeout_ms` of one kernel wait (default 250). */
  sliceMs?: number;
}

interface Channel {
  uuid: Uint8Array;
  log: EventLog;
  decode: DecodeEvent;
  running: boolean;
  /** The loop while it runs: it ends when its kernel call in flight returns. */
  loop?: Promise<void>;
  failure?: ServiceError;
  stops: Set<AbortController>;
}

/** Reads every watched snapshot's kernel events into its event log. */
export class EventReader {
  #blocking: BlockingIoctl;
  #controlFd: number;
  #sliceMs: number;
  #channels = new Map<string, Channel>();
  #closed = false;

  /** A reader calling SNAPSHOT_WAIT_EVENT on `controlFd` through `blocking`. */
  constructor(blocking: BlockingIoctl, controlFd: number, options: EventReaderOptions = {}) {
    this.#blocking = blocking;
    this.#controlFd = controlFd;
    this.#sliceMs = Math.max(1, options.sliceMs ?? 250);
  }

  /** Starts reading snapshot `id`'s events (its 16 uuid bytes) unless already reading. */
  watch(id: string, uuid: Uint8Array, decode: DecodeEvent): void {
    if (this.#closed || this.#channels.has(id)) return;
    const channel: Channel = {
      uuid,
      log: new EventLog(),
      decode,
      running: false,
      stops: new Set(),
    };
    this.#channels.set(id, channel);
    this.#run(id, channel);
  }

  /** True while snapshot `id` is watched. */
  watching(id: string): boolean {
    return this.#channels.has(id);
  }

  /**
   * The events of snapshot `id` after `options.after` (see EventLog.wait).
   * NOT_FOUND when not watched or forgotten meanwhile, UNAVAILABLE once
   * closed, the mapped errno when the kernel wait fails.
   */
  async wait(id: string, options: WaitEventsOptions): Promise<EventPage> {
    if (this.#closed) throw new ServiceError("UNAVAILABLE", "The kernel driver is closed");
    const channel = this.#channels.get(id);
    if (!channel) throw new ServiceError("NOT_FOUND", `No events are read for snapshot ${id}`);
    if (channel.failure) {
      const failure = channel.failure;
      channel.failure = undefined;
      this.#run(id, channel);
      throw failure;
    }
    const stop = new AbortController();
    channel.stops.add(stop);
    const signal = options.signal ? AbortSignal.any([options.signal, stop.signal]) : stop.signal;
    try {
      const page = await channel.log.wait({ ...options, signal });
      if (stop.signal.aborted) throw stop.signal.reason;
      return page;
    } finally {
      channel.stops.delete(stop);
    }
  }

  #stopWaits(channel: Channel, reason: ServiceError): void {
    for (const stop of channel.stops) stop.abort(reason);
    channel.stops.clear();
  }

  #run(id: string, channel: Channel): void {
    if (channel.running || this.#closed) return;
    channel.running = true;
    channel.loop = this.#loop(id, channel).finally(() => {
      channel.running = false;
    });
  }

  async #loop(id: string, channel: Channel): Promise<void> {
    while (!this.#closed && this.#channels.get(id) === channel) {
      const started = Date.now();
      const arg = BlksnapSnapshotEvent.encode({
        id: { b: channel.uuid },
        timeout_ms: this.#sliceMs,
        code: 0,
        time_label: 0,
        data: new Uint8Array(0),
      });
      let outcome;
      try {
        outcome = await this.#blocking.call(
          this.#controlFd,
          IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT,
          arg,
        );
      } catch (error) {
        if (this.#channels.get(id) !== channel) return;
        this.#fail(
          channel,
          error instanceof ServiceError ? error : new ServiceError(
            "INTERNAL",
            `Cannot wait for events of snapshot ${id}: ${error}`,
            { cause: error },
          ),
        );
        return;
      }
      if (this.#closed || this.#channels.get(id) !== channel) return;
      const { result, errno } = outcome;
      if (result >= 0) {
        const decoded = BlksnapSnapshotEvent.decode(arg);
        const event = channel.decode({
          code: decoded.code,
          timeLabelNs: decoded.time_label,
          data: decoded.data.slice(),
        });
        if (event) channel.log.append(event);
      } else if (errno === KernelErrno.ENOENT || errno === KernelErrno.EINTR) {
        const rest = this.#sliceMs - (Date.now() - started);
        if (rest > 0) await new Promise((resolve) => setTimeout(resolve, rest));
      } else {
        this.#fail(
          channel,
          ioctlError({
            what: `Cannot wait for events of snapshot ${id}`,
            request: IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT,
            requestName: "SNAPSHOT_WAIT_EVENT",
            errno,
          }),
        );
        if (channel.failure) return;
      }
    }
  }

  /** Hands `failure` to the waits in progress (the loop goes on), or keeps it for the next. */
  #fail(channel: Channel, failure: ServiceError): void {
    if (channel.stops.size > 0) this.#stopWaits(channel, failure);
    else channel.failure = failure;
  }

  /**
   * Stops reading snapshot `id` (destroyed): its waits reject with NOT_FOUND,
   * its log closes. Resolves once the kernel wait in flight has returned
   * (within a slice): until then the module holds the snapshot, and with it
   * its devices, so a new snapshot of them would be refused (EBUSY).
   */
  async forget(id: string): Promise<void> {
    const channel = this.#channels.get(id);
    if (!channel) return;
    this.#channels.delete(id);
    channel.log.close();
    this.#stopWaits(
      channel,
      new ServiceError("NOT_FOUND", `Snapshot ${id} was destroyed while waiting for an event`),
    );
    await channel.loop?.catch(() => {});
  }

  /** Rejects every wait with UNAVAILABLE, stops every reader and the blocking-call runner. */
  close(): void {
    this.#closed = true;
    for (const channel of this.#channels.values()) {
      channel.log.close();
      this.#stopWaits(channel, new ServiceError("UNAVAILABLE", "The kernel driver was closed"));
    }
    this.#channels.clear();
    this.#blocking.close();
  }
}
