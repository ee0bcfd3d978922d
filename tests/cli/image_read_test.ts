import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type CliResult,
  runCli,
  runCliOnTerminal,
  terminalAvailable,
} from "../_helpers/api_cli.ts";
import { nbdWrite } from "../_helpers/api_nbd.ts";
import { pattern, toolsMissing } from "../_helpers/nbd_fixture.ts";
import { API_BLOCK_BYTES, type ServiceFixture, withService } from "../_helpers/service_fixture.ts";

const MIB = 1 << 20;
/** 8 MiB and a short tail: data in a few places, zeros elsewhere. */
const SIZE = 8 * MIB + 1536;
const noNbdsh = toolsMissing("nbdsh");

interface ReadReport {
  bytes: number;
  output: string;
  via: string;
  writtenBytes: number;
  skippedBytes: number;
}

function ok(result: CliResult): ReadReport {
  assert.equal(result.code, 0, `exit ${result.code}\n${result.stdout}\n${result.stderr}`);
  return JSON.parse(result.stdout) as ReadReport;
}

/** A mostly-zero disk: data in the first block, around 3 MiB, and in the short tail. */
function sparseContent(seed: number): Uint8Array<ArrayBuffer> {
  const content = new Uint8Array(SIZE);
  content.set(pattern(API_BLOCK_BYTES, seed), 0);
  content.set(pattern(100_000, seed + 1), 3 * MIB + 5);
  content.set(pattern(1000, seed + 2), SIZE - 1000);
  return content;
}

async function attachAndTake(fixture: ServiceFixture, content: Uint8Array): Promise<string> {
  const path = join(fixture.allowed, "vda.img");
  await Deno.writeFile(path, content);
  await fixture.client.devices.attach({ path, name: "vda" });
  return await take(fixture);
}

async function take(fixture: ServiceFixture): Promise<string> {
  const snapshot = await fixture.client.snapshots.create({
    devices: ["vda"],
    diffStorage: {
      path: join(fixture.allowed, `${crypto.randomUUID()}.diff`),
      limitBytes: 16 * MIB,
    },
  });
  await fixture.client.snapshots.take(snapshot.id);
  return snapshot.id;
}

/** The change token of the image of `deviceId` in `snapshotId`, to pass as --since later. */
async function changeToken(fixture: ServiceFixture, snapshotId: string): Promise<string> {
  const info = await fixture.client.snapshots.get(snapshotId);
  const token = info.devices.find((d) => d.deviceId === "vda")?.changeToken;
  assert.ok(token, `snapshot ${snapshotId} has a change token for vda`);
  return token;
}

async function leftovers(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.name.endsWith(".part")) names.push(entry.name);
  }
  return names;
}

