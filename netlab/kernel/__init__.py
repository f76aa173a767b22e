"""The kernel layer: every netlink, namespace, sysctl, iptables, /proc and process call.

Callers import the submodule that owns the call: `netns` (namespaces, pins, setns, sysctls),
`netlink` (one pyroute2 stack: Netlink, and Rtnl/PodWiring for the pods' hot path),
`iptables` (restore/save/single calls, conntrack), `proc` (spawn, pids, signals, /proc,
PidWatcher). Errors are netlab.errors' KernelError/NotFound/AlreadyExists naming the object.
"""
