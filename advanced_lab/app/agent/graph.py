"""The agent's LangGraph workflow: a supervisor routes between a researcher with tools and a writer."""

from collections.abc import Sequence
from typing import Annotated, Any, Literal, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, RemoveMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, tool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import REMOVE_ALL_MESSAGES, add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.managed import RemainingSteps
from langgraph.prebuilt import ToolNode

from .offline_replies import NOTES_HEADING

SUPERVISOR, RESEARCHER, TOOLS, WRITER = "supervisor", "researcher", "tools", "writer"
STEP_LIMIT_NOTE = "step_limit"
# Steps a research round needs after the supervisor: researcher, tools, researcher again, writer.
# RemainingSteps counts the running step too, hence the strict comparisons below.
_RESEARCH_STEPS = 4

SUPERVISOR_PROMPT = (
    "You are the supervisor of a small team. Call the route tool once: choose 'researcher' when the "
    "user's latest message needs a calculation, the current time, or facts about caching, rate limiting, "
    "JWT, SSE, Prometheus or LangGraph; otherwise choose 'writer'."
)
RESEARCHER_PROMPT = (
    "You are the researcher. Use the tools to gather what the user's latest message needs: the "
    "calculator for arithmetic, search_course_notes for course topics, current_time for the time. "
    "When you have the results, reply with one short sentence saying what you found."
)
WRITER_PROMPT = (
    "You are the writer. Answer the user's latest message in a few clear sentences, using the research "
    "notes below when there are any and the conversation so far. Do not mention the team or the tools."
)


class AgentState(TypedDict):
    """The graph's state: the conversation is kept across turns, the research only within one turn."""

    messages: Annotated[list[AnyMessage], add_messages]
    research: Annotated[list[AnyMessage], add_messages]
    next: str
    budget_exhausted: bool
    remaining_steps: RemainingSteps


@tool
def route(next: Literal["researcher", "writer"]) -> str:  # noqa: A002 - the field name the model sees
    """Hand the conversation to the researcher (tools needed) or straight to the writer."""
    return next


def format_notes(research: Sequence[AnyMessage]) -> str:
    """The tool results of this turn as note lines the writer reads: '- tool(args): result'."""
    calls: dict[str, tuple[str, dict[str, Any]]] = {
        str(call["id"]): (call["name"], call["args"])
        for message in research
        if isinstance(message, AIMessage)
        for call in message.tool_calls
    }
    lines = []
    for message in research:
        if isinstance(message, ToolMessage):
            name, args = calls.get(message.tool_call_id, (message.name or "tool", {}))
            arguments = ", ".join(str(value) for value in args.values())
            lines.append(f"- {name}({arguments}): {' '.join(message.text.split())}")
    return "\n".join(lines)


def build_agent_graph(
    model: BaseChatModel,
    tools: Sequence[BaseTool],
    checkpointer: BaseCheckpointSaver[Any] | None = None,
) -> CompiledStateGraph[AgentState, Any, AgentState, AgentState]:
    """Compile the workflow around a chat model, the researcher's tools and a checkpointer."""
    # Only the writer's answer is shown token by token. The routing and research calls are asked not to stream
    # (stream=False), so LangChain and LangGraph pass no chunks of theirs through the callbacks.
    router = model.bind_tools([route], tool_choice="route", stream=False)
    researcher_model = model.bind_tools(list(tools), stream=False)

    async def supervisor(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        if state["remaining_steps"] < 2:  # no step left for the writer: end without an answer
            return {"next": END, "budget_exhausted": True, "research": [RemoveMessage(id=REMOVE_ALL_MESSAGES)]}
        decision = await router.ainvoke([SystemMessage(SUPERVISOR_PROMPT), *state["messages"]], config)
        wants_research = any(call["args"].get("next") == RESEARCHER for call in decision.tool_calls)
        affordable = state["remaining_steps"] > _RESEARCH_STEPS
        return {
            "next": RESEARCHER if wants_research and affordable else WRITER,
            "budget_exhausted": wants_research and not affordable,
            "research": [RemoveMessage(id=REMOVE_ALL_MESSAGES)],
        }

    async def researcher(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        prompt = [SystemMessage(RESEARCHER_PROMPT), *state["messages"], *state["research"]]
        return {"research": [await researcher_model.ainvoke(prompt, config)]}

    # The routers are coroutines on purpose: LangGraph runs a plain function of an async graph in a thread of the
    # executor, a hop there and back between two steps of every run.
    async def after_supervisor(state: AgentState) -> str:
        return state["next"]

    async def after_research(state: AgentState) -> str:
        last = state["research"][-1] if state["research"] else None
        wants_tools = isinstance(last, AIMessage) and bool(last.tool_calls)
        # A tool round costs two more steps (tools, researcher) and the writer needs one.
        return TOOLS if wants_tools and state["remaining_steps"] > 3 else WRITER

    async def writer(state: AgentState, config: RunnableConfig) -> dict[str, Any]:
        notes = format_notes(state["research"])
        if state.get("budget_exhausted"):
            notes += f"\n- {STEP_LIMIT_NOTE}(max_iterations): the step budget ran out before any research"
        system = f"{WRITER_PROMPT}\n\n{NOTES_HEADING}\n{notes}" if notes else WRITER_PROMPT
        answer = await model.ainvoke([SystemMessage(system), *state["messages"]], config)
        return {"messages": [answer]}

    graph = StateGraph(AgentState)
    graph.add_node(SUPERVISOR, supervisor)
    graph.add_node(RESEARCHER, researcher)
    graph.add_node(TOOLS, ToolNode(list(tools), messages_key="research"))
    graph.add_node(WRITER, writer)
    graph.add_edge(START, SUPERVISOR)
    graph.add_conditional_edges(SUPERVISOR, after_supervisor, [RESEARCHER, WRITER, END])
    graph.add_conditional_edges(RESEARCHER, after_research, [TOOLS, WRITER])
    graph.add_edge(TOOLS, RESEARCHER)
    graph.add_edge(WRITER, END)
    return graph.compile(checkpointer=checkpointer)
