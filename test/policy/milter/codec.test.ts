/**
 * The milter codec, the message splitter and the macros, as pure functions: every command's
 * bytes, every reply and modification parsed, framing split at every byte boundary, oversized
 * and malformed packets refused with a reason.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Codec from "../../../src/policy/milter/Codec.ts"
import * as Macros from "../../../src/policy/milter/Macros.ts"
import * as Message from "../../../src/policy/milter/Message.ts"
import * as Modifications from "../../../src/policy/milter/Modifications.ts"
import * as MessageEdit from "../../../src/policy/MessageEdit.ts"

const bytes = (...parts: Array<string | number | Array<number>>): Uint8Array =>
  new Uint8Array(parts.flatMap((p) => (typeof p === "string" ? [...Buffer.from(p, "latin1")] : typeof p === "number" ? [p] : p)))

const len = (n: number) => [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]

/** A packet as a filter would send it. */
const wire = (command: string, data: Uint8Array = new Uint8Array(0)) => bytes(len(data.byteLength + 1), command, [...data])

const decodeAll = (b: Uint8Array): Array<Codec.Packet> => {
  const packets = Codec.makeDecoder().push(b)
  if (packets instanceof Codec.CodecError) throw packets
  return packets
}

const reply = (command: string, data: Uint8Array = new Uint8Array(0)) => {
  const [p] = decodeAll(wire(command, data))
  return Codec.parseReply(p!)
}

describe("milter codec: commands", () => {
  it("frames a packet: 4-byte length counting the command byte, the command, the data", () => {
    assert.deepStrictEqual([...Codec.packet("Q")], [0, 0, 0, 1, 0x51])
    assert.deepStrictEqual([...Codec.helo("mx.test")], [...bytes(len(9), "Hmx.test", 0)])
  })

  it("option negotiation: version 6, actions, steps", () => {
    assert.deepStrictEqual([...Codec.negotiate(0x31, 0x1fffff)], [...bytes(len(13), "O", len(6), len(0x31), len(0x1fffff))])
  })

  it("connect: host, family, port, address for IPv4, IPv6, a local socket and unknown", () => {
    assert.deepStrictEqual([...Codec.connect("client.test", { family: "inet", address: "192.0.2.1", port: 25 })], [
      ...bytes(len(1 + 12 + 1 + 2 + 10), "C", "client.test", 0, "4", [0, 25], "192.0.2.1", 0)
    ])
    assert.deepStrictEqual([...Codec.connect("h", { family: "inet6", address: "::1", port: 0x1234 })], [
      ...bytes(len(1 + 2 + 1 + 2 + 4), "C", "h", 0, "6", [0x12, 0x34], "::1", 0)
    ])
    assert.deepStrictEqual([...Codec.connect("h", { family: "unix", path: "/s" })], [...bytes(len(1 + 2 + 1 + 2 + 3), "C", "h", 0, "L", [0, 0], "/s", 0)])
    assert.deepStrictEqual([...Codec.connect("h", { family: "unknown" })], [...bytes(len(4), "C", "h", 0, "U")])
  })

  it("MAIL and RCPT: the address in angle brackets, then each ESMTP parameter", () => {
    assert.deepStrictEqual([...Codec.mail("a@x.test", ["SIZE=10"])], [...bytes(len(1 + 11 + 8), "M", "<a@x.test>", 0, "SIZE=10", 0)])
    assert.deepStrictEqual([...Codec.mail("")], [...bytes(len(4), "M", "<>", 0)])
    assert.deepStrictEqual([...Codec.rcpt("b@y.test")], [...bytes(len(12), "R", "<b@y.test>", 0)])
  })

  it("macros: the command letter, then NUL-terminated names and values", () => {
    assert.deepStrictEqual([...Codec.macros("C", [["j", "mx.test"], ["{client_addr}", "192.0.2.1"]])], [
      ...bytes(len(1 + 1 + 2 + 8 + 14 + 10), "D", "C", "j", 0, "mx.test", 0, "{client_addr}", 0, "192.0.2.1", 0)
    ])
  })

  it("header, end of headers, body, end of message, data, abort, quit", () => {
    assert.deepStrictEqual([...Codec.header("Subject", "hi")], [...bytes(len(12), "L", "Subject", 0, "hi", 0)])
    assert.deepStrictEqual([...Codec.header("X", bytes("a\nb"))], [...bytes(len(7), "L", "X", 0, "a\nb", 0)])
    for (const [p, c] of [[Codec.endOfHeaders(), "N"], [Codec.endOfMessage(), "E"], [Codec.data(), "T"], [Codec.abort(), "A"], [Codec.quit(), "Q"]] as const) {
      assert.deepStrictEqual([...p], [...bytes(len(1), c)])
    }
    assert.deepStrictEqual([...Codec.body(bytes("line\r\n"))], [...bytes(len(7), "B", "line\r\n")])
  })

  it("a NUL inside a string ends it (the other side would stop there anyway)", () => {
    assert.deepStrictEqual([...Codec.helo("a\u0000b")], [...bytes(len(3), "H", "a", 0)])
  })

  it("body chunks are at most 65535 bytes", () => {
    const chunks = Codec.bodyChunks(new Uint8Array(65535 * 2 + 7))
    assert.deepStrictEqual(chunks.map((c) => c.byteLength - 5), [65535, 65535, 7])
    assert.deepStrictEqual(Codec.bodyChunks(new Uint8Array(0)), [])
  })
})

