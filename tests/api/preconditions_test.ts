import assert from "node:assert/strict";
import { evaluatePreconditions, imageValidators } from "../../src/api/preconditions.ts";

const TAKEN = "2026-12-01T09:00:00.250Z";
const identity = {
  snapshotId: "0b9a3c1e-3f6e-4a57-9c43-3d2b1f1f0a11",
  deviceId: "vda",
  takenAt: TAKEN,
  sizeBytes: 4096,
  writable: false,
};
const LATER = Date.parse(TAKEN) + 5000;

function evaluate(headers: Record<string, string>, nowMs = LATER) {
  return imageValidators(identity).then((v) =>
    evaluatePreconditions(new Headers(headers), v, { nowMs })
  );
}

Deno.test("imageValidators() changes with each part of the identity and gives none when writable", async () => {
  const base = await imageValidators(identity);
  for (
    const change of [
      { snapshotId: "other" },
      { deviceId: "vdb" },
      { takenAt: "2026-12-01T09:00:01.000Z" },
      { sizeBytes: 8192 },
    ]
  ) {
    assert.notEqual((await imageValidators({ ...identity, ...change })).etag, base.etag);
  }
  assert.equal(base.lastModifiedMs, Date.parse(TAKEN));
  assert.deepEqual(await imageValidators({ ...identity, writable: true }), {});
});

Deno.test("dates: If-Modified-Since gives 304 at or after the take, If-Unmodified-Since 412 before it", async () => {
  assert.deepEqual(await evaluate({ "if-modified-since": "Tue, 01 Dec 2026 09:00:00 GMT" }), {
    kind: "not-modified",
  });
  assert.deepEqual(await evaluate({ "if-modified-since": "Tue, 01 Dec 2026 08:59:59 GMT" }), {
    kind: "proceed",
    honourRange: true,
  });
  assert.deepEqual(await evaluate({ "if-unmodified-since": "Tue, 01 Dec 2026 08:59:59 GMT" }), {
    kind: "failed",
    header: "If-Unmodified-Since",
  });
  assert.deepEqual(await evaluate({ "if-modified-since": "not a date" }), {
    kind: "proceed",
    honourRange: true,
  });
});

Deno.test("If-Match wins over If-Unmodified-Since, and If-None-Match over If-Modified-Since", async () => {
  const { etag } = await imageValidators(identity);
  assert.deepEqual(
    await evaluate({ "if-match": etag!, "if-unmodified-since": "Mon, 01 Jan 2001 00:00:00 GMT" }),
    { kind: "proceed", honourRange: true },
  );
  assert.deepEqual(
    await evaluate({
      "if-none-match": '"x"',
      "if-modified-since": "Tue, 01 Dec 2026 10:00:00 GMT",
    }),
    { kind: "proceed", honourRange: true },
  );
  assert.deepEqual(await evaluate({ "if-match": `W/${etag}` }), {
    kind: "failed",
    header: "If-Match",
  });
  assert.deepEqual(await evaluate({ "if-match": "*" }), { kind: "proceed", honourRange: true });
});

Deno.test("If-Range with the Last-Modified date matches only once it is strong (a second after take)", async () => {
  const range = { range: "bytes=0-1", "if-range": "Tue, 01 Dec 2026 09:00:00 GMT" };
  assert.deepEqual(await evaluate(range), { kind: "proceed", honourRange: true });
  assert.deepEqual(await evaluate(range, Date.parse(TAKEN) + 500), {
    kind: "proceed",
    honourRange: false,
  });
  assert.deepEqual(
    await evaluate({ range: "bytes=0-1", "if-range": "Tue, 01 Dec 2026 09:00:01 GMT" }),
    { kind: "proceed", honourRange: false },
  );
});
