/** The graph canvas: React Flow wired to the store (nodes, notes, groups, links with reroute
 * points), drops, double-click search, context menus, shortcuts. */
import {
  Background,
  BackgroundVariant,
  Controls,
  MiniMap,
  ReactFlow,
  useReactFlow,
  type Connection,
  type FinalConnectionState,
  type IsValidConnection,
} from "@xyflow/react";
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { portColour } from "../ports";
import { importFile, openWorkflowOfImage } from "../session";
import { keysText, SHORTCUTS } from "../shortcuts";
import {
  addGroup,
  addNode,
  addNote,
  beginDrag,
  connect,
  connectionRefusal,
  endDrag,
  inputSpecOf,
  onEdgesChange,
  onNodesChange,
  openContextMenu,
  openSearch,
  outputTypeOf,
  toast,
  useEditor,
  type ContextTarget,
  type NodeRunState,
} from "../store";
import { REROUTES_KEY, reroutesOf, type CanvasNode, type GraphEdge, type GraphNode } from "../workflow";
import { DEFAULT_GROUP_COLOUR, DEFAULT_NOTE_COLOUR, GroupView, NoteView } from "./CanvasItems";
import GraphNodeView from "./GraphNodeView";
import RoutedEdge from "./RoutedEdge";

const nodeTypes = { lg: GraphNodeView, lgnote: NoteView, lggroup: GroupView };
const edgeTypes = { routed: RoutedEdge };
export const NODE_DRAG_TYPE = "application/x-latentgraph-node";
export const IMAGE_DRAG_TYPE = "application/x-latentgraph-image";
/** A note or a group dragged from the palette ("note" | "group"). */
export const ITEM_DRAG_TYPE = "application/x-latentgraph-item";

type Catalog = ReturnType<typeof useEditor.getState>["catalog"];

function edgeColour(edge: GraphEdge, nodes: Map<string, GraphNode>, catalog: Catalog) {
  const source = nodes.get(edge.source);
  const type = source && catalog[source.data.type]?.outputs.find((o) => o.name === edge.sourceHandle)?.type;
  return portColour(type ?? "ANY");
}

/** "#rgb" or "#rrggbb" at a third of its opacity (other colours as they are). */
function translucent(colour: string): string {
  const short = /^#([0-9a-f])([0-9a-f])([0-9a-f])$/i.exec(colour);
  if (short) return `#${short[1]}${short[1]}${short[2]}${short[2]}${short[3]}${short[3]}55`;
  return /^#[0-9a-f]{6}$/i.test(colour) ? `${colour}55` : colour;
}

/** Minimap: the running node in blue, failures in red, the selection light; notes and groups in
 * their colours. */
function minimapColour(node: CanvasNode, runNodes: Record<string, NodeRunState>, errors: Record<string, unknown>): string {
  if (node.type === "lggroup") return translucent(node.data.color ?? DEFAULT_GROUP_COLOUR);
  if (node.type === "lgnote") return node.data.color ?? DEFAULT_NOTE_COLOUR;
  if (errors[node.id] || runNodes[node.id]?.status === "failed") return "#ff6b6b";
  if (runNodes[node.id]?.status === "running") return "#6ea8fe";
  return node.selected ? "#c8cdd6" : "#59606e";
}

interface EdgeCacheEntry {
  raw: GraphEdge;
  reroutes: unknown;
  catalog: Catalog;
  edge: GraphEdge;
}

/**
 * The edges React Flow draws: coloured by the type they carry, with their reroute points. An edge
 * object is made anew only when its link, its points or the catalog changed, and the list only when
 * one of them did (dragging a node changes none).
 */
function useDrawnEdges(nodes: GraphNode[], rawEdges: GraphEdge[], catalog: Catalog): GraphEdge[] {
  const cache = useRef(new Map<string, EdgeCacheEntry>());
  const last = useRef<GraphEdge[]>([]);
  const byId = new Map(nodes.map((n) => [n.id, n]));
  let changed = rawEdges.length !== last.current.length;
  const next = rawEdges.map((raw, i) => {
    const reroutes = byId.get(raw.target)?.data.ui[REROUTES_KEY];
    const hit = cache.current.get(raw.id);
    if (hit && hit.raw === raw && hit.reroutes === reroutes && hit.catalog === catalog) {
      if (last.current[i] !== hit.edge) changed = true;
      return hit.edge;
    }
    changed = true;
    const points = reroutes && raw.targetHandle ? reroutesOf(byId.get(raw.target)!.data.ui)[raw.targetHandle] : undefined;
    const edge: GraphEdge = {
      ...raw,
      type: "routed",
      data: points ? { points } : undefined,
      style: { stroke: edgeColour(raw, byId, catalog), strokeWidth: raw.selected ? 3.5 : 2 },
    };
    cache.current.set(raw.id, { raw, reroutes, catalog, edge });
    return edge;
  });
  if (changed) {
    if (cache.current.size > rawEdges.length * 2 + 64) {
      const live = new Set(rawEdges.map((e) => e.id));
      for (const id of cache.current.keys()) if (!live.has(id)) cache.current.delete(id);
    }
    last.current = next;
  }
  return last.current;
}

