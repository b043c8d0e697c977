"""stimulators: from decisions to hardware (commands, safety envelope, MQTT, drivers, policies)."""
