/**
 * `node:http` without loading undici. An ES `import … from "node:http"` builds the module's
 * namespace, which reads every export — and Node 24's http module exports `WebSocket`,
 * `CloseEvent` and `MessageEvent` as lazy getters that load undici, Node's fetch/WebSocket
 * implementation. That is ~15 MiB of resident memory in a server that never uses either
 * (measured: `incoming serve` at rest; docs/benchmark.md, memory). `getBuiltinModule` hands out
 * the module object itself and reads nothing. (@effect/platform-node does the same with a
 * `createRequire`.) Types still come from `import type`, which costs nothing at run time.
 */
export const http = process.getBuiltinModule("node:http")
