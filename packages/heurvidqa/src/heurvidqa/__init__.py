"""HeurVidQA: prompting an ALPRO-style video-language model with entity and action heuristics."""

__version__ = "0.1.0"
