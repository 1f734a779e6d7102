"""``recommender serve``: the Flask service under gunicorn."""
from __future__ import annotations

import os

from .options import positive_int


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="serve recommendations over HTTP (gunicorn)",
                                   description="Run the clinician service under gunicorn. The "
                                               "artifact's arrays are memory-mapped, so workers "
                                               "share one copy.")
    parser.add_argument("--artifact", default=os.environ.get("RECOMMENDER_ARTIFACT"),
                        help="artifact folder (default $RECOMMENDER_ARTIFACT)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=positive_int, default=8000)
    parser.add_argument("--workers", type=positive_int, default=2)
    parser.set_defaults(func=run)


def run(args) -> int:
    from gunicorn.app.base import BaseApplication

    from ..artifact import read_manifest
    from ..exceptions import ArtifactError

    if not args.artifact:
        raise ArtifactError("no artifact: pass --artifact or set RECOMMENDER_ARTIFACT")
    read_manifest(args.artifact)  # fail here, clearly, rather than in every worker
    config = {"ARTIFACT": args.artifact}

    class Server(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", f"{args.host}:{args.port}")
            self.cfg.set("workers", args.workers)
            self.cfg.set("accesslog", None)

        def load(self):
            from service import create_app
            return create_app(config)

    print(f"serving {args.artifact} on http://{args.host}:{args.port} "
          f"({args.workers} workers); Ctrl-C stops")
    Server().run()
    return 0
