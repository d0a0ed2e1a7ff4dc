/**
 * A listener's certificate files, read and checked. Every pair (the main one and each SNI name's)
 * is checked now (PEM, parseable, key matching the certificate, accepted by TLS), so a bad pair
 * fails the start or the reload that names it, not the first STARTTLS.
 */
import { Effect } from "effect"
import { ListenError } from "../ListenError.ts"
import type { ListenerOptions } from "../ListenerOptions.ts"
import * as KeyPair from "./keyPair.ts"

export interface TlsFiles {
  readonly cert: Buffer
  readonly key: Buffer
  readonly sniOptions: Readonly<Record<string, { readonly cert: Buffer; readonly key: Buffer }>>
}

/** The files of `o.tls`; `undefined` when TLS is disabled. */
export const read = (o: ListenerOptions, address: string): Effect.Effect<TlsFiles | undefined, ListenError> =>
  Effect.try({
    try: (): TlsFiles | undefined => {
      if (o.tls.mode === "disabled") return undefined
      if (o.tls.acme === true && o.tls.cert === undefined) {
        throw new Error("tls.acme needs the ACME section ([acme] in the config file, `acme` in IncomingOptions)")
      }
      if (o.tls.cert === undefined || o.tls.key === undefined) {
        throw new Error(`tls mode "${o.tls.mode}" needs both a certificate and a key file`)
      }
      // The config preflight runs the same check (KeyPair), in the same words.
      const pair = (files: KeyPair.KeyPairFiles, label: string) => {
        const read = KeyPair.read(files)
        if (KeyPair.isProblem(read)) throw new Error(`${label}: ${read.message}`)
        return read
      }
      const main = pair({ cert: o.tls.cert, key: o.tls.key }, "certificate")
      const sniOptions = Object.fromEntries(
        Object.entries(o.tls.sni ?? {}).map(([name, files]) => [name.toLowerCase(), pair(files, `sni "${name}"`)])
      )
      return { ...main, sniOptions }
    },
    catch: (cause) =>
      new ListenError({
        listener: o.name,
        address,
        reason: { _tag: "BadCertificate", detail: cause instanceof Error ? cause.message : String(cause) },
        cause
      })
  })
