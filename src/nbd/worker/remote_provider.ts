/**
 * A Worker's {@link ExportProvider}: the owner's provider, asked through the
 * Worker's slot at each handshake lookup. Exports with a fast path come back
 * as {@link FastExport}s, whose views the owner sends by message.
 *
 * @module
 */

import type { ExportProvider, NbdExport } from "../export.ts";
import { delegatedExport } from "./delegated_export.ts";
import type { ExportInfo } from "./export_info.ts";
import { FastExport } from "./fast_export.ts";
import type { FastPathView } from "./fast_path.ts";
import type { PrepareClient } from "./prepare_queue.ts";
import { ReadPipes } from "./read_pipes.ts";
import { Op, type SlotClient } from "./owner_slot.ts";

/** The owner's exports as one Worker sees them. */
export class RemoteProvider implements ExportProvider {
  readonly #slot: SlotClient;
  readonly #fast = new Map<number, FastExport>();
  readonly #endings = new Map<number, AbortController>();
  readonly #pipes = new ReadPipes();

  readonly #prepares: PrepareClient;

  /** Asks through `slot`, and prepares writes through `prepares`. */
  constructor(slot: SlotClient, prepares: PrepareClient) {
    this.#slot = slot;
    this.#prepares = prepares;
  }

  list(): NbdExport[] {
    return this.#slot.callJson<ExportInfo[]>(Op.LIST).map((info) =>
      delegatedExport(this.#slot, info)
    );
  }

  get(name: string): NbdExport | undefined {
    const info = this.#slot.callJson<ExportInfo | null>(Op.GET, { body: name });
    if (info === null) return undefined;
    let ended: AbortSignal | undefined;
    if (info.canEnd) {
      const controller = new AbortController();
      if (info.ended) controller.abort();
      this.#endings.set(info.handle, controller);
      ended = controller.signal;
    }
    const delegated = delegatedExport(this.#slot, info, ended);
    if (!info.fast) return delegated;
    const fast = new FastExport(this.#slot, info.handle, delegated, {
      pipes: this.#pipes,
      prepares: this.#prepares,
    });
    this.#fast.set(info.handle, fast);
    return fast.export();
  }

  get defaultName(): string | undefined {
    return this.#slot.callJson<string | null>(Op.DEFAULT_NAME) ?? undefined;
  }

  /** A view message from the owner for `handle`. */
  receiveView(handle: number, view: FastPathView | undefined): void {
    this.#fast.get(handle)?.setView(view);
  }

  /** The owner's word that the export of `handle` ended. */
  receiveEnded(handle: number): void {
    this.#endings.get(handle)?.abort();
  }

  /** Forgets the connection's exports (closing their descriptors and idle pipes) and tells the owner. */
  release(): void {
    for (const fast of this.#fast.values()) fast.close();
    this.#pipes.close();
    this.#fast.clear();
    this.#endings.clear();
    this.#slot.call(Op.RELEASE, {});
  }
}
