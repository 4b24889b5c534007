"""Configuration: a recipe (YAML + overrides + this machine) → typed argument groups.

- :mod:`.recipe`: merge, overrides, checks, machine and library adaptation → :class:`Recipe`.
- :mod:`.arguments`: :class:`ModelArguments` and :class:`DataArguments` (torch-free).
- :mod:`.reward_config`: :class:`RewardkitConfig`, TRL's ``RewardConfig`` plus rewardkit's keys.
- :mod:`.sources`: :class:`DataSource`, one ``datasets`` entry, and the format names.
"""

from __future__ import annotations

from ..facade import lazy_names

_HOMES = {
    "DataArguments": ".arguments",
    "DataSource": ".sources",
    "FORMATS": ".sources",
    "ModelArguments": ".arguments",
    "Recipe": ".recipe",
    "RewardkitConfig": ".reward_config",
    "load_recipe": ".recipe",
    "parse_overrides": ".recipe",
}
__all__ = sorted(_HOMES)

__getattr__ = lazy_names(__name__, _HOMES)
