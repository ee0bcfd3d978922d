/**
 * The service as the image ships it: `deno run -A /opt/blksnap/blksnap.js serve` starts in the
 * guest (no network, nothing but the bundle and deno) and answers over HTTP; with blksnap
 * loaded (or built in), `--backend auto` picks the kernel backend and reports the profile of the
 * control device the kernel has.
 */

import assert from "node:assert/strict";
import { labTest } from "./_helpers/guest.ts";
import {
  expectedProfile,
  loadModules,
  presentProfile,
  unloadModules,
  versionPattern,
} from "./_helpers/module.ts";
import { startService } from "./_helpers/service.ts";

async function version(url: string): Promise<Record<string, unknown>> {
  const response = await fetch(`${url}/v1/version`);
  assert.equal(response.status, 200);
  return await response.json();
}

labTest({
  name: "the service bundle starts in the guest and answers /v1/version (userspace backend)",
  requires: ["service"],
  async fn() {
    await using service = await startService({ backend: "userspace" });
    const info = await version(service.url);
    assert.equal(info.backend, "userspace");
    assert.equal(typeof info.service, "string");
  },
});

labTest({
  name: "serve --backend auto picks the kernel backend when blksnap is there, with its profile",
  requires: ["service", "module"],
  async fn() {
    await loadModules();
    try {
      await using service = await startService({ backend: "auto" });
      const info = await version(service.url);
      const profile = presentProfile()!;
      assert.equal(profile, expectedProfile(), "the run's blksnap has this profile");
      assert.equal(info.backend, "kernel");
      assert.equal(info.profile, profile);
      assert.match(String(info.moduleVersion), versionPattern(profile));
    } finally {
      await unloadModules();
    }
  },
});
