import assert from "node:assert/strict";
import { join } from "node:path";
import { rejectsWithProblem, responseProblem } from "../_helpers/api_problem.ts";
import { withService } from "../_helpers/service_fixture.ts";

const MIB = 1 << 20;
const UNKNOWN_SNAPSHOT = "00000000-0000-4000-8000-000000000000";

Deno.test("POST /v1/snapshots creates (201, Location); add, take, list, get, destroy", async () => {
  await withService({}, async ({ client, fetch, makeDisk, allowed }) => {
    await client.devices.attach({ path: await makeDisk("a.img", MIB), name: "a" });
    await client.devices.attach({ path: await makeDisk("b.img", 2 * MIB), name: "b" });
    const storage = join(allowed, "diff");
    const response = await fetch("/v1/snapshots", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ devices: ["a"], diffStorage: { path: storage, limitBytes: 4 * MIB } }),
    });
    assert.equal(response.status, 201);
    const created = await response.json();
    assert.equal(response.headers.get("location"), `/v1/snapshots/${created.id}`);
    assert.equal(created.state, "created");
    assert.equal(created.writable, false);
    assert.ok(!Number.isNaN(Date.parse(created.createdAt)));
    assert.equal(created.takenAt, undefined);
    assert.deepEqual(created.devices, [{ deviceId: "a", errorCode: 0 }]);
    assert.equal(created.storage.path, storage);
    assert.equal(created.storage.limitBytes, 4 * MIB);
    assert.equal(created.storage.usedBytes, 0);
    assert.ok(created.storage.capacityBytes > 0 && created.storage.capacityBytes <= 4 * MIB);
    assert.equal((await Deno.stat(storage)).size, created.storage.capacityBytes);

    const added = await client.snapshots.addDevice(created.id, "b");
    assert.deepEqual(added.devices.map((d) => d.deviceId), ["a", "b"]);
    assert.equal((await client.devices.get("b")).snapshotId, created.id);

    const taken = await client.snapshots.take(created.id);
    assert.equal(taken.state, "taken");
    assert.ok(Date.parse(taken.takenAt!) >= Date.parse(taken.createdAt));
    for (const image of taken.devices) {
      assert.match(image.locator!, new RegExp(`^nbd://127\\.0\\.0\\.1:\\d+/${image.deviceId}@`));
      assert.equal(image.errorCode, 0);
    }
    assert.deepEqual(await client.snapshots.get(created.id), taken);
    assert.deepEqual(await client.snapshots.list(), [taken]);

    const destroyed = await fetch(`/v1/snapshots/${created.id}`, { method: "DELETE" });
    assert.equal(destroyed.status, 204);
    assert.equal(await destroyed.text(), "");
    assert.deepEqual(await client.snapshots.list(), []);
    await rejectsWithProblem(client.snapshots.get(created.id), { status: 404, code: "NOT_FOUND" });
    await rejectsWithProblem(client.snapshots.destroy(created.id), {
      status: 404,
      code: "NOT_FOUND",
    });
    assert.equal((await client.devices.get("a")).snapshotId, undefined);
  });
});

Deno.test("snapshots: take twice and add after take are 409 CONFLICT", async () => {
  await withService({}, async ({ client, makeDisk, allowed }) => {
    await client.devices.attach({ path: await makeDisk("a.img", MIB), name: "a" });
    await client.devices.attach({ path: await makeDisk("b.img", MIB), name: "b" });
    const snapshot = await client.snapshots.create({
      devices: ["a"],
      diffStorage: { path: join(allowed, "diff"), limitBytes: 4 * MIB },
    });
    await client.snapshots.take(snapshot.id);
    await rejectsWithProblem(client.snapshots.take(snapshot.id), {
      status: 409,
      code: "CONFLICT",
    });
    await rejectsWithProblem(client.snapshots.addDevice(snapshot.id, "b"), {
      status: 409,
      code: "CONFLICT",
    });
    assert.equal((await client.snapshots.get(snapshot.id)).state, "taken");
  });
});

Deno.test("snapshots: a device already in a snapshot is 409, on create and on add", async () => {
  await withService({}, async ({ client, makeDisk, allowed }) => {
    await client.devices.attach({ path: await makeDisk("a.img", MIB), name: "a" });
    const first = await client.snapshots.create({
      devices: ["a"],
      diffStorage: { path: join(allowed, "diff1"), limitBytes: 4 * MIB },
    });
    const problem = await rejectsWithProblem(
      client.snapshots.create({
        devices: ["a"],
        diffStorage: { path: join(allowed, "diff2"), limitBytes: 4 * MIB },
      }),
      { status: 409, code: "CONFLICT" },
    );
    assert.match(problem.detail, new RegExp(first.id));
    const second = await client.snapshots.create({
      devices: [],
      diffStorage: { path: join(allowed, "diff3"), limitBytes: 4 * MIB },
    });
    await rejectsWithProblem(client.snapshots.addDevice(second.id, "a"), {
      status: 409,
      code: "CONFLICT",
    });
    await rejectsWithProblem(client.snapshots.addDevice(second.id, "nope"), {
      status: 404,
      code: "NOT_FOUND",
    });
    await rejectsWithProblem(client.snapshots.take(second.id), { status: 409, code: "CONFLICT" });
    assert.equal((await client.snapshots.list()).length, 2);
  });
});

