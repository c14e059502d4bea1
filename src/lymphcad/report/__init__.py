"""Reporting: drawing and presenting results computed elsewhere (``lymphcad.evaluate``). No metric is computed here."""
