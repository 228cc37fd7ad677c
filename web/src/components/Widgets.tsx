/** Input widgets that follow the catalog's schema: numbers with bounds, sliders, choices, text, seeds, images. */
import { useEffect, useRef, useState } from "react";
import { imageViewUrl, inputImage } from "../api";
import { uploadInputImage } from "../session";
import { openMaskPainter, randomSeed, seedControlOf, setInput, setSeedControl, type SeedControl } from "../store";
import type { InputSpec } from "../types";
import type { GraphNodeData } from "../workflow";

interface WidgetProps {
  nodeId: string;
  spec: InputSpec;
  value: unknown;
  invalid: boolean;
}

const SAFE_MAX = Number.MAX_SAFE_INTEGER;

function bounds(spec: InputSpec) {
  const min = spec.minimum ?? spec.exclusive_minimum;
  const max = spec.maximum ?? spec.exclusive_maximum;
  return {
    min: min === undefined ? undefined : Math.max(min, -SAFE_MAX),
    max: max === undefined ? undefined : Math.min(max, SAFE_MAX),
  };
}

/** A slider fits a bounded range of at most a few hundred steps (denoise, cfg, strength...). */
function slides(spec: InputSpec): boolean {
  const { min, max } = bounds(spec);
  if (min === undefined || max === undefined || spec.widget === "seed") return false;
  const step = spec.step ?? (spec.type === "INT" ? 1 : 0.01);
  return (max - min) / step <= 1000 && max - min <= 100;
}

/** Number field that edits a local text and commits a clamped, stepped number on blur or Enter. */
export function NumberWidget({ nodeId, spec, value, invalid }: WidgetProps) {
  const integer = spec.type === "INT";
  const { min, max } = bounds(spec);
  const step = spec.step ?? (integer ? 1 : 0.01);
  const [text, setText] = useState(String(value ?? ""));
  const focused = useRef(false);
  useEffect(() => {
    if (!focused.current) setText(value === undefined || value === null ? "" : String(value));
  }, [value]);

  const commit = (raw: string) => {
    const parsed = Number(raw);
    if (raw.trim() === "" || !Number.isFinite(parsed)) {
      setText(String(value ?? ""));
      return;
    }
    let next = integer ? Math.round(parsed) : parsed;
    if (min !== undefined) next = Math.max(min, next);
    if (max !== undefined) next = Math.min(max, next);
    if (!integer) next = Number(next.toFixed(6));
    setText(String(next));
    if (next !== value) setInput(nodeId, spec.name, next);
  };

  const slider = slides(spec) ? (
    <input
      className="nodrag slider"
      type="range"
      min={min}
      max={max}
      step={step}
      value={typeof value === "number" ? value : Number(spec.default ?? min)}
      onChange={(e) => setInput(nodeId, spec.name, integer ? Math.round(Number(e.target.value)) : Number(e.target.value))}
      aria-label={`${spec.name} slider`}
    />
  ) : null;

  return (
    <div className="number-widget">
      {slider}
      <input
        className={`nodrag field number ${invalid ? "invalid" : ""}`}
        type="number"
        inputMode={integer ? "numeric" : "decimal"}
        value={text}
        min={min}
        max={max}
        step={step}
        name={spec.name}
        aria-label={spec.name}
        onFocus={() => (focused.current = true)}
        onChange={(e) => {
          setText(e.target.value);
          // Spinner clicks and arrow keys commit at once; typing commits on blur or Enter.
          const native = e.nativeEvent as InputEvent;
          if (!native.inputType) commit(e.target.value);
        }}
        onBlur={(e) => {
          focused.current = false;
          commit(e.target.value);
        }}
        onKeyDown={(e) => {
          if (e.key === "Enter") commit((e.target as HTMLInputElement).value);
        }}
      />
    </div>
  );
}

const SEED_CONTROLS: SeedControl[] = ["fixed", "increment", "decrement", "randomize"];

function DiceIcon() {
  return (
    <svg width="14" height="14" viewBox="0 0 16 16" aria-hidden="true">
      <rect x="1.5" y="1.5" width="13" height="13" rx="3" fill="none" stroke="currentColor" strokeWidth="1.4" />
      <circle cx="5" cy="5" r="1.3" fill="currentColor" />
      <circle cx="8" cy="8" r="1.3" fill="currentColor" />
      <circle cx="11" cy="11" r="1.3" fill="currentColor" />
    </svg>
  );
}

export function SeedWidget(props: WidgetProps & { data: GraphNodeData }) {
  const { nodeId, spec, data } = props;
  const control = seedControlOf(data, spec.name);
  return (
    <div className="seed-widget">
      <div className="seed-row">
        <NumberWidget {...props} />
        <button
          className="nodrag icon-button"
          title="New random seed now"
          aria-label="randomize seed"
          onClick={() => setInput(nodeId, spec.name, randomSeed())}
        >
          <DiceIcon />
        </button>
      </div>
      <div className="seed-row">
        <label className="seed-control" title="What happens to the seed after each run">
          after run
          <select className="nodrag field" value={control} aria-label={`${spec.name} after run`} onChange={(e) => setSeedControl(nodeId, spec.name, e.target.value as SeedControl)}>
            {SEED_CONTROLS.map((c) => (
              <option key={c} value={c}>
                {c}
              </option>
            ))}
          </select>
        </label>
      </div>
    </div>
  );
}

