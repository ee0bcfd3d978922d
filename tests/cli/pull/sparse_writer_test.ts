import assert from "node:assert/strict";
import { join } from "node:path";
import {
  isAllZero,
  SPARSE_BLOCK_BYTES,
  SparseWriter,
} from "../../../src/cli/pull/sparse_writer.ts";
import { withoutExtents } from "../../../src/cli/pull/image_source.ts";
import { pattern } from "../../_helpers/nbd_fixture.ts";

const B = SPARSE_BLOCK_BYTES;

Deno.test("isAllZero() looks at every byte, aligned or not", () => {
  const bytes = new Uint8Array(1001);
  assert.ok(isAllZero(bytes));
  assert.ok(isAllZero(bytes.subarray(3)));
  for (const at of [0, 7, 8, 999, 1000]) {
    bytes[at] = 1;
    assert.ok(!isAllZero(bytes), `byte ${at}`);
    assert.equal(isAllZero(bytes.subarray(1)), at === 0, `byte ${at}, unaligned view`);
    bytes[at] = 0;
  }
});

Deno.test("SparseWriter gathers odd pieces into blocks, leaves zero blocks as holes, writes the rest", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const size = 10 * B + 123;
    const content = new Uint8Array(size);
    content.set(pattern(B + 10, 1), 2 * B - 5); // blocks 1, 2 and 3
    content.set(pattern(50, 2), size - 50); // the short last block
    const path = join(dir, "out.raw");
    const file = await Deno.open(path, { write: true, create: true });
    const writer = new SparseWriter(file, { skipZeros: true });
    // Pieces of awkward sizes, in order, then a jump over nothing (a range that starts mid-block).
    let at = 0;
    for (const length of [1, 4095, 70_000, 3 * B, 12_345]) {
      await writer.write(at, content.subarray(at, at + length));
      at += length;
    }
    await writer.write(at + 1000, content.subarray(at + 1000, size));
    await writer.finish(size);
    file.close();
    assert.deepEqual(await Deno.readFile(path), content);
    assert.equal(writer.stats.writtenBytes, 3 * B + 123);
    assert.equal(writer.stats.writtenBytes + writer.stats.skippedBytes, size - 1000);
    const stat = await Deno.stat(path);
    assert.ok(stat.blocks! * 512 <= 5 * B, `allocated ${stat.blocks! * 512}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SparseWriter without skipZeros overwrites zeros too", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "old.raw");
    await Deno.writeFile(path, pattern(3 * B, 4));
    const file = await Deno.open(path, { write: true });
    const writer = new SparseWriter(file, { skipZeros: false });
    await writer.write(B / 2, new Uint8Array(B));
    await writer.finish();
    file.close();
    const expected = pattern(3 * B, 4);
    expected.fill(0, B / 2, B / 2 + B);
    assert.deepEqual(await Deno.readFile(path), expected);
    assert.equal(writer.stats.writtenBytes, B);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("withoutExtents() keeps what the holes do not cover", () => {
  assert.deepEqual(
    withoutExtents({ offset: 10, length: 100 }, [
      { offset: 0, length: 15 },
      { offset: 50, length: 10 },
      { offset: 100, length: 50 },
    ]),
    [{ offset: 15, length: 35 }, { offset: 60, length: 40 }],
  );
  assert.deepEqual(withoutExtents({ offset: 0, length: 10 }, []), [{ offset: 0, length: 10 }]);
  assert.deepEqual(withoutExtents({ offset: 0, length: 10 }, [{ offset: 0, length: 10 }]), []);
});
