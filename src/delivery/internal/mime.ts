/**
 * Just enough of RFC 5322 / MIME for the webhook payload: find the header section, unfold and
 * decode header fields (RFC 2047 encoded words, raw UTF-8), and walk a message's MIME tree for
 * its first text/plain and text/html bodies (transfer encodings and charsets decoded).
 *
 * It is deliberately lenient — mail in the wild is often malformed, and a webhook receiver is
 * better served by a best-effort decode than by no payload — and bounded: nesting depth is
 * capped, and callers decide how many bytes they hand it.
 */

export interface Header {
  readonly name: string
  readonly value: string
}

export interface Parts {
  readonly text?: string | undefined
  readonly html?: string | undefined
}

const CR = 0x0d
const LF = 0x0a

/** Where the header section ends: its length and where the body starts (after the blank line). */
export const headerBoundary = (buf: Uint8Array): { readonly headerLength: number; readonly bodyStart: number } | undefined => {
  // A message with no header fields at all starts with the blank line.
  if (buf[0] === LF) return { headerLength: 0, bodyStart: 1 }
  if (buf[0] === CR && buf[1] === LF) return { headerLength: 0, bodyStart: 2 }
  for (let i = 0; i < buf.length; i++) {
    if (buf[i] !== LF) continue
    if (buf[i + 1] === LF) return { headerLength: i + 1, bodyStart: i + 2 }
    if (buf[i + 1] === CR && buf[i + 2] === LF) return { headerLength: i + 1, bodyStart: i + 3 }
  }
  return undefined
}

const utf8Strict = new TextDecoder("utf-8", { fatal: true })

/** Header bytes as text: UTF-8 when valid (RFC 6532), otherwise Latin-1 so no byte is lost. */
export const headerText = (bytes: Uint8Array): string => {
  try {
    return utf8Strict.decode(bytes)
  } catch {
    return Buffer.from(bytes).toString("latin1")
  }
}

/** Unfolded header fields in order; lines that are not fields (an mbox `From ` line) are skipped. */
export const parseHeaders = (text: string): ReadonlyArray<Header> => {
  const fields: Array<{ name: string; value: string }> = []
  for (const line of text.split(/\r?\n/)) {
    if (line.length === 0) continue
    if ((line[0] === " " || line[0] === "\t") && fields.length > 0) {
      // Unfolding removes the line break only; the whitespace that follows it stays.
      fields[fields.length - 1]!.value += line
      continue
    }
    const colon = line.indexOf(":")
    if (colon <= 0) continue
    const name = line.slice(0, colon).trim()
    if (!/^[\x21-\x39\x3b-\x7e]+$/.test(name)) continue
    fields.push({ name, value: line.slice(colon + 1) })
  }
  return fields.map((f) => ({ name: f.name, value: f.value.trim() }))
}

/** Decodes bytes in a named charset; unknown charsets fall back to UTF-8 (with replacement). */
export const decodeCharset = (bytes: Uint8Array, charset: string | undefined): string => {
  const label = (charset ?? "utf-8").trim().toLowerCase()
  try {
    return new TextDecoder(label === "us-ascii" || label === "ascii" ? "utf-8" : label).decode(bytes)
  } catch {
    return new TextDecoder("utf-8").decode(bytes)
  }
}

const hexValue = (c: number): number => {
  if (c >= 0x30 && c <= 0x39) return c - 0x30
  if (c >= 0x41 && c <= 0x46) return c - 0x37
  if (c >= 0x61 && c <= 0x66) return c - 0x57
  return -1
}

