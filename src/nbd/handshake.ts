/**
 * The handshake phase: fixed newstyle negotiation up to the choice of an
 * export (doc/proto.md "Handshake"; nbdkit's protocol-handshake-newstyle.c
 * has the same shape). The server greets, reads the client flags, then
 * answers options until NBD_OPT_EXPORT_NAME or a successful NBD_OPT_GO.
 *
 * Hostile input is bounded: an option longer than 64 KiB is skipped unread
 * (up to 64 MiB, then the connection ends) and refused with
 * NBD_REP_ERR_TOO_BIG; a client gets 32 options (plus 32 per export after
 * one NBD_OPT_LIST) to choose an export. Bad magic, unknown client flags, a
 * truncated message or an unknown NBD_OPT_EXPORT_NAME end the connection.
 * Unknown options (including NBD_OPT_STARTTLS: no TLS here) get
 * NBD_REP_ERR_UNSUP and negotiation goes on.
 *
 * @module
 */

import { ServiceError } from "../errors.ts";
import {
  Info,
  Limits,
  nameOf,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_MAGIC,
  NBD_OPTS_MAGIC,
  NBD_REP_MAGIC,
  Option,
  Reply,
  TransmissionFlag as TF,
} from "./constants.ts";
import type { ExportProvider, NbdBlockSize, NbdExport } from "./export.ts";
import type { NbdLogger } from "./log.ts";
import { contextsOf, listMatches, type SelectedContext, setMatch } from "./meta_context.ts";
import { OptionData } from "./option_data.ts";
import type { ReplyWriter } from "./reply_writer.ts";
import type { SocketReader } from "./socket_reader.ts";
import {
  ClientFlags,
  EXPORT_NAME_ZEROES,
  ExportNameReply,
  Greeting,
  InfoBlockSize,
  InfoExport,
  OptionHeader,
  OptionReplyHeader,
} from "./wire.ts";

/** What the handshake agreed on; the transmission phase runs on it. */
export interface Session {
  /** The chosen export. */
  export: NbdExport;
  /** NBD_OPT_STRUCTURED_REPLY was negotiated. */
  structured: boolean;
  /** Selected metadata contexts (empty unless set for the chosen export). */
  contexts: SelectedContext[];
  /** Transmission flags sent to the client. */
  flags: number;
  /** Size constraints in force. */
  blockSize: NbdBlockSize;
}

/** Dependencies of {@link negotiate}. */
export interface HandshakeOptions {
  /** Where exports are looked up. */
  provider: ExportProvider;
  /** Log sink. */
  logger: NbdLogger;
}

/** Size constraints of an export that declares none. */
export const DEFAULT_BLOCK_SIZE: NbdBlockSize = {
  minimum: 1,
  preferred: Limits.DEFAULT_PREFERRED_BLOCK,
  maximum: Limits.DEFAULT_MAX_PAYLOAD,
};

const encoder = new TextEncoder();

/** The transmission flags advertised for `exp`: every feature the server handles, nothing more. */
export function transmissionFlags(exp: NbdExport, structured: boolean): number {
  let flags = TF.NBD_FLAG_HAS_FLAGS | TF.NBD_FLAG_SEND_FLUSH;
  if (exp.readOnly) flags |= TF.NBD_FLAG_READ_ONLY;
  else {
    flags |= TF.NBD_FLAG_SEND_FUA | TF.NBD_FLAG_SEND_WRITE_ZEROES | TF.NBD_FLAG_SEND_FAST_ZERO;
    if (exp.trim) flags |= TF.NBD_FLAG_SEND_TRIM;
  }
  if (exp.canMultiConn) flags |= TF.NBD_FLAG_CAN_MULTI_CONN;
  if (structured) flags |= TF.NBD_FLAG_SEND_DF;
  return flags;
}

/**
 * Runs the handshake. Resolves to the session, or undefined when the client
 * aborted or left cleanly between options. Throws (and the caller closes the
 * connection) on a protocol violation or a truncated message.
 */
