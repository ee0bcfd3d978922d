/**
 * Reads the JUnit XML that `deno test --junit-path` writes in the guest, and adds the skip
 * reasons the e2e helpers record (deno writes a bare `<skipped/>`). Only the subset deno emits
 * is understood: testsuites > testsuite > testcase with optional failure/error/skipped.
 *
 * @module
 */

/** One test case's outcome. */
export interface JUnitCase {
  /** Test name; steps are "test > step". */
  readonly name: string;
  /** The file (deno's classname). */
  readonly file: string;
  /** Duration in seconds. */
  readonly seconds: number;
  readonly status: "passed" | "failed" | "skipped";
  /** Failure text, or the skip reason when one was recorded. */
  readonly message?: string;
}

/** Counts over a run. */
export interface JUnitSummary {
  readonly passed: number;
  readonly failed: number;
  readonly skipped: number;
}

const entities: Record<string, string> = {
  "&lt;": "<",
  "&gt;": ">",
  "&quot;": '"',
  "&apos;": "'",
  "&amp;": "&",
};

/** Undoes XML escaping (the five named entities and numeric references). */
export function unescapeXml(text: string): string {
  return text.replace(/&(?:lt|gt|quot|apos|amp|#\d+|#x[0-9a-fA-F]+);/g, (entity) => {
    if (entity.startsWith("&#x")) return String.fromCodePoint(parseInt(entity.slice(3, -1), 16));
    if (entity.startsWith("&#")) return String.fromCodePoint(parseInt(entity.slice(2, -1), 10));
    return entities[entity];
  });
}

/** Escapes text for an XML attribute. */
export function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");
}

function attribute(tag: string, name: string): string | undefined {
  const match = new RegExp(`\\s${name}="([^"]*)"`).exec(tag);
  return match ? unescapeXml(match[1]) : undefined;
}

/** The test cases of a JUnit document, in document order. */
export function parseJUnit(xml: string): JUnitCase[] {
  const cases: JUnitCase[] = [];
  const pattern = /<testcase\b([^>]*?)(\/>|>([\s\S]*?)<\/testcase>)/g;
  for (const match of xml.matchAll(pattern)) {
    const tag = match[1];
    const body = match[3] ?? "";
    const failure = /<(failure|error)\b([^>]*?)(?:\/>|>([\s\S]*?)<\/\1>)/.exec(body);
    const skipped = /<skipped\b([^>]*?)\/?>/.exec(body);
    const base = {
      name: attribute(tag, "name") ?? "",
      file: attribute(tag, "classname") ?? "",
      seconds: Number(attribute(tag, "time") ?? "0"),
    };
    if (failure) {
      const text = failure[3] !== undefined ? unescapeXml(failure[3]).trim() : "";
      cases.push({ ...base, status: "failed", message: text || attribute(failure[2], "message") });
    } else if (skipped) {
      const reason = attribute(skipped[1], "message");
      cases.push({ ...base, status: "skipped", ...(reason ? { message: reason } : {}) });
    } else {
      cases.push({ ...base, status: "passed" });
    }
  }
  return cases;
}

/** Counts `cases` by status; a test whose steps failed counts once per failed entry. */
export function summarize(cases: readonly JUnitCase[]): JUnitSummary {
  return {
    passed: cases.filter((c) => c.status === "passed").length,
    failed: cases.filter((c) => c.status === "failed").length,
    skipped: cases.filter((c) => c.status === "skipped").length,
  };
}

/** Writes `reasons` (test name to reason) into the matching `<skipped/>` elements of `xml`. */
export function addSkipReasons(xml: string, reasons: ReadonlyMap<string, string>): string {
  return xml.replace(
    /(<testcase\b[^>]*?\sname="([^"]*)"[^>]*>\s*)<skipped\s*\/>/g,
    (whole, head: string, name: string) => {
      const reason = reasons.get(unescapeXml(name));
      return reason === undefined ? whole : `${head}<skipped message="${escapeXml(reason)}"/>`;
    },
  );
}

/** Reads the skip records (`{"name": ..., "reason": ...}` per line) the e2e helpers append. */
export function parseSkipRecords(text: string): Map<string, string> {
  const reasons = new Map<string, string>();
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    const record = JSON.parse(line) as { name?: unknown; reason?: unknown };
    if (typeof record.name === "string" && typeof record.reason === "string") {
      reasons.set(record.name, record.reason);
    }
  }
  return reasons;
}
