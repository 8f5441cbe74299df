"""Broken copies of `solutions/medium`: a few lines replaced each, and the checks each must lose.

The replaced text must occur exactly once, so a change to the solution shows up as a failing test instead
of a broken stage that silently tests nothing.
"""

from tests.support.grading import BrokenStage

MAIN = "app/main.py"
ROUTES = "app/routes/agent.py"
SERVICE = "app/agent_service.py"
MIDDLEWARE = "app/middleware.py"

# Collects every event before sending any, and streams under another session id than the client's.
BUFFERED_STREAM = """    renamed = body.model_copy(update={"session_id": None})
    chunks = [chunk.model_copy(update={"metadata": {}}) async for chunk in agent.stream_query(renamed)]

    async def replay() -> AsyncIterator[StreamChunk]:
        for chunk in chunks:
            yield chunk

    return _event_stream(replay())"""
STREAM_RETURN = "\n    return _event_stream(agent.stream_query(body))\n\n\n"
# POST /query with stream=true answers JSON lines instead of SSE.
JSON_LINES = """        from fastapi.responses import StreamingResponse

        return StreamingResponse((chunk.model_dump_json() + "\\n").encode() async for chunk in agent.stream_query(body))
"""
DONE_TWICE = """                    yield chunk
                    if chunk.type == "done":
                        yield chunk
        except AgentRunError"""
WAITS_FOR_THE_TASK = """    task = tasks.submit(lambda: agent.process_query(body.model_copy(update={"stream": False})))
    await asyncio.sleep(3)
"""
FLAKY = """    if next(_CALLS) % 4 == 3:
        raise RuntimeError("flaky on purpose")
    if body.stream:
"""
SSE_ROUTE = """async def query_stream(body: QueryRequest, agent: AgentDep) -> EventSourceResponse:
    \"\"\"Stream the agent's answer token by token as Server-Sent Events; disconnecting stops the run.\"\"\"
    return _event_stream(agent.stream_query(body))"""
# One JSON list of every chunk, at the end, instead of a stream.
JSON_INSTEAD_OF_SSE = """async def query_stream(body: QueryRequest, agent: AgentDep) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse([chunk.model_dump() async for chunk in agent.stream_query(body)])"""
STREAM_SESSION = "        session_id = request.session_id or new_session_id()\n        request = request.model_copy("
NO_DELETE = """            await self.checkpointer.adelete_thread(session_id)
            self.sessions.delete(session_id)"""

