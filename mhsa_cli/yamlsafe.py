"""Safe YAML for recipes and ``--set`` values: one parse, with budgets; every failure one line.

PyYAML's safe loader is safe from code execution but not from everything else a
user's file can do, so :class:`BudgetLoader` adds:

- a size budget (:data:`MAX_BYTES`) checked before parsing;
- a depth budget (:data:`MAX_DEPTH`) checked while composing, before PyYAML's
  recursive composer could end in a ``RecursionError``;
- an alias budget: anchors and aliases are allowed, but the document's size with
  every alias expanded (:data:`MAX_NODES`) is counted as it is composed, so a
  "billion laughs" file under 1 KB is refused in milliseconds instead of being
  expanded at exponential cost by whoever walks the data later;
- only the standard tags (:data:`SAFE_TAGS`): ``!!python/...`` and any local
  tag (``!foo``) are refused, on keys as well as on values.

Bytes must be UTF-8. Every failure is an :class:`MhsaError` whose message starts
with ``source:line:column:``.
"""

from __future__ import annotations

from typing import Any

import yaml

from .errors import MhsaError

MAX_BYTES = 1 << 20  # a recipe is a few KB; 1 MiB is generous
MAX_DEPTH = 64  # nesting of mappings/sequences
MAX_NODES = 100_000  # nodes after alias expansion
SAFE_TAGS = frozenset("tag:yaml.org,2002:" + t for t in ("null", "bool", "int", "float", "str", "seq", "map",
                                                          "merge"))


class MalformedYaml(MhsaError):
    """Text that is not YAML at all (as opposed to YAML over a budget or with a refused tag)."""


def where(source: str, line: int, column: int) -> str:
    """``source:line:column`` (both 1-based)."""
    return f"{source}:{line}:{column}"


def decode(data: bytes, source: str) -> str:
    """UTF-8 bytes -> text.

    Raises:
        MhsaError: not UTF-8 (with the position of the first bad byte) or over :data:`MAX_BYTES`.
    """
    if len(data) > MAX_BYTES:
        raise MhsaError(f"{source}: file too large for a recipe ({len(data):,} bytes; at most {MAX_BYTES:,})")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise MhsaError(f"{where(source, line, column)}: not UTF-8 text (byte 0x{data[exc.start]:02x})") from None


class BudgetLoader(yaml.SafeLoader):
    """A SafeLoader whose composer enforces depth, expanded-size and tag budgets.

    Dates stay strings (the implicit timestamp resolver is dropped: a recipe has no dates).
    """

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def __init__(self, stream: str, source: str = "<string>"):
        super().__init__(stream)
        self.source = source
        self._depth = 0
        self._count = 0  # nodes so far, aliases counted at their expanded size
        self._sizes: dict[int, int] = {}  # id(anchored node) -> expanded size
        self._max = 0  # deepest level reached so far, aliases expanded
        self._heights: dict[int, int] = {}  # id(anchored node) -> levels below it, aliases expanded

    def _fail(self, mark: Any, problem: str) -> None:
        raise MhsaError(f"{where(self.source, mark.line + 1, mark.column + 1)}: {problem}")

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            self._add(self._sizes.get(id(target), 1), event.start_mark)
            self._reach(self._depth + 1 + self._heights.get(id(target), 0), event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        self._reach(self._depth, event.start_mark)
        outer_max, self._max = self._max, self._depth
        before = self._count
        self._add(1, event.start_mark)
        node = super().compose_node(parent, index)
        height = self._max - self._depth
        self._max = max(outer_max, self._max)
        self._depth -= 1
        if node.tag not in SAFE_TAGS:
            self._fail(node.start_mark, f"YAML tag '{node.tag}' is not allowed (only plain values, "
                                        "lists and mappings)")
        if getattr(event, "anchor", None):
            self._sizes[id(node)] = self._count - before
            self._heights[id(node)] = height
        return node

    def _reach(self, depth: int, mark: Any) -> None:
        if depth > MAX_DEPTH:
            self._fail(mark, f"YAML nested deeper than {MAX_DEPTH} levels (aliases expanded)")
        self._max = max(self._max, depth)

    def _add(self, n: int, mark: Any) -> None:
        self._count += n
        if self._count > MAX_NODES:
            self._fail(mark, f"YAML too large: more than {MAX_NODES:,} values with aliases expanded")


def compose(text: str, source: str = "<string>") -> yaml.Node | None:
    """Parse ``text`` once into a node graph within the budgets (``None`` for an empty document).

    Raises:
        MhsaError: over a budget, a non-standard tag, or malformed YAML; ``source:line:column: ...``.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise MhsaError(f"{source}: YAML too large ({len(text):,} characters; at most {MAX_BYTES:,} bytes)")
    try:
        loader = BudgetLoader(text, source)  # the reader checks every character here
        try:
            return loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise MalformedYaml(_yaml_error(exc, text, source)) from None


_CONSTRUCTOR = None  # one loader reused for every node (a recipe walk constructs scalar by scalar)


def construct(node: yaml.Node) -> Any:
    """Python value of a node from :func:`compose` (safe constructors only)."""
    global _CONSTRUCTOR
    loader = _CONSTRUCTOR = _CONSTRUCTOR or BudgetLoader("")
    try:
        return loader.construct_document(node)
    except yaml.YAMLError as exc:  # e.g. an int too odd to read: still a position
        raise MhsaError(_yaml_error(exc, "", "<yaml>")) from None


def load(text: str, source: str = "<string>") -> Any:
    """:func:`compose` + :func:`construct`."""
    node = compose(text, source)
    return None if node is None else construct(node)


def _yaml_error(exc: yaml.YAMLError, text: str, source: str) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if isinstance(exc, yaml.reader.ReaderError):  # a control character: position is an offset
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        return f"{where(source, line, column)}: malformed YAML: control character " \
               f"U+{exc.character if isinstance(exc.character, int) else ord(exc.character):04X} is not allowed"
    if mark is None:
        return f"{source}: malformed YAML: {problem}"
    return f"{where(source, mark.line + 1, mark.column + 1)}: malformed YAML: {problem}"
