import { createElement } from "react";
import { renderToStaticMarkup } from "react-dom/server";
import { describe, expect, it } from "vitest";
import Markdown from "../src/components/Markdown";
import { inlineText, parseInline, parseMarkdown, safeHref } from "../src/markdown";

const html = (text: string) => renderToStaticMarkup(createElement(Markdown, { text }));

describe("the notes' markdown", () => {
  it("reads paragraphs, keeping single line breaks as a plain-text note has them", () => {
    expect(parseMarkdown("one\ntwo\n\n\nthree")).toEqual([
      { kind: "paragraph", children: [{ kind: "text", text: "one" }, { kind: "break" }, { kind: "text", text: "two" }] },
      { kind: "paragraph", children: [{ kind: "text", text: "three" }] },
    ]);
    expect(parseMarkdown("a\r\nb")).toEqual([{ kind: "paragraph", children: [{ kind: "text", text: "a" }, { kind: "break" }, { kind: "text", text: "b" }] }]);
    expect(parseMarkdown("")).toEqual([]);
  });

  it("reads headings, lists, quotes, rules and fenced code", () => {
    const blocks = parseMarkdown("# Title #\n### Three\n- a\n* b\n  more of b\n\n3. c\n4) d\n> said\n> twice\n---\n```py\nx = 1 # not a heading\n\n**not bold**\n```\nafter");
    expect(blocks.map((b) => b.kind)).toEqual(["heading", "heading", "list", "list", "quote", "rule", "code", "paragraph"]);
    expect(blocks[0]).toEqual({ kind: "heading", level: 1, children: [{ kind: "text", text: "Title" }] });
    expect(blocks[1]).toMatchObject({ kind: "heading", level: 3 });
    expect(blocks[2]).toEqual({
      kind: "list", ordered: false, start: 1,
      items: [[{ kind: "text", text: "a" }], [{ kind: "text", text: "b" }, { kind: "break" }, { kind: "text", text: "more of b" }]],
    });
    expect(blocks[3]).toMatchObject({ kind: "list", ordered: true, start: 3 });
    expect(blocks[4].kind === "quote" && inlineText(blocks[4].children)).toBe("said\ntwice");
    expect(blocks[6]).toEqual({ kind: "code", text: "x = 1 # not a heading\n\n**not bold**" });
    expect(parseMarkdown("#nospace")[0].kind).toBe("paragraph"); // a heading needs its space
  });

  it("reads bold, italic, code, links and escapes", () => {
    expect(parseInline("**bold** and *it* and __b2__ and _i2_ and `a*b*c`")).toEqual([
      { kind: "strong", children: [{ kind: "text", text: "bold" }] },
      { kind: "text", text: " and " },
      { kind: "em", children: [{ kind: "text", text: "it" }] },
      { kind: "text", text: " and " },
      { kind: "strong", children: [{ kind: "text", text: "b2" }] },
      { kind: "text", text: " and " },
      { kind: "em", children: [{ kind: "text", text: "i2" }] },
      { kind: "text", text: " and " },
      { kind: "code", text: "a*b*c" },
    ]);
    expect(parseInline("*outer **inner** end*")).toEqual([
      { kind: "em", children: [{ kind: "text", text: "outer " }, { kind: "strong", children: [{ kind: "text", text: "inner" }] }, { kind: "text", text: " end" }] },
    ]);
    expect(parseInline("[the **docs**](https://example.org/a_b \"title\")")).toEqual([
      { kind: "link", href: "https://example.org/a_b", children: [{ kind: "text", text: "the " }, { kind: "strong", children: [{ kind: "text", text: "docs" }] }] },
    ]);
    expect(parseInline("see https://example.org/x_(y), or <mailto:a@b.c>.")).toEqual([
      { kind: "text", text: "see " },
      { kind: "link", href: "https://example.org/x_(y", children: [{ kind: "text", text: "https://example.org/x_(y" }] },
      { kind: "text", text: "), or " },
      { kind: "link", href: "mailto:a@b.c", children: [{ kind: "text", text: "mailto:a@b.c" }] },
      { kind: "text", text: "." },
    ]);
  });

  it("leaves what is not markup as text: snake_case, lone stars, escapes, unclosed code", () => {
    expect(parseInline("snake_case_name and 2 * 3 * 4 and \\*not it\\* and `open")).toEqual([
      { kind: "text", text: "snake_case_name and 2 * 3 * 4 and *not it* and `open" },
    ]);
  });

  it("draws links only to http(s) and mailto addresses", () => {
    expect(safeHref("https://a.b/c")).toBe("https://a.b/c");
    expect(safeHref(" MAILTO:x@y.z ")).toBe("MAILTO:x@y.z");
    for (const bad of ["javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html,<script>", "vbscript:x", "/relative", "//evil.example", "file:///etc/passwd"]) {
      expect(safeHref(bad), bad).toBeNull();
    }
    expect(parseInline("[click](javascript:alert(1))")).toEqual([{ kind: "text", text: "[click](javascript:alert(1))" }]);
    expect(html("[click](javascript:alert(1))")).not.toContain("href");
    expect(html("[click](javascript:alert%281%29)")).toBe("<p>click</p>");
  });

  it("renders as elements, escaping every bit of HTML a note holds", () => {
    expect(html("# Hi\n\n**b** *i* `c` [l](https://x.y)\n- one\n- two")).toBe(
      '<h1>Hi</h1><p><strong>b</strong> <em>i</em> <code>c</code> <a href="https://x.y" target="_blank" rel="noopener noreferrer nofollow" class="nodrag">l</a></p><ul><li>one</li><li>two</li></ul>',
    );
    const attack = '<img src=x onerror="alert(1)"><script>alert(2)</script> **<b>x</b>**';
    const out = html(attack);
    expect(out).toBe("<p>&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&lt;script&gt;alert(2)&lt;/script&gt; <strong>&lt;b&gt;x&lt;/b&gt;</strong></p>");
    expect(html("```\n<script>alert(3)</script>\n```")).toBe("<pre><code>&lt;script&gt;alert(3)&lt;/script&gt;</code></pre>");
    expect(html('[x](https://a.b/"onmouseover="alert(1))')).not.toMatch(/onmouseover="/);
  });
});
