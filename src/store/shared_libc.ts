/**
 * libc through FFI for a module whose users come and go (every open store
 * holds a reference): opened on first use while someone holds a reference,
 * closed when the last one lets go. Without FFI permission it stays
 * unavailable, and callers take their portable path.
 *
 * @module
 */

/** A lazily opened, reference-counted libc with `symbols`. */
export class SharedLibc<S extends Deno.ForeignLibraryInterface> {
  readonly #symbols: S;
  #library: Deno.DynamicLibrary<S> | undefined;
  #unavailable = false;
  #users = 0;

  /** libc's `symbols`, not opened yet. */
  constructor(symbols: S) {
    this.#symbols = symbols;
  }

  /** The opened calls (opening them now if needed); undefined without users or without FFI. */
  get symbols(): Deno.DynamicLibrary<S>["symbols"] | undefined {
    if (this.#library === undefined && !this.#unavailable && this.#users > 0) {
      try {
        this.#library = Deno.dlopen("libc.so.6", this.#symbols);
      } catch {
        this.#unavailable = true;
      }
    }
    return this.#library?.symbols;
  }

  /** Takes a reference. */
  acquire(): void {
    this.#users += 1;
  }

  /** Drops a reference; the last one runs `beforeClose` with the opened calls, if any, then closes libc. */
  release(beforeClose?: (symbols: Deno.DynamicLibrary<S>["symbols"]) => void): void {
    this.#users = Math.max(0, this.#users - 1);
    if (this.#users > 0 || this.#library === undefined) return;
    beforeClose?.(this.#library.symbols);
    this.#library.close();
    this.#library = undefined;
  }
}
