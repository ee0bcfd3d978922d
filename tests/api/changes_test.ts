/**
 * GET .../changes over HTTP: the answer is complete (relative to the token it
 * names) or 409 problem+json FULL_BACKUP_REQUIRED with a `reason`, also when
 * the device's CBT is no longer the one the snapshot was taken with.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { responseProblem } from "../_helpers/api_problem.ts";
import { withService } from "../_helpers/service_fixture.ts";
import { imageChanges } from "../../src/api/models.ts";
import { violations } from "../_helpers/api_json_schema.ts";

const MIB = 1 << 20;

Deno.test("changes answer 409 FULL_BACKUP_REQUIRED with each reason as problem+json", async () => {
  await withService({}, async (fixture) => {
    const { client, makeDisk, allowed, driver } = fixture;
    for (const name of ["a", "b"]) {
      await client.devices.attach({ path: await makeDisk(`${name}.img`, MIB), name });
    }
    const take = async () => {
      const created = await client.snapshots.create({
        devices: ["a", "b"],
        diffStorage: { path: join(allowed, `diff-${crypto.randomUUID()}`), limitBytes: MIB },
      });
      return await client.snapshots.take(created.id);
    };
    const first = await take();
    const [a1, b1] = first.devices;
    await client.snapshots.destroy(first.id);
    const second = await take();
    const path = `/v1/snapshots/${second.id}/images/a/changes`;
    const refused = async (query: string, reason: string) =>
      await responseProblem(await fixture.fetch(`${path}${query}`), {
        status: 409,
        code: "FULL_BACKUP_REQUIRED",
        errno: "ESTALE",
        reason,
      });
    const ok = await client.images.changes(second.id, "a");
    assert.deepEqual(violations(imageChanges.jsonSchema(), { ...ok }), []);
    assert.equal(ok.sinceToken, a1.changeToken, "the default names the token it is relative to");
    await refused(`?since=${b1.changeToken}`, "other_device");
    await refused(`?since=${second.devices[0].changeToken}`, "not_earlier");
    await refused(`?since=1`, "malformed");
    await refused(`?since=garbage`, "malformed");
    await refused(`?since=1&generation=${crypto.randomUUID()}`, "generation_changed");
    const { cbt } = driver.engine.tracker("a");
    assert.throws(() => cbt.set(cbt.blockCount * cbt.blockSizeBytes, 1), "corrupt the map");
    const corrupted = await refused(`?since=${a1.changeToken}`, "cbt_corrupted");
    assert.match(corrupted.detail, /corrupted/);
    cbt.reset(MIB); // as a restart that could not keep the CBT would leave it
    const lost = await refused(`?since=${a1.changeToken}`, "generation_changed");
    assert.match(lost.detail, /no longer the one of this snapshot/);
    await refused("", "generation_changed");
  });
});
