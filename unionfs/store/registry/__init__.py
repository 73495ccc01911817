"""The registry client: pull and push images through the OCI distribution API.

:func:`ensure_image` is what ``run`` and ``build`` call: the stored image, pulled first when
the store does not have it (docker's behaviour, short names included: ``debian`` is
``docker.io/library/debian:latest``), routed by registries.conf (:mod:`.conf`).
"""

from __future__ import annotations

import sys

from unionfs.errors import UserError
from unionfs.store import refs
from unionfs.store.registry.pull import PullOptions, pull
from unionfs.store.registry.push import PushOptions, push
from unionfs.store.registry.reference import Reference, parse
from unionfs.store.store import Image, Store

__all__ = ["PullOptions", "PushOptions", "Reference", "ensure_image", "parse", "pull", "push"]


def ensure_image(store: Store, ref: str, opts: PullOptions | None = None) -> Image:
    """The image ``ref``, pulled when missing, as ``docker run`` does: "Unable to find image
    'NAME:TAG' locally" on stderr, then the pull. A failed pull is one error line that says
    both (nothing is stored); an image id is never pulled."""
    found = store.find_image(ref)
    if found is not None:
        return found
    if refs.hex_of(ref) is not None and (ref.startswith("sha256:") or len(ref) == 64):
        raise UserError(f"unknown image: {ref}")
    wanted = parse(ref)
    found = store.find_image(wanted.store_tag) if not wanted.digest else None
    if found is not None:
        return found
    notice = f"Unable to find image '{wanted.familiar}' locally"
    announced: list[bool] = []

    def announce(_name: Reference) -> None:
        if not announced:
            print(notice, file=sys.stderr, flush=True)
            announced.append(True)

    from unionfs.store.progress import transfers

    try:
        with transfers() as tasks:
            pulled = pull(store, ref, opts, tasks=tasks, on_found=announce)
    except UserError as exc:
        if not announced:
            exc.args = (f"{notice}; pulling it failed: {exc}",)
        raise
    print(f"Status: Downloaded newer image for {pulled[0].reference.familiar}",
          file=sys.stderr)
    return pulled[0].image
