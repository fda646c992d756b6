"""A deterministic, seeded generator of a registry fleet's history, in the real formats.

``generate(FleetSpec(...), out_dir)`` writes Distribution notification envelopes, deploy
events, ``kubectl get pods -A -o json`` snapshots and an inventory; ``load_inventory`` puts the
inventory into the store as a registry scan would; ``images.materialize`` turns a manifest of
a fleet generated with a ``byte_scale`` into real bytes to push. See ``data/README.md``.
"""

from . import images
from .loader import load_inventory
from .simulate import FleetFiles, generate
from .spec import ARCHETYPES, MIXES, FleetSpec, parse_mix

__all__ = ["ARCHETYPES", "MIXES", "FleetFiles", "FleetSpec", "generate", "images",
           "load_inventory", "parse_mix"]
