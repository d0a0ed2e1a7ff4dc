/**
 * Streaming DATA: a 50 MiB message is accepted and delivered while the server's peak RSS grows
 * by less than 32 MiB. Measured on the server process (a child), from /proc: VmRSS after a
 * warm-up message (the peak reset there) against VmHWM (the peak) after the big one. The client streams the body in
 * 64 KiB chunks with backpressure so it never holds the message either.
 */
import { statSync } from "node:fs"
import { join } from "node:path"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { SmtpClient, TestIncoming } from "../../src/testing/index.ts"
import { procKb, resetPeak, streamBody } from "../support/largeMessage.ts"
import { serve, waitForMaildir } from "../support/server.ts"

const MiB = 1024 * 1024



describe("large messages", () => {
  it.live("a 50 MiB message streams through with < 32 MiB RSS growth", () =>
    Effect.gen(function*() {
      const dir = yield* TestIncoming.tempDir()
      const maildir = join(dir, "mail")
      const server = yield* serve([
        "--listen",
        "127.0.0.1:0",
        "--maildir",
        maildir,
        "--data-dir",
        join(dir, "data"),
        "--max-size",
        String(60 * MiB)
      ])
      const pid = server.proc.pid!
      // Warm up every code path (spool, queue, delivery) before the baseline.
      const warm = yield* SmtpClient.send({ port: server.port, from: "a@remote.test", to: ["user@localhost"], data: "Subject: warm\r\n\r\nhi\r\n" })
      assert.strictEqual(warm.code, 250)
      resetPeak(pid)
      const before = procKb(pid, "VmRSS")

      const client = yield* SmtpClient.connect({ port: server.port, timeoutMs: 60_000 })
      yield* client.command("EHLO big.test")
      assert.strictEqual((yield* client.command("MAIL FROM:<a@remote.test> SIZE=52428800")).code, 250)
      assert.strictEqual((yield* client.command("RCPT TO:<user@localhost>")).code, 250)
      assert.strictEqual((yield* client.command("DATA")).code, 354)
      yield* client.write("Subject: big\r\n\r\n")
      yield* streamBody(client, 50 * MiB)
      const reply = yield* client.read
      assert.strictEqual(reply.code, 250, reply.lines.join(" / "))


      // Wait for the Maildir delivery (it streams the body back out).
      const isBig = (f: string) => statSync(f).size > 50 * MiB
      const big = (yield* waitForMaildir(maildir, "user@localhost", (files) => files.some(isBig))).find(isBig)
      assert.isDefined(big, "the 50 MiB message was not delivered")
      const peak = procKb(pid, "VmHWM")
      const growthMiB = (peak - before) / 1024
      console.log(`50 MiB message: server RSS ${(before / 1024).toFixed(1)} MiB before, peak ${(peak / 1024).toFixed(1)} MiB, growth ${growthMiB.toFixed(1)} MiB`)
      assert.isBelow(growthMiB, 32)
    }), { timeout: 120_000 })
})
