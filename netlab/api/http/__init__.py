"""The lab's kube-apiserver: the Kubernetes REST API over HTTPS, for kubectl and client libraries.

Owns the HTTP shape of the API (discovery, OpenAPI, Table output, watch streams, patches,
subresources, Status errors, bearer-token authentication) and nothing else: every object
is validated, defaulted and written by the API modules the `netlab` CLI uses too (reached
through `objects.py`), so both paths give identical objects and identical errors. It runs
as its own process (`python -m netlab.api.http`) inside the master node's namespace.
"""
