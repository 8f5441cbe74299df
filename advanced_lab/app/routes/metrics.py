"""The Prometheus scrape endpoint."""

from fastapi import APIRouter, Response

from ..dependencies import MetricsDep

router = APIRouter(tags=["monitoring"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(metrics: MetricsDep) -> Response:
    """Every metric in Prometheus's text exposition format (all workers' when there are several)."""
    body, content_type = metrics.get_metrics()
    return Response(content=body, media_type=content_type)
