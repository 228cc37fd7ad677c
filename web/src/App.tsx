/** The editor's layout and its global keyboard shortcuts. */
import { ReactFlowProvider, useReactFlow } from "@xyflow/react";
import { useEffect } from "react";
import { run, save } from "./session";
import { autoLayout, copySelected, paste, redo, selectAll, undo, useEditor } from "./store";
import { closeDialog, closeLightbox, closeSearch, openDialog, openSearch, useUi } from "./ui";
import Canvas from "./components/Canvas";
import { Dialogs, Toasts } from "./components/Dialogs";
import NodeSearch from "./components/NodeSearch";
import Palette from "./components/Palette";
import SidePanel, { Lightbox } from "./components/SidePanel";
import Toolbar from "./components/Toolbar";

function isTyping(target: EventTarget | null): boolean {
  const element = target as HTMLElement | null;
  return !!element && (element.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(element.tagName));
}

function useShortcuts() {
  const flow = useReactFlow();
  useEffect(() => {
    let pointer = { x: window.innerWidth / 2, y: window.innerHeight / 2 };
    const onMove = (e: MouseEvent) => (pointer = { x: e.clientX, y: e.clientY });
    const onKey = (e: KeyboardEvent) => {
      const mod = e.ctrlKey || e.metaKey;
      const key = e.key.toLowerCase();
      if (e.key === "Escape") {
        closeSearch();
        closeLightbox();
        closeDialog();
        return;
      }
      if (mod && e.key === "Enter") {
        e.preventDefault();
        run();
        return;
      }
      if (mod && key === "s") {
        e.preventDefault();
        if (!e.shiftKey && useEditor.getState().savedName) save();
        else openDialog("save-as");
        return;
      }
      if (mod && key === "o") {
        e.preventDefault();
        openDialog("open");
        return;
      }
      if (isTyping(e.target) || useUi.getState().dialog || useUi.getState().search) return;
      if (mod && key === "z") {
        e.preventDefault();
        if (e.shiftKey) redo();
        else undo();
      } else if (mod && key === "y") {
        e.preventDefault();
        redo();
      } else if (mod && key === "c") {
        copySelected();
      } else if (mod && key === "v") {
        e.preventDefault();
        paste(flow.screenToFlowPosition(pointer));
      } else if (mod && key === "a") {
        e.preventDefault();
        selectAll();
      } else if (!mod && e.shiftKey && key === "l") {
        autoLayout();
      } else if (!mod && e.shiftKey && key === "f") {
        flow.fitView({ padding: 0.12, duration: 200, maxZoom: 1 });
      } else if (!mod && e.key === " " && document.activeElement === document.body) {
        e.preventDefault();
        openSearch({ screen: pointer, flow: flow.screenToFlowPosition(pointer) });
      }
    };
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
      <Dialogs />
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
