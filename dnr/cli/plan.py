"""``dnr train --dry-run``: what a daily run would do, from the registry and the Delta log alone.

The decisions are those of :func:`dnr.daily.run._plan`, made with the same functions (the parent
policy :meth:`~dnr.registry.Registry.parent_for`, :func:`~dnr.daily.plan.plan_window`,
:func:`~dnr.daily.plan.cap_window`, :meth:`~dnr.registry.Registry.find_equivalent`,
:func:`~dnr.data.late.find_late_data`), then the window is opened at the pinned table version
(:meth:`dnr.data.window.Window.open`) for its files and their row counts: the Delta log's add
actions, never a data file. No Ray, no lease taken, nothing written; imports neither torch nor Ray.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from dnr.config import JobConfig
from dnr.daily.plan import cap_window, plan_window
from dnr.data.late import LateData, find_late_data
from dnr.data.window import Window, table_partitions
from dnr.registry import ModelVersion, Registry
from dnr.runtime import EXIT_NO_INPUT, EXIT_REFUSED, JobError
from dnr.schemas import REQUEST_LOGS
from dnr.storage import Lake

_PARTITION = re.compile(rf"(?:^|/){re.escape(REQUEST_LOGS.col.ds)}=([^/]+)/")


@dataclass
class DayPlan:
    """What the run for day ``ds`` would train: None ``window`` when it is up to date."""

    ds: str
    table_version: int
    partitions: list[str]
    parent: ModelVersion | None
    window: tuple[str, str] | None = None
    cut: list[str] = field(default_factory=list)
    """the window's oldest days that ``train.max_window_days`` leaves out"""
    equivalent: ModelVersion | None = None
    """a version already trained from the same parent on the same data (the run would skip)"""
    late: LateData | None = None
    groups: list[tuple[str, bool, int, int]] = field(default_factory=list)
    """(day, late, files, rows) of the window's files, by the Delta log"""

    @property
    def files(self) -> int:
        return sum(n for _, _, n, _ in self.groups)

    @property
    def rows(self) -> int:
        return sum(n for _, _, _, n in self.groups)


def plan_day(lake: Lake, cfg: JobConfig, ds: str | None = None, force: bool = False) -> DayPlan:
    """The plan of the daily run for ``ds`` (default: the newest partition), as it would make it now."""
    from deltalake.exceptions import TableNotFoundError

    try:
        table_version, partitions = table_partitions(lake)
    except TableNotFoundError:
        raise JobError(f"{lake.table_uri('request_logs')} does not exist", EXIT_NO_INPUT) from None
    if not partitions:
        raise JobError(f"{lake.table_uri('request_logs')} has no partitions", EXIT_NO_INPUT)
    registry = Registry(lake)
    parent = registry.parent_for(cfg.train.model_name)
    plan = DayPlan(ds=ds or partitions[-1], table_version=table_version, partitions=partitions, parent=parent)
    window = plan_window(partitions, parent, plan.ds)
    if window is None:
        return plan
    plan.window, plan.cut = cap_window(partitions, window, cfg.train.max_window_days)
    if not force:
        plan.equivalent = registry.find_equivalent(cfg.train.model_name, parent and parent.version,
                                                   plan.window[1], table_version)
    if parent is not None:
        plan.late = find_late_data(lake, parent.table_version, parent.window_end, table_version)
    late_files = plan.late.files if plan.late else ()
    try:
        opened = Window.open(lake, *plan.window, version=table_version, extra_files=late_files)
    except (ValueError, RuntimeError) as error:  # the schema check, missing row statistics
        raise JobError(str(error), EXIT_REFUSED) from error
    plan.groups = partition_groups(opened.files, opened.file_rows, set(late_files))
    return plan


def partition_groups(files, file_rows, late: set[str]) -> list[tuple[str, bool, int, int]]:
    """(day, late, files, rows) per ``ds=`` partition of ``files`` (by their paths), oldest first."""
    groups: dict[tuple[str, bool], list[int]] = {}
    for path, rows in zip(files, file_rows):
        found = _PARTITION.search(path)
        counts = groups.setdefault((found.group(1) if found else "?", path in late), [0, 0])
        counts[0] += 1
        counts[1] += rows
    return [(day, is_late, n, rows) for (day, is_late), (n, rows) in sorted(groups.items())]


