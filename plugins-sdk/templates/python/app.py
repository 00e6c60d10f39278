"""{{name}}: a tool for the Open-AutoGLM host."""

from autoglm import InvalidArguments, Tools, tool  # noqa: F401  (Tools is the component's export)


@tool(read_only=True, idempotent=True)
def greet(name: str, excited: bool = False) -> dict:
    """Greet someone by name."""
    if not name.strip():
        raise InvalidArguments("name must not be empty")
    return {"greeting": f"Hello, {name.strip()}{'!' if excited else '.'}"}
