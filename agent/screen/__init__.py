"""dock-screen: the dock's readiness board, a small web server of its own.

It reads the agent's control socket (the same read-only `status` and `health` requests
dockctl makes) and pushes each change to browsers over server-sent events. It runs as a
separate process so that the agent's memory and attack surface do not grow with it.
"""
