"""``recommender serve``: the clinician service under gunicorn (preloaded, hot-reloadable).

Settings come from ``service/gunicorn.conf.py`` (preload, hooks, logging) and the service's
configuration contract (``RECOMMENDER_ARTIFACT``, ``RECOMMENDER_API_TOKENS_FILE``,
``RECOMMENDER_PSEUDONYM_KEY_FILE``, ``RECOMMENDER_AUDIT_LOG``, ``RECOMMENDER_MAX_K`` ...; see
``service/README.md``); the options here override both. The app is built - and the artifact
verified against the key - before gunicorn starts, so a wrong setting stops the command with one
``error:`` line instead of a crash loop of workers.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

from .options import positive_int


def conf_file() -> Path:
    """``service/gunicorn.conf.py``, found without importing the service."""
    return Path(importlib.util.find_spec("service").origin).parent / "gunicorn.conf.py"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve recommendations over HTTP (gunicorn)",
        description="Run the clinician service under gunicorn. The "
        "app is preloaded: the artifact's arrays are "
        "memory-mapped once and shared by the workers. "
        "SIGHUP to the master reloads the artifact.",
    )
    parser.add_argument(
        "--artifact", default=None, help="artifact folder (default $RECOMMENDER_ARTIFACT)"
    )
    parser.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=positive_int, default=None, help="port (default 8000)")
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="worker processes (default $RECOMMENDER_WORKERS or usable cores + 1)",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        """Gunicorn with this project's config file, the CLI options on top, a prebuilt app."""

        application = None

        def load_config(self):
            path = conf_file()
            namespace = {"__file__": str(path)}
            exec(compile(path.read_text(), str(path), "exec"), namespace)
            for name, value in namespace.items():
                if name in self.cfg.settings and value is not None:
                    self.cfg.set(name, value)
            host, _, port = self.cfg.bind[0].rpartition(":")
            self.cfg.set("bind", f"{args.host or host}:{args.port or port}")
            if args.workers:
                self.cfg.set("workers", args.workers)

        def load(self):
            return self.application

    server = Server()  # runs the config file: sets PROMETHEUS_MULTIPROC_DIR before the app loads
    from service import create_app

    config = {"ARTIFACT": args.artifact} if args.artifact else None
    try:
        server.application = create_app(config)  # ConfigError -> one "error:" line, exit 2
    except BaseException:
        if os.environ.get("RECOMMENDER_OWNS_METRICS_DIR") == "1":
            shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
        raise
    artifact = server.application.config["ARTIFACT"]
    print(
        f"serving {artifact} on http://{server.cfg.bind[0]} ({server.cfg.workers} workers, "
        f"master pid {os.getpid()}); SIGHUP reloads the artifact, Ctrl-C stops",
        flush=True,
    )
    server.run()
    return 0
