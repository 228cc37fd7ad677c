"""JSON that can always be stored and sent back: checks for what a client may send, and a
scrub for what the server itself stores.

Python's `json` module accepts three things that later break a server that stores documents and
sends them back as UTF-8 JSON:

* a lone surrogate (`"\\ud800"`): a Python string that cannot be encoded as UTF-8;
* `NaN`, `Infinity` and `-Infinity`: not JSON numbers at all (browsers refuse them);
* deep nesting: Python's parser and pydantic's serializer recurse, and give up (RecursionError,
  "maximum serialization depth") somewhere between 255 and 1,000 levels.

`find_json_problems` walks a decoded document once, iteratively, and names the path of each
such value; `find_deep_nesting` finds nesting deeper than the limit in raw JSON text *before*
anything recursive parses it. Workflows never need more than a few levels; `MAX_DEPTH` leaves
room for anything a person puts in `meta` or `ui`.

`scrub_text` and `json_safe` are for values a node produces at run time: a lone surrogate is kept
as its escape (`\\ud800`) and a non-finite float as text ("nan"), so no stored run can become
unreadable.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Iterable, NamedTuple

MAX_DEPTH = 64  # levels of objects and arrays in any JSON document the server or the CLI accepts
MAX_PROBLEMS = 20  # problems reported for one document; the walk stops there

INVALID_VALUE, TOO_DEEP = "invalid_value", "too_deep"

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SPECIAL = list(b'"\\[]{}')  # the bytes that decide nesting in JSON text
_QUOTE, _BACKSLASH = ord('"'), ord("\\")
_OPENER_CODES, _CLOSER_CODES = list(b"[{"), list(b"]}")


class _Pairs(list):
    """An object's (key, value) pairs, in order (json.loads' object_pairs_hook)."""


class JsonProblem(NamedTuple):
    """A value that cannot be accepted: where (`path`, keys and indexes from the root), what
    (`code`: invalid_value or too_deep) and a sentence that says both (`message`)."""

    path: tuple[str | int, ...]
    code: str
    message: str

    @property
    def where(self) -> str:
        return format_path(self.path)


def format_path(path: Iterable[str | int], limit: int = 12) -> str:
    """`nodes.seed.inputs.value`, `meta.tags[3]`, `nodes["my node"]`: readable, and pure ASCII
    whatever the keys hold (a key that is not a plain name is shown as an escaped JSON string).
    A path longer than `limit` shows its first parts and how deep it goes."""
    parts = list(path)
    text = ""
    for part in parts[:limit]:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.match(part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"
    if len(parts) > limit:
        text += f"... ({len(parts)} levels down)"
    return text


def _where(path: tuple[str | int, ...]) -> str:
    return format_path(path) or "the document"


def text_problem(text: str) -> str | None:
    """Why `text` cannot be stored as UTF-8 (a lone surrogate, named by its position), or None."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"holds a lone surrogate {json.dumps(text[exc.start])} at character {exc.start}, "
                "which is not Unicode text and cannot be stored")
    return None


