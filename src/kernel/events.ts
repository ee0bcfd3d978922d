/**
 * Kernel events (`struct blksnap_snapshot_event`) as the driver's
 * {@link SnapshotEvent}s: code 0 carries `blksnap_event_corrupted` (device
 * number and a negative errno), code 1 `blksnap_event_no_space` (sectors
 * asked for). The kernel stamps events with `ktime_get()` (CLOCK_MONOTONIC);
 * they are converted to milliseconds since the epoch with the current offset
 * between the two clocks.
 *
 * @module
 */

import type { SnapshotEvent } from "../driver.ts";
import { errnoName } from "../errors.ts";
import { BlksnapEventCode, BlksnapEventCorrupted, BlksnapEventNoSpace } from "./abi.ts";
import type { RawEvent } from "./event_reader.ts";

/** Clocks and device lookup for {@link decodeEvent}. */
export interface EventContext {
  /** CLOCK_MONOTONIC now, in nanoseconds. */
  monotonicNowNs: bigint;
  /** Milliseconds since the epoch now. */
  epochNowMs: number;
  /** The id of the device with this number, if the snapshot has one. */
  deviceIdOf(major: number, minor: number): string | undefined;
}

/** The driver event for a kernel event; undefined for codes this service does not know. */
export function decodeEvent(raw: RawEvent, context: EventContext): SnapshotEvent | undefined {
  const ageMs = Number(context.monotonicNowNs - BigInt(raw.timeLabelNs)) / 1e6;
  const timeMs = Math.round(context.epochNowMs - Math.max(0, ageMs));
  if (raw.code === BlksnapEventCode.corrupted) {
    const payload = BlksnapEventCorrupted.decode(raw.data);
    const errorCode = Math.abs(payload.err_code);
    return {
      code: "corrupted",
      timeMs,
      deviceId: context.deviceIdOf(payload.dev_id_mj, payload.dev_id_mn),
      errorCode,
      errorName: errnoName(errorCode),
    };
  }
  if (raw.code === BlksnapEventCode.no_space) {
    const payload = BlksnapEventNoSpace.decode(raw.data);
    return { code: "no_space", timeMs, requestedSectors: payload.requested_nr_sect };
  }
  return undefined;
}
