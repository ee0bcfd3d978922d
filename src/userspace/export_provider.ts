/**
 * The userspace backend's NBD exports, computed from the engine at each
 * handshake: every attached device under its id, and every image of every
 * taken snapshot under `<device>@<snapshot-id>`. Device and image exports
 * offer Workers a fast path (device_fast_path.ts, image_fast_path.ts).
 *
 * @module
 */

import type { Engine } from "../engine/engine.ts";
import type { Snapshot } from "../engine/snapshot.ts";
import type { Tracker } from "../engine/tracker.ts";
import type { ExportProvider, NbdExport } from "../nbd/export.ts";
import { offerFastPath } from "../nbd/worker/fast_path.ts";
import { deviceExport } from "./device_export.ts";
import { deviceFastPath } from "./device_fast_path.ts";
import { imageExport } from "./image_export.ts";
import { imageFastPath } from "./image_fast_path.ts";

/** Exports of `engine`'s devices and images. */
export function engineExports(engine: Engine): ExportProvider {
  // Keyed by tracker, not name: a device detached and attached again under the same name
  // between two handshakes is a new tracker, and its export must not write to the old one.
  const devices = new WeakMap<Tracker, NbdExport>();
  const deviceExportOf = (name: string): NbdExport | undefined => {
    const tracker = engine.trackers().find((t) => t.name === name);
    if (!tracker) return undefined;
    let cached = devices.get(tracker);
    if (!cached) {
      devices.set(tracker, cached = deviceExport(tracker));
      offerFastPath(cached, deviceFastPath(tracker, () => engine.trackers().includes(tracker)));
    }
    return cached;
  };
  const imageExports = (): NbdExport[] =>
    engine.snapshots().filter((s) => s.state === "taken" || s.state === "corrupted").flatMap((
      snapshot,
    ) => snapshot.trackers().map((tracker) => imageExportWithFastPath(snapshot, tracker)));
  return {
    list: () => [
      ...engine.trackers().map((t) => deviceExportOf(t.name)!),
      ...imageExports(),
    ],
    get(name) {
      const at = name.indexOf("@");
      if (at < 0) return deviceExportOf(name);
      const deviceId = name.slice(0, at);
      const snapshot = engine.snapshots().find((s) => s.id === name.slice(at + 1));
      if (!snapshot || (snapshot.state !== "taken" && snapshot.state !== "corrupted")) {
        return undefined;
      }
      const tracker = snapshot.trackers().find((t) => t.name === deviceId);
      return tracker ? imageExportWithFastPath(snapshot, tracker) : undefined;
    },
  };
}

/** The export of `tracker`'s image in `snapshot`, with its Worker fast path offered. */
function imageExportWithFastPath(snapshot: Snapshot, tracker: Tracker): NbdExport {
  const exp = imageExport(snapshot, tracker);
  offerFastPath(exp, imageFastPath(snapshot, tracker));
  return exp;
}
