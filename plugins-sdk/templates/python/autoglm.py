"""Write Open-AutoGLM tools in Python.

Decorate a typed function with ``@tool``: its JSON Schema comes from the type hints
(``str``, ``int``, ``float``, ``bool``, ``list[...]``, ``dict``, ``Optional[...]``,
``Literal[...]`` and dataclasses), its description from the docstring. Arguments are
checked and decoded before the function runs; ``InvalidArguments`` tells the caller
to change them, any other exception reports that the tool failed.
"""

import dataclasses
import inspect
import json
import types
import typing

__all__ = ["Context", "InvalidArguments", "ToolError", "Tools", "call", "context", "progress", "reported", "specs", "tool"]


class ToolError(Exception):
    """The tool could not do its work."""


class InvalidArguments(ToolError):
    """The caller sent arguments the tool cannot accept."""


@dataclasses.dataclass
class _Tool:
    name: str
    description: str
    function: typing.Callable
    schema: dict
    hints: dict


_TOOLS: dict = {}


def tool(function=None, *, name=None, read_only=False, destructive=False, idempotent=False, open_world=False):
    """Register a function as a tool (usable as ``@tool`` or ``@tool(read_only=True)``)."""

    def register(function):
        tool_name = name or function.__name__
        _TOOLS[tool_name] = _Tool(
            name=tool_name,
            description=inspect.getdoc(function) or tool_name,
            function=function,
            schema=_input_schema(function),
            hints={"read_only": read_only, "destructive": destructive, "idempotent": idempotent, "open_world": open_world},
        )
        return function

    return register(function) if function is not None else register


def _schema(annotation) -> dict:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is str:
        return {"type": "string"}
    if annotation is bool:
        return {"type": "boolean"}
    if annotation is int:
        return {"type": "integer"}
    if annotation is float:
        return {"type": "number"}
    if annotation in (dict, typing.Any) or origin is dict:
        return {"type": "object"} if annotation is not typing.Any else {}
    if origin in (list, tuple, set) or annotation in (list, tuple, set):
        return {"type": "array", "items": _schema(args[0])} if args else {"type": "array"}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _schema(options[0]) if len(options) == 1 else {"anyOf": [_schema(a) for a in options]}
    if dataclasses.is_dataclass(annotation):
        return _object_schema(
            {f.name: (f.type, f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING) for f in dataclasses.fields(annotation)},
            typing.get_type_hints(annotation),
        )
    raise TypeError(f"autoglm: cannot describe type {annotation!r} as JSON Schema")


def _object_schema(fields: dict, hints: dict) -> dict:
    return {
        "type": "object",
        "properties": {name: _schema(hints.get(name, typing.Any)) for name in fields},
        "required": [name for name, (_, required) in fields.items() if required],
        "additionalProperties": False,
    }


def _input_schema(function) -> dict:
    hints = typing.get_type_hints(function)
    parameters = inspect.signature(function).parameters
    fields = {name: (None, p.default is inspect.Parameter.empty) for name, p in parameters.items()}
    return _object_schema(fields, hints)


def _decode(value, annotation, path):
    """Check `value` against `annotation`, building dataclasses; raise InvalidArguments."""
    schema_type = _schema(annotation).get("type")
    checks = {"string": str, "boolean": bool, "object": dict, "array": list}
    if schema_type == "integer" and (not isinstance(value, int) or isinstance(value, bool)):
        raise InvalidArguments(f"{path} must be an integer")
    if schema_type == "number" and (not isinstance(value, (int, float)) or isinstance(value, bool)):
        raise InvalidArguments(f"{path} must be a number")
    if schema_type in checks and not isinstance(value, checks[schema_type]):
        raise InvalidArguments(f"{path} must be of type {schema_type}")
    if dataclasses.is_dataclass(annotation):
        hints = typing.get_type_hints(annotation)
        return annotation(**_decode_fields(value, hints, _object_schema({f.name: (f.type, f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING) for f in dataclasses.fields(annotation)}, hints), path))
    return value


