"""A node library installed as a plug-in (the `latentgraph.nodes` entry point) on the server and on
every Ray node of tests/test_cluster_nodes.py: one node that hangs where no cancel reaches it."""

from __future__ import annotations

import time

from latentgraph.engine import Input, Node, RunContext, node


@node("test_hang", category="test", output=True, cacheable=False)
class Hang(Node):
    """Reports one step (a cancel point), then sleeps `seconds` without another cancel point."""

    seconds: float = Input(600.0, ge=0.0)

    def run(self, ctx: RunContext) -> None:
        ctx.progress(1, 2)
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            time.sleep(0.1)
        ctx.report(slept=self.seconds)
