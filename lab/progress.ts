/**
 * The guest's progress stream (its second serial port), line by line: the agent's own lines
 * ("lab-agent: booted ...", "lab-agent: done rc=0") and the output of `deno test` with its
 * default reporter and NO_COLOR, from which each case's start, result and time are taken as they
 * happen. The final verdict comes from the JUnit file, not from here.
 *
 * @module
 */

/** One interpreted progress line. */
export type ProgressEvent =
  | { readonly kind: "agent"; readonly message: string }
  | { readonly kind: "done"; readonly exitCode: number }
  | { readonly kind: "file"; readonly file: string; readonly count: number }
  | {
    readonly kind: "start";
    readonly name: string;
    readonly depth: number;
    /** Set when deno reports the case as still running after this long ("1m0s"). */
    readonly slowFor?: string;
  }
  | {
    readonly kind: "case";
    readonly name: string;
    /** 0 for a test, 1 for its steps, and so on. */
    readonly depth: number;
    readonly status: "ok" | "failed" | "ignored";
    /** Duration as deno prints it ("12ms", "1s", "2m 3s"). */
    readonly duration: string;
  }
  | { readonly kind: "output"; readonly text: string };

const result = String.raw` (ok|FAILED|ignored)(?: \(due to [^)]*\))? \((\d[^)]*)\)$`;
const casePattern = new RegExp(String.raw`^( *)(.+) \.\.\.` + result);
const startPattern = /^( *)(.+) \.\.\.(?:'.*' has been running for over \(([^)]*)\))?$/;
const slowPattern = /^'(.+)' has been running for over \(([^)]*)\)$/;
const lateResultPattern = new RegExp(String.raw`^ *` + result);

function statusOf(word: string): "ok" | "failed" | "ignored" {
  return word === "ok" ? "ok" : word === "FAILED" ? "failed" : "ignored";
}

/** Interprets one line of the progress stream on its own (without its line end). */
export function parseProgressLine(line: string): ProgressEvent {
  const text = line.replace(/\r$/, "");
  const agent = /^lab-agent: (.*)$/.exec(text);
  if (agent) {
    const done = /^done rc=(\d+)$/.exec(agent[1]);
    return done
      ? { kind: "done", exitCode: Number(done[1]) }
      : { kind: "agent", message: agent[1] };
  }
  const file = /^running (\d+) tests? from (.+)$/.exec(text);
  if (file) return { kind: "file", file: file[2], count: Number(file[1]) };
  const finished = casePattern.exec(text);
  if (finished) {
    const [, indent, name, word, duration] = finished;
    return { kind: "case", name, depth: indent.length / 2, status: statusOf(word), duration };
  }
  const start = startPattern.exec(text);
  if (start) {
    const [, indent, name, slowFor] = start;
    return { kind: "start", name, depth: indent.length / 2, ...(slowFor ? { slowFor } : {}) };
  }
  return { kind: "output", text };
}

/**
 * Interprets the progress stream line by line, keeping what one line cannot tell: when a case
 * runs for over a minute, deno appends "'name' has been running for over (1m0s)" to its start
 * line and later prints the result on a line of its own (" ok (1m20s)"), which belongs to the
 * case that started last.
 */
export class ProgressParser {
  #started: { name: string; depth: number }[] = [];

  /** Interprets one line. */
  parse(line: string): ProgressEvent {
    const text = line.replace(/\r$/, "");
    const current = this.#started.at(-1);
    const slow = slowPattern.exec(text);
    if (slow && current) return { kind: "start", ...current, slowFor: slow[2] };
    const late = lateResultPattern.exec(text);
    if (late && current) {
      this.#started.pop();
      return { kind: "case", ...current, status: statusOf(late[1]), duration: late[2] };
    }
    const event = parseProgressLine(text);
    if (event.kind === "start" || event.kind === "case") {
      this.#started = this.#started.filter((started) => started.depth < event.depth);
      if (event.kind === "start") this.#started.push({ name: event.name, depth: event.depth });
    }
    return event;
  }
}

/**
 * Splits a growing byte stream into lines: feed chunks as they arrive, get back the complete
 * lines; the unfinished tail waits for the next chunk.
 */
export class LineSplitter {
  #decoder = new TextDecoder();
  #pending = "";

  /** Adds `chunk` and returns the lines it completed. */
  push(chunk: Uint8Array): string[] {
    this.#pending += this.#decoder.decode(chunk, { stream: true });
    const lines = this.#pending.split("\n");
    this.#pending = lines.pop() ?? "";
    return lines.map((line) => line.replace(/\r$/, ""));
  }

  /** The unfinished last line, if any (call at the end of the stream). */
  flush(): string[] {
    const rest = this.#pending + this.#decoder.decode();
    this.#pending = "";
    return rest === "" ? [] : [rest.replace(/\r$/, "")];
  }
}
