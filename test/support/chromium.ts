/**
 * Debian's Chromium driven by playwright-core, for the dev inbox's browser tests and its
 * screenshot script: headless, no sandbox (containers, root), nothing that reaches out to the
 * network on its own, and a fresh profile directory removed on close.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { type BrowserContext, chromium } from "playwright-core"

export const executablePath = "/usr/bin/chromium"

/** False where Chromium is not installed (`apt-get install chromium`): the callers skip, saying so. */
export const available = existsSync(executablePath)

export const args: ReadonlyArray<string> = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync"
]

export interface Launched {
  readonly context: BrowserContext
  readonly close: () => Promise<void>
}

export const launch = async (options: {
  readonly viewport?: { readonly width: number; readonly height: number }
  readonly deviceScaleFactor?: number
  readonly colorScheme?: "light" | "dark"
} = {}): Promise<Launched> => {
  // launchPersistentContext passes this as --user-data-dir: a profile of our own, fresh each time.
  const profile = mkdtempSync(join(tmpdir(), "incoming-chromium-"))
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    args: [...args],
    headless: true,
    acceptDownloads: true,
    viewport: options.viewport ?? { width: 1280, height: 800 },
    ...(options.deviceScaleFactor === undefined ? {} : { deviceScaleFactor: options.deviceScaleFactor }),
    ...(options.colorScheme === undefined ? {} : { colorScheme: options.colorScheme })
  })
  return {
    context,
    close: async () => {
      await context.close()
      rmSync(profile, { recursive: true, force: true })
    }
  }
}
