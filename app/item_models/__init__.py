"""Models over item features in the service: scoring candidates, and what a reward learns.

An experiment with ``model = "shared"`` keeps one learned state of ``D``
features (bandits/item_models.py) under the row ``SHARED_ARM`` of the model
store, so the store, the cache, the worker's fenced saves, snapshots and
rebuild handle it as they handle an arm. What differs is the vector: a
reward learns the shared vector ``phi(x, z)`` of its decision's context ``x``
and the shown item's features ``z``, which the decision recorded per
impression. :mod:`.scoring` is the /choose side, :mod:`.records` the learning
side (worker and rebuild alike).
"""
