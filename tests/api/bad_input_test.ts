import assert from "node:assert/strict";
import { join } from "node:path";
import { apiRoutes } from "../../src/api/app.ts";
import type { ProblemDocument } from "../../src/api/problem.ts";
import type { ErrorCode } from "../../src/errors.ts";
import { assertProblem } from "../_helpers/api_problem.ts";
import { type ServiceFixture, withService } from "../_helpers/service_fixture.ts";

const MIB = 1 << 20;
const UNKNOWN_SNAPSHOT = "0a1b2c3d-0000-4000-8000-00000000000f";

/** One bad request and the problem it must give. */
interface Case {
  method: string;
  path: string;
  /** A JSON value (sent as application/json) or raw text with `headers`. */
  json?: unknown;
  text?: string;
  headers?: Record<string, string>;
  status: number;
  code: ErrorCode;
  field?: string;
  errno?: string;
}

/** Sends `c`, checks the problem (never a 500), returns it. */
async function send(fixture: ServiceFixture, c: Case): Promise<ProblemDocument> {
  const headers = {
    ...(c.json !== undefined ? { "content-type": "application/json" } : {}),
    ...c.headers,
  };
  const body = c.json !== undefined ? JSON.stringify(c.json) : c.text;
  const response = await fixture.fetch(c.path, { method: c.method, headers, body });
  const text = await response.text();
  const where = `${c.method} ${c.path} ${body ?? ""}`.slice(0, 300);
  assert.notEqual(response.status, 500, `${where} gave a 500: ${text}`);
  assert.equal(
    response.headers.get("content-type"),
    "application/problem+json",
    `${where}: ${text}`,
  );
  assert.equal(response.status, c.status, `${where}: ${text}`);
  const problem = assertProblem(JSON.parse(text), c);
  if (c.code === "INVALID_ARGUMENT") {
    assert.ok(problem.field, `${where}: a validation error names its field: ${text}`);
  }
  return problem;
}

/** A device "a" attached and snapshot ids: one created (with "a"), one taken (with "t"). */
async function setUp(fixture: ServiceFixture): Promise<{ created: string; taken: string }> {
  const { client, makeDisk, allowed } = fixture;
  await client.devices.attach({ path: await makeDisk("a.img", MIB), name: "a" });
  await client.devices.attach({ path: await makeDisk("t.img", MIB), name: "t" });
  const created = await client.snapshots.create({
    devices: ["a"],
    diffStorage: { path: join(allowed, "a.diff"), limitBytes: MIB },
  });
  const taken = await client.snapshots.create({
    devices: ["t"],
    diffStorage: { path: join(allowed, "t.diff"), limitBytes: MIB },
  });
  await client.snapshots.take(taken.id);
  return { created: created.id, taken: taken.id };
}

/** A valid body for `operationId`, so that only the part under test is wrong. */
function validBody(operationId: string, allowed: string): unknown {
  switch (operationId) {
    case "attachDevice":
      return { path: join(allowed, "a.img") };
    case "markDirty":
      return { ranges: [{ offset: 0, count: 1 }] };
    case "createSnapshot":
      return { devices: [], diffStorage: { path: join(allowed, "x.diff"), limitBytes: MIB } };
    case "addSnapshotDevice":
      return { device: "a" };
    case "takeSnapshot":
      return { freeze: false };
  }
  return undefined;
}

const malformedIds: Record<string, string[]> = {
  id: ["-dash", "a%20b", "a%2Fb", "%00", "x".repeat(65), "caf%C3%A9"],
  snapshot: ["not-a-uuid", UNKNOWN_SNAPSHOT.toUpperCase(), "123", `${UNKNOWN_SNAPSHOT}0`],
};

Deno.test("every route: malformed ids are 400 naming the parameter, unknown ids 404", async () => {
  await withService({}, async (fixture) => {
    const { taken } = await setUp(fixture);
    let checked = 0;
    for (const route of apiRoutes) {
      const names = [...route.path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]);
      if (names.length === 0) continue;
      const isSnapshot = (name: string) => name === "id" && route.path.startsWith("/v1/snapshots");
      const valid = (name: string) => isSnapshot(name) ? taken : name === "id" ? "a" : "t";
      const url = (values: Record<string, string>) =>
        route.path.replaceAll(/\{(\w+)\}/g, (_, name: string) => values[name] ?? valid(name));
      const json = validBody(route.operationId, fixture.allowed);
      for (const name of names) {
        for (const bad of malformedIds[isSnapshot(name) ? "snapshot" : "id"]) {
          await send(fixture, {
            method: route.method.toUpperCase(),
            path: url({ [name]: bad }),
            json,
            status: 400,
            code: "INVALID_ARGUMENT",
            field: name,
          });
          checked++;
        }
        const unknown = isSnapshot(name) ? UNKNOWN_SNAPSHOT : "unknown-device";
        await send(fixture, {
          method: route.method.toUpperCase(),
          path: url({ [name]: unknown }),
          json,
          status: 404,
          code: "NOT_FOUND",
        });
        checked++;
      }
    }
    assert.ok(checked > 100, `${checked} requests`);
  });
});

