/**
 * The service as the image ships it: `deno run -A /opt/blksnap/blksnap.js serve` starts in the
 * guest (no network, nothing but the bundle and deno) and answers over HTTP; with the module
 * loaded, `--backend auto` picks the kernel backend.
 */

import assert from "node:assert/strict";
import { labTest } from "./_helpers/guest.ts";
import { loadModules, moduleDir, unloadModules } from "./_helpers/module.ts";
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
  name: "serve --backend auto picks the kernel backend when the module is loaded",
  requires: ["service", "module"],
  async fn() {
    await loadModules(await moduleDir());
    try {
      await using service = await startService({ backend: "auto" });
      const info = await version(service.url);
      assert.equal(info.backend, "kernel");
      assert.equal(info.profile, "outoftree");
      assert.match(String(info.moduleVersion), /^7\./);
    } finally {
      await unloadModules();
    }
  },
});
