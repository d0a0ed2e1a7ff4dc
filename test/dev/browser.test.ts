/**
 * The dev inbox page in a real browser: Debian's Chromium driven by playwright-core, one
 * browser for the file (a fresh profile directory), mail sent over SMTP with nodemailer.
 *
 * - A message sent while the page is open shows up without a reload (Server-Sent Events).
 * - Clicking it shows its HTML in the sandboxed frame, `cid:` image included.
 * - A message whose HTML (and subject, and attachment name) holds `<script>alert(1)</script>`
 *   and `onerror=` handlers never opens a dialog, whichever view is shown — and the same markup
 *   in an unsandboxed page does, so the check can fail.
 * - Search narrows the list; an attachment downloads with the bytes that were sent; j / k,
 *   Enter and Delete work; the theme toggles.
 *
 * Skipped, saying so, where /usr/bin/chromium is absent (`.ci/run` installs it).
 */
import { createHash, randomBytes } from "node:crypto"
import { readFileSync } from "node:fs"
import { assert, describe, layer } from "@effect/vitest"
import { Context, Effect, Layer, Redacted } from "effect"
import type { BrowserContext, Page } from "playwright-core"
import { DevInbox } from "../../src/testing/index.ts"
import * as Chromium from "../support/chromium.ts"
import { sendMail } from "./helpers.ts"

if (!Chromium.available) {
  console.warn(`dev inbox browser tests SKIPPED: ${Chromium.executablePath} is not installed (apt-get install chromium; .ci/run does it)`)
}

class Browser extends Context.Service<Browser, { readonly context: BrowserContext }>()("test/dev/Browser") {}

const browserLayer = Layer.effect(
  Browser,
  Effect.map(
    Effect.acquireRelease(Effect.promise(() => Chromium.launch()), (launched) => Effect.promise(launched.close)),
    ({ context }) => Browser.of({ context })
  )
)

const png = Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAYAAABytg0kAAAAFklEQVR42mNk+M9Qz0AEYBxVSF+FAP5FDvcfRYWgAAAAAElFTkSuQmCC",
  "base64"
)

interface Opened {
  readonly page: Page
  readonly errors: Array<string>
  readonly dialogs: Array<string>
}

/** A fresh page on the inbox, live (its event stream is connected); closed with the scope. */
const openInbox = (url: string) =>
  Effect.acquireRelease(
    Effect.gen(function*() {
      const { context } = yield* Browser
      return yield* Effect.promise(async (): Promise<Opened> => {
        const page = await context.newPage()
        const errors: Array<string> = []
        const dialogs: Array<string> = []
        page.on("pageerror", (e) => errors.push(e.message))
        page.on("dialog", (d) => {
          dialogs.push(d.message())
          void d.dismiss()
        })
        await page.goto(url)
        await page.waitForSelector("#live.on")
        return { page, errors, dialogs }
      })
    }),
    ({ page }) => Effect.promise(() => page.close())
  )

/**
 * The page's `document` as the functions Playwright runs in the browser see it (the project's
 * types are Node's, not the DOM's). Each such function is self-contained — it is serialised —
 * and is a function, not a string: the page's CSP forbids evaluating strings.
 */
interface WithDom {
  readonly document: {
    querySelectorAll(selector: string): ArrayLike<{ readonly textContent: string | null }>
    readonly activeElement: { readonly id: string } | null
  }
}

const rowFor = (subject: string) => `.row:has(.row-subject span:text-is(${JSON.stringify(subject)}))`

