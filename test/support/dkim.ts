/**
 * Test keys and messages for the email-authentication tests: RSA and Ed25519 DKIM keys with
 * their DNS records, and messages signed by mailauth's signer (a real signer, not ours).
 */
import { generateKeyPairSync, type KeyObject } from "node:crypto"
import { dkimSign, sealMessage } from "mailauth"

export interface TestKey {
  readonly privateKey: string
  /** The TXT record to publish at `<selector>._domainkey.<domain>`. */
  readonly record: string
  readonly algorithm: "rsa-sha256" | "ed25519-sha256"
}

const spkiBase64 = (key: KeyObject) => key.export({ type: "spki", format: "der" }).toString("base64")

export const rsaKey = (bits = 2048): TestKey => {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: bits })
  return {
    privateKey: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    record: `v=DKIM1; k=rsa; p=${spkiBase64(publicKey)}`,
    algorithm: "rsa-sha256"
  }
}

export const ed25519Key = (): TestKey => {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519")
  // RFC 8463: the raw 32-byte public key, not the SPKI wrapper.
  const raw = publicKey.export({ type: "spki", format: "der" }).subarray(-32).toString("base64")
  return {
    privateKey: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    record: `v=DKIM1; k=ed25519; p=${raw}`,
    algorithm: "ed25519-sha256"
  }
}

/** A TXT record split into 255-byte character-strings, as DNS carries long records. */
export const txtStrings = (record: string): ReadonlyArray<string> => record.match(/.{1,255}/g) ?? []

export const message = (from: string, body = "Hello,\r\nthis is a test.\r\n", extra = ""): string =>
  `From: ${from}\r\nTo: someone@example.test\r\nSubject: test\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n` +
  `Message-ID: <${Math.random().toString(36).slice(2)}@test>\r\n${extra}\r\n${body}`

export const sign = async (msg: string, domain: string, selector: string, key: TestKey): Promise<string> => {
  const { errors, signatures } = await dkimSign(msg, {
    canonicalization: "relaxed/relaxed",
    signatureData: [{ signingDomain: domain, selector, privateKey: key.privateKey, algorithm: key.algorithm }]
  } as never)
  if (errors !== undefined && errors.length > 0) throw new Error(`signing failed: ${JSON.stringify(errors)}`)
  return signatures + msg
}

export const seal = async (msg: string, domain: string, selector: string, key: TestKey, authResults: string): Promise<string> => {
  const sealed = await sealMessage(msg, {
    signingDomain: domain,
    selector,
    privateKey: key.privateKey,
    authResults,
    cv: "none"
  } as never)
  return sealed.toString() + msg
}
