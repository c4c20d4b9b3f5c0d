"""n2gnn: N² dynamic message passing through learnable, moving pseudo nodes (PyG modules).

``N2Node`` / ``N2Graph`` take ``(x, edge_index, edge_attr=None, batch=None)`` like any PyG model;
``N2Cell`` is the weight-shared recurrent step and ``Proximity`` the signed, λ-weighted ψ.
"""

from n2gnn.cell import NL, N2Cell
from n2gnn.model import N2Config, N2Graph, N2Node, official_parameter_count
from n2gnn.official import from_official_state_dict, load_official, to_official_state_dict
from n2gnn.proximity import Proximity

__version__ = "0.2.0"

__all__ = [
    "NL",
    "N2Cell",
    "N2Config",
    "N2Graph",
    "N2Node",
    "Proximity",
    "__version__",
    "from_official_state_dict",
    "load_official",
    "official_parameter_count",
    "to_official_state_dict",
]
