/**
 * The right-click menu: on the canvas (add a node, note or group; paste), on a node (bypass, mute,
 * group, delete: for the whole selection when the node is part of it), on a note (edit, colour,
 * delete), on a group (rename, colour, delete: its nodes stay), on a link (add a reroute point,
 * remove them, delete) and on a reroute point.
 */
import { useEffect, useRef, type ReactNode } from "react";
import { keysText, type ShortcutId } from "../shortcuts";
import {
  addGroup,
  addNote,
  addReroute,
  clearReroutes,
  closeContextMenu,
  deleteItem,
  editNote,
  ITEM_COLOURS,
  onEdgesChange,
  onNodesChange,
  openSearch,
  paste,
  removeReroute,
  setGroupTitle,
  setItemColor,
  toggleMode,
  useEditor,
  type ContextMenuState,
} from "../store";
import { reroutesOf, type GroupNode, type NoteNode } from "../workflow";

function Item({ label, shortcut, onClick, danger }: { label: string; shortcut?: ShortcutId; onClick(): void; danger?: boolean }) {
  return (
    <li role="none">
      <button
        role="menuitem"
        className={danger ? "danger" : undefined}
        onClick={() => {
          closeContextMenu();
          onClick();
        }}
      >
        <span>{label}</span>
        {shortcut && <kbd>{keysText(shortcut)}</kbd>}
      </button>
    </li>
  );
}

function Colours({ item }: { item: NoteNode | GroupNode }) {
  return (
    <li role="none" className="menu-colours" aria-label="Colour">
      <button role="menuitem" className={`swatch none ${item.data.color === undefined ? "active" : ""}`} title="Default colour" aria-label="default colour" onClick={() => setItemColor(item.id, undefined)} />
      {ITEM_COLOURS.map((colour) => (
        <button
          key={colour.value}
          role="menuitem"
          className={`swatch ${item.data.color === colour.value ? "active" : ""}`}
          style={{ background: colour.value }}
          title={colour.name}
          aria-label={`${colour.name} colour`}
          onClick={() => setItemColor(item.id, colour.value)}
        />
      ))}
      <label className="swatch custom" title="Another colour">
        <input type="color" aria-label="custom colour" value={item.data.color ?? "#808080"} onChange={(e) => setItemColor(item.id, e.target.value)} />
      </label>
    </li>
  );
}

function GroupRename({ group }: { group: GroupNode }) {
  return (
    <li role="none" className="menu-field">
      <input
        className="field"
        defaultValue={group.data.title}
        aria-label="Group title"
        placeholder="Group title"
        onKeyDown={(event) => {
          if (event.key === "Enter") {
            setGroupTitle(group.id, event.currentTarget.value);
            closeContextMenu();
          }
        }}
        onBlur={(event) => setGroupTitle(group.id, event.target.value)}
      />
    </li>
  );
}

function items(menu: ContextMenuState): ReactNode {
  const state = useEditor.getState();
  const { target, flow, screen } = menu;
  switch (target.kind) {
    case "pane": {
      const selected = state.nodes.some((n) => n.selected) || state.notes.some((n) => n.selected);
      return (
        <>
          <Item label="Add a node…" shortcut="search" onClick={() => openSearch({ screen, flow })} />
          <Item label="Add a note" onClick={() => addNote(flow)} />
          <Item label={selected ? "Group the selected nodes" : "Add a group"} shortcut="group" onClick={() => addGroup(flow)} />
          {state.clipboard && <Item label="Paste" shortcut="paste" onClick={() => paste(flow)} />}
        </>
      );
    }
    case "node": {
      const node = state.nodes.find((n) => n.id === target.id);
      if (!node) return null;
      const ids = node.selected ? state.nodes.filter((n) => n.selected).map((n) => n.id) : [node.id];
      const chosen = state.nodes.filter((n) => ids.includes(n.id));
      const all = (mode: string) => chosen.every((n) => n.data.mode === mode);
      const several = ids.length > 1 ? ` (${ids.length} nodes)` : "";
      return (
        <>
          <Item label={(all("bypass") ? "Stop bypassing" : "Bypass") + several} shortcut="bypass" onClick={() => toggleMode("bypass", ids)} />
          <Item label={(all("mute") ? "Unmute" : "Mute") + several} shortcut="mute" onClick={() => toggleMode("mute", ids)} />
          <Item
            label={`Put in a new group${several}`}
            onClick={() => {
              useEditor.setState((s) => ({ nodes: s.nodes.map((n) => (ids.includes(n.id) !== !!n.selected ? { ...n, selected: ids.includes(n.id) } : n)) }));
              addGroup();
            }}
          />
          <Item label={`Delete${several}`} danger onClick={() => onNodesChange(ids.map((id) => ({ type: "remove", id })))} />
        </>
      );
    }
    case "note": {
      const note = state.notes.find((n) => n.id === target.id);
      if (!note) return null;
      return (
        <>
          <Item label="Edit the text" onClick={() => editNote(note.id)} />
          <Colours item={note} />
          <Item label="Delete the note" danger onClick={() => deleteItem(note.id)} />
        </>
      );
    }
    case "group": {
      const group = state.groups.find((g) => g.id === target.id);
      if (!group) return null;
      return (
        <>
          <GroupRename group={group} />
          <Colours item={group} />
          <Item label="Delete the group (its nodes stay)" danger onClick={() => deleteItem(group.id)} />
        </>
      );
    }
    case "edge": {
      const node = state.nodes.find((n) => n.id === target.node);
      const points = node ? reroutesOf(node.data.ui)[target.input] ?? [] : [];
      return (
        <>
          <Item label="Add a reroute point here" onClick={() => addReroute(target.node, target.input, target.insert.index, target.insert.point)} />
          {points.length > 0 && <Item label="Remove its reroute points" onClick={() => clearReroutes(target.node, target.input)} />}
          <Item label="Delete the link" danger onClick={() => onEdgesChange([{ type: "remove", id: target.id }])} />
        </>
      );
    }
    case "reroute":
      return (
        <>
          <Item label="Remove this point" onClick={() => removeReroute(target.node, target.input, target.index)} />
          <Item label="Remove all the link's points" onClick={() => clearReroutes(target.node, target.input)} />
        </>
      );
  }
}

export default function ContextMenu() {
  const menu = useEditor((s) => s.contextMenu);
  // Re-render when what the menu shows changes (a colour picked).
  useEditor((s) => s.notes);
  useEditor((s) => s.groups);
  const ref = useRef<HTMLUListElement>(null);
  useEffect(() => {
    if (!menu || !ref.current) return;
    // Keep it on screen.
    const box = ref.current.getBoundingClientRect();
    const x = Math.min(menu.screen.x, window.innerWidth - box.width - 4);
    const y = Math.min(menu.screen.y, window.innerHeight - box.height - 4);
    ref.current.style.left = `${Math.max(4, x)}px`;
    ref.current.style.top = `${Math.max(4, y)}px`;
  }, [menu]);
  if (!menu) return null;
  return (
    <div className="popup-backdrop" onMouseDown={closeContextMenu} onContextMenu={(e) => { e.preventDefault(); closeContextMenu(); }}>
      <ul
        ref={ref}
        className="context-menu"
        role="menu"
        aria-label={`${menu.target.kind} menu`}
        style={{ left: menu.screen.x, top: menu.screen.y }}
        onMouseDown={(e) => e.stopPropagation()}
      >
        {items(menu)}
      </ul>
    </div>
  );
}
