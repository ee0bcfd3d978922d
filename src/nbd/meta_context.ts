/**
 * Metadata context names: which an export offers and which a client's
 * queries select. Every export offers `base:allocation` plus the contexts it
 * names in `metaContexts()`.
 *
 * Query syntax (documented here as the specification asks):
 * - NBD_OPT_LIST_META_CONTEXT: a full name matches itself; a query ending
 *   with a colon is a prefix and lists every context under it, so `base:`
 *   lists `base:allocation`, `qemu:` every QEMU context and
 *   `qemu:dirty-bitmap:` every dirty bitmap; no query lists everything.
 * - NBD_OPT_SET_META_CONTEXT: only full names select (a prefix selects
 *   nothing, as the specification recommends for an empty leaf name).
 * - Queries without a namespace (no colon) and unknown names are ignored.
 *
 * @module
 */

import { BASE_ALLOCATION } from "./constants.ts";
import type { NbdExport } from "./export.ts";

/** A context selected for a connection, with the id its block status chunks carry. */
export interface SelectedContext {
  /** Transient id, unique on the connection. */
  id: number;
  /** The context's full name. */
  name: string;
}

/** Every context `exp` offers, `base:allocation` first, without duplicates. */
export function contextsOf(exp: NbdExport): string[] {
  return [...new Set([BASE_ALLOCATION, ...(exp.metaContexts?.() ?? [])])];
}

/** The contexts among `available` that `query` lists (see the module notes). */
export function listMatches(available: string[], query: string): string[] {
  const colon = query.indexOf(":");
  if (colon <= 0) return [];
  if (query.endsWith(":")) return available.filter((name) => name.startsWith(query));
  return available.includes(query) ? [query] : [];
}

/** The context among `available` that `query` selects, or undefined. */
export function setMatch(available: string[], query: string): string | undefined {
  return available.includes(query) ? query : undefined;
}
