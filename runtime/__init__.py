"""A small container runtime on unionfs roots.

One job per module, in the order a start uses them:

- ``spec``        what to run: options parsed and checked into a :class:`~runtime.spec.Spec`
- ``state``       containers on disk (``<store>/containers/<id>/``), names, pids, exit codes
- ``rootfs``      the image layers plus the container's upper mounted as one tree (unionfs)
- ``cgroups``     v1 and v2 behind one interface: limits, add, stats, OOM, kill, remove
- ``namespaces``  which namespaces, uid/gid maps, joining them for ``exec``
- ``idmap``       rootless maps from /etc/subuid and /etc/subgid (newuidmap), the user
                  namespace store commands re-run in
- ``network``     the private network through pasta: published ports, DNS, cleanup
- ``mounts``      the container's mounts as a list of steps, then executed; the pivot
- ``child``       the forked code that ends in exec: namespaces, mounts, privileges
- ``init``        the reaping, signal-forwarding PID 1 of ``--init``
- ``relay``       waiting with signals forwarded and a pty relayed (``-t``)
- ``supervisor``  one run from mount to cleanup, attached or detached
- ``lifecycle``   stop, start, restart, rm, top, stats, logs; ``enter``: exec
- ``cli``         the subcommands; ``linux``: ctypes wrappers of the calls ``os`` lacks
"""
