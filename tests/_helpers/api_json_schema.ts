/**
 * A small, independent JSON Schema checker for the subset the OpenAPI
 * document uses (type, properties, required, additionalProperties, items,
 * enum, minimum/maximum, minLength/maxLength, pattern, minItems/maxItems),
 * so tests can hold the service's real responses against the schemas it
 * documents, and check that the schemas themselves are well formed.
 *
 * @module
 */

type Schema = Record<string, unknown>;

const TYPES = new Set(["object", "array", "string", "integer", "number", "boolean", "null"]);
const KEYWORDS = new Set([
  "type",
  "properties",
  "required",
  "additionalProperties",
  "items",
  "enum",
  "minimum",
  "maximum",
  "minLength",
  "maxLength",
  "pattern",
  "minItems",
  "maxItems",
  "description",
]);

/** Problems with `schema` itself (unknown keywords, bad types, required names not declared). */
export function schemaProblems(schema: unknown, at = "#"): string[] {
  if (typeof schema !== "object" || schema === null || Array.isArray(schema)) {
    return [`${at}: a schema must be an object`];
  }
  const s = schema as Schema;
  const problems: string[] = [];
  for (const key of Object.keys(s)) {
    if (!KEYWORDS.has(key)) problems.push(`${at}: unknown keyword ${key}`);
  }
  if (s.type !== undefined && !TYPES.has(s.type as string)) {
    problems.push(`${at}: bad type ${String(s.type)}`);
  }
  if (s.type === "object") {
    const properties = (s.properties ?? {}) as Record<string, unknown>;
    for (const [name, property] of Object.entries(properties)) {
      problems.push(...schemaProblems(property, `${at}/properties/${name}`));
    }
    for (const name of (s.required ?? []) as string[]) {
      if (!(name in properties)) problems.push(`${at}: required ${name} is not a property`);
    }
  }
  if (s.type === "array") {
    if (s.items === undefined) problems.push(`${at}: an array schema needs items`);
    else problems.push(...schemaProblems(s.items, `${at}/items`));
  }
  if (s.enum !== undefined && (!Array.isArray(s.enum) || s.enum.length === 0)) {
    problems.push(`${at}: enum must be a non-empty array`);
  }
  if (s.pattern !== undefined) {
    try {
      new RegExp(s.pattern as string, "u");
    } catch (error) {
      problems.push(`${at}: pattern does not compile: ${error}`);
    }
  }
  for (
    const [low, high] of [["minimum", "maximum"], ["minLength", "maxLength"], [
      "minItems",
      "maxItems",
    ]]
  ) {
    if (typeof s[low] === "number" && typeof s[high] === "number" && s[low] > s[high]) {
      problems.push(`${at}: ${low} above ${high}`);
    }
  }
  return problems;
}

function typeOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value;
}

/** Where `value` breaks `schema`; empty when it conforms. */
export function violations(schema: Schema, value: unknown): string[] {
  return check(schema, value, "$");
}

function check(schema: Schema, value: unknown, at: string): string[] {
  const type = typeOf(value);
  if (schema.type !== undefined) {
    const fits = schema.type === type || (schema.type === "number" && type === "integer");
    if (!fits) return [`${at}: expected ${schema.type}, got ${type}`];
  }
  const problems: string[] = [];
  if (schema.enum && !(schema.enum as unknown[]).includes(value)) {
    problems.push(`${at}: ${JSON.stringify(value)} is not one of ${JSON.stringify(schema.enum)}`);
  }
  if (typeof value === "number") {
    if (typeof schema.minimum === "number" && value < schema.minimum) {
      problems.push(`${at}: ${value} < ${schema.minimum}`);
    }
    if (typeof schema.maximum === "number" && value > schema.maximum) {
      problems.push(`${at}: ${value} > ${schema.maximum}`);
    }
  }
  if (typeof value === "string") {
    if (typeof schema.minLength === "number" && value.length < schema.minLength) {
      problems.push(`${at}: shorter than ${schema.minLength}`);
    }
    if (typeof schema.maxLength === "number" && value.length > schema.maxLength) {
      problems.push(`${at}: longer than ${schema.maxLength}`);
    }
    if (typeof schema.pattern === "string" && !new RegExp(schema.pattern, "u").test(value)) {
      problems.push(`${at}: ${JSON.stringify(value)} does not match ${schema.pattern}`);
    }
  }
  if (Array.isArray(value)) {
    if (typeof schema.minItems === "number" && value.length < schema.minItems) {
      problems.push(`${at}: fewer than ${schema.minItems} items`);
    }
    if (typeof schema.maxItems === "number" && value.length > schema.maxItems) {
      problems.push(`${at}: more than ${schema.maxItems} items`);
    }
    if (schema.items) {
      value.forEach((item, i) =>
        problems.push(...check(schema.items as Schema, item, `${at}[${i}]`))
      );
    }
  }
  if (type === "object") {
    const record = value as Record<string, unknown>;
    const properties = (schema.properties ?? {}) as Record<string, Schema>;
    for (const name of (schema.required ?? []) as string[]) {
      if (!(name in record)) problems.push(`${at}: missing ${name}`);
    }
    for (const [name, property] of Object.entries(record)) {
      if (name in properties) {
        problems.push(...check(properties[name], property, `${at}.${name}`));
      } else if (schema.additionalProperties === false) problems.push(`${at}: unexpected ${name}`);
    }
  }
  return problems;
}
