/**
 * Conformance cases: change tokens and the changes since them (through the
 * API's readChanges, on the driver under test). Every taken image carries a
 * token; the changes since any earlier snapshot of the same generation are
 * complete; everything else answers FULL_BACKUP_REQUIRED with its reason
 * (generation_changed, other_device, not_earlier, malformed, cbt_corrupted).
 *
 * @module
 */

import assert from "node:assert/strict";
import { readChanges } from "../../../src/api/changes.ts";
import { decodeChangeToken } from "../../../src/change_token.ts";
import type { DeviceInfo, SnapshotDriver, SnapshotImageInfo } from "../../../src/driver.ts";
import { isServiceError } from "../../../src/errors.ts";
import type { ConformanceFixture } from "../fixture.ts";
import { attachNew, CaseList, type ConformanceCase, KiB, SMALL, takeNew } from "../steps.ts";

const cases = new CaseList();
const BLOCK = 64 * KiB;

/** The image of `deviceId` in snapshot `snapshotId`. */
async function imageOf(
  driver: SnapshotDriver,
  snapshotId: string,
  deviceId: string,
): Promise<SnapshotImageInfo> {
  const image = (await driver.snapshotInfo(snapshotId)).devices.find((d) =>
    d.deviceId === deviceId
  );
  assert.ok(image, `snapshot ${snapshotId} has ${deviceId}`);
  return image;
}

/** Rejects with FULL_BACKUP_REQUIRED and `reason`. */
async function refusedWith(promise: Promise<unknown>, reason: string, what: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(isServiceError(error, "FULL_BACKUP_REQUIRED"), `${what}: ${error}`);
    assert.equal(error.reason, reason, `${what}: ${error.message}`);
    return true;
  });
}

/** Writes one byte into each of `blocks` (64 KiB tracking blocks). */
async function touch(fx: ConformanceFixture, device: DeviceInfo, blocks: number[]): Promise<void> {
  for (const block of blocks) {
    await fx.writeDevice(device, block * BLOCK, new Uint8Array(4 * KiB).fill(block + 1));
  }
}

/** Takes a snapshot of `device`, returns its id and image, and destroys the one before, if any. */
async function nextSnapshot(fx: ConformanceFixture, device: DeviceInfo, previous?: string) {
  if (previous) await fx.driver.destroySnapshot(previous);
  const taken = await takeNew(fx, [device]);
  return { id: taken.id, image: await imageOf(fx.driver, taken.id, device.id) };
}

const blocksOf = (extents: { offset: number; length: number }[]) =>
  extents.flatMap(({ offset, length }) =>
    Array.from({ length: Math.ceil(length / BLOCK) }, (_, i) => offset / BLOCK + i)
  );

cases.add(
  "every taken image has a change token naming its device, generation and change number",
  [],
  async (fx) => {
    const device = await attachNew(fx, SMALL);
    const created = await fx.driver.createSnapshot({
      deviceIds: [device.id],
      diffStorage: { path: await fx.storagePath(), limitBytes: 64 << 20 },
    });
    assert.equal(created.devices[0].changeToken, undefined, "no token before take");
    const taken = await fx.driver.takeSnapshot(created.id);
    const [image] = taken.devices;
    assert.ok(image.changeToken, "a token after take");
    const cbt = await fx.driver.cbtInfo(device.id);
    assert.deepEqual(decodeChangeToken(image.changeToken), {
      deviceId: device.id,
      generationId: cbt.generationId,
      changeNumber: cbt.changesNumber,
    });
    assert.equal(image.previousChangeToken, undefined, "the first take has no previous one");
    assert.equal((await imageOf(fx.driver, taken.id, device.id)).changeToken, image.changeToken);
  },
);

cases.add(
  "changes since any earlier snapshot's token are complete; by default since the previous one",
  ["data"],
  async (fx) => {
    const device = await attachNew(fx, SMALL);
    const first = await nextSnapshot(fx, device);
    await touch(fx, device, [1, 5]);
    const second = await nextSnapshot(fx, device, first.id);
    assert.equal(second.image.previousChangeToken, first.image.changeToken);
    await touch(fx, device, [5, 9, 16]);
    const third = await nextSnapshot(fx, device, second.id);
    const sinceFirst = await readChanges(fx.driver, third.image, {
      since: first.image.changeToken,
    });
    assert.deepEqual(blocksOf(sinceFirst.extents), [1, 5, 9, 16], "since the first snapshot");
    assert.equal(sinceFirst.sinceToken, first.image.changeToken);
    assert.equal(sinceFirst.changeToken, third.image.changeToken);
    const sinceSecond = await readChanges(fx.driver, third.image, {
      since: second.image.changeToken,
    });
    assert.deepEqual(blocksOf(sinceSecond.extents), [5, 9, 16], "since the second snapshot");
    assert.deepEqual(await readChanges(fx.driver, third.image), sinceSecond, "the default");
    const cbt = await fx.driver.cbtInfo(device.id);
    const bare = await readChanges(fx.driver, third.image, {
      since: "1",
      generation: cbt.generationId,
    });
    assert.deepEqual(bare, sinceFirst, "a bare number with its generation");
  },
);

