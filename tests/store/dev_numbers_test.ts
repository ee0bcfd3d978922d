import assert from "node:assert/strict";
import { makeDeviceNumber, splitDeviceNumber } from "../../src/store/dev_numbers.ts";

Deno.test("splitDeviceNumber() follows glibc's dev_t encoding", () => {
  assert.deepEqual(splitDeviceNumber(0x0801), { major: 8, minor: 1 });
  assert.deepEqual(splitDeviceNumber(0x10300), { major: 259, minor: 0 });
  assert.deepEqual(splitDeviceNumber(1048876), { major: 1, minor: 300 });
  assert.equal(makeDeviceNumber(8, 1), 0x0801);
  assert.equal(makeDeviceNumber(1, 300), 1048876);
  for (const [major, minor] of [[0, 0], [7, 255], [4095, 4096], [4096, 1_048_575], [65_535, 3]]) {
    assert.deepEqual(splitDeviceNumber(makeDeviceNumber(major, minor)), { major, minor });
  }
});

Deno.test("splitDeviceNumber() reads Deno.stat's rdev of a real device node", async () => {
  const info = await Deno.stat("/dev/null");
  assert.deepEqual(splitDeviceNumber(info.rdev!), { major: 1, minor: 3 });
});
