"""SageMaker's request shapes from botocore's service model: the authority on what a request may hold."""
from __future__ import annotations

import difflib
import functools
import re
import sys
import unicodedata
from typing import Any, Iterator

import botocore.session
from botocore.validate import ParamValidator

from inference.limits import has_surrogate, not_text

# Instance counts of the jobs' clusters (botocore's shapes; the service's own bounds). botocore allows a
# training count of 0 — the count of a heterogeneous cluster lives in its InstanceGroups — but a
# ResourceConfig without InstanceGroups, the pipeline's, needs at least one instance; and botocore's
# validator checks no maximum, so the range is checked here.
INSTANCE_COUNT_SHAPES = {"processing": "ProcessingInstanceCount", "training": "TrainingInstanceCount"}
INSTANCE_TYPE_SHAPES = {"processing": "ProcessingInstanceType", "training": "TrainingInstanceType",
                        "endpoint": "ProductionVariantInstanceType"}
MIN_INSTANCES = 1


@functools.lru_cache(maxsize=1)
def _sagemaker() -> Any:
    return botocore.session.get_session().get_service_model("sagemaker")


def instance_count_range(kind: str) -> tuple[int, int | None]:
    """(least, most) instances a ``kind`` ("processing" or "training") job may have; most None: no bound."""
    metadata = _sagemaker().shape_for(INSTANCE_COUNT_SHAPES[kind]).metadata
    return max(MIN_INSTANCES, int(metadata.get("min", MIN_INSTANCES))), metadata.get("max")


def instance_count_problem(kind: str, value: Any) -> str | None:
    """Why ``value`` is not an instance count of a ``kind`` job, or None."""
    least, most = instance_count_range(kind)
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be a whole number, got {value!r}"
    if value < least or (most is not None and value > most):
        return f"must be {least} to {most}, got {value}" if most is not None else f"must be at least {least}, got {value}"
    return None


@functools.lru_cache(maxsize=1)
def sagemaker_regions() -> frozenset[str]:
    """The regions, of every partition, where this botocore knows SageMaker's endpoints."""
    session = botocore.session.get_session()
    return frozenset(region for partition in session.get_available_partitions()
                     for region in session.get_available_regions("sagemaker", partition))


def instance_type_problem(kind: str, value: Any) -> str | None:
    """Why ``value`` is not an instance type a ``kind`` ("processing", "training", "endpoint") resource takes in
    this botocore's SageMaker model (the service's own list), or None."""
    shape = _sagemaker().shape_for(INSTANCE_TYPE_SHAPES[kind])
    if not isinstance(value, str):
        return f"{value!r} is not a SageMaker {kind} instance type (not a string)"
    return None if value in shape.enum else f"{value!r} is not a SageMaker {kind} instance type ({_not_in_enum(shape, value)})"


# Where each job request holds its cluster's instance count (botocore checks only the minimum, and training's is 0).
COUNT_FIELDS = {"CreateProcessingJob": ("processing", ("ProcessingResources", "ClusterConfig", "InstanceCount")),
                "CreateTrainingJob": ("training", ("ResourceConfig", "InstanceCount"))}


def request_nodes(shape: Any, value: Any, path: str = "") -> Iterator[tuple[Any, Any, str]]:
    """Every value of a request with its shape and path (``A.B[0].C``; a map's key as ``A<key>``), the request itself
    first."""
    yield shape, value, path
    if shape.type_name == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():
            if name in value:
                yield from request_nodes(member, value[name], f"{path}.{name}" if path else name)
    elif shape.type_name == "list" and isinstance(value, list):
        for i, item in enumerate(value):
            yield from request_nodes(shape.member, item, f"{path}[{i}]")
    elif shape.type_name == "map" and isinstance(value, dict):
        for key, item in value.items():
            yield from request_nodes(shape.key, key, f"{path}<{key}>")
            yield from request_nodes(shape.value, item, f"{path}.{key}")


def enum_problems(shape: Any, value: Any) -> list[str]:
    """Values outside their shape's enum (an instance type ``ml.bogus``), which botocore's validator does not
    check: the service refuses them when the job is created, so a run would fail at that step, not at start."""
    problems = []
    for node, item, path in request_nodes(shape, value):
        allowed = getattr(node, "enum", None) or []
        if allowed and isinstance(item, str) and item not in allowed:
            problems.append(f"Invalid value for parameter {path}, value: {item}: {_not_in_enum(node, item)}")
    return problems


