import assert from "node:assert/strict";
import { isServiceError } from "../../src/errors.ts";
import { ChunkState } from "../../src/engine/chunk.ts";
import { CHUNK, filled, setupEngine } from "../_helpers/engine_fixture.ts";

const code = (name: string) => (error: unknown) => isServiceError(error, name as "CONFLICT");

Deno.test("SnapshotImage describes the device at take", async () => {
  const fx = await setupEngine({ sizes: [5 * CHUNK + 512], writable: true });
  const image = fx.snapshot.image("d0");
  assert.equal(image.trackerName, "d0");
  assert.equal(image.sizeBytes, 5 * CHUNK + 512);
  assert.equal(image.chunkSizeBytes, CHUNK);
  assert.equal(image.writable, true);
  await image.flush();
  await fx.close();
});

Deno.test("SnapshotImage refuses reads and writes outside the image (OUT_OF_RANGE)", async () => {
  const fx = await setupEngine({ sizes: [4 * CHUNK], writable: true });
  const image = fx.snapshot.image("d0");
  await assert.rejects(image.read(4 * CHUNK - 1, new Uint8Array(2)), code("OUT_OF_RANGE"));
  await assert.rejects(image.read(-1, new Uint8Array(1)), code("OUT_OF_RANGE"));
  await assert.rejects(image.write(4 * CHUNK, filled(1, 1)), code("OUT_OF_RANGE"));
  assert.throws(() => image.chunkState(4 * CHUNK), code("OUT_OF_RANGE"));
  await image.read(4 * CHUNK, new Uint8Array(0));
  await fx.close();
});

Deno.test("SnapshotImage.write() marks both CBT tables; read-only images refuse writes", async () => {
  const fx = await setupEngine({ sizes: [4 * CHUNK], writable: true });
  const { tracker } = fx.devices[0];
  await fx.snapshot.image("d0").write(2 * CHUNK, filled(1, 1));
  assert.deepEqual([...tracker.cbt.read(0, 4)], [0, 0, 1, 0], "read table: previous number");
  tracker.cbt.switch();
  assert.deepEqual([...tracker.cbt.read(0, 4)], [0, 0, 2, 0], "write table: active number");
  await fx.close();
  const ro = await setupEngine({ sizes: [4 * CHUNK] });
  await assert.rejects(ro.snapshot.image("d0").write(0, filled(1, 1)), code("READ_ONLY"));
  assert.deepEqual([...ro.devices[0].tracker.cbt.read(0, 4)], [0, 0, 0, 0], "nothing marked");
  await ro.close();
});

Deno.test("SnapshotImage.chunkState() tells copied chunks from chunks still on the original", async () => {
  const fx = await setupEngine({ sizes: [4 * CHUNK + 100] });
  const image = fx.snapshot.image("d0");
  await fx.devices[0].tracker.write(CHUNK + 5, filled(1, 9));
  assert.deepEqual(image.chunkState(CHUNK + 4000), {
    state: ChunkState.IN_MEMORY,
    offsetBytes: CHUNK,
    lengthBytes: CHUNK,
  });
  assert.deepEqual(image.chunkState(4 * CHUNK + 99), {
    state: ChunkState.NEW,
    offsetBytes: 4 * CHUNK,
    lengthBytes: 100,
  });
  await fx.close();
});
