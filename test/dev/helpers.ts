/**
 * Shared by the dev inbox tests: sending with nodemailer (the SMTP client most Node apps use)
 * and reading Server-Sent Events from the inbox with `fetch`.
 */
import { Effect } from "effect"
import nodemailer from "nodemailer"
import type Mail from "nodemailer/lib/mailer/index.js"

export interface Sent {
  readonly response: string
  readonly accepted: ReadonlyArray<string>
  readonly rejected: ReadonlyArray<string>
}

/** Sends one message to the inbox's SMTP port; fails with nodemailer's error. */
export const sendMail = (
  port: number,
  mail: Mail.Options,
  options: { readonly auth?: { readonly user: string; readonly pass: string }; readonly requireTLS?: boolean } = {}
): Effect.Effect<Sent, Error> =>
  Effect.tryPromise({
    try: async () => {
      const transport = nodemailer.createTransport({
        host: "127.0.0.1",
        port,
        secure: false,
        ...(options.requireTLS === true ? { requireTLS: true, tls: { rejectUnauthorized: false } } : { ignoreTLS: true }),
        ...(options.auth === undefined ? {} : { auth: options.auth })
      })
      try {
        const info = await transport.sendMail(mail)
        return {
          response: info.response,
          accepted: info.accepted.map(String),
          rejected: info.rejected.map(String)
        }
      } finally {
        transport.close()
      }
    },
    catch: (e) => (e instanceof Error ? e : new Error(String(e)))
  })

export interface EventReader {
  /** Resolves with the data of the next event named `name` (skipping others), or fails after `timeoutMs`. */
  readonly next: (name: string, timeoutMs?: number) => Effect.Effect<string, Error>
}

/** Opens `/api/events` for the scope's lifetime. */
export const events = (url: string) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const abort = new AbortController()
      const response = await fetch(`${url}/api/events`, { signal: abort.signal })
      const reader = response.body!.getReader()
      const decoder = new TextDecoder()
      let buffer = ""
      const next = (name: string, timeoutMs = 5_000) =>
        Effect.tryPromise({
          try: async () => {
            for (;;) {
              const end = buffer.indexOf("\n\n")
              if (end >= 0) {
                const frame = buffer.slice(0, end)
                buffer = buffer.slice(end + 2)
                const event = /^event: (.*)$/m.exec(frame)?.[1]
                const data = /^data: (.*)$/m.exec(frame)?.[1] ?? ""
                if (event === name) return data
                continue
              }
              const chunk = await reader.read()
              if (chunk.done) throw new Error(`event stream ended before "${name}"`)
              buffer += decoder.decode(chunk.value, { stream: true })
            }
          },
          catch: (e) => (e instanceof Error ? e : new Error(String(e)))
        }).pipe(Effect.timeoutOrElse({ duration: timeoutMs, orElse: () => Effect.fail(new Error(`no "${name}" event within ${timeoutMs} ms`)) }))
      return { reader: { next } satisfies EventReader, abort }
    }),
    ({ abort }) => Effect.sync(() => abort.abort())
  ).pipe(Effect.map(({ reader }) => reader))
