import assert from "node:assert/strict";
import { join } from "node:path";
import { rejectsWithProblem, responseProblem } from "../_helpers/api_problem.ts";
import { nbdRead, nbdWrite } from "../_helpers/api_nbd.ts";
import { pattern, toolsMissing } from "../_helpers/nbd_fixture.ts";
import {
  API_BLOCK_BYTES,
  type ServiceFixture,
  withService,
  writeDisk,
} from "../_helpers/service_fixture.ts";

const MIB = 1 << 20;
/** Not a multiple of the block size: the last chunk and block are short. */
const SIZE = MIB + 3 * 512;
const noNbdsh = toolsMissing("nbdsh");

/** Attaches a disk "vda" of SIZE bytes, creates and takes a snapshot; returns its content and id. */
async function taken(fixture: ServiceFixture): Promise<{ content: Uint8Array; id: string }> {
  const { client, allowed } = fixture;
  const path = join(allowed, "disk.img");
  const content = await writeDisk(path, SIZE, { seed: 11 });
  await client.devices.attach({ path, name: "vda" });
  const snapshot = await client.snapshots.create({
    devices: ["vda"],
    diffStorage: { path: join(allowed, "diff"), limitBytes: 4 * MIB },
  });
  await client.snapshots.take(snapshot.id);
  return { content, id: snapshot.id };
}

Deno.test("GET .../images/{device} gives the NBD locator and size; 409 before take, 404 for others", async () => {
  await withService({}, async (fixture) => {
    const { client, driver, makeDisk, allowed } = fixture;
    await client.devices.attach({ path: await makeDisk("b.img", MIB), name: "b" });
    const before = await client.snapshots.create({
      devices: ["b"],
      diffStorage: { path: join(allowed, "diff-b"), limitBytes: MIB },
    });
    await rejectsWithProblem(client.images.locator(before.id, "b"), {
      status: 409,
      code: "CONFLICT",
    });
    await rejectsWithProblem(client.images.read(before.id, "b"), {
      status: 409,
      code: "CONFLICT",
    });
    await rejectsWithProblem(client.images.changes(before.id, "b"), {
      status: 409,
      code: "CONFLICT",
    });
    const { id } = await taken(fixture);
    const locator = await client.images.locator(id, "vda");
    const [image] = (await client.snapshots.get(id)).devices;
    assert.ok(image.changeToken, "a taken image has a change token");
    assert.deepEqual(locator, {
      snapshotId: id,
      deviceId: "vda",
      locator: `nbd://127.0.0.1:${driver.nbdServer.tcpPort}/vda@${id}`,
      sizeBytes: SIZE,
      changeToken: image.changeToken,
    });
    await rejectsWithProblem(client.images.locator(id, "b"), { status: 404, code: "NOT_FOUND" });
    await rejectsWithProblem(client.images.locator(id, "nope"), {
      status: 404,
      code: "NOT_FOUND",
    });
  });
});

Deno.test("GET .../data: 200 with the whole image, 206 for a Range, 416 with Content-Range */size", async () => {
  await withService({}, async (fixture) => {
    const { content, id } = await taken(fixture);
    const url = `/v1/snapshots/${id}/images/vda/data`;
    const whole = await fixture.fetch(url);
    assert.equal(whole.status, 200);
    assert.equal(whole.headers.get("content-type"), "application/octet-stream");
    assert.equal(whole.headers.get("content-length"), String(SIZE));
    assert.equal(whole.headers.get("accept-ranges"), "bytes");
    assert.deepEqual(new Uint8Array(await whole.arrayBuffer()), content);

    const cases: Array<[string, number, number]> = [
      ["bytes=0-99", 0, 100],
      ["bytes=1000-", 1000, SIZE - 1000],
      ["bytes=-1536", SIZE - 1536, 1536],
      ["bytes=65530-65545", 65530, 16],
      [`bytes=${SIZE - 1}-${SIZE + 100}`, SIZE - 1, 1],
    ];
    for (const [range, offset, length] of cases) {
      const partial = await fixture.fetch(url, { headers: { range } });
      assert.equal(partial.status, 206, range);
      assert.equal(
        partial.headers.get("content-range"),
        `bytes ${offset}-${offset + length - 1}/${SIZE}`,
      );
      assert.equal(partial.headers.get("content-length"), String(length));
      assert.deepEqual(
        new Uint8Array(await partial.arrayBuffer()),
        content.subarray(offset, offset + length),
        range,
      );
    }
    for (const range of [`bytes=${SIZE}-`, `bytes=${SIZE + 5}-${SIZE + 10}`, "bytes=-0"]) {
      const refused = await fixture.fetch(url, { headers: { range } });
      assert.equal(refused.headers.get("content-range"), `bytes */${SIZE}`);
      await responseProblem(refused, { status: 416, code: "RANGE_NOT_SATISFIABLE" });
    }
    const viaClient = await fixture.client.images.read(id, "vda", { offset: 4096, length: 8192 });
    assert.equal(viaClient.status, 206);
    assert.deepEqual(new Uint8Array(await viaClient.arrayBuffer()), content.subarray(4096, 12288));
  });
});

