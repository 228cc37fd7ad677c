/**
 * The markdown of canvas notes, a safe subset, parsed into a small tree (pure module: text in,
 * tree out; components/Markdown.tsx draws the tree with React, which escapes every text).
 *
 * Blocks: paragraphs (a single line break stays a line break, as in a plain-text note), headings
 * `#`…`######`, lists (`-`, `*`, `+`, `1.`, `1)`), block quotes `>`, fenced code ``` / ~~~, rules
 * `---`. Inline: **bold** / __bold__, *italic* / _italic_, `code`, [links](https://…), bare
 * http(s) addresses, backslash escapes. Nothing else is markup: HTML tags stay the text they are,
 * and a link whose address is not http:, https: or mailto: shows its text only.
 */

export type Inline =
  | { kind: "text"; text: string }
  | { kind: "strong"; children: Inline[] }
  | { kind: "em"; children: Inline[] }
  | { kind: "code"; text: string }
  | { kind: "link"; href: string; children: Inline[] }
  | { kind: "break" };

export type Block =
  | { kind: "heading"; level: 1 | 2 | 3 | 4 | 5 | 6; children: Inline[] }
  | { kind: "paragraph"; children: Inline[] }
  | { kind: "list"; ordered: boolean; start: number; items: Inline[][] }
  | { kind: "quote"; children: Inline[] }
  | { kind: "code"; text: string }
  | { kind: "rule" };

/** The address a link may have: http(s) and mailto only; null for anything else. */
export function safeHref(url: string): string | null {
  const trimmed = url.trim();
  return /^(https?:\/\/|mailto:)[^\s]*$/i.test(trimmed) ? trimmed : null;
}

// ---- inline -------------------------------------------------------------------------------------