export async function negotiate(
  reader: SocketReader,
  writer: ReplyWriter,
  options: HandshakeOptions,
): Promise<Session | undefined> {
  return await new Negotiation(reader, writer, options).run();
}

class Negotiation {
  #reader: SocketReader;
  #writer: ReplyWriter;
  #provider: ExportProvider;
  #log: NbdLogger;
  #fixed = false;
  #noZeroes = false;
  #structured = false;
  #contexts: SelectedContext[] = [];
  #contextsExport: string | undefined;
  #budget: number = Limits.MAX_OPTIONS;
  #listed = false;

  constructor(reader: SocketReader, writer: ReplyWriter, options: HandshakeOptions) {
    this.#reader = reader;
    this.#writer = writer;
    this.#provider = options.provider;
    this.#log = options.logger;
  }

  async run(): Promise<Session | undefined> {
    this.#writer.send(Greeting.encode({
      magic: NBD_MAGIC,
      optsMagic: NBD_OPTS_MAGIC,
      flags: NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES,
    }));
    if (!(await this.#reader.fill(ClientFlags.size))) return undefined;
    const { flags } = ClientFlags.decode(this.#reader.bytes, this.#reader.take(ClientFlags.size));
    if ((flags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) !== 0) {
      throw violation(`unknown client flags 0x${flags.toString(16)}`);
    }
    this.#fixed = (flags & NBD_FLAG_C_FIXED_NEWSTYLE) !== 0;
    this.#noZeroes = (flags & NBD_FLAG_C_NO_ZEROES) !== 0;

    while (this.#budget-- > 0) {
      if (!(await this.#reader.fill(OptionHeader.size))) return undefined;
      const header = OptionHeader.decode(this.#reader.bytes, this.#reader.take(OptionHeader.size));
      if (header.magic !== NBD_OPTS_MAGIC) {
        throw violation(`bad option magic 0x${header.magic.toString(16)}`);
      }
      const { option, length } = header;
      this.#log("debug", `nbd: option ${nameOf("option", option)} (${length} bytes)`);
      if (length > Limits.MAX_OPTION_BYTES) {
        if (option === Option.NBD_OPT_EXPORT_NAME || length > Limits.MAX_DISCARD_BYTES) {
          throw violation(`option ${nameOf("option", option)} of ${length} bytes`);
        }
        await this.#reader.discard(length);
        this.#error(option, Reply.NBD_REP_ERR_TOO_BIG, `option data of ${length} bytes`);
        continue;
      }
      if (length > 0 && !(await this.#reader.fill(length))) throw violation("truncated option");
      const at = this.#reader.take(length);
      const data = this.#reader.bytes.slice(at, at + length);
      if (!this.#fixed && option !== Option.NBD_OPT_EXPORT_NAME) {
        this.#error(option, Reply.NBD_REP_ERR_INVALID, "fixed newstyle was not negotiated");
        continue;
      }
      const outcome = this.#option(option, data);
      if (outcome === "abort") return undefined;
      if (outcome !== "continue") return outcome;
    }
    throw violation("too many options without choosing an export");
  }

  #option(option: number, data: Uint8Array): Session | "continue" | "abort" {
    switch (option) {
      case Option.NBD_OPT_EXPORT_NAME:
        return this.#exportName(data);
      case Option.NBD_OPT_ABORT:
        this.#reply(option, Reply.NBD_REP_ACK);
        return "abort";
      case Option.NBD_OPT_LIST:
        this.#list(option, data);
        return "continue";
      case Option.NBD_OPT_INFO:
      case Option.NBD_OPT_GO:
        return this.#infoOrGo(option, data) ?? "continue";
      case Option.NBD_OPT_STRUCTURED_REPLY:
        if (data.length > 0) this.#error(option, Reply.NBD_REP_ERR_INVALID, "unexpected data");
        else if (this.#structured) this.#error(option, Reply.NBD_REP_ERR_INVALID, "already set");
        else {
          this.#structured = true;
          this.#reply(option, Reply.NBD_REP_ACK);
        }
        return "continue";
      case Option.NBD_OPT_LIST_META_CONTEXT:
      case Option.NBD_OPT_SET_META_CONTEXT:
        this.#metaContext(option, data);
        return "continue";
      default:
        this.#error(option, Reply.NBD_REP_ERR_UNSUP, `${nameOf("option", option)} unsupported`);
        return "continue";
    }
  }

  #exportName(data: Uint8Array): Session {
    const name = new OptionData(data).string(data.length);
    const exp = name === undefined ? undefined : this.#find(name);
    if (exp === undefined) throw violation(`NBD_OPT_EXPORT_NAME: no export "${name ?? "?"}"`);
    const session = this.#session(exp);
    const reply = new Uint8Array(
      ExportNameReply.size + (this.#noZeroes ? 0 : EXPORT_NAME_ZEROES),
    );
    ExportNameReply.encode({ size: exp.sizeBytes, flags: session.flags }, reply);
    this.#writer.send(reply);
    return session;
  }

  #list(option: number, data: Uint8Array): void {
    if (data.length > 0) {
      this.#error(option, Reply.NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
      return;
    }
    const exports = this.#provider.list();
    if (!this.#listed) {
      this.#listed = true;
      this.#budget += Limits.MAX_OPTIONS * exports.length;
    }
    for (const exp of exports) {
      const name = encoder.encode(exp.name);
      const description = protocolString(exp.description ?? "");
      const payload = new Uint8Array(4 + name.length + description.length);
      new DataView(payload.buffer).setUint32(0, name.length);
      payload.set(name, 4);
      payload.set(description, 4 + name.length);
      this.#reply(option, Reply.NBD_REP_SERVER, payload);
    }
    this.#reply(option, Reply.NBD_REP_ACK);
  }

  #infoOrGo(option: number, data: Uint8Array): Session | undefined {
    const cursor = new OptionData(data);
    const nameLength = cursor.u32();
    const name = nameLength === undefined || nameLength > data.length - 6
      ? undefined
      : cursor.string(nameLength);
    const count = cursor.u16();
    if (name === undefined || count === undefined || cursor.remaining !== count * 2) {
      this.#error(option, Reply.NBD_REP_ERR_INVALID, "malformed export name or info list");
      return undefined;
    }
    const requests = new Set<number>();
    for (let i = 0; i < count; i++) requests.add(cursor.u16()!);
    const exp = this.#find(name);
    if (exp === undefined) {
      this.#error(option, Reply.NBD_REP_ERR_UNKNOWN, `no export named "${name}"`);
      return undefined;
    }
    const session = this.#session(exp);
    this.#reply(
      option,
      Reply.NBD_REP_INFO,
      InfoExport.encode({ type: Info.NBD_INFO_EXPORT, size: exp.sizeBytes, flags: session.flags }),
    );
    this.#reply(
      option,
      Reply.NBD_REP_INFO,
      InfoBlockSize.encode({ type: Info.NBD_INFO_BLOCK_SIZE, ...session.blockSize }),
    );
    if (requests.has(Info.NBD_INFO_NAME)) {
      this.#reply(option, Reply.NBD_REP_INFO, infoString(Info.NBD_INFO_NAME, exp.name));
    }
    if (requests.has(Info.NBD_INFO_DESCRIPTION) && exp.description !== undefined) {
      this.#reply(
        option,
        Reply.NBD_REP_INFO,
        infoString(Info.NBD_INFO_DESCRIPTION, exp.description),
      );
    }
    this.#reply(option, Reply.NBD_REP_ACK);
    return option === Option.NBD_OPT_GO ? session : undefined;
  }

  #metaContext(option: number, data: Uint8Array): void {
    const setting = option === Option.NBD_OPT_SET_META_CONTEXT;
    if (setting) {
      this.#contexts = [];
      this.#contextsExport = undefined;
      if (!this.#structured) {
        this.#error(option, Reply.NBD_REP_ERR_INVALID, "structured replies not negotiated");
        return;
      }
    }
    const cursor = new OptionData(data);
    const nameLength = cursor.u32();
    const name = nameLength === undefined ? undefined : cursor.string(nameLength);
    const count = cursor.u32();
    const queries: string[] = [];
    for (let i = 0; count !== undefined && i < count; i++) {
      const length = cursor.u32();
      const query = length === undefined ? undefined : cursor.string(length);
      if (query === undefined) break;
      queries.push(query);
    }
    if (name === undefined || count === undefined || queries.length !== count || cursor.remaining) {
      this.#error(option, Reply.NBD_REP_ERR_INVALID, "malformed meta context request");
      return;
    }
    const exp = this.#find(name);
    if (exp === undefined) {
      this.#error(option, Reply.NBD_REP_ERR_UNKNOWN, `no export named "${name}"`);
      return;
    }
    const available = contextsOf(exp);
    const chosen = new Set<string>();
    for (const query of queries) {
      if (setting) {
        const match = setMatch(available, query);
        if (match !== undefined) chosen.add(match);
      } else listMatches(available, query).forEach((match) => chosen.add(match));
    }
    if (!setting && queries.length === 0) available.forEach((context) => chosen.add(context));
    let id = 0;
    for (const context of chosen) {
      id += 1;
      if (setting) this.#contexts.push({ id, name: context });
      const contextName = encoder.encode(context);
      const payload = new Uint8Array(4 + contextName.length);
      new DataView(payload.buffer).setUint32(0, setting ? id : 0);
      payload.set(contextName, 4);
      this.#reply(option, Reply.NBD_REP_META_CONTEXT, payload);
    }
    if (setting) this.#contextsExport = exp.name;
    this.#reply(option, Reply.NBD_REP_ACK);
  }

  #find(name: string): NbdExport | undefined {
    const wanted = name === "" ? this.#provider.defaultName : name;
    return wanted === undefined ? undefined : this.#provider.get(wanted);
  }

  #session(exp: NbdExport): Session {
    return {
      export: exp,
      structured: this.#structured,
      contexts: this.#contextsExport === exp.name ? this.#contexts : [],
      flags: transmissionFlags(exp, this.#structured),
      blockSize: exp.blockSize ?? DEFAULT_BLOCK_SIZE,
    };
  }

  #reply(option: number, type: number, payload?: Uint8Array): void {
    const length = payload?.length ?? 0;
    const message = new Uint8Array(OptionReplyHeader.size + length);
    OptionReplyHeader.encode({ magic: NBD_REP_MAGIC, option, type, length }, message);
    if (payload) message.set(payload, OptionReplyHeader.size);
    this.#writer.send(message);
  }

  #error(option: number, type: number, message: string): void {
    this.#log("debug", `nbd: ${nameOf("option", option)}: ${nameOf("reply", type)}: ${message}`);
    this.#reply(option, type, protocolString(message));
  }
}

/** `text` as UTF-8, cut (at a character boundary) to the protocol's 4096-byte string limit. */
function protocolString(text: string): Uint8Array {
  const bytes = new Uint8Array(Limits.MAX_STRING_BYTES);
  return bytes.subarray(0, encoder.encodeInto(text, bytes).written);
}

function infoString(type: number, value: string): Uint8Array {
  const text = protocolString(value);
  const payload = new Uint8Array(2 + text.length);
  new DataView(payload.buffer).setUint16(0, type);
  payload.set(text, 2);
  return payload;
}

function violation(what: string): ServiceError {
  return new ServiceError("INVALID_ARGUMENT", `NBD handshake refused: ${what}`);
}