Deno.test("every body route: malformed JSON, wrong or missing content type, non-objects, unknown properties", async () => {
  await withService({}, async (fixture) => {
    const { created } = await setUp(fixture);
    const bodyRoutes = apiRoutes.filter((r) => r.body);
    assert.equal(bodyRoutes.length, 5);
    for (const route of bodyRoutes) {
      const path = route.path.replace(
        "{id}",
        route.path.startsWith("/v1/snapshots") ? created : "a",
      );
      const json = validBody(route.operationId, fixture.allowed) as Record<string, unknown>;
      const cases: Array<Omit<Case, "method" | "path">> = [
        {
          text: "{",
          headers: { "content-type": "application/json" },
          status: 400,
          code: "INVALID_ARGUMENT",
          field: "body",
        },
        {
          text: "",
          headers: { "content-type": "application/json" },
          status: 400,
          code: "INVALID_ARGUMENT",
          field: "body",
        },
        {
          text: JSON.stringify(json),
          headers: { "content-type": "text/plain" },
          status: 400,
          code: "INVALID_ARGUMENT",
          field: "body",
        },
        { text: JSON.stringify(json), status: 400, code: "INVALID_ARGUMENT", field: "body" },
        {
          text: "a=1",
          headers: { "content-type": "application/x-www-form-urlencoded" },
          status: 400,
          code: "INVALID_ARGUMENT",
          field: "body",
        },
        { json: [], status: 400, code: "INVALID_ARGUMENT", field: "body" },
        { json: null, status: 400, code: "INVALID_ARGUMENT", field: "body" },
        { json: "text", status: 400, code: "INVALID_ARGUMENT", field: "body" },
        { json: {}, status: 400, code: "INVALID_ARGUMENT" },
        {
          json: { ...json, surprise: 1 },
          status: 400,
          code: "INVALID_ARGUMENT",
          field: "surprise",
        },
      ];
      // An optional body may be empty, and an empty object is a valid take body: both would take.
      const applicable = route.bodyOptional
        ? cases.filter((c) => c.text !== "" && JSON.stringify(c.json) !== "{}")
        : cases;
      for (const c of applicable) {
        const problem = await send(fixture, { method: "POST", path, ...c });
        if (c.json === undefined) assert.match(problem.detail, /JSON/);
      }
    }
  });
});

