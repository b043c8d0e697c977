"""decoders: from spikes to decisions (features, plasticity rules, adaptive decoders)."""
