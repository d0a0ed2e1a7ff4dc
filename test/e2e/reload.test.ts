/**
 * SIGHUP reload of `incoming serve --config`: the domain list, a listener limit and the TLS
 * certificate change for new connections while a connection opened before keeps working; an
 * invalid file is refused with a logged error and the running configuration stays; changing a
 * listener's address is reported as needing a restart.
 */
import { X509Certificate } from "node:crypto"
import { mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { connect as netConnect } from "node:net"
import { connect as tlsConnect } from "node:tls"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { hasOpenssl, selfSignedCert } from "../smtp/helpers.ts"
import { serve } from "../support/server.ts"

const config = (o: {
  dir: string
  domains: ReadonlyArray<string>
  cert: { cert: string; key: string }
  maxRecipients: number
  host?: string
  senderRate?: number
  /** Named adapters and a sync route for b.test instead of the plain discard adapter. */
  routed?: boolean
}) => `
domains = [${o.domains.map((d) => `"${d}"`).join(", ")}]
data_dir = "${join(o.dir, "data")}"

[[listeners]]
name = "mx"
host = "${o.host ?? "127.0.0.1"}"
port = 0
max_recipients = ${o.maxRecipients}
tls = { mode = "optional", cert = "${o.cert.cert}", key = "${o.cert.key}" }

${o.routed === true ? `
[adapters.sink]
type = "discard"

[[routes]]
name = "api"
match = ["*@b.test"]
adapter = "sink"
acknowledge = "sync"

[[routes]]
match = ["*"]
adapter = "sink"
` : `
[delivery]
adapter = "discard"
`}${o.senderRate === undefined ? "" : `
[[policies]]
rule = "rate_limit"
rate = ${o.senderRate}
window = "60s"
dimensions = ["sender"]
`}`

/** The fingerprint of the certificate the server presents after STARTTLS, on a raw socket of its own. */
const presentedCert = (port: number) =>
  Effect.callback<string, Error>((resume) => {
    const socket = netConnect({ port, host: "127.0.0.1" })
    let buffer = ""
    let step: "greeting" | "ehlo" | "starttls" = "greeting"
    const fail = (e: Error) => resume(Effect.fail(e))
    const onData = (chunk: Buffer) => {
      buffer += chunk.toString("latin1")
      // Act on complete final reply lines only ("250 ", not "250-").
      const finalLine = /(^|\r\n)(\d{3}) [^\r\n]*\r\n$/.exec(buffer)
      if (finalLine === null) return
      buffer = ""
      if (step === "greeting") {
        step = "ehlo"
        socket.write("EHLO probe.test\r\n")
      } else if (step === "ehlo") {
        step = "starttls"
        socket.write("STARTTLS\r\n")
      } else {
        if (finalLine[2] !== "220") return fail(new Error(`STARTTLS refused: ${finalLine[0]}`))
        socket.off("data", onData)
        const secure = tlsConnect({ socket, rejectUnauthorized: false, servername: "mx.test" }, () => {
          resume(Effect.succeed(secure.getPeerX509Certificate()!.fingerprint256))
          secure.destroy()
        })
        secure.once("error", fail)
      }
    }
    socket.on("data", onData)
    socket.once("error", fail)
  })

const fingerprint = (path: string) => new X509Certificate(readFileSync(path)).fingerprint256

describe.skipIf(!hasOpenssl)("SIGHUP reload", () => {
  it.live("applies domains, limits and the certificate to new connections; an open one keeps working", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir()
      const [certA, certB] = ["a", "b"].map((n) => {
        mkdirSync(join(dir, n))
        return selfSignedCert(join(dir, n))
      }) as [{ cert: string; key: string }, { cert: string; key: string }]
      const file = join(dir, "incoming.toml")
      writeFileSync(file, config({ dir, domains: ["a.test"], cert: certA, maxRecipients: 5 }))
      const server = yield* serve(["--config", file])
      // A sender per message, so the per-sender rate limit added below only sees `busy@`.
      let n = 0
      const send = (to: string) => SmtpClient.send({ port: server.port, from: `x${++n}@remote.test`, to: [to], data: "Subject: r\r\n\r\nx\r\n" })

      assert.strictEqual((yield* send("u@a.test")).code, 250)
      assert.strictEqual((yield* send("u@b.test")).code, 554)
      assert.strictEqual(yield* presentedCert(server.port), fingerprint(certA.cert))

      // A connection opened before the reload, mid-conversation.
      const old = yield* SmtpClient.connect({ port: server.port })
      yield* old.command("EHLO old.test")
      assert.strictEqual((yield* old.command("MAIL FROM:<x@remote.test>")).code, 250)

      writeFileSync(file, config({ dir, domains: ["a.test", "b.test"], cert: certB, maxRecipients: 1, senderRate: 2 }))
      yield* server.signal("SIGHUP")
      yield* server.waitFor(/configuration reloaded/)

      // The policy added to the file applies: a sender past 2 messages a minute is deferred.
      const bySender = (n: number) => SmtpClient.send({ port: server.port, from: "busy@remote.test", to: [`u${n}@a.test`], data: "x\r\n" })
      assert.deepStrictEqual([(yield* bySender(1)).code, (yield* bySender(2)).code, (yield* bySender(3)).code], [250, 250, 450])

      // New connections: the new domain is ours, the new limit and the new certificate apply.
      assert.strictEqual((yield* send("u@b.test")).code, 250)
      assert.strictEqual(yield* presentedCert(server.port), fingerprint(certB.cert))
      const fresh = yield* SmtpClient.connect({ port: server.port })
      yield* fresh.command("EHLO new.test")
      yield* fresh.command("MAIL FROM:<fresh@remote.test>")
      assert.strictEqual((yield* fresh.command("RCPT TO:<one@a.test>")).code, 250)
      assert.strictEqual((yield* fresh.command("RCPT TO:<two@a.test>")).code, 452, "max_recipients = 1 after the reload")

      // The old connection was not dropped and completes its transaction.
      assert.strictEqual((yield* old.command("RCPT TO:<u@a.test>")).code, 250)
      assert.strictEqual((yield* old.command("DATA")).code, 354)
      yield* old.write("Subject: old\r\n\r\nstill here\r\n.\r\n")
      assert.strictEqual((yield* old.read).code, 250)

      // An invalid file is refused; the running configuration stays.
      writeFileSync(file, `${config({ dir, domains: ["c.test"], cert: certA, maxRecipients: 5 })}\nbogus_key = 1\n`)
      yield* server.signal("SIGHUP")
      yield* server.waitFor(/reload failed; the running configuration stays/)
      assert.strictEqual((yield* send("u@c.test")).code, 554)
      assert.strictEqual((yield* send("u@b.test")).code, 250)

      // An address change cannot be applied by a reload: it is reported.
      writeFileSync(file, config({ dir, domains: ["a.test", "b.test"], cert: certB, maxRecipients: 1, host: "::1" }))
      yield* server.signal("SIGHUP")
      yield* server.waitFor(/needs a restart: mx: address/)

      // Delivery adapters and routes from the file are rebuilt: b.test now has a sync route, so
      // its message is delivered before the reply and nothing is queued.
      assert.match((yield* send("u@b.test")).text, /queued as/)
      writeFileSync(file, config({ dir, domains: ["a.test", "b.test"], cert: certB, maxRecipients: 1, routed: true }))
      yield* server.signal("SIGHUP")
      yield* server.waitFor(/delivery adapters and routes reloaded/)
      assert.match((yield* send("u@b.test")).text, /^2\.0\.0 delivered as /)
      assert.match((yield* send("u@a.test")).text, /queued as/)

      yield* server.signal("SIGTERM")
      assert.strictEqual(yield* server.exitCode, 0)
    }), { timeout: 60_000 })
})
