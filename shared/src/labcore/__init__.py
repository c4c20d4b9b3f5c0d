"""labcore: the thin core every method package stands on.

Submodules: :mod:`labcore.memory` (exact memory accounting), :mod:`labcore.metrics`,
:mod:`labcore.data`, :mod:`labcore.runs` (seeding, timing, result JSON), :mod:`labcore.cli`,
:mod:`labcore.dist` (torchrun / DDP glue, autocast precision), :mod:`labcore.plot` (PNG figures,
matplotlib as the ``plot`` extra).
Importing ``labcore`` itself is cheap; import the submodule you need.
"""

__version__ = "0.3.0"
