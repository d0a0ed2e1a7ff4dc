/**
 * What a message needs of the peer that takes it, found by reading it once: 8-bit bytes in the
 * header (which only SMTPUTF8 allows, RFC 6532) and in the body (which needs 8BITMIME, RFC
 * 6152). The MX adapter asks only when a peer lacks one of those extensions: such a message then
 * fails for good with the status RFC 6531 §3.5 names (5.6.7) or RFC 3463's "conversion required
 * and prohibited" (5.6.3), rather than being sent and mangled on the way.
 */
import { Effect, Stream } from "effect"

export interface Needs {
  readonly utf8Header: boolean
  readonly eightBitBody: boolean
}

/** Addresses need SMTPUTF8 when they are not ASCII. */
export const nonAscii = (text: string): boolean => /[^\x00-\x7f]/.test(text)

export const scan = <E>(body: Stream.Stream<Uint8Array, E>): Effect.Effect<Needs, E> =>
  Effect.suspend(() => {
    // The header ends at the first empty line; `tail` carries the last bytes across chunks.
    let inHeader = true
    let tail = 0
    let utf8Header = false
    let eightBitBody = false
    return Stream.runForEach(body, (chunk) =>
      Effect.sync(() => {
        for (let i = 0; i < chunk.length; i++) {
          const b = chunk[i]!
          if (inHeader) {
            if (b >= 0x80) utf8Header = true
            // "\n\n" or "\r\n\r\n": the 4 last bytes, packed.
            tail = ((tail << 8) | b) >>> 0
            if ((tail & 0xffff) === 0x0a0a || tail === 0x0d0a0d0a) inHeader = false
          } else if (b >= 0x80) {
            eightBitBody = true
            return
          }
        }
      })).pipe(Effect.map(() => ({ utf8Header, eightBitBody })))
  })
