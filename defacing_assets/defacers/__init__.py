"""Defacers: one registry of methods, each a function of a Volume returning a DefacingResult."""
