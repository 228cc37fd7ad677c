/** A note's markdown, drawn from the tree markdown.ts parses: React elements and text only (React
 * escapes every text; no HTML from the note ever reaches the page as markup). */
import { createElement, Fragment, type ReactNode } from "react";
import { parseMarkdown, type Block, type Inline } from "../markdown";

function inlines(list: Inline[]): ReactNode[] {
  return list.map((item, i) => {
    switch (item.kind) {
      case "text":
        return <Fragment key={i}>{item.text}</Fragment>;
      case "strong":
        return <strong key={i}>{inlines(item.children)}</strong>;
      case "em":
        return <em key={i}>{inlines(item.children)}</em>;
      case "code":
        return <code key={i}>{item.text}</code>;
      case "link":
        return (
          <a key={i} href={item.href} target="_blank" rel="noopener noreferrer nofollow" className="nodrag">
            {inlines(item.children)}
          </a>
        );
      case "break":
        return <br key={i} />;
    }
  });
}

function block(item: Block, i: number): ReactNode {
  switch (item.kind) {
    case "heading":
      return createElement(`h${item.level}`, { key: i }, inlines(item.children));
    case "paragraph":
      return <p key={i}>{inlines(item.children)}</p>;
    case "quote":
      return <blockquote key={i}>{inlines(item.children)}</blockquote>;
    case "code":
      return <pre key={i}><code>{item.text}</code></pre>;
    case "rule":
      return <hr key={i} />;
    case "list": {
      const items = item.items.map((content, j) => <li key={j}>{inlines(content)}</li>);
      return item.ordered ? <ol key={i} start={item.start === 1 ? undefined : item.start}>{items}</ol> : <ul key={i}>{items}</ul>;
    }
  }
}

export default function Markdown({ text }: { text: string }) {
  return <>{parseMarkdown(text).map(block)}</>;
}
