"""ruflo-consensus: consensus-replicated state machines for federations of AI-agent nodes.

The protocol cores are sans-IO (see :mod:`ruflo_consensus.core`); the deterministic
simulator (:mod:`ruflo_consensus.sim`) and the linearizability checker
(:mod:`ruflo_consensus.check`) prove them under faults.
"""

__version__ = "0.1.0"
