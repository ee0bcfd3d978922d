import assert from "node:assert/strict";
import {
  parseDeb822Sources,
  parseOneLineSources,
  readHostSources,
  renderDeb822,
  selectSources,
} from "../../lab/apt_sources.ts";
import { isServiceError } from "../../src/errors.ts";

// Mirrors are placeholders on purpose: the repository never names a real mirror.
const oneLine = `
# a comment
deb http://mirror.invalid/debian bookworm main contrib
deb-src http://mirror.invalid/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://mirror.invalid/debian-security bookworm-security main # trailing
deb cdrom:[Debian]/ bookworm main
`;

const deb822 = `Types: deb deb-src
URIs: http://mirror.invalid/debian
Suites: bookworm bookworm-updates bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

# disabled stanza
Types: deb
URIs: http://disabled.invalid/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb
URIs: https://vendor.invalid/apt
Suites: nodistro
Components: main
`;

Deno.test("parseOneLineSources keeps deb lines with their options, drops deb-src and cdrom", () => {
  const sources = parseOneLineSources(oneLine);
  assert.deepEqual(sources.map((s) => [s.uri, s.suites, s.components, s.signedBy]), [
    ["http://mirror.invalid/debian", ["bookworm"], ["main", "contrib"], undefined],
    [
      "http://mirror.invalid/debian-security",
      ["bookworm-security"],
      ["main"],
      "/usr/share/keyrings/x.gpg",
    ],
  ]);
});

Deno.test("parseDeb822Sources reads stanzas, skips disabled ones, keeps Signed-By", () => {
  const sources = parseDeb822Sources(deb822);
  assert.equal(sources.length, 2);
  assert.deepEqual(sources[0], {
    uri: "http://mirror.invalid/debian",
    suites: ["bookworm", "bookworm-updates", "bookworm-backports"],
    components: ["main"],
    signedBy: "/usr/share/keyrings/debian-archive-keyring.gpg",
  });
  assert.equal(sources[1].uri, "https://vendor.invalid/apt");
});

Deno.test("selectSources keeps the suite, its updates and security, drops the rest", () => {
  const selected = selectSources(
    [...parseDeb822Sources(deb822), ...parseOneLineSources(oneLine)],
    "bookworm",
  );
  assert.deepEqual(selected.map((s) => [s.uri, s.suites]), [
    ["http://mirror.invalid/debian", ["bookworm", "bookworm-updates"]],
    ["http://mirror.invalid/debian", ["bookworm"]],
    ["http://mirror.invalid/debian-security", ["bookworm-security"]],
  ]);
});

Deno.test("selectSources names the suite when the host has no source for it", () => {
  assert.throws(
    () => selectSources(parseDeb822Sources(deb822), "trixie"),
    (error) => isServiceError(error, "NOT_FOUND") && /trixie/.test(error.message),
  );
});

Deno.test("renderDeb822 output parses back to the same sources", () => {
  const selected = selectSources(parseDeb822Sources(deb822), "bookworm");
  assert.deepEqual(parseDeb822Sources(renderDeb822(selected)), selected);
});

Deno.test("readHostSources reads sources.list, .list and .sources files in name order", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${dir}/sources.list.d`);
    await Deno.writeTextFile(`${dir}/sources.list`, "deb http://a.invalid/debian bookworm main\n");
    await Deno.writeTextFile(`${dir}/sources.list.d/b.sources`, deb822);
    await Deno.writeTextFile(
      `${dir}/sources.list.d/a.list`,
      "deb http://c.invalid/debian bookworm-updates main\n",
    );
    await Deno.writeTextFile(
      `${dir}/sources.list.d/z.list.disabled`,
      "deb http://no.invalid x y\n",
    );
    const uris = (await readHostSources(dir)).map((s) => s.uri);
    assert.deepEqual(uris, [
      "http://a.invalid/debian",
      "http://c.invalid/debian",
      "http://mirror.invalid/debian",
      "https://vendor.invalid/apt",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
