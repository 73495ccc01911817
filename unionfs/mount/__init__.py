"""The mount API: one option model, the checked mount spec, mount records, the client of a
server's control socket, starting and stopping a server (``unionfs.api`` re-exports it)."""
