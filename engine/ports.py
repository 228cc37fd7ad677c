"""Port types: the named value kinds that travel along links and are checked on every link."""

from __future__ import annotations

# Node libraries register the kinds of value their nodes pass along links (`register_port_type`):
# the engine knows only the primitives below and ANY.

# Primitive values: an input of one of these types is a widget (a literal in the workflow JSON)
# that may also be linked from another node's output of the same type.
INT = "INT"
FLOAT = "FLOAT"
STRING = "STRING"
BOOLEAN = "BOOLEAN"

# An input of type ANY accepts a link of any type (display and debugging nodes).
ANY = "ANY"

PRIMITIVE_PORTS: frozenset[str] = frozenset({INT, FLOAT, STRING, BOOLEAN})

_known: set[str] = {INT, FLOAT, STRING, BOOLEAN, ANY}

_PYTHON_TYPE_PORTS: dict[type, str] = {bool: BOOLEAN, int: INT, float: FLOAT, str: STRING}


def register_port_type(name: str) -> str:
    """Declare a new port type (for node libraries that bring their own value kinds)."""
    if not name.isupper() or not name.replace("_", "").isalnum():
        raise ValueError(f"port type names are UPPER_SNAKE_CASE, got {name!r}")
    _known.add(name)
    return name


def known_port_types() -> frozenset[str]:
    return frozenset(_known)


def is_known(port: str) -> bool:
    return port in _known


def port_for_python_type(annotation: object) -> str | None:
    """The primitive port type implied by a plain Python annotation, if any."""
    return _PYTHON_TYPE_PORTS.get(annotation)  # type: ignore[arg-type]


def accepts(input_port: str, output_port: str) -> bool:
    """Whether an input of type `input_port` may be linked from an output of type `output_port`.

    Types match exactly, with two widenings that lose nothing: ANY takes everything, and a FLOAT
    input takes an INT output.
    """
    return input_port == output_port or input_port == ANY or (input_port == FLOAT and output_port == INT)
