import assert from "node:assert/strict";
import { join } from "node:path";
import { rejectsWithProblem, responseProblem } from "../_helpers/api_problem.ts";
import { nbdWrite } from "../_helpers/api_nbd.ts";
import { pattern, toolsMissing } from "../_helpers/nbd_fixture.ts";
import { API_BLOCK_BYTES, withService } from "../_helpers/service_fixture.ts";

const MIB = 1 << 20;
const BLOCKS = MIB / API_BLOCK_BYTES;
const SECTORS_PER_BLOCK = API_BLOCK_BYTES / 512;
const noNbdsh = toolsMissing("nbdsh");

function nonZero(map: Uint8Array): number[] {
  return [...map.keys()].filter((i) => map[i] !== 0);
}

Deno.test("GET .../cbt reports capacity, block size and count, generation, changes number", async () => {
  await withService({}, async ({ client, makeDisk }) => {
    await client.devices.attach({ path: await makeDisk("disk.img", MIB + 512), name: "vda" });
    const info = await client.cbt.info("vda");
    assert.equal(info.capacityBytes, MIB + 512);
    assert.equal(info.blockSizeBytes, API_BLOCK_BYTES);
    assert.equal(info.blockCount, BLOCKS + 1);
    assert.match(
      info.generationId,
      /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
    );
    assert.equal(info.changesNumber, 0);
  });
});

Deno.test("GET .../cbt/map gives octet-stream bytes, honours offset and length, refuses ranges beyond the map", async () => {
  await withService({}, async ({ client, fetch, makeDisk }) => {
    await client.devices.attach({ path: await makeDisk("disk.img", MIB), name: "vda" });
    const info = await client.cbt.info("vda");
    const response = await fetch("/v1/devices/vda/cbt/map");
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "application/octet-stream");
    assert.equal(response.headers.get("x-cbt-generation-id"), info.generationId);
    assert.equal(response.headers.get("x-cbt-changes-number"), "0");
    assert.equal(response.headers.get("x-cbt-block-size"), String(API_BLOCK_BYTES));
    assert.deepEqual(new Uint8Array(await response.arrayBuffer()), new Uint8Array(BLOCKS));
    assert.equal((await client.cbt.map("vda", { blockOffset: 4, blockCount: 3 })).length, 3);
    assert.equal((await client.cbt.map("vda", { blockOffset: 10 })).length, BLOCKS - 10);
    assert.equal((await client.cbt.map("vda", { blockOffset: BLOCKS, blockCount: 0 })).length, 0);
    await rejectsWithProblem(client.cbt.map("vda", { blockOffset: BLOCKS + 1 }), {
      status: 400,
      code: "OUT_OF_RANGE",
      field: "blockOffset",
    });
    await rejectsWithProblem(client.cbt.map("vda", { blockOffset: 10, blockCount: 7 }), {
      status: 400,
      code: "OUT_OF_RANGE",
      field: "blockCount",
    });
    await responseProblem(await fetch("/v1/devices/vda/cbt/map?blockOffset=-1"), {
      status: 400,
      code: "INVALID_ARGUMENT",
      field: "blockOffset",
    });
    await rejectsWithProblem(client.cbt.map("nope"), { status: 404, code: "NOT_FOUND" });
  });
});

Deno.test("POST .../cbt/dirty is 204; the map shows the marked blocks after the next take", async () => {
  await withService({}, async ({ client, fetch, makeDisk, allowed }) => {
    await client.devices.attach({ path: await makeDisk("disk.img", MIB), name: "vda" });
    const response = await fetch("/v1/devices/vda/cbt/dirty", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ranges: [{ sectorOffset: 2 * SECTORS_PER_BLOCK, sectorCount: 1 }] }),
    });
    assert.equal(response.status, 204);
    assert.equal(await response.text(), "");
    // Block 5 and 6: one range straddling their border.
    await client.cbt.markDirty("vda", [{
      sectorOffset: 6 * SECTORS_PER_BLOCK - 1,
      sectorCount: 2,
    }]);
    await rejectsWithProblem(
      client.cbt.markDirty("vda", [{ sectorOffset: BLOCKS * SECTORS_PER_BLOCK, sectorCount: 1 }]),
      { status: 400, code: "OUT_OF_RANGE" },
    );
    await rejectsWithProblem(client.cbt.markDirty("nope", [{ sectorOffset: 0, sectorCount: 1 }]), {
      status: 404,
      code: "NOT_FOUND",
    });
    const snapshot = await client.snapshots.create({
      devices: ["vda"],
      diffStorage: { path: join(allowed, "diff"), limitBytes: 4 * MIB },
    });
    await client.snapshots.take(snapshot.id);
    const info = await client.cbt.info("vda");
    const map = await client.cbt.map("vda");
    assert.deepEqual(nonZero(map), [2, 5, 6]);
    for (const block of [2, 5, 6]) assert.ok(map[block] >= info.changesNumber);
    await client.snapshots.destroy(snapshot.id);
  });
});

Deno.test({
  name: "writes through the device's NBD export show in the map after take, and only their blocks",
  ignore: noNbdsh,
  async fn() {
    await withService({}, async ({ client, makeDisk, allowed, root }) => {
      const device = await client.devices.attach({
        path: await makeDisk("disk.img", MIB),
        name: "vda",
      });
      await nbdWrite(device.locator, [
        { offset: 3 * API_BLOCK_BYTES + 100, data: pattern(10, 1) },
        { offset: 9 * API_BLOCK_BYTES - 1, data: pattern(2, 2) },
      ], { scratchDir: root });
      assert.deepEqual(nonZero(await client.cbt.map("vda")), [], "the read table moves at take");
      const snapshot = await client.snapshots.create({
        devices: ["vda"],
        diffStorage: { path: join(allowed, "diff"), limitBytes: 4 * MIB },
      });
      await client.snapshots.take(snapshot.id);
      const info = await client.cbt.info("vda");
      assert.equal(info.changesNumber, 1);
      const map = await client.cbt.map("vda");
      assert.deepEqual(nonZero(map), [3, 8, 9]);
      await client.snapshots.destroy(snapshot.id);
    });
  },
});
