"""ipm_prefdial: build IPM-PrefDial, preference data for emotional-support dialogue models."""

__version__ = "0.2.0"
