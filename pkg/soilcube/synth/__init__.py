"""Synthetic archive: a nature run and writers that store its granules in the real product layouts."""