def describe_plan(plan: DayPlan, cfg: JobConfig) -> str:
    """The plan as the console shows it."""
    parent = plan.parent
    lines = [
        ("day", f"ds={plan.ds}: train up to {_day_before(plan.ds)}, hold out {plan.ds}"),
        ("parent", (f"{parent.version} ({parent.status}, window {parent.window_start}..{parent.window_end}, "
                    f"table v{parent.table_version})") if parent else "(cold start)"),
        ("table", (f"request_logs v{plan.table_version} (pinned), partitions {plan.partitions[0]}.."
                   f"{plan.partitions[-1]}")),
    ]
    if plan.window is None:
        after = parent.window_end if parent else "-"
        lines.append(("window", f"up to date: nothing to train (no partition after {after} and before {plan.ds})"))
        return _aligned(lines)
    lines.append(("window", f"{plan.window[0]}..{plan.window[1]}"))
    if plan.cut:
        lines.append(("cut", (f"train.max_window_days={cfg.train.max_window_days} leaves out {len(plan.cut)} "
                              f"older day(s), {plan.cut[0]}..{plan.cut[-1]}: no version will train on them")))
    if plan.late is not None and plan.late.describe():
        lines.append(("late rows", plan.late.describe()))
    lines.append(("rows", (f"{plan.rows:,} in {plan.files} file(s), by the Delta log (before validation "
                           "and quarantine)")))
    lines += [("", f"ds={day}  {n:>4} file(s)  {rows:>12,} rows" + ("  (late)" if late else ""))
              for day, late, n, rows in plan.groups]
    lines.append(("then", _then(plan, cfg)))
    return _aligned(lines)


def _then(plan: DayPlan, cfg: JobConfig) -> str:
    if plan.equivalent is not None:
        return (f"nothing: {plan.equivalent.version} was already trained from this parent on this data "
                "(--force trains again)")
    train = f"train {cfg.train.epochs} epoch(s) on {cfg.train.num_workers} worker(s), register a candidate"
    if not cfg.gate.enabled:
        return f"{train}; no replay (gate.enabled=false)"
    if plan.ds not in plan.partitions:
        return f"{train}; ds={plan.ds} has not landed, so no replay"
    action = "applied to the registry" if cfg.gate.auto_promote else "reported (gate.auto_promote=false)"
    return f"{train}; replay ds={plan.ds} against production, the gate's decision {action}"


def _day_before(ds: str) -> str:
    return (dt.date.fromisoformat(ds) - dt.timedelta(days=1)).isoformat()


def _aligned(lines: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in lines)


def _lease_line(lake: Lake, cfg: JobConfig) -> str | None:
    """Who holds the run's lease now, if anyone (a run started now would exit 75)."""
    from dnr.lease import LakeLease

    try:
        holder = LakeLease.read(lake, f"train_daily/{cfg.train.model_name}")
    except Exception:  # noqa: BLE001 - informative only: a dry run never fails on it
        return None
    if holder is None or not holder.live():
        return None
    until = dt.datetime.fromtimestamp(holder.expires_at, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    return (f"  NOTE the lease is held by {holder.owner} ({holder.host}, pid {holder.pid}) until {until}: "
            "a run started now would exit 75")


def print_plan(lake: Lake, cfg: JobConfig, config_path, ds: str | None = None, force: bool = False,
               demo: dict | None = None) -> int:
    """Print the dry run's plan; 0 (a refusal raises :class:`JobError`)."""
    print(f"[daily] dry run: lake {lake.root}; config {config_path or '(defaults)'}; model line "
          f"{cfg.train.model_name}. Nothing is trained, registered or written.")
    if demo:
        print(f"  {lake.table_uri('request_logs')} does not exist: the run would first write the demo world "
              f"({demo['days']} days x {demo['requests_per_day']:,} requests), then train a cold start on "
              "its days before the newest")
        return 0
    print(describe_plan(plan_day(lake, cfg, ds, force), cfg))
    lease = _lease_line(lake, cfg)
    if lease:
        print(lease)
    return 0