describe("milter codec: framing of what a filter sends", () => {
  const stream = new Uint8Array([
    ...wire("h", bytes("X-A", 0, "1", 0)),
    ...wire("b", bytes("new body\r\n")),
    ...wire("2", bytes("<c@z.test>", 0, "NOTIFY=NEVER", 0)),
    ...wire("-", bytes("<d@z.test>", 0)),
    ...wire("e", bytes("<s@z.test>", 0, "RET=HDRS", 0)),
    ...wire("c"),
    ...wire("y", bytes("554 5.7.1 no", 0)),
    ...wire("p")
  ])
  const commands = ["h", "b", "2", "-", "e", "c", "y", "p"]

  it("decodes packets whatever the read boundaries: split at every byte", () => {
    for (let cut = 0; cut <= stream.byteLength; cut++) {
      const decoder = Codec.makeDecoder()
      const a = decoder.push(stream.subarray(0, cut))
      const b = decoder.push(stream.subarray(cut))
      assert.ok(!(a instanceof Codec.CodecError) && !(b instanceof Codec.CodecError))
      assert.deepStrictEqual([...a, ...b].map((p) => p.command), commands, `cut at ${cut}`)
      // Cut anywhere, a packet's data is whole: the replaced body chunk among them.
      assert.deepStrictEqual(Codec.parseReply([...a, ...b][1]!), { _tag: "Modify", modification: { _tag: "ReplaceBody", chunk: bytes("new body\r\n") } })
      assert.strictEqual(decoder.pending, 0)
    }
  })

  it("one byte at a time", () => {
    const decoder = Codec.makeDecoder()
    const out: Array<string> = []
    for (const b of stream) {
      const ps = decoder.push(new Uint8Array([b]))
      assert.ok(!(ps instanceof Codec.CodecError))
      out.push(...ps.map((p) => p.command))
    }
    assert.deepStrictEqual(out, commands)
  })

  it("refuses a packet over the limit, and one of length 0", () => {
    const big = Codec.makeDecoder(1000).push(bytes(len(1001), "b"))
    assert.ok(big instanceof Codec.CodecError)
    assert.match(big.message, /1001 bytes, over the limit of 1000/)
    const zero = Codec.makeDecoder().push(bytes(len(0)))
    assert.ok(zero instanceof Codec.CodecError)
    assert.match(zero.message, /length 0/)
  })

  it("an oversized length is refused as soon as its 4 bytes are in (before any data)", () => {
    assert.ok(Codec.makeDecoder().push(bytes(len(Codec.maxPacket + 1))) instanceof Codec.CodecError)
  })
})

