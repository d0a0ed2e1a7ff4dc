/**
 * What the dev inbox knows about a caught message, and how it learns it: postal-mime parses
 * the stored bytes (our `Received:` header first, exactly what production delivery adapters
 * receive) into a summary for the list and search, and into the full view (headers, text,
 * HTML, attachments) on demand.
 *
 * A message postal-mime cannot parse is still caught: it gets an empty summary and its raw
 * source stays available, so nothing a developer's app sent is ever hidden.
 *
 * Attachment names come from the sender and reach the browser's save dialog and the page, so
 * they are cleaned here (`safeFilename`): no directories, control or bidi-override characters,
 * leading dots or Windows device names, bounded length.
 */
import PostalMime, { decodeWords } from "postal-mime"
import { Effect, Schema } from "effect"
import { fold } from "./Search.ts"

// The shapes the JSON API answers, as Schemas: the server builds them, the typed client
// (`Client.ts`) decodes them.

export const Mailbox = Schema.Struct({ name: Schema.String, address: Schema.String })
export type Mailbox = typeof Mailbox.Type

export const EnvelopeInfo = Schema.Struct({
  /** MAIL FROM (empty for the null sender). */
  from: Schema.String,
  /** RCPT TO, in order. */
  to: Schema.Array(Schema.String),
  helo: Schema.String,
  clientAddress: Schema.String,
  secure: Schema.Boolean,
  /** Who logged in with AUTH (any credentials are accepted), if anyone did. */
  authenticatedUser: Schema.NullOr(Schema.String)
})
export type EnvelopeInfo = typeof EnvelopeInfo.Type

/** One row of the list: what the page and `GET /api/messages` show. */
export const MessageSummary = Schema.Struct({
  id: Schema.String,
  /** ISO 8601, when the SMTP transaction ended. */
  receivedAt: Schema.String,
  /** Bytes as stored (our `Received:` header included). */
  size: Schema.Number,
  unread: Schema.Boolean,
  from: Schema.NullOr(Mailbox),
  to: Schema.Array(Mailbox),
  cc: Schema.Array(Mailbox),
  subject: Schema.String,
  /** The start of the text body, whitespace collapsed. */
  snippet: Schema.String,
  attachmentCount: Schema.Number,
  envelope: EnvelopeInfo
})
export type MessageSummary = typeof MessageSummary.Type

export const AttachmentInfo = Schema.Struct({
  /** `n` in `/api/messages/:id/parts/:n`. */
  index: Schema.Number,
  /** The sender's name, cleaned (`safeFilename`). */
  filename: Schema.String,
  contentType: Schema.String,
  size: Schema.Number,
  contentId: Schema.NullOr(Schema.String),
  disposition: Schema.NullOr(Schema.String),
  /** Referenced from the HTML body (`cid:`), e.g. an inline logo. */
  related: Schema.Boolean,
  url: Schema.String
})
export type AttachmentInfo = typeof AttachmentInfo.Type

/** The parsed message: `GET /api/messages/:id` and `wait`. */
export const MessageDetail = Schema.Struct({
  ...MessageSummary.fields,
  bcc: Schema.Array(Mailbox),
  replyTo: Schema.Array(Mailbox),
  messageId: Schema.NullOr(Schema.String),
  inReplyTo: Schema.NullOr(Schema.String),
  /** The Date header as sent (ISO when it parses). */
  date: Schema.NullOr(Schema.String),
  /** Every header field in order, encoded-words decoded. */
  headers: Schema.Array(Schema.Struct({ name: Schema.String, value: Schema.String })),
  text: Schema.NullOr(Schema.String),
  html: Schema.NullOr(Schema.String),
  attachments: Schema.Array(AttachmentInfo),
  /** Where the page loads the HTML body from (sandboxed, `cid:` resolved). */
  htmlUrl: Schema.NullOr(Schema.String),
  rawUrl: Schema.String
})
export type MessageDetail = typeof MessageDetail.Type

