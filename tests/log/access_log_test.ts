import assert from "node:assert/strict";
import { join } from "node:path";
import { createApp } from "../../src/api/app.ts";
import { PathPolicy } from "../../src/api/path_policy.ts";
import type { SnapshotDriver } from "../../src/driver.ts";
import { withService } from "../_helpers/service_fixture.ts";
import { collectingLogger } from "./_collector.ts";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

Deno.test("access log: one line per request with its id, also returned as X-Request-Id", async () => {
  const { logger, records } = collectingLogger();
  await withService({ logger }, async ({ fetch }) => {
    const listed = await fetch("/v1/devices");
    await listed.body?.cancel();
    const id = listed.headers.get("x-request-id")!;
    assert.match(id, UUID);
    const line = records.find((r) => r.requestId === id)!;
    assert.equal(line.level, "info");
    assert.equal(line.message, "GET /v1/devices 200");
    assert.equal(line.route, "listDevices");
    assert.equal(typeof line.durationMs, "number");

    const echoed = await fetch("/v1/devices/nope", {
      headers: { "x-request-id": "job-42.step:1" },
    });
    await echoed.body?.cancel();
    assert.equal(echoed.headers.get("x-request-id"), "job-42.step:1", "a sane id is kept");
    const refused = records.find((r) => r.requestId === "job-42.step:1")!;
    assert.equal(refused.message, "GET /v1/devices/nope 404");
    assert.equal(refused.code, "NOT_FOUND", "the problem's code");

    const replaced = await fetch("/v1/version", { headers: { "x-request-id": "bad id;<x>" } });
    await replaced.body?.cancel();
    assert.match(replaced.headers.get("x-request-id")!, UUID, "an odd id is replaced");

    const head = await fetch("/v1/devices", { method: "HEAD" });
    await head.body?.cancel();
    const headLine = records.find((r) => r.requestId === head.headers.get("x-request-id"))!;
    assert.equal(headLine.route, "listDevices", "HEAD is its GET route, not unmatched");

    const probe = await fetch("/healthz");
    await probe.body?.cancel();
    const probeLine = records.find((r) => r.requestId === probe.headers.get("x-request-id"))!;
    assert.equal(probeLine.level, "debug", "probes log at debug");
  });
});

Deno.test("access log: an internal failure is logged once, at error, with its code and stack", async () => {
  const { logger, records } = collectingLogger();
  const failing = {
    listDevices: () => Promise.reject(new TypeError("boom in the backend")),
  } as unknown as SnapshotDriver;
  const root = await Deno.makeTempDir();
  try {
    const app = createApp(failing, { paths: await PathPolicy.create([root]), logger });
    const response = await app.request("/v1/devices");
    assert.equal(response.status, 500);
    const problem = await response.json();
    assert.equal(problem.code, "INTERNAL");
    assert.doesNotMatch(problem.detail, /boom/, "internals stay in the log");
    assert.equal(records.length, 1);
    const [line] = records;
    assert.equal(line.level, "error");
    assert.equal(line.code, "INTERNAL");
    assert.equal(line.error, "boom in the backend");
    assert.match(line.stack as string, /TypeError: boom in the backend\n\s+at /);
    assert.equal(line.requestId, response.headers.get("x-request-id"));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("access log: an image stream broken by destroy is logged once with its code; the client sees it", async () => {
  const { logger, records } = collectingLogger();
  await withService({ logger }, async ({ client, fetch, allowed }) => {
    const path = join(allowed, "big.img");
    await Deno.writeFile(path, new Uint8Array(0));
    await Deno.truncate(path, 256 << 20);
    await client.devices.attach({ path, name: "big" });
    const snapshot = await client.snapshots.create({
      devices: ["big"],
      diffStorage: { path: join(allowed, "diff"), limitBytes: 1 << 20 },
    });
    await client.snapshots.take(snapshot.id);
    const response = await fetch(`/v1/snapshots/${snapshot.id}/images/big/data`);
    assert.equal(response.status, 200);
    const reader = response.body!.getReader();
    let received = (await reader.read()).value!.length;
    await client.snapshots.destroy(snapshot.id);
    await assert.rejects(async () => {
      while (true) {
        const { done, value } = await reader.read();
        if (done) break;
        received += value.length;
      }
    });
    assert.ok(received < 256 << 20, `received ${received}`);
    const requestId = response.headers.get("x-request-id");
    const broken = records.filter((r) => r.requestId === requestId && r.level === "warn");
    assert.equal(broken.length, 1, JSON.stringify(records));
    assert.equal(broken[0].code, "NOT_FOUND");
    assert.match(broken[0].message, /the response stream failed/);
  });
});
