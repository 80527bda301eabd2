"""DNR: a production training system for recommender rerankers (Denoising Neural Reranker).

The packages and top-level modules of ``dnr`` form layers (:data:`PACKAGE_LAYERS`, lowest first).
A module may import from the layers below its own, never from its own layer's other members
nor from above, function-level imports included; ``tests/unit/test_package_directions.py``
parses every import and keeps it so. Entry points (``jobs/``, ``bench/``, any ``__main__``
module) stand above every layer.

0. foundations: ``schemas``, ``storage``, ``config``, ``losses``, ``metrics``, ``testing``
1. the lake: ``data`` (window -> batch), ``registry``, ``lease_store``
2. ``datasets`` (synthetic and public logs), ``models``, ``lease``
3. ``checkpoints`` (the read side)
4. ``training`` (inside a Train worker) and ``evaluation`` (the replay), apart
5. ``daily`` (the job's driver) and ``serving`` (off to the side), apart
6. ``runtime`` (a job process from start to end)
7. ``cli`` (the ``dnr`` command: each job's parser and main, the config's help, the dry run)
"""

__version__ = "0.1.0"

#: the layers of the packages and top-level modules of ``dnr``, lowest first (see above)
PACKAGE_LAYERS = (
    ("schemas", "storage", "config", "losses", "metrics", "testing"),
    ("data", "registry", "lease_store"),
    ("datasets", "models", "lease"),
    ("checkpoints",),
    ("training", "evaluation"),
    ("daily", "serving"),
    ("runtime",),
    ("cli",),
)
