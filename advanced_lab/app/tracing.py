"""Distributed tracing (exercise 1): OpenTelemetry spans for every request, the agent run and each graph node."""

from typing import Any
from uuid import UUID

from fastapi import FastAPI
from langchain_core.callbacks import BaseCallbackHandler
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter

from .config import Settings


def create_tracer_provider(settings: Settings, exporter: SpanExporter | None = None) -> TracerProvider:
    """A provider that exports over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT (or to the exporter given)."""
    provider = TracerProvider(resource=Resource.create({"service.name": settings.otel_service_name}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    # TODO 25: export spans over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT
    return provider


def instrument_app(app: FastAPI, provider: TracerProvider) -> None:
    """A server span for every HTTP request, parent of the spans the agent makes."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls="health,metrics")


class NodeSpanHandler(BaseCallbackHandler):
    """A LangChain callback that opens a span when a LangGraph node starts and closes it when it ends."""

    run_inline = True  # called in the node's own context, so the span nests under the agent run

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer
        self._spans: dict[UUID, trace.Span] = {}

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # TODO 26: open a span when a graph node starts
        pass

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        span = self._spans.pop(run_id, None)
        if span is not None:
            span.end()

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        span = self._spans.pop(run_id, None)
        if span is not None:
            span.record_exception(error)
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(error).__name__))
            span.end()
