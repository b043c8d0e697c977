"""decoders: from spikes to decisions (features, plasticity rules, adaptive decoders).

Where things are:

- ``plasticity/`` — online plasticity rules on ``(pre, post)`` weight matrices, one file
  per rule (pair and triplet STDP, Serb-style rate rule, BCM, homeostatic scaling);
  ``plasticity/__init__.py`` is the registry.
- ``devices/`` — synapse device models the rules write through (ideal, soft-bounded
  pulsed device with variability, metal-oxide memristor); registry in ``__init__``.
- ``readout.py`` — LIF output neurons driven by sorted units through plastic synapses.
- ``features.py`` — binned spike counts and exponential traces per unit.
- ``adaptive/`` — Kalman (and steady-state) and Wiener decoders, SmoothBatch and RML
  closed-loop adaptation, ReFIT-style intention re-labelling; registry in ``__init__``.
- ``checkpoint.py`` — atomic, versioned, checksummed checkpoints; restore and rollback.
- ``pipeline.py`` — the stages wired from a ``decoders:`` section (``config.py``).
- ``warmup.py`` — compile every kernel before a real-time loop is armed.
"""