Deno.test({
  name: "image data stays as at take time while the device is overwritten through NBD",
  ignore: noNbdsh,
  async fn() {
    await withService({}, async (fixture) => {
      const { content, id } = await taken(fixture);
      const device = await fixture.client.devices.get("vda");
      const fresh = pattern(3 * API_BLOCK_BYTES, 99);
      await nbdWrite(device.locator, [
        { offset: API_BLOCK_BYTES / 2, data: fresh },
        { offset: SIZE - 512, data: pattern(512, 98) },
      ], { scratchDir: fixture.root });
      const image = await fixture.client.images.read(id, "vda");
      assert.deepEqual(new Uint8Array(await image.arrayBuffer()), content);
      const locator = await fixture.client.images.locator(id, "vda");
      assert.deepEqual(
        await nbdRead(locator.locator, { offset: 0, length: SIZE, scratchDir: fixture.root }),
        content,
        "the image's NBD export agrees",
      );
      assert.deepEqual(
        await nbdRead(device.locator, {
          offset: API_BLOCK_BYTES / 2,
          length: fresh.length,
          scratchDir: fixture.root,
        }),
        fresh,
      );
    });
  },
});

Deno.test({
  name: "GET .../changes lists the extents written before take, merged and clipped to the capacity",
  ignore: noNbdsh,
  async fn() {
    await withService({}, async (fixture) => {
      const { client, allowed, root } = fixture;
      const path = join(allowed, "disk.img");
      await writeDisk(path, SIZE, { seed: 3 });
      const device = await client.devices.attach({ path, name: "vda" });
      await nbdWrite(device.locator, [
        { offset: 2 * API_BLOCK_BYTES + 5, data: pattern(API_BLOCK_BYTES, 1) }, // blocks 2 and 3
        { offset: SIZE - 100, data: pattern(100, 2) }, // the short last block, 16
      ], { scratchDir: root });
      const snapshot = await client.snapshots.create({
        devices: ["vda"],
        diffStorage: { path: join(allowed, "diff"), limitBytes: 4 * MIB },
      });
      const info = await client.snapshots.take(snapshot.id);
      const cbt = await client.cbt.info("vda");
      await rejectsWithProblem(client.images.changes(info.id, "vda"), {
        status: 409,
        code: "FULL_BACKUP_REQUIRED",
        reason: "generation_changed", // no earlier snapshot to be relative to
      });
      const changes = await client.images.changes(info.id, "vda", {
        since: 0,
        generation: cbt.generationId,
      });
      assert.deepEqual(changes, {
        snapshotId: info.id,
        deviceId: "vda",
        changeToken: info.devices[0].changeToken,
        generationId: cbt.generationId,
        changesNumber: 1,
        since: 0,
        blockSize: API_BLOCK_BYTES,
        capacityBytes: SIZE,
        changedBytes: 2 * API_BLOCK_BYTES + 3 * 512,
        extents: [
          { offset: 2 * API_BLOCK_BYTES, length: 2 * API_BLOCK_BYTES },
          { offset: 16 * API_BLOCK_BYTES, length: 3 * 512 },
        ],
      });
      await rejectsWithProblem(
        client.images.changes(info.id, "vda", { since: changes.changeToken }),
        { status: 409, code: "FULL_BACKUP_REQUIRED", reason: "not_earlier" },
      );
    });
  },
});

Deno.test("a client that stops reading an image, or a destroy during a read, leaves the service working", async () => {
  await withService({}, async (fixture) => {
    const { client, allowed } = fixture;
    const path = join(allowed, "big.img");
    const content = await writeDisk(path, 6 * MIB, { seed: 21 });
    await client.devices.attach({ path, name: "big" });
    const snapshot = await client.snapshots.create({
      devices: ["big"],
      diffStorage: { path: join(allowed, "diff"), limitBytes: 4 * MIB },
    });
    await client.snapshots.take(snapshot.id);
    const abandoned = await client.images.read(snapshot.id, "big");
    const reader = abandoned.body!.getReader();
    assert.ok(((await reader.read()).value?.length ?? 0) > 0);
    await reader.cancel();

    const cut = await client.images.read(snapshot.id, "big");
    const cutReader = cut.body!.getReader();
    const pieces = [(await cutReader.read()).value!];
    await client.snapshots.destroy(snapshot.id);
    let failed = false;
    try {
      for (let piece; !(piece = await cutReader.read()).done;) pieces.push(piece.value);
    } catch {
      failed = true; // The image went away: the response ends short, with an error.
    }
    if (!failed) {
      // Whatever was read before the destroy (buffers may hold it all) must be the image.
      assert.deepEqual(new Uint8Array(await new Blob(pieces).arrayBuffer()), content);
    }

    const again = await client.snapshots.create({
      devices: ["big"],
      diffStorage: { path: join(allowed, "diff"), limitBytes: 4 * MIB },
    });
    await client.snapshots.take(again.id);
    const whole = await client.images.read(again.id, "big");
    assert.deepEqual(new Uint8Array(await whole.arrayBuffer()), content);
  });
});
