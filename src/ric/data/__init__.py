"""Dataset sources and reward relabeling with resumable, sharded scoring.

The modules are imported by name (``ric.data.label``, ``ric.data.io``...), not re-exported here:
loading a trained run needs only ``ric.data.io``, and should not pay for pandas and the scorers
that labeling imports (a quarter of a second of every ``ric generate``)."""
