"""Before/after: the server CPU per request of this checkout against another git revision, or
of one served model against another.

A change meant to make the service cheaper is measured against the code before it, in the same
session and on the same model, alternating the two servers round by round so that the load of
a shared machine falls on both alike (``--base``). With ``--against-model`` the two servers
run this checkout, one serving ``--model``'s artifact and one the other model's, built from
the same cohort (is the outcome model's request as cheap as ALS's?). Each round starts
``recommender serve`` from one checkout (the other revision in a detached worktree under
``benchmarks/results/tmp/compare/``), warms it, then runs wrk against the recommendation
endpoint and the bare ``/health`` of that server (as ``bench_http.py``, whose cohort, model
and load scripts it reuses) and reads the workers' CPU time from ``/proc``. Reports medians
over rounds of: requests/s, server CPU ms per request, and the ratios recommend / bare
(throughput, and CPU-bound).

    python benchmarks/compare_http.py --base 157fa46            # quick model, 4 rounds
    python benchmarks/compare_http.py --base main~3 --model outcome --rounds 6
    python benchmarks/compare_http.py --model outcome --against-model als --rounds 6

Results: benchmarks/results/http_compare.json (http_compare_<model>.json for a model other
than ALS, http_compare_<model>_vs_<other>.json against another model).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_http import (  # noqa: E402
    WORK,
    Loader,
    Server,
    build,
    cpu_seconds,
    ensure_wrk,
)
from benchmarks.common import markdown_table, write_results  # noqa: E402


def worktree(revision: str) -> tuple[Path, str]:
    """A detached checkout of ``revision`` (made once per commit) and its full commit id."""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{revision}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    path = WORK.parent / "compare" / commit[:12]
    if not (path / "recommender").is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=True)
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(path), commit],
            check=True,
            capture_output=True,
        )
    return path, commit


def one_round(folder: Path, loader: Loader, root: Path, workers: int, seconds: float) -> dict:
    server = Server(folder, workers, root=root)
    try:
        loader.run(server.port, "recommend", 2)  # warm-up, not counted
        result = {}
        for endpoint in ("recommend", "bare"):
            pids = server.workers()
            before = cpu_seconds(pids)
            run = loader.run(server.port, endpoint, seconds)
            run["server_cpu_ms_per_request"] = (
                1e3 * (cpu_seconds(pids) - before) / max(run["requests"], 1)
            )
            result[endpoint] = run
        return result
    finally:
        server.stop()


def summary(rounds: list[dict]) -> dict:
    def median(endpoint: str, field: str) -> float:
        return statistics.median(r[endpoint][field] for r in rounds)

    rec_cpu, bare_cpu = (median(e, "server_cpu_ms_per_request") for e in ("recommend", "bare"))
    rec_rps, bare_rps = median("recommend", "rps"), median("bare", "rps")
    return {
        "recommend_rps": rec_rps,
        "bare_rps": bare_rps,
        "recommend_cpu_ms": rec_cpu,
        "bare_cpu_ms": bare_cpu,
        "throughput_ratio": rec_rps / bare_rps,
        "cpu_bound_ratio": bare_cpu / rec_cpu,
        "failed": sum(
            r[e]["socket_errors"] + r[e]["non_2xx"] for r in rounds for e in ("recommend", "bare")
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    against = parser.add_mutually_exclusive_group(required=True)
    against.add_argument("--base", help="git revision to compare against")
    against.add_argument("--against-model", help="model family to compare --model against")
    parser.add_argument("--size", choices=["quick", "full"], default="quick")
    parser.add_argument("--model", default="als", help="model family of the served artifact")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0, help="per endpoint per round")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--wrk-threads", type=int, default=1)
    args = parser.parse_args()
    args.python_client = False
    wrk = ensure_wrk()
    if wrk is None:
        print("error: compare_http.py needs wrk (not found, and not installable here)")
        return 2
    folder = build(args.size, args.model)
    if args.base:
        base, commit = worktree(args.base)
        servers = {"base": (base, folder), "this": (ROOT, folder)}
        name = "http_compare" if args.model == "als" else f"http_compare_{args.model}"
    else:
        commit = None
        servers = {
            args.against_model: (ROOT, build(args.size, args.against_model)),
            args.model: (ROOT, folder),
        }
        name = f"http_compare_{args.model}_vs_{args.against_model}"
    loaders = {key: Loader(site, args, wrk) for key, (_, site) in servers.items()}
    load_before = os.getloadavg()
    rounds: dict[str, list[dict]] = {key: [] for key in servers}
    for number in range(args.rounds):
        for key, (root, site) in servers.items():
            result = one_round(site, loaders[key], root, args.workers, args.seconds)
            rounds[key].append(result)
            print(
                f"round {number} {key}: recommend {result['recommend']['rps']:.0f} req/s "
                f"{result['recommend']['server_cpu_ms_per_request']:.2f} ms CPU, bare "
                f"{result['bare']['rps']:.0f} req/s "
                f"{result['bare']['server_cpu_ms_per_request']:.2f} ms CPU",
                flush=True,
            )
    summaries = {name: summary(runs) for name, runs in rounds.items()}
    rows = [{"server": key, **values} for key, values in summaries.items()]
    print(markdown_table(rows, ["server", *next(iter(summaries.values()))]))
    path = write_results(
        name,
        {
            "base": commit,
            "against_model": args.against_model,
            "this": subprocess.run(
                ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
            ).stdout.strip(),
            "size": args.size,
            "model": args.model,
            "rounds": args.rounds,
            "seconds_per_run": args.seconds,
            "workers": args.workers,
            "connections": args.connections,
            "load_average": {"before": load_before, "after": os.getloadavg()},
            "summary": summaries,
            "runs": rounds,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
