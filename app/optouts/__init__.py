"""Opt-outs: STOP/START/HELP, the suppression list and the consent history."""
