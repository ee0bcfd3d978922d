import assert from "node:assert/strict";
import { join } from "node:path";
import type { BlksnapClient } from "../../src/client/client.ts";
import { type NbdWrite, nbdWrite } from "../_helpers/api_nbd.ts";
import { pattern, toolsMissing } from "../_helpers/nbd_fixture.ts";
import { API_BLOCK_BYTES, withService, writeDisk } from "../_helpers/service_fixture.ts";

const MIB = 1 << 20;
/** Over 3 MiB: the image streams in several pieces; the last block is short. */
const SIZE = 3 * MIB + 5 * 512;

function apply(content: Uint8Array, writes: NbdWrite[]): Uint8Array {
  const result = content.slice();
  for (const write of writes) result.set(write.data, write.offset);
  return result;
}

/** Byte extents of the tracking blocks `writes` touch, merged, clipped to SIZE. */
function blocksOf(writes: NbdWrite[]): Array<{ offset: number; length: number }> {
  const blocks = new Set<number>();
  for (const { offset, data } of writes) {
    const last = Math.floor((offset + data.length - 1) / API_BLOCK_BYTES);
    for (let b = Math.floor(offset / API_BLOCK_BYTES); b <= last; b++) blocks.add(b);
  }
  const extents: Array<{ offset: number; length: number }> = [];
  for (const block of [...blocks].sort((x, y) => x - y)) {
    const offset = block * API_BLOCK_BYTES;
    const length = Math.min(API_BLOCK_BYTES, SIZE - offset);
    const previous = extents.at(-1);
    if (previous && previous.offset + previous.length === offset) previous.length += length;
    else extents.push({ offset, length });
  }
  return extents;
}

async function readRange(
  client: BlksnapClient,
  id: string,
  offset: number,
  length: number,
): Promise<Uint8Array> {
  const response = await client.images.read(id, "vm1", { offset, length });
  assert.equal(response.status, 206);
  assert.equal(
    response.headers.get("content-range"),
    `bytes ${offset}-${offset + length - 1}/${SIZE}`,
  );
  return new Uint8Array(await response.arrayBuffer());
}

const beforeFirstTake: NbdWrite[] = [
  { offset: 0, data: pattern(4096, 1) },
  { offset: MIB - 10, data: pattern(20, 2) }, // across a piece border and a block border
  { offset: 2 * MIB + 3 * API_BLOCK_BYTES, data: pattern(2 * API_BLOCK_BYTES, 3) },
];
const afterFirstTake: NbdWrite[] = [
  { offset: 100, data: pattern(1000, 4) }, // overwrites what the first snapshot must keep
  { offset: MIB + 7 * API_BLOCK_BYTES + 1, data: pattern(3 * API_BLOCK_BYTES, 5) },
  { offset: SIZE - 700, data: pattern(700, 6) }, // the short last block
];

Deno.test({
  name:
    "end to end: attach, write through NBD, take, keep writing, read the image by Range, changes, destroy, detach",
  ignore: toolsMissing("nbdsh"),
  async fn(t) {
    await withService({}, async ({ client, allowed, root }) => {
      const path = join(allowed, "vm1.img");
      const original = await writeDisk(path, SIZE, { seed: 42 });
      let device = await client.devices.attach({ path, name: "vm1" });
      const atFirstTake = apply(original, beforeFirstTake);
      const atSecondTake = apply(atFirstTake, afterFirstTake);
      let first = "";

      await t.step("write through the device's NBD export, create and take", async () => {
        await nbdWrite(device.locator, beforeFirstTake, { scratchDir: root });
        const created = await client.snapshots.create({
          devices: ["vm1"],
          diffStorage: { path: join(allowed, "vm1.diff"), limitBytes: 8 * MIB },
        });
        first = created.id;
        assert.equal((await client.snapshots.take(first)).state, "taken");
      });

      await t.step("keep writing: the image over HTTP reads as at take time", async () => {
        await nbdWrite(device.locator, afterFirstTake, { scratchDir: root });
        const whole = await client.images.read(first, "vm1");
        assert.equal(whole.status, 200);
        assert.deepEqual(new Uint8Array(await whole.arrayBuffer()), atFirstTake);
        for (
          const [offset, length] of [[0, 4096], [50, 2000], [MIB - 100, MIB + 200], [
            SIZE - 1000,
            1000,
          ], [MIB + 7 * API_BLOCK_BYTES, 4 * API_BLOCK_BYTES]]
        ) {
          assert.deepEqual(
            await readRange(client, first, offset, length),
            atFirstTake.subarray(offset, offset + length),
            `range ${offset}+${length}`,
          );
        }
        const info = await client.snapshots.get(first);
        assert.equal(info.state, "taken");
        assert.ok(info.storage!.usedBytes > 0, "copy-on-write used the storage");
      });

      await t.step(
        "changes of the first snapshot cover exactly the blocks written before it",
        async () => {
          const { generationId } = await client.cbt.info("vm1");
          const changes = await client.images.changes(first, "vm1", {
            since: 0,
            generation: generationId,
          });
          assert.deepEqual(changes.extents, blocksOf(beforeFirstTake));
          assert.equal(
            changes.changedBytes,
            blocksOf(beforeFirstTake).reduce((n, e) => n + e.length, 0),
          );
        },
      );

      await t.step(
        "an incremental backup from the next snapshot's changes rebuilds the device",
        async () => {
          const [{ changeToken: firstToken }] = (await client.snapshots.get(first)).devices;
          await client.snapshots.destroy(first);
          const second = await client.snapshots.create({
            devices: ["vm1"],
            diffStorage: { path: join(allowed, "vm1.diff"), limitBytes: 8 * MIB },
          });
          await client.snapshots.take(second.id);
          const changes = await client.images.changes(second.id, "vm1", { since: firstToken });
          assert.equal(changes.changesNumber, 2);
          assert.equal(changes.sinceToken, firstToken);
          assert.deepEqual(
            await client.images.changes(second.id, "vm1"),
            changes,
            "by default relative to the previous snapshot",
          );
          assert.deepEqual(changes.extents, blocksOf(afterFirstTake));
          const rebuilt = atFirstTake.slice();
          for (const extent of changes.extents) {
            rebuilt.set(
              await readRange(client, second.id, extent.offset, extent.length),
              extent.offset,
            );
          }
          assert.deepEqual(rebuilt, atSecondTake);
          await client.snapshots.destroy(second.id);
        },
      );

      await t.step("destroy and detach: the file holds every write", async () => {
        assert.deepEqual(await client.snapshots.list(), []);
        device = await client.devices.get("vm1");
        assert.equal(device.snapshotId, undefined);
        await client.devices.detach("vm1");
        assert.deepEqual(await client.devices.list(), []);
        assert.deepEqual(await Deno.readFile(path), atSecondTake);
      });
    });
  },
});
