import assert from "node:assert/strict";
import * as abi from "../../src/kernel/abi.ts";
import { _IO, _IOR, formatRequest, ioc, parseRequest } from "../../src/kernel/ioctl.ts";

function pattern(length: number, seed: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (i * 31 + seed) & 0xff);
}

/** Encodes `value`, checks the size, decodes, and compares with the original. */
function roundTrip<T>(
  layout: { size: number; encode(v: T): Uint8Array; decode(b: Uint8Array): T },
  value: T,
) {
  const bytes = layout.encode(value);
  assert.equal(bytes.length, layout.size);
  assert.deepEqual(layout.decode(bytes), value);
  return bytes;
}

Deno.test("request numbers are the ones ABI.md lists", () => {
  const expected: [number, number][] = [
    [abi.IOCTL_BLKSNAP_VERSION, 0x80085600],
    [abi.IOCTL_BLKSNAP_SNAPSHOT_CREATE, 0xC0205601],
    [abi.IOCTL_BLKSNAP_SNAPSHOT_DESTROY, 0x40105602],
    [abi.IOCTL_BLKSNAP_SNAPSHOT_TAKE, 0x40105603],
    [abi.IOCTL_BLKSNAP_SNAPSHOT_COLLECT, 0x80105604],
    [abi.IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT, 0x90005605],
    [abi.BLKFILTER_ATTACH, 0xC030128E],
    [abi.BLKFILTER_DETACH, 0xC020128F],
    [abi.BLKFILTER_CTL, 0xC0301290],
    [abi.BLKFILTER_V7_ATTACH, 0xC020128C],
    [abi.BLKFILTER_V7_DETACH, 0xC020128D],
    [abi.BDEVFILTER_ATTACH, 0xC028468C],
    [abi.BDEVFILTER_DETACH, 0xC028468D],
    [abi.BDEVFILTER_CTL, 0xC038468E],
    [abi.BLKGETSIZE64, 0x80081272],
  ];
  for (const [actual, wanted] of expected) {
    assert.equal(formatRequest(actual), formatRequest(wanted));
  }
});

Deno.test("struct sizes are the ones ABI.md lists", () => {
  const sizes: [{ size: number }, number][] = [
    [abi.BlksnapUuid, 16],
    [abi.BlksnapVersion, 8],
    [abi.BlksnapSnapshotCreate, 32],
    [abi.BlksnapSnapshotCollect, 16],
    [abi.BlksnapSnapshotEvent, 4096],
    [abi.BlksnapEventCorrupted, 12],
    [abi.BlksnapEventNoSpace, 8],
    [abi.BlksnapCbtinfo, 40],
    [abi.BlksnapCbtmap, 16],
    [abi.BlksnapCbtdirty, 16],
    [abi.BlksnapSectors, 16],
    [abi.BlksnapSnapshotadd, 16],
    [abi.BlksnapSnapshotinfo, 36],
    [abi.BlkfilterAttach, 48],
    [abi.BlkfilterDetach, 32],
    [abi.BlkfilterCtl, 48],
    [abi.BdevfilterName, 40],
    [abi.BdevfilterCtl, 56],
  ];
  for (const [layout, size] of sizes) assert.equal(layout.size, size);
  assert.equal(abi.BlksnapSnapshotEvent.offsetOf("data"), 32);
  assert.equal(abi.BlksnapCbtinfo.offsetOf("changes_number"), 32);
  assert.equal(abi.BlkfilterCtl.offsetOf("opt"), 40);
  assert.equal(abi.BdevfilterCtl.offsetOf("opt"), 48);
});

Deno.test("every control-device struct round-trips", () => {
  roundTrip(abi.BlksnapUuid, { b: pattern(16, 1) });
  roundTrip(abi.BlksnapVersion, { major: 7, minor: 0, revision: 65535, build: 1 });
  const create = roundTrip(abi.BlksnapSnapshotCreate, {
    diff_storage_limit_sect: 2 ** 40 + 3,
    diff_storage_filename: 0x7ffd_1234_5678,
    id: { b: pattern(16, 2) },
  });
  assert.deepEqual([...create.subarray(16, 32)], [...pattern(16, 2)]);
  const collect = roundTrip(abi.BlksnapSnapshotCollect, { count: 3, ids: 0x5555_0000_1000 });
  assert.deepEqual([...collect.subarray(4, 8)], [0, 0, 0, 0], "padding stays zero");
  roundTrip(abi.BlksnapSnapshotEvent, {
    id: { b: pattern(16, 3) },
    timeout_ms: 0xffffffff,
    code: 1,
    time_label: -5,
    data: pattern(4064, 4),
  });
  roundTrip(abi.BlksnapEventCorrupted, { dev_id_mj: 254, dev_id_mn: 16, err_code: -28 });
  roundTrip(abi.BlksnapEventNoSpace, { requested_nr_sect: 2097152 });
});

