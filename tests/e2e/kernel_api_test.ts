/**
 * The kernel backend through the service's HTTP API on a virtio disk: partition 1 of the lab's
 * scratch disk (64 MiB) is the origin, with the kernel's blksnap ready (the out-of-tree bdevfilter
 * + veeamblksnap loaded, or the upstream blksnap of the kernel) and the service started with
 * `--backend kernel`. Every case ends by destroying, detaching, stopping the service and checking
 * that nothing leaked (an rmmod that fails, or, built in, a filter or image left over, fails it).
 *
 * - Images: one snapshot per kind of difference storage (a file on tmpfs, a directory on tmpfs
 *   where the module makes an unnamed file, a spare block device: partition 2); each image,
 *   read through the node SNAPSHOTINFO names (the profile's: /dev/veeamblksnapimg_M:m or
 *   /dev/blksnap-M-m of the origin) and through the API's Range reads while the
 *   origin is being written, equals the origin at take time; the origin has every write.
 * - CBT: changes number 0 after attach, 1 after the first take, 2 after the second, and exactly
 *   the blocks written between the takes read 2 (also as `.../changes` extents); ranges marked
 *   dirty read 3 after the third take.
 * - Overflow: a 1 MiB storage and a write to every 256 KiB chunk: a corrupted event with ENOSPC
 *   (received on the SSE stream, `.../events/stream`), the snapshot corrupted with error 28 for
 *   the device, image reads refused, the origin intact; after destroy the storage's tmpfs
 *   unmounts within 5 s (the module has let go of the file). (This module build sends no `no_space`
 *   event for a file storage: it reports only the corruption.)
 */

import assert from "node:assert/strict";
import { ProblemError } from "../../src/client/mod.ts";
import type { SnapshotEvent } from "../../src/driver.ts";
import { Prng } from "../_helpers/prng.ts";
import { assertSameBytes, randomBytes, readAt, writeAt } from "./_helpers/block_io.ts";
import { withCleanup } from "./_helpers/cleanup.ts";
import { labTest } from "./_helpers/guest.ts";
import { kernelService } from "./_helpers/kernel_service.ts";
import { originBytes, scratchPartitions } from "./_helpers/scratch.ts";
import { exists, waitFor } from "./_helpers/sh.ts";
import { imageDeviceOf, presentProfile } from "./_helpers/module.ts";
import { mountTmpfs } from "./_helpers/tmpfs.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const CHUNK = 256 * KiB;

/** Fills `path` (of `sizeBytes`) with random data, 4 MiB per flushed write; returns it. */
async function fillRandom(path: string, sizeBytes: number): Promise<Uint8Array> {
  const content = randomBytes(sizeBytes);
  for (let offset = 0; offset < sizeBytes; offset += 4 * MiB) {
    await writeAt(path, offset, content.subarray(offset, Math.min(offset + 4 * MiB, sizeBytes)));
  }
  return content;
}

/** Reads a whole response body. */
async function bytesOf(response: Response): Promise<Uint8Array> {
  return new Uint8Array(await response.arrayBuffer());
}