function contextTarget(node: CanvasNode): ContextTarget {
  if (node.type === "lgnote") return { kind: "note", id: node.id };
  if (node.type === "lggroup") return { kind: "group", id: node.id };
  return { kind: "node", id: node.id };
}

export default function Canvas() {
  const nodes = useEditor((s) => s.nodes);
  const notes = useEditor((s) => s.notes);
  const groups = useEditor((s) => s.groups);
  const rawEdges = useEditor((s) => s.edges);
  const catalog = useEditor((s) => s.catalog);
  const fitRequest = useEditor((s) => s.fitRequest);
  const focusRequest = useEditor((s) => s.focusRequest);
  const runNodes = useEditor((s) => s.runNodes);
  const errors = useEditor((s) => s.errors);
  const nodeColour = useCallback((node: CanvasNode) => minimapColour(node, runNodes, errors), [runNodes, errors]);
  const flow = useReactFlow<CanvasNode, GraphEdge>();
  const wrapper = useRef<HTMLDivElement>(null);
  const empty = useEditor((s) => s.nodes.length === 0 && s.notes.length === 0 && s.groups.length === 0);
  const [dropping, setDropping] = useState(false);

  // Groups first (behind), then nodes, then notes.
  const canvasNodes = useMemo<CanvasNode[]>(
    () => (groups.length || notes.length ? [...groups, ...nodes, ...notes] : nodes),
    [groups, nodes, notes],
  );
  const edges = useDrawnEdges(nodes, rawEdges, catalog);

  useEffect(() => {
    // Tests and the console drive the viewport through this (e2e perf pans with it).
    (window as unknown as { latentgraph?: Record<string, unknown> }).latentgraph ??= {};
    (window as unknown as { latentgraph: Record<string, unknown> }).latentgraph.flow = flow;
  }, [flow]);

  useEffect(() => {
    if (fitRequest) requestAnimationFrame(() => flow.fitView({ padding: 0.12, duration: 0, maxZoom: 1 }));
  }, [fitRequest, flow]);

  useEffect(() => {
    if (focusRequest?.ids.length) {
      requestAnimationFrame(() => flow.fitView({ nodes: focusRequest.ids.map((id) => ({ id })), padding: 0.3, duration: 200, maxZoom: 1 }));
    }
  }, [focusRequest, flow]);

  const onDragStart = useCallback((_: unknown, dragged: CanvasNode[]) => beginDrag(dragged.map((n) => n.id)), []);
  const onNodeDragStart = useCallback((event: unknown, _node: CanvasNode, dragged: CanvasNode[]) => onDragStart(event, dragged), [onDragStart]);

  const menuAt = useCallback(
    (event: React.MouseEvent | MouseEvent, target: ContextTarget) => {
      event.preventDefault();
      openContextMenu({ screen: { x: event.clientX, y: event.clientY }, flow: flow.screenToFlowPosition({ x: event.clientX, y: event.clientY }), target });
    },
    [flow],
  );

  const isValidConnection: IsValidConnection<GraphEdge> = useCallback((connection) => connectionRefusal(connection) === null, []);

  const onConnect = useCallback((connection: Connection) => {
    connect(connection);
  }, []);

  /** A refused drop on a handle says why; a drop on empty canvas offers matching node types. */
  const onConnectEnd = useCallback(
    (event: MouseEvent | TouchEvent, state: FinalConnectionState) => {
      const from = state.fromHandle;
      if (!from?.id) return;
      if (state.toHandle?.id && !state.isValid) {
        const to = state.toHandle;
        if (to.type === from.type) {
          toast(`Link refused: ${from.type === "source" ? "outputs connect to inputs" : "inputs take links from outputs"}`, "error");
          return;
        }
        const connection = from.type === "source"
          ? { source: from.nodeId, sourceHandle: from.id, target: to.nodeId, targetHandle: to.id ?? null }
          : { source: to.nodeId, sourceHandle: to.id ?? null, target: from.nodeId, targetHandle: from.id };
        toast(`Link refused: ${connectionRefusal(connection as Connection) ?? "not allowed"}`, "error");
        return;
      }
      if (!state.toHandle && (event.target as Element | null)?.classList?.contains("react-flow__pane")) {
        const point = "changedTouches" in event ? event.changedTouches[0] : event;
        const portType = from.type === "source" ? outputTypeOf(from.nodeId, from.id) : inputSpecOf(from.nodeId, from.id)?.type;
        openSearch({
          screen: { x: point.clientX, y: point.clientY },
          flow: flow.screenToFlowPosition({ x: point.clientX, y: point.clientY }),
          link: { node: from.nodeId, handle: from.id, handleType: from.type, portType: portType ?? "ANY" },
        });
      }
    },
    [flow],
  );

  const onDoubleClick = useCallback(
    (event: React.MouseEvent) => {
      if (!(event.target as Element).classList.contains("react-flow__pane")) return;
      openSearch({ screen: { x: event.clientX, y: event.clientY }, flow: flow.screenToFlowPosition({ x: event.clientX, y: event.clientY }) });
    },
    [flow],
  );

  const onDragOver = useCallback((event: React.DragEvent) => {
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    if (event.dataTransfer.types.includes("Files")) setDropping(true);
  }, []);

  const onDrop = useCallback(
    async (event: React.DragEvent) => {
      event.preventDefault();
      setDropping(false);
      const position = flow.screenToFlowPosition({ x: event.clientX, y: event.clientY });
      const type = event.dataTransfer.getData(NODE_DRAG_TYPE);
      if (type) {
        addNode(type, position);
        return;
      }
      const item = event.dataTransfer.getData(ITEM_DRAG_TYPE);
      if (item === "note") addNote(position);
      if (item === "group") addGroup(position);
      if (item) return;
      const image = event.dataTransfer.getData(IMAGE_DRAG_TYPE);
      if (image) {
        const { url, label } = JSON.parse(image) as { url: string; label: string };
        await openWorkflowOfImage(url, label);
        return;
      }
      const file = event.dataTransfer.files[0];
      if (file) await importFile(file);
    },
    [flow],
  );

  return (
    <div
      className={`canvas ${dropping ? "dropping" : ""}`}
      ref={wrapper}
      onDoubleClick={onDoubleClick}
      onDragOver={onDragOver}
      onDragLeave={(e) => e.currentTarget === e.target || !e.currentTarget.contains(e.relatedTarget as Node) ? setDropping(false) : undefined}
      onDrop={onDrop}
    >
      {empty && (
        <div className="canvas-hint">
          <p>{SHORTCUTS.search.gesture} (or press {keysText("search")}) to add a node, or drag one from the palette.</p>
          <p>Drop a workflow here to open it: a JSON or PNG made by Latentgraph, or one made by ComfyUI.</p>
        </div>
      )}
      <ReactFlow<CanvasNode, GraphEdge>
        nodes={canvasNodes}
        edges={edges}
        nodeTypes={nodeTypes}
        edgeTypes={edgeTypes}
        onNodesChange={onNodesChange}
        onEdgesChange={onEdgesChange}
        onConnect={onConnect}
        onConnectEnd={onConnectEnd}
        onNodeDragStart={onNodeDragStart}
        onSelectionDragStart={onDragStart}
        onNodeDragStop={endDrag}
        onSelectionDragStop={endDrag}
        onNodeContextMenu={(event, node) => menuAt(event, contextTarget(node))}
        onSelectionContextMenu={(event, selected) => {
          const first = selected.find((n) => n.type === "lg") ?? selected[0];
          if (first) menuAt(event, contextTarget(first));
        }}
        onPaneContextMenu={(event) => menuAt(event, { kind: "pane" })}
        isValidConnection={isValidConnection}
        zoomOnDoubleClick={false}
        deleteKeyCode={SHORTCUTS.delete.keys}
        multiSelectionKeyCode={["Control", "Meta", "Shift"]}
        selectionKeyCode="Shift"
        minZoom={0.05}
        maxZoom={2.5}
        connectionRadius={24}
        colorMode="dark"
        proOptions={{ hideAttribution: true }}
        onlyRenderVisibleElements
      >
        <Background variant={BackgroundVariant.Dots} gap={24} size={1.2} color="#3a3f4b" />
        <Controls position="bottom-left" fitViewOptions={{ padding: 0.12, maxZoom: 1 }} showInteractive={false} />
        <MiniMap position="bottom-right" pannable zoomable nodeColor={nodeColour} maskColor="rgba(15,17,21,0.7)" />
      </ReactFlow>
    </div>
  );
}