/** The columns a summary is stored with: the summary itself and the folded search texts. */
export interface Indexed {
  readonly summary: Omit<MessageSummary, "unread">
  readonly search: { readonly from: string; readonly to: string; readonly subject: string; readonly text: string }
}

/**
 * What the inbox uses of postal-mime's parse (its `Email`, which is assignable to this). Our own
 * shape, so that postal-mime's declarations — which need the DOM library — stay out of ours.
 */
export interface ParsedAddress {
  readonly name: string
  readonly address?: string | undefined
  readonly group?: ReadonlyArray<{ readonly name: string; readonly address: string }> | undefined
}

export interface ParsedAttachment {
  readonly filename: string | null
  readonly mimeType: string
  readonly disposition: string | null
  readonly related?: boolean | undefined
  readonly contentId?: string | undefined
  readonly content: ArrayBuffer | Uint8Array | string
  readonly encoding?: "base64" | "utf8" | undefined
}

export interface ParsedEmail {
  readonly headers: ReadonlyArray<{ readonly originalKey: string; readonly value: string }>
  readonly from?: ParsedAddress | undefined
  readonly to?: ReadonlyArray<ParsedAddress> | undefined
  readonly cc?: ReadonlyArray<ParsedAddress> | undefined
  readonly bcc?: ReadonlyArray<ParsedAddress> | undefined
  readonly replyTo?: ReadonlyArray<ParsedAddress> | undefined
  readonly subject?: string | undefined
  readonly messageId?: string | undefined
  readonly inReplyTo?: string | undefined
  readonly date?: string | undefined
  readonly html?: string | undefined
  readonly text?: string | undefined
  readonly attachments: ReadonlyArray<ParsedAttachment>
}

const empty: ParsedEmail = { headers: [], attachments: [] }

/** Free-text search covers this much of a body; a 10 MiB text body is not a search index. */
const maxSearchText = 512 * 1024

/** Parses the stored bytes; a message postal-mime refuses (over its limits) parses as empty. */
export const parse = (raw: Uint8Array): Effect.Effect<ParsedEmail> =>
  Effect.tryPromise((): Promise<ParsedEmail> => PostalMime.parse(raw, { attachmentEncoding: "arraybuffer" })).pipe(
    Effect.catch((e) => Effect.as(Effect.logWarning(`dev inbox: the message could not be parsed: ${e.message}`), empty))
  )

export const mailboxes = (list: ReadonlyArray<ParsedAddress> | ParsedAddress | undefined): ReadonlyArray<Mailbox> => {
  if (list === undefined) return []
  const all: ReadonlyArray<ParsedAddress> = Array.isArray(list) ? list : [list as ParsedAddress]
  return all.flatMap((a): ReadonlyArray<Mailbox> =>
    a.group === undefined ? [{ name: a.name, address: a.address ?? "" }] : a.group.map((m) => ({ name: m.name, address: m.address }))
  )
}

const entities: Readonly<Record<string, string>> = { amp: "&", lt: "<", gt: ">", quot: "\"", apos: "'", nbsp: " " }

/** Readable text from an HTML body, for the snippet and search only (never rendered as HTML). */
export const htmlToText = (html: string): string =>
  html
    .replace(/<(script|style|head|title)\b[\s\S]*?<\/\1\s*>/gi, " ")
    .replace(/<br\s*\/?>|<\/(p|div|tr|li|h\d)>/gi, "\n")
    .replace(/<[^>]*>/g, " ")
    .replace(/&(#x[0-9a-f]+|#\d+|[a-z]+);/gi, (whole, e: string) => {
      if (e[0] === "#") {
        const code = e[1] === "x" || e[1] === "X" ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10)
        return Number.isFinite(code) && code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : " "
      }
      return entities[e.toLowerCase()] ?? whole
    })

