"""Interpreter-exit aborts after reading a Delta table (delta-rs #2184), measured.

A process that read a Delta table's data through deltalake can abort at interpreter exit
("terminate called without an active exception", SIGABRT, exit code 134 or -6). This script
counts it, ``--runs`` times each:

1. ``repro``: the smallest scripts that do and do not abort: the same read of a 1,000-row
   table through deltalake's own filesystem, through pyarrow's, metadata only, with a
   collection before exit, with ``os._exit``; and the plain read under other deltalake and
   pyarrow releases, when ``--other DIR`` names ``pip install --target DIR`` folders.
2. ``jobs``: every job and CLI of the project, as a user runs them, on a small lake: each
   iteration lands a day, trains on it (2 steps: the exit is measured, not the model),
   replays the next, promotes, reads the registry four ways, exports, and prepares a public
   dataset (``--ratings``, MovieLens ml-latest-small by default, skipped when missing).

    python bench/exit_abort.py --runs 20                       # both parts
    python bench/exit_abort.py --part repro --runs 20 --other /tmp/dl/1.5.1 --other /tmp/pa/21

Writes ``bench/results/exit_abort.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "exit_abort.json"

READ = "from deltalake import DeltaTable; t = DeltaTable({uri!r}).to_pyarrow_table()"
REPROS = {
    "deltalake read (to_pyarrow_table)": READ,
    "deltalake dataset read (to_pyarrow_dataset().to_table())":
        "from deltalake import DeltaTable; t = DeltaTable({uri!r}).to_pyarrow_dataset().to_table()",
    "deltalake metadata only (version, file_uris)":
        "from deltalake import DeltaTable; d = DeltaTable({uri!r}); d.version(); d.file_uris()",
    "file list from deltalake, data read by pyarrow":
        "import pyarrow.parquet as pq; from deltalake import DeltaTable; "
        "t = pq.read_table(DeltaTable({uri!r}).file_uris())",
    "dnr.storage.Lake.read_table (file list from deltalake, pyarrow reads)":
        "from dnr.storage import Lake; t = Lake({root!r}).read_table('request_logs')",
    "deltalake read, then del + gc.collect()": READ + "; import gc; del t; gc.collect()",
    "deltalake read, then os._exit(0) (dnr.runtime.exit_process)": READ + "; import os; os._exit(0)",
}


def _aborted(proc: subprocess.CompletedProcess) -> bool:
    return proc.returncode in (134, -6) or "terminate called" in proc.stderr


def _count(argv: list[str], runs: int, env: dict | None = None, cwd: Path | None = None,
           timeout: int = 600) -> dict:
    """Run ``argv`` ``runs`` times: how many ended with rc 0, how many aborted, seconds."""
    codes, aborts, started = [], 0, time.monotonic()
    for _ in range(runs):
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
        codes.append(proc.returncode)
        aborts += _aborted(proc)
        if proc.returncode not in (0, 134, -6):
            print(f"  rc {proc.returncode}: {' '.join(argv[-3:])}\n{proc.stderr[-1500:]}", file=sys.stderr)
    return {"runs": runs, "ok": codes.count(0), "aborted": aborts,
            "other_failures": sum(c not in (0, 134, -6) for c in codes),
            "seconds_per_run": round((time.monotonic() - started) / runs, 2)}


def _versions(pythonpath: str | None) -> str:
    env = {**os.environ, **({"PYTHONPATH": pythonpath} if pythonpath else {})}
    probe = "import deltalake, pyarrow; print(deltalake.__version__, pyarrow.__version__)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env).stdout
    deltalake, pyarrow = out.split()
    return f"deltalake {deltalake} + pyarrow {pyarrow}"


def repro(runs: int, others: list[str]) -> dict:
    import pyarrow as pa
    from deltalake import write_deltalake

    with tempfile.TemporaryDirectory(prefix="dnr-abort-") as tmp:
        uri = f"{tmp}/request_logs"  # a lake of one table, so that Lake.read_table can name it
        write_deltalake(uri, pa.table({"a": list(range(1000))}), mode="overwrite")
        results = {}
        for name, code in REPROS.items():
            results[name] = _count([sys.executable, "-c", code.format(uri=uri, root=tmp)], runs, cwd=REPO)
            print(f"{name}: {results[name]}", flush=True)
        for path in others:  # the plain read under another release (pip install --target)
            name = f"deltalake read under {_versions(path)}"
            env = {**os.environ, "PYTHONPATH": path}
            results[name] = _count([sys.executable, "-c", READ.format(uri=uri)], runs, env=env)
            print(f"{name}: {results[name]}", flush=True)
    return {"installed": _versions(None), "variants": results}


def _job(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "jobs" / args[0]), *args[1:]]


def _add(totals: dict[str, dict], name: str, argv: list[str]) -> subprocess.CompletedProcess:
    """Run one command once, add its outcome to ``totals[name]``; returns the process."""
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=900)
    total = totals.setdefault(name, {"runs": 0, "ok": 0, "aborted": 0, "other_failures": 0, "seconds": 0.0})
    total["runs"] += 1
    total["ok"] += proc.returncode == 0
    total["aborted"] += _aborted(proc)
    total["other_failures"] += proc.returncode != 0 and not _aborted(proc)
    total["seconds"] = round(total["seconds"] + time.monotonic() - started, 1)
    if proc.returncode != 0 and not _aborted(proc):
        print(f"  {name} failed, rc {proc.returncode}:\n{proc.stderr[-1500:]}", file=sys.stderr)
    return proc


def jobs(runs: int, ratings: Path | None) -> dict:
    """Every job and CLI ``runs`` times on one small lake that grows a day per iteration."""
    totals: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="dnr-abort-jobs-") as tmp:
        lake, result = f"{tmp}/lake", f"{tmp}/result.json"
        small = ["--requests-per-day", "300", "--users", "2000", "--items", "5000"]
        _add(totals, "jobs/generate_logs.py", _job("generate_logs.py", "--lake", lake, "--start",
                                                   "2026-01-01", "--days", "2", *small))
        registry = [sys.executable, "-m", "dnr.registry", "--lake", lake]
        for i in range(runs):
            ds = (dt.date(2026, 1, 3) + dt.timedelta(days=i)).isoformat()
            _add(totals, "jobs/generate_logs.py", _job("generate_logs.py", "--lake", lake, "--days", "1", *small))
            trained = _add(totals, "jobs/train_daily.py", _job(
                "train_daily.py", "--lake", lake, "--ds", ds, "--json", result,
                "train.max_steps=2", "gate.auto_promote=false"))
            version = json.loads(Path(result).read_text())["version"] if trained.returncode == 0 else "latest"
            _add(totals, "jobs/replay_eval.py", _job("replay_eval.py", "--lake", lake, "--ds", ds,
                                                     "--candidate", version, "--baseline", "none"))
            _add(totals, "jobs/promote.py", _job("promote.py", "--lake", lake, "--version", version,
                                                 "--reason", "bench/exit_abort.py"))
            for view in (["list"], ["list", "--json"], ["show", version], ["production", "--json"]):
                _add(totals, "python -m dnr.registry " + view[0] + (" --json" if "--json" in view else ""),
                     [*registry, *view])
            _add(totals, "jobs/export_model.py", _job("export_model.py", "--lake", lake, "--version",
                                                      "production", "--out", f"{tmp}/serving"))
            if ratings is not None:
                _add(totals, "jobs/prepare_public.py", _job("prepare_public.py", "--ratings", str(ratings),
                                                            "--lake", f"{tmp}/public", "--mode", "overwrite"))
            print(f"iteration {i + 1}/{runs}: aborted " + ", ".join(
                f"{n.split('/')[-1]} {t['aborted']}/{t['runs']}" for n, t in totals.items()), flush=True)
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--part", choices=["repro", "jobs", "both"], default="both")
    parser.add_argument("--ratings", type=Path, default=REPO.parent / "shared/data/ml-latest-small/ratings.csv",
                        help="a ratings file for jobs/prepare_public.py (skipped when missing)")
    parser.add_argument("--other", action="append", default=[],
                        help="a `pip install --target` folder with another deltalake or pyarrow")
    args = parser.parse_args()
    result = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    result["machine"] = f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}"
    result["when"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    if args.part in ("repro", "both"):
        result["repro"] = {"command": " ".join(["python bench/exit_abort.py --part repro", f"--runs {args.runs}",
                                                *(f"--other {o}" for o in args.other)]),
                           **repro(args.runs, args.other)}
    if args.part in ("jobs", "both"):
        result["jobs"] = {"command": f"python bench/exit_abort.py --part jobs --runs {args.runs}",
                          "commands": jobs(args.runs, args.ratings if args.ratings.exists() else None)}
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")
    sys.stdout.flush()
    os._exit(0)  # this process read Delta tables too


if __name__ == "__main__":
    main()