describe.skipIf(!Chromium.available)("dev inbox page (Chromium)", () => {
  layer(Layer.mergeAll(DevInbox.layer(), browserLayer), { timeout: "90 seconds", excludeTestServices: true })((it) => {
    it.effect("a message sent over SMTP shows up in the open page without a reload", () =>
      Effect.gen(function*() {
        const inbox = yield* DevInbox.TestInbox
        const { page, errors } = yield* openInbox(inbox.url)
        const navigations = yield* Effect.promise(async () => {
          let n = 0
          page.on("framenavigated", (f) => {
            if (f === page.mainFrame()) n++
          })
          await page.evaluate(() => Object.assign(globalThis, { stillTheSamePage: true }))
          return () => n
        })
        const sentAt = Date.now()
        yield* sendMail(inbox.smtpPort, { from: "Shop <shop@app.test>", to: "live@example.com", subject: "Arrives live", text: "hi" })
        yield* Effect.promise(() => page.waitForSelector(rowFor("Arrives live"), { timeout: 5_000 }))
        const shownAfter = Date.now() - sentAt
        assert.strictEqual(navigations(), 0)
        assert.isTrue(yield* Effect.promise(() => page.evaluate(() => (globalThis as { stillTheSamePage?: boolean }).stillTheSamePage === true)))
        assert.strictEqual(yield* Effect.promise(() => page.textContent(`${rowFor("Arrives live")} .row-from`)), "Shop")
        assert.isTrue(yield* Effect.promise(() => page.locator(rowFor("Arrives live")).evaluate((el) => el.classList.contains("unread"))))
        assert.match(yield* Effect.promise(() => page.title()), /^\(\d+\) incoming dev$/)
        assert.deepStrictEqual(errors, [])
        console.log(`new mail in the open page ${shownAfter} ms after nodemailer started sending`)
      }).pipe(Effect.scoped))

    it.effect("clicking a message shows its HTML in the sandboxed frame, cid: image included", () =>
      Effect.gen(function*() {
        const inbox = yield* DevInbox.TestInbox
        yield* sendMail(inbox.smtpPort, {
          from: "news@app.test",
          to: "reader@example.com",
          subject: "Rich HTML",
          html: "<h1 id=\"headline\">Hello from HTML</h1><img id=\"logo\" src=\"cid:logo@news\" width=\"20\" height=\"20\">",
          attachments: [{ filename: "logo.png", content: png, cid: "logo@news" }]
        })
        yield* inbox.client.wait("subject:\"rich html\"")
        const { page, errors } = yield* openInbox(inbox.url)
        const result = yield* Effect.promise(async () => {
          await page.click(rowFor("Rich HTML"))
          await page.waitForSelector(".message h1:text-is(\"Rich HTML\")")
          const iframe = page.locator(".frame-wrap iframe")
          const sandbox = await iframe.getAttribute("sandbox")
          const frame = page.frameLocator(".frame-wrap iframe")
          const headline = await frame.locator("#headline").textContent()
          await frame.locator("#logo").evaluate((img) => (img as { complete: boolean }).complete || new Promise((r) => img.addEventListener("load", r)))
          const logoWidth = await frame.locator("#logo").evaluate((img) => (img as { naturalWidth: number }).naturalWidth)
          const unread = await page.locator(rowFor("Rich HTML")).evaluate((el) => el.classList.contains("unread"))
          return { sandbox, headline, logoWidth, unread }
        })
        assert.strictEqual(result.sandbox, "allow-popups allow-popups-to-escape-sandbox")
        assert.notInclude(result.sandbox ?? "", "allow-scripts")
        assert.notInclude(result.sandbox ?? "", "allow-same-origin")
        assert.strictEqual(result.headline, "Hello from HTML")
        assert.strictEqual(result.logoWidth, 2, "the cid: image was served from the message")
        // Opening marks it read (the row follows through the event stream).
        yield* Effect.promise(() => page.waitForSelector(`${rowFor("Rich HTML")}:not(.unread)`))
        assert.deepStrictEqual(errors, [])
      }).pipe(Effect.scoped))

    it.effect("scripts and onerror= handlers in a message never open a dialog", () =>
      Effect.gen(function*() {
        const inbox = yield* DevInbox.TestInbox
        const hostile = "<script>alert(1)</script><img src=\"x\" onerror=\"alert(2)\"><svg onload=\"alert(3)\"></svg>" +
          "<body onload=\"alert(4)\"><a href=\"javascript:alert(5)\" id=\"js\">x</a><iframe srcdoc=\"<script>alert(6)</script>\"></iframe>"
        yield* sendMail(inbox.smtpPort, {
          from: "\"<img src=x onerror=alert(7)>\" <evil@app.test>",
          to: "victim@example.com",
          subject: "<script>alert(8)</script><img src=x onerror=alert(9)>",
          html: hostile,
          text: "<script>alert(10)</script>",
          attachments: [{ filename: "<img src=x onerror=alert(11)>.html", content: hostile, contentType: "text/html" }]
        })
        const m = yield* inbox.client.wait("from:evil@app.test")
        const { page, dialogs, errors } = yield* openInbox(inbox.url)
        yield* Effect.promise(async () => {
          const row = page.locator(".row", { hasText: "alert(8)" })
          await row.click()
          await page.waitForSelector(".frame-wrap iframe")
          const frame = page.frames().find((f) => f.url().endsWith(`/api/messages/${m.id}/html`))
          await (frame ?? page.mainFrame()).waitForLoadState("load")
          // The javascript: link, clicked, navigates nowhere that runs script either.
          await page.frameLocator(".frame-wrap iframe").locator("#js").click({ timeout: 2_000 }).catch(() => undefined)
          for (const tab of ["Text", "Headers", "Source", "HTML"]) {
            await page.click(`.tab:text-is("${tab}")`)
            await page.waitForTimeout(150)
          }
          // The attachment's HTML opened directly: served as a download, sandboxed by its CSP.
          const part = await page.request.get(`${inbox.url}/api/messages/${m.id}/parts/0`)
          assert.match(part.headers()["content-disposition"] ?? "", /^attachment;/)
          assert.include(part.headers()["content-security-policy"] ?? "", "sandbox")
          // The frame's document opened on its own has the CSP sandbox too.
          const direct = await page.context().newPage()
          direct.on("dialog", (d) => {
            dialogs.push(`direct: ${d.message()}`)
            void d.dismiss()
          })
          await direct.goto(`${inbox.url}/api/messages/${m.id}/html`)
          await direct.waitForLoadState("load")
          await direct.waitForTimeout(300)
          await direct.close()
        })
        assert.deepStrictEqual(dialogs, [])
        assert.include(yield* Effect.promise(() => page.textContent(".message h1")), "<script>alert(8)</script>")
        assert.deepStrictEqual(errors, [])

        // The control: the same markup in a page without the sandbox does open dialogs, so the
        // listener above would have seen them.
        const { context } = yield* Browser
        const seen = yield* Effect.promise(async () => {
          const plain = await context.newPage()
          const got: Array<string> = []
          plain.on("dialog", (d) => {
            got.push(d.message())
            void d.dismiss()
          })
          await plain.setContent(hostile)
          await plain.waitForTimeout(300)
          await plain.close()
          return got
        })
        assert.include(seen, "1")
      }).pipe(Effect.scoped))

    it.effect("search narrows the list", () =>
      Effect.gen(function*() {
        const inbox = yield* DevInbox.TestInbox
        yield* inbox.client.clear
        yield* sendMail(inbox.smtpPort, { from: "billing@shop.test", to: "ann@example.com", subject: "Invoice 1001", text: "Amount due", attachments: [{ filename: "invoice.pdf", content: "%PDF" }] })
        yield* sendMail(inbox.smtpPort, { from: "news@shop.test", to: "ben@example.com", subject: "Spring sale", text: "20% off" })
        yield* sendMail(inbox.smtpPort, { from: "security@shop.test", to: "ann@example.com", subject: "New sign-in", text: "From Berlin" })
        yield* inbox.client.wait("subject:\"new sign-in\"")
        const { page } = yield* openInbox(inbox.url)
        const subjects = (query: string) =>
          Effect.promise(async () => {
            await page.fill("#search", query)
            const expected = (await inbox.client.list(query).pipe(Effect.runPromise)).messages.map((m) => m.subject)
            // Until the list shows exactly what the API answers (a count alone could be the previous search's).
            await page.waitForFunction(
              (want) => JSON.stringify(Array.from((globalThis as unknown as WithDom).document.querySelectorAll(".row .row-subject span"), (e) => e.textContent)) === want,
              JSON.stringify(expected)
            )
            return { shown: await page.locator(".row .row-subject span").allTextContents(), expected }
          })
        yield* Effect.promise(() => page.waitForFunction(() => (globalThis as unknown as WithDom).document.querySelectorAll(".row").length === 3))
        const byRecipient = yield* subjects("to:ann@")
        assert.deepStrictEqual(byRecipient.shown, ["New sign-in", "Invoice 1001"])
        assert.deepStrictEqual(byRecipient.shown, byRecipient.expected)
        assert.deepStrictEqual((yield* subjects("has:attachment")).shown, ["Invoice 1001"])
        assert.deepStrictEqual((yield* subjects("sale")).shown, ["Spring sale"])
        assert.deepStrictEqual((yield* subjects("nothing-like-this")).shown, [])
        assert.strictEqual(yield* Effect.promise(() => page.textContent(".empty-list")), "Nothing matches this search.")
        assert.deepStrictEqual((yield* subjects("")).shown, ["New sign-in", "Spring sale", "Invoice 1001"])
        // The query is kept in the address, so a reload shows the same list.
        yield* subjects("from:security")
        assert.include(yield* Effect.promise(async () => page.url()), "?q=from%3Asecurity")
      }).pipe(Effect.scoped))

    it.effect("an attachment downloads with the bytes that were sent", () =>
      Effect.gen(function*() {
        const inbox = yield* DevInbox.TestInbox
        const data = randomBytes(200_000)
        yield* sendMail(inbox.smtpPort, { from: "files@app.test", to: "dl@example.com", subject: "Your file", text: "attached", attachments: [{ filename: "données.bin", content: data }] })
        yield* inbox.client.wait("subject:\"your file\"")
        const { page } = yield* openInbox(inbox.url)
        const downloaded = yield* Effect.promise(async () => {
          await page.click(rowFor("Your file"))
          await page.waitForSelector(".attachment")
          const [download] = await Promise.all([page.waitForEvent("download"), page.click(".attachment")])
          return { name: download.suggestedFilename(), bytes: readFileSync(await download.path()) }
        })
        assert.strictEqual(downloaded.name, "données.bin")
        const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex")
        assert.strictEqual(sha(downloaded.bytes), sha(data))
      }).pipe(Effect.scoped))

    it.effect("behind basic auth: the page, its live list and the frame's inline image all work", () =>
      Effect.gen(function*() {
        const { context } = yield* Browser
        const guarded = yield* Effect.map(
          Layer.build(DevInbox.layer({ http: { basicAuth: { user: "dev", password: Redacted.make("pw") } } })),
          (ctx) => Context.get(ctx, DevInbox.TestInbox)
        )
        // As after the browser's password prompt: it answers the server's challenges, and the
        // credentials are dropped again for the tests that follow.
        yield* Effect.acquireRelease(
          Effect.promise(() => context.setHTTPCredentials({ username: "dev", password: "pw" })),
          () => Effect.promise(() => context.setHTTPCredentials(null))
        )
        const { page, errors } = yield* openInbox(guarded.url)
        yield* sendMail(guarded.smtpPort, {
          from: "auth@app.test",
          to: "a@example.com",
          subject: "Behind auth",
          html: "<p id=\"p\">guarded</p><img id=\"logo\" src=\"cid:logo@auth\">",
          attachments: [{ filename: "logo.png", content: png, cid: "logo@auth" }]
        })
        const width = yield* Effect.promise(async () => {
          await page.waitForSelector(rowFor("Behind auth"), { timeout: 5_000 }).catch(async (e: unknown) => {
            throw new Error(`${String(e)}\nlist: ${await page.textContent("#list")}\nlive: ${await page.getAttribute("#live", "class")}`)
          })
          await page.click(rowFor("Behind auth"))
          const frame = page.frameLocator(".frame-wrap iframe")
          await frame.locator("#p").waitFor()
          return frame.locator("#logo").evaluate((img) =>
            new Promise<number>((resolve) => {
              const i = img as unknown as { complete: boolean; naturalWidth: number; addEventListener(e: string, f: () => void): void }
              if (i.complete) resolve(i.naturalWidth)
              else i.addEventListener("load", () => resolve(i.naturalWidth))
            })
          )
        })
        assert.strictEqual(width, 2)
        assert.deepStrictEqual(errors, [])
      }).pipe(Effect.scoped))

    it.effect("keyboard: j / k move, Enter opens, Delete deletes; the theme toggles", () =>
      Effect.gen(function*() {
        const inbox = yield* DevInbox.TestInbox
        yield* inbox.client.clear
        for (const s of ["First", "Second", "Third"]) {
          yield* sendMail(inbox.smtpPort, { from: "k@app.test", to: "k@example.com", subject: s, text: s })
        }
        yield* inbox.client.wait("subject:third")
        const { page, errors } = yield* openInbox(inbox.url)
        const state = yield* Effect.promise(async () => {
          await page.waitForFunction(() => (globalThis as unknown as WithDom).document.querySelectorAll(".row").length === 3)
          await page.locator("#list").focus()
          await page.keyboard.press("j")
          await page.keyboard.press("j")
          await page.keyboard.press("k")
          const selected = await page.textContent(".row.selected .row-subject span")
          await page.keyboard.press("Enter")
          await page.waitForSelector(".message h1:text-is(\"Second\")")
          await page.keyboard.press("Delete")
          await page.waitForFunction(() => (globalThis as unknown as WithDom).document.querySelectorAll(".row").length === 2)
          const left = await page.locator(".row .row-subject span").allTextContents()
          const before = await page.getAttribute("html", "data-theme")
          await page.keyboard.press("t")
          const after = await page.getAttribute("html", "data-theme")
          await page.keyboard.press("/")
          const searchFocused = await page.evaluate(() => (globalThis as unknown as WithDom).document.activeElement?.id)
          return { selected, left, before, after, searchFocused }
        })
        assert.strictEqual(state.selected, "Second")
        assert.deepStrictEqual(state.left, ["Third", "First"])
        assert.notStrictEqual(state.before, state.after)
        assert.strictEqual(state.searchFocused, "search")
        assert.strictEqual((yield* inbox.client.list()).total, 2)
        assert.deepStrictEqual(errors, [])
      }).pipe(Effect.scoped))
  })
})