const bodyText = (email: ParsedEmail): string => email.text ?? (email.html === undefined ? "" : htmlToText(email.html))

const snippetOf = (text: string): string => {
  const flat = text.slice(0, 2000).replace(/\s+/g, " ").trim()
  return flat.length > 160 ? `${flat.slice(0, 160).trimEnd()}…` : flat
}

const mailboxText = (m: ReadonlyArray<Mailbox>): string => m.map((x) => `${x.name} ${x.address}`).join(" ")

const byteLength = (content: ParsedAttachment["content"]): number =>
  typeof content === "string" ? Buffer.byteLength(content) : content.byteLength

/** The list entry and search texts of a message. */
export const index = (
  input: { readonly id: string; readonly receivedAt: number; readonly size: number; readonly envelope: EnvelopeInfo },
  email: ParsedEmail
): Indexed => {
  const from = mailboxes(email.from)[0] ?? null
  const to = mailboxes(email.to)
  const cc = mailboxes(email.cc)
  const bcc = mailboxes(email.bcc)
  const subject = email.subject ?? ""
  const text = bodyText(email)
  const fromText = `${input.envelope.from} ${from === null ? "" : `${from.name} ${from.address}`}`
  const toText = `${input.envelope.to.join(" ")} ${mailboxText(to)} ${mailboxText(cc)} ${mailboxText(bcc)}`
  const names = email.attachments.map((a) => a.filename ?? "").join(" ")
  return {
    summary: {
      id: input.id,
      receivedAt: new Date(input.receivedAt).toISOString(),
      size: input.size,
      from,
      to,
      cc,
      subject,
      snippet: snippetOf(text),
      attachmentCount: email.attachments.length,
      envelope: input.envelope
    },
    search: {
      from: fold(fromText),
      to: fold(toText),
      subject: fold(subject),
      text: fold(`${subject}\n${fromText}\n${toText}\n${names}\n${text.slice(0, maxSearchText)}`)
    }
  }
}

const extensions: Readonly<Record<string, string>> = {
  "image/png": ".png",
  "image/jpeg": ".jpg",
  "image/gif": ".gif",
  "image/webp": ".webp",
  "application/pdf": ".pdf",
  "text/plain": ".txt",
  "text/html": ".html",
  "text/calendar": ".ics",
  "message/rfc822": ".eml"
}

const deviceNames = /^(con|prn|aux|nul|com\d|lpt\d)(\.|$)/i

/**
 * A file name safe to offer for download and to show: the last path segment only, without
 * control characters, bidi overrides (which make `exe.pdf` read as `fdp.exe`), characters
 * Windows refuses, leading dots (hidden files) or trailing dots and spaces; at most 150
 * characters with the extension kept. An empty result becomes `attachment-N.ext`.
 */
