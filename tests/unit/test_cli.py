"""The ``dnr`` command: every command and its ``--help``, the config with each key's help, the
refusals before Ray starts, ``train --dry-run``'s plan, and one exit status per outcome, the
same for ``dnr <command>`` and the ``jobs/*.py`` shim over it. In process and without Ray, but
for two short subprocesses that check how the console script ends."""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dnr.cli import COMMANDS, main
from dnr.config import config_to_dict, load_config
from dnr.registry import ModelVersion, Registry
from dnr.runtime import (
    EXIT_ALREADY_PRODUCTION,
    EXIT_INTERRUPTED,
    EXIT_NO_INPUT,
    EXIT_REFUSED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    Terminated,
)
from dnr.storage import Lake
from tests.factories import make_rows, write_logs

REPO = Path(__file__).resolve().parents[2]


def _job(name: str):
    spec = importlib.util.spec_from_file_location(f"_cli_job_{name}", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """No command here may start Ray; the SIGINT/SIGTERM handlers the jobs install are restored."""
    def started(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr("dnr.runtime.start_ray", started)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # the suite's shared local Ray may be up already (integration tests run first): what counts
    # is that no command here connected one
    before = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    if "ray" in sys.modules and not before:
        assert not sys.modules["ray"].is_initialized()


def _version(n: int, status: str, window=("2024-01-01", "2024-01-01"), table_version=0) -> ModelVersion:
    return ModelVersion(version=f"dnr-v{n:04d}", model_name="dnr", family="prm", status=status,
                        checkpoint_uri=f"/ckpt/{n}", config_json="{}",
                        created_at=dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc) + dt.timedelta(hours=n),
                        window_start=window[0], window_end=window[1], table_version=table_version)


@pytest.fixture
def lake(tmp_path) -> Lake:
    """Three days (table v0, v1), a production version trained on the first at v1, then late rows
    of that day and a fourth day (v2, v3)."""
    lake = Lake(str(tmp_path / "lake"))
    write_logs(lake, make_rows(8, ds="2024-01-01") + make_rows(5, ds="2024-01-02"))
    write_logs(lake, make_rows(7, ds="2024-01-03"))
    Registry(lake).register(_version(1, "production", table_version=1))
    write_logs(lake, make_rows(3, ds="2024-01-01", seed=5))
    write_logs(lake, make_rows(4, ds="2024-01-04"))
    return lake


def test_dnr_and_every_command_have_a_help(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS) and "75   another run holds the lake's lease" in out
    for name in COMMANDS:
        assert main([name, "--help"]) == 0, name
        usage = capsys.readouterr().out
        assert usage.startswith(f"usage: {'python -m dnr.registry' if name == 'registry' else 'dnr ' + name}")
    assert main(["config", "show", "--help"]) == 0 and "dnr config show" in capsys.readouterr().out
    assert main(["no-such-command"]) == EXIT_USAGE and "invalid choice" in capsys.readouterr().err
    assert main([]) == EXIT_USAGE


def test_a_config_typo_is_refused_naming_the_key_in_seconds_before_ray(capsys, lake):
    for argv in (["train", "--lake", lake.root, "train.epoch=2"], ["config", "validate", "train.epoch=2"],
                 ["replay", "--lake", lake.root, "train.epoch=2"]):
        started = time.monotonic()
        assert main(argv) == EXIT_USAGE, argv
        assert time.monotonic() - started < 5
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "'epoch' (did you mean 'epochs'?)" in err, err
    assert main(["config", "validate", "--config", str(REPO / "jobs/configs/local.yaml"), "train.epochs=3"]) == 0
    assert capsys.readouterr().out == "ok\n"
    assert main(["config", "validate", "gate.tolerance=x"]) == EXIT_USAGE
    assert "gate.tolerance" in capsys.readouterr().err


def test_config_show_lists_every_key_of_every_section_with_its_value_and_help(capsys):
    config = REPO / "jobs/configs/local.yaml"
    assert main(["config", "show", "--config", str(config), "train.epochs=7"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for section, values in config_to_dict(load_config(config, ["train.epochs=7"])).items():
        assert any(line.startswith(f"[{section}] ") for line in lines), section
        for key in values:
            at = next(i for i, line in enumerate(lines) if line.startswith(f"{section}.{key} = "))
            help_ = lines[at + 1]
            assert help_.startswith("    ") and help_.strip() and "(no help)" not in help_, f"{section}.{key}"
    assert "train.epochs = 7" in lines and "model.score_mode = add" in lines  # the file, then the override


def test_train_dry_run_prints_the_plan_from_the_delta_log_without_ray(capsys, lake):
    argv = ["train", "--lake", lake.root, "--ds", "2024-01-05", "--dry-run", "train.max_window_days=2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "parent     dnr-v0001 (production, window 2024-01-01..2024-01-01, table v1)" in out
    assert "request_logs v3 (pinned)" in out and "window     2024-01-03..2024-01-04" in out
    assert "leaves out 1 older day(s), 2024-01-02..2024-01-02" in out
    assert "3 late row(s) in 1 file(s)" in out and "rows       14 in 3 file(s)" in out
    for day, rows, late in (("2024-01-01", 3, "  (late)"), ("2024-01-03", 7, ""), ("2024-01-04", 4, "")):
        assert any(line.strip().startswith(f"ds={day}") and line.endswith(f"{rows} rows{late}")
                   for line in out.splitlines()), day
    assert "ds=2024-01-05 has not landed" in out
    assert [v.version for v in Registry(lake).versions()] == ["dnr-v0001"]
    assert not (Path(lake.root) / "checkpoints").exists() and not (Path(lake.root) / "_leases").exists()


def test_train_dry_run_of_a_day_already_trained_is_up_to_date(capsys, lake):
    assert main(["train", "--lake", lake.root, "--ds", "2024-01-02", "--dry-run"]) == 0
    assert "up to date: nothing to train" in capsys.readouterr().out


def test_under_ray_job_submit_a_train_without_config_is_refused_before_ray(capsys, monkeypatch, lake):
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert main(["train", "--lake", lake.root]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "under ray job submit (RAY_ADDRESS is set) pass --config" in err and "validation off" in err
    config = str(REPO / "jobs/configs/local.yaml")
    assert main(["train", "--lake", lake.root, "--config", config, "--dry-run"]) == 0


@pytest.mark.parametrize(("job", "argv", "status"), [
    ("train_daily", ["--lake", "{lake}", "train.epoch=2"], EXIT_USAGE),
    ("train_daily", ["--lake", "{tmp}/empty"], EXIT_NO_INPUT),
    ("replay_eval", ["--lake", "{tmp}/empty"], EXIT_NO_INPUT),
    ("promote", ["--lake", "{lake}", "--version", "dnr-v0042", "--reason", "r"], EXIT_REFUSED),
    ("promote", ["--lake", "{lake}", "--version", "dnr-v0001", "--reason", "r"], EXIT_ALREADY_PRODUCTION),
    ("promote", ["--lake", "{lake}", "--reason", "r"], EXIT_USAGE),
    ("export_model", ["--lake", "{lake}", "--version", "dnr-v0042"], EXIT_NO_INPUT),
    ("generate_logs", ["--lake", "{lake}", "--start", "2024-01-01"], EXIT_REFUSED),
    ("prepare_public", ["--lake", "{lake}"], EXIT_USAGE),
])
def test_a_command_ends_with_the_status_of_its_job_script(capsys, lake, tmp_path, job, argv, status):
    argv = [a.format(lake=lake.root, tmp=tmp_path) for a in argv]
    command = {"train_daily": "train", "replay_eval": "replay", "export_model": "export",
               "generate_logs": "generate", "prepare_public": "prepare"}.get(job, job)
    assert main([command, *argv]) == status
    try:
        assert _job(job).main(argv) == status
    except SystemExit as stop:  # argparse, and generate_logs's refusals, as the script exits
        assert (stop.code if isinstance(stop.code, int) else EXIT_REFUSED) == status


def test_rollback_is_promote_rollback(capsys, tmp_path):
    registry = Registry(Lake(str(tmp_path / "lake")))
    assert main(["rollback", "--lake", registry.lake.root, "--reason", "none yet"]) == EXIT_REFUSED
    registry.register(_version(1, "candidate"))
    registry.register(_version(2, "candidate"))
    for version in ("dnr-v0001", "dnr-v0002"):
        assert main(["promote", "--lake", registry.lake.root, "--version", version, "--reason", "ok"]) == 0
    assert main(["rollback", "--lake", registry.lake.root, "--reason", "CTR dropped"]) == 0
    assert "dnr-v0002 -> rejected, dnr-v0001 -> production" in capsys.readouterr().out
    assert main(["registry", "--lake", registry.lake.root, "production"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "dnr-v0001"
    assert main(["registry", "--lake", registry.lake.root, "show", "dnr-v0042"]) == EXIT_REFUSED


@pytest.mark.parametrize(("stop", "status"), [(KeyboardInterrupt, EXIT_INTERRUPTED), (Terminated, EXIT_TERMINATED)])
def test_an_interrupted_command_ends_with_130_or_143(capsys, monkeypatch, stop, status):
    def interrupted(argv, prog=None):
        raise stop()

    monkeypatch.setattr("dnr.cli.config.main", interrupted)
    assert main(["config", "show"]) == status
    assert "[dnr config] interrupted" in capsys.readouterr().err


def test_the_console_script_ends_the_process_with_the_status(lake):
    def dnr(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dnr.cli", *argv], capture_output=True, text=True, check=False,
                              timeout=60, cwd=REPO, env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})

    typo = dnr("config", "validate", "train.epoch=2")
    assert typo.returncode == EXIT_USAGE and typo.stderr.startswith("[config] override 'train.epoch=2'")
    plan = dnr("train", "--lake", lake.root, "--dry-run")  # read a Delta table, then exit_process
    assert plan.returncode == 0 and "window" in plan.stdout, plan.stderr
