/**
 * blksnap service: block-device snapshots with change block tracking behind
 * one HTTP API, on the blksnap kernel module or a userspace engine served
 * over NBD. This module is the library surface: the typed HTTP client, the
 * driver seam and both drivers, the API application, and the error table.
 * Importing it has no side effects and needs no permissions (the kernel
 * driver opens libc on its first call, not at import).
 *
 * @example Drive a running service
 * ```ts ignore
 * import { createClient, ProblemError } from "./mod.ts";
 *
 * const client = createClient({ baseUrl: "http://127.0.0.1:8037" });
 * const device = await client.devices.attach({ path: "/srv/disks/vm1.img", name: "vm1" });
 * const snapshot = await client.snapshots.create({
 *   devices: [device.id],
 *   diffStorage: { path: "/srv/diff/vm1.diff", limitBytes: 4 << 30 },
 * });
 * await client.snapshots.take(snapshot.id);
 * const changes = await client.images.changes(snapshot.id, device.id);
 * try {
 *   await client.snapshots.take(snapshot.id);
 * } catch (error) {
 *   if (error instanceof ProblemError) console.log(error.code); // "CONFLICT"
 * }
 * ```
 *
 * @example Embed the service
 * ```ts ignore
 * import { createApp, PathPolicy, UserspaceDriver } from "./mod.ts";
 *
 * const driver = await UserspaceDriver.start({ nbd: { tcp: { port: 10809 } } });
 * const app = createApp(driver, { paths: await PathPolicy.create(["/srv"]) });
 * Deno.serve({ hostname: "127.0.0.1", port: 8037 }, app.fetch);
 * ```
 *
 * @module
 */

export * from "./src/errors.ts";
export type * from "./src/driver.ts";
export { SERVICE_VERSION } from "./src/version.ts";
export * from "./src/client/mod.ts";
export {
  type ApiApp,
  type AppOptions,
  createApp,
  DEFAULT_BODY_LIMIT_BYTES,
} from "./src/api/app.ts";
export { Metrics, type MetricsOptions } from "./src/api/metrics.ts";
export {
  LOG_FORMATS,
  LOG_LEVELS,
  type LogFields,
  type LogFormat,
  Logger,
  type LoggerOptions,
  type LogLevel,
} from "./src/log/logger.ts";
export type { JsonSchema, Schema } from "./src/api/schema.ts";
export { PathPolicy, type ResolveOptions } from "./src/api/path_policy.ts";
export type { ProblemDocument } from "./src/api/problem.ts";
export type { Extent, ImageChanges as ChangesOfImage } from "./src/api/changes.ts";
export {
  type ChangePoint,
  decodeChangeToken,
  encodeChangeToken,
  FULL_BACKUP_REASONS,
  type FullBackupReason,
} from "./src/change_token.ts";
export { UserspaceDriver, type UserspaceDriverOptions } from "./src/userspace/userspace_driver.ts";
export type { EngineParams } from "./src/engine/mod.ts";
export {
  type NbdLogger,
  type NbdLogLevel,
  type NbdServer,
  NbdStats,
  type ReadProbe,
  ReadProbeBoard,
} from "./src/nbd/mod.ts";
export type { CountsByCommand } from "./src/nbd/stats.ts";
export type { DeviceNumber, SyscallResult } from "./src/kernel/libc.ts";
export {
  type BlockingIoctl,
  createKernelDriver,
  KernelDriver,
  type KernelDriverOptions,
  type Libc,
  probeProfile,
  type ProfileOptions,
} from "./src/kernel/mod.ts";
export type { TakenImage } from "./src/kernel/kernel_driver.ts";
export type { VerifyOpened } from "./src/store/open_verified.ts";