export const safeFilename = (name: string | null, index: number, mimeType: string): string => {
  const base = (name ?? "").normalize("NFC").split(/[/\\]/).pop() ?? ""
  let clean = base
    .replace(/[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]/g, "")
    .replace(/[<>:"|?*]/g, "_")
    .replace(/^[.\s]+/, "")
    .replace(/[.\s]+$/, "")
  if (deviceNames.test(clean)) clean = `_${clean}`
  if (clean === "") return `attachment-${index + 1}${extensions[mimeType.toLowerCase()] ?? ".bin"}`
  if (clean.length <= 150) return clean
  const dot = clean.lastIndexOf(".")
  const ext = dot > 0 && clean.length - dot <= 16 ? clean.slice(dot) : ""
  return clean.slice(0, 150 - ext.length) + ext
}

/** `Content-Disposition` for a cleaned name: an ASCII fallback plus the UTF-8 form (RFC 6266). */
export const contentDisposition = (kind: "attachment" | "inline", filename: string): string => {
  const ascii = filename.replace(/[^\x20-\x7e]/g, "_").replace(/["\\]/g, "_")
  const encoded = encodeURIComponent(filename).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
  return `${kind}; filename="${ascii}"; filename*=UTF-8''${encoded}`
}

const bareContentId = (cid: string): string => cid.trim().replace(/^<|>$/g, "")

export const partUrl = (id: string, index: number): string => `/api/messages/${id}/parts/${index}`

export const attachmentsOf = (id: string, email: ParsedEmail): ReadonlyArray<AttachmentInfo> =>
  email.attachments.map((a, i) => ({
    index: i,
    filename: safeFilename(a.filename, i, a.mimeType),
    contentType: a.mimeType,
    size: byteLength(a.content),
    contentId: a.contentId === undefined ? null : bareContentId(a.contentId),
    disposition: a.disposition,
    related: a.related === true,
    url: partUrl(id, i)
  }))

export const detail = (summary: MessageSummary, email: ParsedEmail): MessageDetail => ({
  ...summary,
  bcc: mailboxes(email.bcc),
  replyTo: mailboxes(email.replyTo),
  messageId: email.messageId ?? null,
  inReplyTo: email.inReplyTo ?? null,
  date: email.date ?? null,
  headers: email.headers.map((h) => ({ name: h.originalKey, value: decodeWords(h.value) })),
  text: email.text ?? null,
  html: email.html ?? null,
  attachments: attachmentsOf(summary.id, email),
  htmlUrl: email.html === undefined ? null : `/api/messages/${summary.id}/html`,
  rawUrl: `/api/messages/${summary.id}/raw`
})

/** Inline images up to this size are embedded in the frame's HTML; larger ones are linked. */
const maxInlineImage = 8 * 1024 * 1024

/**
 * The HTML body as the page's iframe loads it: `cid:` references become the image itself (a
 * `data:` URL), so the sandboxed frame — an opaque origin, which a browser does not send the
 * inbox's basic-auth credentials from — needs no request of its own to show them (a part too
 * large to embed is linked to its part URL instead); links open in a new tab (the frame may not
 * navigate the page). The HTML is otherwise untouched: what keeps it inert is the sandbox and
 * the CSP it is served with, not this rewriting.
 */
export const htmlForFrame = (id: string, email: ParsedEmail): string | undefined => {
  if (email.html === undefined) return undefined
  const byCid = new Map<string, number>()
  email.attachments.forEach((a, i) => {
    if (a.contentId !== undefined) byCid.set(bareContentId(a.contentId).toLowerCase(), i)
  })
  const html = email.html.replace(/\bcid:([^"'\s)>]+)/gi, (whole, cid: string) => {
    let key = cid
    try {
      key = decodeURIComponent(cid)
    } catch {
      // A malformed escape: look it up as written.
    }
    const n = byCid.get(key.toLowerCase())
    if (n === undefined) return whole
    const bytes = partContent(email, n)!
    if (bytes.byteLength > maxInlineImage) return partUrl(id, n)
    const type = email.attachments[n]!.mimeType.toLowerCase()
    const safe = /^image\/[a-z0-9.+-]+$/.test(type) ? type : "application/octet-stream"
    return `data:${safe};base64,${Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64")}`
  })
  const doctype = /^\s*<!doctype[^>]*>/i.exec(html)
  const base = "<base target=\"_blank\">"
  return doctype === null ? base + html : doctype[0] + base + html.slice(doctype[0].length)
}

/** Image types the browser may show inline from a part URL (SVG is excluded: it can carry script). */
export const previewable = new Set(["image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/avif"])

/** The part's bytes. */
export const partContent = (email: ParsedEmail, n: number): Uint8Array | undefined => {
  const a = email.attachments[n]
  if (a === undefined) return undefined
  const c = a.content
  return typeof c === "string" ? Buffer.from(c, a.encoding === "base64" ? "base64" : "utf8") : c instanceof Uint8Array ? c : new Uint8Array(c)
}
