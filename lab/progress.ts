/**
 * The guest's progress stream (its second serial port), line by line: the agent's own lines
 * ("lab-agent: booted ...", "lab-agent: done rc=0") and the output of `deno test` with its
 * default reporter and NO_COLOR, from which each case's result and time are taken as they
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
    readonly kind: "case";
    readonly name: string;
    /** 0 for a test, 1 for its steps, and so on. */
    readonly depth: number;
    readonly status: "ok" | "failed" | "ignored";
    /** Duration as deno prints it ("12ms", "1s", "2m 3s"). */
    readonly duration: string;
  }
  | { readonly kind: "output"; readonly text: string };

const casePattern = /^( *)(.+) \.\.\. (ok|FAILED|ignored)(?: \(due to [^)]*\))? \((\d[^)]*)\)$/;

/** Interprets one line of the progress stream (without its line end). */
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
  const result = casePattern.exec(text);
  if (result) {
    const [, indent, name, status, duration] = result;
    return {
      kind: "case",
      name,
      depth: indent.length / 2,
      status: status === "ok" ? "ok" : status === "FAILED" ? "failed" : "ignored",
      duration,
    };
  }
  return { kind: "output", text };
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
