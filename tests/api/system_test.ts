import assert from "node:assert/strict";
import { SERVICE_VERSION } from "../../src/version.ts";
import { withService } from "../_helpers/service_fixture.ts";
import { createApp } from "../../src/api/app.ts";
import { PathPolicy } from "../../src/api/path_policy.ts";
import type { SnapshotDriver } from "../../src/driver.ts";
import { Logger } from "../../src/log/logger.ts";

Deno.test("GET /v1/version gives the service version, the backend and its capabilities", async () => {
  await withService({}, async ({ client, fetch }) => {
    const response = await fetch("/v1/version");
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "application/json");
    const version = await response.json();
    assert.deepEqual(version, {
      service: SERVICE_VERSION,
      backend: "userspace",
      capabilities: [
        "cbt",
        "cbt-dirty",
        "writable-images",
        "image-read",
        "nbd-exports",
        "events",
        "multi-device-snapshots",
      ],
    });
    assert.deepEqual(await client.version(), version);
  });
});

Deno.test("GET /healthz and /readyz answer without the token the API requires", async () => {
  await withService({ token: "secret" }, async ({ fetch }) => {
    const health = await fetch("/healthz");
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: "ok" });
    const ready = await fetch("/readyz");
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), {
      status: "ready",
      backend: "userspace",
      service: SERVICE_VERSION,
    });
    const guarded = await fetch("/v1/version");
    assert.equal(guarded.status, 401, "the API itself still needs the token");
    await guarded.body?.cancel();
  });
});

Deno.test("GET /readyz is 503 UNAVAILABLE when the backend does not answer", async () => {
  const gone = {
    version: () => Promise.reject(new Error("/dev/blksnap-control: No such device")),
    listDevices: () => Promise.resolve([]),
  } as unknown as SnapshotDriver;
  const root = await Deno.makeTempDir();
  try {
    const app = createApp(gone, {
      paths: await PathPolicy.create([root]),
      logger: Logger.silent(),
    });
    const response = await app.request("/readyz");
    assert.equal(response.status, 503);
    const problem = await response.json();
    assert.equal(problem.code, "UNAVAILABLE");
    assert.match(problem.detail, /backend is not usable: \/dev\/blksnap-control: No such device/);
    assert.equal((await app.request("/healthz")).status, 200, "alive all the same");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
