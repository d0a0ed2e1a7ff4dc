/**
 * A spooled message as a milter is told it: the header fields one by one (name, then the value
 * as received — folding kept, with LF line breaks as Postfix sends them, and the leading space
 * only when the filter asked for it), then the body, which starts after the empty line. Pure.
 *
 * The header block ends at the empty line, or at the first line that is not a header field (that
 * line then belongs to the body), the same rule as spool/HeaderBlock.ts.
 */

export interface Field {
  readonly name: string
  /** The value's bytes as the filter is to get them. */
  readonly value: Uint8Array
}

export interface Split {
  readonly fields: ReadonlyArray<Field>
  /** Where the body starts in the bytes given. */
  readonly bodyStart: number
}

const CR = 13
const LF = 10

/**
 * Where the header block ends in `bytes`: the offset just past the empty line, or -1 when it is
 * not in there yet. A message that starts with an empty line has no header block (offset 2).
 */
export const headerEnd = (bytes: Uint8Array): number => {
  if (bytes[0] === CR && bytes[1] === LF) return 2
  for (let i = 0; i + 3 < bytes.byteLength; i++) {
    if (bytes[i] === CR && bytes[i + 1] === LF && bytes[i + 2] === CR && bytes[i + 3] === LF) return i + 4
  }
  return -1
}

const isFieldName = (line: Uint8Array, colon: number): boolean => {
  if (colon <= 0) return false
  for (let i = 0; i < colon; i++) {
    const c = line[i]!
    if (c < 0x21 || c > 0x7e) return false
  }
  return true
}

/**
 * The fields of `block` (the bytes up to and including the empty line, or all of a message
 * without one) and where the body starts. `leadingSpace`: keep the white space after the colon
 * (SMFIP_HDR_LEADSPC); otherwise it is stripped, as Postfix and Sendmail do.
 */
export const split = (block: Uint8Array, leadingSpace: boolean): Split => {
  const fields: Array<{ name: string; parts: Array<Uint8Array> }> = []
  let at = 0
  while (at < block.byteLength) {
    let end = block.indexOf(LF, at)
    const last = end === -1
    if (last) end = block.byteLength
    const line = block.subarray(at, end > at && block[end - 1] === CR ? end - 1 : end)
    if (line.byteLength === 0) return { fields: done(fields), bodyStart: last ? end : end + 1 }
    const first = line[0]!
    if ((first === 0x20 || first === 0x09) && fields.length > 0) {
      fields[fields.length - 1]!.parts.push(line)
    } else {
      const colon = line.indexOf(0x3a)
      if (!isFieldName(line, colon)) return { fields: done(fields), bodyStart: at }
      let v = colon + 1
      if (!leadingSpace) while (v < line.byteLength && (line[v] === 0x20 || line[v] === 0x09)) v++
      fields.push({ name: new TextDecoder().decode(line.subarray(0, colon)).trimEnd(), parts: [line.subarray(v)] })
    }
    at = last ? end : end + 1
  }
  return { fields: done(fields), bodyStart: block.byteLength }
}

/** Continuation lines joined with LF, as Postfix hands a folded field to a milter. */
const done = (fields: ReadonlyArray<{ name: string; parts: ReadonlyArray<Uint8Array> }>): Array<Field> =>
  fields.map(({ name, parts }) => {
    let n = parts.length - 1
    for (const p of parts) n += p.byteLength
    const value = new Uint8Array(n)
    let at = 0
    parts.forEach((p, i) => {
      if (i > 0) value[at++] = LF
      value.set(p, at)
      at += p.byteLength
    })
    return { name, value }
  })
