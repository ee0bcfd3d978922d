import assert from "node:assert/strict";
import { join } from "node:path";
import { apiRoutes } from "../../src/api/app.ts";
import { ProblemError } from "../../src/client/problem_error.ts";
import { SERVICE_VERSION } from "../../src/version.ts";
import { schemaProblems, violations } from "../_helpers/api_json_schema.ts";
import { withService } from "../_helpers/service_fixture.ts";

type Json = Record<string, unknown>;
interface Operation {
  operationId: string;
  summary: string;
  tags: string[];
  parameters: Array<{ name: string; in: string; required: boolean; schema: Json }>;
  requestBody?: { required: boolean; content: Record<string, { schema: Json }> };
  responses: Record<string, { description: string; content?: Record<string, { schema?: Json }> }>;
}
type Paths = Record<string, Record<string, Operation>>;

const MIB = 1 << 20;

Deno.test("GET /v1/openapi.json is structurally valid OpenAPI 3.1 and lists every route", async () => {
  await withService({}, async ({ client }) => {
    const document = await client.openApi();
    assert.match(document.openapi as string, /^3\.1\.\d+$/);
    const info = document.info as Json;
    assert.equal(typeof info.title, "string");
    assert.equal(info.version, SERVICE_VERSION);
    const schemes = (document.components as { securitySchemes: Record<string, Json> })
      .securitySchemes;
    assert.deepEqual(schemes.bearer, { type: "http", scheme: "bearer" });
    for (const requirement of document.security as Json[]) {
      for (const name of Object.keys(requirement)) assert.ok(name in schemes, name);
    }

    const paths = document.paths as Paths;
    const documented = Object.entries(paths).flatMap(([path, methods]) =>
      Object.keys(methods).map((method) => `${method} ${path}`)
    );
    assert.deepEqual(
      documented.sort(),
      apiRoutes.map((r) => `${r.method} ${r.path}`).sort(),
      "the document lists exactly the app's routes",
    );
    const operationIds = new Set<string>();
    for (const route of apiRoutes) {
      assert.match(route.path, /^\//);
      const operation = paths[route.path][route.method];
      const where = `${route.method} ${route.path}`;
      assert.equal(operation.operationId, route.operationId, where);
      assert.ok(!operationIds.has(operation.operationId), `duplicate ${operation.operationId}`);
      operationIds.add(operation.operationId);
      assert.ok(operation.summary.length > 0, where);
      assert.equal(operation.tags.length, 1, where);

      // Path parameters: exactly the template's, all required; query: the route's schema.
      const templated = [...route.path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();
      const pathParams = operation.parameters.filter((p) => p.in === "path");
      assert.deepEqual(pathParams.map((p) => p.name).sort(), templated, where);
      for (const p of pathParams) assert.equal(p.required, true, `${where} ${p.name}`);
      const queryNames = Object.keys(
        (route.query?.jsonSchema().properties ?? {}) as Record<string, unknown>,
      );
      assert.deepEqual(
        operation.parameters.filter((p) => p.in === "query").map((p) => p.name).sort(),
        queryNames.sort(),
        where,
      );
      for (const p of operation.parameters) {
        assert.ok(["path", "query"].includes(p.in), `${where} ${p.name} in ${p.in}`);
        assert.deepEqual(schemaProblems(p.schema), [], `${where} ${p.name}`);
      }
      if (route.params) {
        assert.deepEqual(
          Object.fromEntries(pathParams.map((p) => [p.name, p.schema])),
          route.params.jsonSchema().properties,
          where,
        );
      }

      // Body: the very schema that validates the request.
      if (route.body) {
        assert.equal(operation.requestBody?.required, !route.bodyOptional, where);
        const schema = operation.requestBody!.content["application/json"].schema;
        assert.deepEqual(schema, route.body.jsonSchema(), where);
        assert.deepEqual(schemaProblems(schema), [], where);
      } else {
        assert.equal(operation.requestBody, undefined, where);
      }

      const statuses = Object.keys(operation.responses);
      assert.ok(statuses.some((s) => /^2\d\d$/.test(s)), `${where} has a success response`);
      for (const [status, response] of Object.entries(operation.responses)) {
        assert.match(status, /^[1-5]\d\d$/, where);
        assert.ok(response.description.length > 0, `${where} ${status}`);
        for (const [type, media] of Object.entries(response.content ?? {})) {
          assert.match(type, /^[a-z]+\/[a-z0-9.+-]+(;.*)?$/, `${where} ${status}`);
          if (media.schema) {
            assert.deepEqual(schemaProblems(media.schema), [], `${where} ${status}`);
          }
          if (/^[45]/.test(status)) assert.equal(type, "application/problem+json");
        }
      }
    }
  });
});

Deno.test("real responses conform to the schemas the document gives them", async () => {
  await withService({}, async ({ client, fetch, makeDisk, allowed }) => {
    const paths = (await client.openApi()).paths as Paths;
    const check = async (method: string, template: string, status: number, url: string) => {
      const response = await fetch(url, { method: method.toUpperCase() });
      const text = await response.text();
      assert.equal(response.status, status, `${method} ${url}: ${text}`);
      const documented = paths[template][method].responses[String(status)];
      assert.ok(documented, `${method} ${template} documents ${status}`);
      const content = Object.entries(documented.content ?? {});
      if (content.length === 0) {
        assert.equal(text, "", `${method} ${url} documents no body`);
        return;
      }
      const [[type, media]] = content;
      assert.equal(response.headers.get("content-type")?.split(";")[0], type.split(";")[0]);
      if (media.schema) {
        assert.deepEqual(violations(media.schema, JSON.parse(text)), [], `${method} ${url}`);
      }
    };
    await client.devices.attach({ path: await makeDisk("a.img", MIB), name: "a" });
    const created = await client.snapshots.create({
      devices: [],
      diffStorage: { path: join(allowed, "diff"), limitBytes: MIB },
    });
    assert.deepEqual(
      violations(
        paths["/v1/snapshots"].post.responses["201"].content!["application/json"].schema!,
        created,
      ),
      [],
    );
    const added = await client.snapshots.addDevice(created.id, "a");
    assert.deepEqual(
      violations(
        paths["/v1/snapshots/{id}/devices"].post.responses["200"].content!["application/json"]
          .schema!,
        added,
      ),
      [],
    );
    await client.snapshots.take(created.id);
    const s = created.id;
    await check("get", "/v1/version", 200, "/v1/version");
    await check("get", "/v1/devices", 200, "/v1/devices");
    await check("get", "/v1/devices/{id}", 200, "/v1/devices/a");
    await check("get", "/v1/devices/{id}", 404, "/v1/devices/b");
    await check("get", "/v1/devices/{id}/cbt", 200, "/v1/devices/a/cbt");
    await check("get", "/v1/devices/{id}/cbt/map", 200, "/v1/devices/a/cbt/map");
    await check("get", "/v1/devices/{id}/cbt/map", 400, "/v1/devices/a/cbt/map?offset=99");
    await check("get", "/v1/snapshots", 200, "/v1/snapshots");
    await check("get", "/v1/snapshots/{id}", 200, `/v1/snapshots/${s}`);
    await check("get", "/v1/snapshots/{id}/events", 200, `/v1/snapshots/${s}/events?timeoutMs=0`);
    await check("get", "/v1/snapshots/{id}/images/{device}", 200, `/v1/snapshots/${s}/images/a`);
    const { generationId } = await client.cbt.info("a");
    await check(
      "get",
      "/v1/snapshots/{id}/images/{device}/changes",
      200,
      `/v1/snapshots/${s}/images/a/changes?since=0&generation=${generationId}`,
    );
    await check(
      "get",
      "/v1/snapshots/{id}/images/{device}/changes",
      409,
      `/v1/snapshots/${s}/images/a/changes`,
    );
    await check(
      "get",
      "/v1/snapshots/{id}/images/{device}/data",
      200,
      `/v1/snapshots/${s}/images/a/data`,
    );
    await check("post", "/v1/snapshots/{id}/take", 409, `/v1/snapshots/${s}/take`);
    await check("get", "/metrics", 200, "/metrics");
    await check("delete", "/v1/snapshots/{id}", 204, `/v1/snapshots/${s}`);
    await check("delete", "/v1/devices/{id}", 204, "/v1/devices/a");
    await assert.rejects(client.devices.get("a"), ProblemError);
  });
});
