import assert from "node:assert/strict";
import { join } from "node:path";
import { logAdoption, withStateLog } from "../../src/log/logged_driver.ts";
import type { SnapshotDriver } from "../../src/driver.ts";
import { UserspaceDriver } from "../../src/userspace/userspace_driver.ts";
import { nbdWrite } from "../_helpers/api_nbd.ts";
import { pattern, toolsMissing } from "../_helpers/nbd_fixture.ts";
import { API_BLOCK_BYTES, API_ENGINE_PARAMS, withService } from "../_helpers/service_fixture.ts";
import { collectingLogger, type LogRecord, waitForRecord } from "./_collector.ts";

const MIB = 1 << 20;

function stateChanges(records: LogRecord[]): string[] {
  return records.filter((r) => typeof r.event === "string").map((r) => r.event as string);
}

Deno.test({
  name:
    "state log: attach, create, take, no_space and corrupted (no client waiting), destroy, detach",
  ignore: toolsMissing("nbdsh"),
  async fn() {
    const { logger, records } = collectingLogger("info");
    await withService({ logger }, async ({ client, makeDisk, allowed, root }) => {
      const device = await client.devices.attach({ path: await makeDisk("a.img", MIB), name: "a" });
      const snapshot = await client.snapshots.create({
        devices: ["a"],
        diffStorage: { path: join(allowed, "diff"), limitBytes: 2 * API_BLOCK_BYTES },
      });
      await client.snapshots.take(snapshot.id);
      await nbdWrite(
        device.locator,
        [0, 1, 2, 3].map((chunk) => ({
          offset: chunk * API_BLOCK_BYTES,
          data: pattern(512, chunk),
        })),
        { scratchDir: root },
      );
      const corrupted = await waitForRecord(
        records,
        (r) => r.event === "corrupted",
        "for the corrupted snapshot",
      );
      assert.equal(corrupted.level, "error");
      assert.equal(corrupted.snapshot, snapshot.id);
      assert.equal(corrupted.device, "a");
      assert.equal(corrupted.error, "ENOSPC");
      assert.equal(typeof corrupted.eventId, "number");
      await client.snapshots.destroy(snapshot.id);
      await client.devices.detach("a");
      const attach = records.find((r) => r.event === "attach")!;
      assert.equal(attach.device, "a");
      assert.equal(attach.path, join(allowed, "a.img"));
      const create = records.find((r) => r.event === "create")!;
      assert.equal(create.limitBytes, 2 * API_BLOCK_BYTES);
      assert.deepEqual(
        stateChanges(records),
        ["attach", "create", "take", "no_space", "corrupted", "destroy", "detach"],
      );
      assert.equal(records.filter((r) => r.event === "corrupted").length, 1, "logged once");
    });
  },
});

Deno.test("state log: a restarted userspace backend's devices are logged as adopted", async () => {
  const root = await Deno.realPath(await Deno.makeTempDir({ prefix: "blksnap-adopt-" }));
  try {
    const disk = join(root, "vm.img");
    await Deno.writeFile(disk, new Uint8Array(MIB));
    const start = () =>
      UserspaceDriver.start({
        nbd: { tcp: { hostname: "127.0.0.1", port: 0 } },
        stateDir: root,
        engineParams: API_ENGINE_PARAMS,
        logger: () => {},
      });
    const first = await start();
    await first.attach(disk, { name: "vm" });
    await first.close();
    const { logger, records } = collectingLogger();
    const second = await start();
    try {
      await logAdoption(second, logger);
    } finally {
      await second.close();
    }
    assert.deepEqual(records.map((r) => [r.event, r.device, r.path]), [["adopt", "vm", disk]]);
    assert.equal(records[0].message, "device adopted from an earlier run");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("state log: the logged driver passes take options through (freeze: false reaches the backend)", async () => {
  const { logger } = collectingLogger("info");
  const seen: unknown[] = [];
  const inner = {
    takeSnapshot: (_id: string, options?: unknown) => {
      seen.push(options);
      return Promise.resolve({
        id: "s",
        state: "taken",
        writable: false,
        createdAt: "",
        devices: [],
      });
    },
  } as unknown as SnapshotDriver;
  await withStateLog(inner, logger).takeSnapshot("s", { freeze: false });
  assert.deepEqual(seen, [{ freeze: false }]);
});
