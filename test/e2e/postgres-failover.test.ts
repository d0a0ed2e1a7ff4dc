/**
 * Failover on the shared PostgreSQL queue, as whole processes: two `incoming serve` nodes on one
 * database take load side by side; one is SIGKILLed mid-load. Node a's deliveries never finish
 * (its LMTP server is silent), so whatever it claimed is in flight under its lease when it dies;
 * node b delivers to the Maildir. Every message that got a 250 from either node must end up
 * there: the survivor takes the dead node's leased and queued messages over once the leases
 * (3 s here) expire; nothing is delivered twice. `incoming queue stats --config` reads the shared
 * queue (and the leases per node) from the survivor's config.
 *
 * Bounded: 6 sessions for about 5 s of load, then at most 90 s for the deliveries.
 */
import { writeFileSync } from "node:fs"
import { createServer, type Server, type Socket } from "node:net"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { maildirTokens, tokenHeader } from "../../src/testing/CrashHarness.ts"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import * as Pg from "../support/postgres.ts"
import { runCli, serve } from "../support/server.ts"

const SESSIONS = 6

/**
 * `stuckOn`: deliver over LMTP to this port, where nothing ever answers, so every message the
 * node claims stays in flight (its lease renewed by the heartbeat) until the node dies.
 */
const config = (dir: string, nodeId: string, stuckOn?: number) => {
  const file = join(dir, `${nodeId}.toml`)
  writeFileSync(file, [
    `domains = ["localhost"]`,
    `[queue]\nbackend = "postgres"\nurl = "\${DATABASE_URL}"\nnode_id = "${nodeId}"\npool_size = 4`,
    `[delivery]\nlease = "3s"\nworkers = 2\ntimeout = "5m"`,
    ...(stuckOn !== undefined
      ? [`[adapters.stuck]\ntype = "lmtp"\nhost = "127.0.0.1"\nport = ${stuckOn}`, `[[routes]]\nmatch = ["*"]\nadapter = "stuck"`]
      : [])
  ].join("\n"))
  return file
}

/** A TCP server that accepts connections and never says a word; closed with the scope. */
const silentServer = Effect.acquireRelease(
  Effect.callback<Server>((resume) => {
    const sockets = new Set<Socket>()
    const server = createServer((s) => {
      sockets.add(s)
      s.on("error", () => {})
      s.on("close", () => sockets.delete(s))
    })
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed(Object.assign(server, { sockets }))))
  }),
  (server) =>
    Effect.callback<void>((resume) => {
      for (const s of (server as Server & { sockets: Set<Socket> }).sockets) s.destroy()
      server.close(() => resume(Effect.void))
    })
)

describe.skipIf(!Pg.available)("PostgreSQL queue failover (two serve processes, one SIGKILLed)", () => {
  it.live("every message that got 250 from either node is delivered; the survivor takes over", () =>
    Effect.gen(function*() {
      const url = yield* Pg.freshDatabase
      const dir = yield* TestIncoming.tempDir("incoming-pg-failover-")
      const mail = join(dir, "mail")
      const env = { DATABASE_URL: url }
      // Node a claims and never finishes a delivery (its LMTP server is silent): every message it
      // takes is in flight under its lease when it dies, and only node b can deliver it.
      const hole = yield* silentServer
      const holePort = (hole.address() as { port: number }).port
      const a = yield* serve(["--config", config(dir, "node-a", holePort), "--listen", "127.0.0.1:0", "--data-dir", join(dir, "data-a")], dir, env)
      const b = yield* serve(["--config", config(dir, "node-b"), "--listen", "127.0.0.1:0", "--maildir", mail, "--data-dir", join(dir, "data-b")], dir, env)

      const acknowledged = new Set<string>()
      let stop = false
      let refused = 0
      const sender = (s: number) =>
        Effect.gen(function*() {
          for (let n = 0; !stop; n++) {
            const token = `s${s}n${n}`
            // Sessions alternate between the nodes, as DNS round robin would spread them.
            const port = (s + n) % 2 === 0 ? a.port : b.port
            const reply = yield* SmtpClient.send({
              port,
              from: "sender@example.net",
              to: [`user${n % 3}@localhost`],
              data: `Subject: failover\r\n${tokenHeader}: ${token}\r\n\r\n${"x".repeat(1024)}\r\n`
            }).pipe(Effect.option)
            if (reply._tag === "Some" && reply.value.code === 250) acknowledged.add(token)
            else refused++
          }
        })
      const senders = yield* Effect.forEach(Array.from({ length: SESSIONS }, (_, i) => i), (i) => Effect.forkChild(sender(i)))
      yield* Effect.sleep("2500 millis")
      const atKill = acknowledged.size
      const before = yield* runCli(["queue", "stats", "--json", "--config", join(dir, "node-b.toml")], { cwd: dir, env })
      const leasesOfA = (JSON.parse(before.stdout) as { leases: ReadonlyArray<{ node: string; leases: number }> }).leases
        .find((l) => l.node === "node-a")?.leases ?? 0
      yield* a.signal("SIGKILL")
      yield* a.exitCode
      yield* Effect.sleep("2500 millis")
      stop = true
      yield* Fiber.joinAll(senders)
      assert.isAbove(atKill, 20, "the load barely reached node a before the kill")
      assert.isAbove(leasesOfA, 0, "node a held leases (deliveries in flight) when it was killed")

      const stats = yield* runCli(["queue", "stats", "--config", join(dir, "node-b.toml")], { cwd: dir, env })
      console.info(`queue stats right after the load:\n${stats.stdout}`)
      assert.strictEqual(stats.code, 0, stats.stderr)
      assert.include(stats.stdout, "postgres")

      // The survivor delivers its own mail and, once the dead node's leases expire, that too.
      let delivered: ReadonlyMap<string, number> = new Map()
      const deadline = Date.now() + 90_000
      while (Date.now() < deadline) {
        delivered = yield* maildirTokens(mail)
        if ([...acknowledged].every((t) => delivered.has(t))) break
        yield* Effect.sleep("500 millis")
      }
      const lost = [...acknowledged].filter((t) => !delivered.has(t))
      const duplicated = [...delivered].filter(([, n]) => n > 1).map(([t]) => t)
      console.info(
        `failover: ${acknowledged.size} messages got 250 (${atKill} before the SIGKILL of node a, which then held ${leasesOfA} lease(s)), ${refused} refused or cut off, ` +
          `${lost.length} lost, ${duplicated.length} delivered twice (in flight at the kill)`
      )
      assert.deepStrictEqual(lost, [], "a message that got 250 was never delivered")
      // Node a delivered nothing, so nothing may be delivered twice.
      assert.deepStrictEqual(duplicated, [])
      const after = yield* runCli(["queue", "stats", "--json", "--config", join(dir, "node-b.toml")], { cwd: dir, env })
      const parsed = JSON.parse(after.stdout) as { depth: number; leases: ReadonlyArray<{ node: string }> }
      assert.strictEqual(parsed.depth, 0)
      assert.isFalse(parsed.leases.some((l) => l.node === "node-a"), "node a holds no lease any more")
    }), { timeout: 240_000 })
})

if (!Pg.available) {
  describe("PostgreSQL queue failover", () => {
    it.skip(Pg.skipMessage, () => {})
  })
}
