"""Folders that nodes read from and write to, and safe resolution of user-given names inside them.

Models live in one folder per kind under a models root (`models/checkpoints`, `models/vae`, ...);
extra roots can be added so an existing ComfyUI or A1111 models folder is reused as it is. A name
is a relative path with forward slashes inside one of those folders; it can never reach outside.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from latentgraph.engine.jsonsafe import text_problem

MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")

# Sub-folder names of one model kind in the layouts people already have.
KIND_ALIASES: dict[str, tuple[str, ...]] = {
    "checkpoints": ("checkpoints", "Stable-diffusion"),  # ComfyUI, A1111
    "vae": ("vae", "VAE"),
    "loras": ("loras", "Lora"),
    "embeddings": ("embeddings",),
    "controlnet": ("controlnet", "ControlNet"),
    "upscale_models": ("upscale_models", "ESRGAN", "RealESRGAN"),
    "vae_approx": ("vae_approx", "VAE-taesd"),  # TAESD preview decoders
}

def file_identity(path: Path) -> dict[str, Any]:
    """What tells a file's contents apart for the caches: its path, size and modification time (a
    node's fingerprint; `tuple(...values())` keys the model cache)."""
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class UnsafeName(ValueError):
    """A user-given name that would reach outside its folder, or is not a plain relative path."""


class LinkOutside(UnsafeName):
    """A name inside the input, output or temp folder whose file is a symbolic link (or lies under
    one) that leads outside that folder: refused unless `Folders.follow_symlinks` is set."""


def safe_relative(name: str) -> PurePosixPath:
    """Check a user-given name is a plain relative path (no absolute path, drive, '..', or NUL)."""
    if not isinstance(name, str) or not name.strip():
        raise UnsafeName("a file name is required")
    if "\x00" in name or "\\" in name:
        raise UnsafeName(f"{name!r}: use forward slashes and no control characters")
    path = PurePosixPath(name)
    if path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise UnsafeName(f"{name!r}: an absolute path is not allowed; give a name inside the folder")
    if any(part in ("..", ".") for part in path.parts) or not path.parts:
        raise UnsafeName(f"{name!r}: '..' and '.' are not allowed in names")
    return path


def resolve_inside(folder: Path, name: str) -> Path:
    """`folder/name`, refusing any name that would lead outside `folder`.

    The check is on the name, not on where links point: a symlink the user put in their models
    folder (to a big drive, say) is theirs to make, but a name can never climb out.
    """
    relative = safe_relative(name)
    base = folder.resolve()
    candidate = Path(os.path.normpath(base / relative))
    if os.path.commonpath([base, candidate]) != str(base):
        raise UnsafeName(f"{name!r} resolves outside its folder")
    return candidate


def is_within(path: str | Path, folder: str | Path) -> bool:
    """Whether the real path of `path` (every link followed) lies in the real path of `folder`."""
    real, base = os.path.realpath(path), os.path.realpath(folder)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def check_within(folder: Path, path: Path, name: str) -> Path:
    """`path` (a name resolved inside `folder`), or LinkOutside when a link takes it out of `folder`."""
    if not is_within(path, folder):
        raise LinkOutside(f"{name!r} is a symbolic link, or lies under one, that leads outside the folder "
                          f"{folder.name!r}: such links are not followed unless the server or the CLI is "
                          "started with --follow-symlinks")
    return path


def list_files(folder: Path, extensions: tuple[str, ...], *, follow_symlinks: bool = True) -> list[str]:
    """Names (relative, forward slashes) of the files under `folder` with one of `extensions`.

    Sub-folders that are symbolic links are descended into (people link their model folders;
    Python's rglob would skip them), each real folder once, so a link loop ends. With
    `follow_symlinks=False`, files and folders whose real path lies outside `folder` are left out.
    Names that are not valid text (undecodable bytes on disk) are left out: no one could ask for them."""
    if not folder.is_dir():
        return []
    base = os.path.realpath(folder)
    names = []
    visited: set[str] = set()
    for directory, subdirectories, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(directory)
        if real in visited or (not follow_symlinks and not is_within(real, base)):
            subdirectories[:] = []  # seen already (a link loop, or two links to one folder), or outside
            continue
        visited.add(real)
        subdirectories.sort()
        for filename in files:
            if os.path.splitext(filename)[1].lower() not in extensions:
                continue
            path = os.path.join(directory, filename)
            if not os.path.isfile(path) or (not follow_symlinks and not is_within(path, base)):
                continue
            name = os.path.relpath(path, folder).replace(os.sep, "/")
            if text_problem(name) is None:
                names.append(name)
    return sorted(names, key=str.lower)