/** Quoted-printable (RFC 2045 §6.7) to bytes; `q` selects the RFC 2047 "Q" variant (`_` is a space). */
export const decodeQuotedPrintable = (input: Uint8Array, q = false): Buffer => {
  const out = Buffer.alloc(input.length)
  let n = 0
  for (let i = 0; i < input.length; i++) {
    const c = input[i]!
    if (c === 0x3d) {
      const h1 = hexValue(input[i + 1] ?? -1)
      const h2 = hexValue(input[i + 2] ?? -1)
      if (h1 >= 0 && h2 >= 0) {
        out[n++] = h1 * 16 + h2
        i += 2
        continue
      }
      // A soft line break: `=` at the end of a line (trailing whitespace allowed) joins lines.
      let j = i + 1
      while (input[j] === 0x20 || input[j] === 0x09) j++
      if (input[j] === CR && input[j + 1] === LF) {
        i = j + 1
        continue
      }
      if (input[j] === LF) {
        i = j
        continue
      }
    }
    out[n++] = q && c === 0x5f ? 0x20 : c
  }
  return out.subarray(0, n)
}

export const decodeBase64 = (input: Uint8Array): Buffer =>
  Buffer.from(Buffer.from(input).toString("latin1").replace(/[^A-Za-z0-9+/]/g, ""), "base64")

const encodedWord = /=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=/g

/**
 * Decodes RFC 2047 encoded words. Whitespace between two adjacent encoded words is dropped
 * (§6.2), and adjacent words in the same charset are decoded together, since senders split
 * multi-byte characters across words.
 */
export const decodeWords = (value: string): string => {
  if (!value.includes("=?")) return value
  let out = ""
  let last = 0
  let run: { charset: string; bytes: Array<Buffer> } | undefined
  const flush = () => {
    if (run !== undefined) out += decodeCharset(Buffer.concat(run.bytes), run.charset)
    run = undefined
  }
  for (const m of value.matchAll(encodedWord)) {
    const between = value.slice(last, m.index)
    const adjacent = run !== undefined && /^[ \t\r\n]*$/.test(between)
    const charset = m[1]!.toLowerCase()
    const bytes = m[2]!.toLowerCase() === "b"
      ? decodeBase64(Buffer.from(m[3]!, "latin1"))
      : decodeQuotedPrintable(Buffer.from(m[3]!, "latin1"), true)
    if (adjacent && run!.charset === charset) {
      run!.bytes.push(bytes)
    } else {
      flush()
      if (!adjacent) out += between
      run = { charset, bytes: [bytes] }
    }
    last = m.index + m[0].length
  }
  flush()
  return out + value.slice(last)
}

export interface ContentType {
  readonly type: string
  readonly params: Readonly<Record<string, string>>
}

