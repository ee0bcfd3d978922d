/**
 * A {@link ConformanceFixture} on the real blksnap module in the lab guest: the KernelDriver
 * (FFI ioctls, no state folder) on the loaded modules, devices that are loop devices over sparse
 * files in a temp folder on the guest's root file system (content written to the file before
 * `losetup`, so the CBT does not see it), writes and reads with pwrite + fdatasync and pread on
 * the /dev/loopN node, and difference storages in a sibling folder that holds no device nodes.
 *
 * A CBT corruption is made the way the module itself comes to one (cbt_map_set, in both the
 * out-of-tree module and the upstream series, marks the map corrupted when a write lands on a
 * tracking block past the map's end): the backing file grows, `losetup --set-capacity` makes the
 * loop device that large, one block is written just past what the map covers, and the device is
 * shrunk back to its size at once (file and loop capacity), so that the case goes on with the
 * device it made and the next take resets the map because it is corrupted, not because the size
 * changed. Nothing of the device's own data is touched: the write lands beyond its end.
 *
 * Cleanup destroys what is left of the case's snapshots, detaches every device (the driver's
 * close() leaves trackers attached on purpose), closes the driver, detaches the loop devices and
 * removes the folder.
 *
 * @module
 */

import { createKernelDriver } from "../../../src/kernel/mod.ts";
import type { ConformanceFixture } from "../../conformance/fixture.ts";
import { readAt, writeAt } from "./block_io.ts";
import { loadModules, moduleDir } from "./module.ts";
import { exists, run } from "./sh.ts";

/** Loads the modules and builds a fresh fixture for one conformance case. */
export async function loopFixture(): Promise<ConformanceFixture> {
  await loadModules(await moduleDir());
  if (!exists("/dev/loop-control")) await run("modprobe", ["loop"]);
  const dir = await Deno.makeTempDir({ dir: "/var/tmp", prefix: "kernel-conformance-" });
  await Deno.mkdir(`${dir}/backing`);
  await Deno.mkdir(`${dir}/storage`);
  const driver = await createKernelDriver();
  const loops: string[] = [];
  const backingFiles = new Map<string, string>();
  let next = 1;
  return {
    driver,
    async createDevice(sizeBytes, options = {}) {
      const file = `${dir}/backing/device-${next++}.img`;
      await Deno.writeFile(file, options.content ?? new Uint8Array());
      await Deno.truncate(file, sizeBytes);
      const loop = (await run("losetup", ["--find", "--show", file])).stdout.trim();
      loops.push(loop);
      backingFiles.set(loop, file);
      return loop;
    },
    writeDevice: (device, offset, data) => writeAt(device.path, offset, data),
    async corruptCbt(device) {
      const file = backingFiles.get(device.path);
      if (!file) throw new Error(`${device.path} is not a loop device of this fixture`);
      const { blockCount, blockSizeBytes } = await driver.cbtInfo(device.id);
      const pastMap = blockCount * blockSizeBytes;
      const { size } = await Deno.stat(file);
      await Deno.truncate(file, pastMap + blockSizeBytes);
      try {
        await run("losetup", ["--set-capacity", device.path]);
        await writeAt(device.path, pastMap, new Uint8Array(4096).fill(0xcb));
      } finally {
        // udev probes the grown device's end; shrinking under that probe fails its reads.
        await run("udevadm", ["settle"], { allowFailure: true });
        await Deno.truncate(file, size);
        await run("losetup", ["--set-capacity", device.path]);
      }
      const restored = Number((await run("blockdev", ["--getsize64", device.path])).stdout);
      if (restored !== size) {
        throw new Error(`${device.path} is ${restored} bytes after the restore, not ${size}`);
      }
    },
    readDevice: (device, offset, length) => readAt(device.path, offset, length),
    storagePath: () => Promise.resolve(`${dir}/storage/storage-${next++}.diff`),
    async cleanup() {
      const failures: unknown[] = [];
      const attempt = async (step: () => Promise<unknown>) => {
        try {
          await step();
        } catch (error) {
          failures.push(error);
        }
      };
      await attempt(async () => {
        for (const snapshot of await driver.listSnapshots()) {
          await driver.destroySnapshot(snapshot.id);
        }
      });
      await attempt(async () => {
        for (const device of await driver.listDevices()) await driver.detach(device.id);
      });
      await attempt(() => driver.close());
      for (const loop of loops) await attempt(() => run("losetup", ["--detach", loop]));
      await attempt(() => Deno.remove(dir, { recursive: true }));
      if (failures.length > 0) {
        throw new AggregateError(failures, `Cleanup of ${dir} failed: ${failures.join("; ")}`);
      }
    },
  };
}
