/**
 * How a webhook request is authenticated and de-duplicated, for the adapter that signs and for
 * the receivers that check: an HMAC-SHA256 over `timestamp + "." + body`
 * (`X-Incoming-Timestamp`, `X-Incoming-Signature: sha256=<hex>`), and an `Idempotency-Key` of
 * `<message id>/<hash of the recipient set>` that stays the same for every attempt at the same
 * recipients.
 *
 * It needs nothing but `node:crypto`, so a receiver can import it without the server.
 */
import { createHash, createHmac, timingSafeEqual } from "node:crypto"

export const headerNames = {
  timestamp: "X-Incoming-Timestamp",
  signature: "X-Incoming-Signature",
  idempotencyKey: "Idempotency-Key"
} as const

export interface Signer {
  readonly update: (chunk: string | Uint8Array) => void
  /** `sha256=<hex>`; call once, after the last chunk. */
  readonly digest: () => string
}

/** The signature of a body given in pieces (a streamed body is signed as it is read). */
export const signer = (secret: string, timestamp: string): Signer => {
  const hmac = createHmac("sha256", secret).update(`${timestamp}.`)
  return {
    update: (chunk) => void hmac.update(chunk),
    digest: () => `sha256=${hmac.digest("hex")}`
  }
}

/** `sha256=<hex>` of the HMAC-SHA256 over `timestamp + "." + body`. */
export const signature = (secret: string, timestamp: string, body: string | Uint8Array): string => {
  const s = signer(secret, timestamp)
  s.update(body)
  return s.digest()
}

/**
 * The receiver's check: the signature matches and the timestamp is within `toleranceSec` of
 * `nowSec` (replays of old requests are refused). Constant-time comparison.
 */
export const verify = (input: {
  readonly secret: string
  readonly timestamp: string
  readonly signature: string
  readonly body: string | Uint8Array
  readonly nowSec?: number
  readonly toleranceSec?: number
}): boolean => {
  const ts = Number(input.timestamp)
  if (!Number.isInteger(ts)) return false
  const now = input.nowSec ?? Math.floor(Date.now() / 1000)
  if (Math.abs(now - ts) > (input.toleranceSec ?? 300)) return false
  const expected = Buffer.from(signature(input.secret, input.timestamp, input.body))
  const given = Buffer.from(input.signature)
  return expected.length === given.length && timingSafeEqual(expected, given)
}

/** `<message id>/<hash of the sorted recipients>`: the same for every attempt at the same recipients. */
export const idempotencyKey = (delivery: {
  readonly id: string
  readonly recipients: ReadonlyArray<{ readonly rcpt: string }>
}): string => {
  const rcpts = delivery.recipients.map((r) => r.rcpt.toLowerCase()).sort().join("\n")
  return `${delivery.id}/${createHash("sha256").update(rcpts).digest("hex").slice(0, 32)}`
}
