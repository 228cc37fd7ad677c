/** The editor's layout, and the keyboard shortcuts' handler (the shortcuts are in shortcuts.ts). */
import { ReactFlowProvider, useReactFlow } from "@xyflow/react";
import { useEffect } from "react";
import { handleShortcut, type ShortcutContext } from "./shortcuts";
import Canvas from "./components/Canvas";
import ContextMenu from "./components/ContextMenu";
import { Dialogs, Toasts } from "./components/Dialogs";
import MaskPainter from "./components/MaskPainter";
import NodeSearch from "./components/NodeSearch";
import Palette from "./components/Palette";
import SidePanel, { Lightbox } from "./components/SidePanel";
import Toolbar from "./components/Toolbar";

function useShortcuts() {
  const flow = useReactFlow();
  useEffect(() => {
    const ctx: ShortcutContext = {
      pointer: { x: window.innerWidth / 2, y: window.innerHeight / 2 },
      toFlow: (point) => flow.screenToFlowPosition(point),
      fitView: () => void flow.fitView({ padding: 0.12, duration: 200, maxZoom: 1 }),
      bodyHasFocus: () => document.activeElement === document.body,
    };
    const onMove = (e: MouseEvent) => (ctx.pointer = { x: e.clientX, y: e.clientY });
    const onKey = (e: KeyboardEvent) => void handleShortcut(e, ctx);
    window.addEventListener("keydown", onKey);
    window.addEventListener("mousemove", onMove);
    return () => {
      window.removeEventListener("keydown", onKey);
      window.removeEventListener("mousemove", onMove);
    };
  }, [flow]);
}

function Editor() {
  useShortcuts();
  return (
    <div className="app">
      <Toolbar />
      <div className="main">
        <Palette />
        <Canvas />
        <SidePanel />
      </div>
      <NodeSearch />
      <ContextMenu />
      <Dialogs />
      <MaskPainter />
      <Lightbox />
      <Toasts />
    </div>
  );
}

export default function App() {
  return (
    <ReactFlowProvider>
      <Editor />
    </ReactFlowProvider>
  );
}
