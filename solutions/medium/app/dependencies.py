"""What routes receive through Depends: the settings and the services that lifespan created.

The accessors are `async def` although they never wait: FastAPI runs a plain `def` dependency in its thread
pool, a hop per request for nothing.
"""

from typing import Annotated

from fastapi import Depends, Request

from .agent_service import AgentService
from .config import Settings
from .tasks import TaskManager


async def get_app_settings(request: Request) -> Settings:
    """The settings the application was built with."""
    settings: Settings = request.app.state.settings
    return settings


async def get_agent_service(request: Request) -> AgentService:
    """The application's agent service (created by lifespan)."""
    service: AgentService = request.app.state.agent_service
    return service


async def get_task_manager(request: Request) -> TaskManager:
    """The application's background task manager (created by lifespan)."""
    tasks: TaskManager = request.app.state.task_manager
    return tasks


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
AgentDep = Annotated[AgentService, Depends(get_agent_service)]
TasksDep = Annotated[TaskManager, Depends(get_task_manager)]