Deno.test("every filter struct round-trips", () => {
  roundTrip(abi.BlksnapCbtinfo, {
    device_capacity: 10 * 2 ** 30,
    block_size: 65536,
    block_count: 163840,
    generation_id: { b: pattern(16, 5) },
    changes_number: 255,
  });
  roundTrip(abi.BlksnapCbtmap, { offset: 1 << 20, length: 1 << 20, buffer: 0x7f00_0000_0000 });
  roundTrip(abi.BlksnapSectors, { offset: 2 ** 33, count: 8 });
  roundTrip(abi.BlksnapCbtdirty, { count: 2, dirty_sectors: 0x1000 });
  roundTrip(abi.BlksnapSnapshotadd, { id: { b: pattern(16, 6) } });
  roundTrip(abi.BlksnapSnapshotinfo, { error_code: -28, image: "veeamblksnapimg_254:0" });
  roundTrip(abi.BlkfilterAttach, { name: "blksnap", opt: 0, optlen: 0 });
  roundTrip(abi.BlkfilterDetach, { name: "blksnap" });
  roundTrip(abi.BlkfilterCtl, { name: "blksnap", cmd: 4, optlen: 36, opt: 0x2000 });
  roundTrip(abi.BdevfilterName, { devpath: 0x3000, name: "blksnap" });
  const ctl = roundTrip(abi.BdevfilterCtl, {
    devpath: 0x3000,
    name: "blksnap",
    cmd: 1,
    optlen: 16,
    opt: 0x4000,
  });
  assert.equal(new TextDecoder().decode(ctl.subarray(8, 15)), "blksnap");
  assert.equal(ctl[15], 0, "the name is NUL-padded");
});

Deno.test("decode reads the kernel's little-endian bytes at the documented offsets", () => {
  const raw = new Uint8Array(36);
  new DataView(raw.buffer).setInt32(0, -28, true);
  raw.set(new TextEncoder().encode("blksnap-254-0"), 4);
  assert.deepEqual(abi.BlksnapSnapshotinfo.decode(raw), {
    error_code: -28,
    image: "blksnap-254-0",
  });
  const info = new Uint8Array(40);
  const view = new DataView(info.buffer);
  view.setBigUint64(0, 1073741824n, true);
  view.setUint32(8, 65536, true);
  view.setUint32(12, 16384, true);
  info[32] = 2;
  const decoded = abi.BlksnapCbtinfo.decode(info);
  assert.equal(decoded.device_capacity, 1073741824);
  assert.equal(decoded.block_count, 16384);
  assert.equal(decoded.changes_number, 2);
});

Deno.test("ioctl helpers split and build request numbers", () => {
  assert.deepEqual(parseRequest(abi.IOCTL_BLKSNAP_SNAPSHOT_WAIT_EVENT), {
    dir: 2,
    size: 4096,
    type: 0x56,
    nr: 5,
  });
  assert.equal(_IO("V", 9), 0x5609);
  assert.equal(_IOR(0x12, 114, { size: 8 }), 0x80081272);
  assert.throws(() => ioc(2, "V", 0, 1 << 14), RangeError);
  assert.throws(() => ioc(2, "V", 256, 8), RangeError);
});

Deno.test("uuids format canonically and parse back", () => {
  const bytes = pattern(16, 7);
  const text = abi.formatUuid(bytes);
  assert.match(text, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  assert.deepEqual([...abi.parseUuid(text)!], [...bytes]);
  assert.deepEqual([...abi.parseUuid(text.toUpperCase())!], [...bytes]);
  assert.equal(abi.parseUuid("not-a-uuid"), undefined);
});

Deno.test("request and command names resolve for messages", () => {
  assert.equal(abi.requestName(abi.BDEVFILTER_CTL), "BDEVFILTER_CTL");
  assert.equal(
    abi.filterCommandName(abi.BlkfilterCtlBlksnap.BLKFILTER_CTL_BLKSNAP_CBTMAP),
    "CBTMAP",
  );
  assert.equal(abi.requestName(0x1234), undefined);
});
