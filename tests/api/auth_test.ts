import assert from "node:assert/strict";
import { apiRoutes } from "../../src/api/app.ts";
import { bearerAuth, tokensMatch } from "../../src/api/auth.ts";
import { Hono } from "hono";
import { createClient } from "../../src/client/client.ts";
import { rejectsWithProblem, responseProblem } from "../_helpers/api_problem.ts";
import { withService } from "../_helpers/service_fixture.ts";

const TOKEN = "s3cret-token-0123456789";

Deno.test("tokensMatch() compares whole tokens of any length", () => {
  assert.equal(tokensMatch("s3cret", "s3cret"), true);
  assert.equal(tokensMatch("s3cret", "s3cre"), false);
  assert.equal(tokensMatch("", "s3cret"), false);
  assert.equal(tokensMatch("s3cret-and-more", "s3cret"), false);
});

Deno.test("with a token, every route refuses a missing or wrong token: 401 and WWW-Authenticate", async () => {
  await withService({ token: TOKEN }, async ({ fetch }) => {
    const paths = [
      ...apiRoutes.map((r) => [r.method.toUpperCase(), r.path.replaceAll(/\{\w+\}/g, "x")]),
      ["GET", "/v1/openapi.json"],
      ["GET", "/no/such/route"],
    ];
    const headerSets: Array<Record<string, string>> = [
      {},
      { authorization: "Bearer wrong" },
      { authorization: `Bearer ${TOKEN}x` },
      { authorization: `Bearer ${TOKEN.slice(0, -1)}` },
      { authorization: `Basic ${btoa(`user:${TOKEN}`)}` },
      { authorization: "Bearer" },
      { authorization: TOKEN },
      { authorization: `Bearer ${TOKEN} extra` },
    ];
    for (const [method, path] of paths) {
      for (const headers of headerSets) {
        const response = await fetch(path, { method, headers });
        assert.equal(response.headers.get("www-authenticate"), 'Bearer realm="blksnap"');
        const problem = await responseProblem(response, {
          status: 401,
          code: "UNAUTHORIZED",
          errno: "EACCES",
        });
        assert.match(problem.detail, /bearer token/i);
      }
    }
  });
});

Deno.test("with a token, the right one opens every door; the typed client sends it", async () => {
  await withService({ token: TOKEN }, async ({ fetch, client, baseUrl, makeDisk }) => {
    for (const authorization of [`Bearer ${TOKEN}`, `bearer ${TOKEN}`, `Bearer  ${TOKEN} `]) {
      const response = await fetch("/v1/version", { headers: { authorization } });
      assert.equal(response.status, 200, authorization);
      await response.body?.cancel();
    }
    assert.equal((await client.version()).backend, "userspace");
    const device = await client.devices.attach({ path: await makeDisk("a.img", 1 << 20) });
    assert.deepEqual(await client.devices.list(), [device]);
    assert.match(await client.metrics(), /^blksnap_devices 1$/m);
    const stranger = createClient({ baseUrl, token: "wrong" });
    await rejectsWithProblem(stranger.devices.list(), {
      status: 401,
      code: "UNAUTHORIZED",
      errno: "EACCES",
    });
    const anonymous = createClient({ baseUrl });
    await rejectsWithProblem(anonymous.version(), {
      status: 401,
      code: "UNAUTHORIZED",
      errno: "EACCES",
    });
  });
});

Deno.test("without a token, requests need no Authorization header (and ignore one)", async () => {
  await withService({}, async ({ fetch }) => {
    for (const headers of [{}, { authorization: "Bearer anything" }] as Record<string, string>[]) {
      const response = await fetch("/v1/devices", { headers });
      assert.equal(response.status, 200);
      assert.deepEqual(await response.json(), []);
    }
  });
});

Deno.test("bearerAuth() trims its token and refuses an empty one", async () => {
  assert.throws(() => bearerAuth(""), RangeError);
  assert.throws(() => bearerAuth(" \n"), RangeError);
  const app = new Hono().use("*", bearerAuth("s3cret\n")).get("/", (c) => c.text("in"));
  const ok = await app.request("/", { headers: { authorization: "Bearer s3cret" } });
  assert.equal(ok.status, 200);
  assert.equal(
    (await app.request("/", { headers: { authorization: "Bearer s3cre" } })).status,
    401,
  );
});
