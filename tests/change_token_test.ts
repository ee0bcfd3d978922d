import assert from "node:assert/strict";
import {
  changeRank,
  checkCbtBelongs,
  decodeChangeToken,
  encodeChangeToken,
  previousPoint,
  resolveSince,
} from "../src/change_token.ts";
import { isServiceError } from "../src/errors.ts";

const GEN = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0";
const point = { deviceId: "vm:1.img", generationId: GEN, changeNumber: 7 };

const fullBackup = (reason: string) => (error: unknown) =>
  isServiceError(error, "FULL_BACKUP_REQUIRED") && error.reason === reason;

Deno.test("a change token round-trips its device, generation and change number", () => {
  const token = encodeChangeToken(point);
  assert.match(token, /^[A-Za-z0-9_-]+$/, "base64url without padding");
  assert.deepEqual(decodeChangeToken(token), point);
  for (const changeNumber of [1, 254, 255]) {
    const other = { ...point, changeNumber };
    assert.deepEqual(decodeChangeToken(encodeChangeToken(other)), other);
  }
  const longest = { ...point, deviceId: "d".repeat(64) };
  assert.deepEqual(decodeChangeToken(encodeChangeToken(longest)), longest);
});

Deno.test("encodeChangeToken() refuses a point no snapshot can have", () => {
  for (
    const bad of [
      { ...point, changeNumber: 0 },
      { ...point, changeNumber: 256 },
      { ...point, generationId: "not-a-uuid" },
      { ...point, deviceId: "-starts-with-a-dash" },
    ]
  ) {
    assert.throws(() => encodeChangeToken(bad), (e) => isServiceError(e, "INVALID_ARGUMENT"));
  }
});

Deno.test("decodeChangeToken() answers malformed for anything else", () => {
  const token = encodeChangeToken(point);
  const bytes = Uint8Array.from(
    atob(token.replaceAll("-", "+").replaceAll("_", "/")),
    (c) => c.charCodeAt(0),
  );
  const reencode = (edit: (b: Uint8Array) => Uint8Array) =>
    btoa(String.fromCharCode(...edit(bytes.slice()))).replaceAll("+", "-").replaceAll("/", "_")
      .replace(/=+$/, "");
  const cases = [
    "",
    "5",
    token + "A",
    token + "==",
    token.slice(1),
    reencode((b) => b.fill(2, 0, 1)), // version 2
    reencode((b) => b.fill(0, 1, 2)), // change number 0
    reencode((b) => b.subarray(0, 18)), // no device id
    reencode((b) => b.fill(0x2f, 18, 19)), // a device id starting with '/'
  ];
  for (const text of cases) {
    assert.throws(() => decodeChangeToken(text), fullBackup("malformed"), JSON.stringify(text));
  }
});

Deno.test("change ranks put the wrap take (255) first in its generation", () => {
  assert.equal(changeRank(255), 0);
  assert.equal(changeRank(1), 1);
  assert.ok(changeRank(255) < changeRank(1) && changeRank(1) < changeRank(254));
});

Deno.test("previousPoint(): the previous take in the same generation, or none", () => {
  const at = (changeNumber: number) => ({ ...point, changeNumber });
  const position = (changesNumber: number, generationId = GEN) => ({ generationId, changesNumber });
  assert.deepEqual(previousPoint(at(7), position(6)), at(6));
  assert.equal(previousPoint(at(1), position(0)), undefined, "the first take since attach");
  assert.deepEqual(previousPoint(at(1), position(255)), at(255), "the take after the wrap");
  assert.equal(previousPoint(at(255), position(254, crypto.randomUUID())), undefined, "the wrap");
  assert.equal(previousPoint(at(1), position(3, crypto.randomUUID())), undefined, "a reset");
  assert.deepEqual(previousPoint(at(7)), at(6), "without the position before: n - 1");
  assert.equal(previousPoint(at(1)), undefined, "without it, 1 cannot tell a wrap from a start");
  assert.equal(previousPoint(at(255)), undefined);
});

Deno.test("resolveSince(): token, bare number with generation, or the previous snapshot", () => {
  const image = { ...point, changeNumber: 9 };
  const earlier = { ...point, changeNumber: 4 };
  assert.deepEqual(resolveSince(image, { since: encodeChangeToken(earlier) }), earlier);
  assert.deepEqual(resolveSince(image, { since: "4", generation: GEN.toUpperCase() }), earlier);
  assert.deepEqual(resolveSince(image, { previous: earlier }), earlier);
  assert.throws(() => resolveSince(image, {}), fullBackup("generation_changed"));
  assert.throws(() => resolveSince(image, { since: "4" }), fullBackup("malformed"));
  assert.throws(
    () => resolveSince(image, { since: "256", generation: GEN }),
    fullBackup("malformed"),
  );
  assert.throws(
    () => resolveSince(image, { since: "4", generation: crypto.randomUUID() }),
    fullBackup("generation_changed"),
  );
  assert.throws(
    () => resolveSince(image, { since: encodeChangeToken({ ...earlier, deviceId: "other" }) }),
    fullBackup("other_device"),
  );
  for (const changeNumber of [9, 10]) {
    assert.throws(
      () => resolveSince(image, { since: encodeChangeToken({ ...point, changeNumber }) }),
      fullBackup("not_earlier"),
    );
  }
  assert.throws(
    () => resolveSince(image, { generation: GEN }),
    (e) => isServiceError(e, "INVALID_ARGUMENT") && e.field === "generation",
  );
  const wrap = { ...point, changeNumber: 255 };
  assert.deepEqual(resolveSince(image, { since: encodeChangeToken(wrap) }), wrap, "wrap is first");
  assert.throws(
    () => resolveSince(wrap, { since: encodeChangeToken(earlier) }),
    fullBackup("not_earlier"),
  );
});

Deno.test("checkCbtBelongs(): the device's CBT must still be the one of the snapshot", () => {
  checkCbtBelongs(point, { generationId: GEN, changesNumber: 7 });
  assert.throws(
    () => checkCbtBelongs(point, { generationId: crypto.randomUUID(), changesNumber: 7 }),
    fullBackup("generation_changed"),
  );
  assert.throws(
    () => checkCbtBelongs(point, { generationId: GEN, changesNumber: 8 }),
    fullBackup("generation_changed"),
  );
});
