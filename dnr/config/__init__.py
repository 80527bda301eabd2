"""One typed config tree: frozen dataclasses, changed by a YAML file and ``key=value`` overrides.

:class:`JobConfig` (:mod:`.tree`, with the loading and serialising) is the root. Its sections,
each with its own validation, are in :mod:`.sections` (data, model, optim, train, gate,
degre), :mod:`.method` (dnr: DNR's objectives and noise generators) and :mod:`.validation`.
``from dnr.config import ...`` is the one import. Pure Python and YAML: any process may import
it, and it imports nothing else of the project.
"""

from dnr.config.method import HEURISTIC_GENERATORS, LX_ESTIMATORS, MODEL_GENERATORS, DNRConfig
from dnr.config.sections import (EMBEDDING_OPTIMIZERS, EMBEDDING_SHARDINGS, RERANKER_FAMILIES, SCORE_MODES,
                                 DataConfig, DeGReConfig, GateConfig, ModelConfig, OptimConfig, TrainConfig)
from dnr.config.tree import (JobConfig, config_from_dict, config_to_dict, config_to_json, describe_config,
                             load_config)
from dnr.config.validation import ValidationConfig

__all__ = [
    "DNRConfig", "DataConfig", "DeGReConfig", "EMBEDDING_OPTIMIZERS", "EMBEDDING_SHARDINGS", "GateConfig",
    "HEURISTIC_GENERATORS", "JobConfig", "LX_ESTIMATORS", "MODEL_GENERATORS", "ModelConfig", "OptimConfig",
    "RERANKER_FAMILIES", "SCORE_MODES", "TrainConfig", "ValidationConfig", "config_from_dict",
    "config_to_dict", "config_to_json", "describe_config", "load_config",
]