/** `type/subtype; key=value; key="quoted"`, including RFC 2231 continuations and charsets. */
export const parseStructured = (value: string): ContentType => {
  const pieces: Array<string> = []
  let current = ""
  let quoted = false
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!
    if (c === "\\" && quoted) {
      current += value[++i] ?? ""
      continue
    }
    if (c === "\"") quoted = !quoted
    else if (c === ";" && !quoted) {
      pieces.push(current)
      current = ""
      continue
    }
    current += c
  }
  pieces.push(current)
  const type = (pieces.shift() ?? "").trim().toLowerCase()
  const simple: Record<string, string> = {}
  const continued = new Map<string, Array<{ index: number; text: string; encoded: boolean }>>()
  for (const piece of pieces) {
    const eq = piece.indexOf("=")
    if (eq <= 0) continue
    const key = piece.slice(0, eq).trim().toLowerCase()
    let val = piece.slice(eq + 1).trim()
    const wasQuoted = val.startsWith("\"") && val.endsWith("\"") && val.length >= 2
    if (wasQuoted) val = val.slice(1, -1)
    const m = /^([^*]+)\*(?:(\d+)(\*)?)?$/.exec(key)
    if (m === null) {
      simple[key] = val
      continue
    }
    const list = continued.get(m[1]!) ?? []
    list.push({ index: Number(m[2] ?? 0), text: val, encoded: m[2] === undefined || m[3] === "*" })
    continued.set(m[1]!, list)
  }
  for (const [key, list] of continued) {
    list.sort((a, b) => a.index - b.index)
    let charset: string | undefined
    const bytes: Array<Buffer> = []
    for (const [i, part] of list.entries()) {
      let text = part.text
      if (part.encoded && i === 0) {
        const m = /^([^']*)'[^']*'(.*)$/.exec(text)
        if (m !== null) {
          charset = m[1] || undefined
          text = m[2]!
        }
      }
      bytes.push(part.encoded ? Buffer.from(text.replace(/%([0-9a-fA-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16))), "latin1") : Buffer.from(text, "utf8"))
    }
    simple[key] = decodeCharset(Buffer.concat(bytes), charset)
  }
  return { type, params: simple }
}

const headerOf = (headers: ReadonlyArray<Header>, name: string): string | undefined =>
  headers.find((h) => h.name.toLowerCase() === name)?.value

/** Splits a multipart body at its boundary lines; the preamble and epilogue are dropped. */
export const splitMultipart = (body: Buffer, boundary: string): ReadonlyArray<Buffer> => {
  const delimiter = Buffer.from(`--${boundary}`, "latin1")
  const parts: Array<Buffer> = []
  let start = -1
  let pos = 0
  while (pos <= body.length) {
    const at = body.indexOf(delimiter, pos)
    if (at < 0) break
    const atLineStart = at === 0 || body[at - 1] === LF
    if (!atLineStart) {
      pos = at + 1
      continue
    }
    if (start >= 0) {
      // The line break before a delimiter belongs to the delimiter, not to the part.
      let end = at - 1
      if (end > start && body[end - 1] === CR) end--
      parts.push(body.subarray(start, Math.max(start, end)))
    }
    const after = at + delimiter.length
    if (body[after] === 0x2d && body[after + 1] === 0x2d) return parts
    const eol = body.indexOf(LF, after)
    if (eol < 0) break
    start = eol + 1
    pos = start
  }
  // No closing delimiter: keep what we have, including the unterminated last part.
  if (start >= 0 && start < body.length) parts.push(body.subarray(start))
  return parts
}

const maxDepth = 16

/**
 * The first text/plain and text/html bodies of a message that are not attachments, in document
 * order; an attached message (message/rfc822) is not looked into, its text is not ours.
 */
export const extractParts = (message: Buffer): Parts => {
  const found: { text?: string; html?: string } = {}
  const walk = (entity: Buffer, depth: number, defaultType: string) => {
    const boundary = headerBoundary(entity)
    const headers = boundary === undefined ? [] : parseHeaders(headerText(entity.subarray(0, boundary.headerLength)))
    const body = boundary === undefined ? entity : entity.subarray(boundary.bodyStart)
    const ct = parseStructured(headerOf(headers, "content-type") ?? defaultType)
    const type = ct.type.includes("/") ? ct.type : defaultType
    if (type.startsWith("multipart/")) {
      const b = ct.params["boundary"]
      if (b === undefined || depth >= maxDepth) return
      const childDefault = type === "multipart/digest" ? "message/rfc822" : "text/plain"
      for (const part of splitMultipart(body, b)) {
        walk(part, depth + 1, childDefault)
        if (found.text !== undefined && found.html !== undefined) return
      }
      return
    }
    const disposition = parseStructured(headerOf(headers, "content-disposition") ?? "inline").type
    if (disposition === "attachment") return
    if (type !== "text/plain" && type !== "text/html") return
    const key = type === "text/plain" ? "text" : "html"
    if (found[key] !== undefined) return
    const cte = (headerOf(headers, "content-transfer-encoding") ?? "7bit").trim().toLowerCase()
    const bytes = cte === "base64" ? decodeBase64(body) : cte === "quoted-printable" ? decodeQuotedPrintable(body) : body
    found[key] = decodeCharset(bytes, ct.params["charset"])
  }
  walk(message, 0, "text/plain")
  return found
}
