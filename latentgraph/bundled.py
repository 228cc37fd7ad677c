"""What ships with Latentgraph besides code: the bundled workflows, the demo checkpoint and the
built editor. An installed wheel carries them as package data inside `latentgraph/`
(`workflows/`, `bundled_models/`, `web/`); a source checkout has them in the repository's own
folders (`workflows/`, `models/checkpoints/`, and `latentgraph/web/`, where `npm run build` in
`web/` writes the editor). These functions return whichever exists, so both work the same.
"""

from __future__ import annotations

from pathlib import Path

DEMO_CHECKPOINT = "latentgraph-demo.safetensors"

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent  # the repository, when running from a source checkout


def _first_dir(*candidates: Path) -> Path:
    return next((path for path in candidates if path.is_dir()), candidates[0])


def workflows_dir() -> Path:
    """The folder of the bundled workflows (read-only in the server's workflow library)."""
    return _first_dir(_PACKAGE / "workflows", _CHECKOUT / "workflows")


def demo_models_dir() -> Path:
    """A checkpoints folder holding the bundled demo model (added to every model search)."""
    return _first_dir(_PACKAGE / "bundled_models", _CHECKOUT / "models" / "checkpoints")


def demo_checkpoint() -> Path:
    return demo_models_dir() / DEMO_CHECKPOINT


def editor_dir() -> Path:
    """The built editor's folder (it may not exist yet: the server then says how to build it)."""
    return _PACKAGE / "web"


__all__ = ["DEMO_CHECKPOINT", "demo_checkpoint", "demo_models_dir", "editor_dir", "workflows_dir"]