Deno.test("snapshots: unknown devices are 404 and unknown snapshots 404 on every snapshot route", async () => {
  await withService({}, async ({ client, allowed }) => {
    await rejectsWithProblem(
      client.snapshots.create({
        devices: ["nope"],
        diffStorage: { path: join(allowed, "diff"), limitBytes: MIB },
      }),
      { status: 404, code: "NOT_FOUND" },
    );
    const expected = { status: 404, code: "NOT_FOUND" } as const;
    await rejectsWithProblem(client.snapshots.get(UNKNOWN_SNAPSHOT), expected);
    await rejectsWithProblem(client.snapshots.take(UNKNOWN_SNAPSHOT), expected);
    await rejectsWithProblem(client.snapshots.addDevice(UNKNOWN_SNAPSHOT, "a"), expected);
    await rejectsWithProblem(client.snapshots.destroy(UNKNOWN_SNAPSHOT), expected);
    await rejectsWithProblem(
      client.snapshots.waitEvents(UNKNOWN_SNAPSHOT, { timeoutMs: 0 }),
      expected,
    );
    await rejectsWithProblem(client.images.locator(UNKNOWN_SNAPSHOT, "a"), expected);
    await rejectsWithProblem(client.images.read(UNKNOWN_SNAPSHOT, "a"), expected);
    await rejectsWithProblem(client.images.changes(UNKNOWN_SNAPSHOT, "a"), expected);
  });
});

Deno.test("snapshots: an existing non-empty storage file is 409 unless overwrite, which empties it", async () => {
  await withService({}, async ({ client, fetch, makeDisk, allowed }) => {
    await client.devices.attach({ path: await makeDisk("a.img", MIB), name: "a" });
    const storage = join(allowed, "full.diff");
    await Deno.writeFile(storage, new Uint8Array(64 * 1024).fill(7));
    const create = (diffStorage: Record<string, unknown>) =>
      fetch("/v1/snapshots", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ devices: ["a"], diffStorage }),
      });
    const problem = await responseProblem(await create({ path: storage, limitBytes: 32768 }), {
      status: 409,
      code: "CONFLICT",
    });
    assert.match(problem.detail, /non-empty file .*overwrite/);
    assert.equal((await Deno.stat(storage)).size, 64 * 1024, "the file is untouched");
    assert.deepEqual(await client.snapshots.list(), []);
    assert.equal((await client.devices.get("a")).snapshotId, undefined, "the device is free again");
    const response = await create({ path: storage, limitBytes: 32768, overwrite: true });
    assert.equal(response.status, 201, await response.clone().text());
    const created = await response.json();
    assert.equal(created.storage.limitBytes, 32768);
    assert.ok(created.storage.capacityBytes <= 32768, "the limit holds");
    assert.ok((await Deno.stat(storage)).size <= 32768, "the file was emptied, then grown");
    await client.snapshots.destroy(created.id);
    assert.equal((await Deno.stat(storage)).size <= 32768, true, "a file not created here stays");
  });
});

Deno.test("snapshots: a directory as storage gets an unnamed file; writable is reported", async () => {
  await withService({}, async ({ client, makeDisk, allowed }) => {
    await client.devices.attach({ path: await makeDisk("a.img", MIB), name: "a" });
    const folder = join(allowed, "diffs");
    await Deno.mkdir(folder);
    const snapshot = await client.snapshots.create({
      devices: ["a"],
      diffStorage: { path: folder, limitBytes: MIB },
      writable: true,
    });
    assert.equal(snapshot.writable, true);
    assert.equal(snapshot.storage!.path, folder);
    assert.deepEqual([...Deno.readDirSync(folder)], [], "the storage file has no name");
    await client.snapshots.destroy(snapshot.id);
  });
});

Deno.test("snapshots: a storage that is an attached device or another snapshot's storage is refused", async () => {
  await withService({}, async ({ client, makeDisk, allowed }) => {
    const aPath = await makeDisk("a.img", MIB, 1);
    const bPath = await makeDisk("b.img", MIB, 2);
    const cPath = await makeDisk("c.img", MIB, 3);
    await client.devices.attach({ path: aPath, name: "a" });
    await client.devices.attach({ path: bPath, name: "b" });
    await client.devices.attach({ path: cPath, name: "c" });
    const bBefore = await Deno.readFile(bPath);
    // The member's own file: the engine refuses it.
    await rejectsWithProblem(
      client.snapshots.create({ devices: ["a"], diffStorage: { path: aPath, limitBytes: MIB } }),
      { status: 400, code: "INVALID_ARGUMENT" },
    );
    // Another attached device's file: copy-on-write data would overwrite that device.
    await rejectsWithProblem(
      client.snapshots.create({ devices: ["a"], diffStorage: { path: bPath, limitBytes: MIB } }),
      { status: 409, code: "CONFLICT" },
    );
    assert.deepEqual(await Deno.readFile(bPath), bBefore, "the device's file is untouched");
    // Another snapshot's storage file: both would hand out the same space.
    const shared = join(allowed, "shared.diff");
    const first = await client.snapshots.create({
      devices: ["a"],
      diffStorage: { path: shared, limitBytes: MIB },
    });
    await rejectsWithProblem(
      client.snapshots.create({ devices: ["c"], diffStorage: { path: shared, limitBytes: MIB } }),
      { status: 409, code: "CONFLICT" },
    );
    assert.deepEqual((await client.snapshots.list()).map((s) => s.id), [first.id]);
    assert.equal((await client.devices.get("c")).snapshotId, undefined);
    // A folder is fine twice: each snapshot gets its own unnamed file in it.
    const folder = join(allowed, "diffs");
    await Deno.mkdir(folder);
    await client.snapshots.create({
      devices: ["b"],
      diffStorage: { path: folder, limitBytes: MIB },
    });
    await client.snapshots.create({
      devices: ["c"],
      diffStorage: { path: folder, limitBytes: MIB },
    });
  });
});
