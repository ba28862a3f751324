"""The headless command line: ``python -m storyteller_core`` (``storyteller``) on the same engine as the app."""
