/**
 * The header section of a message, for the webhook payload: where it ends (so only the start
 * of a message need be read), its fields unfolded, and their values decoded (RFC 2047 encoded
 * words, raw UTF-8). The message's MIME parts are postal-mime's job (`Payload.ts`); this stays
 * ours because it works on the header bytes alone, and because it joins a multi-byte character
 * that a sender split across two encoded words, which postal-mime's decoder does not.
 *
 * It is deliberately lenient — mail in the wild is often malformed, and a webhook receiver is
 * better served by a best-effort decode than by no payload.
 */

export interface Header {
  readonly name: string
  readonly value: string
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

/** The fields of a header section (its bytes, without the blank line), values decoded. */
export const decodedFields = (headerBytes: Uint8Array): ReadonlyArray<Header> =>
  parseHeaders(headerText(headerBytes)).map((h) => ({ name: h.name, value: decodeWords(h.value) }))
