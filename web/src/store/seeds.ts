/**
 * Seeds slice: what a seed widget does after a run is queued (control-after-generate). The rule
 * is kept per node in `ui.seed_control` ({input: "increment" | "decrement" | "randomize"}; fixed
 * when absent), so it travels with the workflow; this slice holds no state of its own.
 */
import type { GraphNodeData } from "../workflow";
import { graphChange } from "./document";
import type { Slice } from "./state";

export type SeedControl = "fixed" | "increment" | "decrement" | "randomize";
export const SEED_CONTROL_KEY = "seed_control";
const MAX_SEED = Number.MAX_SAFE_INTEGER;

export interface SeedsSlice {
  setSeedControl(nodeId: string, input: string, control: SeedControl): void;
  /** After a run is queued: apply each seed widget's after-run rule (increment, randomize...). */
  advanceSeeds(): void;
}

export function seedControlOf(data: GraphNodeData, input: string): SeedControl {
  const controls = data.ui[SEED_CONTROL_KEY] as Record<string, SeedControl> | undefined;
  return controls?.[input] ?? "fixed";
}

export function randomSeed(): number {
  const words = new Uint32Array(2);
  crypto.getRandomValues(words);
  return (words[0] & 0x1fffff) * 2 ** 32 + words[1]; // uniform in [0, 2^53)
}

export const createSeedsSlice: Slice<SeedsSlice> = (set, get) => ({
  setSeedControl: (nodeId, input, control) => {
    const node = get().nodes.find((n) => n.id === nodeId);
    if (!node) return;
    const controls = { ...((node.data.ui[SEED_CONTROL_KEY] as Record<string, SeedControl>) ?? {}) };
    if (control === "fixed") delete controls[input];
    else controls[input] = control;
    get().setNodeUi(nodeId, SEED_CONTROL_KEY, Object.keys(controls).length ? controls : undefined);
  },

  advanceSeeds: () => {
    const { nodes, catalog, linkedInputs } = get();
    let changed = false;
    const next = nodes.map((node) => {
      const spec = catalog[node.data.type];
      if (!spec) return node;
      let inputs = node.data.inputs;
      for (const input of spec.inputs) {
        if (input.widget !== "seed" || (linkedInputs[node.id] ?? "").split("\n").includes(input.name)) continue;
        const control = seedControlOf(node.data, input.name);
        const current = typeof inputs[input.name] === "number" ? (inputs[input.name] as number) : 0;
        const max = Math.min(input.maximum ?? MAX_SEED, MAX_SEED);
        const min = input.minimum ?? 0;
        let value = current;
        if (control === "increment") value = current >= max ? min : current + 1;
        else if (control === "decrement") value = current <= min ? max : current - 1;
        else if (control === "randomize") value = min + (randomSeed() % (max - min + 1));
        if (value !== current) {
          inputs = { ...inputs, [input.name]: value };
          changed = true;
        }
      }
      return inputs === node.data.inputs ? node : { ...node, data: { ...node.data, inputs } };
    });
    if (changed) {
      get().remember();
      set(graphChange(get(), next, get().edges));
    }
  },
});
