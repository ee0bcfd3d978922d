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

/**
 * The inputs recorded by the newest finished build under `dir` for `kernelPackage` (entries
 * named `<kernelPackage>-<16 hex digits>` holding a manifest.json), to tell what changed since.
 */
export async function previousInputs(
  dir: string,
  kernelPackage: string,
): Promise<CacheInputs | undefined> {
  const pattern = new RegExp(`^${kernelPackage.replace(/[.+]/g, "\\$&")}-[0-9a-f]{16}$`);
  let newest: { mtime: number; inputs: CacheInputs } | undefined;
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(dir));
  } catch {
    return undefined;
  }
  for (const entry of entries.filter((entry) => pattern.test(entry.name))) {
    try {
      const path = `${dir}/${entry.name}/manifest.json`;
      const mtime = (await Deno.stat(path)).mtime?.getTime() ?? 0;
      const manifest = JSON.parse(await Deno.readTextFile(path));
      if (newest === undefined || mtime > newest.mtime) newest = { mtime, inputs: manifest.inputs };
    } catch {
      // an unfinished build: no manifest yet
    }
  }
  return newest?.inputs;
}