export function ChoiceWidget({ nodeId, spec, value, invalid }: WidgetProps) {
  const choices = (spec.choices ?? []).map(String);
  const current = value === undefined || value === null ? "" : String(value);
  const missing = current !== "" && !choices.includes(current);
  return (
    <select
      className={`nodrag field ${invalid || missing ? "invalid" : ""}`}
      value={current}
      name={spec.name}
      aria-label={spec.name}
      title={missing ? `${current} is not among the choices the server offers` : undefined}
      onChange={(e) => {
        const raw = e.target.value;
        const numeric = spec.type === "INT" || spec.type === "FLOAT";
        setInput(nodeId, spec.name, numeric ? Number(raw) : raw);
      }}
    >
      {current === "" && <option value="">{choices.length ? "— choose —" : "— none available —"}</option>}
      {missing && <option value={current}>{current} (missing)</option>}
      {choices.map((choice) => (
        <option key={choice} value={choice}>
          {choice}
        </option>
      ))}
    </select>
  );
}

export function TextWidget({ nodeId, spec, value, invalid }: WidgetProps) {
  const text = typeof value === "string" ? value : value === undefined || value === null ? "" : String(value);
  const common = {
    className: `nodrag nowheel field ${invalid ? "invalid" : ""}`,
    value: text,
    name: spec.name,
    "aria-label": spec.name,
    maxLength: spec.max_length,
    spellCheck: false,
    onChange: (e: React.ChangeEvent<HTMLInputElement | HTMLTextAreaElement>) => setInput(nodeId, spec.name, e.target.value),
  };
  return spec.multiline ? <textarea {...common} rows={3} placeholder={spec.description} /> : <input {...common} type="text" />;
}

export function BooleanWidget({ nodeId, spec, value }: WidgetProps) {
  return (
    <label className="nodrag toggle">
      <input type="checkbox" checked={Boolean(value)} aria-label={spec.name} onChange={(e) => setInput(nodeId, spec.name, e.target.checked)} />
      <span>{value ? "true" : "false"}</span>
    </label>
  );
}

/** Pick an image from the input folder or upload one; shows the chosen image. With `maskable`
 * (load_image), a button opens the mask painter, and the mask the image holds shows over it. */
export function ImageWidget(props: WidgetProps & { maskable?: boolean }) {
  const { nodeId, spec, value, maskable } = props;
  const [uploading, setUploading] = useState(false);
  const fileInput = useRef<HTMLInputElement>(null);
  const name = typeof value === "string" ? value : "";
  const upload = async (file: File | undefined) => {
    if (!file) return;
    setUploading(true);
    const stored = await uploadInputImage(file);
    setUploading(false);
    if (stored) setInput(nodeId, spec.name, stored);
  };
  return (
    <div className="image-widget">
      <div className="image-row">
        <ChoiceWidget {...props} />
        <button className="nodrag icon-button" title="Upload an image to the input folder" aria-label="upload image" onClick={() => fileInput.current?.click()}>
          {uploading ? "…" : "⇪"}
        </button>
        <input ref={fileInput} type="file" accept="image/*" hidden aria-label="image file" onChange={(e) => upload(e.target.files?.[0])} />
        {maskable && (
          <button
            className="nodrag icon-button"
            title="Paint a mask: the area to repaint (saved into a copy of the image's alpha)"
            aria-label="edit mask"
            disabled={!name}
            onClick={() => openMaskPainter({ nodeId, input: spec.name, image: name })}
          >
            ◐
          </button>
        )}
      </div>
      {name && (
        <div className="input-preview-frame">
          <img className="input-preview" alt={name} src={imageViewUrl(inputImage(name), "rgb")} draggable={false} />
          {maskable && (
            <div
              className="mask-overlay"
              aria-hidden="true"
              data-mask={name}
              style={{ maskImage: `url("${imageViewUrl(inputImage(name), "mask")}")` }}
            />
          )}
        </div>
      )}
    </div>
  );
}

/** The widget an input spec calls for. */
export function Widget(props: WidgetProps & { data: GraphNodeData; nodeType: string }) {
  const { spec } = props;
  if (spec.widget === "image" || (props.nodeType === "load_image" && spec.name === "image")) {
    return <ImageWidget {...props} maskable={props.nodeType === "load_image"} />;
  }
  if (spec.widget === "seed") return <SeedWidget {...props} />;
  if (spec.choices !== undefined) return <ChoiceWidget {...props} />;
  if (spec.type === "INT" || spec.type === "FLOAT") return <NumberWidget {...props} />;
  if (spec.type === "BOOLEAN") return <BooleanWidget {...props} />;
  return <TextWidget {...props} />;
}
