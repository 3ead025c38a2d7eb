"""Trained runs written out in other forms, for use outside the run folder that made them.

``export_model`` (``ric.export.hf``; `ric export`) writes a run, or a soup of several, as a
Hugging Face model folder (merged weights or a PEFT adapter, the steering chat template, a model
card) that loads with no ric installed; ``export_lora`` (``ric.export.lora``; `ric export-lora`)
writes one as a small LoRA run, a ric run folder.
"""

from ric.export.hf import ExportResult, export_model
from ric.export.lora import export_lora

__all__ = ["ExportResult", "export_lora", "export_model"]
