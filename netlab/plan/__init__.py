"""Pure planners: given state as data, decide what it should be. No store, no kernel.

ipam (host-local address allocation), flannel_leases (lease choice and formats),
proxy_rules (kube-proxy's iptables rules as text), deployments (pod-template hash, pod
names, the pod a template makes), podrecord (the layout of a pod's run directory).
"""
