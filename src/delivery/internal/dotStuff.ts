/**
 * The DATA encoding of SMTP and LMTP (RFC 5321 §4.5.2), applied while the message streams: a
 * `.` that starts a line is doubled, bare LFs become CRLF (the wire format has no other line
 * ending, and a peer that splits on bare LF would see different lines than we stored), and the
 * terminating `CRLF.CRLF` is appended — with a CRLF first when the message does not end in one.
 */
import { Stream } from "effect"

const CR = 0x0d
const LF = 0x0a
const DOT = 0x2e
const CRLF = Buffer.from("\r\n", "latin1")
const DOT_BYTE = Buffer.from(".", "latin1")

interface State {
  readonly atLineStart: boolean
  readonly lastWasCR: boolean
}

const encode = (state: State, chunk: Uint8Array): readonly [State, ReadonlyArray<Uint8Array>] => {
  if (chunk.length === 0) return [state, []]
  let { atLineStart, lastWasCR } = state
  const out: Array<Uint8Array> = []
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
  return [{ atLineStart, lastWasCR }, [Buffer.concat(out)]]
}

export const dotStuffed = <E, R>(body: Stream.Stream<Uint8Array, E, R>): Stream.Stream<Uint8Array, E, R> =>
  Stream.mapAccum(body, (): State => ({ atLineStart: true, lastWasCR: false }), encode, {
    onHalt: (state) => [Buffer.from(state.atLineStart ? ".\r\n" : "\r\n.\r\n", "latin1")]
  })
