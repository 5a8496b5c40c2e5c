"""Layouts (instances, parts) and the control images a ControlNet reads; real and sampled layouts."""
