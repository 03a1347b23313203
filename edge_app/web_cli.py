"""The ``fracture-edge web`` verb. Gradio is imported only when the verb runs, so
``fracture-edge --help`` works without the ``web`` extra."""

from __future__ import annotations

import argparse
from pathlib import Path

# Here rather than in edge_app.web, which imports gradio; that module takes them from here.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def _web(args: argparse.Namespace) -> int:
    from edge_app.web import launch

    demo = launch(Path(args.model) if args.model else None, args.host, args.port, block=False)
    reach = "this computer only" if args.host == DEFAULT_HOST else f"bound to {args.host}, no login"
    print(f"FractureEdge page: {demo.local_url} ({reach}). Ctrl-C stops it.")
    demo.block_thread()
    return 0


def add_web_parser(verbs: argparse._SubParsersAction) -> None:
    web = verbs.add_parser(
        "web",
        help="the Gradio page: upload radiographs, see verdict and heatmap (localhost only)",
        description="Serve the FractureEdge page on this computer. It binds to 127.0.0.1, so "
        "only this machine can reach it; --host 0.0.0.0 exposes it to the network, which you "
        "should do only on a network you trust (see docs/web.md). A research tool, not a "
        "diagnostic device.",
    )
    web.add_argument("--model", help="model bundle folder (default: the shipped bundle)")
    web.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind (default {DEFAULT_HOST}: this computer only)",
    )
    web.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    web.set_defaults(handler=_web)
