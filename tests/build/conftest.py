"""Build tests run containers: they use the runtime tests' fixtures (a busybox image in a
session store, the CLI, and the check that no mount, cgroup or process is left behind)."""

from tests.runtime.conftest import cli, kept_logs, no_leftovers, store, store_root  # noqa: F401
