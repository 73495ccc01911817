"""The registry client: pull and push images through the OCI distribution API.

:func:`ensure_image` is what ``run`` and ``build`` call: the stored image, pulled first when
the store does not have it and the reference names its registry.
"""

from __future__ import annotations

import sys

from unionfs.errors import UserError
from unionfs.store.registry.pull import PullOptions, pull
from unionfs.store.registry.push import PushOptions, push
from unionfs.store.registry.reference import Reference, is_qualified, parse
from unionfs.store.store import Image, Store

__all__ = ["PullOptions", "PushOptions", "Reference", "ensure_image", "parse", "pull", "push"]


def ensure_image(store: Store, ref: str, opts: PullOptions | None = None) -> Image:
    """The image ``ref``, pulled when missing (as ``docker run`` does).

    Only a reference that names its registry (``host[:port]/name[:tag]``) is pulled here: a
    short name the store does not have stays "unknown image" (``unionfs pull NAME`` fetches
    it from Docker Hub), so a typo in ``run`` never sends a request off the machine.
    """
    found = store.find_image(ref)
    if found is not None:
        return found
    if not is_qualified(ref):
        raise UserError(f"unknown image: {ref} (not in the store; `unionfs pull {ref}` "
                        "fetches it)")
    wanted = parse(ref)
    found = store.find_image(wanted.store_tag) if not wanted.digest else None
    if found is not None:
        return found
    print(f"Unable to find image '{ref}' locally", file=sys.stderr)
    from unionfs.store.progress import transfers

    with transfers() as tasks:
        pulled = pull(store, ref, opts, tasks=tasks)
    print(f"Status: Downloaded newer image for {pulled[0].reference}", file=sys.stderr)
    return pulled[0].image
