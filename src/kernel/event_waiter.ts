/**
 * SNAPSHOT_WAIT_EVENT with the caller's timeout kept exactly, and no event
 * lost.
 *
 * The kernel call runs on a {@link BlockingIoctl} (a worker thread). Two
 * things make a plain "one call per waitEvent" wrong: the out-of-tree module
 * passes `timeout_ms` to `wait_event_interruptible_timeout` as jiffies (so a
 * 1000 ms wait lasts 4 s on a 250 Hz kernel), and a call that a caller gave
 * up on may still return an event later. So each caller gets a timer of its
 * own (its timeout plus a small grace for the thread hop), at most one kernel
 * wait per snapshot is in flight, later callers join it, and an event that
 * arrives when nobody waits any more is kept for the next caller. A kernel
 * wait that ends without an event (ENOENT, or EINTR from a signal) is started
 * again while callers still wait.
 *
 * Each kernel wait asks for at most {@link EventWaiterOptions.sliceMs}: the
 * module holds a reference to the snapshot for as long as a wait sleeps, so a
 * destroyed snapshot (its image device, its open difference storage) is only
 * released when the wait in flight returns. Long waits would keep a storage
 * busy (a tmpfs that cannot be unmounted, modules that cannot be unloaded) for
 * up to the caller's whole timeout, four times over on a 250 Hz kernel; short
 * slices bound that to about a second. Events are never lost between slices:
 * the module queues them until the next wait takes them.
 *
 * @module
 */

import { ServiceError } from "../errors.ts";
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

/** Options of {@link EventWaiter}. */
export interface EventWaiterOptions {
  /** Milliseconds added to each caller's timeout for the trip through the worker (default 50). */
  graceMs?: number;
  /** The longest `timeout_ms` of one kernel wait (default 250); longer waits take several. */
  sliceMs?: number;
}

interface Waiter {
  deadline: number;
  timer: ReturnType<typeof setTimeout>;
  resolve: (event: RawEvent | undefined) => void;
  reject: (error: Error) => void;
}

interface Channel {
  uuid: Uint8Array;
  waiters: Waiter[];
  buffered: RawEvent[];
  inFlight: boolean;
}

/** The longest timeout the kernel field holds. */
const MAX_TIMEOUT_MS = 0xffffffff;
/** The longest delay a timer takes (longer ones would fire at once). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Waits for snapshot events on the control device through a blocking-call runner. */
export class EventWaiter {
  #blocking: BlockingIoctl;
  #controlFd: number;
  #graceMs: number;
  #sliceMs: number;
  #channels = new Map<string, Channel>();
  #closed = false;

  constructor(blocking: BlockingIoctl, controlFd: number, options: EventWaiterOptions = {}) {
    this.#blocking = blocking;
    this.#controlFd = controlFd;
    this.#graceMs = options.graceMs ?? 50;
    this.#sliceMs = Math.max(1, options.sliceMs ?? 250);
  }

