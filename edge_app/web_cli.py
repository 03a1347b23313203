"""The ``fracture-edge web`` verb. Gradio is imported only when the verb runs, so
``fracture-edge --help`` works without the ``web`` extra; the page's defaults live here, and
the verb passes them to :func:`edge_app.web.launch`."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def _web(args: argparse.Namespace) -> int:
    from edge_app.web import is_loopback, launch

    demo = launch(Path(args.model) if args.model else None, args.host, args.port, block=False)
    try:
        local = is_loopback(args.host)
        reach = "this computer only" if local else f"bound to {args.host}, no login"
        print(f"FractureEdge page: {demo.local_url} ({reach}). Ctrl-C stops it.", flush=True)
        demo.block_thread()
    finally:
        demo.close()  # also removes the run's temporary folder (uploads, overlays)
    return 0


def add_web_parser(verbs: argparse._SubParsersAction) -> None:
    web = verbs.add_parser(
        "web",
        help="the Gradio page: upload radiographs, see verdict and heatmap (localhost only)",
        description="Serve the FractureEdge page on this computer. It binds to 127.0.0.1, so "
        "only this machine can reach it; --host 0.0.0.0 exposes it to every network this "
        "machine is on, without login or encryption, which you should do only on a network you "
        "trust (see docs/web.md and docs/security.md). Uploads and overlays live in a private "
        "temporary folder removed when the server stops. A research tool, not a diagnostic "
        "device.",
    )
    web.add_argument("--model", help="model bundle folder (default: the shipped bundle)")
    web.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind (default {DEFAULT_HOST}: this computer only)",
    )
    web.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    web.set_defaults(handler=_web)
