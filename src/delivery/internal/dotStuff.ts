/**
 * The DATA encoding of SMTP and LMTP (RFC 5321 §4.5.2), applied while the message streams: a
 * `.` that starts a line is doubled, bare LFs become CRLF (the wire format has no other line
 * ending, and a peer that splits on bare LF would see different lines than we stored), and the
 * terminating `CRLF.CRLF` is appended — with a CRLF first when the message does not end in one.
 */

const CR = 0x0d
const LF = 0x0a
const DOT = 0x2e
const CRLF = Buffer.from("\r\n", "latin1")
const DOT_BYTE = Buffer.from(".", "latin1")

export async function* dotStuffed(source: AsyncIterable<Buffer | Uint8Array | string>): AsyncGenerator<Buffer> {
  let atLineStart = true
  let lastWasCR = false
  for await (const raw of source) {
    const chunk = typeof raw === "string" ? Buffer.from(raw, "utf8") : Buffer.isBuffer(raw) ? raw : Buffer.from(raw)
    if (chunk.length === 0) continue
    const out: Array<Buffer> = []
    let from = 0
    for (let i = 0; i < chunk.length; i++) {
      const c = chunk[i]!
      if (atLineStart && c === DOT) {
        out.push(chunk.subarray(from, i), DOT_BYTE)
        from = i
      }
      if (c === LF && !lastWasCR) {
        out.push(chunk.subarray(from, i), CRLF)
        from = i + 1
      }
      atLineStart = c === LF
      lastWasCR = c === CR
    }
    out.push(chunk.subarray(from))
    yield Buffer.concat(out)
  }
  yield Buffer.from(atLineStart ? ".\r\n" : "\r\n.\r\n", "latin1")
}
