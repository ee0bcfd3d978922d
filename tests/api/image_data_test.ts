import assert from "node:assert/strict";
import { join } from "node:path";
import { responseProblem } from "../_helpers/api_problem.ts";
import { toolsMissing } from "../_helpers/nbd_fixture.ts";
import { type ServiceFixture, withService, writeDisk } from "../_helpers/service_fixture.ts";

const MIB = 1 << 20;
/** Three pieces and a bit: multi-piece parts and a short last block. */
const SIZE = 3 * MIB + 3 * 512;
const noCurl = toolsMissing("curl");

async function taken(
  fixture: ServiceFixture,
  options: { name?: string; writable?: boolean; seed?: number } = {},
): Promise<{ content: Uint8Array; id: string; url: string }> {
  const name = options.name ?? "vda";
  const path = join(fixture.allowed, `${name}.img`);
  const content = await writeDisk(path, SIZE, { seed: options.seed ?? 5 });
  await fixture.client.devices.attach({ path, name }).catch(() => {});
  const snapshot = await fixture.client.snapshots.create({
    devices: [name],
    diffStorage: {
      path: join(fixture.allowed, `${name}-${crypto.randomUUID()}.diff`),
      limitBytes: 8 * MIB,
    },
    writable: options.writable,
  });
  await fixture.client.snapshots.take(snapshot.id);
  return { content, id: snapshot.id, url: `/v1/snapshots/${snapshot.id}/images/${name}/data` };
}

interface Part {
  contentType: string;
  contentRange: string;
  data: Uint8Array;
}

/** Splits a multipart/byteranges body by its boundary (an independent reading of RFC 9110 14.6). */
function parseMultipart(body: Uint8Array, contentType: string): Part[] {
  const boundary = /boundary=([^;]+)/.exec(contentType)?.[1];
  assert.ok(boundary, contentType);
  const latin = new TextDecoder("latin1").decode(body);
  const delimiter = `--${boundary}`;
  assert.ok(latin.endsWith(`\r\n${delimiter}--\r\n`), "closing delimiter");
  const parts: Part[] = [];
  let at = latin.indexOf(delimiter);
  assert.equal(at, 0, "the body starts with the first delimiter");
  while (latin.startsWith("\r\n", at + delimiter.length)) {
    const headStart = at + delimiter.length + 2;
    const headEnd = latin.indexOf("\r\n\r\n", headStart);
    const head = Object.fromEntries(
      latin.slice(headStart, headEnd).split("\r\n").map((line) => {
        const colon = line.indexOf(":");
        return [line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()];
      }),
    );
    const [, first, last] = /^bytes (\d+)-(\d+)\/\d+$/.exec(head["content-range"])!.map(Number);
    const dataStart = headEnd + 4;
    const dataEnd = dataStart + last - first + 1;
    parts.push({
      contentType: head["content-type"],
      contentRange: head["content-range"],
      data: body.subarray(dataStart, dataEnd),
    });
    assert.ok(latin.startsWith(`\r\n${delimiter}`, dataEnd), "a delimiter follows each part");
    at = dataEnd + 2;
  }
  return parts;
}

Deno.test("GET .../data with several ranges answers 206 multipart/byteranges, coalesced and sorted", async () => {
  await withService({}, async (fixture) => {
    const { content, url } = await taken(fixture);
    const range = `bytes=${2 * MIB}-${2 * MIB + MIB + 99},0-99,50-149,-512,${SIZE}-`;
    const response = await fixture.fetch(url, { headers: { range } });
    assert.equal(response.status, 206);
    const type = response.headers.get("content-type")!;
    assert.match(type, /^multipart\/byteranges; boundary=\w+$/);
    const body = new Uint8Array(await response.arrayBuffer());
    assert.equal(response.headers.get("content-length"), String(body.length));
    const parts = parseMultipart(body, type);
    const expected: Array<[number, number]> = [[0, 150], [2 * MIB, MIB + 100], [SIZE - 512, 512]];
    assert.deepEqual(
      parts.map((p) => p.contentRange),
      expected.map(([offset, length]) => `bytes ${offset}-${offset + length - 1}/${SIZE}`),
    );
    expected.forEach(([offset, length], i) => {
      assert.equal(parts[i].contentType, "application/octet-stream");
      assert.deepEqual(parts[i].data, content.subarray(offset, offset + length));
    });
  });
});

