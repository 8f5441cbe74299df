"""Course notes bundled with the agent: the documents its lookup tool searches."""

COURSE_NOTES: dict[str, str] = {
    "caching": (
        "Caching keeps a computed answer in a fast store such as Redis for a time-to-live, so a repeated "
        "question is answered without running the agent again. The cache key must cover everything the "
        "answer depends on (the normalised query, the model and the conversation so far), or a cached "
        "answer can ignore context."
    ),
    "rate limiting": (
        "Rate limiting caps how many requests one client may send in a time window. A sliding window in "
        "Redis, updated by one atomic script, stays exact under concurrency and is shared by every worker; "
        "a rejected request gets 429 with a Retry-After header."
    ),
    "jwt": (
        "A JSON Web Token is a signed set of claims (subject, expiry) that a client sends as a Bearer "
        "token. The server verifies the signature with its secret key and an explicit list of allowed "
        "algorithms, and rejects expired or tampered tokens with 401."
    ),
    "sse": (
        "Server-Sent Events stream a response over one HTTP connection as text/event-stream messages, each "
        "with an event type and a data line. Streaming tokens as they are generated cuts the time to the "
        "first visible word from seconds to milliseconds."
    ),
    "prometheus": (
        "Prometheus scrapes a /metrics endpoint that exposes counters, gauges and histograms in a text "
        "format. Label requests by route template, never by raw path, so the number of time series stays "
        "bounded; latency histograms give percentiles such as p95."
    ),
    "langgraph": (
        "LangGraph builds an agent as a graph of nodes that share a typed state. A checkpointer saves the "
        "state after every step, which is what makes a conversation resumable across requests, processes "
        "and restarts."
    ),
}

# Words a question may use for a topic, mapped to the topic's key in COURSE_NOTES.
TOPIC_ALIASES: dict[str, str] = {
    "caching": "caching",
    "cache": "caching",
    "cached": "caching",
    "rate limiting": "rate limiting",
    "rate limit": "rate limiting",
    "rate-limit": "rate limiting",
    "throttling": "rate limiting",
    "jwt": "jwt",
    "json web token": "jwt",
    "token auth": "jwt",
    "sse": "sse",
    "server-sent events": "sse",
    "server sent events": "sse",
    "streaming": "sse",
    "prometheus": "prometheus",
    "metrics": "prometheus",
    "langgraph": "langgraph",
    "checkpoint": "langgraph",
}
