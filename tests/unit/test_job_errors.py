"""A job refuses bad arguments, config and lakes before Ray starts, as one line on stderr naming
the thing and a documented exit status (dnr.runtime), never a traceback unless --verbose."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dnr.runtime import EXIT_NO_INPUT, EXIT_USAGE
from dnr.storage import Lake
from tests.factories import make_rows, write_logs

REPO = Path(__file__).resolve().parents[2]


def _job(name: str):
    spec = importlib.util.spec_from_file_location(f"_job_{name}", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


JOBS = {name: _job(name) for name in ("train_daily", "replay_eval", "export_model", "prepare_public")}
# what the replay's version check and the export import once their cheap checks passed (torch:
# seconds), imported here so that the timed calls below measure the refusals, not the imports
import dnr.evaluation.replay
import dnr.serving  # noqa: F401


@pytest.fixture(autouse=True)
def no_ray_and_signals_restored(monkeypatch):
    """A refusal must come before Ray starts; the jobs' SIGINT/SIGTERM handlers stay theirs."""
    def started(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr("dnr.runtime.start_ray", started)  # the jobs are shims over dnr.cli, which calls it
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


@pytest.fixture
def lake(tmp_path) -> Lake:
    lake = Lake(str(tmp_path / "lake"))
    write_logs(lake, make_rows(8, ds="2024-01-01"))
    return lake


def _refused(capsys, job: str, argv: list[str]) -> tuple[int, str]:
    started = time.monotonic()
    code = JOBS[job].main(argv)
    err = capsys.readouterr().err
    assert time.monotonic() - started < 5
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return code, err


def test_a_config_typo_names_the_key_with_a_close_match(capsys, lake):
    code, err = _refused(capsys, "train_daily", ["--lake", lake.root, "train.epoch=2"])
    assert code == EXIT_USAGE and "'epoch'" in err and "did you mean 'epochs'" in err


@pytest.mark.parametrize("job", ["train_daily", "replay_eval"])
def test_a_bad_config_value_names_the_key_and_value(capsys, lake, job):
    code, err = _refused(capsys, job, ["--lake", lake.root, "train.epochs=two"])
    assert code == EXIT_USAGE and "train.epochs" in err and "'two'" in err


def test_a_missing_config_file_is_named(capsys, lake, tmp_path):
    code, err = _refused(capsys, "train_daily", ["--lake", lake.root, "--config", str(tmp_path / "nope.yaml")])
    assert code == EXIT_USAGE and "nope.yaml" in err


def test_a_day_that_is_not_a_date_is_refused(capsys, lake):
    code, err = _refused(capsys, "train_daily", ["--lake", lake.root, "--ds", "2024-13-01"])
    assert code == EXIT_USAGE and "'2024-13-01'" in err


def test_a_day_far_past_the_newest_partition_is_refused_with_a_hint(capsys, lake):
    code, err = _refused(capsys, "train_daily", ["--lake", lake.root, "--ds", "2025-01-02"])
    assert code == EXIT_USAGE and "2025-01-02" in err and "newest partition of request_logs (2024-01-01)" in err
    assert "train.max_window_days=14" in err and "Omit --ds" in err


@pytest.mark.parametrize(("job", "extra"), [
    ("train_daily", []), ("replay_eval", []), ("export_model", ["--version", "production"]),
    ("prepare_public", ["--format", "lines", "--train", "t.txt", "--test", "t.txt"]),
])
def test_a_lake_that_is_a_file_is_named(capsys, tmp_path, job, extra):
    path = tmp_path / "lake.tar"
    path.write_text("not a lake")
    code, err = _refused(capsys, job, ["--lake", str(path), *extra])
    assert code == EXIT_NO_INPUT and f"--lake {path} is a file" in err


def test_replay_of_a_lake_without_request_logs_or_version_is_refused(capsys, tmp_path, lake):
    code, err = _refused(capsys, "replay_eval", ["--lake", str(tmp_path)])
    assert code == EXIT_NO_INPUT and f"{tmp_path}/request_logs does not exist" in err
    code, err = _refused(capsys, "replay_eval", ["--lake", lake.root, "--candidate", "dnr-v0042"])
    assert code == EXIT_USAGE and "no model version 'dnr-v0042'" in err


def test_export_of_an_unknown_version_is_refused(capsys, lake):
    code, err = _refused(capsys, "export_model", ["--lake", lake.root, "--version", "dnr-v0042"])
    assert code == EXIT_NO_INPUT and "no model version 'dnr-v0042'" in err


def test_verbose_adds_the_traceback(capsys, lake):
    assert JOBS["train_daily"].main(["--lake", lake.root, "--verbose", "train.epoch=2"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("[daily] ")


def test_a_refusal_ends_the_job_process_in_seconds_with_its_status(tmp_path):
    # as a scheduler sees it: the status, one line, and no Ray start-up (tens of seconds) first
    started = time.monotonic()
    job = subprocess.run([sys.executable, str(REPO / "jobs" / "train_daily.py"), "--lake", str(tmp_path),
                          "--ds", "2024-13-01"], capture_output=True, text=True, timeout=60)
    assert (job.returncode, job.stderr) == (EXIT_USAGE, "[daily] --ds='2024-13-01' is not a YYYY-MM-DD date\n")
    assert time.monotonic() - started < 10  # of which most is importing torch and Ray
