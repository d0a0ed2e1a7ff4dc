/**
 * Small builders shared by tests: envelopes, in-memory bodies, new messages.
 */
import { Effect } from "effect"
import type { NewMessage } from "../../src/queue/MailQueue.ts"
import * as MessageId from "../../src/queue/MessageId.ts"
import type { Envelope } from "../../src/smtp/Envelope.ts"
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
