/**
 * The SnapshotDriver conformance suite (tests/conformance) on the real blksnap module: the
 * KernelDriver through FFI ioctls on the kernel's blksnap, devices on loop devices, every
 * feature enabled (data, overflow into a real storage, sparse devices past 128 GiB, destroy while
 * reading, a CBT map corrupted by a write past its end after the loop device grew). The same cases run on the host against the userspace backend and the fake kernel.
 * After the suite the modules must unload (with blksnap built in: no device keeps a filter, no
 * image node remains): nothing the cases did may keep them busy. The profile is whichever the
 * kernel has (the out-of-tree modules, or a kernel with the upstream series).
 */

import assert from "node:assert/strict";
import { registerDriverConformance } from "../conformance/driver_conformance.ts";
import { labTest, recordSkip, unmetRequirement } from "./_helpers/guest.ts";
import { loopFixture } from "./_helpers/loop_fixture.ts";
import {
  blksnapSource,
  isLoaded,
  unloadableModules,
  unloadModules,
  upstreamLeftovers,
} from "./_helpers/module.ts";

registerDriverConformance({
  name: "kernel (module)",
  backend: "kernel",
  ignore: unmetRequirement(["module"]),
  onSkip: recordSkip,
  // The driver keeps a worker pool and cached image handles between calls of one case; the
  // fixture's cleanup closes them.
  sanitizeOps: false,
  sanitizeResources: false,
  setup: loopFixture,
});

labTest({
  name: "kernel (module): nothing is left behind after the conformance suite",
  requires: ["module"],
  async fn() {
    if (blksnapSource() === "builtin") {
      assert.deepEqual(upstreamLeftovers(), []);
      return;
    }
    await unloadModules();
    for (const name of unloadableModules()) assert.ok(!isLoaded(name), `${name} is still loaded`);
  },
});
