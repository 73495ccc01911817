"""unionfs: a union filesystem in user-space Python, with a layer store and a container runtime.

The public entry points are :mod:`unionfs.api` (mount and unmount a union) and the ``unionfs``
command line (:mod:`unionfs.cli`).
"""

__version__ = "0.1.0"
