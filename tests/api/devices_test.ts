import assert from "node:assert/strict";
import { join } from "node:path";
import { rejectsWithProblem, responseProblem } from "../_helpers/api_problem.ts";
import { withService } from "../_helpers/service_fixture.ts";

const MIB = 1 << 20;
const snapshotLimit = 4 * MIB;

Deno.test("POST /v1/devices attaches a file: 201, Location, the NBD locator", async () => {
  await withService({}, async ({ fetch, client, makeDisk, driver }) => {
    const path = await makeDisk("disk-a.img", MIB);
    const response = await fetch("/v1/devices", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ path, name: "vda" }),
    });
    assert.equal(response.status, 201);
    assert.equal(response.headers.get("location"), "/v1/devices/vda");
    assert.equal(response.headers.get("content-type"), "application/json");
    const device = await response.json();
    assert.deepEqual(device, {
      id: "vda",
      path,
      capacityBytes: MIB,
      locator: `nbd://127.0.0.1:${driver.nbdServer.tcpPort}/vda`,
    });
    assert.deepEqual(await client.devices.get("vda"), device);
  });
});

Deno.test("devices: the id defaults to the base name; list, get, detach (204)", async () => {
  await withService({}, async ({ client, fetch, makeDisk }) => {
    const first = await client.devices.attach({ path: await makeDisk("first.img", MIB) });
    const second = await client.devices.attach({
      path: await makeDisk("second.img", 2 * MIB),
      name: "two",
    });
    assert.equal(first.id, "first.img");
    assert.equal(second.capacityBytes, 2 * MIB);
    assert.deepEqual(
      (await client.devices.list()).map((d) => d.id).sort(),
      ["first.img", "two"],
    );
    const response = await fetch("/v1/devices/two", { method: "DELETE" });
    assert.equal(response.status, 204);
    assert.equal(await response.text(), "");
    assert.deepEqual((await client.devices.list()).map((d) => d.id), ["first.img"]);
    await client.devices.detach("first.img");
    assert.deepEqual(await client.devices.list(), []);
  });
});

Deno.test("devices: attaching twice is 409 CONFLICT, by name and by file", async () => {
  await withService({}, async ({ client, makeDisk, allowed }) => {
    const path = await makeDisk("disk.img", MIB);
    await client.devices.attach({ path, name: "vda" });
    await rejectsWithProblem(client.devices.attach({ path, name: "vda" }), {
      status: 409,
      code: "CONFLICT",
    });
    const problem = await rejectsWithProblem(client.devices.attach({ path, name: "other" }), {
      status: 409,
      code: "CONFLICT",
    });
    assert.match(problem.detail, /attached as vda/);
    // The same file through a symlink is still the same device.
    await Deno.symlink(path, join(allowed, "alias.img"));
    await rejectsWithProblem(
      client.devices.attach({ path: join(allowed, "alias.img"), name: "alias" }),
      { status: 409, code: "CONFLICT" },
    );
    const other = await makeDisk("other.img", MIB);
    await rejectsWithProblem(client.devices.attach({ path: other, name: "vda" }), {
      status: 409,
      code: "CONFLICT",
      field: "name",
    });
    assert.equal((await client.devices.list()).length, 1);
  });
});

Deno.test("devices: unknown ids are 404 NOT_FOUND on get, detach and cbt", async () => {
  await withService({}, async ({ client, fetch }) => {
    await rejectsWithProblem(client.devices.get("nope"), { status: 404, code: "NOT_FOUND" });
    await rejectsWithProblem(client.devices.detach("nope"), { status: 404, code: "NOT_FOUND" });
    await rejectsWithProblem(client.cbt.info("nope"), { status: 404, code: "NOT_FOUND" });
    const problem = await responseProblem(await fetch("/v1/devices/nope"), {
      status: 404,
      code: "NOT_FOUND",
    });
    assert.equal(problem.instance, "/v1/devices/nope");
  });
});

Deno.test("devices: a missing file is 404 with ENOENT; detach while in a snapshot is 409", async () => {
  await withService({}, async ({ client, makeDisk, allowed }) => {
    await rejectsWithProblem(
      client.devices.attach({ path: join(allowed, "missing.img") }),
      { status: 404, code: "NOT_FOUND", field: "path", errno: "ENOENT" },
    );
    const device = await client.devices.attach({ path: await makeDisk("disk.img", MIB) });
    const snapshot = await client.snapshots.create({
      devices: [device.id],
      diffStorage: { path: join(allowed, "diff"), limitBytes: snapshotLimit },
    });
    assert.equal((await client.devices.get(device.id)).snapshotId, snapshot.id);
    const problem = await rejectsWithProblem(client.devices.detach(device.id), {
      status: 409,
      code: "CONFLICT",
    });
    assert.match(problem.detail, new RegExp(snapshot.id));
    await client.snapshots.destroy(snapshot.id);
    assert.equal((await client.devices.get(device.id)).snapshotId, undefined);
    await client.devices.detach(device.id);
  });
});

Deno.test("devices: a directory is refused with 400 naming the path", async () => {
  await withService({}, async ({ client, allowed }) => {
    await Deno.mkdir(join(allowed, "folder"));
    await rejectsWithProblem(client.devices.attach({ path: join(allowed, "folder") }), {
      status: 400,
      code: "INVALID_ARGUMENT",
      field: "path",
    });
  });
});

Deno.test("devices: default ids come from the base name; ids with ':' work on every device route", async () => {
  await withService({}, async ({ client, fetch, makeDisk, allowed }) => {
    const spaced = await client.devices.attach({ path: await makeDisk("my disk (1).img", MIB) });
    assert.equal(spaced.id, "my_disk__1_.img");
    const coloned = await client.devices.attach({ path: await makeDisk("vm:1.img", MIB) });
    assert.equal(coloned.id, "vm:1.img");
    const named = await client.devices.attach({
      path: await makeDisk("x.img", MIB),
      name: "host:vdb",
    });
    assert.equal(named.id, "host:vdb");
    for (const id of ["vm:1.img", "host:vdb"]) {
      assert.equal((await client.devices.get(id)).id, id);
      assert.equal((await client.cbt.info(id)).capacityBytes, MIB);
      assert.equal((await client.cbt.map(id)).length, MIB / 65536);
      await client.cbt.markDirty(id, [{ offset: 0, count: 1 }]);
      const raw = await fetch(`/v1/devices/${id}`);
      assert.equal(raw.status, 200, "a raw ':' in the path works too");
      await raw.body?.cancel();
    }
    const snapshot = await client.snapshots.create({
      devices: ["vm:1.img"],
      diffStorage: { path: join(allowed, "diff"), limitBytes: 4 * MIB },
    });
    await client.snapshots.addDevice(snapshot.id, "host:vdb");
    await client.snapshots.take(snapshot.id);
    assert.equal((await client.images.locator(snapshot.id, "host:vdb")).sizeBytes, MIB);
    const { generationId } = await client.cbt.info("vm:1.img");
    const sinceAttach = await client.images.changes(snapshot.id, "vm:1.img", {
      since: 0,
      generation: generationId,
    });
    assert.equal(sinceAttach.extents.length, 1);
    const image = await client.images.read(snapshot.id, "vm:1.img", { offset: 0, length: 10 });
    assert.equal((await image.arrayBuffer()).byteLength, 10);
    await client.snapshots.destroy(snapshot.id);
    await client.devices.detach("vm:1.img");
    await client.devices.detach("host:vdb");
  });
});
