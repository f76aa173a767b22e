"""The host side: realises a lab file with namespaces, links, etcd and agents.

lock (one mutating command per lab), running (the running lab's copy, pids, lab + store),
lifecycle (`up` as a pipeline of small idempotent steps, `down`, `status`), nodes (add,
delete, stop, start at runtime), pods (a pod's run directory read for exec/logs/ps),
shell (`netlab exec`), doctor (`netlab doctor`).
"""