def _decode_fields(args: dict, hints: dict, schema: dict, path: str) -> dict:
    unknown = sorted(set(args) - set(schema["properties"]))
    if unknown:
        raise InvalidArguments(f"{path}: unknown argument(s) {', '.join(unknown)}")
    missing = [name for name in schema["required"] if name not in args]
    if missing:
        raise InvalidArguments(f"{path}: missing required argument(s) {', '.join(missing)}")
    return {name: _decode(value, hints.get(name, typing.Any), f"{path}.{name}") for name, value in args.items()}


def _encode(result):
    if dataclasses.is_dataclass(result):
        return dataclasses.asdict(result)
    return result


def call(name: str, args_json: str) -> str:
    """Run tool `name` with JSON arguments and return its JSON result."""
    registered = _TOOLS.get(name)
    if registered is None:
        raise InvalidArguments(f"this plugin has no tool {name!r}; it offers {', '.join(_TOOLS)}")
    try:
        args = json.loads(args_json)
    except json.JSONDecodeError as error:
        raise InvalidArguments(f"arguments are not JSON: {error}") from error
    if not isinstance(args, dict):
        raise InvalidArguments("arguments must be a JSON object")
    hints = typing.get_type_hints(registered.function)
    decoded = _decode_fields(args, hints, registered.schema, "arguments")
    return json.dumps(_encode(registered.function(**decoded)))


@dataclasses.dataclass
class Context:
    """What the host knows about the call being run."""

    idempotency_key: str
    """The same each time the host runs this call again (a task's stage re-run after a
    crash keeps it): pass it on to services with side effects so they happen once."""
    trace_id: typing.Optional[str]
    """The trace id of the request that caused the call."""
    deadline_ms: int
    """Milliseconds left before the host stops the call."""


_host = None  # the component's `autoglm:plugin/host` import; None when running natively

reported: list = []
"""Natively (in tests), what ``progress`` was given, as (done, total, message) tuples."""


def context() -> Context:
    """The context of the call being run (natively: a fixed one for tests)."""
    if _host is None:
        return Context(idempotency_key="native", trace_id=None, deadline_ms=0)
    call = _host.context()
    return Context(idempotency_key=call.idempotency_key, trace_id=call.trace_id, deadline_ms=call.deadline_ms)


def progress(done: float, total: typing.Optional[float] = None, message: typing.Optional[str] = None) -> None:
    """Tell the caller how far a long call has come: ``done`` of ``total`` units.

    Reports should grow; the host forwards them to callers that asked (MCP progress
    notifications) and drops them otherwise."""
    if _host is None:
        reported.append((done, total, message))
        return
    _host.report_progress(float(done), None if total is None else float(total), message)


def specs() -> list:
    """Every registered tool's name, description, schema and hints."""
    return [dataclasses.asdict(t) | {"function": None} for t in _TOOLS.values()]


try:  # Inside a component built by componentize-py.
    from componentize_py_types import Err
    from wit_world import exports
    from wit_world.exports import tools as wit
    from wit_world.imports import host as _host
except ImportError:  # Running natively, e.g. in tests.
    Tools = None
else:

    def _hints(registered):
        flags = {
            "read_only": wit.Hints.READ_ONLY,
            "destructive": wit.Hints.DESTRUCTIVE,
            "idempotent": wit.Hints.IDEMPOTENT,
            "open_world": wit.Hints.OPEN_WORLD,
        }
        hints = wit.Hints(0)
        for key, flag in flags.items():
            if registered.hints[key]:
                hints |= flag
        return hints

    class Tools(exports.Tools):
        """The component's `autoglm:plugin/tools` export."""

        def list_tools(self):
            return [
                wit.ToolSpec(
                    name=t.name,
                    description=t.description,
                    input_schema=json.dumps(t.schema),
                    output_schema=None,
                    capabilities=wit.Capabilities(directories=[], outbound_hosts=[], env=[]),
                    hints=_hints(t),
                )
                for t in _TOOLS.values()
            ]

        def call(self, tool: str, args_json: str) -> str:
            try:
                return call(tool, args_json)
            except InvalidArguments as error:
                raise Err(wit.CallError_InvalidArguments(str(error)))
            except Exception as error:  # the tool failed; the host reports tool_error
                raise Err(wit.CallError_Failed(f"{type(error).__name__}: {error}"))
