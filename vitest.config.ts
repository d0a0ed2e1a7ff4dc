// Test runner settings: the suite talks to real sockets and files, so tests run in forked
// processes (clean RSS readings, no shared smtp-server state) with generous timeouts: a test
// that starts `incoming serve` waits up to 45 s for it on a loaded machine (CI shares 2 cores).
// The package's own name (examples/host-app.ts imports "incoming-smtp") resolves to src/, not
// to the compiled dist/, through the "@incoming-smtp/source" export condition.
import { defineConfig } from "vitest/config"

export default defineConfig({
  // Vite replaces its default conditions with this list, so it repeats them (Vite's
  // defaultServerConditions, which vitest/config does not re-export).
  ssr: { resolve: { conditions: ["@incoming-smtp/source", "module", "node", "development|production"] } },
  test: {
    include: ["test/**/*.test.ts"],
    // No test reaches the real DNS: it gets a zone (ZoneDns) or a dnsmasq of its own.
    setupFiles: ["test/support/dnsGuard.ts"],
    pool: "forks",
    testTimeout: 60_000,
    hookTimeout: 30_000,
    reporters: ["default"]
  }
})
