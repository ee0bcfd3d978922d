/**
 * Cache keys of the lab's build steps: a SHA-256 over named inputs (file contents, package
 * choices, versions), so a step is redone exactly when one of its inputs changed. The inputs are
 * kept next to the built artefact (manifest.json), which tells why a rebuild happened.
 *
 * @module
 */

/** Named inputs of a build step: name to value (a file's digest, a version, a choice). */
export type CacheInputs = Readonly<Record<string, string>>;

/** Hex SHA-256 of `data`. */
export async function sha256Hex(data: Uint8Array | string): Promise<string> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** The key of `inputs`: independent of the order the names were added in. */
export async function cacheKey(inputs: CacheInputs): Promise<string> {
  const entries = Object.keys(inputs).sort().map((name) => [name, inputs[name]]);
  return await sha256Hex(JSON.stringify(entries));
}

/**
 * Digests of every regular file under `dir`, named `<prefix><relative path>`; symbolic links
 * count by their target text, executability counts (a mode change changes the key).
 */
export async function digestTree(dir: string, prefix = ""): Promise<Record<string, string>> {
  const digests: Record<string, string> = {};
  const walk = async (relative: string) => {
    const entries: Deno.DirEntry[] = [];
    for await (const entry of Deno.readDir(`${dir}/${relative}`)) entries.push(entry);
    entries.sort((a, b) => a.name < b.name ? -1 : 1);
    for (const entry of entries) {
      const path = relative === "" ? entry.name : `${relative}/${entry.name}`;
      if (entry.isDirectory) {
        await walk(path);
      } else if (entry.isSymlink) {
        digests[`${prefix}${path}`] = `link:${await Deno.readLink(`${dir}/${path}`)}`;
      } else if (entry.isFile) {
        const info = await Deno.stat(`${dir}/${path}`);
        const mode = (info.mode ?? 0) & 0o111 ? "x" : "-";
        digests[`${prefix}${path}`] = `${mode}${await sha256Hex(
          await Deno.readFile(`${dir}/${path}`),
        )}`;
      }
    }
  };
  await walk("");
  return digests;
}

/** Names of the inputs that differ between `previous` and `next` (added, removed or changed). */
export function changedInputs(previous: CacheInputs, next: CacheInputs): string[] {
  const names = new Set([...Object.keys(previous), ...Object.keys(next)]);
  return [...names].filter((name) => previous[name] !== next[name]).sort();
}
