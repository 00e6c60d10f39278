"""{{name}}: a tool for the Open-AutoGLM host."""

from autoglm import InvalidArguments, Tools, context, progress, tool  # noqa: F401  (Tools is the component's export)


@tool(read_only=True, idempotent=True)
def greet(name: str, excited: bool = False) -> dict:
    """Greet someone by name."""
    if not name.strip():
        raise InvalidArguments("name must not be empty")
    return {"greeting": f"Hello, {name.strip()}{'!' if excited else '.'}"}


@tool(read_only=True)
def work(steps: int) -> dict:
    """Work through some steps, reporting progress, and say what the host told the call."""
    if not 1 <= steps <= 100:
        raise InvalidArguments("steps must be 1 to 100")
    for done in range(1, steps + 1):
        progress(done, steps, f"step {done}")
    call = context()
    return {"steps": steps, "idempotency_key": call.idempotency_key, "trace_id": call.trace_id, "deadline_ms": call.deadline_ms}
