/**
 * NBD export names both backends use, so that a client's URIs do not depend
 * on which backend a host runs: `<device>` for a tracked device (userspace)
 * and `<device>@<snapshot-id>` for a device's image in a taken snapshot.
 *
 * @module
 */

/** The export name of `deviceId`'s image in `snapshotId`. */
export function imageExportName(deviceId: string, snapshotId: string): string {
  return `${deviceId}@${snapshotId}`;
}
