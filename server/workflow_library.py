"""Saved workflows: the bundled ones (read-only, `workflows/`) and the user's (`<user dir>/workflows`).

A workflow's name is its file's path inside its folder without `.json` ("txt2img",
"portraits/soft light"); names are checked so they can never reach outside the folder. A user
workflow is written atomically (temporary file, then rename), so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latentgraph.engine.jsonsafe import json_safe, scrub_text
from latentgraph.engine.workflow import WorkflowFormatError, parse_workflow
from latentgraph.nodes.folders import UnsafeName, resolve_inside

_NAME = re.compile(r"^[\w][\w .,()+@-]*$")
MAX_NAME_LENGTH = 200


@dataclass(frozen=True)
class WorkflowEntry:
    name: str
    bundled: bool
    path: Path
    title: str | None = None
    description: str | None = None
    modified: float = 0.0
    size: int = 0


def check_name(name: str) -> str:
    """The workflow name without `.json`, or UnsafeName saying what is wrong with it."""
    name = name.removesuffix(".json")
    if not name or len(name) > MAX_NAME_LENGTH:
        raise UnsafeName(f"a workflow name has 1 to {MAX_NAME_LENGTH} characters, got {len(name)}")
    for part in name.split("/"):
        if not _NAME.match(part) or part.startswith("."):
            raise UnsafeName(f"{name!r}: a workflow name is made of letters, digits, spaces and _ - . , ( ) + @, "
                             "optionally in sub-folders separated by /, and no part may start with a dot")
    return name


class WorkflowLibrary:
    def __init__(self, bundled: Path, user: Path) -> None:
        self.bundled = bundled
        self.user = user

    def list(self) -> list[WorkflowEntry]:
        """User workflows first, then bundled ones, each sorted by name."""
        entries = [*self._scan(self.user, bundled=False), *self._scan(self.bundled, bundled=True)]
        return entries

    def find(self, name: str) -> WorkflowEntry | None:
        """The user's workflow of that name, else the bundled one, else None."""
        name = check_name(name)
        for folder, bundled in ((self.user, False), (self.bundled, True)):
            path = resolve_inside(folder, name + ".json")
            if path.is_file():
                return _entry(name, path, bundled)
        return None

    def read(self, entry: WorkflowEntry) -> dict[str, Any]:
        # json_safe: a file put there by hand may hold a lone surrogate, which could not be sent back
        return json_safe(json.loads(entry.path.read_text(encoding="utf-8")))

    def is_bundled(self, name: str) -> bool:
        return resolve_inside(self.bundled, check_name(name) + ".json").is_file()

    def save(self, name: str, document: Any) -> tuple[WorkflowEntry, bool]:
        """Write a user workflow (checked to be a workflow document, not that it would run: a
        graph in progress may be saved). Returns the entry and whether it is new.
        Raises WorkflowFormatError when it is not a workflow."""
        name = check_name(name)
        workflow = parse_workflow(document)
        path = resolve_inside(self.user, name + ".json")
        created = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".saving-", suffix=".json")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                file.write(workflow.to_json() + "\n")
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return _entry(name, path, bundled=False), created

    def delete(self, name: str) -> bool:
        path = resolve_inside(self.user, check_name(name) + ".json")
        if not path.is_file():
            return False
        path.unlink()
        return True

    def _scan(self, folder: Path, bundled: bool) -> list[WorkflowEntry]:
        if not folder.is_dir():
            return []
        entries = []
        for path in folder.rglob("*.json"):
            name = path.relative_to(folder).with_suffix("").as_posix()
            try:
                check_name(name)
            except UnsafeName:
                continue  # e.g. a temporary .saving-* file
            if path.is_file():
                entries.append(_entry(name, path, bundled))
        return sorted(entries, key=lambda e: e.name.lower())


def _entry(name: str, path: Path, bundled: bool) -> WorkflowEntry:
    stat = path.stat()
    title = description = None
    try:
        meta = json.loads(path.read_text(encoding="utf-8")).get("meta") or {}
        title, description = meta.get("name"), meta.get("description")
    except (OSError, ValueError, AttributeError, RecursionError):
        pass
    return WorkflowEntry(name, bundled, path, scrub_text(title) if isinstance(title, str) else None,
                         scrub_text(description) if isinstance(description, str) else None, stat.st_mtime, stat.st_size)


__all__ = ["WorkflowEntry", "WorkflowFormatError", "WorkflowLibrary", "check_name"]
