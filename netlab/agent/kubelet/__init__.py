"""The kubelet role of a worker's agent (role.py); KubeletRole is what the agent starts."""

from netlab.agent.kubelet.role import KubeletRole

__all__ = ["KubeletRole"]
