"""The per-node agent: one process per node, inside the node's namespace.

It plays, for its node, what kubelet, flanneld, kube-proxy and (on the master) the
controller manager play on a real cluster. Each role is a level-triggered reconciler
(see base.py); this package's __main__ starts the roles the lab file gives the node.
"""
