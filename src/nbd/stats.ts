/**
 * Counters of an NBD server for metrics: connections (open now, accepted
 * since start), and per command the requests served, the bytes they carried
 * (the request length: data read or written, or the range trimmed, zeroed
 * or queried) and the requests answered with an error (refusals included).
 * Plain numbers in typed arrays indexed by command, so counting costs the
 * hot path three additions.
 *
 * @module
 */

import { Command as NbdCommand, nameOf } from "./constants.ts";

const COMMANDS: number[] = Object.values(NbdCommand).filter((type) =>
  type !== NbdCommand.NBD_CMD_DISC
);
const SLOTS = Math.max(...COMMANDS) + 2;

/** Per-command counts, keyed by the command's short name ("read", "write_zeroes"). */
export type CountsByCommand = Record<string, number>;

function slot(type: number): number {
  return type >= 0 && type < SLOTS - 1 ? type : SLOTS - 1;
}

/** Bytes of memory one {@link NbdStats}' request counters take. */
export const NBD_STATS_BYTES = 3 * SLOTS * 8;

/** The counters; one per server (and one per Worker of a Worker plane, see {@link NbdStats.include}). */
export class NbdStats {
  /** Connections open now. */
  connectionsOpen = 0;
  /** Connections accepted since start. */
  connectionsTotal = 0;
  readonly #requests: Float64Array;
  readonly #bytes: Float64Array;
  readonly #errors: Float64Array;
  readonly #included: NbdStats[] = [];

  /**
   * Counters in `memory` ({@link NBD_STATS_BYTES}, zeroed; shared with a
   * Worker that counts into it) or in memory of their own.
   */
  constructor(memory: ArrayBufferLike = new ArrayBuffer(NBD_STATS_BYTES)) {
    this.#requests = new Float64Array(memory, 0, SLOTS);
    this.#bytes = new Float64Array(memory, SLOTS * 8, SLOTS);
    this.#errors = new Float64Array(memory, 2 * SLOTS * 8, SLOTS);
  }

  /** Adds `other`'s request counts to this one's readings from now on. */
  include(other: NbdStats): void {
    this.#included.push(other);
  }

  /** Counts an accepted connection. */
  opened(): void {
    this.connectionsOpen++;
    this.connectionsTotal++;
  }

  /** Counts a closed connection. */
  closed(): void {
    this.connectionsOpen--;
  }

  /** Counts a request of command `type` for `lengthBytes`, failed or not. */
  request(type: number, lengthBytes: number, failed: boolean): void {
    const i = slot(type);
    this.#requests[i]++;
    this.#bytes[i] += lengthBytes;
    if (failed) this.#errors[i]++;
  }

  #byCommand(pick: (stats: NbdStats) => Float64Array): CountsByCommand {
    const counts = new Float64Array(pick(this));
    for (const other of this.#included) {
      const more = pick(other);
      for (let i = 0; i < SLOTS; i++) counts[i] += more[i];
    }
    const result: CountsByCommand = {};
    for (const type of COMMANDS) result[shortName(type)] = counts[type];
    if (counts[SLOTS - 1] > 0) result.unknown = counts[SLOTS - 1];
    return result;
  }

  /** Requests by command. */
  requests(): CountsByCommand {
    return this.#byCommand((stats) => stats.#requests);
  }

  /** Bytes by command. */
  bytes(): CountsByCommand {
    return this.#byCommand((stats) => stats.#bytes);
  }

  /** Failed or refused requests by command. */
  errors(): CountsByCommand {
    return this.#byCommand((stats) => stats.#errors);
  }
}

function shortName(type: number): string {
  return nameOf("command", type).replace(/^NBD_CMD_/, "").toLowerCase();
}