for (const via of ["HTTP", "NBD"]) {
  const flags = via === "NBD" ? ["--nbd"] : [];
  Deno.test(`image read -o (${via}) writes a sparse copy equal to the image`, async () => {
    await withService({}, async (fixture) => {
      const content = sparseContent(3);
      const id = await attachAndTake(fixture, content);
      const out = join(fixture.root, "full.raw");
      const env = { BLKSNAP_URL: fixture.baseUrl };
      const report = ok(
        await runCli(["image", "read", id, "vda", "-o", out, "--json", ...flags], env),
      );
      assert.equal(report.via, via);
      assert.equal(report.bytes, SIZE);
      assert.deepEqual(await Deno.readFile(out), content);
      const stat = await Deno.stat(out);
      assert.equal(stat.size, SIZE);
      assert.ok(report.writtenBytes <= 4 * API_BLOCK_BYTES, JSON.stringify(report));
      assert.ok(stat.blocks! * 512 <= 512 * 1024, `allocated ${stat.blocks! * 512} bytes`);
      assert.deepEqual(await leftovers(fixture.root), []);

      const part = join(fixture.root, "part.raw");
      const partial = ok(
        await runCli(
          [
            "image",
            "read",
            id,
            "vda",
            "-o",
            part,
            "--offset",
            "3000000",
            "--length",
            "200000",
            "--json",
            ...flags,
          ],
          env,
        ),
      );
      assert.equal(partial.bytes, 200_000);
      assert.deepEqual(await Deno.readFile(part), content.subarray(3_000_000, 3_200_000));
    });
  });

  Deno.test({
    name:
      `image read --since TOKEN --into FILE (${via}) makes a synthetic full equal to a full read`,
    ignore: noNbdsh,
    async fn() {
      await withService({}, async (fixture) => {
        const env = { BLKSNAP_URL: fixture.baseUrl };
        const first = await attachAndTake(fixture, sparseContent(7));
        const backup = join(fixture.root, "backup.raw");
        ok(await runCli(["image", "read", first, "vda", "-o", backup, "--json", ...flags], env));
        const token = await changeToken(fixture, first);
        await fixture.client.snapshots.destroy(first);

        const device = await fixture.client.devices.get("vda");
        await nbdWrite(device.locator, [
          { offset: 5, data: pattern(3000, 41) },
          { offset: 5 * MIB, data: pattern(2 * API_BLOCK_BYTES, 42) },
          { offset: 3 * MIB + 5, data: new Uint8Array(100_000) }, // data replaced by zeros
          { offset: SIZE - 512, data: pattern(512, 43) },
        ], { scratchDir: fixture.root });
        const second = await take(fixture);
        const report = ok(
          await runCli([
            "image",
            "read",
            second,
            "vda",
            "--since",
            token,
            "--into",
            backup,
            "--json",
            ...flags,
          ], env),
        );
        assert.equal(report.via, via);
        assert.ok(report.bytes < SIZE / 4, `applied ${report.bytes} bytes`);
        const full = join(fixture.root, "second.raw");
        ok(await runCli(["image", "read", second, "vda", "-o", full, "--json"], env));
        assert.deepEqual(await Deno.readFile(backup), await Deno.readFile(full));
        const image = await fixture.client.images.read(second, "vda");
        assert.deepEqual(await Deno.readFile(backup), new Uint8Array(await image.arrayBuffer()));
        assert.deepEqual(await leftovers(fixture.root), []);

        const inPlace = join(fixture.root, "in-place.raw");
        await Deno.writeFile(inPlace, sparseContent(7));
        ok(
          await runCli(
            [
              "image",
              "read",
              second,
              "vda",
              "--since",
              token,
              "--into",
              inPlace,
              "--in-place",
              "--json",
              ...flags,
            ],
            env,
          ),
        );
        assert.deepEqual(await Deno.readFile(inPlace), await Deno.readFile(full));
      });
    },
  });
}

Deno.test("image read --into refuses a file of another size, in one line, leaving it as it was", async () => {
  await withService({}, async (fixture) => {
    const id = await attachAndTake(fixture, sparseContent(1));
    const wrong = join(fixture.root, "wrong.raw");
    await Deno.writeFile(wrong, pattern(MIB, 2));
    const result = await runCli(
      ["image", "read", id, "vda", "--since", await changeToken(fixture, id), "--into", wrong],
      { BLKSNAP_URL: fixture.baseUrl },
    );
    assert.notEqual(result.code, 0);
    assert.match(
      result.stderr,
      new RegExp(`^blksnap: .*has ${MIB} bytes but the image has ${SIZE}.*\n$`),
    );
    assert.equal(result.stderr.split("\n").length, 2, result.stderr);
    assert.deepEqual(await Deno.readFile(wrong), pattern(MIB, 2));
    const alone = await runCli(["image", "read", id, "vda", "--into", wrong], {
      BLKSNAP_URL: fixture.baseUrl,
    });
    assert.equal(alone.code, 2);
    assert.match(alone.stderr, /--since and --into go together/);
  });
});

/**
 * A proxy in front of the service that cuts every image data response after
 * `cutAfter` bytes (the connection drops mid-read, as when the snapshot or
 * the service goes away); everything else passes through.
 */
async function withCuttingProxy(
  target: string,
  cutAfter: number,
  body: (url: string) => Promise<void>,
): Promise<void> {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (request) => {
      const url = new URL(request.url);
      const upstream = await fetch(`${target}${url.pathname}${url.search}`, {
        method: request.method,
        headers: request.headers,
        body: request.body,
      });
      if (!url.pathname.endsWith("/data") || !upstream.body) return upstream;
      let sent = 0;
      const reader = upstream.body.getReader();
      const cut = new ReadableStream<Uint8Array>({
        async pull(controller) {
          const { value, done } = await reader.read();
          if (done) return controller.close();
          if (sent + value.length > cutAfter) {
            controller.enqueue(value.subarray(0, cutAfter - sent));
            await reader.cancel();
            controller.close();
            return;
          }
          sent += value.length;
          controller.enqueue(value);
        },
      });
      return new Response(cut, { status: upstream.status, headers: upstream.headers });
    },
  );
  try {
    await body(`http://127.0.0.1:${server.addr.port}`);
  } finally {
    await server.shutdown();
  }
}