def _not_in_enum(shape: Any, item: str) -> str:
    """Why ``item`` is none of an enum shape's values, with the closest ones."""
    close = difflib.get_close_matches(item, shape.enum, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else f" ({len(shape.enum)} valid values, e.g. {shape.enum[0]})"
    return f"not one of the service's {shape.name} values{hint}"


def limit_problems(shape: Any, value: Any) -> list[str]:
    """What botocore's validator leaves to the service (it checks minimums only): strings, lists and maps longer than
    their shape's ``max`` (a container argument over 256 characters, a job with over 100 of them), numbers above
    it (a blue/green wait over 3600 s). The service refuses the request when it is made: a job after the steps
    before it have run."""
    problems = []
    for node, item, path in request_nodes(shape, value):
        limit = node.metadata.get("max")
        if limit is None:
            continue
        if node.type_name in ("string", "list", "map") and isinstance(item, (str, list, dict)) and len(item) > limit:
            problems.append(f"Invalid length for parameter {path}, value: {len(item)}, valid max length: {limit}")
        elif node.type_name in ("integer", "long", "float", "double") and isinstance(item, (int, float)) \
                and not isinstance(item, bool) and item > limit:
            problems.append(f"Invalid value for parameter {path}, value: {item}, valid max value: {limit}")
    return problems


# The Unicode general categories a service pattern names as \p{X} (Java's syntax, which Python's re lacks).
_PROPERTY = re.compile(r"\\p\{([A-Z][a-z]?)\}")
# Java lets an anchor be quantified (CustomerMetadataValue is ``([...]*)${1,256}``); Python refuses it. The
# quantifier of an anchor changes nothing, and the length is limit_problems' to check.
_QUANTIFIED_END = re.compile(r"\$\{\d+(,\d*)?\}")


@functools.lru_cache(maxsize=1)
def _category_ranges() -> dict[str, list[tuple[int, int]]]:
    """Each Unicode general category (``Lu``, ``Zs``…) as its ranges of code points (one pass over them all)."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    for code in range(sys.maxunicode + 1):
        found = ranges.setdefault(unicodedata.category(chr(code)), [])
        if found and found[-1][1] == code - 1:
            found[-1] = (found[-1][0], code)
        else:
            found.append((code, code))
    return ranges


def _category_class(category: str) -> str:
    """The code points of a Unicode general category (``L``, or ``Lu``) as ranges for a character class."""
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
                   for name, found in sorted(_category_ranges().items()) if name.startswith(category)
                   for a, b in found)


# Java's "." (no DOTALL, no UNIX_LINES) matches any character but its line terminators; Python's takes all but "\n".
_JAVA_DOT = r"[^\n\r\x85\u2028\u2029]"


def _java_dots(pattern: str) -> str:
    """``pattern`` with each "." outside a character class (and not escaped) as Java's: no line terminator."""
    out, depth, i = [], 0, 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if ch == "[":
            depth += 1
        elif ch == "]" and depth:
            depth -= 1
        out.append(_JAVA_DOT if ch == "." and not depth else ch)
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=256)
def service_pattern(pattern: str) -> re.Pattern[str]:
    """A shape's ``pattern`` (the service's Java regular expression) as Python's, to match a whole value:
    ``\\p{L}`` and the like become their categories' characters; ``\\d``, ``\\w`` and ``\\s`` stay ASCII, as in Java;
    ``.`` matches no line terminator (``\\n``, ``\\r``, ``\\u0085``, ``\\u2028``, ``\\u2029``), as in Java."""
    translated = _java_dots(_QUANTIFIED_END.sub("$", pattern))
    if _PROPERTY.search(translated):
        inside = re.sub(r"\[([^\]]*\\p\{[^\]]*)\]", lambda m: "[" + _PROPERTY.sub(
            lambda p: _category_class(p.group(1)), m.group(1)) + "]", translated)
        translated = _PROPERTY.sub(lambda p: "[" + _category_class(p.group(1)) + "]", inside)  # one outside a class
    return re.compile(translated, re.ASCII)


