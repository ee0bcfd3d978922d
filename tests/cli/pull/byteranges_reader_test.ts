import assert from "node:assert/strict";
import { join } from "node:path";
import { byterangePieces } from "../../../src/cli/pull/byteranges_reader.ts";
import { isServiceError } from "../../../src/errors.ts";
import { withService, writeDisk } from "../../_helpers/service_fixture.ts";

const MIB = 1 << 20;

/** `body` re-sent in pieces of `size` bytes, with the headers of `response`. */
function rechunked(response: Response, body: Uint8Array, size: number): Response {
  let at = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (at >= body.length) return controller.close();
      controller.enqueue(body.slice(at, at + size));
      at += size;
    },
  });
  return new Response(stream, { status: response.status, headers: response.headers });
}

async function collect(response: Response, size: number): Promise<Uint8Array> {
  const image = new Uint8Array(size);
  for await (const { offset, bytes } of byterangePieces(response)) image.set(bytes, offset);
  return image;
}

Deno.test("byterangePieces() places the service's multipart parts by their Content-Range, however the body is chunked", async () => {
  await withService({}, async (fixture) => {
    const path = join(fixture.allowed, "vda.img");
    const content = await writeDisk(path, 2 * MIB, { seed: 8 });
    await fixture.client.devices.attach({ path, name: "vda" });
    const snapshot = await fixture.client.snapshots.create({
      devices: ["vda"],
      diffStorage: { path: join(fixture.allowed, "d"), limitBytes: 4 * MIB },
    });
    await fixture.client.snapshots.take(snapshot.id);
    const ranges = [{ offset: 10, length: 90 }, { offset: 1000, length: 5000 }, {
      offset: MIB,
      length: 65536,
    }];
    const response = await fixture.client.images.read(snapshot.id, "vda", { ranges });
    assert.match(response.headers.get("content-type")!, /^multipart\/byteranges/);
    const body = new Uint8Array(await response.arrayBuffer());
    const expected = new Uint8Array(2 * MIB);
    for (const r of ranges) {
      expected.set(content.subarray(r.offset, r.offset + r.length), r.offset);
    }
    for (const size of [1, 7, 4096, body.length]) {
      assert.deepEqual(
        await collect(rechunked(response, body, size), 2 * MIB),
        expected,
        `${size}`,
      );
    }
    const cut = rechunked(response, body.subarray(0, body.length - 30), 999);
    await assert.rejects(
      collect(cut, 2 * MIB),
      (e) => isServiceError(e, "IO") && /malformed multipart/.test(e.message),
    );
    const single = await fixture.client.images.read(snapshot.id, "vda", { ranges: [ranges[1]] });
    const one = await collect(single, 2 * MIB);
    assert.deepEqual(one.subarray(1000, 6000), content.subarray(1000, 6000));
  });
});
