// Test runner settings: the suite talks to real sockets and files, so tests run in forked
// processes (clean RSS readings, no shared smtp-server state) with generous hook timeouts.
import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // No test reaches the real DNS: it gets a zone (ZoneDns) or a dnsmasq of its own.
    setupFiles: ["test/support/dnsGuard.ts"],
    pool: "forks",
    testTimeout: 30_000,
    hookTimeout: 30_000,
    reporters: ["default"]
  }
})
