"""Execution: owns every order's life, from an approved intent to its last fill."""
