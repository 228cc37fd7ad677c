"""The node registry: type name → node class, the catalog, and node libraries from other packages."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import Any, Callable, Iterator, TypeVar

from latentgraph.engine.node import Node, NodeInfo, build_node_info

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "latentgraph.nodes"

N = TypeVar("N", bound=type[Node])


class NodeRegistry:
    """Holds the node types a workflow may use."""

    def __init__(self) -> None:
        self._nodes: dict[str, NodeInfo] = {}

    def register(
        self,
        cls: type[Node],
        type_name: str,
        *,
        version: int = 1,
        category: str = "misc",
        title: str | None = None,
        output: bool = False,
        cacheable: bool = True,
    ) -> NodeInfo:
        info = build_node_info(cls, type_name, version=version, category=category, title=title,
                               output=output, cacheable=cacheable)
        existing = self._nodes.get(type_name)
        if existing is not None and existing.cls is not cls:
            raise ValueError(
                f"node type {type_name!r} is already registered by "
                f"{existing.cls.__module__}.{existing.cls.__qualname__}"
            )
        cls.node_info = info
        self._nodes[type_name] = info
        return info

    def node(
        self,
        type_name: str,
        *,
        version: int = 1,
        category: str = "misc",
        title: str | None = None,
        output: bool = False,
        cacheable: bool = True,
    ) -> Callable[[N], N]:
        """Class decorator: register a node type under a stable snake_case name.

        version: bump it when the node's results change for the same inputs (it is part of the
          cache signature, so cached results of the old version are not reused).
        output: the node is a sink (saves or shows something); runs are requested by their sinks.
        cacheable: False for nodes whose result may differ on every run; they always run, and so
          does everything downstream of them.
        """

        def decorate(cls: N) -> N:
            self.register(cls, type_name, version=version, category=category, title=title,
                          output=output, cacheable=cacheable)
            return cls

        return decorate

    def get(self, type_name: str) -> NodeInfo | None:
        return self._nodes.get(type_name)

    def __contains__(self, type_name: object) -> bool:
        return type_name in self._nodes

    def __iter__(self) -> Iterator[NodeInfo]:
        return iter(self._nodes.values())

    def __len__(self) -> int:
        return len(self._nodes)

    def catalog(self, services: Any = None) -> list[dict[str, Any]]:
        """Every node type as JSON-able dicts, sorted by category then type (the editor's palette)."""
        return [info.catalog_entry(services) for info in sorted(self._nodes.values(), key=lambda i: (i.category, i.type))]

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> list[str]:
        """Load node libraries that installed packages declare under the `latentgraph.nodes` group.

        An entry point names a module (importing it registers its nodes with `registry`) or a
        function called with this registry. A library that fails to load is logged and skipped, so
        one broken plug-in cannot take the others down. Returns the names of the libraries loaded.
        """
        loaded = []
        for ep in entry_points(group=group):
            try:
                target = ep.load()
                if callable(target) and not isinstance(target, type):
                    target(self)
            except Exception as exc:  # a plug-in's failure is reported, not fatal
                log.warning("node library %r (%s) failed to load: %s", ep.name, ep.value, exc)
                continue
            loaded.append(ep.name)
        return loaded


registry = NodeRegistry()
"""The process-wide registry that `@node` registers into."""

node = registry.node
