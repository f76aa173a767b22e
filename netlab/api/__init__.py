"""The API server's side: validation, defaults, allocation (compare-and-swap), CRUD, waits.

meta (names, labels, selectors, pod-ready and node-ready: one definition each), pods,
services, deployments, nodes, manifests. Imports only netlab.store and netlab.plan (and
errors, names, labfile): no kernel call, no printing.
"""
