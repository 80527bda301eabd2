"""Registry rows on a real local Delta table, and the daily window plan built on them."""

import datetime as dt
import threading

import pytest

from dnr.registry import ModelVersion, Registry
from dnr.storage import Lake
from dnr.training.daily import plan_window


def _version(n: int, status: str, parent=None, window=("2026-01-01", "2026-01-02"), table_version=0):
    return ModelVersion(
        version=f"dnr-v{n:04d}", model_name="dnr", family="prm", status=status,
        checkpoint_uri=f"/ckpt/{n}", config_json="{}",
        created_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(hours=n),
        parent_version=parent, window_start=window[0], window_end=window[1], table_version=table_version)


def test_parent_is_production_else_newest_candidate(tmp_path):
    registry = Registry(Lake(str(tmp_path)))
    assert registry.parent_for("dnr") is None and registry.next_version("dnr") == "dnr-v0001"
    registry.register(_version(1, "candidate"))
    registry.register(_version(2, "candidate", parent="dnr-v0001"))
    assert registry.parent_for("dnr").version == "dnr-v0002"
    registry.register(_version(3, "production"))
    registry.register(_version(4, "candidate", parent="dnr-v0003"))
    assert registry.parent_for("dnr").version == "dnr-v0003"
    assert registry.next_version("dnr") == "dnr-v0005"
    assert registry.get("dnr-v0004").parent_version == "dnr-v0003"
    with pytest.raises(KeyError, match="dnr-v0009"):
        registry.get("dnr-v0009")


def test_same_parent_same_window_same_table_version_is_found(tmp_path):
    registry = Registry(Lake(str(tmp_path)))
    registry.register(_version(1, "candidate", parent="dnr-v0000", window=("2026-01-03", "2026-01-03"),
                               table_version=4))
    assert registry.find_equivalent("dnr", "dnr-v0000", "2026-01-03", 4).version == "dnr-v0001"
    assert registry.find_equivalent("dnr", "dnr-v0000", "2026-01-03", 5) is None  # new data landed
    assert registry.find_equivalent("dnr", None, "2026-01-03", 4) is None


def test_concurrent_registrations_both_land(tmp_path):
    registry = Registry(Lake(str(tmp_path)))
    registry.register(_version(1, "candidate"))
    errors = []

    def write(n):
        try:
            Registry(Lake(str(tmp_path))).register(_version(n, "candidate"))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in (2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and [v.version for v in registry.versions()] == ["dnr-v0001", "dnr-v0002", "dnr-v0003"]


def test_window_plan():
    days = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]
    assert plan_window(days, None, "2026-01-04") == ("2026-01-01", "2026-01-03")
    parent = _version(1, "production", window=("2026-01-01", "2026-01-02"))
    assert plan_window(days, parent, "2026-01-04") == ("2026-01-03", "2026-01-03")
    assert plan_window(days, parent, "2026-01-03") is None  # nothing after the watermark before D
    assert plan_window(days[:2] + days[3:], parent, "2026-01-05") == ("2026-01-04", "2026-01-04")


def test_bad_status_is_refused():
    with pytest.raises(ValueError, match="status 'live'"):
        _version(1, "live")
