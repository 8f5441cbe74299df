"""What routes receive through Depends: the settings and the services that lifespan created.

The accessors are `async def` although they never wait: FastAPI runs a plain `def` dependency in its thread
pool, and two thread hops per request were a measurable share of a cached answer's cost.
"""

from typing import Annotated

from fastapi import Depends, Request

from .agent_service import AgentService
from .cache import CacheService
from .config import Settings
from .monitoring import Metrics
from .rate_limit import LoginThrottle
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


async def get_cache(request: Request) -> CacheService:
    """The application's cache service."""
    cache: CacheService = request.app.state.cache
    return cache


async def get_metrics(request: Request) -> Metrics:
    """The application's metrics."""
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_login_throttle(request: Request) -> LoginThrottle:
    """The application's failed-login counter per username."""
    throttle: LoginThrottle = request.app.state.login_throttle
    return throttle


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
AgentDep = Annotated[AgentService, Depends(get_agent_service)]
TasksDep = Annotated[TaskManager, Depends(get_task_manager)]
CacheDep = Annotated[CacheService, Depends(get_cache)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
LoginThrottleDep = Annotated[LoginThrottle, Depends(get_login_throttle)]
