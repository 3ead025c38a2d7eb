"""Recipes: whole pipelines that chain the stages on the embedded tasks (``ric.tasks``).

``demo`` (`ric demo`: label, offline and online training, evaluation), ``method_comparison``
(`ric compare`: RiC against every baseline, with the cost table), ``iterations`` (the offline
model and each online iteration swept into one comparison) and ``image_demo`` (`ric image
demo`). ``demo.yaml`` and ``image_demo.yaml`` are the recipes' settings.
"""