Deno.test("wrong types and missing fields in every body are 400 naming the field", async () => {
  await withService({}, async (fixture) => {
    const { created } = await setUp(fixture);
    const { allowed } = fixture;
    const storage = { path: join(allowed, "x.diff"), limitBytes: MIB };
    const cases: Array<[string, unknown, string]> = [
      ["/v1/devices", { path: 1 }, "path"],
      ["/v1/devices", { path: "" }, "path"],
      ["/v1/devices", { name: "x" }, "path"],
      ["/v1/devices", { path: join(allowed, "a.img"), name: 5 }, "name"],
      ["/v1/devices", { path: join(allowed, "a.img"), name: "bad name" }, "name"],
      ["/v1/devices", { path: join(allowed, "a.img"), name: "" }, "name"],
      ["/v1/devices", { path: "x".repeat(5000) }, "path"],
      ["/v1/devices/a/cbt/dirty", { ranges: "0:1" }, "ranges"],
      ["/v1/devices/a/cbt/dirty", { ranges: [] }, "ranges"],
      ["/v1/devices/a/cbt/dirty", { ranges: [{ offset: -1, count: 1 }] }, "ranges[0].offset"],
      ["/v1/devices/a/cbt/dirty", { ranges: [{ offset: 0, count: 0 }] }, "ranges[0].count"],
      ["/v1/devices/a/cbt/dirty", { ranges: [{ offset: 1.5, count: 1 }] }, "ranges[0].offset"],
      ["/v1/devices/a/cbt/dirty", { ranges: [{ offset: "0", count: 1 }] }, "ranges[0].offset"],
      ["/v1/devices/a/cbt/dirty", { ranges: [{ offset: 0 }] }, "ranges[0].count"],
      ["/v1/devices/a/cbt/dirty", { ranges: [{ offset: 0, count: 1, x: 1 }] }, "ranges[0].x"],
      ["/v1/devices/a/cbt/dirty", { ranges: [{ offset: 2 ** 60, count: 1 }] }, "ranges[0].offset"],
      ["/v1/snapshots", { diffStorage: storage }, "devices"],
      ["/v1/snapshots", { devices: "a", diffStorage: storage }, "devices"],
      ["/v1/snapshots", { devices: [1], diffStorage: storage }, "devices[0]"],
      ["/v1/snapshots", { devices: ["no way"], diffStorage: storage }, "devices[0]"],
      ["/v1/snapshots", { devices: [] }, "diffStorage"],
      ["/v1/snapshots", { devices: [], diffStorage: "x" }, "diffStorage"],
      [
        "/v1/snapshots",
        { devices: [], diffStorage: { path: storage.path } },
        "diffStorage.limitBytes",
      ],
      [
        "/v1/snapshots",
        { devices: [], diffStorage: { ...storage, limitBytes: 0 } },
        "diffStorage.limitBytes",
      ],
      [
        "/v1/snapshots",
        { devices: [], diffStorage: { ...storage, limitBytes: 100 } },
        "diffStorage.limitBytes",
      ],
      [
        "/v1/snapshots",
        { devices: [], diffStorage: { ...storage, limitBytes: "1G" } },
        "diffStorage.limitBytes",
      ],
      [
        "/v1/snapshots",
        { devices: [], diffStorage: { ...storage, limitBytes: 1e300 } },
        "diffStorage.limitBytes",
      ],
      [
        "/v1/snapshots",
        { devices: [], diffStorage: { ...storage, extra: true } },
        "diffStorage.extra",
      ],
      ["/v1/snapshots", { devices: [], diffStorage: { ...storage, path: 7 } }, "diffStorage.path"],
      ["/v1/snapshots", { devices: [], diffStorage: storage, writable: "yes" }, "writable"],
      [`/v1/snapshots/${created}/devices`, {}, "device"],
      [`/v1/snapshots/${created}/devices`, { device: 1 }, "device"],
      [`/v1/snapshots/${created}/devices`, { device: ["a"] }, "device"],
    ];
    for (const [path, json, field] of cases) {
      await send(fixture, {
        method: "POST",
        path,
        json,
        status: 400,
        code: "INVALID_ARGUMENT",
        field,
      });
    }
    assert.deepEqual((await fixture.client.devices.list()).map((d) => d.id).sort(), ["a", "t"]);
    assert.equal((await fixture.client.snapshots.list()).length, 2, "nothing was created");
  });
});

Deno.test("bad query parameters are 400 naming the parameter", async () => {
  await withService({}, async (fixture) => {
    const { taken } = await setUp(fixture);
    const cases: Array<[string, string]> = [
      ["/v1/devices/a/cbt/map?offset=abc", "offset"],
      ["/v1/devices/a/cbt/map?offset=1.5", "offset"],
      ["/v1/devices/a/cbt/map?offset=1e3", "offset"],
      ["/v1/devices/a/cbt/map?length=-1", "length"],
      ["/v1/devices/a/cbt/map?length=99999999999999999999", "length"],
      ["/v1/devices/a/cbt/map?offset=", "offset"],
      ["/v1/devices/a/cbt/map?surprise=1", "surprise"],
      [`/v1/snapshots/${taken}/events?timeoutMs=soon`, "timeoutMs"],
      [`/v1/snapshots/${taken}/events?timeoutMs=-5`, "timeoutMs"],
      [`/v1/snapshots/${taken}/events?timeoutMs=300001`, "timeoutMs"],
      [`/v1/snapshots/${taken}/images/t/changes?since=${"A".repeat(129)}`, "since"],
      [`/v1/snapshots/${taken}/images/t/changes?since=1&generation=not-a-uuid`, "generation"],
      [`/v1/snapshots/${taken}/images/t/changes?generation=${crypto.randomUUID()}`, "generation"],
      [`/v1/snapshots/${taken}/events?after=-1`, "after"],
    ];
    for (const [path, field] of cases) {
      await send(fixture, { method: "GET", path, status: 400, code: "INVALID_ARGUMENT", field });
    }
  });
});