Deno.test("GET .../data: ranges that coalesce into one answer a single-part 206; none satisfiable 416", async () => {
  await withService({}, async (fixture) => {
    const { content, url } = await taken(fixture);
    const one = await fixture.fetch(url, { headers: { range: "bytes=10-19,0-9,20-29" } });
    assert.equal(one.status, 206);
    assert.equal(one.headers.get("content-type"), "application/octet-stream");
    assert.equal(one.headers.get("content-range"), `bytes 0-29/${SIZE}`);
    assert.deepEqual(new Uint8Array(await one.arrayBuffer()), content.subarray(0, 30));
    const none = await fixture.fetch(url, {
      headers: { range: `bytes=${SIZE}-,${SIZE + 9}-${SIZE + 10}` },
    });
    assert.equal(none.headers.get("content-range"), `bytes */${SIZE}`);
    await responseProblem(none, { status: 416, code: "RANGE_NOT_SATISFIABLE" });
    const many = Array.from({ length: 257 }, (_, i) => `${i * 10}-${i * 10 + 1}`).join(",");
    const tooMany = await fixture.fetch(url, { headers: { range: `bytes=${many}` } });
    const problem = await responseProblem(tooMany, { status: 416, code: "RANGE_NOT_SATISFIABLE" });
    assert.match(problem.detail, /more than 256 ranges/);
  });
});

Deno.test("HEAD .../data gives the GET's headers with the real Content-Length and no body", async () => {
  await withService({}, async (fixture) => {
    const { url } = await taken(fixture);
    for (const range of [undefined, "bytes=100-199", "bytes=0-9,1000-1999"]) {
      const headers: Record<string, string> = range ? { range } : {};
      const get = await fixture.fetch(url, { headers });
      const getBody = new Uint8Array(await get.arrayBuffer());
      const head = await fixture.fetch(url, { method: "HEAD", headers });
      assert.equal(head.status, get.status, range);
      assert.equal(head.headers.get("content-length"), String(getBody.length), range);
      for (const name of ["etag", "last-modified", "accept-ranges", "content-range"]) {
        assert.equal(head.headers.get(name), get.headers.get(name), `${name} ${range}`);
      }
      assert.equal(
        head.headers.get("content-type")?.split(";")[0],
        get.headers.get("content-type")?.split(";")[0],
      );
      assert.equal((await head.arrayBuffer()).byteLength, 0);
    }
  });
});

Deno.test("the ETag is strong, stable, and differs per snapshot and per device", async () => {
  await withService({}, async (fixture) => {
    const first = await taken(fixture, { name: "vda" });
    const other = await taken(fixture, { name: "vdb" });
    const etagOf = async (url: string) => {
      const response = await fixture.fetch(url, { method: "HEAD" });
      await response.body?.cancel();
      return response.headers.get("etag");
    };
    const tag = await etagOf(first.url);
    assert.match(tag!, /^"[0-9a-f]{32}"$/);
    assert.equal(await etagOf(first.url), tag);
    assert.notEqual(await etagOf(other.url), tag);
    await fixture.client.snapshots.destroy(first.id);
    const again = await taken(fixture, { name: "vda" });
    assert.notEqual(await etagOf(again.url), tag, "a new take of the same device");
    const lastModified = (await fixture.fetch(again.url, { method: "HEAD" })).headers.get(
      "last-modified",
    );
    const info = await fixture.client.snapshots.get(again.id);
    assert.equal(lastModified, new Date(info.takenAt!).toUTCString());
  });
});