describe("milter codec: replies", () => {
  it("the simple replies", () => {
    for (const [c, tag] of [["c", "Continue"], ["a", "Accept"], ["r", "Reject"], ["t", "Tempfail"], ["d", "Discard"], ["s", "Skip"], ["p", "Progress"], ["4", "Shutdown"], ["f", "Shutdown"]]) {
      assert.deepStrictEqual(reply(c!), { _tag: tag } as Codec.Reply)
    }
  })

  it("reply code: code and the whole text; not 4xx/5xx is malformed", () => {
    assert.deepStrictEqual(reply("y", bytes("554 5.7.1 Gtube pattern", 0)), { _tag: "ReplyCode", code: 554, text: "554 5.7.1 Gtube pattern" })
    assert.ok(reply("y", bytes("250 ok", 0)) instanceof Codec.CodecError)
    assert.ok(reply("y", bytes("554 no terminator")) instanceof Codec.CodecError)
  })

  it("reply parts: enhanced code kept when its class fits, else the class default", () => {
    assert.deepStrictEqual(Codec.replyParts(554, "554 5.7.1 Gtube pattern"), { code: 554, enhanced: "5.7.1", text: "Gtube pattern" })
    assert.deepStrictEqual(Codec.replyParts(451, "451 spam later"), { code: 451, enhanced: "4.7.1", text: "spam later" })
    assert.deepStrictEqual(Codec.replyParts(550, "550 4.7.1 mixed"), { code: 550, enhanced: "5.7.1", text: "mixed" })
    assert.deepStrictEqual(Codec.replyParts(550, "550-5.7.1 first\r\n550 5.7.1 second"), { code: 550, enhanced: "5.7.1", text: "first" })
  })

  it("every modification", () => {
    const m = (command: string, data: Uint8Array) => {
      const r = reply(command, data)
      assert.ok(!(r instanceof Codec.CodecError) && r._tag === "Modify", `${command}: ${String(r)}`)
      return r.modification
    }
    assert.deepStrictEqual(m("h", bytes("X-Spam", 0, "Yes", 0)), { _tag: "AddHeader", name: "X-Spam", value: "Yes" })
    assert.deepStrictEqual(m("i", bytes(len(0), "DKIM-Signature", 0, "v=1;\n\tb=x", 0)), { _tag: "InsertHeader", index: 0, name: "DKIM-Signature", value: "v=1;\n\tb=x" })
    assert.deepStrictEqual(m("m", bytes(len(2), "Subject", 0, "", 0)), { _tag: "ChangeHeader", index: 2, name: "Subject", value: "" })
    assert.deepStrictEqual(m("b", bytes("new body")), { _tag: "ReplaceBody", chunk: bytes("new body") })
    assert.deepStrictEqual(m("+", bytes("<c@z.test>", 0)), { _tag: "AddRecipient", recipient: "c@z.test", args: undefined })
    assert.deepStrictEqual(m("2", bytes("<c@z.test>", 0, "NOTIFY=NEVER", 0)), { _tag: "AddRecipient", recipient: "c@z.test", args: "NOTIFY=NEVER" })
    assert.deepStrictEqual(m("-", bytes("<c@z.test>", 0)), { _tag: "DeleteRecipient", recipient: "c@z.test" })
    assert.deepStrictEqual(m("e", bytes("<s@z.test>", 0)), { _tag: "ChangeFrom", sender: "s@z.test", args: undefined })
    assert.deepStrictEqual(m("q", bytes("spam", 0)), { _tag: "Quarantine", reason: "spam" })
    assert.deepStrictEqual(m("e", bytes("<>", 0, "RET=FULL ENVID=x", 0)), { _tag: "ChangeFrom", sender: "", args: "RET=FULL ENVID=x" })
    assert.deepStrictEqual(m("b", bytes()), { _tag: "ReplaceBody", chunk: bytes() })
  })

  it("malformed modifications and unknown replies are errors, with what is wrong", () => {
    const err = (command: string, data: Uint8Array, pattern: RegExp) => {
      const r = reply(command, data)
      assert.ok(r instanceof Codec.CodecError, command)
      assert.match(r.message, pattern)
    }
    err("h", bytes("X-Only", 0), /name and value/)
    err("h", bytes("X", 0, "v"), /NUL/)
    err("i", bytes(0, 0), /no index/)
    err("m", bytes(len(1), "Subject"), /NUL/)
    err("+", bytes("<c@z.test>"), /add recipient: missing NUL/)
    err("-", bytes(), /delete recipient: missing NUL/)
    err("e", bytes("<s@z.test>", 0, "RET=HDRS"), /change sender: missing NUL/)
    err("Z", bytes(), /unknown reply 'Z'/)
  })

  it("negotiation reply: version, actions, steps and the macro lists", () => {
    const p = decodeAll(wire("O", bytes(len(6), len(0x21), len(0x100040), len(0), "j {client_addr}", 0, len(5), "i", 0)))[0]!
    assert.deepStrictEqual(Codec.parseNegotiation(p), {
      version: 6,
      actions: 0x21,
      steps: 0x100040,
      macros: { connect: ["j", "{client_addr}"], endOfMessage: ["i"] }
    })
    assert.ok(Codec.parseNegotiation(decodeAll(wire("O", bytes(len(6))))[0]!) instanceof Codec.CodecError)
    assert.ok(Codec.parseNegotiation(decodeAll(wire("c"))[0]!) instanceof Codec.CodecError)
    assert.ok(Codec.parseNegotiation(decodeAll(wire("O", bytes(len(6), len(0), len(0), len(1), "j")))[0]!) instanceof Codec.CodecError)
  })
})

