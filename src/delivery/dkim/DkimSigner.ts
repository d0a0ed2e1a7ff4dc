/**
 * DKIM signing of outbound mail (RFC 6376; Ed25519 per RFC 8463) with mailauth's signer: the
 * stored message is streamed through it once, and the `DKIM-Signature` header it returns is put
 * in front of the message when it is sent. Keys are chosen by the sender's domain (a map), with
 * a default key for any other sender; a message from a domain without a key goes unsigned.
 *
 * The key's algorithm is the key's own (an RSA key signs rsa-sha256, an Ed25519 key
 * ed25519-sha256). A key file readable by other users is refused at load (`checkKeyFile`).
 *
 * mailauth is loaded at the first signature, not with this module: every `incoming` command
 * imports the delivery adapters, and mailauth with its dependencies is a large part of a
 * command's start-up (the auth rules load it the same way).
 */
import { createPrivateKey } from "node:crypto"
import { statSync } from "node:fs"
import * as NodeStream from "@effect/platform-node/NodeStream"
import { Effect } from "effect"
import * as DA from "../DeliveryAdapter.ts"

export interface DkimKey {
  /** `d=`: the signing domain. */
  readonly domain: string
  /** `s=`: the selector; the public key is at `<selector>._domainkey.<domain>`. */
  readonly selector: string
  /** The private key (PEM). */
  readonly privateKey: string
}

export interface DkimOptions {
  /** Used for senders at domains without a key of their own in `byDomain`. */
  readonly key?: DkimKey | undefined
  /** Keys by sender domain (the envelope sender's). */
  readonly byDomain?: Readonly<Record<string, DkimKey>> | undefined
}

/** What is wrong with a key file, if anything: unreadable, not a private key, or open to others. */
export const checkKeyFile = (path: string, text: string | undefined): string | undefined => {
  if (text === undefined) return `not readable by this user (or not found): ${path}`
  try {
    const key = createPrivateKey(text)
    if (key.asymmetricKeyType !== "rsa" && key.asymmetricKeyType !== "ed25519") return `not an RSA or Ed25519 private key: ${path}`
  } catch {
    return `not a PEM private key: ${path}`
  }
  // A private key others can read is a key others can sign with (the same rule as ssh's).
  if ((statSync(path).mode & 0o077) !== 0) return `readable by group or others (mode ${(statSync(path).mode & 0o777).toString(8)}): chmod 600 ${path}`
  return undefined
}

/** The `prepare` hook of the MX adapter: the signature header to prepend, or nothing. */
export const make = (options: DkimOptions) => {
  const byDomain = new Map(Object.entries(options.byDomain ?? {}).map(([d, k]) => [d.toLowerCase(), k]))
  const fallback = options.key
  return (delivery: DA.Delivery): Effect.Effect<{ readonly prefix: Uint8Array }, DA.DeliveryError> => {
    const from = delivery.envelope.mailFrom
    const key = byDomain.get(from.slice(from.lastIndexOf("@") + 1).toLowerCase()) ?? fallback
    if (key === undefined) return Effect.succeed({ prefix: new Uint8Array(0) })
    return Effect.tryPromise({
      try: async () => {
        const { dkimSign } = await import("mailauth")
        // mailauth's typings ask for the key at the top; its signer reads `signatureData`.
        const signature = { signingDomain: key.domain, selector: key.selector, privateKey: key.privateKey, canonicalization: "relaxed/relaxed" }
        return dkimSign(NodeStream.toReadableNever(delivery.body), { ...signature, signatureData: [signature] })
      },
      catch: (cause) => new DA.DeliveryError({ reason: { _tag: "Failed", detail: `DKIM signing failed: ${String(cause)}` }, cause })
    }).pipe(
      Effect.flatMap((result) =>
        result.errors.length > 0 || result.signatures === ""
          ? Effect.fail(new DA.DeliveryError({ reason: { _tag: "Failed", detail: `DKIM signing failed: ${result.errors.map(String).join("; ")}` } }))
          : Effect.succeed({ prefix: Buffer.from(result.signatures) })
      ),
      Effect.withSpan("DkimSigner.sign", { attributes: { domain: key.domain, selector: key.selector } })
    )
  }
}
