/**
 * The numbers of the NBD protocol (NetworkBlockDevice/nbd, doc/proto.md),
 * under the names the specification uses, and {@link nameOf} to turn a value
 * back into its name for log messages.
 *
 * @module
 */

/** 'NBDMAGIC', the first 64 bits the server sends. */
export const NBD_MAGIC = 0x4e42444d41474943n;
/** 'IHAVEOPT', the newstyle magic: sent by the server and at the start of every option. */
export const NBD_OPTS_MAGIC = 0x49484156454f5054n;
/** Magic of every option reply. */
export const NBD_REP_MAGIC = 0x3e889045565a9n;
/** Magic of a transmission request. */
export const NBD_REQUEST_MAGIC = 0x25609513;
/** Magic of a simple reply. */
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
/** Magic of a structured reply chunk. */
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** Handshake flags (16 bits, server). */
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
/** Handshake flag: the server can skip the 124 zero bytes after NBD_OPT_EXPORT_NAME. */
export const NBD_FLAG_NO_ZEROES = 1 << 1;
/** Client flag: the client speaks fixed newstyle. */
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
/** Client flag: no 124 zero bytes after NBD_OPT_EXPORT_NAME. */
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

/** Transmission flags (16 bits, per export). */
export const TransmissionFlag = {
  NBD_FLAG_HAS_FLAGS: 1 << 0,
  NBD_FLAG_READ_ONLY: 1 << 1,
  NBD_FLAG_SEND_FLUSH: 1 << 2,
  NBD_FLAG_SEND_FUA: 1 << 3,
  NBD_FLAG_ROTATIONAL: 1 << 4,
  NBD_FLAG_SEND_TRIM: 1 << 5,
  NBD_FLAG_SEND_WRITE_ZEROES: 1 << 6,
  NBD_FLAG_SEND_DF: 1 << 7,
  NBD_FLAG_CAN_MULTI_CONN: 1 << 8,
  NBD_FLAG_SEND_RESIZE: 1 << 9,
  NBD_FLAG_SEND_CACHE: 1 << 10,
  NBD_FLAG_SEND_FAST_ZERO: 1 << 11,
} as const;

/** Option types of the handshake. */
export const Option = {
  NBD_OPT_EXPORT_NAME: 1,
  NBD_OPT_ABORT: 2,
  NBD_OPT_LIST: 3,
  NBD_OPT_PEEK_EXPORT: 4,
  NBD_OPT_STARTTLS: 5,
  NBD_OPT_INFO: 6,
  NBD_OPT_GO: 7,
  NBD_OPT_STRUCTURED_REPLY: 8,
  NBD_OPT_LIST_META_CONTEXT: 9,
  NBD_OPT_SET_META_CONTEXT: 10,
  NBD_OPT_EXTENDED_HEADERS: 11,
} as const;

const ERR = 0x80000000;

/** Option reply types; errors have bit 31 set. */
export const Reply = {
  NBD_REP_ACK: 1,
  NBD_REP_SERVER: 2,
  NBD_REP_INFO: 3,
  NBD_REP_META_CONTEXT: 4,
  NBD_REP_ERR_UNSUP: ERR + 1,
  NBD_REP_ERR_POLICY: ERR + 2,
  NBD_REP_ERR_INVALID: ERR + 3,
  NBD_REP_ERR_PLATFORM: ERR + 4,
  NBD_REP_ERR_TLS_REQD: ERR + 5,
  NBD_REP_ERR_UNKNOWN: ERR + 6,
  NBD_REP_ERR_SHUTDOWN: ERR + 7,
  NBD_REP_ERR_BLOCK_SIZE_REQD: ERR + 8,
  NBD_REP_ERR_TOO_BIG: ERR + 9,
} as const;

/** Information types of NBD_REP_INFO. */
export const Info = {
  NBD_INFO_EXPORT: 0,
  NBD_INFO_NAME: 1,
  NBD_INFO_DESCRIPTION: 2,
  NBD_INFO_BLOCK_SIZE: 3,
} as const;