describe("milter message splitting", () => {
  const msg = bytes("From: a@x.test\r\nSubject:  two\r\n words\r\nX-Empty:\r\n\r\nbody\r\n")

  it("finds the end of the header block", () => {
    assert.strictEqual(Message.headerEnd(msg), 51)
    assert.strictEqual(Message.headerEnd(bytes("\r\nbody")), 2)
    assert.strictEqual(Message.headerEnd(bytes("A: b\r\n")), -1)
  })

  it("fields with folding as LF, leading space stripped or kept; body after the empty line", () => {
    const text = (s: Message.Split) => s.fields.map((f) => [f.name, Buffer.from(f.value).toString()])
    const plain = Message.split(msg.subarray(0, 51), false)
    assert.deepStrictEqual(text(plain), [["From", "a@x.test"], ["Subject", "two\n words"], ["X-Empty", ""]])
    assert.strictEqual(plain.bodyStart, 51)
    const lead = Message.split(msg.subarray(0, 51), true)
    assert.deepStrictEqual(text(lead), [["From", " a@x.test"], ["Subject", "  two\n words"], ["X-Empty", ""]])
  })

  it("a line that is not a field ends the header block and starts the body", () => {
    const s = Message.split(bytes("A: 1\r\nnot a header\r\nmore\r\n"), false)
    assert.deepStrictEqual(s.fields.map((f) => f.name), ["A"])
    assert.strictEqual(s.bodyStart, 6)
  })
})

describe("milter macros", () => {
  const source: Macros.MacroSource = {
    hostname: "mx.test",
    listener: "mx",
    clientAddress: "192.0.2.1",
    user: "alice",
    mailFrom: "a@x.test",
    rcptTo: "b@y.test",
    queueId: "Q1"
  }

  it("Postfix's defaults, only those with a value", () => {
    assert.deepStrictEqual(Macros.forStage("connect", source), [
      ["j", "mx.test"],
      ["{daemon_name}", "mx"],
      ["v", "Incoming"],
      ["_", "unknown [192.0.2.1]"],
      ["{client_addr}", "192.0.2.1"],
      ["{client_name}", "unknown"]
    ])
    assert.deepStrictEqual(Macros.forStage("helo", source), [])
    assert.deepStrictEqual(Macros.forStage("mail", source), [
      ["i", "Q1"],
      ["{auth_authen}", "alice"],
      ["{auth_author}", "alice"],
      ["{mail_addr}", "a@x.test"],
      ["{mail_host}", "x.test"],
      ["{mail_mailer}", "smtp"]
    ])
    assert.deepStrictEqual(Macros.forStage("rcpt", { hostname: "h", rcptTo: "b@y.test" }), [["{rcpt_addr}", "b@y.test"], ["{rcpt_host}", "y.test"], [
      "{rcpt_mailer}",
      "smtp"
    ]])
    assert.deepStrictEqual(Macros.forStage("endOfMessage", source), [["i", "Q1"]])
  })

  it("a filter's own list, braces optional", () => {
    assert.deepStrictEqual(Macros.forStage("connect", source, ["client_addr", "j", "{nope}"]), [["{client_addr}", "192.0.2.1"], ["j", "mx.test"]])
  })
})

