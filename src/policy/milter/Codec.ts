/**
 * The milter protocol, version 6, as bytes and values — the MTA (client) side: packet framing,
 * the commands we send, the replies and modification requests a filter sends back, option
 * negotiation and macros. Pure: no sockets, no Effect; the connection lives in Connection.ts.
 *
 * Why our own: npm has no maintained milter library (the packages that exist are unmaintained,
 * untyped, or server-side only), and the client side is small. Written from the protocol as
 * Sendmail's libmilter and Postfix's milter8 speak it: every packet is a 4-byte big-endian
 * length (counting the command byte), one command byte, then the data; strings are
 * NUL-terminated.
 */

/** The protocol version we speak (Sendmail 8.14+, Postfix 2.6+). */
export const version = 6

/** Commands, MTA → filter (SMFIC_*). */
export const Command = {
  Abort: "A",
  Body: "B",
  Connect: "C",
  Macro: "D",
  EndOfMessage: "E",
  Helo: "H",
  QuitNewConnection: "K",
  Header: "L",
  Mail: "M",
  EndOfHeaders: "N",
  Negotiate: "O",
  Quit: "Q",
  Rcpt: "R",
  Data: "T",
  Unknown: "U"
} as const
export type Command = (typeof Command)[keyof typeof Command]

/** Actions a filter may take at end of message (SMFIF_*): offered by us, requested by it. */
export const Action = {
  AddHeaders: 0x01,
  ChangeBody: 0x02,
  AddRecipient: 0x04,
  DeleteRecipient: 0x08,
  ChangeHeaders: 0x10,
  Quarantine: 0x20,
  ChangeFrom: 0x40,
  AddRecipientWithArgs: 0x80,
  SetSymbolList: 0x100
} as const

/** Protocol steps (SMFIP_*): `No*` skip a command, `NoReply*` send it without awaiting a reply. */
export const Step = {
  NoConnect: 0x1,
  NoHelo: 0x2,
  NoMail: 0x4,
  NoRcpt: 0x8,
  NoBody: 0x10,
  NoHeaders: 0x20,
  NoEndOfHeaders: 0x40,
  NoReplyHeader: 0x80,
  NoUnknown: 0x100,
  NoData: 0x200,
  Skip: 0x400,
  RejectedRcpt: 0x800,
  NoReplyConnect: 0x1000,
  NoReplyHelo: 0x2000,
  NoReplyMail: 0x4000,
  NoReplyRcpt: 0x8000,
  NoReplyData: 0x10000,
  NoReplyUnknown: 0x20000,
  NoReplyEndOfHeaders: 0x40000,
  NoReplyBody: 0x80000,
  HeaderLeadingSpace: 0x100000
} as const

/** Where a macro list applies (SMFIM_*), in a filter's negotiation reply. */
export const MacroStage = { connect: 0, helo: 1, mail: 2, rcpt: 3, data: 4, endOfMessage: 5, endOfHeaders: 6 } as const
export type MacroStage = keyof typeof MacroStage

/** The largest body chunk we send (MILTER_CHUNK_SIZE): filters size their buffers by it. */
export const maxBodyChunk = 65535

/** The largest packet we accept from a filter: a body-replacement chunk plus room; anything larger is a broken peer. */
export const maxPacket = 1024 * 1024

export interface Packet {
  readonly command: string
  readonly data: Uint8Array
}

/** Why bytes from a filter are not the protocol. */
export class CodecError extends Error {
  override readonly name = "CodecError"
}

const encoder = new TextEncoder()
const decoder = new TextDecoder("utf-8")

const bytesOf = (s: string | Uint8Array): Uint8Array => (typeof s === "string" ? encoder.encode(s) : s)

const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  let n = 0
  for (const p of parts) n += p.byteLength
  const out = new Uint8Array(n)
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.byteLength
  }
  return out
}

const nul = new Uint8Array([0])

/** `s` NUL-terminated. A NUL inside would end the string early on the other side: cut there. */
const cstring = (s: string | Uint8Array): Uint8Array => {
  const b = bytesOf(s)
  const i = b.indexOf(0)
  return concat([i === -1 ? b : b.subarray(0, i), nul])
}

const uint32 = (n: number): Uint8Array => {
  const b = new Uint8Array(4)
  new DataView(b.buffer).setUint32(0, n >>> 0)
  return b
}

