"""``inspect -f``'s Go-template subset: it lives in :mod:`unionfs.core.template` (pure), where
the runtime's ``ps --format`` uses it too."""

from unionfs.core.template import go_format, render

__all__ = ["go_format", "render"]
