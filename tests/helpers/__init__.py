"""Helpers that tests load into real runs (e.g. as callbacks through ``+callbacks.NAME._target_=...``)."""