cases.add(
  "FULL_BACKUP_REQUIRED: the first snapshot, a reattached device, another device, the same snapshot",
  [],
  async (fx) => {
    const device = await attachNew(fx, SMALL);
    const other = await attachNew(fx, SMALL);
    const first = await takeNew(fx, [device, other]);
    const [mine, theirs] = [device, other].map((d) =>
      first.devices.find((image) => image.deviceId === d.id)!
    );
    await refusedWith(readChanges(fx.driver, mine), "generation_changed", "no earlier snapshot");
    await refusedWith(
      readChanges(fx.driver, mine, { since: theirs.changeToken }),
      "other_device",
      "a token of another device",
    );
    await refusedWith(
      readChanges(fx.driver, mine, { since: mine.changeToken }),
      "not_earlier",
      "the snapshot's own token",
    );
    await fx.driver.destroySnapshot(first.id);
    await fx.driver.detach(device.id);
    const again = await fx.driver.attach(device.path, { name: device.id });
    const later = await nextSnapshot(fx, again);
    await refusedWith(
      readChanges(fx.driver, later.image, { since: mine.changeToken }),
      "generation_changed",
      "a token from before the device was attached again",
    );
    await refusedWith(
      readChanges(fx.driver, later.image, {
        since: "0",
        generation: decodeChangeToken(mine.changeToken!).generationId,
      }),
      "generation_changed",
      "a bare number of the old generation",
    );
  },
);

cases.add(
  "FULL_BACKUP_REQUIRED malformed: anything in since that is not a token of this service",
  [],
  async (fx) => {
    const device = await attachNew(fx, SMALL);
    const taken = await takeNew(fx, [device]);
    const [image] = taken.devices;
    const token = image.changeToken!;
    const flipped = token.slice(0, 3) + (token[3] === "A" ? "B" : "A") + token.slice(4);
    const malformed = [
      "5",
      "255",
      "x",
      token + "=",
      token.slice(0, -2),
      "AgGjhg6Vrq5AH7BjeQDWgZY_ZGlzazA", // version 2
      "AQCjhg6Vrq5AH7BjeQDWgZY_ZGlzazA", // change number 0
      "AQGjhg6Vrq5AH7BjeQDWgZY_ZGlz-Ho", // a device id no device can have
      token.slice(0, -1) + "+", // plain base64, not base64url
    ];
    for (const since of malformed) {
      await refusedWith(readChanges(fx.driver, image, { since }), "malformed", `since=${since}`);
    }
    await assert.rejects(
      readChanges(fx.driver, image, { since: flipped }),
      (error: unknown) => isServiceError(error, "FULL_BACKUP_REQUIRED"),
      "a token with a changed generation byte is not of this snapshot's generation",
    );
  },
);

cases.add(
  "FULL_BACKUP_REQUIRED cbt_corrupted while the device's CBT map is corrupted; the next take resets it",
  ["cbt-faults"],
  async (fx) => {
    const device = await attachNew(fx, SMALL);
    const first = await nextSnapshot(fx, device);
    const second = await nextSnapshot(fx, device, first.id);
    await fx.corruptCbt!(device);
    await refusedWith(
      readChanges(fx.driver, second.image, { since: first.image.changeToken }),
      "cbt_corrupted",
      "a corrupted map",
    );
    const third = await nextSnapshot(fx, device, second.id);
    assert.notEqual(
      decodeChangeToken(third.image.changeToken!).generationId,
      decodeChangeToken(second.image.changeToken!).generationId,
      "the take after corruption starts a new generation",
    );
    assert.equal(third.image.previousChangeToken, undefined);
    await refusedWith(
      readChanges(fx.driver, third.image, { since: second.image.changeToken }),
      "generation_changed",
      "a token from before the reset",
    );
  },
);

cases.add(
  "the 255 wrap starts a new generation: tokens before it answer generation_changed, after it all is complete",
  ["data"],
  async (fx) => {
    const device = await attachNew(fx, SMALL);
    let last: Awaited<ReturnType<typeof nextSnapshot>> | undefined;
    for (let take = 1; take <= 254; take++) last = await nextSnapshot(fx, device, last?.id);
    const before = last!;
    assert.equal(decodeChangeToken(before.image.changeToken!).changeNumber, 254);
    await touch(fx, device, [2]);
    const wrap = await nextSnapshot(fx, device, before.id);
    const wrapPoint = decodeChangeToken(wrap.image.changeToken!);
    assert.equal(wrapPoint.changeNumber, 255, "the wrap take reports 255");
    assert.notEqual(
      wrapPoint.generationId,
      decodeChangeToken(before.image.changeToken!).generationId,
    );
    assert.equal(wrap.image.previousChangeToken, undefined, "nothing earlier in its generation");
    await refusedWith(readChanges(fx.driver, wrap.image), "generation_changed", "the default");
    await refusedWith(
      readChanges(fx.driver, wrap.image, { since: before.image.changeToken }),
      "generation_changed",
      "the snapshot just before the wrap",
    );
    await touch(fx, device, [3, 7]);
    const after = await nextSnapshot(fx, device, wrap.id);
    assert.equal(decodeChangeToken(after.image.changeToken!).changeNumber, 1);
    assert.equal(after.image.previousChangeToken, wrap.image.changeToken);
    const changes = await readChanges(fx.driver, after.image);
    assert.deepEqual(blocksOf(changes.extents), [3, 7], "changes since the wrap snapshot");
    assert.equal(changes.sinceToken, wrap.image.changeToken);
    await refusedWith(
      readChanges(fx.driver, after.image, { since: before.image.changeToken }),
      "generation_changed",
      "a token from before the wrap, at a later snapshot",
    );
  },
);

/** The cases of this file. */
export const tokenCases: readonly ConformanceCase[] = cases.all;
