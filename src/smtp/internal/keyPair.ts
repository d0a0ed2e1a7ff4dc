/**
 * Reads a TLS certificate chain and private key and checks them as a listener will use them:
 * both files PEM, the certificate parseable, the key matching it. One function for the start-up
 * preflight (`config/Load.ts`, so `incoming check-config` catches them) and for the listener
 * itself (at start and on reload), so both refuse the same files in the same words.
 */
import { createPrivateKey, X509Certificate } from "node:crypto"
import { readFileSync } from "node:fs"
import { createSecureContext } from "node:tls"
import * as FsProblem from "../../internal/fsProblem.ts"

export interface KeyPairFiles {
  readonly cert: string
  readonly key: string
}

export interface KeyPair {
  readonly cert: Buffer
  readonly key: Buffer
}

/** Which file is at fault and why (the message names the file). */
export interface KeyPairProblem {
  readonly which: "cert" | "key"
  readonly message: string
}

const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e))

export const read = (files: KeyPairFiles): KeyPair | KeyPairProblem => {
  const load = (which: "cert" | "key"): Buffer | KeyPairProblem => {
    try {
      return readFileSync(files[which])
    } catch (e) {
      return { which, message: `${files[which]}: ${FsProblem.describe(e)}` }
    }
  }
  const cert = load("cert")
  if (!Buffer.isBuffer(cert)) return cert
  const key = load("key")
  if (!Buffer.isBuffer(key)) return key
  if (!cert.includes("-----BEGIN CERTIFICATE-----")) {
    return { which: "cert", message: `${files.cert}: not a PEM certificate (no "-----BEGIN CERTIFICATE-----" line)` }
  }
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(key.toString("latin1"))) {
    return { which: "key", message: `${files.key}: not a PEM private key (no "-----BEGIN ... PRIVATE KEY-----" line)` }
  }
  let certificate: X509Certificate
  try {
    certificate = new X509Certificate(cert)
  } catch (e) {
    return { which: "cert", message: `${files.cert}: not a valid certificate: ${errorText(e)}` }
  }
  let privateKey: ReturnType<typeof createPrivateKey>
  try {
    privateKey = createPrivateKey(key)
  } catch (e) {
    return { which: "key", message: `${files.key}: not a usable private key: ${errorText(e)}` }
  }
  if (!certificate.checkPrivateKey(privateKey)) {
    return { which: "key", message: `${files.key}: does not match the certificate ${files.cert}` }
  }
  // Last, what TLS itself says (a chain it cannot load, say): the checks above name the usual problems.
  try {
    createSecureContext({ cert, key })
  } catch (e) {
    return { which: "cert", message: `${files.cert}: ${errorText(e)}` }
  }
  return { cert, key }
}

export const isProblem = (r: KeyPair | KeyPairProblem): r is KeyPairProblem => "which" in r
