"""The install holds off this machine: the pinned sets per accelerator agree with each other, with
CI and with the GPU image; and a wheel of the project (not the editable checkout) works from a
directory outside the source tree, its schema JSON read from the installed package."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONSTRAINTS = REPO / "constraints"
SCHEMA_TABLES = ("model_registry", "quarantine", "replay_reports", "request_logs")


def _pins(path: Path) -> dict[str, str]:
    """name -> specifier of each requirement line of a constraints file."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, spec = re.fullmatch(r"([A-Za-z0-9._-]+)\s*(.+)", line).groups()
            pins[name.lower()] = spec.replace(" ", "")
    return pins


def test_the_cpu_and_cuda_sets_pin_the_same_releases():
    cpu, cuda = _pins(CONSTRAINTS / "cpu.txt"), _pins(CONSTRAINTS / "cuda.txt")
    assert {"torch", "torchrec", "fbgemm-gpu-cpu", "ray", "deltalake", "pyarrow"} <= set(cpu)
    assert {"torch", "torchrec", "fbgemm-gpu", "ray", "deltalake", "pyarrow"} <= set(cuda)
    assert cpu["fbgemm-gpu-cpu"] == cuda["fbgemm-gpu"]
    for name in ("torch", "torchrec", "ray", "deltalake", "pyarrow"):
        assert cpu[name] == cuda[name], name
    # Ray bounded to one minor release, the same one the project asks for
    assert re.fullmatch(r">=2\.(\d+),<2\.(\d+)", cpu["ray"])
    low, high = map(int, re.fullmatch(r">=2\.(\d+),<2\.(\d+)", cpu["ray"]).groups())
    assert high == low + 1
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'"ray[default,train,data]{cpu["ray"]}"' in pyproject


def test_ci_and_the_gpu_image_install_the_pinned_sets():
    cpu, cuda = _pins(CONSTRAINTS / "cpu.txt"), _pins(CONSTRAINTS / "cuda.txt")
    ci = (REPO / ".ci" / "run").read_text()
    installs = [line for line in ci.splitlines() if line.startswith("pip install")]
    assert len(installs) == 3 and all("-c constraints/cpu.txt" in line for line in installs), installs
    assert f"torch{cpu['torch']}" in ci
    dockerfile = (REPO / "cluster" / "Dockerfile").read_text()
    args = dict(re.findall(r"ARG (\w+)=(\S+)", dockerfile))
    assert f"=={args['TORCH_VERSION']}" == cuda["torch"]
    assert f"=={args['TORCHREC_VERSION']}" == cuda["torchrec"]
    assert f"=={args['FBGEMM_VERSION']}" == cuda["fbgemm-gpu"]
    ray_low, ray_high = re.fullmatch(r">=(\S+),<(\S+)", cuda["ray"]).groups()
    assert args["RAY_VERSION"].startswith(ray_low + ".") or args["RAY_VERSION"] == ray_low
    runs = [line for line in dockerfile.splitlines() if line.startswith(("RUN pip install", "    && pip install"))]
    assert runs and all("-c constraints/cuda.txt" in line for line in runs), runs
    assert "COPY --chown=ray:ray constraints ./constraints" in dockerfile


def _run(args: list, cwd: Path, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(wheel, site folder it was installed into, an empty working directory outside the checkout).

    The wheel is built from a copy of what a build reads (pyproject.toml, README.md, dnr/), so that
    the build leaves no build/ or egg-info in the checkout; offline, with the setuptools of this
    environment; installed without dependencies (those of this environment serve)."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "dnr", src / "dnr", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", tmp / "dist", src], tmp,
         timeout=180)
    (wheel,) = (tmp / "dist").glob("dnr-*.whl")
    _run([*pip, "install", "--no-deps", "--no-index", "-q", "--target", tmp / "site", wheel], tmp, timeout=180)
    work = tmp / "elsewhere"
    work.mkdir()
    return wheel, tmp / "site", work


def _env(site: Path) -> dict:
    """This interpreter's dependencies, but ``dnr`` from ``site``: PYTHONPATH comes before the
    site-packages (and before the editable install's finder, which only answers what the path
    does not)."""
    return {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_the_wheel_carries_the_schema_json(installed):
    wheel, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(n for n in names if n.endswith(".json")) == [f"dnr/schema_files/{t}.json" for t in SCHEMA_TABLES]
    assert not any(n.startswith(("schemas/", "tests/", "jobs/")) for n in names)


@pytest.mark.slow
def test_the_installed_package_reads_its_own_schemas_outside_the_source_tree(installed):
    from dnr.schemas import REQUEST_LOGS

    _, site, work = installed
    code = ("import json, dnr, dnr.schemas as s\n"
            "print(json.dumps({'dnr': dnr.__file__, 'json': str(s._schema_path('request_logs')),"
            " 'names': s.REQUEST_LOGS.names}))")
    found = json.loads(_run([sys.executable, "-c", code], work, _env(site)).stdout.strip().splitlines()[-1])

    assert Path(found["dnr"]).is_relative_to(site), found["dnr"]
    assert Path(found["json"]) == site / "dnr" / "schema_files" / "request_logs.json"
    assert not Path(found["json"]).is_relative_to(REPO)
    assert found["names"] == REQUEST_LOGS.names


@pytest.mark.slow
def test_dnr_config_validate_runs_from_the_installed_package(installed):
    _, site, work = installed
    if not (site / "dnr" / "cli" / "__main__.py").exists() and not (site / "dnr" / "cli.py").exists():
        pytest.skip("dnr.cli is not in the built package yet (no dnr/cli/__main__.py or dnr/cli.py in the "
                    "checkout): `dnr config validate` cannot run from the wheel")
    _run([sys.executable, "-m", "dnr.cli", "config", "validate"], work, _env(site))
    script = site / "bin" / "dnr"
    assert script.exists(), "pyproject.toml's [project.scripts] dnr was not installed"
    _run([script, "config", "validate"], work, _env(site))
