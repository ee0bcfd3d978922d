/**
 * The SnapshotDriver conformance suite on the kernel backend, for both
 * profiles, on the fake kernel of tests/_helpers/fake_libc.ts: the driver
 * sends its real ioctls, the fake decodes them and models the module's
 * trackers, CBT tables, snapshots and events. Devices are temp files the
 * fake registers as block devices; a write goes to the backing file and
 * marks the fake's CBT as the module's filter would; at take the fake copies
 * each device into an image file, which the driver reads as it would read
 * /dev/blksnap-*. What the fake does not model (the difference storage
 * filling up) is skipped here and runs in the lab on the real module.
 */

import { createKernelDriver } from "../../src/kernel/kernel_driver.ts";
import { registerDriverConformance } from "../conformance/driver_conformance.ts";
import type { ConformanceFixture } from "../conformance/fixture.ts";
import { FakeKernel } from "../_helpers/fake_libc.ts";

async function readAt(path: string, offset: number, length: number): Promise<Uint8Array> {
  const file = await Deno.open(path, { read: true });
  try {
    await file.seek(offset, Deno.SeekMode.Start);
    const out = new Uint8Array(length);
    for (let done = 0; done < length;) {
      const n = await file.read(out.subarray(done));
      if (n === null) throw new Error(`${path} ends before ${offset + length}`);
      done += n;
    }
    return out;
  } finally {
    file.close();
  }
}

async function fakeKernelFixture(profile: "upstream" | "outoftree"): Promise<ConformanceFixture> {
  const dir = await Deno.makeTempDir({ prefix: "kernel-conformance-" });
  const fake = new FakeKernel({ profile, devDir: dir });
  const driver = await createKernelDriver({
    libc: fake,
    blockingIoctl: fake.blocking,
    devDir: dir,
  });
  let next = 1;
  return {
    driver,
    async createDevice(sizeBytes, options = {}) {
      const minor = next++;
      const path = `${dir}/vd${minor}`;
      const file = await Deno.open(path, { write: true, createNew: true });
      try {
        await file.truncate(sizeBytes);
        const content = options.content ?? new Uint8Array(0);
        for (let done = 0; done < content.length;) {
          done += await file.write(content.subarray(done));
        }
      } finally {
        file.close();
      }
      fake.addBlockDevice(path, { major: 7, minor });
      return path;
    },
    writeDevice(device, offset, data) {
      fake.writeDevice(device.path, offset, data);
      return Promise.resolve();
    },
    readDevice: (device, offset, length) => readAt(device.path, offset, length),
    corruptCbt(device) {
      fake.corruptCbt(device.path);
      return Promise.resolve();
    },
    storagePath: () => Promise.resolve(`${dir}/storage${next++}.diff`),
    async cleanup() {
      await driver.close();
      fake.blocking.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

for (const profile of ["upstream", "outoftree"] as const) {
  registerDriverConformance({
    name: `kernel on the fake kernel (${profile})`,
    backend: "kernel",
    unsupported: {
      overflow: "the fake kernel does not model the difference storage filling up; " +
        "the lab runs this case on the real module",
    },
    setup: () => fakeKernelFixture(profile),
  });
}
