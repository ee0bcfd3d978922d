/**
 * A small schema language for the HTTP API: each schema both validates an
 * unknown value (throwing a ServiceError INVALID_ARGUMENT that names the
 * field) and describes itself as JSON Schema for the OpenAPI document, so
 * the validation and the documentation cannot drift apart.
 *
 * @module
 */

import { ServiceError } from "../errors.ts";

/** JSON Schema (the subset OpenAPI 3.1 uses here). */
export type JsonSchema = Record<string, unknown>;

/** A schema for values of type `T`. */
export interface Schema<T> {
  /** Validates `value` found at `field` (a dotted path for messages) and returns it typed. */
  parse(value: unknown, field: string): T;
  /** The JSON Schema describing valid values. */
  jsonSchema(): JsonSchema;
  /** Whether an object property with this schema may be absent. */
  readonly optional: boolean;
}

/** The type a schema validates to. */
export type Infer<S> = S extends Schema<infer T> ? T : never;

function invalid(field: string, message: string): ServiceError {
  const subject = field || "the request body";
  return new ServiceError("INVALID_ARGUMENT", `${subject} ${message}`, {
    field: field || undefined,
  });
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value === "object" ? "an object" : `${typeof value} ${JSON.stringify(value)}`;
}

function schema<T>(
  parse: (value: unknown, field: string) => T,
  json: JsonSchema,
): Schema<T> {
  return { parse, jsonSchema: () => json, optional: false };
}

/** Options of {@link string}. */
export interface StringOptions {
  /** Minimum length (default 1: empty strings are refused). */
  minLength?: number;
  /** Maximum length. */
  maxLength?: number;
  /** A regular expression the whole string must match. */
  pattern?: RegExp;
  /** Human description for the OpenAPI document. */
  description?: string;
}

/** A string. */
export function string(options: StringOptions = {}): Schema<string> {
  const minLength = options.minLength ?? 1;
  const maxLength = options.maxLength ?? 4096;
  return schema((value, field) => {
    if (typeof value !== "string") throw invalid(field, `must be a string, got ${describe(value)}`);
    if (value.length < minLength) {
      throw invalid(field, `must have at least ${minLength} characters`);
    }
    if (value.length > maxLength) throw invalid(field, `must have at most ${maxLength} characters`);
    if (options.pattern && !options.pattern.test(value)) {
      throw invalid(field, `must match ${options.pattern.source}`);
    }
    return value;
  }, {
    type: "string",
    minLength,
    maxLength,
    ...(options.pattern ? { pattern: options.pattern.source } : {}),
    ...(options.description ? { description: options.description } : {}),
  });
}

/** Options of {@link integer}. */
export interface IntegerOptions {
  /** Smallest allowed value (default 0). */
  minimum?: number;
  /** Largest allowed value (default Number.MAX_SAFE_INTEGER). */
  maximum?: number;
  /** Accept a decimal string too (query parameters). */
  coerce?: boolean;
  /** Human description for the OpenAPI document. */
  description?: string;
}

/** A safe integer within bounds. */
export function integer(options: IntegerOptions = {}): Schema<number> {
  const minimum = options.minimum ?? 0;
  const maximum = options.maximum ?? Number.MAX_SAFE_INTEGER;
  return schema((value, field) => {
    let number = value;
    if (options.coerce && typeof value === "string" && /^-?\d+$/.test(value)) {
      number = Number(value);
    }
    if (typeof number !== "number" || !Number.isSafeInteger(number)) {
      throw invalid(field, `must be an integer, got ${describe(value)}`);
    }
    if (number < minimum) throw invalid(field, `must be at least ${minimum}`);
    if (number > maximum) throw invalid(field, `must be at most ${maximum}`);
    return number;
  }, {
    type: "integer",
    minimum,
    maximum,
    ...(options.description ? { description: options.description } : {}),
  });
}

