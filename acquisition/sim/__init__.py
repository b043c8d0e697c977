"""The simulated rig: spiking neurons near a probe, recorded as extracellular voltage."""
