/**
 * The search language and the message helpers that need no server: parsing queries into
 * terms and SQL, cleaning attachment names, `Content-Disposition`, and the HTML handed to the
 * sandboxed frame.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Message from "../../src/dev/Message.ts"
import * as Search from "../../src/dev/Search.ts"

describe("Search.parse", () => {
  it("reads keys, quoted values, negation and free text", () => {
    assert.deepStrictEqual(Search.parse("from:Alice to:\"Bob Smith\" -subject:spam has:attachment is:unread hello"), [
      { _tag: "Contains", field: "from", value: "alice", negated: false },
      { _tag: "Contains", field: "to", value: "bob smith", negated: false },
      { _tag: "Contains", field: "subject", value: "spam", negated: true },
      { _tag: "HasAttachment", negated: false },
      { _tag: "Unread", negated: false },
      { _tag: "Contains", field: "text", value: "hello", negated: false }
    ])
  })

  it("is:read is the negation of is:unread; -has:attachment negates", () => {
    assert.deepStrictEqual(Search.parse("is:read -is:read -has:attachments"), [
      { _tag: "Unread", negated: true },
      { _tag: "Unread", negated: false },
      { _tag: "HasAttachment", negated: true }
    ])
  })

  it("keeps unknown keys and URLs as text, folds case beyond ASCII, ignores empty values", () => {
    assert.deepStrictEqual(Search.parse("re:Hello https://x.test/a ÄRGER \"\" from:"), [
      { _tag: "Contains", field: "text", value: "re:hello", negated: false },
      { _tag: "Contains", field: "text", value: "https://x.test/a", negated: false },
      { _tag: "Contains", field: "text", value: "ärger", negated: false },
      { _tag: "Contains", field: "text", value: "from:", negated: false }
    ])
    assert.deepStrictEqual(Search.parse("   "), [])
  })

  it("becomes a parameterised condition (values never in the SQL text)", () => {
    const sql = Search.toSql(Search.parse("from:a' OR 1=1); is:unread -has:attachment"))
    assert.strictEqual(sql.where, "instr(s_from, ?) > 0 AND instr(s_text, ?) > 0 AND instr(s_text, ?) > 0 AND unread = 1 AND attachments = 0")
    assert.deepStrictEqual(sql.params, ["a'", "or", "1=1);"])
    assert.deepStrictEqual(Search.toSql([]), { where: "1", params: [] })
  })

  it("formats back to the same terms", () => {
    const q = Search.parse("from:x to:\"a b\" -is:unread has:attachment word")
    assert.deepStrictEqual(Search.parse(Search.format(q)), q)
  })
})

describe("Message helpers", () => {
  it("safeFilename keeps the last segment and drops what could mislead or escape", () => {
    assert.strictEqual(Message.safeFilename("../../etc/passwd", 0, "text/plain"), "passwd")
    assert.strictEqual(Message.safeFilename("C:\\Users\\x\\evil.exe", 0, "application/octet-stream"), "evil.exe")
    assert.strictEqual(Message.safeFilename("invoice\u202Efdp.exe", 0, "application/pdf"), "invoicefdp.exe")
    assert.strictEqual(Message.safeFilename(".bashrc", 0, "text/plain"), "bashrc")
    assert.strictEqual(Message.safeFilename("a<b>:c|d?.txt", 0, "text/plain"), "a_b__c_d_.txt")
    assert.strictEqual(Message.safeFilename("CON.txt", 0, "text/plain"), "_CON.txt")
    assert.strictEqual(Message.safeFilename("bad\u0000name\r\n.pdf", 0, "application/pdf"), "badname.pdf")
    assert.strictEqual(Message.safeFilename(null, 2, "image/png"), "attachment-3.png")
    assert.strictEqual(Message.safeFilename("...", 0, "application/x-unknown"), "attachment-1.bin")
    const long = Message.safeFilename(`${"x".repeat(300)}.pdf`, 0, "application/pdf")
    assert.strictEqual(long.length, 150)
    assert.isTrue(long.endsWith(".pdf"))
  })

  it("contentDisposition gives an ASCII fallback and the UTF-8 name", () => {
    assert.strictEqual(
      Message.contentDisposition("attachment", "Grüße \"x\"(1).pdf"),
      "attachment; filename=\"Gr__e _x_(1).pdf\"; filename*=UTF-8''Gr%C3%BC%C3%9Fe%20%22x%22%281%29.pdf"
    )
  })

  it("htmlForFrame embeds cid: images and opens links in a new tab", () => {
    const email = {
      headers: [],
      html: "<!doctype html><p><img src=\"cid:Logo%40x\"><img src='cid:missing'><a href=\"https://x.test\">x</a></p>",
      attachments: [
        { filename: "a.txt", mimeType: "text/plain", disposition: "attachment", content: new ArrayBuffer(1) },
        { filename: "logo.png", mimeType: "image/png", disposition: "inline", contentId: "<logo@x>", content: new ArrayBuffer(1) }
      ]
    }
    assert.strictEqual(
      Message.htmlForFrame("0123456789ABCDEF", email),
      "<!doctype html><base target=\"_blank\"><p><img src=\"data:image/png;base64,AA==\"><img src='cid:missing'><a href=\"https://x.test\">x</a></p>"
    )
    assert.isUndefined(Message.htmlForFrame("0123456789ABCDEF", { headers: [], attachments: [] }))
  })

  it("htmlToText gives readable text for the snippet of an HTML-only message", () => {
    assert.strictEqual(
      Message.htmlToText("<style>p{}</style><p>Tom &amp; Jerry&#33;</p><script>x()</script>&nbsp;ok").replace(/\s+/g, " ").trim(),
      "Tom & Jerry! ok"
    )
  })
})
