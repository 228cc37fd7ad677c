/** The graph canvas: React Flow wired to the store, drops, double-click search, shortcuts. */
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
import { useCallback, useEffect, useRef, useState } from "react";
import { portColour } from "../ports";
import { importFile, openWorkflowOfImage } from "../session";
import { keysText, SHORTCUTS } from "../shortcuts";
import {
  addNode,
  beginMove,
  connect,
  connectionRefusal,
  inputSpecOf,
  onEdgesChange,
  onNodesChange,
  openSearch,
  outputTypeOf,
  toast,
  useEditor,
  type NodeRunState,
} from "../store";
import type { GraphEdge, GraphNode } from "../workflow";
import GraphNodeView from "./GraphNodeView";

const nodeTypes = { lg: GraphNodeView };
export const NODE_DRAG_TYPE = "application/x-latentgraph-node";
export const IMAGE_DRAG_TYPE = "application/x-latentgraph-image";

function edgeColour(edge: GraphEdge, nodes: Map<string, GraphNode>, catalog: ReturnType<typeof useEditor.getState>["catalog"]) {
  const source = nodes.get(edge.source);
  const type = source && catalog[source.data.type]?.outputs.find((o) => o.name === edge.sourceHandle)?.type;
  return portColour(type ?? "ANY");
}

/** Minimap: the running node in blue, failures in red, the selection light. */
function minimapColour(node: GraphNode, runNodes: Record<string, NodeRunState>, errors: Record<string, unknown>): string {
  if (errors[node.id] || runNodes[node.id]?.status === "failed") return "#ff6b6b";
  if (runNodes[node.id]?.status === "running") return "#6ea8fe";
  return node.selected ? "#c8cdd6" : "#59606e";
}

export default function Canvas() {
  const nodes = useEditor((s) => s.nodes);
  const rawEdges = useEditor((s) => s.edges);
  const catalog = useEditor((s) => s.catalog);
  const fitRequest = useEditor((s) => s.fitRequest);
  const runNodes = useEditor((s) => s.runNodes);
  const errors = useEditor((s) => s.errors);
  const nodeColour = useCallback((node: GraphNode) => minimapColour(node, runNodes, errors), [runNodes, errors]);
  const flow = useReactFlow();
  const wrapper = useRef<HTMLDivElement>(null);
  const empty = useEditor((s) => s.nodes.length === 0);
  const [dropping, setDropping] = useState(false);

  // Edges take the colour of the type they carry; recomputed only when edges or catalog change.
  const colouredEdges = useRef<{ raw: GraphEdge[]; catalog: unknown; edges: GraphEdge[] }>({ raw: [], catalog: null, edges: [] });
  if (colouredEdges.current.raw !== rawEdges || colouredEdges.current.catalog !== catalog) {
    const byId = new Map(nodes.map((n) => [n.id, n]));
    colouredEdges.current = {
      raw: rawEdges,
      catalog,
      edges: rawEdges.map((edge) => ({ ...edge, style: { stroke: edgeColour(edge, byId, catalog), strokeWidth: edge.selected ? 3.5 : 2 } })),
    };
  }

  useEffect(() => {
    // Tests and the console drive the viewport through this (e2e perf pans with it).
    (window as unknown as { latentgraph?: Record<string, unknown> }).latentgraph ??= {};
    (window as unknown as { latentgraph: Record<string, unknown> }).latentgraph.flow = flow;
  }, [flow]);

  useEffect(() => {
    if (fitRequest) requestAnimationFrame(() => flow.fitView({ padding: 0.12, duration: 0, maxZoom: 1 }));
  }, [fitRequest, flow]);

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
          <p>Drop a workflow JSON or a PNG made by Latentgraph here to open it.</p>
        </div>
      )}
      <ReactFlow<GraphNode, GraphEdge>
        nodes={nodes}
        edges={colouredEdges.current.edges}
        nodeTypes={nodeTypes}
        onNodesChange={onNodesChange}
        onEdgesChange={onEdgesChange}
        onConnect={onConnect}
        onConnectEnd={onConnectEnd}
        onNodeDragStart={beginMove}
        onSelectionDragStart={beginMove}
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
