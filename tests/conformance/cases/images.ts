/**
 * Conformance cases: image size and reads (also while the device is written), destroy while
 * reading, detach after destroy.
 *
 * @module
 */

import assert from "node:assert/strict";
import { isServiceError } from "../../../src/errors.ts";
import { assertSameBytes, randomBytes, rejectsWith } from "../expect.ts";
import {
  attachNew,
  CaseList,
  type ConformanceCase,
  createSnapshot,
  KiB,
  MiB,
  readWholeImage,
  SMALL,
  takeNew,
} from "../steps.ts";

const cases = new CaseList();

cases.add(
  "imageSize() is the capacity at take; before take it is CONFLICT",
  [],
  async (fx) => {
    const [a, b] = [await attachNew(fx, SMALL), await attachNew(fx, 2 * MiB)];
    const created = await createSnapshot(fx, [a, b]);
    await rejectsWith(fx.driver.imageSize(created.id, a.id), "CONFLICT", "imageSize before take");
    await rejectsWith(
      fx.driver.readImage(created.id, a.id, 0, new Uint8Array(512)),
      "CONFLICT",
      "readImage before take",
    );
    await fx.driver.takeSnapshot(created.id);
    assert.equal(await fx.driver.imageSize(created.id, a.id), SMALL);
    assert.equal(await fx.driver.imageSize(created.id, b.id), 2 * MiB);
    const other = await attachNew(fx, SMALL);
    await rejectsWith(fx.driver.imageSize(created.id, other.id), "NOT_FOUND", "not a member");
  },
);

cases.add(
  "readImage() reads the device's content at take; OUT_OF_RANGE past the end",
  [],
  async (fx) => {
    const content = randomBytes(SMALL, 21);
    const device = await attachNew(fx, SMALL, content);
    const taken = await takeNew(fx, [device]);
    const image = await readWholeImage(fx, {
      snapshotId: taken.id,
      deviceId: device.id,
      sizeBytes: SMALL,
    });
    assertSameBytes(image, content, "image");
    const tail = new Uint8Array(4 * KiB);
    await fx.driver.readImage(taken.id, device.id, SMALL - tail.length, tail);
    assertSameBytes(tail, content.subarray(SMALL - tail.length), "the last 4 KiB");
    await rejectsWith(
      fx.driver.readImage(taken.id, device.id, SMALL - 512, new Uint8Array(1024)),
      "OUT_OF_RANGE",
      "a read crossing the end",
    );
    await rejectsWith(
      fx.driver.readImage(taken.id, device.id, SMALL, new Uint8Array(512)),
      "OUT_OF_RANGE",
      "a read starting at the end",
    );
    await rejectsWith(
      fx.driver.readImage(taken.id, device.id, -512, new Uint8Array(512)),
      "INVALID_ARGUMENT",
      "a negative offset",
    );
  },
);

cases.add(
  "image reads equal the device at take while the device is written",
  ["data"],
  async (fx) => {
    const size = 2 * MiB;
    const content = randomBytes(size, 31);
    const device = await attachNew(fx, size, content);
    const early = randomBytes(64 * KiB, 32);
    await fx.writeDevice(device, 128 * KiB, early);
    const atTake = content.slice();
    atTake.set(early, 128 * KiB);
    const taken = await takeNew(fx, [device]);
    const expected = atTake.slice();
    const writer = async (region: number, seed: number) => {
      const regionBytes = size / 2;
      for (let i = 0; i < 24; i++) {
        const data = randomBytes(4 * KiB * (1 + ((seed + i) % 16)), seed * 100 + i);
        const offset = region * regionBytes +
          4 * KiB * ((seed * 7 + i * 13) % ((regionBytes - data.length) / (4 * KiB)));
        await fx.writeDevice(device, offset, data);
        expected.set(data, offset);
      }
    };
    const [image] = await Promise.all([
      readWholeImage(fx, { snapshotId: taken.id, deviceId: device.id, sizeBytes: size }, 32 * KiB),
      writer(0, 1),
      writer(1, 2),
    ]);
    assertSameBytes(image, atTake, "image read while writing");
    assertSameBytes(await fx.readDevice(device, 0, size), expected, "the device kept every write");
    const again = await readWholeImage(fx, {
      snapshotId: taken.id,
      deviceId: device.id,
      sizeBytes: size,
    });
    assertSameBytes(again, atTake, "image read after the writes");
  },
);

cases.add(
  "destroySnapshot() while image reads are in flight ends them cleanly",
  ["destroy-while-reading"],
  async (fx) => {
    const size = 2 * MiB;
    const content = randomBytes(size, 51);
    const device = await attachNew(fx, size, content);
    const taken = await takeNew(fx, [device]);
    const piece = 64 * KiB;
    let completed = 0;
    let destroyed = false;
    let enough: () => void = () => {};
    const started = new Promise<void>((resolve) => enough = resolve);
    const reader = async (first: number) => {
      for (let i = first; !destroyed; i++) {
        const offset = (i * piece) % size;
        const into = new Uint8Array(piece);
        try {
          await fx.driver.readImage(taken.id, device.id, offset, into);
        } catch (error) {
          assert.ok(isServiceError(error), `a read failed with ${error}, not a ServiceError`);
          assert.ok(
            ["NOT_FOUND", "UNAVAILABLE", "IO"].includes(error.code),
            `a read failed with ${error.code}: ${error.message}`,
          );
          return;
        }
        assertSameBytes(into, content.subarray(offset, offset + piece), `image at ${offset}`);
        if (++completed === 8) enough();
      }
    };
    const readers = [0, 8, 16, 24].map(reader);
    await Promise.race([started, Promise.all(readers)]);
    assert.ok(completed >= 8, "reads were running before destroy");
    await fx.driver.destroySnapshot(taken.id);
    destroyed = true;
    await Promise.all(readers);
    await rejectsWith(
      fx.driver.readImage(taken.id, device.id, 0, new Uint8Array(piece)),
      "NOT_FOUND",
      "a read after destroy",
    );
    assert.deepEqual(await fx.driver.listSnapshots(), []);
    assertSameBytes(await fx.readDevice(device, 0, size), content, "the device");
  },
);

cases.add("detach() after destroySnapshot() succeeds", [], async (fx) => {
  const device = await attachNew(fx, SMALL);
  const taken = await takeNew(fx, [device]);
  await fx.driver.destroySnapshot(taken.id);
  await fx.driver.detach(device.id);
  assert.deepEqual(await fx.driver.listDevices(), []);
  await rejectsWith(fx.driver.getDevice(device.id), "NOT_FOUND", "getDevice after detach");
});

/** The cases of this file. */
export const imageCases: readonly ConformanceCase[] = cases.all;
