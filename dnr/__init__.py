"""DNR: a production training system for recommender rerankers (Denoising Neural Reranker)."""

__version__ = "0.1.0"
