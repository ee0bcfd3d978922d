import assert from "node:assert/strict";
import { createClient } from "../../src/client/client.ts";
import { ConnectionError, ProblemError } from "../../src/client/problem_error.ts";
import { PROBLEM_CONTENT_TYPE, problemFor } from "../../src/api/problem.ts";
import { ServiceError } from "../../src/errors.ts";
import { join } from "node:path";
import type { LoggedEvent } from "../../src/driver.ts";
import type { TruncatedNotice } from "../../src/client/client.ts";
import { assertProblem } from "../_helpers/api_problem.ts";
import { withService } from "../_helpers/service_fixture.ts";

/** A plain HTTP server on a free loopback port that answers with `handler`, for failure modes. */
async function withHttpServer(
  handler: (request: Request) => Response | Promise<Response>,
  body: (baseUrl: string) => Promise<void>,
): Promise<void> {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, handler);
  try {
    await body(`http://127.0.0.1:${server.addr.port}`);
  } finally {
    await server.shutdown();
    await server.finished;
  }
}

/** A loopback port nothing listens on (bound, then released). */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

function unavailable(): Response {
  return new Response(JSON.stringify(problemFor(new ServiceError("UNAVAILABLE", "warming up"))), {
    status: 503,
    headers: { "content-type": PROBLEM_CONTENT_TYPE },
  });
}

Deno.test("ProblemError carries the service's problem document, status and code", async () => {
  await withService({}, async ({ client, fetch }) => {
    const raw = await (await fetch("/v1/devices/vdz")).json();
    try {
      await client.devices.get("vdz");
      assert.fail("expected a ProblemError");
    } catch (error) {
      assert.ok(error instanceof ProblemError);
      assert.equal(error.name, "ProblemError");
      assert.deepEqual(error.problem, raw);
      assert.equal(error.code, "NOT_FOUND");
      assert.equal(error.status, 404);
      assert.equal(error.message, `Not found: ${raw.detail}`);
      assertProblem(error.problem, { status: 404, code: "NOT_FOUND" });
    }
  });
});

Deno.test("an error answer without a problem document still becomes a ProblemError", async () => {
  await withHttpServer(
    () => new Response("<html>bad gateway</html>", { status: 502, statusText: "Bad Gateway" }),
    async (baseUrl) => {
      const client = createClient({ baseUrl, retries: 0 });
      await assert.rejects(client.devices.list(), (error: unknown) => {
        assert.ok(error instanceof ProblemError);
        assert.equal(error.status, 502);
        assert.equal(error.code, "INTERNAL");
        assert.match(error.problem.detail, /502 without a problem document/);
        return true;
      });
    },
  );
});

Deno.test("ConnectionError when nothing listens, for every kind of call", async () => {
  const baseUrl = `http://127.0.0.1:${closedPort()}`;
  const client = createClient({ baseUrl, retries: 0 });
  const calls: Array<[string, () => Promise<unknown>]> = [
    ["version", () => client.version()],
    ["attach", () => client.devices.attach({ path: "/x" })],
    ["detach", () => client.devices.detach("x")],
    ["map", () => client.cbt.map("x")],
    ["waitEvents", () => client.snapshots.waitEvents("x", { timeoutMs: 10 })],
    ["read", () => client.images.read("x", "y")],
    ["watch", () => client.snapshots.watch("x").next()],
  ];
  for (const [name, call] of calls) {
    await assert.rejects(call(), (error: unknown) => {
      assert.ok(error instanceof ConnectionError, `${name}: ${error}`);
      assert.equal(error.name, "ConnectionError");
      assert.match(error.message, new RegExp(`Cannot reach the service at ${baseUrl}`));
      return true;
    });
  }
});

Deno.test("GET is retried after a 503 and succeeds; POST and the long poll are not retried", async () => {
  const counts = new Map<string, number>();
  await withHttpServer((request) => {
    const key = `${request.method} ${new URL(request.url).pathname}`;
    const count = (counts.get(key) ?? 0) + 1;
    counts.set(key, count);
    if (count === 1) return unavailable();
    return Response.json(request.method === "GET" ? [] : { id: "a" });
  }, async (baseUrl) => {
    const client = createClient({ baseUrl, retries: 2 });
    assert.deepEqual(await client.devices.list(), []);
    assert.equal(counts.get("GET /v1/devices"), 2);
    await assert.rejects(
      client.devices.attach({ path: "/x" }),
      (error: unknown) => error instanceof ProblemError && error.code === "UNAVAILABLE",
    );
    assert.equal(counts.get("POST /v1/devices"), 1);
    await assert.rejects(client.snapshots.take("s"), ProblemError);
    assert.equal(counts.get("POST /v1/snapshots/s/take"), 1);
    await assert.rejects(client.devices.detach("a"), ProblemError);
    assert.equal(counts.get("DELETE /v1/devices/a"), 1);
    await assert.rejects(client.snapshots.waitEvents("s", { timeoutMs: 10 }), ProblemError);
    assert.equal(counts.get("GET /v1/snapshots/s/events"), 1);
  });
});

