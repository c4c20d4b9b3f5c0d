"""n2gnn: N² dynamic message passing through learnable pseudo nodes."""

__version__ = "0.1.0"
