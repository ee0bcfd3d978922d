import assert from "node:assert/strict";
import {
  array,
  bytes,
  cString,
  i32le,
  packed,
  struct,
  u16le,
  u32be,
  u32le,
  u64be,
  u64beBigint,
  u64le,
  u8,
} from "../../src/layout/mod.ts";

Deno.test("struct() pads fields to their C alignment and rounds the size", () => {
  const Layout = struct({ count: u32le, ids: u64le });
  assert.equal(Layout.offsetOf("count"), 0);
  assert.equal(Layout.offsetOf("ids"), 8);
  assert.equal(Layout.size, 16);
  const Tail = struct({ wide: u64le, narrow: u8 });
  assert.equal(Tail.size, 16);
});

Deno.test("packed() places fields back to back", () => {
  const Header = packed({ magic: u32be, flags: u16le, offset: u64be });
  assert.equal(Header.offsetOf("offset"), 6);
  assert.equal(Header.size, 14);
});

Deno.test("encode() and decode() round-trip every field kind", () => {
  const Inner = struct({ b: bytes(16) });
  const Outer = struct({
    limit: u64le,
    id: Inner,
    name: cString(8),
    error: i32le,
    cookie: u64beBigint,
    pair: array(u16le, 2),
  });
  const value = {
    limit: 2 ** 40 + 7,
    id: { b: Uint8Array.from({ length: 16 }, (_, i) => i) },
    name: "blksnap",
    error: -28,
    cookie: 0xfedcba9876543210n,
    pair: [1, 65535],
  };
  const decoded = Outer.decode(Outer.encode(value));
  assert.equal(decoded.limit, value.limit);
  assert.deepEqual([...decoded.id.b], [...value.id.b]);
  assert.equal(decoded.name, "blksnap");
  assert.equal(decoded.error, -28);
  assert.equal(decoded.cookie, value.cookie);
  assert.deepEqual(decoded.pair, [1, 65535]);
});

Deno.test("encode() writes at an offset and byte order is per field", () => {
  const Pair = packed({ big: u32be, little: u32le });
  const target = new Uint8Array(10);
  Pair.encode({ big: 0x01020304, little: 0x01020304 }, target, 2);
  assert.deepEqual([...target], [0, 0, 1, 2, 3, 4, 4, 3, 2, 1]);
});

Deno.test("out-of-range values and short buffers raise RangeError", () => {
  const Small = struct({ a: u8, b: u64le });
  assert.throws(() => Small.encode({ a: 256, b: 0 }), RangeError);
  assert.throws(() => Small.encode({ a: 1, b: -1 }), RangeError);
  assert.throws(() => Small.decode(new Uint8Array(4)), RangeError);
  const unsafe = new Uint8Array(16).fill(0xff);
  assert.throws(() => Small.decode(unsafe), RangeError);
  assert.throws(() => struct({ s: cString(4) }).encode({ s: "abcd" }), RangeError);
});