Deno.test("GET gives up after `retries` retries with the last problem", async () => {
  let count = 0;
  await withHttpServer(() => {
    count++;
    return unavailable();
  }, async (baseUrl) => {
    const client = createClient({ baseUrl, retries: 1 });
    await assert.rejects(
      client.version(),
      (error: unknown) => error instanceof ProblemError && error.status === 503,
    );
    assert.equal(count, 2);
  });
});

Deno.test("a service slower than timeoutMs gives a ConnectionError", async () => {
  const release = Promise.withResolvers<void>();
  await withHttpServer(async () => {
    await release.promise;
    return Response.json({});
  }, async (baseUrl) => {
    const client = createClient({ baseUrl, timeoutMs: 100, retries: 0 });
    try {
      await assert.rejects(client.version(), (error: unknown) => {
        assert.ok(error instanceof ConnectionError, String(error));
        assert.match(error.message, /did not answer in time/);
        return true;
      });
    } finally {
      release.resolve();
    }
  });
});

Deno.test("a long poll may outlast timeoutMs: it adds its own wait", async () => {
  await withService({ client: { timeoutMs: 150 } }, async ({ client, makeDisk, allowed }) => {
    await client.devices.attach({ path: await makeDisk("a.img", 1 << 20), name: "a" });
    const snapshot = await client.snapshots.create({
      devices: ["a"],
      diffStorage: { path: join(allowed, "diff"), limitBytes: 1 << 20 },
    });
    assert.deepEqual(
      (await client.snapshots.waitEvents(snapshot.id, { timeoutMs: 400 })).events,
      [],
    );
  });
});

Deno.test("images.read() sends a Range for offset/length; the client can use a given fetch", async () => {
  const seen: Array<string | null> = [];
  await withHttpServer((request) => {
    seen.push(request.headers.get("range"));
    return new Response(new Uint8Array(4), {
      headers: { "content-type": "application/octet-stream" },
    });
  }, async (baseUrl) => {
    let fetched = 0;
    const client = createClient({
      baseUrl: `${baseUrl}/`,
      fetch: (input, init) => {
        fetched++;
        return fetch(input, init);
      },
    });
    for (const range of [{}, { offset: 10 }, { offset: 10, length: 5 }, { length: 3 }]) {
      await (await client.images.read("s", "d", range)).body?.cancel();
    }
    assert.deepEqual(seen, [null, "bytes=10-", "bytes=10-14", "bytes=0-2"]);
    assert.equal(fetched, 4);
  });
});

Deno.test("watch() throws the problem of an `end` event other than NOT_FOUND", async () => {
  await withHttpServer(() => {
    const problem = problemFor(new ServiceError("IO", "the backend failed"));
    const text = `: keep-alive\n\nevent: no_space\nid: 1\ndata: {"code":"no_space","timeMs":1,` +
      `"requestedSectors":8}\n\nevent: end\ndata: ${JSON.stringify(problem)}\n\n`;
    return new Response(text, { headers: { "content-type": "text/event-stream" } });
  }, async (baseUrl) => {
    const events: Array<LoggedEvent | TruncatedNotice> = [];
    await assert.rejects(async () => {
      for await (const event of createClient({ baseUrl }).snapshots.watch("s")) events.push(event);
    }, (error: unknown) => error instanceof ProblemError && error.code === "IO");
    assert.deepEqual(events, [{ code: "no_space", timeMs: 1, requestedSectors: 8 }]);
  });
});

Deno.test("watch() resumes a broken stream with Last-Event-ID and yields every event once", async () => {
  const asked: Array<string | null> = [];
  const event = (id: number) =>
    `event: no_space\nid: ${id}\ndata: {"id":${id},"code":"no_space","timeMs":1,` +
    `"requestedSectors":${id}}\n\n`;
  const end = `event: end\ndata: ${
    JSON.stringify(problemFor(new ServiceError("NOT_FOUND", "gone")))
  }\n\n`;
  await withHttpServer((request) => {
    asked.push(request.headers.get("last-event-id"));
    // The first connection breaks after two events (the server ends it without `end`).
    const text = asked.length === 1 ? event(1) + event(2) : event(3) + end;
    return new Response(text, { headers: { "content-type": "text/event-stream" } });
  }, async (baseUrl) => {
    const ids: number[] = [];
    for await (const item of createClient({ baseUrl }).snapshots.watch("s", { after: 0 })) {
      if (item.code !== "truncated") ids.push(item.id);
    }
    assert.deepEqual(ids, [1, 2, 3]);
    assert.deepEqual(asked, ["0", "2"]);
  });
});

Deno.test("images.read() refuses an empty range instead of asking for the whole image", async () => {
  await withHttpServer(() => Response.json({}), async (baseUrl) => {
    const client = createClient({ baseUrl });
    for (const length of [0, -1, 1.5]) {
      await assert.rejects(client.images.read("s", "d", { offset: 10, length }), RangeError);
    }
    await assert.rejects(client.images.read("s", "d", { offset: -1 }), RangeError);
  });
});