def name_problem(shape_name: str, value: Any) -> str | None:
    """Why ``value`` is not a string of SageMaker's shape ``shape_name`` (its length and pattern: a step's
    ``StepName``, a parameter's ``PipelineParameterName``), or None."""
    shape = _sagemaker().shape_for(shape_name)
    if not isinstance(value, str):
        return f"must be a string, got {value!r:.80}"
    least, most, pattern = shape.metadata.get("min", 0), shape.metadata.get("max"), shape.metadata.get("pattern")
    if len(value) < max(least, 1) or (most is not None and len(value) > most):
        return f"must be 1 to {most} characters, got {len(value)}"
    if pattern is not None and not service_pattern(pattern).fullmatch(value):
        return f"{value!r:.80} must match SageMaker's {shape_name} pattern {pattern}"
    return None


def pattern_problems(shape: Any, value: Any) -> list[str]:
    """Strings (values and map keys) that do not match their shape's ``pattern``, which botocore's validator does not
    check; and strings with a lone UTF-16 surrogate, which no service request can carry. SageMaker refuses them when
    the request is made: a metadata value holding a newline (``CustomerMetadataProperties``), a description holding a
    control character. The value is quoted with its escapes (a newline as ``\\n``), clipped."""
    problems = []
    for node, item, path in request_nodes(shape, value):
        if not isinstance(item, str):
            continue
        quoted = repr(item) if len(item) <= 80 else repr(item[:79]) + "…"
        if any("\ud800" <= ch <= "\udfff" for ch in item):
            problems.append(f"Invalid value for parameter {path}, value: {quoted}: holds a lone UTF-16 surrogate "
                            "(\\ud800-\\udfff), which is not Unicode text")
            continue
        pattern = node.metadata.get("pattern")
        if pattern is not None and not service_pattern(pattern).fullmatch(item):
            problems.append(f"Invalid value for parameter {path}, value: {quoted}: must match the service's "
                            f"{node.name} pattern {pattern}")
    return problems


def request_problems(operation: str, arguments: dict[str, Any], *, patterns: bool = False) -> str | None:
    """botocore's report of what ``arguments`` break in ``operation``'s request shape, or None if valid; enum
    fields are held to their values and a job's instance count to the service's whole range
    (``instance_count_range``); with ``patterns``, strings to their shapes' patterns too (``pattern_problems``:
    the registry's requests, whose text is shown back to people)."""
    shape = _sagemaker().operation_model(operation).input_shape
    report = ParamValidator().validate(arguments, shape)
    problems = report.generate_report().splitlines() if report.has_errors() else []
    problems += enum_problems(shape, arguments) + limit_problems(shape, arguments)
    if patterns:
        problems += pattern_problems(shape, arguments)
    if operation in COUNT_FIELDS:
        kind, path = COUNT_FIELDS[operation]
        value: Any = arguments
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        resources = arguments.get("ResourceConfig") or {}
        problem = instance_count_problem(kind, value) if isinstance(value, int) else None
        if problem and not resources.get("InstanceGroups"):
            field = ".".join(path)
            problems = [line for line in problems if f"parameter {field}," not in line]
            problems.append(f"Invalid value for parameter {field}, value: {value}: an instance count {problem}")
    return "\n".join(problems) or None


# An empty parameter Value: botocore's model allows it (String1024, min 0), but the service refuses it at start
# ('string "" is too short (length: 0, required minimum: 1)', sagemaker-python-sdk issue #4016), where a local run of
# the same value would have worked. Refused before either, so `run --local` and `pipeline start` refuse what SageMaker
# does; a parameter meant to be left alone is left out of --param (its default is used).
EMPTY_PARAMETER_VALUE = ("the value is empty, which SageMaker's StartPipelineExecution refuses (leave the parameter "
                         "out for its default)")


def parameter_value_problems(value: str) -> list[str]:
    """What SageMaker refuses in a pipeline parameter's ``value``, the text StartPipelineExecution sends (its
    ``Parameter`` shape's Value): longer than the shape's max (botocore does not check it; the service does), empty
    (EMPTY_PARAMETER_VALUE), or holding a lone surrogate (no UTF-8 request or record can carry one). Each problem is a
    clause about "the value", which it does not quote."""
    shape = _sagemaker().shape_for("Parameter").members["Value"]
    if not value:
        return [EMPTY_PARAMETER_VALUE]
    problems = [f"the value is {len(value):,} characters, at most {shape.metadata['max']:,} "
                f"(StartPipelineExecution's {shape.name})"] if limit_problems(shape, value) else []
    if has_surrogate(value):
        problems.append(not_text("the value"))
    return problems
