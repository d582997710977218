"""The console: read-only pages (``/ui/``) and their JSON data (``/experiments/<name>/…``).

Product people open it in a browser to see what the bandit earns against the
holdout, where exploration goes, what each config change did, and what a
proposed ``alpha``, ``epsilon``, ``v`` or policy would earn (an off-policy
estimate). Everything is read from the analysts' views (docs/ANALYSTS.md) and,
for the models' current estimates, from Redis; nothing here writes.
"""

from app.console import data, pages

BLUEPRINTS = (pages.bp, data.bp)

__all__ = ["BLUEPRINTS"]
