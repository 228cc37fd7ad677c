/**
 * A link, drawn through its reroute points (`ui[target].reroutes[input]`, geometry.ts draws the
 * curve). Double-click or Alt+click the link to add a point there; drag a point to move it;
 * double-click or Alt+click a point to remove it; right-click either for their menu.
 */
import { BaseEdge, EdgeLabelRenderer, useReactFlow, type Edge, type EdgeProps } from "@xyflow/react";
import { memo, useRef } from "react";
import { insertionIndex, routedPath, type XY } from "../geometry";
import { addReroute, beginRerouteDrag, moveReroute, openContextMenu, removeReroute } from "../store";

export interface RoutedEdgeData extends Record<string, unknown> {
  points?: [number, number][];
}
export type RoutedEdgeType = Edge<RoutedEdgeData, "routed">;

const NO_POINTS: [number, number][] = [];

function ReroutePoint({ node, input, index, x, y }: { node: string; input: string; index: number; x: number; y: number }) {
  const flow = useReactFlow();
  const dragging = useRef(false);
  const at = (event: { clientX: number; clientY: number }) => flow.screenToFlowPosition({ x: event.clientX, y: event.clientY });
  return (
    <div
      className="reroute-point nodrag nopan"
      data-node={node}
      data-input={input}
      data-index={index}
      title="Reroute point: drag to move, double-click to remove"
      style={{ transform: `translate(-50%, -50%) translate(${x}px, ${y}px)` }}
      onPointerDown={(event) => {
        if (event.button !== 0) return;
        event.stopPropagation();
        if (event.altKey) {
          removeReroute(node, input, index);
          return;
        }
        beginRerouteDrag();
        dragging.current = true;
        event.currentTarget.setPointerCapture(event.pointerId);
      }}
      onPointerMove={(event) => dragging.current && moveReroute(node, input, index, at(event))}
      onPointerUp={(event) => {
        dragging.current = false;
        event.currentTarget.releasePointerCapture(event.pointerId);
      }}
      onDoubleClick={(event) => {
        event.stopPropagation();
        removeReroute(node, input, index);
      }}
      onContextMenu={(event) => {
        event.preventDefault();
        event.stopPropagation();
        openContextMenu({ screen: { x: event.clientX, y: event.clientY }, flow: at(event), target: { kind: "reroute", node, input, index } });
      }}
    />
  );
}

function RoutedEdge({ id, target, targetHandleId, sourceX, sourceY, targetX, targetY, style, markerEnd, interactionWidth, data }: EdgeProps<RoutedEdgeType>) {
  const flow = useReactFlow();
  const points = data?.points ?? NO_POINTS;
  const line: XY[] = [{ x: sourceX, y: sourceY }, ...points.map(([x, y]) => ({ x, y })), { x: targetX, y: targetY }];
  const input = targetHandleId ?? "";
  const insertAt = (event: React.MouseEvent) => {
    const point = flow.screenToFlowPosition({ x: event.clientX, y: event.clientY });
    return { index: insertionIndex(line, point), point };
  };
  return (
    <>
      <g
        className="routed-edge"
        data-edge={id}
        onDoubleClick={(event) => {
          event.stopPropagation();
          const { index, point } = insertAt(event);
          addReroute(target, input, index, point);
        }}
        onClick={(event) => {
          if (!event.altKey) return;
          const { index, point } = insertAt(event);
          addReroute(target, input, index, point);
        }}
        onContextMenu={(event) => {
          event.preventDefault();
          event.stopPropagation();
          const insert = insertAt(event);
          openContextMenu({ screen: { x: event.clientX, y: event.clientY }, flow: insert.point, target: { kind: "edge", id, node: target, input, insert } });
        }}
      >
        <BaseEdge id={id} path={routedPath(line)} style={style} markerEnd={markerEnd} interactionWidth={interactionWidth} />
      </g>
      {points.length > 0 && (
        <EdgeLabelRenderer>
          {points.map(([x, y], index) => (
            <ReroutePoint key={index} node={target} input={input} index={index} x={x} y={y} />
          ))}
        </EdgeLabelRenderer>
      )}
    </>
  );
}

export default memo(RoutedEdge);