/** One packet on the wire. */
export const packet = (command: Command, data: Uint8Array = new Uint8Array(0)): Uint8Array => {
  const out = new Uint8Array(5 + data.byteLength)
  const view = new DataView(out.buffer)
  view.setUint32(0, data.byteLength + 1)
  out[4] = command.charCodeAt(0)
  out.set(data, 5)
  return out
}

// --- Commands ------------------------------------------------------------------------------

export const negotiate = (actions: number, steps: number): Uint8Array =>
  packet(Command.Negotiate, concat([uint32(version), uint32(actions), uint32(steps)]))

/** Macros for the command that follows (`D`, the command's letter, then name/value pairs). */
export const macros = (forCommand: Command, pairs: ReadonlyArray<readonly [string, string]>): Uint8Array =>
  packet(Command.Macro, concat([bytesOf(forCommand), ...pairs.flatMap(([name, value]) => [cstring(name), cstring(value)])]))

/** Where the SMTP client is: an IP address and port, a local socket, or unknown. */
export type ClientAddress =
  | { readonly family: "inet" | "inet6"; readonly address: string; readonly port: number }
  | { readonly family: "unix"; readonly path: string }
  | { readonly family: "unknown" }

export const connect = (hostname: string, client: ClientAddress): Uint8Array => {
  const host = cstring(hostname)
  switch (client.family) {
    case "unknown":
      return packet(Command.Connect, concat([host, bytesOf("U")]))
    case "unix":
      return packet(Command.Connect, concat([host, bytesOf("L"), new Uint8Array(2), cstring(client.path)]))
    default: {
      const port = new Uint8Array(2)
      new DataView(port.buffer).setUint16(0, client.port & 0xffff)
      return packet(Command.Connect, concat([host, bytesOf(client.family === "inet" ? "4" : "6"), port, cstring(client.address)]))
    }
  }
}

export const helo = (name: string): Uint8Array => packet(Command.Helo, cstring(name))

/** `MAIL`/`RCPT`: the address in angle brackets, then each ESMTP parameter. */
const addressCommand = (command: Command, address: string, args: ReadonlyArray<string>): Uint8Array =>
  packet(command, concat([cstring(`<${address}>`), ...args.map(cstring)]))

export const mail = (sender: string, args: ReadonlyArray<string> = []): Uint8Array => addressCommand(Command.Mail, sender, args)
export const rcpt = (recipient: string, args: ReadonlyArray<string> = []): Uint8Array => addressCommand(Command.Rcpt, recipient, args)
export const data = (): Uint8Array => packet(Command.Data)
export const header = (name: string, value: string | Uint8Array): Uint8Array => packet(Command.Header, concat([cstring(name), cstring(value)]))
export const endOfHeaders = (): Uint8Array => packet(Command.EndOfHeaders)
/** A body chunk; callers keep it to `maxBodyChunk` bytes (`bodyChunks`). */
export const body = (chunk: Uint8Array): Uint8Array => packet(Command.Body, chunk)
export const endOfMessage = (): Uint8Array => packet(Command.EndOfMessage)
export const abort = (): Uint8Array => packet(Command.Abort)
export const quit = (): Uint8Array => packet(Command.Quit)

/** `bytes` cut into body packets of at most `maxBodyChunk` bytes each. */
export const bodyChunks = (bytes: Uint8Array): Array<Uint8Array> => {
  const out: Array<Uint8Array> = []
  for (let at = 0; at < bytes.byteLength; at += maxBodyChunk) out.push(body(bytes.subarray(at, at + maxBodyChunk)))
  return out
}

// --- Framing of what a filter sends ---------------------------------------------------------

/**
 * Splits a byte stream into packets, whatever the read boundaries. `push` returns the packets
 * completed by `bytes`; a length of 0 (no command byte) or over `limit` is a `CodecError`, after
 * which the connection must be dropped (the stream cannot be resynchronised).
 */
