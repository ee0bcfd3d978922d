import assert from "node:assert/strict";
import { type FetchHandler, serveHttp } from "../../src/api/http_listener.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

async function withServer(
  handler: FetchHandler,
  body: (port: number) => Promise<void>,
  options: Parameters<typeof serveHttp>[2] = {},
): Promise<void> {
  const server = serveHttp(Deno.listen({ hostname: "127.0.0.1", port: 0 }), handler, {
    log: () => {},
    ...options,
  });
  try {
    await body((server.addr as Deno.NetAddr).port);
  } finally {
    await server.shutdown();
  }
}

/** Sends `request` raw and reads until the server closes or `until` matches what came back. */
async function raw(port: number, request: string, until?: RegExp): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(encoder.encode(request));
    let text = "";
    const buffer = new Uint8Array(65536);
    for (;;) {
      const n = await conn.read(buffer).catch(() => null);
      if (n === null) return text;
      text += decoder.decode(buffer.subarray(0, n));
      if (until?.test(text)) return text;
    }
  } finally {
    conn.close();
  }
}

const echo: FetchHandler = async (request) =>
  new Response(`${request.method} ${new URL(request.url).pathname} ${await request.text()}`);

Deno.test("serveHttp answers pipelined keep-alive requests in order, with Content-Length", async () => {
  await withServer(echo, async (port) => {
    const text = await raw(
      port,
      "GET /a HTTP/1.1\r\nhost: x\r\n\r\nPOST /b HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nxyz" +
        "GET /c HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    );
    const bodies = text.split(/HTTP\/1\.1 200 OK\r\n/).slice(1).map((reply) => {
      const [head, body] = reply.split("\r\n\r\n");
      assert.match(head, new RegExp(`content-length: ${body.length}`));
      return body;
    });
    assert.deepEqual(bodies, ["GET /a ", "POST /b xyz", "GET /c "]);
    assert.match(text, /connection: close\r\n/);
  });
});

Deno.test("serveHttp takes chunked request bodies and answers Expect: 100-continue", async () => {
  await withServer(echo, async (port) => {
    const chunked = await raw(
      port,
      "POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n" +
        "3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n",
    );
    assert.match(chunked, /^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nPOST \/c abcde$/);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(
      encoder.encode(
        "POST /e HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nexpect: 100-continue\r\n" +
          "connection: close\r\n\r\n",
      ),
    );
    const buffer = new Uint8Array(4096);
    const n = await conn.read(buffer);
    assert.equal(decoder.decode(buffer.subarray(0, n!)), "HTTP/1.1 100 Continue\r\n\r\n");
    await conn.write(encoder.encode("ok"));
    let rest = "";
    for (let m = await conn.read(buffer); m !== null; m = await conn.read(buffer)) {
      rest += decoder.decode(buffer.subarray(0, m));
    }
    conn.close();
    assert.match(rest, /\r\n\r\nPOST \/e ok$/);
  });
});

Deno.test("serveHttp refuses malformed heads, other codings and oversized bodies with problems", async () => {
  await withServer(echo, async (port) => {
    assert.match(await raw(port, "NONSENSE\r\n\r\n"), /^HTTP\/1\.1 400 [\s\S]*problem\+json/);
    assert.match(
      await raw(port, "GET /h HTTP/1.1\r\nhost: a:99999\r\nconnection: close\r\n\r\n"),
      /^HTTP\/1\.1 200 [\s\S]*GET \/h $/,
      "a host that makes no URL is not the handler's problem",
    );
    assert.match(
      await raw(port, "POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n"),
      /^HTTP\/1\.1 400 /,
    );
    const big = await raw(port, "POST / HTTP/1.1\r\ncontent-length: 1000\r\n\r\n");
    assert.match(big, /^HTTP\/1\.1 413 [\s\S]*PAYLOAD_TOO_LARGE/);
    assert.match(
      await raw(port, `GET / HTTP/1.1\r\nx: ${"a".repeat(5000)}\r\n\r\n`),
      /^HTTP\/1\.1 413 /,
    );
  }, { maxBodyBytes: 100, maxHeaderBytes: 4096 });
});

Deno.test("serveHttp streams a body as it comes (chunked) and aborts the request when the client goes away", async () => {
  const aborted = Promise.withResolvers<void>();
  let cancelled = false;
  const handler: FetchHandler = (request) => {
    request.signal.addEventListener("abort", () => aborted.resolve());
    return new Response(
      new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(encoder.encode("event: one\n\n"));
        },
        cancel() {
          cancelled = true;
        },
      }),
      { headers: { "content-type": "text/event-stream" } },
    );
  };
  await withServer(handler, async (port) => {
    const text = await raw(port, "GET /s HTTP/1.1\r\nhost: x\r\n\r\n", /event: one/);
    assert.match(
      text,
      /transfer-encoding: chunked\r\n(?:[^\r\n]+\r\n)*\r\nc\r\nevent: one\n\n\r\n$/,
    );
    await aborted.promise;
  });
  assert.ok(cancelled, "the response stream was cancelled");
});

Deno.test("serveHttp sends no body for HEAD and 204, and keeps the handler's Content-Length", async () => {
  const handler: FetchHandler = (request) =>
    new URL(request.url).pathname === "/none"
      ? new Response(null, { status: 204 })
      : new Response("hello", { headers: { "content-length": "5" } });
  await withServer(handler, async (port) => {
    const head = await raw(port, "HEAD / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    assert.match(head, /content-length: 5\r\n/);
    assert.ok(head.endsWith("\r\n\r\n"), "no body after the head");
    const none = await raw(port, "GET /none HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    assert.match(none, /^HTTP\/1\.1 204 No Content\r\n/);
    assert.ok(none.endsWith("\r\n\r\n"));
  });
});
