/**
 * A listener's certificate files, read and checked. Every pair (the main one and each SNI name's)
 * goes through `createSecureContext` now, so a malformed or mismatched pair fails the start or
 * the reload that names it, not the first STARTTLS.
 */
import { readFileSync } from "node:fs"
import { createSecureContext } from "node:tls"
import { Effect } from "effect"
import { ListenError } from "../ListenError.ts"
import type { ListenerOptions } from "../ListenerOptions.ts"

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
      if (o.tls.cert === undefined || o.tls.key === undefined) {
        throw new Error(`tls mode "${o.tls.mode}" needs both a certificate and a key file`)
      }
      const pair = (files: { readonly cert: string; readonly key: string }, label: string) => {
        try {
          const cert = readFileSync(files.cert)
          const key = readFileSync(files.key)
          createSecureContext({ cert, key })
          return { cert, key }
        } catch (e) {
          throw new Error(`${label}: ${e instanceof Error ? e.message : String(e)}`)
        }
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
