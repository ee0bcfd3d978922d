/**
 * A KernelDriver on a {@link FakeKernel}, in a temp dir that stands in for
 * /dev and holds the devices' backing files.
 *
 * @module
 */

import { createKernelDriver, type KernelDriverOptions } from "../../src/kernel/kernel_driver.ts";
import type { KernelDriver } from "../../src/kernel/kernel_driver.ts";
import { FakeKernel, type FakeKernelOptions } from "./fake_libc.ts";

/** One fake block device with a real backing file. */
export interface FixtureDevice {
  /** The path the driver attaches. */
  path: string;
  /** The initial content. */
  content: Uint8Array;
}

/** What {@link kernelFixture} builds. */
export interface KernelFixture {
  /** The temp dir (also the device directory). */
  dir: string;
  /** The fake kernel. */
  fake: FakeKernel;
  /** Two block devices, 7:1 (1 MiB + 4 KiB) and 7:2 (512 KiB). */
  devices: [FixtureDevice, FixtureDevice];
  /** Builds and starts a driver on the fake (default: the fake's own waits). */
  driver(options?: KernelDriverOptions): Promise<KernelDriver>;
  /** Closes every driver made and removes the temp dir. */
  cleanup(): Promise<void>;
}

function content(length: number, seed: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (i * 7 + seed + (i >> 9)) & 0xff);
}

/** Builds a fake kernel of `profile` with two devices, in a fresh temp dir. */
export async function kernelFixture(
  profile: FakeKernelOptions["profile"],
  options: Partial<FakeKernelOptions> = {},
): Promise<KernelFixture> {
  const dir = await Deno.makeTempDir({ prefix: "kernel-driver-" });
  const fake = new FakeKernel({ profile, devDir: dir, ...options });
  const devices: [FixtureDevice, FixtureDevice] = [
    { path: `${dir}/vdb`, content: content(1024 * 1024 + 4096, 1) },
    { path: `${dir}/vdc`, content: content(512 * 1024, 2) },
  ];
  for (const [i, device] of devices.entries()) {
    await Deno.writeFile(device.path, device.content);
    fake.addBlockDevice(device.path, { major: 7, minor: i + 1 });
  }
  const drivers: KernelDriver[] = [];
  return {
    dir,
    fake,
    devices,
    async driver(driverOptions = {}) {
      const driver = await createKernelDriver({
        libc: fake,
        blockingIoctl: fake.blocking,
        devDir: dir,
        ...driverOptions,
      });
      drivers.push(driver);
      return driver;
    },
    async cleanup() {
      for (const driver of drivers) await driver.close();
      fake.blocking.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}
