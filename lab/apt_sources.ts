/**
 * The package sources of the lab image, taken from the host's apt configuration: the one-line
 * format (/etc/apt/sources.list, sources.list.d/*.list) and the deb822 format
 * (sources.list.d/*.sources). The image is built from the same mirrors as the host, with the
 * target suite's updates and security suites, so its kernel is the one the host's
 * linux-headers describe. No mirror address is written into the repository.
 *
 * @module
 */

import { ServiceError } from "../src/errors.ts";

/** One apt source (one URI; one or more suites; `deb` only). */
export interface AptSource {
  /** Repository URI. */
  readonly uri: string;
  /** Suites, e.g. bookworm, bookworm-updates, bookworm-security. */
  readonly suites: readonly string[];
  /** Components, e.g. main. */
  readonly components: readonly string[];
  /** The keyring that signs the repository, when the configuration names one. */
  readonly signedBy?: string;
}

/** Parses one-line sources (`deb [opts] uri suite comp...`); keeps `deb` entries, no cdrom. */
export function parseOneLineSources(text: string): AptSource[] {
  const sources: AptSource[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.replace(/#.*$/, "").trim();
    if (line === "") continue;
    const match = /^(\S+)\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)$/.exec(line);
    if (match === null || match[1] !== "deb") continue;
    const [, , options = "", uri, suite, components] = match;
    if (uri.startsWith("cdrom:")) continue;
    const signedBy = /(?:^|\s)signed-by=(\S+)/.exec(options)?.[1];
    sources.push({
      uri,
      suites: [suite],
      components: components.split(/\s+/).filter((part) => part !== ""),
      ...(signedBy ? { signedBy } : {}),
    });
  }
  return sources;
}

/** Parses deb822 sources; keeps enabled stanzas whose Types include `deb`, one per URI. */
export function parseDeb822Sources(text: string): AptSource[] {
  const sources: AptSource[] = [];
  const stanzas = text.split(/\n\s*\n/);
  for (const stanza of stanzas) {
    const fields = new Map<string, string>();
    let current: string | undefined;
    for (const line of stanza.split("\n")) {
      if (line.startsWith("#") || line.trim() === "") continue;
      if (/^\s/.test(line) && current !== undefined) {
        fields.set(current, `${fields.get(current)} ${line.trim()}`);
        continue;
      }
      const colon = line.indexOf(":");
      if (colon < 0) continue;
      current = line.slice(0, colon).trim().toLowerCase();
      fields.set(current, line.slice(colon + 1).trim());
    }
    const words = (name: string) => (fields.get(name) ?? "").split(/\s+/).filter(Boolean);
    if (!words("types").includes("deb")) continue;
    if (/^(no|false|0)$/i.test(fields.get("enabled") ?? "yes")) continue;
    const signedBy = fields.get("signed-by");
    for (const uri of words("uris")) {
      sources.push({
        uri,
        suites: words("suites"),
        components: words("components"),
        // An inline key block cannot be passed on as a path; apt then falls back to its keyrings.
        ...(signedBy && !signedBy.includes(" ") ? { signedBy } : {}),
      });
    }
  }
  return sources;
}

/** The suites that belong to `suite`'s family: itself, its updates and its security suites. */
export function suiteFamily(suite: string): string[] {
  return [suite, `${suite}-updates`, `${suite}-security`, `${suite}/updates`];
}

/**
 * Keeps the sources that serve `suite`'s family, each reduced to those suites.
 *
 * @throws {ServiceError} NOT_FOUND when none does.
 */
export function selectSources(sources: readonly AptSource[], suite: string): AptSource[] {
  const family = suiteFamily(suite);
  const selected = sources
    .map((source) => ({ ...source, suites: source.suites.filter((s) => family.includes(s)) }))
    .filter((source) => source.suites.length > 0);
  if (selected.length === 0) {
    throw new ServiceError(
      "NOT_FOUND",
      `Cannot build the lab image: the host's apt configuration has no deb source for ${suite} ` +
        `(looked for the suites ${family.join(", ")})`,
    );
  }
  return selected;
}

/** Renders sources in deb822 format (what mmdebstrap reads from a file). */
export function renderDeb822(sources: readonly AptSource[]): string {
  return sources.map((source) =>
    [
      "Types: deb",
      `URIs: ${source.uri}`,
      `Suites: ${source.suites.join(" ")}`,
      `Components: ${source.components.join(" ")}`,
      ...(source.signedBy ? [`Signed-By: ${source.signedBy}`] : []),
    ].join("\n") + "\n"
  ).join("\n");
}

/**
 * Reads every source file under `aptDir` (default /etc/apt): sources.list, then
 * sources.list.d/*.list and *.sources in name order, as apt does.
 */
export async function readHostSources(aptDir = "/etc/apt"): Promise<AptSource[]> {
  const sources: AptSource[] = [];
  const readOptional = async (path: string) => {
    try {
      return await Deno.readTextFile(path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return "";
      throw error;
    }
  };
  sources.push(...parseOneLineSources(await readOptional(`${aptDir}/sources.list`)));
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(`${aptDir}/sources.list.d`)) {
      if (entry.isFile || entry.isSymlink) names.push(entry.name);
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  for (const name of names.sort()) {
    const text = await readOptional(`${aptDir}/sources.list.d/${name}`);
    if (name.endsWith(".list")) sources.push(...parseOneLineSources(text));
    if (name.endsWith(".sources")) sources.push(...parseDeb822Sources(text));
  }
  return sources;
}
