"""Scale benchmark: a million-request window through the daily job, as a user runs it, and the
same for a window 4x smaller, with wall time by phase and the peak memory of every process.

For each size: ``jobs/generate_logs.py`` writes ``--days`` days plus the held-out day into a
fresh lake, then ``jobs/train_daily.py`` (embedded Ray, jobs/configs/local.yaml with
``SCALE_OVERRIDES``: one full epoch, the validation hold-out scored every 200 steps and never
stopping the run early, so both sizes train on their whole window) trains on the window,
checkpoints, registers and replays the held-out day. While the job runs, this script samples
``/proc`` (Linux) every half second for the job's process and all of its descendants (the
embedded Ray: raylet, Train workers, Ray Data tasks, scoring actors):
``VmHWM`` (peak resident), and the private (``RssAnon``) and shared (``RssShmem``: object-store
pages) parts of the resident set at their peaks. The driver's samples are also tagged with the
phase the job's console was in (``PHASE_MARKERS``), so its peaks are reported per phase.

The costs per request are the differences between the two sizes (the fixed costs, such as Ray
start-up and a checkpoint of the same model, cancel), and give the projection to 10^8 requests
a day; its assumptions are written into the results.

    python bench/scale.py            # 5 days x 200,000 requests (1,000,000), then 5 x 50,000
    python bench/scale.py --quick    # 5 days x 20,000, then 5 x 5,000 (a few minutes)

Results: bench/results/scale.json (``--quick``: scale_quick.json) and a table on stdout.
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
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
FLAT_TOLERANCE = 0.15
PROJECTED_REQUESTS = 10**8
#: applied before the command line's overrides: the same amount of work per request at both sizes.
#: local.yaml evaluates its hold-out (up to validation.max_requests = 50,000) every 25 steps: at
#: the million-request window that is 50,000 requests scored per 6,400 trained, and the first
#: 200 steps ran at an ETA of 67 minutes for the epoch; every 200 steps is one evaluation per
#: 51,200 trained requests.
SCALE_OVERRIDES = ("train.epochs=1", "validation.patience=0", "validation.every_steps=200")
#: (phase, text of the console line that starts it), in the order a daily run prints them
PHASE_MARKERS = (("scan", "[daily] ds="), ("train", " workers x batch "), ("replay", "[replay] "),
                 ("after", "[daily] replay evaluation"))


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _descendants(root: int) -> list[int]:
    tree, out, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += tree.get(pid, [])
    return out


def _status(pid: int) -> tuple[str, dict[str, int]] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            title = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return None
    kb = {k: int(fields[k].split()[0]) for k in ("VmHWM", "VmRSS", "RssAnon", "RssShmem") if k in fields}
    return title, kb


def _role(title: str, pid: int, root: int) -> str | None:
    if pid == root:
        return "driver"
    if title.split(" ", 1)[0].endswith("/raylet"):  # the binary (other processes name it in flags)
        return "raylet"
    for needle, role in (("RayTrainWorker", "train_worker"), ("ReplayScorer", "scorer"),
                         ("SplitCoordinator", "split_coordinator"), ("TrainController", "train_controller")):
        if title.startswith("ray::") and needle in title:
            return role
    return None


class MemorySampler:
    """Peaks per process of a job's tree, by role (driver, train_worker, raylet, ...)."""

    def __init__(self, root: int, interval_s: float = 0.5, phase=lambda: "startup"):
        self.root, self.interval_s, self.phase = root, interval_s, phase
        self.peaks: dict[int, dict] = {}
        self.driver_by_phase: dict[str, dict[str, int]] = {}
        """phase -> the driver's largest VmRSS, RssAnon and RssShmem (kB) sampled in it."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self):
        while not self._stop.is_set():
            for pid in _descendants(self.root):
                got = _status(pid)
                if got is None:
                    continue
                title, kb = got
                peak = self.peaks.setdefault(pid, {"role": None, "title": title})
                role = _role(title, pid, self.root)
                if role:  # a worker process takes its role's title once it runs one
                    peak["role"], peak["title"] = role, title[:80]
                for key, value in kb.items():
                    peak[key] = max(peak.get(key, 0), value)
                if pid == self.root:
                    phase = self.driver_by_phase.setdefault(self.phase(), {})
                    for key in ("VmRSS", "RssAnon", "RssShmem"):
                        phase[key] = max(phase.get(key, 0), kb.get(key, 0))
            self._stop.wait(self.interval_s)

    def by_role(self) -> dict[str, list[dict]]:
        roles: dict[str, list[dict]] = {}
        for pid, peak in sorted(self.peaks.items()):
            if peak["role"]:
                roles.setdefault(peak["role"], []).append(
                    {"pid": pid, **{f"{k}_mb": round(v / 1024, 1) for k, v in peak.items()
                                    if k in ("VmHWM", "RssAnon", "RssShmem")}})
        return roles


class ConsoleTee:
    """Copies a job's console to its log file, and knows which phase the job is in."""

    def __init__(self, stream, log: Path):
        self.stream, self.log, self.current = stream, log, "startup"
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        with open(self.log, "w") as out:
            for line in self.stream:
                out.write(line)
                for phase, marker in PHASE_MARKERS:
                    if marker in line:
                        self.current = phase
                        break

    def join(self):
        self._thread.join()