labTest({
  name:
    "kernel: images equal the origin at take while it is written, with a file, a directory and a block device as difference storage",
  requires: ["service", "module"],
  async fn(t) {
    await withCleanup(async (stack) => {
      const { client } = await kernelService(stack);
      const { origin, spare } = await scratchPartitions();
      const tmpfs = (await mountTmpfs(stack, { sizeBytes: 128 * MiB })).dir;
      const current = await fillRandom(origin, originBytes);
      const device = await client.devices.attach({ path: origin, name: "origin" });
      assert.equal(device.capacityBytes, originBytes);
      assert.equal(device.locator, origin);
      const prng = new Prng(7);
      const storages = [
        ["a file on tmpfs", `${tmpfs}/origin.diff`],
        ["a directory on tmpfs", tmpfs],
        ["a block device", spare],
      ] as const;
      for (const [kind, path] of storages) {
        await t.step(`difference storage: ${kind}`, async () => {
          const created = await client.snapshots.create({
            devices: [device.id],
            diffStorage: { path, limitBytes: 64 * MiB },
          });
          const taken = await client.snapshots.take(created.id);
          const image = taken.devices[0].imageDevicePath ?? "";
          assert.equal(
            image,
            imageDeviceOf(presentProfile()!, origin),
            "the image SNAPSHOTINFO names",
          );
          assert.equal(
            taken.devices[0].locator,
            `nbd://127.0.0.1:10809/${device.id}@${created.id}`,
            "the locator is the image's NBD export",
          );
          assert.equal((await client.images.locator(created.id, device.id)).sizeBytes, originBytes);
          const atTake = current.slice();

          const writer = async () => {
            for (let i = 0; i < 48; i++) {
              const length = 4 * KiB * prng.range(1, 64);
              const offset = 4 * KiB * prng.int((originBytes - length) / (4 * KiB));
              const data = randomBytes(length);
              await writeAt(origin, offset, data);
              current.set(data, offset);
            }
          };
          const nodeReader = async () => {
            for (let offset = 0; offset < originBytes; offset += MiB) {
              assertSameBytes(
                await readAt(image, offset, MiB),
                atTake.subarray(offset, offset + MiB),
                `${image} at ${offset}`,
              );
            }
          };
          const apiReader = async () => {
            for (let i = 0; i < 16; i++) {
              const length = 512 * prng.range(1, 1024);
              const offset = 512 * prng.int((originBytes - length) / 512);
              const response = await client.images.read(created.id, device.id, { offset, length });
              assert.equal(response.status, 206);
              assertSameBytes(
                await bytesOf(response),
                atTake.subarray(offset, offset + length),
                `API range ${offset}+${length}`,
              );
            }
          };
          await Promise.all([writer(), nodeReader(), apiReader()]);

          const tail = await client.images.read(created.id, device.id, {
            offset: originBytes - 4 * KiB,
            length: 4 * KiB,
          });
          assertSameBytes(
            await bytesOf(tail),
            atTake.subarray(originBytes - 4 * KiB),
            "the last 4 KiB",
          );
          assertSameBytes(
            await readAt(image, 0, originBytes),
            atTake,
            "the whole image after the writes",
          );
          assertSameBytes(await readAt(origin, 0, originBytes), current, "the origin");
          await client.snapshots.destroy(created.id);
          await waitFor(`${image} to go away`, () => !exists(image));
        });
      }
      await client.devices.detach(device.id);
      assert.deepEqual(await client.devices.list(), []);
    });
  },
});

/** The blocks whose map byte is at least `number`. */
function blocksAtLeast(map: Uint8Array, number: number): number[] {
  const blocks: number[] = [];
  map.forEach((value, index) => {
    if (value >= number) blocks.push(index);
  });
  return blocks;
}

labTest({
  name:
    "kernel: CBT across two takes reads 2 for the blocks written in between; marked-dirty ranges read 3 after the next take",
  requires: ["service", "module"],
  async fn() {
    await withCleanup(async (stack) => {
      const { client } = await kernelService(stack);
      const { origin } = await scratchPartitions();
      const tmpfs = (await mountTmpfs(stack, { sizeBytes: 128 * MiB })).dir;
      const device = await client.devices.attach({ path: origin, name: "cbt" });
      const takeNew = async (name: string) => {
        const created = await client.snapshots.create({
          devices: [device.id],
          diffStorage: { path: `${tmpfs}/${name}.diff`, limitBytes: 64 * MiB },
        });
        return await client.snapshots.take(created.id);
      };
      const attached = await client.cbt.info(device.id);
      assert.equal(attached.changesNumber, 0);
      assert.equal(attached.blockSizeBytes, 64 * KiB);
      assert.equal(attached.blockCount, originBytes / (64 * KiB));
      assert.equal(attached.capacityBytes, originBytes);

      const first = await takeNew("first");
      assert.equal((await client.cbt.info(device.id)).changesNumber, 1);
      await client.snapshots.destroy(first.id);
      const writes = [
        { offset: 3 * 64 * KiB + 4 * KiB, length: 4 * KiB }, // block 3
        { offset: 11 * 64 * KiB - 8 * KiB, length: 16 * KiB }, // blocks 10 and 11
        { offset: 500 * 64 * KiB, length: 64 * KiB }, // block 500, exactly
        { offset: originBytes - 4 * KiB, length: 4 * KiB }, // the last block
      ];
      for (const { offset, length } of writes) await writeAt(origin, offset, randomBytes(length));
      const second = await takeNew("second");
      const info = await client.cbt.info(device.id);
      assert.equal(info.changesNumber, 2);
      assert.equal(info.generationId, attached.generationId);
      const lastBlock = info.blockCount - 1;
      const map = await client.cbt.map(device.id);
      assert.equal(map.length, info.blockCount);
      assert.deepEqual(blocksAtLeast(map, 2), [3, 10, 11, 500, lastBlock]);
      const changes = await client.images.changes(second.id, device.id);
      assert.equal(changes.sinceToken, first.devices[0].changeToken, "since the first snapshot");
      assert.deepEqual(
        await client.images.changes(second.id, device.id, { since: changes.sinceToken }),
        changes,
        "the same asked with the first snapshot's token",
      );
      assert.deepEqual(changes.extents, [
        { offset: 3 * 64 * KiB, length: 64 * KiB },
        { offset: 10 * 64 * KiB, length: 128 * KiB },
        { offset: 500 * 64 * KiB, length: 64 * KiB },
        { offset: lastBlock * 64 * KiB, length: 64 * KiB },
      ]);
      await client.snapshots.destroy(second.id);

      await client.cbt.markDirty(device.id, [
        { sectorOffset: 7 * 128, sectorCount: 1 }, // block 7
        { sectorOffset: 20 * 128 - 1, sectorCount: 2 }, // blocks 19 and 20
        { sectorOffset: originBytes / 512 - 8, sectorCount: 8 }, // the last block
      ]);
      const third = await takeNew("third");
      assert.equal((await client.cbt.info(device.id)).changesNumber, 3);
      const marked = await client.cbt.map(device.id);
      assert.deepEqual(blocksAtLeast(marked, 3), [7, 19, 20, lastBlock]);
      assert.deepEqual(blocksAtLeast(marked, 2), [3, 7, 10, 11, 19, 20, 500, lastBlock]);
      await client.snapshots.destroy(third.id);
      await client.devices.detach(device.id);
    });
  },
});

