import assert from "node:assert/strict";
import { SERVICE_VERSION } from "../../src/version.ts";
import { withService } from "../_helpers/service_fixture.ts";

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
