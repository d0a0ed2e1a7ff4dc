/**
 * Mail for a foreign domain is never filed locally: a client allowed to relay (here a trusted
 * network) gets 550 5.7.1 at RCPT for someone@gmail.test when delivery has no way off-site (the
 * default Maildir), and nothing appears under the Maildir root for that address; check-config
 * warns about the configuration (relaying allowed, nowhere to relay to) and serve logs the same
 * warning. With a catch-all route to an SMTP relay (a real smtp-server on loopback standing in
 * for the smarthost), the same RCPT is accepted and the message reaches the relay.
 */
import { existsSync, readdirSync, writeFileSync } from "node:fs"
import type { AddressInfo } from "node:net"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, type Scope } from "effect"
import { SMTPServer } from "smtp-server"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { runCli, serve, waitForMaildir } from "../support/server.ts"

/** A smarthost: an smtp-server on loopback that records the recipients it accepted. */
const smarthost: Effect.Effect<{ readonly port: number; readonly received: Array<string> }, never, Scope.Scope> = Effect.acquireRelease(
  Effect.callback<{ server: SMTPServer; port: number; received: Array<string> }>((resume) => {
    const received: Array<string> = []
    const server = new SMTPServer({
      authOptional: true,
      logger: false,
      disableReverseLookup: true,
      disabledCommands: ["STARTTLS"],
      onData(stream, session, callback) {
        stream.resume()
        stream.on("end", () => {
          received.push(...session.envelope.rcptTo.map((r) => r.address))
          callback(null, "2.0.0 relayed")
        })
      }
    })
    server.on("error", () => undefined)
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed({ server, port: (server.server.address() as AddressInfo).port, received })))
  }),
  ({ server }) => Effect.callback<void>((resume) => server.close(() => resume(Effect.void)))
)

const trusted = [`domains = ["localhost"]`, `data_dir = "data"`, `[[listeners]]\nport = 0`, `[relay]\ntrusted_networks = ["127.0.0.1/32"]`]

const transaction = (port: number, to: string) =>
  Effect.scoped(Effect.gen(function*() {
    const c = yield* SmtpClient.connect({ port })
    yield* c.command("EHLO client.test")
    yield* c.command("MAIL FROM:<app@internal.test>")
    const rcpt = yield* c.command(`RCPT TO:<${to}>`)
    if (rcpt.code !== 250) return rcpt
    yield* c.command("DATA")
    yield* c.write(`Subject: to ${to}\r\n\r\nhello\r\n.\r\n`)
    return yield* c.read
  }))

describe("relaying needs a route off-site", () => {
  it.live("no off-site route: a trusted client's RCPT to a foreign domain is 550 5.7.1 and nothing is filed locally; check-config and serve warn", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir("incoming-relay-route-")
      const maildir = join(dir, "mail")
      writeFileSync(join(dir, "incoming.toml"), [...trusted, `[delivery.maildir]\nroot = "mail"`].join("\n"))

      const checked = yield* runCli(["check-config", "--config", "incoming.toml"], { cwd: dir })
      assert.strictEqual(checked.code, 0, checked.stderr)
      const warning = "incoming.toml: relay.trusted_networks: clients may relay (AUTH or relay.trusted_networks) but no route delivers off-site " +
        `(an adapter of type "smtp" or "mx"): their mail for other domains will be refused with 550 5.7.1`
      assert.strictEqual(checked.stderr, `warning: ${warning}\n${join(dir, "incoming.toml")}: valid\n`)

      const server = yield* serve(["--config", "incoming.toml"], dir)
      yield* server.waitFor(/"level":"WARN".*no route delivers off-site|no route delivers off-site.*"level":"WARN"/)
      const foreign = yield* transaction(server.port, "someone@gmail.test")
      assert.strictEqual(`${foreign.code} ${foreign.text}`, "550 5.7.1 Relaying not available: no route to other domains here")
      const local = yield* transaction(server.port, "user@localhost")
      assert.strictEqual(local.code, 250, local.text)
      yield* waitForMaildir(maildir, "user@localhost", (f) => f.length >= 1)
      assert.deepStrictEqual(readdirSync(maildir), ["user@localhost"])
      assert.isFalse(existsSync(join(maildir, "someone@gmail.test")))
      yield* server.signal("SIGTERM")
      assert.strictEqual(yield* server.exitCode, 0)
    }), { timeout: 60_000 })

  it.live("a catch-all route to an SMTP relay: the same RCPT is accepted and the message reaches the relay, not a mailbox", () =>
    Effect.gen(function*() {
      const relay = yield* smarthost
      const dir = yield* TestIncoming.tempDir("incoming-relay-route-")
      const maildir = join(dir, "mail")
      writeFileSync(join(dir, "incoming.toml"), [
        ...trusted,
        `[adapters.mailboxes]\ntype = "maildir"\nroot = "mail"`,
        `[adapters.upstream]\ntype = "smtp"\nhost = "127.0.0.1"\nport = ${relay.port}\nstarttls = "disabled"`,
        `[[routes]]\nmatch = ["*@localhost"]\nadapter = "mailboxes"`,
        `[[routes]]\nmatch = ["*"]\nadapter = "upstream"`
      ].join("\n"))
      const checked = yield* runCli(["check-config", "--config", "incoming.toml"], { cwd: dir })
      assert.strictEqual(checked.stderr, `${join(dir, "incoming.toml")}: valid\n`, "no warning with an off-site route")

      const server = yield* serve(["--config", "incoming.toml"], dir)
      const foreign = yield* transaction(server.port, "someone@gmail.test")
      assert.strictEqual(foreign.code, 250, foreign.text)
      for (let i = 0; i < 200 && relay.received.length === 0; i++) yield* Effect.sleep("25 millis")
      assert.deepStrictEqual(relay.received, ["someone@gmail.test"])
      assert.isFalse(existsSync(join(maildir, "someone@gmail.test")))
      yield* server.signal("SIGTERM")
      assert.strictEqual(yield* server.exitCode, 0)
    }), { timeout: 60_000 })
})