def run_size(days: int, per_day: int, workdir: Path, overrides: list[str]) -> dict:
    lake = workdir / f"lake_{per_day}"
    started = time.monotonic()
    subprocess.run([sys.executable, str(REPO / "jobs" / "generate_logs.py"), "--lake", str(lake),
                    "--days", str(days + 1), "--requests-per-day", str(per_day)],
                   check=True, capture_output=True, text=True)
    generate_s = time.monotonic() - started
    result_file = workdir / f"result_{per_day}.json"
    log = workdir / f"train_{per_day}.log"
    started = time.monotonic()
    job = subprocess.Popen([sys.executable, str(REPO / "jobs" / "train_daily.py"), "--lake",
                            str(lake), "--json", str(result_file), *overrides],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=workdir,
                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
    console = ConsoleTee(job.stdout, log)
    with MemorySampler(job.pid, phase=lambda: console.current) as sampler:
        code = job.wait()
    console.join()
    wall = time.monotonic() - started
    if code != 0:
        raise SystemExit(f"train_daily.py failed ({code}); see {log}:\n" + log.read_text()[-3000:])
    result = json.loads(result_file.read_text())
    metrics = result["metrics"]
    phases = result["phases"]
    requests = int(metrics["train/requests_epoch"])
    return {
        "window_requests": days * per_day, "days": days, "requests_per_day": per_day,
        "rows_read": result["rows_read"], "rows_quarantined": result["rows_quarantined"],
        "requests_trained": requests, "global_step": result["global_step"],
        "generate_s": round(generate_s, 1), "job_wall_s": round(wall, 1),
        "phases_s": {k: round(v, 1) for k, v in phases.items()},
        "startup_and_other_s": round(wall - sum(phases.values()), 1),
        "train_requests_per_s": round(requests / phases["train"], 1),
        "scan_requests_per_s": round(result["rows_read"] / phases["scan"], 1),
        "replay_decision": result["replay_decision"],
        "memory_peaks": sampler.by_role(),
        "driver_by_phase_mb": {phase: {f"{k}_mb": round(v / 1024, 1) for k, v in kb.items()}
                               for phase, kb in sampler.driver_by_phase.items()},
        "log": str(log),
    }


def _peak(run: dict, role: str, key: str = "VmHWM_mb") -> float:
    return max((p[key] for p in run["memory_peaks"].get(role, [])), default=0.0)


def flatness(big: dict, small: dict) -> dict:
    """Peak memory of the big window over the small one's, per role and measure."""
    out = {}
    for role in ("driver", "train_worker", "raylet"):
        for key in ("VmHWM_mb", "RssAnon_mb", "RssShmem_mb"):
            a, b = _peak(big, role, key), _peak(small, role, key)
            if b:
                out[f"{role}.{key}"] = {"big": a, "small": b, "ratio": round(a / b, 3)}
    driver = out["driver.VmHWM_mb"]["ratio"]
    out["driver_flat_within_15pct"] = abs(driver - 1) <= FLAT_TOLERANCE
    return out


def projection(big: dict, small: dict, workers: int, cpus: int) -> dict:
    """Wall time of a 10^8-request day from the marginal costs between the two sizes."""
    dn = big["window_requests"] - small["window_requests"]
    marginal = {k: (big["phases_s"][k] - small["phases_s"][k]) / dn
                for k in ("scan", "train", "replay") if k in big["phases_s"]}
    # resources the marginal costs were measured on: the scan and the replay used the node's
    # CPUs, training used `workers` Train workers of one CPU each
    scan_cpu_s = marginal["scan"] * cpus
    train_worker_s = marginal["train"] * workers
    replay_cpu_s = (big["phases_s"]["replay"] - small["phases_s"]["replay"]) / (
        big["requests_per_day"] - small["requests_per_day"]) * cpus
    table = []
    for n in (4, 16, 64):
        cluster_cpus = n * 8
        table.append({
            "train_workers": n, "cluster_cpus_for_data": cluster_cpus,
            "scan_h": round(PROJECTED_REQUESTS * scan_cpu_s / cluster_cpus / 3600, 2),
            "train_h_cpu_workers": round(PROJECTED_REQUESTS * train_worker_s / n / 3600, 2),
            "replay_h": round(PROJECTED_REQUESTS * replay_cpu_s / cluster_cpus / 3600, 2),
        })
    return {
        "marginal_s_per_request": {k: v for k, v in marginal.items()},
        "scan_cpu_s_per_request": scan_cpu_s, "train_worker_s_per_request": train_worker_s,
        "replay_cpu_s_per_request": replay_cpu_s,
        "assumptions": [
            f"marginal costs = (big - small) / {dn:,} requests: fixed costs (Ray start-up, "
            "model build, one checkpoint of the same size) cancel",
            f"scan and replay scale with the cluster's CPUs: measured on {cpus} logical CPUs of this "
            "2-core VM (so the CPU-seconds are pessimistic by up to the logical/physical ratio); "
            "projected with 8 CPUs per Train worker",
            "training scales linearly with the workers (no all-reduce cost growth), at local.yaml "
            "sizes on CPU workers; GPU workers were not measured (no device was lent)",
            "the held-out day is one day of 10^8 requests, replayed by the cluster's CPUs",
            "one epoch; object-store spilling and S3 bandwidth not modelled (a local lake)",
        ],
        "projection_10e8": table,
    }


def machine() -> dict:
    return {"platform": platform.platform(), "python": platform.python_version(),
            "nproc": os.cpu_count(), "load_avg_start": os.getloadavg()[0],
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def markdown(out: dict) -> str:
    rows = ["| window | job wall | scan | train | of which checkpoint | register | replay | "
            "train req/s | scan req/s | driver peak RSS | train worker peak RSS (private) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in (out["big"], out["small"]):
        p = run["phases_s"]
        workers = ", ".join(f"{w['VmHWM_mb']:.0f} ({w['RssAnon_mb']:.0f})"
                            for w in run["memory_peaks"].get("train_worker", []))
        rows.append(f"| {run['window_requests']:,} | {run['job_wall_s']:.0f}s | {p['scan']:.0f}s | "
                    f"{p['train']:.0f}s | {p['checkpoint']:.1f}s | {p['register']:.1f}s | "
                    f"{p.get('replay', 0):.0f}s | {run['train_requests_per_s']:,.0f} | "
                    f"{run['scan_requests_per_s']:,.0f} | {_peak(run, 'driver'):.0f} MB | {workers} MB |")
    flat = out["flatness"]
    rows.append("")
    rows += [f"* {k}: {v['big']:.0f} vs {v['small']:.0f} MB (x{v['ratio']:.2f})"
             for k, v in flat.items() if isinstance(v, dict)]
    rows.append(f"* driver flat within 15%: {flat['driver_flat_within_15pct']}")
    rows.append("")
    rows.append("| driver by phase (MB: RSS / private / object-store pages) | "
                + " | ".join(f"{run['window_requests']:,}" for run in (out["big"], out["small"])) + " |")
    rows.append("|---|---|---|")
    for phase in ("startup", *(name for name, _ in PHASE_MARKERS)):
        cells = [run["driver_by_phase_mb"].get(phase) for run in (out["big"], out["small"])]
        if any(cells):
            rows.append(f"| {phase} | " + " | ".join(
                f"{c['VmRSS_mb']:.0f} / {c['RssAnon_mb']:.0f} / {c['RssShmem_mb']:.0f}" if c else "-"
                for c in cells) + " |")
    rows.append("")
    rows.append("| train workers | data CPUs | scan h | train h (CPU workers) | replay h |")
    rows.append("|---|---|---|---|---|")
    rows += [f"| {r['train_workers']} | {r['cluster_cpus_for_data']} | {r['scan_h']} | "
             f"{r['train_h_cpu_workers']} | {r['replay_h']} |" for r in out["projection"]["projection_10e8"]]
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="5 x 20,000 and 5 x 5,000 requests")
    p.add_argument("--days", type=int, default=5)
    p.add_argument("--num-cpus", type=int, default=4, help="logical CPUs of the embedded Ray")
    p.add_argument("--workdir", default=None, help="where the lakes go (default: a temporary directory)")
    p.add_argument("overrides", nargs="*", help="key=value overrides for train_daily.py")
    args = p.parse_args(argv)
    per_day = 20_000 if args.quick else 200_000
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="dnr-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    overrides = ["--num-cpus", str(args.num_cpus), *SCALE_OVERRIDES, *args.overrides]
    out = {"command": "python bench/scale.py" + (" --quick" if args.quick else ""),
           "machine": machine(), "overrides": [*SCALE_OVERRIDES, *args.overrides]}
    for name, size in (("big", per_day), ("small", per_day // 4)):
        print(f"[scale] {name}: {args.days} days x {size:,} requests (+ a held-out day) in {workdir}",
              flush=True)
        out[name] = run_size(args.days, size, workdir, overrides)
        print(f"[scale] {name}: {json.dumps(out[name]['phases_s'])}, "
              f"{out[name]['train_requests_per_s']:,.0f} train req/s", flush=True)
    out["machine"]["load_avg_end"] = os.getloadavg()[0]
    out["flatness"] = flatness(out["big"], out["small"])
    workers = int(next((o.split("=", 1)[1] for o in args.overrides
                        if o.startswith("train.num_workers=")), 2))
    out["projection"] = projection(out["big"], out["small"], workers, args.num_cpus)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / ("scale_quick.json" if args.quick else "scale.json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(markdown(out))
    print(f"[scale] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
