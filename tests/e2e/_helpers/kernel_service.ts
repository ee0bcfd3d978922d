/**
 * The kernel backend as a guest would run it: blksnap ready (the out-of-tree bdevfilter and
 * veeamblksnap loaded, or the kernel's own blksnap), the service (bundle, `--backend kernel`)
 * driving it, a typed client. The service must report the profile the kernel shows (its control
 * device). When the case's stack unwinds, every snapshot is destroyed and every device detached
 * through the API, the service stops, and the case must have left nothing behind: the modules
 * unload (`rmmod` failing means a module is still in use), or, with blksnap built in, no block
 * device still has a filter and no image node remains. Either failure fails the case, since it
 * means the service or the case leaked a tracker, a snapshot or an open image.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type BlksnapClient, createClient } from "../../../src/client/mod.ts";
import {
  blksnapSource,
  isLoaded,
  loadModules,
  presentProfile,
  unloadableModules,
  unloadModules,
  upstreamLeftovers,
} from "./module.ts";
import { type RunningService, startService } from "./service.ts";

/** The running service on the module. */
export interface KernelService {
  /** The service. */
  readonly service: RunningService;
  /** Its typed HTTP client. */
  readonly client: BlksnapClient;
}

/** Loads the modules and starts the service on them; `stack` undoes it (see the module doc). */
export async function kernelService(stack: AsyncDisposableStack): Promise<KernelService> {
  await loadModules();
  stack.defer(async () => {
    if (blksnapSource() === "builtin") {
      assert.deepEqual(upstreamLeftovers(), [], "the case left blksnap state behind");
      return;
    }
    await unloadModules();
    for (const name of unloadableModules()) assert.ok(!isLoaded(name), `${name} is still loaded`);
  });
  const service = stack.use(await startService({ backend: "kernel" }));
  const client = createClient({ baseUrl: service.url, timeoutMs: 120_000 });
  stack.defer(async () => {
    for (const snapshot of await client.snapshots.list()) {
      await client.snapshots.destroy(snapshot.id);
    }
    for (const device of await client.devices.list()) await client.devices.detach(device.id);
  });
  const version = await client.version();
  assert.equal(version.backend, "kernel", "the service runs the kernel backend");
  assert.equal(version.profile, presentProfile(), "the service reports the kernel's profile");
  return { service, client };
}
