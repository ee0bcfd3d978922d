/**
 * The kernel backend: {@link KernelDriver} drives the blksnap module through
 * ioctls (ABI.md), for both the upstream and the out-of-tree profile.
 * Importing this module opens nothing and needs no FFI permission; libc is
 * opened on the driver's first call.
 *
 * @example
 * ```ts ignore
 * import { createKernelDriver, probeProfile } from "./mod.ts";
 * if (await probeProfile()) {
 *   const driver = await createKernelDriver({ stateDir: "/var/lib/blksnap" });
 *   console.log(await driver.version());
 *   await driver.close();
 * }
 * ```
 *
 * @module
 */

export { createKernelDriver, KernelDriver, type KernelDriverOptions } from "./kernel_driver.ts";
export { type BlockingIoctl, WorkerIoctl, type WorkerIoctlOptions } from "./blocking_ioctl.ts";
export { type DeviceNumber, type Libc, realLibc, type SyscallResult } from "./libc.ts";
export { probeProfile, type ProfileOptions } from "./profiles.ts";