labTest({
  name:
    "kernel: a small difference storage overflows: a corrupted event with ENOSPC, error 28 for the device, the origin intact",
  requires: ["service", "module"],
  async fn() {
    await withCleanup(async (stack) => {
      const { client } = await kernelService(stack);
      const { origin } = await scratchPartitions();
      const tmpfs = await mountTmpfs(stack, { sizeBytes: 128 * MiB });
      const expected = await fillRandom(origin, originBytes);
      const device = await client.devices.attach({ path: origin, name: "overflow" });
      const created = await client.snapshots.create({
        devices: [device.id],
        diffStorage: { path: `${tmpfs.dir}/small.diff`, limitBytes: 1 * MiB },
      });
      await client.snapshots.take(created.id);
      // Events as Server-Sent Events, the stream open before the storage runs out.
      const abort = new AbortController();
      const watched = (async () => {
        const events: SnapshotEvent[] = [];
        for await (const event of client.snapshots.watch(created.id, { signal: abort.signal })) {
          if (event.code === "truncated") continue;
          events.push(event);
          if (event.code === "corrupted") break;
        }
        return events;
      })();
      for (let chunk = 0; chunk < originBytes / CHUNK; chunk++) {
        const data = randomBytes(4 * KiB);
        await writeAt(origin, chunk * CHUNK + 8 * KiB, data);
        expected.set(data, chunk * CHUNK + 8 * KiB);
      }
      const timer = setTimeout(() => abort.abort(), 60_000);
      const events = await watched.finally(() => clearTimeout(timer));
      console.log(`events: ${JSON.stringify(events)}`);
      const corrupted = events.find((e) => e.code === "corrupted");
      assert.ok(
        corrupted?.code === "corrupted",
        `a corrupted event (got ${JSON.stringify(events)})`,
      );
      assert.equal(corrupted.errorCode, 28);
      assert.equal(corrupted.errorName, "ENOSPC");
      assert.equal(corrupted.deviceId, device.id);

      const info = await client.snapshots.get(created.id);
      assert.equal(info.state, "corrupted");
      assert.deepEqual(info.devices.map((d) => [d.deviceId, d.errorCode, d.errorName]), [
        [device.id, 28, "ENOSPC"],
      ]);
      const refused = await client.images.read(created.id, device.id, { offset: 0, length: 4096 })
        .then(async (response) => {
          await response.body?.cancel();
          return undefined;
        }, (error) => error);
      assert.ok(refused instanceof ProblemError, `the image read was refused (${refused})`);
      assert.equal(refused.code, "SNAPSHOT_CORRUPTED");
      assertSameBytes(await readAt(origin, 0, originBytes), expected, "the origin");

      // The SSE stream's wait on the kernel may still be in flight: the module releases the
      // snapshot, and closes the storage file, once that wait returns (the driver's slices keep
      // it under a second).
      await client.snapshots.destroy(created.id);
      await tmpfs.unmount({ timeoutMs: 5000 });
      const after = randomBytes(64 * KiB);
      await writeAt(origin, 0, after);
      assertSameBytes(await readAt(origin, 0, after.length), after, "a write after destroy");
      await client.devices.detach(device.id);
    });
  },
});
