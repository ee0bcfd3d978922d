/**
 * Issue 10, point 4: identity rules by device and inode, through the API
 * of a service whose state folder lies under its allowed prefix (as with
 * the default `--allow-path`): no device may be the state file, a lock file,
 * a difference storage or another attached device (whatever name reaches
 * it: a hard link, a symlink); no difference storage may be any of those.
 *
 * @module
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { createApp } from "../../src/api/app.ts";
import { serveHttp } from "../../src/api/http_listener.ts";
import { PathPolicy } from "../../src/api/path_policy.ts";
import { UserspaceDriver } from "../../src/userspace/userspace_driver.ts";
import { API_ENGINE_PARAMS } from "../_helpers/service_fixture.ts";
import { withRoot } from "./_serve.ts";

const MIB = 2 ** 20;

interface Api {
  post(path: string, body: unknown): Promise<{ status: number; body: Record<string, string> }>;
  del(path: string): Promise<number>;
}

async function withStatefulService(
  body: (api: Api, dirs: { allowed: string; stateDir: string }) => Promise<void>,
): Promise<void> {
  await withRoot(async ({ allowed }) => {
    const stateDir = join(allowed, "state");
    await Deno.mkdir(stateDir);
    const driver = await UserspaceDriver.start({
      nbd: { tcp: { hostname: "127.0.0.1", port: 0 } },
      stateDir,
      engineParams: API_ENGINE_PARAMS,
    });
    const app = createApp(driver, { paths: await PathPolicy.create([allowed]) });
    const server = serveHttp(Deno.listen({ hostname: "127.0.0.1", port: 0 }), app.fetch);
    const base = `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`;
    const api: Api = {
      async post(path, json) {
        const response = await fetch(`${base}${path}`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(json),
        });
        return { status: response.status, body: await response.json() };
      },
      async del(path) {
        const response = await fetch(`${base}${path}`, { method: "DELETE" });
        await response.body?.cancel();
        return response.status;
      },
    };
    try {
      await body(api, { allowed, stateDir });
    } finally {
      await driver.close();
      await server.shutdown();
    }
  });
}

function refused(
  answer: { status: number; body: Record<string, string> },
  status: number,
  detail: RegExp,
) {
  assert.equal(answer.status, status, JSON.stringify(answer.body));
  assert.match(answer.body.detail, detail);
}

Deno.test("no device may be the state file, a lock file, a difference storage or another attached device", async () => {
  await withStatefulService(async (api, { allowed, stateDir }) => {
    const disk = join(allowed, "a.img");
    await Deno.writeFile(disk, new Uint8Array(MIB));
    assert.equal((await api.post("/v1/devices", { path: disk, name: "a" })).status, 201);
    const stateFile = join(stateDir, "userspace-devices.json");
    assert.ok((await Deno.stat(stateFile)).size > 0, "the state file exists");
    refused(
      await api.post("/v1/devices", { path: stateFile, name: "s" }),
      409,
      /service's own file .*userspace-devices\.json/,
    );
    const lock = join(stateDir, "service.lock");
    await Deno.writeFile(lock, new Uint8Array(4096));
    refused(await api.post("/v1/devices", { path: lock, name: "l" }), 409, /own file .*\.lock/);
    // The same device under other names: itself, a hard link, a symlink.
    refused(await api.post("/v1/devices", { path: disk, name: "a2" }), 409, /attached as a/);
    const hard = join(allowed, "hard.img");
    await Deno.link(disk, hard);
    refused(await api.post("/v1/devices", { path: hard, name: "h" }), 409, /attached as a/);
    const soft = join(allowed, "soft.img");
    await Deno.symlink(disk, soft);
    refused(await api.post("/v1/devices", { path: soft, name: "l2" }), 409, /attached as a/);
    // A live snapshot's difference storage, by its name and by a hard link to it.
    const storage = join(allowed, "a.diff");
    const snapshot = await api.post("/v1/snapshots", {
      devices: ["a"],
      diffStorage: { path: storage, limitBytes: MIB },
    });
    assert.equal(snapshot.status, 201, JSON.stringify(snapshot.body));
    refused(
      await api.post("/v1/devices", { path: storage, name: "d" }),
      409,
      new RegExp(`difference storage of snapshot ${snapshot.body.id}`),
    );
    await Deno.link(storage, join(allowed, "storage-link"));
    refused(
      await api.post("/v1/devices", { path: join(allowed, "storage-link"), name: "d" }),
      409,
      /difference storage of snapshot/,
    );
    assert.equal(await api.del(`/v1/snapshots/${snapshot.body.id}`), 204);
  });
});

Deno.test("no difference storage may be the state file, a lock file, a device or another storage", async () => {
  await withStatefulService(async (api, { allowed, stateDir }) => {
    for (const name of ["a", "b", "c"]) {
      await Deno.writeFile(join(allowed, `${name}.img`), new Uint8Array(MIB));
      assert.equal(
        (await api.post("/v1/devices", { path: join(allowed, `${name}.img`), name })).status,
        201,
      );
    }
    const stateFile = join(stateDir, "userspace-devices.json");
    const stateBefore = await Deno.readFile(stateFile);
    const create = (devices: string[], path: string, overwrite?: boolean) =>
      api.post("/v1/snapshots", {
        devices,
        diffStorage: { path, limitBytes: MIB, ...(overwrite ? { overwrite } : {}) },
      });
    refused(await create(["a"], stateFile), 409, /service's own file/);
    refused(await create(["a"], stateFile, true), 409, /service's own file/);
    assert.deepEqual(await Deno.readFile(stateFile), stateBefore, "the state file is untouched");
    const lock = join(stateDir, "service.lock");
    await Deno.writeFile(lock, new Uint8Array(0));
    refused(await create(["a"], lock), 409, /service's own file .*\.lock/);
    assert.equal((await Deno.stat(lock)).size, 0, "the lock file did not grow");
    refused(await create(["a"], join(allowed, "a.img")), 400, /member device a/);
    refused(await create(["a"], join(allowed, "b.img"), true), 409, /attached device b/);
    const first = await create(["a"], join(allowed, "shared.diff"));
    assert.equal(first.status, 201, JSON.stringify(first.body));
    await Deno.link(join(allowed, "shared.diff"), join(allowed, "shared-link"));
    refused(
      await create(["c"], join(allowed, "shared-link"), true),
      409,
      new RegExp(`snapshot ${first.body.id} uses it`),
    );
    assert.equal(await api.del(`/v1/snapshots/${first.body.id}`), 204);
  });
});
