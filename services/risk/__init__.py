"""Risk: every intent passes its pre-trade checks here; nothing reaches execution around it."""
