/**
 * The dev inbox for host apps' tests: `DevInbox.layer()` starts a real one in-process — SMTP
 * and the web API on 127.0.0.1 with free ports, data in a temporary directory removed at the
 * end — and provides `TestInbox`: the SMTP port to point the app at, the inbox URL, and a
 * typed client to list messages and wait for them.
 *
 * ```ts
 * layer(DevInbox.layer(), { excludeTestServices: true })((it) => {
 *   it.effect("sends the welcome mail", () =>
 *     Effect.gen(function*() {
 *       const inbox = yield* DevInbox.TestInbox
 *       yield* signUp("alice@example.com", { smtpPort: inbox.smtpPort })
 *       const mail = yield* inbox.client.wait("to:alice@example.com subject:Welcome")
 *       assert.include(mail.text, "Confirm your address")
 *     }))
 * })
 * ```
 */
import { Context, Effect, Layer } from "effect"
import * as Client from "../dev/Client.ts"
import * as Dev from "../dev/DevInbox.ts"
import type { InboxStore } from "../dev/Store.ts"
import { tempDir } from "./TestIncoming.ts"

export class TestInbox extends Context.Service<TestInbox, {
  readonly smtpPort: number
  readonly smtp: Dev.HostPort
  /** `http://127.0.0.1:PORT`: the page and the JSON API. */
  readonly url: string
  readonly client: Client.InboxClient
}>()("incoming/testing/TestInbox") {}

/** A dev inbox on free loopback ports with its data in a temporary directory. */
export const layer = (options: Dev.DevInboxOptions = {}): Layer.Layer<TestInbox | Dev.DevInbox | InboxStore, Dev.Errors> => {
  const inbox = Layer.unwrap(Effect.map(tempDir("incoming-dev-"), (dir) =>
    Dev.layer({
      ...options,
      smtp: { host: "127.0.0.1", port: 0, ...options.smtp },
      http: { host: "127.0.0.1", port: 0, ...options.http },
      dataDir: options.dataDir ?? dir
    })))
  const test = Layer.effect(
    TestInbox,
    Effect.gen(function*() {
      const d = yield* Dev.DevInbox
      const auth = options.http?.basicAuth
      return TestInbox.of({
        smtpPort: d.smtp.port,
        smtp: d.smtp,
        url: d.url,
        client: Client.make(d.url, auth === undefined ? {} : { basicAuth: auth })
      })
    })
  )
  return test.pipe(Layer.provideMerge(inbox))
}

export type { DevInboxOptions } from "../dev/DevInbox.ts"
