"""netlab: a Kubernetes-style cluster network built from real Linux kernel objects."""

__version__ = "0.1.0"
