"""labcore: the thin core every method package stands on.

Submodules: :mod:`labcore.memory` (exact memory accounting), :mod:`labcore.metrics`,
:mod:`labcore.data`, :mod:`labcore.runs` (seeding, timing, result JSON), :mod:`labcore.cli`.
Importing ``labcore`` itself is cheap; import the submodule you need.
"""

__version__ = "0.2.0"
