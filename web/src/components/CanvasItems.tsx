/**
 * Notes and groups on the canvas. A note shows its markdown (Markdown.tsx) and is edited as text
 * on double-click; a group is a titled, coloured frame behind the nodes, dragged by its title bar
 * (carrying what lies inside it, see store/annotations.ts) and renamed by double-clicking the
 * title. Both resize from their edges and corners while selected.
 */
import { NodeResizer, type NodeProps } from "@xyflow/react";
import { memo, useState, type CSSProperties } from "react";
import { beginMove, editNote, setGroupTitle, setNoteText, useEditor } from "../store";
import type { GroupNode, NoteNode } from "../workflow";
import Markdown from "./Markdown";

export const DEFAULT_GROUP_COLOUR = "#5c6f8a";
export const DEFAULT_NOTE_COLOUR = "#6b6040";

function NoteViewImpl({ id, data, selected }: NodeProps<NoteNode>) {
  const editing = useEditor((s) => s.editingNote === id);
  return (
    <div
      className={`lg-note ${selected ? "selected" : ""}`}
      style={{ "--item-colour": data.color ?? DEFAULT_NOTE_COLOUR } as CSSProperties}
      data-note-id={data.id}
      onDoubleClick={(event) => {
        event.stopPropagation();
        if (!editing) editNote(id);
      }}
    >
      <NodeResizer isVisible={selected && !editing} minWidth={120} minHeight={50} onResizeStart={beginMove} color="var(--accent)" />
      {editing ? (
        <textarea
          className="note-editor nodrag nowheel nopan"
          autoFocus
          defaultValue={data.text}
          aria-label="Note text"
          placeholder="Markdown: **bold**, *italic*, `code`, # heading, - list, [link](https://…)"
          onBlur={(event) => {
            setNoteText(id, event.target.value);
            editNote(null);
          }}
          onKeyDown={(event) => {
            if (event.key === "Escape") event.currentTarget.blur();
          }}
        />
      ) : (
        <div className="note-body nowheel" title="Double-click to edit">
          {data.text.trim() ? <Markdown text={data.text} /> : <p className="note-empty">Empty note: double-click to write (markdown)</p>}
        </div>
      )}
    </div>
  );
}

function GroupViewImpl({ id, data, selected }: NodeProps<GroupNode>) {
  const [renaming, setRenaming] = useState(false);
  return (
    <div
      className={`lg-group ${selected ? "selected" : ""}`}
      style={{ "--item-colour": data.color ?? DEFAULT_GROUP_COLOUR } as CSSProperties}
      data-group-id={data.id}
    >
      <NodeResizer isVisible={selected} minWidth={160} minHeight={80} onResizeStart={beginMove} color="var(--accent)" />
      <div className="group-title" title="Drag to move the group and what is inside it; double-click to rename" onDoubleClick={(event) => {
        event.stopPropagation();
        setRenaming(true);
      }}>
        {renaming ? (
          <input
            className="field nodrag"
            autoFocus
            defaultValue={data.title}
            aria-label="Group title"
            onBlur={(event) => {
              setRenaming(false);
              setGroupTitle(id, event.target.value);
            }}
            onKeyDown={(event) => {
              if (event.key === "Enter") event.currentTarget.blur();
              if (event.key === "Escape") setRenaming(false);
            }}
          />
        ) : (
          <span className="group-name">{data.title || "\u00a0"}</span>
        )}
      </div>
    </div>
  );
}

export const NoteView = memo(NoteViewImpl);
export const GroupView = memo(GroupViewImpl);
