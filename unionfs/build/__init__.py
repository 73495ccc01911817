"""``unionfs build``: images from a Containerfile.

Above the store and the runtime (it runs RUN steps in the runtime's containers), below the CLI:

- ``parser``        Containerfile text into instructions with their lines (pure)
- ``words``         ``$VAR`` expansion and word splitting as docker's builder does (pure)
- ``instructions``  the config-only instructions on a ContainerConfig; ``commit --change``
- ``context``       the build context: .dockerignore, sources kept inside it, their digest
- ``copy``          COPY/ADD into a tree, docker's destination rules, ``--chown`` names
- ``workspace``     where steps write: RUN in a runtime container, COPY on a union mount
- ``cache``         step results by key (parent, text, args, copied files)
- ``executor``      stages and steps, output, tagging
"""

from unionfs.build.executor import BuildOptions, build

__all__ = ["BuildOptions", "build"]