Deno.test("a read cut mid-way leaves no output and no temporary file, and says why in one line", async () => {
  await withService({}, async (fixture) => {
    const path = join(fixture.allowed, "vda.img");
    await Deno.writeFile(path, sparseContent(5));
    await fixture.client.devices.attach({ path, name: "vda" });
    const first = await take(fixture);
    const token = await changeToken(fixture, first);
    await fixture.client.snapshots.destroy(first);
    await fixture.client.cbt.markDirty("vda", [{ offset: 0, count: (4 * MIB) / 512 }]);
    const id = await take(fixture);
    await withCuttingProxy(fixture.baseUrl, 2 * MIB, async (url) => {
      const out = join(fixture.root, "cut.raw");
      const result = await runCli(["image", "read", id, "vda", "-o", out], { BLKSNAP_URL: url });
      assert.equal(result.code, 1, result.stderr);
      assert.match(
        result.stderr,
        /^blksnap: Cannot read vda@.*: the image stream ended after \d+ of \d+ bytes.*nothing was written to .*cut\.raw\n$/,
      );
      assert.equal(await Deno.stat(out).then(() => true, () => false), false);

      const existing = join(fixture.root, "existing.raw");
      await Deno.writeFile(existing, pattern(1000, 1));
      const again = await runCli(["image", "read", id, "vda", "-o", existing], {
        BLKSNAP_URL: url,
      });
      assert.equal(again.code, 1);
      assert.deepEqual(await Deno.readFile(existing), pattern(1000, 1), "the old file stays");

      const backup = join(fixture.root, "backup.raw");
      const old = sparseContent(9);
      await Deno.writeFile(backup, old);
      const apply = await runCli(
        ["image", "read", id, "vda", "--since", token, "--into", backup],
        { BLKSNAP_URL: url },
      );
      assert.equal(apply.code, 1, apply.stderr);
      assert.deepEqual(
        await Deno.readFile(backup),
        old,
        "--into replaces the file only when complete",
      );
      assert.deepEqual(await leftovers(fixture.root), []);
    });
  });
});

Deno.test({
  name: "image read without -o refuses to write to a terminal",
  ignore: !terminalAvailable(),
  async fn() {
    await withService({}, async (fixture) => {
      const id = await attachAndTake(fixture, sparseContent(2));
      const shown = await runCliOnTerminal(["image", "read", id, "vda"], {
        BLKSNAP_URL: fixture.baseUrl,
      });
      assert.equal(shown.code, 2, shown.stdout);
      assert.match(shown.stdout, /refusing to write image data to a terminal/);
      assert.ok(shown.stdout.length < 1000, "no image bytes on the terminal");
    });
  },
});

Deno.test("image read --nbd-server pulls from a given NBD server by export name (as for kernel hosts)", async () => {
  await withService({}, async (fixture) => {
    const content = sparseContent(4);
    const id = await attachAndTake(fixture, content);
    const out = join(fixture.root, "by-server.raw");
    const server = `nbd://127.0.0.1:${fixture.driver.nbdServer.tcpPort}`;
    const report = ok(
      await runCli(["image", "read", id, "vda", "-o", out, "--nbd-server", server, "--json"], {
        BLKSNAP_URL: fixture.baseUrl,
      }),
    );
    assert.equal(report.via, "NBD");
    assert.deepEqual(await Deno.readFile(out), content);
  });
});

Deno.test("image read --since with a token the service cannot answer says: take a full backup: <reason>", async () => {
  await withService({}, async (fixture) => {
    const first = await attachAndTake(fixture, sparseContent(6));
    const backup = join(fixture.root, "backup.raw");
    await Deno.writeFile(backup, sparseContent(6));
    const env = { BLKSNAP_URL: fixture.baseUrl };
    const own = await runCli(
      [
        "image",
        "read",
        first,
        "vda",
        "--since",
        await changeToken(fixture, first),
        "--into",
        backup,
      ],
      env,
    );
    assert.notEqual(own.code, 0);
    assert.match(own.stderr, /^blksnap: take a full backup: not_earlier\n$/);
    const garbage = await runCli(
      ["image", "read", first, "vda", "--since", "not-a-token", "--into", backup],
      env,
    );
    assert.notEqual(garbage.code, 0);
    assert.match(garbage.stderr, /^blksnap: take a full backup: malformed\n$/);
    assert.deepEqual(await Deno.readFile(backup), sparseContent(6), "the copy is left alone");
  });
});
