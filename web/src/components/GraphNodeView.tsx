/** One node on the canvas: header, typed output and input handles, widgets, run state, images,
 * and its mode (bypassed: translucent purple; muted: greyed). */
import { Handle, Position, useStore as useFlowStore, type NodeProps } from "@xyflow/react";
import { memo, useState } from "react";
import { imageUrl } from "../api";
import { portColour } from "../ports";
import { isWidget, openLightbox, setTitle, toggleSocket, useEditor, type NodeRunState } from "../store";
import type { InputSpec, NodeTypeSpec } from "../types";
import { socketInputs, type GraphNode } from "../workflow";
import { Widget } from "./Widgets";

const EMPTY = "";

function PortHandle({ kind, name, type }: { kind: "source" | "target"; name: string; type: string }) {
  return (
    <Handle
      type={kind}
      position={kind === "source" ? Position.Right : Position.Left}
      id={name}
      className="port"
      style={{ background: portColour(type) }}
      title={`${name}: ${type}`}
      data-port-type={type}
    />
  );
}

/** A node type the catalog does not know: show what the document holds, read-only. */
function unknownSpec(type: string, inputs: Record<string, unknown>, linked: string[]): NodeTypeSpec {
  const names = [...new Set([...Object.keys(inputs), ...linked])];
  return {
    type, version: 0, category: "unknown", title: type, description: `Unknown node type ${type}: the server has no such node.`,
    output_node: false,
    inputs: names.map((name) => ({ name, type: "ANY", required: false, link_only: true })),
    outputs: [],
  };
}

function statusText(state: NodeRunState | undefined): string | null {
  if (!state) return null;
  switch (state.status) {
    case "cached": return "cached";
    case "done": return state.seconds !== undefined ? `${state.seconds < 0.1 ? "<0.1" : state.seconds.toFixed(1)} s` : "done";
    case "running": return state.total ? `${state.step ?? 0}/${state.total}` : "running";
    case "queued": return "waiting";
    case "failed": return "failed";
    case "skipped": return "skipped";
    case "cancelled": return "cancelled";
    case "disabled": return "not run";
  }
}

function InputRow({ nodeId, spec, value, linked, socket, errors, data, nodeType }: {
  nodeId: string; spec: InputSpec; value: unknown; linked: boolean; socket: boolean; errors?: string[];
  data: GraphNode["data"]; nodeType: string;
}) {
  const widget = isWidget(spec);
  const showWidget = widget && !linked && !socket;
  const missing = spec.required && !linked && (spec.link_only || value === undefined);
  const block = spec.multiline || spec.widget === "image" || (nodeType === "load_image" && spec.name === "image");
  const shown = value === undefined ? spec.default : value; // the engine fills in defaults the document leaves out
  return (
    <div className={`input-row ${errors ? "has-error" : ""} ${showWidget ? (block ? "with-widget block" : "with-widget inline") : ""}`} data-input={spec.name}>
      <PortHandle kind="target" name={spec.name} type={spec.type} />
      <div className="input-label" title={`${spec.description ?? ""}${spec.description ? "\n" : ""}${spec.type}${spec.required ? ", required" : ""}`}>
        <span className={missing ? "label missing" : "label"}>{spec.name}</span>
        {!showWidget && <span className="port-type" style={{ color: portColour(spec.type) }}>{spec.type}</span>}
        {widget && (
          <button
            className="nodrag socket-toggle"
            title={socket || linked ? "Turn back into a widget (drops the link)" : "Turn into an input handle"}
            aria-label={socket || linked ? `${spec.name} as widget` : `${spec.name} as input`}
            onClick={() => toggleSocket(nodeId, spec.name)}
          >
            {socket || linked ? "✎" : "⇥"}
          </button>
        )}
      </div>
      {showWidget && <Widget nodeId={nodeId} spec={spec} value={shown} invalid={Boolean(errors)} data={data} nodeType={nodeType} />}
      {errors?.map((message, i) => (
        <div key={i} className="input-error" role="alert">{message}</div>
      ))}
    </div>
  );
}

/** Below this zoom a node draws only its frame, title and handles: widgets are unreadable there,
 * and a 500-node graph pans smoothly. */
export const DETAIL_ZOOM = 0.45;
const zoomedOut = (s: { transform: [number, number, number] }) => s.transform[2] < DETAIL_ZOOM;

/** The node seen from far away: its frame (with the run-status colour), title and handles, so
 * links stay attached; no widgets. */
function NodeOverview({ id, title, spec, className }: { id: string; title: string; spec: NodeTypeSpec; className: string }) {
  return (
    <div className={`${className} overview`} data-node-id={id}>
      <div className="node-header"><span className="node-title">{title}</span></div>
      <div className="overview-ports">
        <div>{spec.inputs.map((input) => <div key={input.name} className="overview-port"><PortHandle kind="target" name={input.name} type={input.type} /></div>)}</div>
        <div>{spec.outputs.map((output) => <div key={output.name} className="overview-port"><PortHandle kind="source" name={output.name} type={output.type} /></div>)}</div>
      </div>
    </div>
  );
}