def number_problem(value: Any) -> str | None:
    """Why a float is not a JSON number (NaN or an infinity), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value!r} is not a number JSON allows (NaN and infinities are refused)"
    return None


def find_json_problems(document: Any, *, max_depth: int = MAX_DEPTH, limit: int = MAX_PROBLEMS,
                       prefix: tuple[str | int, ...] = ()) -> list[JsonProblem]:
    """Every string (object keys too) holding a lone surrogate, every NaN or infinity, and every
    object or array nested deeper than `max_depth`, in document order, at most `limit` of them.
    Iterative: a document nested 100,000 levels deep is walked as easily as a flat one."""
    if _clean(document, max_depth):
        return []  # the usual case, proved in C and numpy; the walk below finds where a problem is
    problems: list[JsonProblem] = []
    stack: list[tuple[Any, tuple[str | int, ...], int]] = [(document, prefix, 0)]
    while stack and len(problems) < limit:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            problem = text_problem(value)
            if problem:
                problems.append(JsonProblem(path, INVALID_VALUE, f"{_where(path)}: the text {problem}"))
        elif isinstance(value, float):
            problem = number_problem(value)
            if problem:
                problems.append(JsonProblem(path, INVALID_VALUE, f"{_where(path)}: {problem}"))
        elif isinstance(value, (dict, list, tuple)):
            if depth + 1 > max_depth:
                problems.append(JsonProblem(path, TOO_DEEP, f"{_where(path)}: objects and arrays are nested "
                                                            f"deeper than {max_depth} levels here"))
                continue
            children: list[tuple[Any, tuple[str | int, ...], int]] = []
            if isinstance(value, dict):
                for key, item in value.items():
                    if isinstance(key, str):
                        problem = text_problem(key)
                        if problem:
                            problems.append(JsonProblem((*path, key), INVALID_VALUE,
                                                        f"{_where((*path, key))}: the key {problem}"))
                            continue
                    children.append((item, (*path, key if isinstance(key, str) else str(key)), depth + 1))
            else:
                children = [(item, (*path, index), depth + 1) for index, item in enumerate(value)]
            stack.extend(reversed(children))
    return problems[:limit]


def _clean(document: Any, max_depth: int) -> bool:
    """True when the document surely has none of the problems `find_json_problems` looks for, in
    one cheap walk: no nesting past `max_depth`, no NaN or infinity, and all text ASCII. False
    means "walk it properly": a problem, or non-ASCII text that may well be fine."""
    if not isinstance(document, (dict, list, tuple)):
        return False
    stack: list[tuple[Any, int]] = [(document, 1)]
    pop, push, isfinite = stack.pop, stack.append, math.isfinite
    while stack:
        value, depth = pop()
        if depth > max_depth:
            return False
        if type(value) is dict:
            for key in value:
                if type(key) is not str or not key.isascii():
                    return False
            children = value.values()
        else:
            children = value
        for child in children:
            kind = type(child)
            if kind is str:
                if not child.isascii():
                    return False
            elif kind is float:
                if not isfinite(child):
                    return False
            elif kind is dict or kind is list or kind is tuple:
                push((child, depth + 1))
            elif isinstance(child, (str, float, dict, list, tuple)):  # a subclass: the full walk judges
                return False
    return True


def find_deep_nesting(data: bytes | str, max_depth: int = MAX_DEPTH) -> JsonProblem | None:
    """In raw JSON text, the first object or array nested deeper than `max_depth` (with its path
    when the text up to it is JSON), or None. Nothing recursive runs: a body nested 100,000 deep
    costs what a flat one of the same size does."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    offset, open_stack = _first_too_deep(data, max_depth)
    if offset is None:
        return None
    closers = b"".join(b"]" if c == ord("[") else b"}" for c in reversed(open_stack))
    # The text up to there, the too-deep container left empty, everything closed: shallow, so safe
    # to parse; the too-deep container is then the last child at every level.
    path: tuple[str | int, ...] | None = None
    try:
        value = json.loads(data[:offset] + (b"[]" if data[offset] == ord("[") else b"{}") + closers,
                           object_pairs_hook=_Pairs)
    except (ValueError, RecursionError):
        value = None
    if value is not None:
        steps: list[str | int] = []
        for _ in range(max_depth):
            if isinstance(value, _Pairs) and value:
                key, value = value[-1]
                steps.append(key)
            elif isinstance(value, list) and value:
                steps.append(len(value) - 1)
                value = value[-1]
            else:
                break
        path = tuple(steps) if len(steps) == max_depth else None
    if path is None:
        line = data.count(b"\n", 0, offset) + 1
        column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
        return JsonProblem((), TOO_DEEP, f"objects and arrays are nested deeper than {max_depth} levels "
                                         f"(at line {line} column {column})")
    return JsonProblem(path, TOO_DEEP, f"{_where(path)}: objects and arrays are nested deeper than "
                                       f"{max_depth} levels here")