Deno.test("If-None-Match answers 304, If-Match 412 on a mismatch, If-Range decides the range", async () => {
  await withService({}, async (fixture) => {
    const { content, url } = await taken(fixture);
    const head = await fixture.fetch(url, { method: "HEAD" });
    const etag = head.headers.get("etag")!;
    const notModified = await fixture.fetch(url, { headers: { "if-none-match": `"x", ${etag}` } });
    assert.equal(notModified.status, 304);
    assert.equal(notModified.headers.get("etag"), etag);
    assert.equal((await notModified.arrayBuffer()).byteLength, 0);
    const weak = await fixture.fetch(url, { headers: { "if-none-match": `W/${etag}` } });
    assert.equal(weak.status, 304, "If-None-Match compares weakly");

    const failed = await fixture.fetch(url, { headers: { "if-match": '"other"' } });
    await responseProblem(failed, { status: 412, code: "PRECONDITION_FAILED" });
    const matched = await fixture.fetch(url, {
      headers: { "if-match": etag, range: "bytes=0-9" },
    });
    assert.equal(matched.status, 206);
    await matched.body?.cancel();

    const resumed = await fixture.fetch(url, { headers: { "if-range": etag, range: "bytes=5-9" } });
    assert.equal(resumed.status, 206);
    assert.deepEqual(new Uint8Array(await resumed.arrayBuffer()), content.subarray(5, 10));
    for (const validator of ['"stale"', `W/${etag}`, "Tue, 01 Dec 2020 00:00:00 GMT"]) {
      const whole = await fixture.fetch(url, {
        headers: { "if-range": validator, range: "bytes=5-9" },
      });
      assert.equal(whole.status, 200, validator);
      assert.equal(whole.headers.get("content-range"), null);
      assert.deepEqual(new Uint8Array(await whole.arrayBuffer()), content, validator);
    }
  });
});

Deno.test("a writable snapshot's image has no validators: If-Range sends the whole image", async () => {
  await withService({}, async (fixture) => {
    const { content, url } = await taken(fixture, { writable: true });
    const response = await fixture.fetch(url, { headers: { range: "bytes=0-9" } });
    assert.equal(response.headers.get("etag"), null);
    assert.equal(response.headers.get("last-modified"), null);
    await response.body?.cancel();
    const whole = await fixture.fetch(url, {
      headers: { "if-range": '"any"', range: "bytes=0-9" },
    });
    assert.equal(whole.status, 200);
    assert.deepEqual(new Uint8Array(await whole.arrayBuffer()), content);
    const any = await fixture.fetch(url, { headers: { "if-none-match": "*" } });
    assert.equal(any.status, 304);
  });
});

async function curl(args: string[]): Promise<{ stdout: Uint8Array; stderr: string }> {
  const output = await new Deno.Command("curl", { args: ["-sS", ...args] }).output();
  const stderr = new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, stderr);
  return { stdout: output.stdout, stderr };
}

Deno.test({
  name: "curl: -r with several ranges, -I (HEAD), and a resumed download with -C and If-Range",
  ignore: noCurl,
  async fn() {
    await withService({}, async (fixture) => {
      const { content, url } = await taken(fixture);
      const full = `${fixture.baseUrl}${url}`;
      const headers = await curl(["-I", full]);
      const head = new TextDecoder().decode(headers.stdout);
      assert.match(head, /^HTTP\/1\.1 200/);
      assert.match(head, new RegExp(`content-length: ${SIZE}\r\n`, "i"));
      const etag = /etag: (\S+)\r\n/i.exec(head)![1];

      const multi = await curl(["-D", "-", "-r", "0-99,4096-8191", full]);
      const text = new TextDecoder("latin1").decode(multi.stdout);
      const type = /content-type: (multipart\/byteranges; boundary=\w+)/i.exec(text)![1];
      const body = multi.stdout.subarray(text.indexOf("\r\n\r\n") + 4);
      const parts = parseMultipart(body, type);
      assert.deepEqual(parts.map((p) => p.data), [
        content.subarray(0, 100),
        content.subarray(4096, 8192),
      ]);

      const partial = join(fixture.root, "partial.raw");
      await Deno.writeFile(partial, content.subarray(0, 1000));
      await curl(["-o", partial, "-C", "-", "-H", `if-range: ${etag}`, full]);
      assert.deepEqual(await Deno.readFile(partial), content);
    });
  },
});
