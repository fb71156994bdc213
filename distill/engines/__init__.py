"""The shared engine layer: teacher backends (one Protocol), R1 request rules, trace parsing."""