def _first_too_deep(data: bytes, max_depth: int) -> tuple[int | None, list[int]]:
    """Offset of the first bracket (outside strings) that opens level `max_depth + 1`, and the
    brackets open around it, outermost first; (None, []) if there is none. Vectorised with numpy,
    so an 8 MiB body is scanned in milliseconds whatever its shape.

    Exact for the part of the text that is JSON, which is all a parser ever reads: there, a
    backslash only appears inside strings, so a quote is a string's edge unless an odd run of
    backslashes comes right before it."""
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return None, []
    import numpy as np

    codes = np.frombuffer(data, dtype=np.uint8)
    special = np.zeros(256, dtype=bool)
    special[_SPECIAL] = True
    where = np.flatnonzero(special[codes])  # only quotes, backslashes and brackets matter
    chars = codes[where]
    count = len(chars)
    position = np.arange(count)
    backslash = chars == _BACKSLASH
    adjacent = np.zeros(count, dtype=bool)
    adjacent[1:] = np.diff(where) == 1
    follows_backslash = np.zeros(count, dtype=bool)
    follows_backslash[1:] = backslash[:-1]
    run_start = np.maximum.accumulate(np.where(backslash & ~(adjacent & follows_backslash), position, 0))
    run_length = np.where(backslash, position - run_start + 1, 0)  # backslashes in a row, up to here
    previous_run = np.zeros(count, dtype=np.int64)
    previous_run[1:] = run_length[:-1]
    quote = (chars == _QUOTE) & ~(adjacent & (previous_run % 2 == 1))
    quotes_before = np.cumsum(quote) - quote
    outside = quotes_before % 2 == 0
    opener = np.isin(chars, _OPENER_CODES) & outside
    closer = np.isin(chars, _CLOSER_CODES) & outside
    depth = np.cumsum(opener.astype(np.int32) - closer.astype(np.int32))  # the depth after each
    over = np.flatnonzero(opener & (depth > max_depth))
    if not over.size:
        return None, []
    first = int(over[0])
    openers = np.flatnonzero(opener[:first])
    levels = depth[openers]
    innermost = np.full(max_depth + 1, -1, dtype=np.int64)
    np.maximum.at(innermost, levels, openers)  # for each level, the last bracket that opened it: still open
    stack = [int(chars[k]) for k in innermost[1:] if k >= 0]
    return int(where[first]), stack


def scrub_text(text: str) -> str:
    """`text` with every lone surrogate written as its escape (`\\ud800`, as Python's
    backslashreplace does; a surrogate pair becomes its character), so it encodes as UTF-8 and
    nothing is lost. Unchanged, and cheap, when it already encodes."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        paired = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
        return paired.encode("utf-8", "backslashreplace").decode("utf-8")


_CONSTANTS = {"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}
_SURROGATE = re.compile("[\ud800-\udfff]")


def json_safe(value: Any) -> Any:
    """`value` (JSON-able, `default=str` for the rest) with lone surrogates escaped (scrub_text) and
    NaN and infinities as the strings "nan", "inf", "-inf" (as server.bounds stores them): the
    same object when there was nothing to replace."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, default=str)
        text.encode("utf-8")
        return value
    except (ValueError, UnicodeEncodeError):
        pass
    text = json.dumps(value, ensure_ascii=False, default=str)
    paired = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    # in JSON text a lone surrogate can only sit in a string: write it as an escaped backslash + "udXXX"
    text = _SURROGATE.sub(lambda match: f"\\\\u{ord(match.group()):04x}", paired)
    return json.loads(text, parse_constant=_CONSTANTS.__getitem__)


def node_input(path: tuple[str | int, ...]) -> tuple[str | None, str | None]:
    """(node id, input name) when `path` lies in a node's inputs (`nodes.<id>.inputs.<name>...`,
    also under a request's `workflow`), else (None, None). Only names that are valid text."""
    start = 1 if path[:1] == ("workflow",) else 0
    tail = path[start:]
    if len(tail) >= 2 and tail[0] == "nodes" and isinstance(tail[1], str) and not text_problem(tail[1]):
        node = tail[1]
        if len(tail) >= 4 and tail[2] == "inputs" and isinstance(tail[3], str) and not text_problem(tail[3]):
            return node, tail[3]
        return node, None
    return None, None


__all__ = ["INVALID_VALUE", "JsonProblem", "MAX_DEPTH", "TOO_DEEP", "find_deep_nesting", "find_json_problems",
           "format_path", "json_safe", "node_input", "number_problem", "scrub_text", "text_problem"]
