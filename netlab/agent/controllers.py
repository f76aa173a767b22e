"""The master's controller manager: runs the scheduler and the deployment, endpoints and
node lifecycle controllers.

Each controller is a Reconciler of its own, one module each under netlab/agent/; this role
only starts them on the master.
"""

from __future__ import annotations

from netlab.agent.deployments import DeploymentController
from netlab.agent.endpoints import EndpointsController
from netlab.agent.nodelifecycle import NodeLifecycleController
from netlab.agent.scheduler import SchedulerController

CONTROLLERS = (SchedulerController, DeploymentController, EndpointsController, NodeLifecycleController)


class ControllersRole:
    name = "controllers"

    def __init__(self, agent):
        self.agent = agent
        self.controllers = [cls(agent) for cls in CONTROLLERS]

        class _Joiner:
            def join(inner, timeout=None):
                for c in self.controllers:
                    c.thread.join(timeout)

        self.thread = _Joiner()

    def start(self) -> None:
        for c in self.controllers:
            c.start()