const PUNCTUATION = /[!"#$%&'()*+,\-./:;<=>?@[\\\]^_`{|}~]/;
const WORD = /[\p{L}\p{N}]/u;
const BARE_URL = /^https?:\/\/[^\s<>]+/i;

function pushText(out: Inline[], text: string) {
  if (!text) return;
  const last = out[out.length - 1];
  if (last?.kind === "text") last.text += text;
  else out.push({ kind: "text", text });
}

/** The index of the closing `delimiter` for an opener ending at `from`, or -1. */
function findCloser(text: string, from: number, delimiter: string): number {
  const single = delimiter.length === 1;
  for (let i = from; i < text.length; i++) {
    const c = text[i];
    if (c === "\\") {
      i++;
      continue;
    }
    if (c === "`") {
      // a code span inside hides its delimiters
      const run = text.slice(i).match(/^`+/)![0];
      const close = text.indexOf(run, i + run.length);
      if (close > 0) i = close + run.length - 1;
      continue;
    }
    if (!text.startsWith(delimiter, i) || i === from) continue;
    if (single && text[i + 1] === delimiter) {
      i++; // a double delimiter is not a single one's closer
      continue;
    }
    if (/\s/.test(text[i - 1])) continue; // a closer follows a non-space
    if (delimiter[0] === "_" && WORD.test(text[i + delimiter.length] ?? "")) continue; // snake_case
    return i;
  }
  return -1;
}

/** `[text](address "title")` at `start`: the parts and where it ends, or null. */
function linkAt(text: string, start: number): { label: string; href: string; end: number } | null {
  let depth = 0;
  let i = start;
  for (; i < text.length; i++) {
    if (text[i] === "\\") i++;
    else if (text[i] === "[") depth++;
    else if (text[i] === "]" && --depth === 0) break;
  }
  if (i >= text.length || text[i + 1] !== "(") return null;
  const rest = text.slice(i + 2);
  const match = rest.match(/^\s*<?([^\s()<>]*)>?(?:\s+"[^"]*")?\s*\)/);
  if (!match) return null;
  return { label: text.slice(start + 1, i), href: match[1], end: i + 2 + match[0].length };
}

export function parseInline(text: string): Inline[] {
  const out: Inline[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "\\" && PUNCTUATION.test(text[i + 1] ?? "")) {
      pushText(out, text[i + 1]);
      i += 2;
      continue;
    }
    if (c === "\n") {
      out.push({ kind: "break" });
      i++;
      continue;
    }
    if (c === "`") {
      const run = text.slice(i).match(/^`+/)![0];
      const close = text.indexOf(run, i + run.length);
      if (close < 0 || text[close + run.length] === "`") {
        pushText(out, run);
        i += run.length;
        continue;
      }
      let code = text.slice(i + run.length, close).replace(/\n/g, " ");
      if (code.length > 2 && code.startsWith(" ") && code.endsWith(" ")) code = code.slice(1, -1);
      out.push({ kind: "code", text: code });
      i = close + run.length;
      continue;
    }
    if (c === "*" || c === "_") {
      const double = text[i + 1] === c;
      const delimiter = double ? c + c : c;
      const after = text[i + delimiter.length] ?? "";
      const leftFlanking = after !== "" && !/\s/.test(after) && !(c === "_" && WORD.test(text[i - 1] ?? ""));
      const close = leftFlanking ? findCloser(text, i + delimiter.length, delimiter) : -1;
      if (close > 0) {
        const children = parseInline(text.slice(i + delimiter.length, close));
        out.push(double ? { kind: "strong", children } : { kind: "em", children });
        i = close + delimiter.length;
        continue;
      }
      pushText(out, delimiter);
      i += delimiter.length;
      continue;
    }
    if (c === "[") {
      const link = linkAt(text, i);
      if (link) {
        const children = parseInline(link.label);
        const href = safeHref(link.href);
        if (href) out.push({ kind: "link", href, children });
        else for (const child of children) child.kind === "text" ? pushText(out, child.text) : out.push(child);
        i = link.end;
        continue;
      }
    }
    if ((c === "h" || c === "H") && !WORD.test(text[i - 1] ?? "")) {
      const bare = text.slice(i).match(BARE_URL);
      if (bare) {
        const url = bare[0].replace(/[.,;:!?)\]'"]+$/, "");
        out.push({ kind: "link", href: url, children: [{ kind: "text", text: url }] });
        i += url.length;
        continue;
      }
    }
    if (c === "<") {
      const auto = text.slice(i).match(/^<((?:https?:\/\/|mailto:)[^\s<>]+)>/i);
      if (auto) {
        out.push({ kind: "link", href: auto[1], children: [{ kind: "text", text: auto[1] }] });
        i += auto[0].length;
        continue;
      }
    }
    pushText(out, c);
    i++;
  }
  return out;
}

// ---- blocks -------------------------------------------------------------------------------------

const FENCE = /^ {0,3}(`{3,}|~{3,})(.*)$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const BULLET = /^ {0,3}([-*+])[ \t]+(.*)$/;
const NUMBERED = /^ {0,3}(\d{1,9})[.)][ \t]+(.*)$/;
const QUOTE = /^ {0,3}>[ \t]?(.*)$/;

export function parseMarkdown(source: string): Block[] {
  const lines = source.replace(/\r\n?/g, "\n").split("\n");
  const blocks: Block[] = [];
  let paragraph: string[] = [];
  let list: { ordered: boolean; start: number; items: string[][] } | null = null;
  let quote: string[] = [];

  const flush = () => {
    if (paragraph.length) blocks.push({ kind: "paragraph", children: parseInline(paragraph.join("\n").trim()) });
    if (list) blocks.push({ kind: "list", ordered: list.ordered, start: list.start, items: list.items.map((lines) => parseInline(lines.join("\n").trim())) });
    if (quote.length) blocks.push({ kind: "quote", children: parseInline(quote.join("\n").trim()) });
    paragraph = [];
    list = null;
    quote = [];
  };

  for (let n = 0; n < lines.length; n++) {
    const line = lines[n];
    const fence = line.match(FENCE);
    if (fence && !(fence[1][0] === "`" && fence[2].includes("`"))) {
      flush();
      const code: string[] = [];
      const closer = new RegExp(`^ {0,3}${fence[1][0]}{${fence[1].length},}[ \\t]*$`);
      for (n++; n < lines.length && !closer.test(lines[n]); n++) code.push(lines[n]);
      blocks.push({ kind: "code", text: code.join("\n") });
      continue;
    }
    if (!line.trim()) {
      flush();
      continue;
    }
    const heading = line.match(HEADING);
    if (heading) {
      flush();
      blocks.push({ kind: "heading", level: heading[1].length as 1, children: parseInline(heading[2] ?? "") });
      continue;
    }
    if (RULE.test(line)) {
      flush();
      blocks.push({ kind: "rule" });
      continue;
    }
    const bullet = line.match(BULLET);
    const numbered = bullet ? null : line.match(NUMBERED);
    if (bullet || numbered) {
      const ordered = Boolean(numbered);
      if (!list || list.ordered !== ordered) {
        flush();
        list = { ordered, start: numbered ? Number(numbered[1]) : 1, items: [] };
      }
      list.items.push([(bullet ?? numbered)![2]]);
      continue;
    }
    const quoted = line.match(QUOTE);
    if (quoted) {
      if (!quote.length) flush();
      quote.push(quoted[1]);
      continue;
    }
    if (list && /^\s/.test(line)) {
      list.items[list.items.length - 1].push(line.trim()); // an indented line continues the item
      continue;
    }
    if (list || quote.length) flush();
    paragraph.push(line);
  }
  flush();
  return blocks;
}

/** The plain text of some inlines (for titles and tests). */
export function inlineText(inlines: Inline[]): string {
  return inlines.map((i) => (i.kind === "text" || i.kind === "code" ? i.text : i.kind === "break" ? "\n" : inlineText(i.children))).join("");
}