function GraphNodeView({ id, data, selected }: NodeProps<GraphNode>) {
  const far = useFlowStore(zoomedOut);
  const known = useEditor((s) => s.catalog[data.type]);
  const linkedKey = useEditor((s) => s.linkedInputs[id] ?? EMPTY);
  const run = useEditor((s) => s.runNodes[id]);
  const errors = useEditor((s) => s.errors[id]);
  const images = useEditor((s) => s.outputs[id]);
  const catalogLoaded = useEditor((s) => s.catalogLoaded);
  const [editingTitle, setEditingTitle] = useState(false);

  const linked = linkedKey ? linkedKey.split("\n") : [];
  const spec = known ?? unknownSpec(data.type, data.inputs, linked);
  const sockets = socketInputs(data);
  const title = data.title ?? spec.title;
  const status = run?.status === "disabled" && data.mode !== undefined ? null : statusText(run); // the mode badge says it
  const progress = run?.status === "running" && run.total ? (run.step ?? 0) / run.total : null;
  const classes = [
    "lg-node",
    selected ? "selected" : "",
    run ? `run-${run.status}` : "",
    errors ? "has-error" : "",
    !known && catalogLoaded ? "unknown" : "",
    spec.output_node ? "output-node" : "",
    data.mode === "bypass" || data.mode === "mute" ? `mode-${data.mode}` : "",
  ].join(" ");
  const mode = data.mode === "bypass"
    ? { text: "bypassed", title: "Bypassed: passes its input of each output's type straight through" }
    : data.mode === "mute"
      ? { text: "muted", title: "Muted: does not run, nor what only it feeds" }
      : data.mode !== undefined
        ? { text: String(data.mode), title: "A mode this editor does not know" }
        : null;

  if (far) return <NodeOverview id={id} title={title} spec={spec} className={classes} />;

  // A width and a colour the document gives (ComfyUI's node sizes and colours come in as these).
  const width = typeof data.ui.width === "number" && data.ui.width >= 160 && data.ui.width <= 1200 ? data.ui.width : undefined;
  const colour = typeof data.ui.color === "string" && /^#[0-9a-f]{3}(?:[0-9a-f]{3})?$/i.test(data.ui.color) ? data.ui.color : undefined;

  return (
    <div className={classes} data-node-id={id} data-node-type={data.type} style={width ? { width } : undefined}>
      <div
        className="node-header"
        style={colour ? { background: `color-mix(in srgb, ${colour} 75%, var(--node-header))` } : undefined}
        title={`${spec.description}\n\n${data.type} v${spec.version} · id ${id}\nDouble-click the title to rename`}
      >
        {editingTitle ? (
          <input
            className="nodrag field title-input"
            autoFocus
            defaultValue={title}
            aria-label="node title"
            onBlur={(e) => {
              setEditingTitle(false);
              if (e.target.value !== title) setTitle(id, e.target.value === spec.title ? "" : e.target.value);
            }}
            onKeyDown={(e) => {
              if (e.key === "Enter") (e.target as HTMLInputElement).blur();
              if (e.key === "Escape") setEditingTitle(false);
            }}
          />
        ) : (
          <span className="node-title" onDoubleClick={() => setEditingTitle(true)}>{title}</span>
        )}
        {mode && <span className="node-mode" data-mode={data.mode} title={mode.title}>{mode.text}</span>}
        {status && <span className={`node-status status-${run!.status}`} data-status={run!.status}>{status}</span>}
      </div>
      {progress !== null && (
        <div className="progress" role="progressbar" aria-valuenow={Math.round(progress * 100)} aria-valuemin={0} aria-valuemax={100}>
          <div style={{ width: `${progress * 100}%` }} />
        </div>
      )}
      {(errors?.messages.length || (run?.message && !(run.status === "disabled" && data.mode !== undefined))) && (
        <div className={errors?.messages.length || run?.status === "failed" ? "node-errors" : "node-note"} role="alert">
          {(errors?.messages.length ? errors.messages : [run!.message]).map((message, i) => <div key={i}>{message}</div>)}
        </div>
      )}
      {!known && catalogLoaded && <div className="node-errors">Unknown node type “{data.type}”</div>}
      <div className="node-body">
        {spec.outputs.map((output) => (
          <div key={output.name} className="output-row" title={`${output.description ?? ""}${output.description ? "\n" : ""}${output.type}`}>
            <span className="port-type" style={{ color: portColour(output.type) }}>{output.type}</span>
            <span className="label">{output.name}</span>
            <PortHandle kind="source" name={output.name} type={output.type} />
          </div>
        ))}
        {spec.inputs.map((input) => (
          <InputRow
            key={input.name}
            nodeId={id}
            spec={input}
            value={data.inputs[input.name]}
            linked={linked.includes(input.name)}
            socket={sockets.includes(input.name) || (input.link_only && !isWidget(input))}
            errors={errors?.inputs[input.name]}
            data={data}
            nodeType={data.type}
          />
        ))}
        {errors &&
          Object.entries(errors.inputs)
            .filter(([name]) => !spec.inputs.some((i) => i.name === name))
            .map(([name, messages]) => (
              <div key={name} className="input-error" role="alert">{name}: {messages.join("; ")}</div>
            ))}
      </div>
      {run?.preview && run.status === "running" && <img className="step-preview" src={run.preview} alt="step preview" draggable={false} />}
      {images && images.length > 0 && (
        <div className="node-images">
          {images.map((image) => (
            <img
              key={`${image.subfolder}/${image.filename}`}
              src={imageUrl(image)}
              alt={image.filename}
              title={`${image.filename}: click to enlarge`}
              className="nodrag"
              draggable={false}
              onClick={() => openLightbox(image)}
            />
          ))}
        </div>
      )}
    </div>
  );
}

export default memo(GraphNodeView);
