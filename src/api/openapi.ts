/**
 * The OpenAPI 3.1 document, generated from the route declarations: the same
 * schemas that validate requests describe them here. Every named object
 * schema (schema_names.ts) is listed once under `components.schemas` and
 * referenced from where it is used, so generated clients get named types.
 * Every operation documents the `X-Request-Id` header both ways, 500, and,
 * when it takes a body, 413; public probes need no token.
 *
 * @module
 */

import type { RouteSpec } from "./route.ts";
import type { JsonSchema } from "./schema.ts";
import { problem } from "./models.ts";
import { PROBLEM_CONTENT_TYPE } from "./problem.ts";
import { componentNames } from "./schema_names.ts";

/** Options of {@link openApiDocument}. */
export interface OpenApiOptions {
  /** The service version (info.version). */
  serviceVersion: string;
  /** The package license (SPDX identifier). */
  license?: string;
}

const REQUEST_ID = {
  description: "Identifies the request in the service log: the caller's X-Request-Id when it " +
    "is a token of letters, digits and ._:- (at most 128), else a new UUID.",
  schema: { type: "string", maxLength: 128 },
};

/** Replaces named schemas inside `schema` by references, collecting them in `components`. */
function hoist(schema: unknown, components: Record<string, JsonSchema>): unknown {
  if (Array.isArray(schema)) return schema.map((item) => hoist(item, components));
  if (typeof schema !== "object" || schema === null) return schema;
  const record = schema as JsonSchema;
  const inner: JsonSchema = {};
  for (const [key, value] of Object.entries(record)) inner[key] = hoist(value, components);
  const name = componentNames.get(record);
  if (name === undefined) return inner;
  components[name] = inner;
  return { $ref: `#/components/schemas/${name}` };
}

function parametersOf(route: RouteSpec): JsonSchema[] {
  const parameters: JsonSchema[] = [];
  const add = (where: "path" | "query", schema: JsonSchema | undefined) => {
    if (!schema) return;
    const properties = (schema.properties ?? {}) as Record<string, JsonSchema>;
    const required = new Set((schema.required ?? []) as string[]);
    for (const [name, property] of Object.entries(properties)) {
      parameters.push({
        name,
        in: where,
        required: where === "path" || required.has(name),
        schema: property,
        ...(property.description ? { description: property.description } : {}),
      });
    }
  };
  add("path", route.params?.jsonSchema());
  add("query", route.query?.jsonSchema());
  for (const header of route.headers ?? []) {
    parameters.push({
      name: header.name,
      in: "header",
      required: false,
      description: header.description,
      schema: { type: "string" },
    });
  }
  parameters.push({ name: "X-Request-Id", in: "header", required: false, ...REQUEST_ID });
  return parameters;
}

function problemResponse(description: string): JsonSchema {
  return { description, content: { [PROBLEM_CONTENT_TYPE]: { schema: problem.jsonSchema() } } };
}

/** Builds the OpenAPI document for `routes`. */
export function openApiDocument(routes: RouteSpec[], options: OpenApiOptions): JsonSchema {
  const components: Record<string, JsonSchema> = {};
  const paths: Record<string, Record<string, JsonSchema>> = {};
  for (const route of routes) {
    const responses: Record<string, JsonSchema> = Object.fromEntries(
      Object.entries(route.responses).map(([status, response]) => {
        const contentType = response.contentType ??
          (response.schema ? "application/json" : undefined);
        return [status, {
          description: response.description,
          ...(contentType
            ? { content: { [contentType]: response.schema ? { schema: response.schema } : {} } }
            : {}),
          ...(response.headers ? { headers: { ...response.headers } } : {}),
        }];
      }),
    );
    if (route.body) {
      responses[413] ??= problemResponse("The request body exceeds the service's limit.");
    }
    responses[500] ??= problemResponse("The service failed; its log has the details.");
    for (const response of Object.values(responses)) {
      response.headers = { "X-Request-Id": REQUEST_ID, ...(response.headers as object ?? {}) };
    }
    (paths[route.path] ??= {})[route.method] = hoist({
      operationId: route.operationId,
      summary: route.summary,
      tags: [route.tag],
      ...(route.public ? { security: [] } : {}),
      parameters: parametersOf(route),
      ...(route.body
        ? {
          requestBody: {
            required: !route.bodyOptional,
            content: { "application/json": { schema: route.body.jsonSchema() } },
          },
        }
        : {}),
      responses,
    }, components) as JsonSchema;
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "blksnap service",
      version: options.serviceVersion,
      description:
        "Block-device snapshots with change block tracking, on the blksnap kernel module " +
        "or a userspace engine served over NBD. Errors are application/problem+json. " +
        "Units are in the names: ...Bytes, ...Sectors (512 bytes), block... (tracking blocks), " +
        "...Ms; an unsuffixed offset or length is in bytes.",
      ...(options.license
        ? { license: { name: options.license, identifier: options.license } }
        : {}),
    },
    servers: [
      { url: "/", description: "The service that serves this document." },
      { url: "http://127.0.0.1:8037", description: "The default address of serve --listen." },
    ],
    components: {
      schemas: Object.fromEntries(
        Object.entries(components).sort(([a], [b]) => a.localeCompare(b)),
      ),
      securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
    },
    security: [{}, { bearer: [] }],
    paths,
  };
}
