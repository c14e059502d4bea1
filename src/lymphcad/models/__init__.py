"""Shipped detector models, one folder each: ``<name>/model.pt``, ``plan.json`` and ``model_card.md``.

Load one by name with :func:`lymphcad.detector.model.load_model`; ``lymphcad detect`` without ``--model``
uses :data:`lymphcad.detector.model.DEFAULT_MODEL`.
"""
