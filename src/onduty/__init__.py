"""onduty: an autonomous manager-on-duty for 24/7 operations."""

__version__ = "0.1.0"