describe("milter modifications as message edits", () => {
  const all = 0x1ff

  it("each modification becomes its edit; quarantine is held; recipient and sender arguments become DSN parameters", () => {
    const { edits, ignored } = Modifications.editsOf([
      { _tag: "AddHeader", name: "X-A", value: "1" },
      { _tag: "ChangeHeader", index: 0, name: "X-B", value: "" },
      { _tag: "Quarantine", reason: "" },
      { _tag: "AddRecipient", recipient: "c@z.test", args: "NOTIFY=SUCCESS,DELAY ORCPT=rfc822;c+40z.test" },
      { _tag: "AddRecipient", recipient: "d@z.test", args: undefined },
      { _tag: "DeleteRecipient", recipient: "e@z.test" },
      { _tag: "ChangeFrom", sender: "s@z.test", args: "ret=hdrs ENVID=id1" },
      { _tag: "ChangeFrom", sender: "", args: undefined }
    ], all)
    assert.deepStrictEqual(ignored, [])
    assert.deepStrictEqual(edits, [
      MessageEdit.appendHeader("X-A", "1"),
      MessageEdit.removeHeader("X-B", { occurrence: 1 }),
      { _tag: "Quarantine", reason: "quarantined by milter", hold: true },
      { _tag: "AddRecipient", recipient: "c@z.test", dsn: { notify: ["SUCCESS", "DELAY"], orcpt: { type: "rfc822", address: "c@z.test" } } },
      { _tag: "AddRecipient", recipient: "d@z.test" },
      { _tag: "DeleteRecipient", recipient: "e@z.test" },
      { _tag: "ChangeSender", sender: "s@z.test", dsn: { ret: "HDRS", envid: "id1" } },
      { _tag: "ChangeSender", sender: "" }
    ])
  })

  it("what the filter did not negotiate is dropped and noted; so are arguments we cannot keep (the edit stays)", () => {
    const { edits, ignored } = Modifications.editsOf([
      { _tag: "AddRecipient", recipient: "c@z.test", args: undefined },
      { _tag: "DeleteRecipient", recipient: "c@z.test" },
      { _tag: "ReplaceBody", chunk: bytes("x") },
      { _tag: "AddHeader", name: "X-A", value: "1" }
    ], Codec.Action.AddHeaders)
    assert.deepStrictEqual(edits, [MessageEdit.appendHeader("X-A", "1")])
    assert.deepStrictEqual(ignored, ["AddRecipient (not negotiated)", "DeleteRecipient (not negotiated)", "ReplaceBody (not negotiated)"])
    const odd = Modifications.editsOf([
      { _tag: "AddRecipient", recipient: "c@z.test", args: "NOTIFY=SOMETIMES" },
      { _tag: "ChangeFrom", sender: "s@z.test", args: "SIZE=10 BODY=8BITMIME" }
    ], Codec.Action.AddRecipientWithArgs | Codec.Action.ChangeFrom)
    assert.deepStrictEqual(odd.edits, [MessageEdit.addRecipient("c@z.test"), MessageEdit.changeSender("s@z.test")])
    assert.strictEqual(odd.ignored.length, 2)
    assert.match(odd.ignored[0]!, /add recipient c@z\.test: NOTIFY parameter/)
    assert.match(odd.ignored[1]!, /change sender to s@z\.test: parameters SIZE, BODY/)
  })

  it("ESMTP arguments: keywords upper-cased, values kept, bare keywords true", () => {
    assert.deepStrictEqual([...Modifications.parameters(" notify=NEVER  SMTPUTF8 ")], [["NOTIFY", "NEVER"], ["SMTPUTF8", true]])
  })
})
