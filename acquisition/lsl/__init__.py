"""LSL input and output: the raw-data inlet service and the spike-event outlet."""
