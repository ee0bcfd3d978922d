/**
 * The userspace backend as a guest would use it: the service (bundle, `--backend userspace`)
 * tracks a disk file on the scratch file system, the kernel's NBD client connects /dev/nbd0 to
 * the device's export, and an ext4 file system on /dev/nbd0 is mounted, so that every write the
 * file system makes goes through the service. Snapshot images are reached the same way, through
 * /dev/nbd1 connected to the image's export.
 *
 * Everything a case sets up goes on one {@link AsyncDisposableStack} and is undone in reverse
 * order when the case ends, also after a failure: unmount, disconnect, destroy the snapshot,
 * detach, stop the service, remove the case's folder.
 *
 * @module
 */

import { type BlksnapClient, createClient } from "../../../src/client/mod.ts";
import type { DeviceInfo, SnapshotInfo } from "../../../src/driver.ts";
import { mkfsExt4, mount, type Mounted } from "./ext4.ts";
import { connectNbd, type NbdConnection } from "./nbd.ts";
import { scratchFiles } from "./scratch.ts";
import { type RunningService, startService } from "./service.ts";

/** A tracked, mounted ext4 file system on the userspace backend. */
export interface TrackedFilesystem {
  /** The service. */
  readonly service: RunningService;
  /** Its typed HTTP client. */
  readonly client: BlksnapClient;
  /** The case's folder on the scratch file system (storage files go here). */
  readonly work: string;
  /** The attached disk file. */
  readonly device: DeviceInfo;
  /** /dev/nbd0, connected to the device's export. */
  readonly nbd: NbdConnection;
  /** The file system on /dev/nbd0, mounted at `${work}/origin`. */
  readonly origin: Mounted;
  /** Cleanups, undone in reverse order; cases add their own (snapshots, images). */
  readonly stack: AsyncDisposableStack;
}

/** Options of {@link trackedFilesystem}. */
export interface TrackedFilesystemOptions {
  /** The device's name (its export name). */
  name: string;
  /** Size of the disk file in bytes. */
  sizeBytes: number;
}

/**
 * Starts the service, attaches a new zeroed disk file of `sizeBytes`, connects /dev/nbd0 to it,
 * makes ext4 on it and mounts it. The returned stack undoes all of it.
 */
export async function trackedFilesystem(
  stack: AsyncDisposableStack,
  options: TrackedFilesystemOptions,
): Promise<TrackedFilesystem> {
  const work = await Deno.makeTempDir({ dir: await scratchFiles(), prefix: `${options.name}-` });
  stack.defer(() => Deno.remove(work, { recursive: true }));
  const service = stack.use(await startService({ backend: "userspace" }));
  const client = createClient({ baseUrl: service.url, timeoutMs: 120_000 });
  const disk = `${work}/${options.name}.img`;
  await Deno.writeFile(disk, new Uint8Array());
  await Deno.truncate(disk, options.sizeBytes);
  const device = await client.devices.attach({ path: disk, name: options.name });
  stack.defer(() => client.devices.detach(device.id));
  const nbd = stack.use(await connectNbd("/dev/nbd0", device.locator));
  await mkfsExt4(nbd.device);
  const origin = stack.use(await mount(nbd.device, `${work}/origin`));
  return { service, client, work, device, nbd, origin, stack };
}

/** Options of {@link openImage}. */
export interface OpenImageOptions {
  /** Mount options (default "ro,noload": no journal replay on a read-only image). */
  mountOptions?: string;
  /** Mount the file system (default true); false leaves only /dev/nbd1 connected. */
  mount?: boolean;
}

/** An image connected to /dev/nbd1 and (unless asked otherwise) mounted at `${work}/image`. */
export interface OpenedImage {
  /** /dev/nbd1, connected to the image's export. */
  readonly nbd: NbdConnection;
  /** The mounted file system, when mounted. */
  readonly mounted?: Mounted;
}

/**
 * Connects /dev/nbd1 to the image of the case's device in `snapshot` (taken) and mounts it; both
 * are undone by the case's stack (or earlier by the caller).
 */
export async function openImage(
  fs: TrackedFilesystem,
  snapshot: SnapshotInfo,
  options: OpenImageOptions = {},
): Promise<OpenedImage> {
  const image = snapshot.devices.find((d) => d.deviceId === fs.device.id);
  if (image?.locator === undefined) {
    throw new Error(`Snapshot ${snapshot.id} has no image of ${fs.device.id} (not taken?)`);
  }
  const nbd = fs.stack.use(await connectNbd("/dev/nbd1", image.locator));
  if (options.mount === false) return { nbd };
  const mounted = fs.stack.use(
    await mount(nbd.device, `${fs.work}/image`, { options: options.mountOptions ?? "ro,noload" }),
  );
  return { nbd, mounted };
}

/** Destroys `snapshotId` when the case's stack unwinds, unless it is gone by then. */
export function destroyLater(fs: TrackedFilesystem, snapshotId: string): void {
  fs.stack.defer(async () => {
    const listed = await fs.client.snapshots.list();
    if (listed.some((s) => s.id === snapshotId)) await fs.client.snapshots.destroy(snapshotId);
  });
}
