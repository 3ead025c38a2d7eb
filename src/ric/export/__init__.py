"""Trained runs written out in other forms, for use outside the run folder that made them.

``export_lora`` (``ric.export.lora``; `ric export-lora`) writes a run, or a soup of several, as a
small LoRA run.
"""

from ric.export.lora import export_lora

__all__ = ["export_lora"]