def _here(name: str) -> Path:
    """A folder under the current directory (where `latentgraph` is started), made absolute now."""
    return Path.cwd() / name


@dataclass
class Folders:
    """Where models are read from and where images are read and written.

    Defaults are folders under the current directory (`./models`, `./input`, `./output`,
    `./temp`), never the installed package's. The bundled demo checkpoint is always found too: its
    folder is searched after the user's model roots."""

    models: Path = field(default_factory=lambda: _here("models"))
    extra_model_roots: list[Path] = field(default_factory=list)
    inputs: Path = field(default_factory=lambda: _here("input"))
    outputs: Path = field(default_factory=lambda: _here("output"))
    temp: Path = field(default_factory=lambda: _here("temp"))  # previews; cleared at start-up by the server
    # Links in the input, output and temp folders that lead outside them are refused unless this is
    # set (--follow-symlinks). Model folders always follow links.
    follow_symlinks: bool = False

    @classmethod
    def from_options(cls, models: Path | None = None, extra_model_roots: list[Path] | None = None,
                     inputs: Path | None = None, outputs: Path | None = None, temp: Path | None = None,
                     follow_symlinks: bool = False) -> "Folders":
        """Folders from command-line options: each one given replaces its default."""
        given = {"models": models, "inputs": inputs, "outputs": outputs, "temp": temp}
        folders = cls(**{k: Path(v).absolute() for k, v in given.items() if v is not None},
                      extra_model_roots=[Path(p).absolute() for p in extra_model_roots or []],
                      follow_symlinks=follow_symlinks)
        return folders

    def model_dirs(self, kind: str) -> list[Path]:
        """Every folder that holds models of `kind`, ours first, the bundled demo's last."""
        from latentgraph.bundled import demo_models_dir

        aliases = KIND_ALIASES.get(kind, (kind,))
        dirs = [self.models / aliases[0]]
        for root in self.extra_model_roots:
            dirs.extend(root / alias for alias in aliases if (root / alias).is_dir())
        if kind == "checkpoints":
            bundled = demo_models_dir()
            if bundled.is_dir() and not any(_same_dir(bundled, d) for d in dirs):
                dirs.append(bundled)
        return dirs

    def list_models(self, kind: str) -> list[str]:
        seen: dict[str, None] = {}
        for folder in self.model_dirs(kind):
            for name in list_files(folder, MODEL_EXTENSIONS):
                seen.setdefault(name, None)
        return list(seen)

    def tiny_autoencoder_file(self, name: str, part: str) -> Path | None:
        """TAESD's `<name>_<part>.<ext>` (part "decoder" or "encoder") in the vae_approx folders,
        .safetensors before the pickle suffixes, or None."""
        for folder in self.model_dirs("vae_approx"):
            for suffix in MODEL_EXTENSIONS:
                candidate = folder / f"{name}_{part}{suffix}"
                if candidate.is_file():
                    return candidate
        return None

    def model_path(self, kind: str, name: str) -> Path:
        """The file of model `name` of `kind`: the first folder that has it. Raises FileNotFoundError."""
        safe_relative(name)
        for folder in self.model_dirs(kind):
            candidate = resolve_inside(folder, name)
            if candidate.is_file():
                return candidate
        searched = ", ".join(str(d) for d in self.model_dirs(kind))
        raise FileNotFoundError(f"no {kind} model named {name!r} (searched {searched})")

    def input_path(self, name: str) -> Path:
        return self.image_path(self.inputs, name)

    def output_path(self, name: str) -> Path:
        return self.image_path(self.outputs, name)

    def image_path(self, folder: Path, name: str) -> Path:
        """`folder/name` in the input, output or temp folder: never outside it by its name (UnsafeName),
        nor through a symbolic link (LinkOutside) unless `follow_symlinks` is set."""
        path = resolve_inside(folder, name)
        return path if self.follow_symlinks else check_within(folder, path, name)

    def list_images(self, folder: Path) -> list[str]:
        """Image names in the input, output or temp folder (links leading outside left out, unless followed)."""
        return list_files(folder, IMAGE_EXTENSIONS, follow_symlinks=self.follow_symlinks)


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.is_dir() and b.is_dir() and os.path.samefile(a, b)
    except OSError:
        return False
