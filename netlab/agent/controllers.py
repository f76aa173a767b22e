"""The master's controller manager: runs each controller module that exists.

Controllers (scheduler, deployments, endpoints, node lifecycle) are Reconcilers of their own, one module
each under netlab/agent/; this role only starts them on the master.
"""

from __future__ import annotations

import importlib

CONTROLLERS = (
    ("netlab.agent.scheduler", "SchedulerController"),
    ("netlab.agent.deployments", "DeploymentController"),
    ("netlab.agent.endpoints", "EndpointsController"),
    ("netlab.agent.nodelifecycle", "NodeLifecycleController"),
)


class ControllersRole:
    name = "controllers"

    def __init__(self, agent):
        self.agent = agent
        self.controllers = []
        for mod_name, cls_name in CONTROLLERS:
            try:
                mod = importlib.import_module(mod_name)
            except ModuleNotFoundError as e:
                if e.name == mod_name:
                    continue
                raise
            self.controllers.append(getattr(mod, cls_name)(agent))

        class _Joiner:
            def join(inner, timeout=None):
                for c in self.controllers:
                    c.thread.join(timeout)

        self.thread = _Joiner()

    def start(self) -> None:
        for c in self.controllers:
            c.start()
