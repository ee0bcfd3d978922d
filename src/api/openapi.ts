/**
 * The OpenAPI 3.1 document, generated from the route declarations: the same
 * schemas that validate requests describe them here.
 *
 * @module
 */

import type { RouteSpec } from "./route.ts";
import type { JsonSchema } from "./schema.ts";

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
  return parameters;
}

/** Builds the OpenAPI document for `routes`. */
export function openApiDocument(routes: RouteSpec[], serviceVersion: string): JsonSchema {
  const paths: Record<string, Record<string, JsonSchema>> = {};
  for (const route of routes) {
    const responses = Object.fromEntries(
      Object.entries(route.responses).map(([status, response]) => {
        const contentType = response.contentType ??
          (response.schema ? "application/json" : undefined);
        return [status, {
          description: response.description,
          ...(contentType
            ? { content: { [contentType]: response.schema ? { schema: response.schema } : {} } }
            : {}),
        }];
      }),
    );
    (paths[route.path] ??= {})[route.method] = {
      operationId: route.operationId,
      summary: route.summary,
      tags: [route.tag],
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
    };
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "blksnap service",
      version: serviceVersion,
      description:
        "Block-device snapshots with change block tracking, on the blksnap kernel module " +
        "or a userspace engine served over NBD. Errors are application/problem+json.",
    },
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
    },
    security: [{}, { bearer: [] }],
    paths,
  };
}