Deno.test("paths: outside the prefixes, symlink escapes, '..', relative, unresolvable", async () => {
  await withService({}, async (fixture) => {
    await setUp(fixture);
    const { allowed, outside } = fixture;
    await Deno.writeFile(join(outside, "secret.img"), new Uint8Array(MIB));
    await Deno.writeFile(join(allowed, "plain.img"), new Uint8Array(MIB));
    await Deno.symlink(join(outside, "secret.img"), join(allowed, "link.img"));
    await Deno.symlink(outside, join(allowed, "escape"));
    await Deno.symlink("/dev/null", join(allowed, "null.img"));
    await Deno.symlink(join(allowed, "loop2"), join(allowed, "loop1"));
    await Deno.symlink(join(allowed, "loop1"), join(allowed, "loop2"));
    const forbidden = { status: 403, code: "FORBIDDEN" as const };
    const invalid = { status: 400, code: "INVALID_ARGUMENT" as const };
    const cases: Array<[string, Omit<Case, "method" | "path" | "json">]> = [
      [join(outside, "secret.img"), forbidden],
      [`${allowed}/../outside/secret.img`, forbidden],
      [join(allowed, "link.img"), forbidden],
      [join(allowed, "escape", "secret.img"), forbidden],
      [join(allowed, "null.img"), forbidden],
      ["/etc/passwd", forbidden],
      ["plain.img", invalid],
      ["./plain.img", invalid],
      ["../allowed/plain.img", invalid],
      [join(allowed, "plain.img", "sub"), { ...invalid, errno: "ENOTDIR" }],
      [join(allowed, "loop1"), { ...invalid, errno: "ELOOP" }],
      [join(allowed, "n".repeat(300)), { ...invalid, errno: "ENAMETOOLONG" }],
      [`${allowed}/a\u0000b.img`, invalid],
      [join(allowed, "missing.img"), { status: 404, code: "NOT_FOUND", errno: "ENOENT" }],
    ];
    for (const [path, expected] of cases) {
      await send(fixture, {
        method: "POST",
        path: "/v1/devices",
        json: { path },
        field: "path",
        ...expected,
      });
      const storage = path === join(allowed, "missing.img") ? join(allowed, "nodir", "x") : path;
      await send(fixture, {
        method: "POST",
        path: "/v1/snapshots",
        json: { devices: [], diffStorage: { path: storage, limitBytes: MIB } },
        field: "diffStorage.path",
        ...expected,
      });
    }
    await send(fixture, {
      method: "POST",
      path: "/v1/snapshots",
      json: {
        devices: [],
        diffStorage: { path: join(allowed, "escape", "new.diff"), limitBytes: MIB },
      },
      field: "diffStorage.path",
      ...forbidden,
    });
    assert.deepEqual(
      [...Deno.readDirSync(outside)].map((e) => e.name),
      ["secret.img"],
      "nothing was created outside the prefix",
    );
    assert.deepEqual((await fixture.client.devices.list()).map((d) => d.id).sort(), ["a", "t"]);
  });
});

Deno.test("bodies over the limit are 413, with or without Content-Length", async () => {
  await withService({ bodyLimitBytes: 4096 }, async (fixture) => {
    const big = JSON.stringify({ ranges: Array(400).fill({ offset: 0, count: 1 }) });
    assert.ok(big.length > 4096);
    await send(fixture, {
      method: "POST",
      path: "/v1/devices/a/cbt/dirty",
      text: big,
      headers: { "content-type": "application/json" },
      status: 413,
      code: "PAYLOAD_TOO_LARGE",
      errno: "E2BIG",
    });
    const chunked = new ReadableStream<Uint8Array>({
      start(controller) {
        const bytes = new TextEncoder().encode(big);
        for (let at = 0; at < bytes.length; at += 1000) {
          controller.enqueue(bytes.slice(at, at + 1000));
        }
        controller.close();
      },
    });
    const response = await fixture.fetch("/v1/devices", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: chunked,
    });
    assert.equal(response.status, 413);
    assertProblem(await response.json(), {
      status: 413,
      code: "PAYLOAD_TOO_LARGE",
      errno: "E2BIG",
    });
  });
});

Deno.test("the default body limit admits a mark-dirty request of 65536 ranges", async () => {
  await withService({}, async (fixture) => {
    await fixture.client.devices.attach({ path: await fixture.makeDisk("a.img", MIB), name: "a" });
    const ranges = Array.from({ length: 65536 }, (_, i) => ({ offset: i % 2048, count: 1 }));
    await fixture.client.cbt.markDirty("a", ranges);
    await send(fixture, {
      method: "POST",
      path: "/v1/devices/a/cbt/dirty",
      json: { ranges: [...ranges, { offset: 0, count: 1 }] },
      status: 400,
      code: "INVALID_ARGUMENT",
      field: "ranges",
    });
  });
});

Deno.test("unknown routes and methods are 404 problems", async () => {
  await withService({}, async (fixture) => {
    for (
      const [method, path] of [["GET", "/"], ["GET", "/v2/devices"], ["PUT", "/v1/devices"], [
        "PATCH",
        "/v1/snapshots",
      ], ["GET", "/v1/devices/a/cbt/nope"]]
    ) {
      await send(fixture, { method, path, status: 404, code: "NOT_FOUND" });
    }
  });
});