/** Request types of the transmission phase. */
export const Command = {
  NBD_CMD_READ: 0,
  NBD_CMD_WRITE: 1,
  NBD_CMD_DISC: 2,
  NBD_CMD_FLUSH: 3,
  NBD_CMD_TRIM: 4,
  NBD_CMD_CACHE: 5,
  NBD_CMD_WRITE_ZEROES: 6,
  NBD_CMD_BLOCK_STATUS: 7,
} as const;

/** Command flags (16 bits, per request). */
export const CommandFlag = {
  NBD_CMD_FLAG_FUA: 1 << 0,
  NBD_CMD_FLAG_NO_HOLE: 1 << 1,
  NBD_CMD_FLAG_DF: 1 << 2,
  NBD_CMD_FLAG_REQ_ONE: 1 << 3,
  NBD_CMD_FLAG_FAST_ZERO: 1 << 4,
} as const;

/** Structured reply flag: this chunk is the last of its reply. */
export const NBD_REPLY_FLAG_DONE = 1 << 0;

/** Structured reply chunk types; error chunks have bit 15 set. */
export const ReplyType = {
  NBD_REPLY_TYPE_NONE: 0,
  NBD_REPLY_TYPE_OFFSET_DATA: 1,
  NBD_REPLY_TYPE_OFFSET_HOLE: 2,
  NBD_REPLY_TYPE_BLOCK_STATUS: 5,
  NBD_REPLY_TYPE_ERROR: (1 << 15) + 1,
  NBD_REPLY_TYPE_ERROR_OFFSET: (1 << 15) + 2,
} as const;

/** Error values allowed in replies (a subset of Linux errno). */
export const NbdError = {
  NBD_EPERM: 1,
  NBD_EIO: 5,
  NBD_ENOMEM: 12,
  NBD_EINVAL: 22,
  NBD_ENOSPC: 28,
  NBD_EOVERFLOW: 75,
  NBD_ENOTSUP: 95,
  NBD_ESHUTDOWN: 108,
} as const;

/** Flags of the `base:allocation` metadata context. */
export const NBD_STATE_HOLE = 1 << 0;
/** `base:allocation`: the extent reads as zeroes. */
export const NBD_STATE_ZERO = 1 << 1;
/** The one metadata context the specification defines. */
export const BASE_ALLOCATION = "base:allocation";

/** Limits the server applies to what a client sends or asks for. */
export const Limits = {
  /** Longest string (export name, query, message) the protocol allows, in bytes. */
  MAX_STRING_BYTES: 4096,
  /** Largest option payload read into memory; larger ones are skipped and refused. */
  MAX_OPTION_BYTES: 64 * 1024,
  /** Largest payload (option or refused write) skipped rather than ending the connection. */
  MAX_DISCARD_BYTES: 64 * 1024 * 1024,
  /** Default maximum payload of READ and WRITE (the specification's 2^25). */
  DEFAULT_MAX_PAYLOAD: 32 * 1024 * 1024,
  /** Default preferred block size. */
  DEFAULT_PREFERRED_BLOCK: 4096,
  /** Options a client may send before choosing an export, plus this many per listed export. */
  MAX_OPTIONS: 32,
  /** Most block status descriptors in one reply chunk. */
  MAX_EXTENTS: 1 << 20,
} as const;

const tables: Record<string, Map<number, string>> = Object.fromEntries(
  Object.entries({
    option: Option,
    reply: Reply,
    info: Info,
    command: Command,
    replyType: ReplyType,
    error: NbdError,
  })
    .map(([table, values]) => [table, new Map(Object.entries(values).map(([k, v]) => [v, k]))]),
);

/**
 * The specification's name of `value` in `table` ("NBD_CMD_READ"), or a
 * placeholder such as "command 42" when the value is unknown.
 */
export function nameOf(
  table: "option" | "reply" | "info" | "command" | "replyType" | "error",
  value: number,
): string {
  return tables[table].get(value) ?? `${table} ${value}`;
}