  /**
   * The next event of snapshot `id` (its 16 uuid bytes), or undefined after
   * `timeoutMs`. Rejects with the mapped errno when the kernel call fails
   * (NOT_FOUND for an unknown snapshot, MODULE_MISMATCH for ENOTTY).
   */
  wait(id: string, uuid: Uint8Array, timeoutMs: number): Promise<RawEvent | undefined> {
    if (this.#closed) {
      return Promise.reject(new ServiceError("UNAVAILABLE", "The kernel driver is closed"));
    }
    let channel = this.#channels.get(id);
    if (!channel) {
      channel = { uuid, waiters: [], buffered: [], inFlight: false };
      this.#channels.set(id, channel);
    }
    const buffered = channel.buffered.shift();
    if (buffered) return Promise.resolve(buffered);
    const target = channel;
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        deadline: Date.now() + timeoutMs,
        timer: setTimeout(() => {
          this.#remove(target, waiter);
          resolve(undefined);
        }, Math.min(MAX_TIMER_MS, timeoutMs + this.#graceMs)),
        resolve,
        reject,
      };
      target.waiters.push(waiter);
      this.#ensureCall(id, target, false);
    });
  }

  #remove(channel: Channel, waiter: Waiter): void {
    const index = channel.waiters.indexOf(waiter);
    if (index >= 0) channel.waiters.splice(index, 1);
    clearTimeout(waiter.timer);
  }

  /** Starts a kernel wait for the channel's callers unless one is running; a restart needs time left. */
  #ensureCall(id: string, channel: Channel, restart: boolean): void {
    if (channel.inFlight || channel.waiters.length === 0 || this.#closed) return;
    const latest = Math.max(...channel.waiters.map((w) => w.deadline));
    const remaining = latest - Date.now();
    if (restart && remaining <= 0) return;
    const timeoutMs = Math.min(this.#sliceMs, MAX_TIMEOUT_MS, Math.max(0, remaining));
    const arg = BlksnapSnapshotEvent.encode({
      id: { b: channel.uuid },
      timeout_ms: timeoutMs,
      code: 0,
      time_label: 0,
      data: new Uint8Array(0),
    });
    channel.inFlight = true;
    this.#blocking.call(this.#controlFd, IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT, arg).then(
      ({ result, errno }) => {
        channel.inFlight = false;
        if (this.#channels.get(id) !== channel) return;
        if (result >= 0) {
          const decoded = BlksnapSnapshotEvent.decode(arg);
          this.#deliver(channel, {
            code: decoded.code,
            timeLabelNs: decoded.time_label,
            data: decoded.data.slice(),
          });
        } else if (errno !== KernelErrno.ENOENT && errno !== KernelErrno.EINTR) {
          this.#fail(id, channel, errno);
          return;
        } else {
          this.#expire(channel);
        }
        this.#ensureCall(id, channel, true);
      },
      (error: Error) => {
        channel.inFlight = false;
        if (this.#channels.get(id) !== channel) return;
        for (const waiter of channel.waiters.splice(0)) {
          clearTimeout(waiter.timer);
          waiter.reject(error);
        }
      },
    );
  }

  /** After a kernel wait ended empty: answers the callers whose deadline has passed. */
  #expire(channel: Channel): void {
    const now = Date.now();
    for (const waiter of channel.waiters.filter((w) => w.deadline <= now)) {
      this.#remove(channel, waiter);
      waiter.resolve(undefined);
    }
  }

  #deliver(channel: Channel, event: RawEvent): void {
    const waiter = channel.waiters.shift();
    if (!waiter) {
      channel.buffered.push(event);
      return;
    }
    clearTimeout(waiter.timer);
    waiter.resolve(event);
  }

  #fail(id: string, channel: Channel, errno: number): void {
    const error = ioctlError({
      what: `Cannot wait for events of snapshot ${id}`,
      request: IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT,
      requestName: "SNAPSHOT_WAIT_EVENT",
      errno,
    });
    for (const waiter of channel.waiters.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.reject(error);
    }
    if (channel.buffered.length === 0) this.#channels.delete(id);
  }

  /**
   * Forgets snapshot `id` (after destroy): its callers reject with NOT_FOUND,
   * its kept events are dropped, a kernel wait in flight is ignored when it ends.
   */
  forget(id: string): void {
    const channel = this.#channels.get(id);
    if (!channel) return;
    this.#channels.delete(id);
    for (const waiter of channel.waiters.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.reject(
        new ServiceError("NOT_FOUND", `Snapshot ${id} was destroyed while waiting for an event`),
      );
    }
  }

  /** Number of kernel waits in flight. */
  get inFlight(): number {
    let count = 0;
    for (const channel of this.#channels.values()) if (channel.inFlight) count++;
    return count;
  }

  /** Rejects every caller with UNAVAILABLE and stops the blocking-call runner. */
  close(): void {
    this.#closed = true;
    for (const id of [...this.#channels.keys()]) {
      const channel = this.#channels.get(id)!;
      for (const waiter of channel.waiters.splice(0)) {
        clearTimeout(waiter.timer);
        waiter.reject(new ServiceError("UNAVAILABLE", "The kernel driver was closed"));
      }
    }
    this.#channels.clear();
    this.#blocking.close();
  }
}
