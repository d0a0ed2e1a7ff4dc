/**
 * Idle connections for the memory probe of `npm run bench -- --rss N`: opens N SMTP connections
 * to 127.0.0.1:port, spread over several loopback source addresses (127.0.0.1, .2, …) so that a
 * per-IP connection cap does not refuse them, reads each greeting and holds them open until
 * `close()`. Bounded: at most 5,000 connections, 100 handshakes in flight, 60 s to open them all.
 */
import net from "node:net"

export interface IdleConnections {
  /** Connections that got a 220 greeting and are held open. */
  readonly greeted: number
  /** Connections refused, closed or answered with anything but 220. */
  readonly failed: number
  readonly openMs: number
  readonly close: () => void
}

export const openIdle = (port: number, count: number, sources: number): Promise<IdleConnections> =>
  new Promise((resolve) => {
    if (!(count > 0 && count <= 5000 && sources >= 1 && sources <= 250)) throw new Error("openIdle: 1-5000 connections from 1-250 sources")
    const t0 = Date.now()
    const sockets: Array<net.Socket> = []
    let started = 0
    let inflight = 0
    let greeted = 0
    let failed = 0
    let ready = false
    const finish = (): void => {
      if (ready) return
      ready = true
      clearTimeout(cap)
      resolve({ greeted, failed, openMs: Date.now() - t0, close: () => sockets.forEach((s) => s.destroy()) })
    }
    const openOne = (): void => {
      const localAddress = `127.0.0.${(started % sources) + 1}`
      started++
      inflight++
      const s = net.connect({ host: "127.0.0.1", port, localAddress })
      sockets.push(s)
      let done = false
      const fin = (ok: boolean): void => {
        if (done) return
        done = true
        inflight--
        if (ok) greeted++
        else failed++
        pump()
      }
      s.once("data", (d: Buffer) => fin(d.toString("latin1").startsWith("220")))
      s.on("error", () => fin(false))
      s.on("close", () => fin(false))
    }
    const pump = (): void => {
      while (started < count && inflight < 100) openOne()
      if (greeted + failed >= count) finish()
    }
    const cap = setTimeout(finish, 60_000)
    pump()
  })
