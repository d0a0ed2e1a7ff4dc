/**
 * How a listener with `tls.acme = true` gets the managed certificates: its `cert`/`key` become
 * the store's files for its host name (else the first managed name: what a client without
 * SNI gets) and its `sni` table names every managed name. The listener then reads them like
 * any other certificate files — at start, on SIGHUP, and when the manager asks after a renewal.
 * The same mapping serves the start and every reload, so both always name the same files.
 */
import type { ListenerInput } from "../smtp/ListenerOptions.ts"
import { type AcmeOptions, directoryUrl } from "./AcmeOptions.ts"
import * as CertStore from "./CertStore.ts"

/** The names to manage: `options.domains`, or the host names of the listeners that use ACME. */
export const domains = (
  options: Pick<AcmeOptions, "domains">,
  listeners: ReadonlyArray<ListenerInput>,
  hostname: string
): ReadonlyArray<string> => {
  if (options.domains.length > 0) return options.domains.map((d) => d.toLowerCase())
  const names = listeners.filter((l) => l.tls?.acme === true).map((l) => (l.hostname ?? hostname).toLowerCase())
  return [...new Set(names)]
}

/** `listeners` with the managed files filled in where `tls.acme` is set. */
export const withFiles = (
  listeners: ReadonlyArray<ListenerInput>,
  options: Pick<AcmeOptions, "directory">,
  names: ReadonlyArray<string>,
  dataDir: string,
  hostname: string
): ReadonlyArray<ListenerInput> => {
  const store = CertStore.paths(dataDir, directoryUrl(options.directory))
  const files = (name: string) => ({ cert: store.cert(name), key: store.key(name) })
  return listeners.map((l) => {
    if (l.tls?.acme !== true || names.length === 0) return l
    const own = (l.hostname ?? hostname).toLowerCase()
    const main = names.includes(own) ? own : names[0]!
    return { ...l, tls: { ...l.tls, ...files(main), sni: Object.fromEntries(names.map((n) => [n, files(n)])) } }
  })
}

/** The managed names and the listeners with their files, from a server's options (start and reload alike). */
export const resolve = (
  listeners: ReadonlyArray<ListenerInput>,
  options: Pick<AcmeOptions, "directory" | "domains"> | undefined,
  dataDir: string,
  hostname: string
): { readonly names: ReadonlyArray<string>; readonly listeners: ReadonlyArray<ListenerInput> } => {
  if (options === undefined) return { names: [], listeners }
  const names = domains(options, listeners, hostname)
  return { names, listeners: withFiles(listeners, options, names, dataDir, hostname) }
}