/** A boolean (in queries also "true"/"false" when `coerce` is set). */
export function boolean(options: { coerce?: boolean; description?: string } = {}): Schema<boolean> {
  return schema((value, field) => {
    if (options.coerce && (value === "true" || value === "false")) return value === "true";
    if (typeof value !== "boolean") {
      throw invalid(field, `must be a boolean, got ${describe(value)}`);
    }
    return value;
  }, { type: "boolean", ...(options.description ? { description: options.description } : {}) });
}

/** One of a fixed set of strings. */
export function literal<const T extends string>(
  values: readonly T[],
  options: { description?: string } = {},
): Schema<T> {
  return schema((value, field) => {
    if (typeof value !== "string" || !values.includes(value as T)) {
      throw invalid(field, `must be one of ${values.join(", ")}, got ${describe(value)}`);
    }
    return value as T;
  }, {
    type: "string",
    enum: [...values],
    ...(options.description ? { description: options.description } : {}),
  });
}

/** An array of items. */
export function array<T>(
  item: Schema<T>,
  options: { minItems?: number; maxItems?: number; description?: string } = {},
): Schema<T[]> {
  const minItems = options.minItems ?? 0;
  const maxItems = options.maxItems ?? 65536;
  return schema((value, field) => {
    if (!Array.isArray(value)) throw invalid(field, `must be an array, got ${describe(value)}`);
    if (value.length < minItems) throw invalid(field, `must have at least ${minItems} items`);
    if (value.length > maxItems) throw invalid(field, `must have at most ${maxItems} items`);
    // The item's field name is only built for an error (validation is pure: the retry
    // throws the same error, now naming the item), which keeps 65536 items cheap.
    return value.map((entry, index) => {
      try {
        return item.parse(entry, "");
      } catch {
        return item.parse(entry, `${field}[${index}]`);
      }
    });
  }, {
    type: "array",
    items: item.jsonSchema(),
    minItems,
    maxItems,
    ...(options.description ? { description: options.description } : {}),
  });
}

/** Marks a property schema as optional. */
export function optional<T>(inner: Schema<T>): Schema<T | undefined> {
  return {
    parse: (value, field) => value === undefined ? undefined : inner.parse(value, field),
    jsonSchema: () => inner.jsonSchema(),
    optional: true,
  };
}

/** Property schemas of an object. */
// deno-lint-ignore no-explicit-any
export type Shape = Record<string, Schema<any>>;

type OptionalKeys<S extends Shape> = {
  [K in keyof S]: S[K]["optional"] extends true ? K : never;
}[keyof S];
type RequiredKeys<S extends Shape> = Exclude<keyof S, OptionalKeys<S>>;

/** The object type a shape validates to. */
export type ObjectOf<S extends Shape> =
  & { [K in RequiredKeys<S>]: Infer<S[K]> }
  & { [K in OptionalKeys<S>]?: Infer<S[K]> };

/** An object with known properties; unknown properties are refused. */
export function object<S extends Shape>(
  shape: S,
  options: { description?: string } = {},
): Schema<ObjectOf<S>> & { readonly shape: S } {
  const required = Object.keys(shape).filter((key) => !shape[key].optional);
  const properties = Object.entries(shape);
  const parse = (value: unknown, field: string): ObjectOf<S> => {
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      throw invalid(field, `must be an object, got ${describe(value)}`);
    }
    const record = value as Record<string, unknown>;
    const at = (key: string) => field ? `${field}.${key}` : key;
    for (const key in record) {
      if (!Object.hasOwn(shape, key)) throw invalid(at(key), "is not a known property");
    }
    const result: Record<string, unknown> = {};
    for (const [key, property] of properties) {
      if (record[key] === undefined && !property.optional) {
        throw invalid(at(key), "is required");
      }
      const parsed = property.parse(record[key], at(key));
      if (parsed !== undefined) result[key] = parsed;
    }
    return result as ObjectOf<S>;
  };
  const json: JsonSchema = {
    type: "object",
    properties: Object.fromEntries(Object.entries(shape).map(([k, v]) => [k, v.jsonSchema()])),
    required,
    additionalProperties: false,
    ...(options.description ? { description: options.description } : {}),
  };
  return { parse, jsonSchema: () => json, optional: false, shape };
}
