"""acquisition: samples in and out.

LSL inlets and outlets, simulated rigs (neuron models, extracellular projection,
noise, response to stimulation), recording, replay, streaming filters, spike
detection and online sorting.
"""
