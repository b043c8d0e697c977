"""Lab Streaming Layer: outlets (stream metadata, pushing chunks) and inlets."""
