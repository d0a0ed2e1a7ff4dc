/**
 * Small builders shared by tests: envelopes, in-memory bodies, new messages, and a TLS key pair
 * for configuration tests (valid PEM, so the start-up check of the pair passes).
 */
import { Effect } from "effect"
import type { NewMessage } from "../../src/queue/MailQueue.ts"
import * as MessageId from "../../src/queue/MessageId.ts"
import type { Envelope } from "../../src/protocol/Envelope.ts"
import type { InMemoryBody } from "../../src/spool/SpooledBody.ts"

export const envelope = (rcptTo: ReadonlyArray<string>, mailFrom = "sender@remote.test"): Envelope => ({
  mailFrom,
  rcptTo,
  helo: "client.test",
  clientAddress: "127.0.0.1",
  secure: false,
  listener: "test"
})

export const body = (text: string): InMemoryBody => {
  const b = Buffer.from(text)
  return { _tag: "InMemory", size: b.length, chunks: [b], release: Effect.void }
}

export const message = (rcptTo: ReadonlyArray<string>, receivedAt: number, text = "Subject: t\r\n\r\nhello\r\n"): NewMessage => ({
  id: MessageId.make(receivedAt),
  envelope: envelope(rcptTo),
  trace: "Received: test\r\n",
  body: body(text),
  receivedAt
})

/**
 * A self-signed P-256 certificate for `mx.test` (valid until 2126) and its key, for tests that
 * only need files a configuration accepts; tests that handshake make fresh ones with openssl.
 */
export const testCertificate = `-----BEGIN CERTIFICATE-----
MIIBjzCCATWgAwIBAgIUChY+sX5vEZVUHlbGBWsr8vn1+7gwCgYIKoZIzj0EAwIw
EjEQMA4GA1UEAwwHbXgudGVzdDAgFw0yNjEyMDQxNTEzNTlaGA8yMTI2MTExMDE1
MTM1OVowEjEQMA4GA1UEAwwHbXgudGVzdDBZMBMGByqGSM49AgEGCCqGSM49AwEH
A0IABFDw+TeDWTGqcUAZQ7PLogI/x/+t3ifylvECMshzqNVztM8dJh6eiP19/nnP
PuxgPjiS3E1j0EN3Upm+6QMbcXijZzBlMB0GA1UdDgQWBBQAoO7v8kdRXP/xA2Na
AorizHcHODAfBgNVHSMEGDAWgBQAoO7v8kdRXP/xA2NaAorizHcHODAPBgNVHRMB
Af8EBTADAQH/MBIGA1UdEQQLMAmCB214LnRlc3QwCgYIKoZIzj0EAwIDSAAwRQIh
AI4a98eFFyYzd0wVqIxhMVIh+iI0Gyoq9j+rYNwLCWSbAiA1r64dbc26qC+YgHYy
q2Fej3UJkUUm1mlc6fIJhB3e/A==
-----END CERTIFICATE-----
`

export const testPrivateKey = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgICpZFp2xpp25C+Y9
qXUBwncTG6QxEqLjKHwsitIqFXehRANCAARQ8Pk3g1kxqnFAGUOzy6ICP8f/rd4n
8pbxAjLIc6jVc7TPHSYenoj9ff55zz7sYD44ktxNY9BDd1KZvukDG3F4
-----END PRIVATE KEY-----
`