STAGES = [
    BrokenStage(
        # The stream starts a new session whatever the client asked: its turns are saved where nobody looks.
        "a-stream-saved-in-another-session",
        {
            SERVICE: [
                (STREAM_SESSION, STREAM_SESSION.replace("request.session_id or new_session_id()", "new_session_id()"))
            ]
        },
        only=("streaming.stream_saved",),
        failed=("streaming.stream_saved",),
    ),
    BrokenStage(
        "api-surface-and-a-buffered-stream",
        {
            MAIN: [
                ("RootInfo(name=settings.api_title,", 'RootInfo(name="",'),
                ('status="healthy",', 'status="degraded",'),
                ("    install_docs(app)\n", ""),  # no /docs page at all
            ],
            ROUTES: [
                (
                    '@router.get("/sessions", response_model=',
                    '@router.get("/sessions", include_in_schema=False, response_model=',
                ),
                ('        **_errors(*_ANY, *_BODY, *_RUN),\n        200: {"content"', '        200: {"content"'),
                (STREAM_RETURN, "\n" + BUFFERED_STREAM + "\n\n\n"),
                ("        return _event_stream(agent.stream_query(body))\n", JSON_LINES),
            ],
            "app/models.py": [('    model_config = _examples({"role": "user", "content": "What is 12 * 7?"})\n', "")],
            SERVICE: [
                ('"agents": list(dict.fromkeys(step for step in run.steps if step != "tools")),', '"agents": [],'),
                ('"tools_used": list(dict.fromkeys(run.tools_used)),', '"tools_used": [],'),
                ("self._graph_events(question, request.max_iterations, run)", "self._graph_events(question, 5, run)"),
                (
                    'return [StreamChunk(type="token", content=message.text,',
                    'return [StreamChunk(type="token", content=message.text.strip(),',
                ),
            ],
            MIDDLEWARE: [
                ("offered if _SANE_REQUEST_ID.match(offered) else uuid.uuid4().hex", "offered or uuid.uuid4().hex")
            ],
        },
        only=("api", "streaming"),
        failed=(
            "api.root",
            "api.health",
            "api.docs",
            "api.openapi_endpoints",
            "api.openapi_examples",
            "api.openapi_errors",
            "api.tool_use",
            "api.max_iterations",
            "api.request_id",
            "streaming.tokens_join",
            "streaming.done_metadata",
            "streaming.really_streams",
            "streaming.query_stream_flag",
        ),
        # The conversation checks wait on api.tool_use (the writer's answer arrives), which this stage breaks.
        skipped=("sessions.continuity", "sessions.get_session", "streaming.stream_saved"),
    ),
    BrokenStage(
        "no-tokens-count-and-no-rate-limit-headers",
        {
            SERVICE: [('tokens_used=done.metadata["tokens_used"],', "tokens_used=0,")],
            MIDDLEWARE: [("MutableHeaders(scope=message).update(headers)", "pass")],
        },
        only=("api.query_shape", "api.tool_use", "api.max_iterations", "rate_limit"),
        failed=("api.query_shape", "rate_limit.headers"),
        skipped=(
            "api.tool_use",
            "api.max_iterations",
            "rate_limit.exact_burst",
            "rate_limit.retry_after",
            "rate_limit.exempt",
        ),
    ),
    BrokenStage(
        "json-instead-of-sse-and-sessions-that-lose-things",
        {
            ROUTES: [
                (SSE_ROUTE, JSON_INSTEAD_OF_SSE),
                ("SessionList(sessions=sessions, count=len(sessions))", "SessionList(sessions=sessions, count=0)"),
            ],
            SERVICE: [
                ("            await self.checkpointer.adelete_thread(session_id)\n", ""),
                ("            async with lock:", "            async with asyncio.Lock():"),
            ],
            "app/tasks.py": [('status="completed", result=result)', 'status="completed", result=None)')],
        },
        only=("streaming", "sessions"),
        failed=(
            "streaming.content_type",
            "sessions.list_sessions",
            "sessions.delete_forgets",
            "sessions.concurrent_turns",
            "sessions.task_completes",
        ),
        skipped=(
            "streaming.event_order",
            "streaming.tokens_join",
            "streaming.done_metadata",
            "streaming.really_streams",
            "streaming.query_stream_flag",
            "streaming.stream_saved",
        ),
    ),
    BrokenStage(
        "forgetful-agent-whose-delete-does-nothing-and-stream-ends-twice",
        {
            SERVICE: [
                ("            **_thread(run.session_id),", "            **_thread(uuid.uuid4().hex),"),
                (NO_DELETE, "            pass"),
                ("                    yield chunk\n        except AgentRunError", DONE_TWICE),
            ],
            ROUTES: [
                ("from typing import Annotated, Any", "import asyncio\nfrom typing import Annotated, Any"),
                (
                    '    task = tasks.submit(lambda: agent.process_query(body.model_copy(update={"stream": False})))\n',
                    WAITS_FOR_THE_TASK,
                ),
            ],
        },
        only=("sessions", "streaming.event_order"),
        failed=("sessions.continuity", "sessions.delete_session", "sessions.task_accepted", "streaming.event_order"),
        skipped=(
            "sessions.get_session",
            "sessions.list_sessions",
            "sessions.concurrent_turns",
            "sessions.delete_forgets",
            "sessions.task_completes",
        ),
    ),
    BrokenStage(
        "errors-that-are-not-error-responses",
        {
            MAIN: [("    install_error_handlers(app)\n", "")],
            "app/models.py": [
                ('return _CONTROL.sub("", value).strip() if isinstance(value, str) else value', "return value")
            ],
            SERVICE: [("content=m.text) for m in messages", "content=m.text[:4]) for m in messages")],
        },
        only=("errors", "sessions.get_session"),
        failed=(
            "errors.not_found_route",
            "errors.unknown_session",
            "errors.unknown_task",
            "errors.method_not_allowed",
            "errors.validation_empty",
            "errors.validation_length",
            "errors.validation_fields",
            "errors.sanitised",
            "errors.timeout",
            "errors.upstream",
            "sessions.get_session",
        ),
    ),
    BrokenStage(
        "serialised-requests-with-done-instead-of-error",
        {
            SERVICE: [
                ("        lock = self.sessions.lock(session_id)\n", "        lock = _ONE_AT_A_TIME\n"),
                ('_ANSWER_NODE = "writer"\n', '_ANSWER_NODE = "writer"\n_ONE_AT_A_TIME = asyncio.Lock()\n'),
                (
                    'yield StreamChunk(type="error", content=exc.detail,',
                    'yield StreamChunk(type="done", content=exc.detail,',
                ),
            ],
        },
        only=("load", "errors.stream_timeout", "errors.stream_upstream"),
        failed=("load.concurrent", "load.p95_under_load", "errors.stream_timeout", "errors.stream_upstream"),
    ),
    BrokenStage(
        "rate-limit-off-by-one-without-retry-after-or-exemptions-and-flaky",
        {
            MIDDLEWARE: [
                ("allowed = len(hits) < self.limit", "allowed = len(hits) <= self.limit"),
                ('headers={**headers, "Retry-After": str(reset)}', "headers=headers"),
            ],
            MAIN: [("exempt_paths=UNLIMITED_PATHS,", "exempt_paths=(),")],
            ROUTES: [
                ("from typing import Annotated, Any", "import itertools\nfrom typing import Annotated, Any"),
                (
                    'router = APIRouter(tags=["agent"])\n',
                    'router = APIRouter(tags=["agent"])\n_CALLS = itertools.count()\n',
                ),
                (
                    "    if body.stream:\n",
                    FLAKY,
                ),
            ],
        },
        only=("rate_limit", "load.errors_under_load"),
        failed=("rate_limit.exact_burst", "rate_limit.retry_after", "rate_limit.exempt", "load.errors_under_load"),
    ),
]
