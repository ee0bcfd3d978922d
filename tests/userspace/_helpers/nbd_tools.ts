/**
 * The real NBD clients, as the userspace backend's integration tests call
 * them: nbdinfo's JSON list and maps, and the tool check that skips a test
 * when a Debian tool is missing. Built on the runner of tests/_helpers/
 * nbd_fixture.ts (PATH with /usr/bin first, so nbdsh finds its python).
 *
 * @module
 */

import { runTool, runToolOk, toolsMissing } from "../../_helpers/nbd_fixture.ts";

export { nbdsh, runTool, runToolOk } from "../../_helpers/nbd_fixture.ts";

/** One export as `nbdinfo --list --json` shows it. */
export interface ListedExport {
  /** Export name. */
  "export-name": string;
  /** Its description (NBD_INFO_DESCRIPTION). */
  description?: string;
  /** Size in bytes. */
  "export-size": number;
  /** Whether the server marks it read-only. */
  is_read_only: boolean;
  /** Metadata contexts the server offers for it. */
  contexts?: string[];
}

/** One extent as `nbdinfo --map --json` shows it. */
export interface MapExtent {
  /** Start in bytes. */
  offset: number;
  /** Length in bytes. */
  length: number;
  /** The context's flags for the extent. */
  type: number;
}

/** The reason to skip when one of `tools` is missing (printed once), or undefined. */
export function missingTools(...tools: string[]): string | undefined {
  return toolsMissing(...tools)
    ? `needs ${tools.join(", ")} (Debian: libnbd-bin, qemu-utils)`
    : undefined;
}

/** Every export the server at `port` lists, by `nbdinfo --list --json`. */
export async function listExports(port: number): Promise<ListedExport[]> {
  const output = await runToolOk("nbdinfo", ["--list", "--json", `nbd://127.0.0.1:${port}`]);
  return (JSON.parse(output) as { exports: ListedExport[] }).exports;
}

/** The extents of `context` on the export at `uri`, by `nbdinfo --map=CONTEXT --json`. */
export async function mapExtents(uri: string, context: string): Promise<MapExtent[]> {
  const output = await runToolOk("nbdinfo", [`--map=${context}`, "--json", uri]);
  return (JSON.parse(output) as MapExtent[]).map(({ offset, length, type }) => ({
    offset,
    length,
    type,
  }));
}

/** `nbdinfo --size` of the export at `uri`, or the tool's failure. */
export async function exportSize(uri: string): Promise<{ size?: number; stderr: string }> {
  const result = await runTool("nbdinfo", ["--size", uri]);
  return result.code === 0
    ? { size: Number(result.stdout.trim()), stderr: result.stderr }
    : { stderr: result.stderr };
}

/** The parts of an `nbd://host:port/name` URI, for tools that take them as options. */
export function uriParts(uri: string): { host: string; port: number; name: string } {
  const url = new URL(uri);
  return {
    host: url.hostname,
    port: Number(url.port),
    name: decodeURIComponent(url.pathname.slice(1)),
  };
}
