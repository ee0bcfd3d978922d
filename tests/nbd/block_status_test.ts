import assert from "node:assert/strict";
import { isServiceError } from "../../src/errors.ts";
import { toDescriptors } from "../../src/nbd/block_status.ts";

const query = { offset: 0, length: 16384, reqOne: false, exportSize: 1 << 20 };

Deno.test("toDescriptors() merges neighbours with equal flags and stops once the length is covered", () => {
  const extents = [
    { length: 4096, flags: 0 },
    { length: 4096, flags: 0 },
    { length: 4096, flags: 3 },
    { length: 8192, flags: 0 },
    { length: 4096, flags: 3 },
  ];
  assert.deepEqual(toDescriptors(extents, query), [
    { length: 8192, flags: 0 },
    { length: 4096, flags: 3 },
    { length: 8192, flags: 0 },
  ]);
});

Deno.test("toDescriptors() with REQ_ONE returns one extent no longer than the request", () => {
  assert.deepEqual(
    toDescriptors([{ length: 65536, flags: 1 }], { ...query, reqOne: true }),
    [{ length: 16384, flags: 1 }],
  );
  assert.deepEqual(
    toDescriptors(
      [{ length: 512, flags: 1 }, { length: 512, flags: 1 }, { length: 512, flags: 0 }],
      {
        ...query,
        reqOne: true,
      },
    ),
    [{ length: 1024, flags: 1 }],
  );
});

Deno.test("toDescriptors() never reaches past the end of the export", () => {
  const near = { offset: (1 << 20) - 4096, length: 4096, reqOne: false, exportSize: 1 << 20 };
  assert.deepEqual(toDescriptors([{ length: 1 << 30, flags: 2 }], near), [{
    length: 4096,
    flags: 2,
  }]);
});

Deno.test("toDescriptors() keeps every descriptor within 32 bits", () => {
  const huge = { offset: 0, length: 0xffffffff, reqOne: false, exportSize: 2 ** 40 };
  const out = toDescriptors([{ length: 2 ** 36, flags: 0 }], huge);
  assert.equal(out.length, 1);
  assert.ok(out[0].length <= 0xffffffff && out[0].length % 65536 === 0);
});

Deno.test("toDescriptors() refuses empty and invalid extents", () => {
  for (
    const extents of [[], [{ length: 0, flags: 0 }], [{ length: 512, flags: -1 }], [{
      length: 1.5,
      flags: 0,
    }]]
  ) {
    assert.throws(() => toDescriptors(extents, query), (e) => isServiceError(e, "INTERNAL"));
  }
});
