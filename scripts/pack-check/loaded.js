// Preloaded into the installed `incoming serve` (node --import): on exit, writes to the file named
// by PACK_CHECK_LOADED what the process loaded that it should not have: undici, which an ES import
// of node:http pulls in (src/internal/nodeHttp.ts), and modules of mailauth or acme-client, which
// a server that checks, signs and certifies nothing must not load.
import { writeFileSync } from "node:fs"
import { registerHooks } from "node:module"

const unwanted = []
registerHooks({
  load(url, context, nextLoad) {
    if (/\/node_modules\/(mailauth|acme-client)\//.test(url)) unwanted.push(url)
    return nextLoad(url, context)
  }
})
process.on("exit", () => {
  const undici = process.moduleLoadList.filter((m) => m.includes("undici"))
  writeFileSync(process.env.PACK_CHECK_LOADED, JSON.stringify([...undici, ...unwanted]))
})
