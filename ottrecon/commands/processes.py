"""The processes of a deployment, named once for the command line and for `ottrecon check-config`.

A module of its own so that starting any process (`ottrecon web`, say) does not load what checking them all needs.
"""

# The Procfile's processes, in deploy order (release first).
PROCESSES = ("migrate", "web", "worker", "api")