export const makeDecoder = (limit: number = maxPacket) => {
  let buffer: Uint8Array = new Uint8Array(0)
  return {
    push(bytes: Uint8Array): Array<Packet> | CodecError {
      buffer = buffer.byteLength === 0 ? bytes : concat([buffer, bytes])
      const out: Array<Packet> = []
      let at = 0
      while (buffer.byteLength - at >= 4) {
        const length = new DataView(buffer.buffer, buffer.byteOffset + at, 4).getUint32(0)
        if (length === 0) return new CodecError("packet of length 0 (no command)")
        if (length > limit) return new CodecError(`packet of ${length} bytes, over the limit of ${limit}`)
        if (buffer.byteLength - at - 4 < length) break
        out.push({ command: String.fromCharCode(buffer[at + 4]!), data: buffer.slice(at + 5, at + 4 + length) })
        at += 4 + length
      }
      buffer = at === buffer.byteLength ? new Uint8Array(0) : buffer.subarray(at)
      return out
    },
    /** Bytes received that do not yet make a packet. */
    get pending(): number {
      return buffer.byteLength
    }
  }
}

// --- Replies -----------------------------------------------------------------------------------

export interface Negotiated {
  readonly version: number
  readonly actions: number
  readonly steps: number
  /** Macros the filter asked for, per stage (v6 `smfi_setsymlist`); absent: what we send by default. */
  readonly macros: Partial<Record<MacroStage, ReadonlyArray<string>>>
}

/** A request to change the message, sent before the final reply to end of message. */
export type Modification =
  | { readonly _tag: "AddHeader"; readonly name: string; readonly value: string }
  /** Before the `index`-th (0-based) header field. */
  | { readonly _tag: "InsertHeader"; readonly index: number; readonly name: string; readonly value: string }
  /** The `index`-th (1-based) field named `name`; an empty value deletes it. */
  | { readonly _tag: "ChangeHeader"; readonly index: number; readonly name: string; readonly value: string }
  | { readonly _tag: "ReplaceBody"; readonly chunk: Uint8Array }
  | { readonly _tag: "AddRecipient"; readonly recipient: string; readonly args: string | undefined }
  | { readonly _tag: "DeleteRecipient"; readonly recipient: string }
  | { readonly _tag: "ChangeFrom"; readonly sender: string; readonly args: string | undefined }
  | { readonly _tag: "Quarantine"; readonly reason: string }

export type Reply =
  | { readonly _tag: "Continue" }
  | { readonly _tag: "Accept" }
  | { readonly _tag: "Reject" }
  | { readonly _tag: "Tempfail" }
  | { readonly _tag: "Discard" }
  /** A reply of the filter's own, e.g. `554 5.7.1 Gtube pattern` (multi-line replies kept whole). */
  | { readonly _tag: "ReplyCode"; readonly code: number; readonly text: string }
  /** Stop sending body chunks; go on to end of message. */
  | { readonly _tag: "Skip" }
  /** Still working: the deadline starts again. */
  | { readonly _tag: "Progress" }
  /** The filter will close the connection (`4`, `f`): treated as a failure of the filter. */
  | { readonly _tag: "Shutdown" }
  | { readonly _tag: "Modify"; readonly modification: Modification }

/** The NUL-terminated strings of `data` (a missing final NUL is malformed). */
const cstrings = (data: Uint8Array, what: string): Array<string> | CodecError => {
  if (data.byteLength === 0 || data[data.byteLength - 1] !== 0) return new CodecError(`${what}: missing NUL terminator`)
  const out: Array<string> = []
  let start = 0
  for (let i = 0; i < data.byteLength; i++) {
    if (data[i] === 0) {
      out.push(decoder.decode(data.subarray(start, i)))
      start = i + 1
    }
  }
  return out
}

const readUint32 = (data: Uint8Array, at: number): number => new DataView(data.buffer, data.byteOffset + at, 4).getUint32(0)

const stageNames = Object.keys(MacroStage) as Array<MacroStage>

