/**
 * `npm run docs:screenshots`: the dev inbox screenshots in docs/ (shown in the README), taken
 * from a real inbox. It starts `DevInbox.layer` in-process on free loopback ports with a
 * temporary data directory, sends a handful of realistic messages over SMTP with nodemailer
 * (the way an app would), and photographs the page in Debian's Chromium with playwright-core:
 *
 * - docs/dev-inbox-list.png — the list with a transactional HTML message open (light);
 * - docs/dev-inbox-message.png — a message with attachments, image preview included (dark).
 *
 * Fonts: the page prefers Inter, then the system UI font; `apt-get install fonts-inter
 * fonts-noto-color-emoji` for the look of the committed images. Needs /usr/bin/chromium.
 */
import { writeFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { Effect, References } from "effect"
import nodemailer from "nodemailer"
import type Mail from "nodemailer/lib/mailer/index.js"
import { DevInbox } from "../src/testing/index.ts"
import * as Chromium from "../test/support/chromium.ts"

const out = (name: string) => fileURLToPath(new URL(`../docs/${name}`, import.meta.url))

const welcomeHtml = `<!DOCTYPE html>
<html><body style="margin:0;background:#f4f5f7;font-family:Helvetica,Arial,sans-serif;color:#1f2430">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="background:#f4f5f7;padding:32px 0">
<tr><td align="center">
<table role="presentation" width="560" cellpadding="0" cellspacing="0" style="background:#ffffff;border-radius:10px;overflow:hidden">
<tr><td style="background:#0f766e;padding:22px 32px;color:#ffffff;font-size:20px;font-weight:bold;letter-spacing:.3px">◆ Acme Cloud</td></tr>
<tr><td style="padding:32px">
<h1 style="margin:0 0 12px;font-size:22px">Welcome aboard, Maya!</h1>
<p style="margin:0 0 16px;line-height:1.6;color:#4a5160">Your workspace <b>maya-labs</b> is ready. Confirm your email address to start inviting your team.</p>
<p style="margin:24px 0"><a href="https://acme.example/confirm?token=8f3c1a" style="background:#0f766e;color:#ffffff;text-decoration:none;padding:12px 22px;border-radius:6px;font-weight:bold;display:inline-block">Confirm my email</a></p>
<p style="margin:0 0 8px;line-height:1.6;color:#4a5160">Or paste this link into your browser:<br><span style="color:#0f766e">https://acme.example/confirm?token=8f3c1a</span></p>
<hr style="border:0;border-top:1px solid #e6e8ec;margin:28px 0">
<p style="margin:0;font-size:12px;color:#8a90a0">You received this because you signed up at acme.example. Acme Cloud, 1 Market St, San Francisco.</p>
</td></tr></table>
</td></tr></table>
</body></html>`

const welcomeText = "Welcome aboard, Maya!\n\nYour workspace maya-labs is ready. Confirm your email address:\nhttps://acme.example/confirm?token=8f3c1a\n"

/** A small chart as a PNG, drawn by the same Chromium (an image attachment to preview). */
const chartPng = (context: Chromium.Launched["context"]) =>
  Effect.promise(async () => {
    const page = await context.newPage()
    await page.setViewportSize({ width: 480, height: 300 })
    await page.setContent(`<body style="margin:0;background:linear-gradient(135deg,#eef2ff,#fdf2f8);font-family:sans-serif">
      <svg width="480" height="300" viewBox="0 0 480 300"><g fill="#6366f1">
      ${[120, 160, 90, 200, 170, 230, 210].map((h, i) => `<rect x="${40 + i * 60}" y="${260 - h}" width="36" height="${h}" rx="6" opacity="${0.55 + i * 0.06}"/>`).join("")}
      </g><text x="40" y="40" font-size="20" fill="#312e81" font-weight="bold">Weekly signups</text></svg></body>`)
    const png = await page.screenshot({ type: "png" })
    await page.close()
    return png
  })

const messages = (chart: Buffer): ReadonlyArray<{ readonly mail: Mail.Options; readonly read?: boolean }> => [
  { mail: { from: "Nightly build <ci@acme.example>", to: "dev-team@acme.example", subject: "✅ Build #4182 passed on main", text: "All 1,284 tests passed in 6m 12s.\nhttps://ci.acme.example/builds/4182\n" }, read: true },
  { mail: { from: "Acme Billing <billing@acme.example>", to: "Jonas Weber <jonas@example.org>", subject: "Your invoice INV-2024-0117", text: "Hi Jonas,\n\nyour invoice for March is attached. Total: 49.00 EUR, due April 14.\n\nThanks,\nAcme Billing\n", attachments: [{ filename: "INV-2024-0117.pdf", content: Buffer.from("%PDF-1.4\n% a tiny placeholder invoice\n"), contentType: "application/pdf" }] }, read: true },
  { mail: { from: "Acme Security <security@acme.example>", to: "priya@example.org", subject: "New sign-in from Firefox on Linux", text: "We noticed a new sign-in to your account from Berlin, Germany.\nIf this was you, you can ignore this message.\n" } },
  { mail: { from: "Lena Fischer <lena@acme.example>", to: "Team <team@acme.example>", cc: "Sam Ortiz <sam@acme.example>", subject: "Weekly metrics — signups up 18 %", text: "Hi all,\n\nthe chart for this week is attached: signups are up 18 % on last week, mostly from the new onboarding flow.\n\nLena\n", attachments: [{ filename: "signups-week-14.png", content: chart }, { filename: "raw-numbers.csv", content: "day,signups\nmon,120\ntue,160\nwed,90\nthu,200\nfri,170\nsat,230\nsun,210\n", contentType: "text/csv" }] } },
  { mail: { from: "Acme <no-reply@acme.example>", to: "tomasz@example.org", subject: "Reset your password", text: "Someone asked to reset the password of your account.\nUse this link within 30 minutes: https://acme.example/reset?t=c0ffee\n" } },
  { mail: { from: "Shop <orders@shop.example>", to: "Zoë Martin <zoe@example.fr>", subject: "Grüße! Your order #20931 has shipped 📦", text: "Bonjour Zoë,\n\nyour order #20931 is on its way. Tracking: 1Z999AA10123456784\n" } },
  { mail: { from: "Acme Cloud <welcome@acme.example>", to: "Maya Chen <maya@example.com>", subject: "Welcome to Acme Cloud, Maya!", html: welcomeHtml, text: welcomeText } }
]

const program = Effect.gen(function*() {
  const inbox = yield* DevInbox.TestInbox
  const browser = yield* Effect.acquireRelease(
    Effect.promise(() => Chromium.launch({ viewport: { width: 1360, height: 820 }, deviceScaleFactor: 2 })),
    (b) => Effect.promise(b.close)
  )
  const chart = yield* chartPng(browser.context)
  const transport = nodemailer.createTransport({ host: "127.0.0.1", port: inbox.smtpPort, secure: false, ignoreTLS: true, auth: { user: "app", pass: "secret" } })
  for (const { mail, read } of messages(chart)) {
    yield* Effect.promise(() => transport.sendMail(mail))
    const m = yield* inbox.client.wait(`subject:${JSON.stringify(String(mail.subject))}`)
    if (read === true) yield* inbox.client.setUnread(m.id, false)
  }
  transport.close()

  const shoot = (colorScheme: "light" | "dark", subject: string, file: string, prepare?: (page: import("playwright-core").Page) => Promise<void>) =>
    Effect.promise(async () => {
      const page = await browser.context.newPage()
      await page.emulateMedia({ colorScheme })
      await page.goto(inbox.url)
      await page.waitForSelector("#live.on")
      await page.waitForSelector(".row")
      await page.click(`.row:has(.row-subject span:text-is(${JSON.stringify(subject)}))`)
      await page.waitForSelector(".message h1")
      await prepare?.(page)
      await page.waitForTimeout(600)
      writeFileSync(out(file), await page.screenshot({ type: "png" }))
      await page.close()
      console.log(`wrote docs/${file}`)
    })

  yield* shoot("light", "Welcome to Acme Cloud, Maya!", "dev-inbox-list.png", async (page) => {
    await page.frameLocator(".frame-wrap iframe").locator("h1").waitFor()
  })
  yield* shoot("dark", "Weekly metrics — signups up 18 %", "dev-inbox-message.png", async (page) => {
    await page.waitForSelector(".attachment img")
    await page.locator(".attachment img").evaluate((img) => (img as unknown as { decode(): Promise<void> }).decode())
  })
})

if (!Chromium.available) {
  console.error(`${Chromium.executablePath} is not installed: apt-get install chromium`)
  process.exit(1)
}

await Effect.runPromise(
  Effect.scoped(program).pipe(Effect.provide(DevInbox.layer()), Effect.provideService(References.MinimumLogLevel, "Warn"))
)
