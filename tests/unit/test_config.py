"""The typed config tree: defaults, shipped YAML files, overrides, strictness, round trips."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from dnr.config import (
    DataConfig,
    DNRConfig,
    JobConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    config_to_json,
    describe_config,
    load_config,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p for d in ("jobs/configs", "cluster/configs") for ext in ("yaml", "yml")
                 for p in (REPO / d).glob(f"*.{ext}"))


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_defaults_are_valid_and_every_field_is_described():
    cfg = load_config()
    assert cfg == JobConfig()
    lines = describe_config(cfg).splitlines()
    n_fields = sum(len(dataclasses.fields(f.type if isinstance(f.type, type) else type(getattr(cfg, f.name))))
                   for f in dataclasses.fields(JobConfig))
    assert len(lines) == n_fields
    assert len({line.index(" = ") for line in lines}) == 1  # aligned
    assert "train.use_gpu" in describe_config(cfg) and "model.score_mode" in describe_config(cfg)


def test_configs_are_shipped():
    names = {p.relative_to(REPO).as_posix() for p in SHIPPED}
    assert {"jobs/configs/local.yaml", "cluster/configs/daily_gpu.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_shipped_config_loads_and_validates(path):
    cfg = load_config(path)
    assert config_from_dict(json.loads(config_to_json(cfg))) == cfg


def test_shipped_configs_are_the_intended_sizes():
    local = load_config(REPO / "jobs/configs/local.yaml")
    gpu = load_config(REPO / "cluster/configs/daily_gpu.yaml")
    assert (local.model.d_model, local.data.num_buckets, local.train.use_gpu) == (64, 2**16, False)
    assert (gpu.model.d_model, gpu.data.num_buckets, gpu.train.use_gpu) == (128, 2**20, True)
    assert gpu.train.num_workers == 4 and gpu.dnr.lambda_e_epochs == 1.0 and gpu.dnr.lambda_e == -1
    for shipped in (local, gpu, load_config(REPO / "jobs/configs/public.yaml")):  # the validated recipe
        assert (shipped.model.score_mode, shipped.model.rank_embedding) == ("add", False)
        assert shipped.dnr.enabled and shipped.dnr.match_auc and shipped.dnr.lambda_c == 0.9


def test_overrides_are_parsed_by_the_field_type():
    cfg = load_config(overrides=[
        "model.score_mode=concat", "dnr.heuristic=gaussian", "train.epochs=2", "optim.lr=3e-4",
        "optim.grad_clip=2", "dnr.use_adv=false", "train.use_gpu=YES", "dnr.use_lx=No",
        "dnr.use_generator=0", "train.bf16=True", "train.model_name=dnr_small-2",
    ])
    assert cfg.model.score_mode == "concat" and cfg.dnr.heuristic == "gaussian"
    assert cfg.train.epochs == 2 and type(cfg.train.epochs) is int
    assert cfg.optim.lr == 3e-4 and cfg.optim.grad_clip == 2.0 and type(cfg.optim.grad_clip) is float
    assert (cfg.dnr.use_adv, cfg.dnr.use_lx, cfg.dnr.use_generator) == (False, False, False)
    assert (cfg.train.use_gpu, cfg.train.bf16) == (True, True)
    assert cfg.train.model_name == "dnr_small-2"


def test_later_overrides_win_and_sections_are_built_once():
    cfg = load_config(overrides=["train.epochs=2", "train.epochs=3"])
    assert cfg.train.epochs == 3
    # n_heads=3 does not divide the default d_model=128; only the final pair is validated.
    cfg = load_config(overrides=["model.n_heads=3", "model.d_model=96"])
    assert (cfg.model.n_heads, cfg.model.d_model) == (3, 96)


@pytest.mark.parametrize("override, message", [
    ("train.epochs", r"override 'train\.epochs': expected section\.key=value"),
    ("epochs=2", r"override 'epochs=2': key must be section\.key"),
    ("train.epochs.x=2", r"key must be section\.key"),
    ("trian.epochs=2", r"override 'trian\.epochs=2': unknown section 'trian' \(did you mean 'train'\?\)"),
    ("model.d_modle=64", r"unknown key of section 'model' 'd_modle' \(did you mean 'd_model'\?\); "
                         r"valid: family, score_mode, d_model"),
    ("train.epochs=two", r"override 'train\.epochs=two' \(train\.epochs\): expected an integer, got 'two'"),
    ("train.epochs=1.5", r"expected an integer, got '1\.5'"),
    ("optim.lr=fast", r"override 'optim\.lr=fast' \(optim\.lr\): expected a number"),
    ("optim.lr=inf", r"expected a finite number"),
    ("dnr.use_adv=maybe", r"override 'dnr\.use_adv=maybe' \(dnr\.use_adv\): expected a bool"),
])
def test_bad_overrides_name_the_override(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(overrides=[override])


@pytest.mark.parametrize("override, message", [
    ("train.num_workers=0", r"config train\.num_workers=0: must be >= 1"),
    ("train.epochs=0", r"config train\.epochs=0"),
    ("train.cpus_per_worker=0", r"config train\.cpus_per_worker=0\.0: must be > 0"),
    ("train.log_every_steps=0", r"config train\.log_every_steps=0"),
    ("train.checkpoint_every_steps=-1", r"config train\.checkpoint_every_steps=-1"),
    ("train.max_failures=-2", r"config train\.max_failures=-2"),
    ("train.max_steps=-1", r"config train\.max_steps=-1"),
    ("train.model_name=", r"config train\.model_name='': must match"),
    ("train.model_name=DNR", r"config train\.model_name='DNR'"),
    ("train.model_name=a/b", r"config train\.model_name='a/b'"),
    ("model.score_mode=sum", r"config model\.score_mode='sum'"),
])
def test_validation_errors_propagate(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(overrides=[override])


def test_unlimited_failures_is_allowed():
    assert load_config(overrides=["train.max_failures=-1"]).train.max_failures == -1


def test_overrides_must_be_a_sequence_not_one_string():
    with pytest.raises(TypeError, match="sequence"):
        load_config(overrides="train.epochs=2")


def test_yaml_then_overrides(tmp_path):
    path = write_yaml(tmp_path, "train:\n  epochs: 2\n  seed: 7\noptim:\n  lr: 1e-3\n  grad_clip: 1\nmodel:\n")
    cfg = load_config(path, ["train.epochs=5"])
    assert (cfg.train.epochs, cfg.train.seed) == (5, 7)
    assert cfg.optim.lr == 1e-3 and type(cfg.optim.grad_clip) is float  # PyYAML reads 1e-3 as a str
    assert load_config(write_yaml(tmp_path, "")) == JobConfig()


@pytest.mark.parametrize("text, message", [
    ("train:\n  epoch: 2\n", r"cfg\.yaml: unknown key of section 'train' 'epoch' \(did you mean 'epochs'\?\)"),
    ("trainer:\n  epochs: 2\n", r"cfg\.yaml: unknown section 'trainer'"),
    ("train: 2\n", r"section 'train' must be a mapping"),
    ("- train\n", r"expected a mapping of sections"),
    ("train:\n  epochs: 1.5\n", r"cfg\.yaml: train\.epochs: expected int, got float"),
    ("train:\n  epochs: true\n", r"train\.epochs: expected int, got bool"),
    ("model:\n  score_mode: no\n", r"model\.score_mode: expected str, got bool False \(quote it"),
    ("train: [epochs\n", r"not valid YAML"),
])
def test_bad_yaml_is_an_error_naming_the_file_and_key(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        load_config(write_yaml(tmp_path, text))


def test_a_missing_config_file_is_a_value_error_naming_it(tmp_path):
    # a ValueError like every other config error, so that the jobs print it as one line
    with pytest.raises(ValueError, match=r"config file .*nope\.yaml: No such file or directory"):
        load_config(tmp_path / "nope.yaml")


def test_dict_and_json_round_trip():
    cfg = load_config(overrides=["optim.lr=3e-4", "dnr.use_adv=false", "train.model_name=x1"])
    d = config_to_dict(cfg)
    assert isinstance(d["train"], dict) and d["optim"]["lr"] == 3e-4
    assert config_from_dict(d) == cfg
    text = config_to_json(cfg)
    assert config_from_dict(json.loads(text)) == cfg
    assert text == config_to_json(config_from_dict(json.loads(text)))  # stable
    assert list(json.loads(text)) == sorted(d)


def test_from_dict_is_strict_and_fills_missing_keys():
    assert config_from_dict({"train": {"epochs": 3}}) == JobConfig(train=TrainConfig(epochs=3))
    with pytest.raises(ValueError, match=r"unknown key of section 'dnr' 'lambda_z'.*did you mean"):
        config_from_dict({"dnr": {"lambda_z": 1.0}})
    with pytest.raises(ValueError, match=r"unknown section 'optimizer'.*valid: data, model, dnr, optim, train"):
        config_from_dict({"optimizer": {}})


def test_configs_are_frozen():
    cfg = JobConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.epochs = 2


def test_the_table_optimizer_and_sharding_names_match_their_implementations():
    """The config validates names; the training code maps them: one list each, kept equal."""
    from dnr.config import EMBEDDING_OPTIMIZERS, EMBEDDING_SHARDINGS
    from dnr.training import optimizers, sharding

    assert set(EMBEDDING_OPTIMIZERS) == set(optimizers.EMBEDDING_OPTIMIZERS)
    assert set(EMBEDDING_SHARDINGS) == set(sharding.SHARDING_TYPES)
    assert [k for k, cpu in EMBEDDING_OPTIMIZERS.items() if not cpu] == ["adam"]
