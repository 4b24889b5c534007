"""Export: a run → a verified folder plain transformers loads, its card, and the Hub.

- :mod:`.write`: ``export_run``, written under a temporary name and renamed.
- :mod:`.verify`: the export's rewards against the run's.
- :mod:`.deepspeed`: ZeRO checkpoints consolidated.
- :mod:`.card` and :mod:`.hub`.
"""

from __future__ import annotations

from ..facade import lazy_names

_HOMES = {
    "ExportOptions": ".options",
    "VerifiedExport": ".options",
    "compare_rewards": ".verify",
    "consolidate_deepspeed": ".deepspeed",
    "export_run": ".write",
    "model_card": ".card",
    "push_export": ".hub",
    "verify_export": ".verify",
}
__all__ = sorted(_HOMES)

__getattr__ = lazy_names(__name__, _HOMES)
