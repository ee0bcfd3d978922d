/**
 * The kernel backend as a guest would run it: bdevfilter and veeamblksnap loaded, the service
 * (bundle, `--backend kernel`) driving them, a typed client. When the case's stack unwinds, every
 * snapshot is destroyed and every device detached through the API, the service stops, and the
 * modules are unloaded: `rmmod` failing (a module still in use) fails the case, since it means
 * the service or the case leaked a tracker, a snapshot or an open image.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type BlksnapClient, createClient } from "../../../src/client/mod.ts";
import { isLoaded, loadModules, moduleDir, moduleNames, unloadModules } from "./module.ts";
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
  await loadModules(await moduleDir());
  stack.defer(async () => {
    await unloadModules();
    for (const name of moduleNames) assert.ok(!isLoaded(name), `${name} is still loaded`);
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
  return { service, client };
}
