/**
 * Detects and repairs bare CR / bare LF in a DATA stream, chunk by chunk.
 *
 * RFC 5321 2.3.8 forbids them, and relays downstream may split lines on them (SMTP smuggling
 * builds on such disagreements), so by default a message containing one is refused; a listener
 * may choose to normalise them to CRLF instead. A CR at the end of a chunk is decided by the
 * first byte of the next one.
 */
const CR = 13
const LF = 10

export interface LineEndingScanner {
  /** Returns the chunk to keep (normalised if asked), or the kind of bare ending found when rejecting. */
  readonly push: (chunk: Buffer) => Buffer | "LF" | "CR"
  /** Call at end of stream: a trailing CR is bare. */
  readonly end: () => Buffer | "CR" | undefined
}

export const make = (mode: "reject" | "normalize"): LineEndingScanner => {
  let pendingCR = false

  const scanReject = (chunk: Buffer): "LF" | "CR" | undefined => {
    let i = 0
    if (pendingCR) {
      if (chunk.length === 0) return undefined
      if (chunk[0] !== LF) return "CR"
      i = 1
      pendingCR = false
    }
    // Fast path: find each CR/LF with indexOf instead of a byte loop.
    while (i < chunk.length) {
      const lf = chunk.indexOf(LF, i)
      const cr = chunk.indexOf(CR, i)
      if (lf === -1 && cr === -1) return undefined
      if (cr === -1 || (lf !== -1 && lf < cr)) return "LF"
      // cr found before any lf
      if (cr === chunk.length - 1) {
        pendingCR = true
        return undefined
      }
      if (chunk[cr + 1] !== LF) return "CR"
      i = cr + 2
    }
    return undefined
  }

  const isClean = (chunk: Buffer, from: number): boolean => {
    for (let j = from; j < chunk.length; j++) {
      const b = chunk[j]
      if (b === LF && (j === from || chunk[j - 1] !== CR)) return false
      if (b === CR && j + 1 < chunk.length && chunk[j + 1] !== LF) return false
    }
    return true
  }

  const normalize = (chunk: Buffer): Buffer => {
    // An empty chunk decides nothing: keep a held-back CR for the next one (it used to be turned
    // into CRLF here, and the LF opening the next chunk into a second one).
    if (chunk.length === 0) return chunk
    // A CR held back from the previous chunk becomes CRLF whatever follows; a following LF is its pair.
    const prefix = pendingCR ? Buffer.from([CR, LF]) : undefined
    const from = pendingCR && chunk[0] === LF ? 1 : 0
    pendingCR = false
    if (isClean(chunk, from)) {
      // Most messages are clean: no copy except for a trailing CR held back for the next chunk.
      const endsWithCR = chunk.length > from && chunk[chunk.length - 1] === CR
      pendingCR = endsWithCR
      const body = chunk.subarray(from, endsWithCR ? chunk.length - 1 : chunk.length)
      return prefix === undefined ? body : Buffer.concat([prefix, body])
    }
    const out: Array<number> = prefix === undefined ? [] : [CR, LF]
    for (let j = from; j < chunk.length; j++) {
      const b = chunk[j]!
      if (b === CR) {
        if (j === chunk.length - 1) {
          pendingCR = true
        } else {
          out.push(CR, LF)
          if (chunk[j + 1] === LF) j++
        }
      } else if (b === LF) {
        out.push(CR, LF)
      } else {
        out.push(b)
      }
    }
    return Buffer.from(out)
  }

  return {
    push: (chunk) => {
      if (mode === "normalize") return normalize(chunk)
      const bad = scanReject(chunk)
      return bad ?? chunk
    },
    end: () => {
      if (!pendingCR) return undefined
      pendingCR = false
      return mode === "normalize" ? Buffer.from([CR, LF]) : "CR"
    }
  }
}
