"""The fault-injection suite (`make faults`): real processes, real faults, two invariants."""
