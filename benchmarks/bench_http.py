"""HTTP serving: the recommendation endpoint with auth and audit against a bare endpoint.

Builds (once, cached under benchmarks/results/tmp/) a synthetic cohort and a keyed ALS model -
1M patients x 10k therapies (1000 conditions x 10) at full size - starts ``recommender serve``
(gunicorn, the service's threaded workers, preloaded app) on a free loopback port and loads it with ``wrk``
(installed from Debian when missing and allowed; otherwise a bounded Python client), with the
service's default number of workers (usable cores + 1):

- ``GET /v1/patients/{id}/recommendations?k=10&condition=...`` with a bearer token, audit line
  fsynced per request, random patients and one of their own conditions per request;
- ``GET /health``, the bare JSON endpoint of the same server (same middleware, no auth, no
  audit, no model);

alternating, ``--repeats`` times, and reports medians of requests/s, p50 and p99. Also:

- memory: PSS/USS/RSS of master and workers with 1 and 2 workers after the same load, and the
  resident part of the memory-mapped user factors per worker (shared, not copied);
- reload under load: ``POST /v1/admin/reload`` in the middle of a run; any non-2xx response or
  socket error is a lost request;
- reference servers (``VARIANTS``), each against the bare endpoint of its own server: the audit
  line fsynced by a background thread within 10 ms, or never (what durability costs); and the
  service with the engine's answers computed before the load (``benchmarks/precomputed_app.py``),
  with and without the fsync (what the rest of the request allows, whatever the engine costs);
- in-process: the engine alone (``model.recommend``) and the service alone (the same requests
  through the app with Flask's test client, answered from precomputed engine answers), so the
  two parts of a request's cost are measured apart.

    python benchmarks/bench_http.py            # full size (first run trains for a few minutes)
    python benchmarks/bench_http.py --quick    # 100k patients x 2k therapies, shorter runs

Results: benchmarks/results/http.json (full) or http_quick.json (--quick).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import RESULTS, markdown_table, write_results  # noqa: E402

WORK = RESULTS / "tmp" / "http"
SIZES = {  # name -> (patients, conditions, therapies per condition, factors)
    "full": (1_000_000, 1000, 10, 64),
    "quick": (100_000, 200, 10, 32),
}


# --- data, model, secrets ----------------------------------------------------------------------


def build(size: str, model: str = "als") -> Path:
    """Cohort, key, keyed ``model`` artifact and tokens for ``size`` (reused when already
    built; ALS with the size's factors, another model with its defaults)."""
    patients, conditions, per_condition, factors = SIZES[size]
    folder = WORK / (size if model == "als" else f"{size}-{model}")
    done = folder / "ready.json"
    if done.exists() and _still_loads(folder / "models" / "artifact"):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    run(
        [
            sys.executable,
            "-m",
            "recommender",
            "generate",
            "--cohort",
            "planted",
            "--out",
            str(folder / "data"),
            "--patients",
            str(patients),
            "--conditions",
            str(conditions),
            "--treatments-per-condition",
            str(per_condition),
            "--seed",
            "1",
            "--format",
            "parquet",
        ]
    )
    from recommender.data.pseudonym import create_key_file
    from service.tokens import add_token

    create_key_file(folder / "key")
    started = time.perf_counter()
    run(
        [
            sys.executable,
            "-m",
            "recommender",
            "train",
            "--data",
            str(folder / "data"),
            "--out",
            str(folder / "models" / "artifact"),
            "--model",
            model,
            *(["--factors", str(factors)] if model == "als" else []),
            "--pseudonym-key-file",
            str(folder / "key"),
        ]
    )
    tokens = {
        "clinician": add_token(folder / "tokens.json", "bench-clinician", "clinician"),
        "admin": add_token(folder / "tokens.json", "bench-admin", "admin"),
    }
    (folder / "tokens.secret").write_text(json.dumps(tokens))
    _write_paths(folder)
    done.write_text(json.dumps({"train_seconds": round(time.perf_counter() - started, 1)}))
    return folder


def _still_loads(artifact: Path) -> bool:
    """Whether a cached artifact is one this release reads (the format may have moved on)."""
    from recommender.exceptions import ArtifactError
    from recommender.models.persistence import read_manifest

    try:
        read_manifest(artifact)
    except ArtifactError as exc:
        print(f"  rebuilding the cached model: {exc}", flush=True)
        return False
    return True


def _write_paths(folder: Path, n: int = 20_000) -> None:
    """Request paths: random patients, each with one of their own conditions."""
    import pandas as pd

    pc = pd.read_parquet(folder / "data" / "patient_conditions.parquet")
    sample = pc.sample(n=min(n, len(pc)), random_state=0)
    paths = [
        f"/v1/patients/{p}/recommendations?k=10&condition={c}"
        for p, c in zip(sample.patient_id, sample.condition_id)
    ]
    (folder / "paths.txt").write_text("\n".join(paths) + "\n")


def run(command: list[str]) -> None:
    print("  $", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)


# --- the server --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``recommender serve`` started here, stopped by its own pid.

    With ``precomputed=True`` gunicorn serves :mod:`benchmarks.precomputed_app` instead (same
    configuration file and settings): the service with the engine's answers computed beforehand.
    ``root`` is the checkout whose code serves (this one unless comparing two).
    """

    def __init__(
        self,
        folder: Path,
        workers: int,
        precomputed: bool = False,
        root: Path = ROOT,
        **settings: str,
    ):
        self.port = free_port()
        self.folder = folder
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECOMMENDER_")}
        env.update(
            RECOMMENDER_API_TOKENS_FILE=str(folder / "tokens.json"),
            RECOMMENDER_PSEUDONYM_KEY_FILE=str(folder / "key"),
            RECOMMENDER_AUDIT_LOG=str(folder / "audit.log"),
            RECOMMENDER_ACCESS_LOG="false",
        )
        env.update({f"RECOMMENDER_{name}": value for name, value in settings.items()})
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        if root != ROOT:  # another checkout's code (benchmarks/compare_http.py)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
        artifact = str(folder / "models" / "artifact")
        if precomputed:
            from recommender.cli.serve import conf_file

            env.update(
                RECOMMENDER_ARTIFACT=artifact,
                RECOMMENDER_BIND=f"127.0.0.1:{self.port}",
                RECOMMENDER_WORKERS=str(workers),
                BENCH_PATHS=str(folder / "paths.txt"),
                PYTHONPATH=os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")])),
            )
            command = [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                str(conf_file()),
                "benchmarks.precomputed_app:create_app()",
            ]
        else:
            command = [
                sys.executable,
                "-m",
                "recommender",
                "serve",
                "--artifact",
                artifact,
                "--port",
                str(self.port),
                "--workers",
                str(workers),
            ]
        self.log = open(folder / "server.log", "w")
        self.process = subprocess.Popen(
            command,
            env=env,
            cwd=root,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_ready()

    def wait_ready(self, seconds: float = 300) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited; see {self.folder / 'server.log'}")
            try:
                if http_get(self.port, "/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not become ready")

    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def http_get(
    port: int, path: str, token: str | None = None, method: str = "GET", timeout: float = 120
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(
            method, path, headers={"Authorization": f"Bearer {token}"} if token else {}
        )
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# --- load generation ---------------------------------------------------------------------------


def ensure_wrk() -> str | None:
    """Path of ``wrk``; installs the Debian package when missing and running as root."""
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    print("  installing wrk from Debian (apt-get install -y wrk)", flush=True)
    result = subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], capture_output=True)
    if result.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], capture_output=True)
    return shutil.which("wrk")


LUA = """
local paths = {}
for line in io.lines("%(paths)s") do paths[#paths + 1] = line end
local token = "%(token)s"
request = function()
  local headers = {}
  if token ~= "" then headers["Authorization"] = "Bearer " .. token end
  return wrk.format("GET", %(pick)s, headers)
end
"""
#: Paced runs: each connection waits this long (ms) before each request (wrk's ``delay``).
LUA_PACED = (
    LUA
    + """
delay = function() return %(delay_ms)d end
"""
)


def wrk_run(
    wrk: str, port: int, script: Path, seconds: float, connections: int, threads: int
) -> dict:
    output = subprocess.run(
        [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            "--timeout",
            "30s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_wrk(output)


def parse_wrk(text: str) -> dict:
    def millis(value: str) -> float:
        number, unit = re.match(r"([\d.]+)(\w+)", value).groups()
        return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]

    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", text, re.M))
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        "p50_ms": millis(latency["50"]),
        "p99_ms": millis(latency["99"]),
        "requests": requests,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
    }


def python_run(
    port: int, paths: list[str], token: str | None, seconds: float, connections: int
) -> dict:
    """Fallback load client: ``connections`` threads, one request at a time each."""
    latencies, failures, lock, stop = [], [0], threading.Lock(), time.monotonic() + seconds

    def worker(offset: int):
        index = offset
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                status, _ = http_get(port, paths[index % len(paths)], token, timeout=30)
            except OSError:
                status = 0
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                failures[0] += status != 200
            index += connections

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()
    return {
        "rps": len(latencies) / (time.monotonic() - started),
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
        "requests": len(latencies),
        "socket_errors": 0,
        "non_2xx": failures[0],
    }


class Loader:
    """Runs one load test against either endpoint, with wrk or the Python client."""

    def __init__(self, folder: Path, args, wrk: str | None):
        self.folder, self.args, self.wrk = folder, args, wrk
        self.token = json.loads((folder / "tokens.secret").read_text())["clinician"]
        self.paths = (folder / "paths.txt").read_text().split()
        scripts = {
            "recommend": (self.token, "paths[math.random(#paths)]"),
            "bare": ("", '"/health"'),
        }
        self.scripts = {}
        for name, (token, pick) in scripts.items():
            script = folder / f"{name}.lua"
            script.write_text(LUA % {"paths": folder / "paths.txt", "token": token, "pick": pick})
            self.scripts[name] = script

    def paced_script(self, delay_ms: int) -> Path:
        """The recommendation script with ``delay_ms`` of think time before each request."""
        script = self.folder / f"recommend-paced-{delay_ms}.lua"
        script.write_text(
            LUA_PACED
            % {
                "paths": self.folder / "paths.txt",
                "token": self.token,
                "pick": "paths[math.random(#paths)]",
                "delay_ms": delay_ms,
            }
        )
        return script

    def run(self, port: int, endpoint: str, seconds: float) -> dict:
        if self.wrk:
            return wrk_run(
                self.wrk,
                port,
                self.scripts[endpoint],
                seconds,
                self.args.connections,
                self.args.wrk_threads,
            )
        paths = self.paths if endpoint == "recommend" else ["/health"]
        token = self.token if endpoint == "recommend" else None
        return python_run(port, paths, token, seconds, self.args.connections)


# --- memory ------------------------------------------------------------------------------------


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def memory(pid: int, factors_file: str) -> dict:
    """PSS, USS (private), RSS in MiB, and the resident part of the factors mapping."""
    rollup = _kib_fields(Path(f"/proc/{pid}/smaps_rollup").read_text())
    factors_rss = factors_shared = 0
    current = None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            current = line.endswith(factors_file)
        elif current and line.startswith("Rss:"):
            factors_rss += int(line.split()[1])
        elif current and line.startswith(("Shared_Clean:", "Shared_Dirty:")):
            factors_shared += int(line.split()[1])
    private = rollup["Private_Clean"] + rollup["Private_Dirty"]
    return {
        "rss_mib": rollup["Rss"] / 1024,
        "pss_mib": rollup["Pss"] / 1024,
        "uss_mib": private / 1024,
        "factors_rss_mib": factors_rss / 1024,
        "factors_shared_mib": factors_shared / 1024,
    }


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time so far of the processes ``pids``."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / ticks


def _kib_fields(text: str) -> dict:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+):\s+(\d+) kB", text, re.M)}


def memory_run(folder: Path, loader: Loader, workers: int, seconds: float) -> dict:
    server = Server(folder, workers)
    try:
        loader.run(server.port, "recommend", seconds)
        factors = str((folder / "models" / "artifact" / "model" / "user_factors.npy").resolve())
        processes = {"master": memory(server.process.pid, factors)}
        for number, pid in enumerate(server.workers()):
            processes[f"worker{number + 1}"] = memory(pid, factors)
        return {
            "workers": workers,
            "processes": processes,
            "total_pss_mib": sum(p["pss_mib"] for p in processes.values()),
            "total_rss_mib": sum(p["rss_mib"] for p in processes.values()),
        }
    finally:
        server.stop()


def alternating_runs(
    server: Server, loader: Loader, seconds: float, repeats: int, label: str = ""
) -> dict[str, list[dict]]:
    """``repeats`` rounds of the bare endpoint then the recommendation endpoint on ``server``
    (after a warm-up run), each with the server's and the client's CPU time per request."""
    loader.run(server.port, "recommend", min(5.0, seconds))  # warm the pages and caches
    pids = [server.process.pid, *server.workers()]
    runs = {"recommend": [], "bare": []}
    for _ in range(repeats):
        for endpoint in ("bare", "recommend"):
            server_cpu, client_cpu = cpu_seconds(pids), _children_cpu()
            result = loader.run(server.port, endpoint, seconds)
            # CPU per request does not depend on what else runs on the machine
            result["server_cpu_ms_per_request"] = round(
                (cpu_seconds(pids) - server_cpu) * 1e3 / max(result["requests"], 1), 3
            )
            result["client_cpu_ms_per_request"] = round(
                (_children_cpu() - client_cpu) * 1e3 / max(result["requests"], 1), 3
            )
            runs[endpoint].append(result)
            print(f"  {label}{endpoint:9s} {result}", flush=True)
    return runs


def medians(runs: dict[str, list[dict]]) -> dict[str, dict]:
    return {
        endpoint: {
            key: statistics.median(r[key] for r in results)
            for key in (
                "rps",
                "p50_ms",
                "p99_ms",
                "server_cpu_ms_per_request",
                "client_cpu_ms_per_request",
            )
        }
        for endpoint, results in runs.items()
    }


#: Reference servers, each measured against the bare endpoint of its own server:
#: name -> (engine answers precomputed?, settings).
VARIANTS = {
    # what durability costs: the line written before the response, fsynced within 10 ms
    # (RECOMMENDER_AUDIT_FSYNC_INTERVAL_MS) or never
    "fsync_within_10ms": (False, {"AUDIT_FSYNC_INTERVAL_MS": "10"}),
    "no_fsync": (False, {"AUDIT_FSYNC": "false"}),
    # what the rest of the request allows, whatever the engine costs
    # (benchmarks/precomputed_app.py), with each line fsynced and without
    "no_engine": (True, {}),
    "no_engine_no_fsync": (True, {"AUDIT_FSYNC": "false"}),
}


def variant_runs(folder: Path, loader: Loader, workers: int, seconds: float, repeats: int) -> dict:
    """:data:`VARIANTS`, each on a server of its own, alternating with that server's bare
    endpoint: medians, runs and the throughput ratio of each."""
    result = {}
    for name, (precomputed, settings) in VARIANTS.items():
        server = Server(folder, workers, precomputed=precomputed, **settings)
        try:
            runs = alternating_runs(server, loader, seconds, repeats, label=f"{name}: ")
        finally:
            server.stop()
        summary = medians(runs)
        result[name] = {
            "settings": settings,
            "engine_precomputed": precomputed,
            "median": summary,
            "runs": runs,
            "throughput_ratio": summary["recommend"]["rps"] / summary["bare"]["rps"],
        }
    return result


# --- reload under load -------------------------------------------------------------------------


def reload_under_load(folder: Path, loader: Loader, seconds: float) -> dict:
    server = Server(folder, loader.args.workers)
    admin = json.loads((folder / "tokens.secret").read_text())["admin"]
    outcome = {}

    def reload_midway():
        time.sleep(seconds / 3)
        started = time.perf_counter()
        status, body = http_get(server.port, "/v1/admin/reload", admin, method="POST")
        outcome.update(
            status=status, seconds=round(time.perf_counter() - started, 2), body=json.loads(body)
        )

    try:
        thread = threading.Thread(target=reload_midway)
        thread.start()
        result = loader.run(server.port, "recommend", seconds)
        thread.join()
        return {
            **result,
            "reload_status": outcome.get("status"),
            "reload_seconds": outcome.get("seconds"),
            "lost_requests": result["non_2xx"] + result["socket_errors"],
        }
    finally:
        server.stop()


# --- in-process: the engine alone and the whole Flask request ---------------------------------

PACING_MS = (60, 30, 15)


def paced_runs(loader: Loader, port: int, seconds: float, repeats: int) -> list[dict]:
    """Latency of the recommendation endpoint below saturation: the same 16 connections, each
    waiting ``PACING_MS`` before every request, so the offered rate is set by the clients
    rather than by the server's capacity (medians over ``repeats`` runs)."""
    rows = []
    for delay_ms in PACING_MS:
        script = loader.paced_script(delay_ms)
        results = [
            wrk_run(
                loader.wrk, port, script, seconds, loader.args.connections, loader.args.wrk_threads
            )
            for _ in range(repeats)
        ]
        row = {
            "think_ms": delay_ms,
            **{
                key: statistics.median(r[key] for r in results)
                for key in ("rps", "p50_ms", "p99_ms")
            },
            "failed": sum(r["non_2xx"] + r["socket_errors"] for r in results),
        }
        print(f"  paced     {row}", flush=True)
        rows.append(row)
    return rows


def in_process_timing(folder: Path, calls: int = 300) -> dict:
    """Median/p99 ms, in this process, of the engine alone (``model.recommend(...).to_dict()``)
    and of the service alone: the same requests through the app with Flask's test client (auth,
    validation, fsynced audit line, metrics, JSON) answered from the engine's answers computed
    beforehand, so the two parts of a request are measured apart."""
    from threadpoolctl import threadpool_limits

    from service import create_app

    threadpool_limits(1)  # one BLAS thread, as in each worker (service/gunicorn.conf.py)
    app = create_app(
        {
            "ARTIFACT": str(folder / "models" / "artifact"),
            "API_TOKENS_FILE": str(folder / "tokens.json"),
            "PSEUDONYM_KEY_FILE": str(folder / "key"),
            "AUDIT_LOG": str(folder / "audit-inprocess.log"),
            "ACCESS_LOG": False,
        }
    )
    model = app.extensions["recommender"].store.current.model
    client = app.test_client()
    token = json.loads((folder / "tokens.secret").read_text())["clinician"]
    paths = (folder / "paths.txt").read_text().split()[:calls]
    pattern = r"/v1/patients/([^/]+)/recommendations\?k=10&condition=(\S+)"
    queries = [re.match(pattern, p).groups() for p in paths]
    for patient, condition in queries[:20]:
        model.recommend(patient, k=10, condition_id=condition).to_dict()
    answers, engine = {}, []
    for patient, condition in queries:
        started = time.perf_counter()
        answers[patient, condition] = model.recommend(patient, k=10, condition_id=condition)
        answers[patient, condition].to_dict()
        engine.append(time.perf_counter() - started)
    model.recommend = lambda patient, k, condition_id, include_tried, active_treatments=None: (
        answers[patient, condition_id]
    )
    service = []
    for path in paths[:20] + paths:
        started = time.perf_counter()
        assert client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        service.append(time.perf_counter() - started)

    def stats(times):
        times = sorted(times)
        return {
            "median_ms": statistics.median(times) * 1e3,
            "p99_ms": times[int(len(times) * 0.99)] * 1e3,
        }

    return {"engine": stats(engine), "service": stats(service[20:])}


# --- main --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="small model and short runs (make bench)"
    )
    parser.add_argument("--seconds", type=float, help="length of one load run")
    parser.add_argument("--repeats", type=int, help="runs per endpoint (medians are reported)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="gunicorn workers (default: the service's, usable cores + 1)",
    )
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--python-client", action="store_true", help="do not use wrk")
    parser.add_argument(
        "--model",
        default="als",
        help="the served model (default als); another model runs the main and paced runs "
        "and the in-process timing only (the reference servers, memory and reload runs "
        "measure the service, not the model)",
    )
    args = parser.parse_args()
    size = "quick" if args.quick else "full"
    args.workers = args.workers or len(os.sched_getaffinity(0)) + 1
    seconds = args.seconds or (5 if args.quick else 15)
    repeats = args.repeats or 3
    folder = build(size, args.model)
    full_run = args.model == "als"
    wrk = None if args.python_client else ensure_wrk()
    loader = Loader(folder, args, wrk)
    print(
        f"load generator: {'wrk ' + wrk if wrk else 'Python threads'}; size {size}; "
        f"{args.connections} connections; {args.workers} workers",
        flush=True,
    )

    load_before = os.getloadavg()
    server = Server(folder, args.workers)
    try:
        runs = alternating_runs(server, loader, seconds, repeats)
        paced = paced_runs(loader, server.port, seconds, repeats) if wrk else []
    finally:
        server.stop()
    summary = medians(runs)
    errors = sum(r["non_2xx"] + r["socket_errors"] for rs in runs.values() for r in rs)
    errors += sum(row["failed"] for row in paced)
    ratio = summary["recommend"]["rps"] / summary["bare"]["rps"]

    variants = variant_runs(folder, loader, args.workers, seconds, repeats) if full_run else {}
    errors += sum(
        r["non_2xx"] + r["socket_errors"]
        for part in variants.values()
        for rs in part["runs"].values()
        for r in rs
    )
    memory_runs = (
        [memory_run(folder, loader, workers, min(seconds, 10)) for workers in (1, 2)]
        if full_run
        else []
    )
    reload_result = reload_under_load(folder, loader, max(seconds, 12)) if full_run else None
    in_process = in_process_timing(folder)
    load_after = os.getloadavg()

    cores = os.cpu_count() or 1
    rows = [
        {
            "endpoint": name,
            "req_per_s": round(s["rps"], 1),
            "p50_ms": round(s["p50_ms"], 2),
            "p99_ms": round(s["p99_ms"], 2),
            "server_cpu_ms": round(s["server_cpu_ms_per_request"], 3),
            "client_cpu_ms": round(s["client_cpu_ms_per_request"], 3),
            # what the cores could serve if nothing else ran: all CPU to server and client
            "cpu_bound_req_per_s": round(
                cores * 1e3 / (s["server_cpu_ms_per_request"] + s["client_cpu_ms_per_request"]), 1
            ),
        }
        for name, s in summary.items()
    ]
    for row, name in zip(rows, summary):
        summary[name]["cpu_bound_rps"] = row["cpu_bound_req_per_s"]
    print()
    print(
        markdown_table(
            rows,
            [
                "endpoint",
                "req_per_s",
                "p50_ms",
                "p99_ms",
                "server_cpu_ms",
                "client_cpu_ms",
                "cpu_bound_req_per_s",
            ],
        )
    )
    cpu_ratio = summary["recommend"]["cpu_bound_rps"] / summary["bare"]["cpu_bound_rps"]
    print(
        f"\nCPU per request (server processes): recommend "
        f"{summary['recommend']['server_cpu_ms_per_request']:.2f} ms, bare "
        f"{summary['bare']['server_cpu_ms_per_request']:.2f} ms; ratio of CPU-bound "
        f"throughputs {cpu_ratio:.1%} (independent of other load on the machine)"
    )
    print(
        f"recommend / bare throughput: {ratio:.1%} (target >= 35%); "
        f"recommend p99 {summary['recommend']['p99_ms']:.1f} ms (target <= 15 ms); "
        f"failed requests in the timed runs: {errors}"
    )
    print(
        f"in-process medians: engine (model.recommend + to_dict) "
        f"{in_process['engine']['median_ms']:.2f} ms; the service around it (auth, validation, "
        f"fsynced audit, metrics, JSON) {in_process['service']['median_ms']:.2f} ms"
    )
    print("\nreference servers (each against the bare endpoint of its own server):")
    print(
        markdown_table(
            [
                {
                    "variant": name,
                    "recommend_rps": round(v["median"]["recommend"]["rps"]),
                    "bare_rps": round(v["median"]["bare"]["rps"]),
                    "ratio": f"{v['throughput_ratio']:.1%}",
                    "p99_ms": round(v["median"]["recommend"]["p99_ms"], 1),
                    "server_cpu_ms": round(
                        v["median"]["recommend"]["server_cpu_ms_per_request"], 3
                    ),
                }
                for name, v in variants.items()
            ],
            ["variant", "recommend_rps", "bare_rps", "ratio", "p99_ms", "server_cpu_ms"],
        )
    )
    if paced:
        print("\nbelow saturation (16 connections, think time before each request):")
        print(
            markdown_table(
                [
                    {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}
                    for row in paced
                ],
                ["think_ms", "rps", "p50_ms", "p99_ms", "failed"],
            )
        )
    if full_run:
        memory_rows = [
            {"workers": m["workers"], "process": name, **{k: round(v, 1) for k, v in p.items()}}
            for m in memory_runs
            for name, p in m["processes"].items()
        ]
        print()
        print(
            markdown_table(
                memory_rows,
                [
                    "workers",
                    "process",
                    "rss_mib",
                    "pss_mib",
                    "uss_mib",
                    "factors_rss_mib",
                    "factors_shared_mib",
                ],
            )
        )
        print(
            f"total PSS: 1 worker {memory_runs[0]['total_pss_mib']:.0f} MiB, 2 workers "
            f"{memory_runs[1]['total_pss_mib']:.0f} MiB (user factors file "
            f"{(folder / 'models' / 'artifact' / 'model' / 'user_factors.npy').stat().st_size / 2**20:.0f} MiB)"
        )
        print(
            f"reload under load: status {reload_result['reload_status']} in "
            f"{reload_result['reload_seconds']} s; {reload_result['requests']} requests, "
            f"lost {reload_result['lost_requests']}; p99 during the run {reload_result['p99_ms']:.1f} ms"
        )
    print(
        f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} (2 cores: other "
        "work on the machine shows up in these numbers)"
    )
    path = write_results(
        ("http" if size == "full" else "http_quick")
        + ("" if args.model == "als" else f"_{args.model}"),
        {
            "size": size,
            "model": args.model,
            "sizes": dict(
                zip(("patients", "conditions", "therapies_per_condition", "factors"), SIZES[size])
            ),
            "load_generator": "wrk" if wrk else "python-threads",
            "connections": args.connections,
            "workers": args.workers,
            "seconds_per_run": seconds,
            "repeats": repeats,
            "median": summary,
            "runs": runs,
            "paced": paced,
            "variants": variants,
            "throughput_ratio": ratio,
            "cpu_bound_throughput_ratio": cpu_ratio,
            "failed_requests": errors,
            "targets": {
                "p99_ms_max": 15,
                "throughput_ratio_min": 0.35,
                "p99_met": summary["recommend"]["p99_ms"] <= 15,
                "ratio_met": ratio >= 0.35,
                "p99_met_below_saturation_at_rps": [
                    round(row["rps"], 1) for row in paced if row["p99_ms"] <= 15
                ],
            },
            "in_process": in_process,
            "memory": memory_runs,
            "reload_under_load": reload_result,
            "load_average": {"before": load_before, "after": load_after},
        },
    )
    print(f"\nwrote {path}")
    lost = reload_result["lost_requests"] if reload_result else 0
    return 0 if errors == 0 and lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
