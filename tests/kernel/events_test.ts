import assert from "node:assert/strict";
import { BlksnapEventCorrupted, BlksnapEventNoSpace } from "../../src/kernel/abi.ts";
import { decodeEvent } from "../../src/kernel/events.ts";

const context = {
  monotonicNowNs: 50_000_000_000n,
  epochNowMs: 1_700_000_000_000,
  deviceIdOf: (major: number, minor: number) => (major === 254 && minor === 16 ? "vdb" : undefined),
};

function payload(bytes: Uint8Array): Uint8Array {
  const data = new Uint8Array(4064);
  data.set(bytes);
  return data;
}

Deno.test("decodeEvent converts the monotonic time label to epoch milliseconds", () => {
  const event = decodeEvent({
    code: 1,
    timeLabelNs: 48_500_000_000,
    data: payload(BlksnapEventNoSpace.encode({ requested_nr_sect: 2097152 })),
  }, context);
  assert.deepEqual(event, {
    code: "no_space",
    timeMs: 1_700_000_000_000 - 1500,
    requestedSectors: 2097152,
  });
});

Deno.test("decodeEvent names the corrupted device and its errno", () => {
  const corrupted = (major: number) =>
    decodeEvent({
      code: 0,
      timeLabelNs: 50_000_000_000,
      data: payload(
        BlksnapEventCorrupted.encode({ dev_id_mj: major, dev_id_mn: 16, err_code: -28 }),
      ),
    }, context);
  assert.deepEqual(corrupted(254), {
    code: "corrupted",
    timeMs: 1_700_000_000_000,
    deviceId: "vdb",
    errorCode: 28,
    errorName: "ENOSPC",
  });
  const unknown = corrupted(8);
  assert.equal(unknown?.code, "corrupted");
  assert.equal(unknown?.code === "corrupted" && unknown.deviceId, undefined);
});

Deno.test("decodeEvent ignores codes it does not know and never dates events in the future", () => {
  assert.equal(
    decodeEvent({ code: 7, timeLabelNs: 0, data: payload(new Uint8Array()) }, context),
    undefined,
  );
  const future = decodeEvent({
    code: 1,
    timeLabelNs: 60_000_000_000,
    data: payload(BlksnapEventNoSpace.encode({ requested_nr_sect: 1 })),
  }, context);
  assert.equal(future?.timeMs, context.epochNowMs);
});