/** The filter's answer to `negotiate`. */
export const parseNegotiation = (p: Packet): Negotiated | CodecError => {
  if (p.command !== Command.Negotiate) return new CodecError(`expected the option negotiation reply, got '${p.command}'`)
  if (p.data.byteLength < 12) return new CodecError(`option negotiation reply of ${p.data.byteLength} bytes (at least 12)`)
  const macros: Partial<Record<MacroStage, ReadonlyArray<string>>> = {}
  let at = 12
  while (at < p.data.byteLength) {
    if (p.data.byteLength - at < 5) return new CodecError("truncated macro list in option negotiation")
    const stage = stageNames.find((s) => MacroStage[s] === readUint32(p.data, at))
    const end = p.data.indexOf(0, at + 4)
    if (end === -1) return new CodecError("macro list without NUL terminator")
    if (stage !== undefined) {
      macros[stage] = decoder.decode(p.data.subarray(at + 4, end)).split(/[\s,]+/).filter((m) => m !== "")
    }
    at = end + 1
  }
  return { version: readUint32(p.data, 0), actions: readUint32(p.data, 4), steps: readUint32(p.data, 8), macros }
}

const simple: Record<string, Reply["_tag"]> = { c: "Continue", a: "Accept", r: "Reject", t: "Tempfail", d: "Discard", s: "Skip", p: "Progress" }

/** One reply packet as a value. */
export const parseReply = (p: Packet): Reply | CodecError => {
  const tag = simple[p.command]
  if (tag !== undefined) return { _tag: tag } as Reply
  const modify = (modification: Modification): Reply => ({ _tag: "Modify", modification })
  switch (p.command) {
    case "4":
    case "f":
      return { _tag: "Shutdown" }
    case "y": {
      const s = cstrings(p.data, "reply code")
      if (s instanceof CodecError) return s
      const text = s[0] ?? ""
      const m = /^([45]\d\d)[ -]/.exec(text)
      if (m === null) return new CodecError(`reply code not 4xx or 5xx: ${JSON.stringify(text.slice(0, 80))}`)
      return { _tag: "ReplyCode", code: Number(m[1]), text }
    }
    case "h": {
      const s = cstrings(p.data, "add header")
      if (s instanceof CodecError) return s
      if (s.length < 2) return new CodecError("add header: name and value expected")
      return modify({ _tag: "AddHeader", name: s[0]!, value: s[1]! })
    }
    case "i":
    case "m": {
      if (p.data.byteLength < 4) return new CodecError(`${p.command === "i" ? "insert" : "change"} header: no index`)
      const s = cstrings(p.data.subarray(4), "header")
      if (s instanceof CodecError) return s
      if (s.length < 2) return new CodecError("header: name and value expected")
      const index = readUint32(p.data, 0)
      return modify({ _tag: p.command === "i" ? "InsertHeader" : "ChangeHeader", index, name: s[0]!, value: s[1]! })
    }
    case "b":
      return modify({ _tag: "ReplaceBody", chunk: p.data })
    case "+":
    case "2":
      return strings(p, "add recipient", (s) => ({ _tag: "AddRecipient", recipient: unbracket(s[0] ?? ""), args: s[1] }))
    case "-":
      return strings(p, "delete recipient", (s) => ({ _tag: "DeleteRecipient", recipient: unbracket(s[0] ?? "") }))
    case "e":
      return strings(p, "change sender", (s) => ({ _tag: "ChangeFrom", sender: unbracket(s[0] ?? ""), args: s[1] }))
    case "q":
      return strings(p, "quarantine", (s) => ({ _tag: "Quarantine", reason: s[0] ?? "" }))
    default:
      return new CodecError(`unknown reply '${p.command}' (0x${p.command.charCodeAt(0).toString(16)})`)
  }
}

/** A modification made of the packet's NUL-terminated strings. */
const strings = (p: Packet, what: string, f: (s: Array<string>) => Modification): Reply | CodecError => {
  const s = cstrings(p.data, what)
  return s instanceof CodecError ? s : { _tag: "Modify", modification: f(s) }
}

const unbracket = (address: string): string => address.replace(/^<(.*)>$/, "$1")

/** The SMTP code, enhanced code and text of a `ReplyCode` (first line; an absent enhanced code gets the class default). */
export const replyParts = (code: number, text: string): { readonly code: number; readonly enhanced: string; readonly text: string } => {
  const first = text.split(/\r?\n/)[0]!.slice(4)
  const m = /^([245]\.\d{1,3}\.\d{1,3})\s+(.*)$/.exec(first)
  const klass = String(Math.floor(code / 100))
  if (m !== null && m[1]!.startsWith(klass)) return { code, enhanced: m[1]!, text: m[2]!.trim() }
  return { code, enhanced: `${klass}.7.1`, text: (m === null ? first : m[2]!).trim() }
}
