/**
 * Where ACME keys and certificates live: under `data_dir/acme/<ca>/`, one directory per CA
 * directory URL (so certificates from a staging CA are never served once production is
 * configured), holding the account key and, per name, `<name>.crt` (the chain) and
 * `<name>.key`. Every file is written owner-only (0600) through a temporary file, fsync and
 * rename, so a crash leaves the old file or the new one, never half of one.
 *
 * The key is renamed into place before the certificate. A crash between the two leaves a pair
 * that does not match; `read` reports such a pair as absent, and the manager issues a new one
 * before any listener reads it.
 */
import { X509Certificate } from "node:crypto"
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import * as FsProblem from "../internal/fsProblem.ts"
import * as KeyPair from "../smtp/internal/keyPair.ts"

/** The store of one CA directory. */
export interface StorePaths {
  readonly dir: string
  readonly accountKey: string
  readonly cert: (domain: string) => string
  readonly key: (domain: string) => string
}

/** A directory URL as a directory name: `acme-v02.api.letsencrypt.org_directory`. */
export const caKey = (directoryUrl: string): string => {
  const url = URL.canParse(directoryUrl) ? new URL(directoryUrl) : undefined
  const raw = url === undefined ? directoryUrl : `${url.host}${url.pathname}`
  return raw.toLowerCase().replace(/[^a-z0-9.-]+/g, "_").replace(/^_+|_+$/g, "") || "default"
}

/** A name as a file name (names are already restricted to letters, digits, dots, hyphens and a leading `*.`). */
const fileName = (domain: string) => domain.toLowerCase().replace(/^\*\./, "_wildcard.")

export const paths = (dataDir: string, directoryUrl: string): StorePaths => {
  const dir = join(dataDir, "acme", caKey(directoryUrl))
  return {
    dir,
    accountKey: join(dir, "account.key"),
    cert: (domain) => join(dir, `${fileName(domain)}.crt`),
    key: (domain) => join(dir, `${fileName(domain)}.key`)
  }
}

/** A stored certificate as the manager and `incoming cert status` see it. */
export interface Stored {
  readonly domain: string
  readonly cert: Buffer
  readonly key: Buffer
  readonly notBefore: number
  readonly notAfter: number
  readonly issuer: string
  /** Names the certificate covers (its subjectAltName DNS entries). */
  readonly names: ReadonlyArray<string>
}

export type ReadResult =
  | { readonly _tag: "Found"; readonly stored: Stored }
  | { readonly _tag: "Missing" }
  /** Present but unusable (unreadable, not PEM, key not matching): `problem` says why. */
  | { readonly _tag: "Unusable"; readonly problem: string }

export const read = (store: StorePaths, domain: string): ReadResult => {
  const files = { cert: store.cert(domain), key: store.key(domain) }
  const pair = KeyPair.read(files)
  if (KeyPair.isProblem(pair)) {
    // Neither file yet: never issued. Anything else (one of the two, a pair that does not match) is a problem.
    return !existsSync(files.cert) && !existsSync(files.key) ? { _tag: "Missing" } : { _tag: "Unusable", problem: pair.message }
  }
  const x509 = new X509Certificate(pair.cert)
  const names = (x509.subjectAltName ?? "").split(", ").filter((s) => s.startsWith("DNS:")).map((s) => s.slice(4).toLowerCase())
  return {
    _tag: "Found",
    stored: {
      domain,
      cert: pair.cert,
      key: pair.key,
      notBefore: Date.parse(x509.validFrom),
      notAfter: Date.parse(x509.validTo),
      issuer: x509.issuer.replace(/\n/g, ", "),
      names
    }
  }
}

/** Writes `data` to `file` owner-only, durably, replacing what was there in one step. */
export const writeFileAtomic = (file: string, data: string | Buffer): void => {
  const tmp = `${file}.tmp-${process.pid}`
  writeFileSync(tmp, data, { mode: 0o600 })
  const fd = openSync(tmp, "r")
  try {
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  renameSync(tmp, file)
  const dirFd = openSync(join(file, ".."), "r")
  try {
    fsyncSync(dirFd)
  } finally {
    closeSync(dirFd)
  }
}

/** Creates the store's directory (owner-only). */
export const ensureDir = (store: StorePaths): void => {
  mkdirSync(store.dir, { recursive: true, mode: 0o700 })
}

/** The account key, or undefined when there is none yet. */
export const readAccountKey = (store: StorePaths): Buffer | undefined => {
  const missing = FsProblem.codeOf(FsProblem.attempt(() => statSync(store.accountKey))) === "ENOENT"
  return missing ? undefined : readFileSync(store.accountKey)
}

/** Stores a newly issued pair: key first (see the module comment), then the chain. */
export const writePair = (store: StorePaths, domain: string, pair: { readonly cert: string | Buffer; readonly key: string | Buffer }): void => {
  ensureDir(store)
  writeFileAtomic(store.key(domain), pair.key)
  writeFileAtomic(store.cert(domain), pair.cert)
}
