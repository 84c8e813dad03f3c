"""Limits on GraphQL documents and results, and the schema's extension list that applies them.

Every document is measured by one cheap pass (`measure`) before any
graphql-core validation rule runs: depth, aliases, fields, fragment
definitions and spreads, and cost. The pass walks each selection set once
and each fragment once (memoized), so a document whose fragments expand
to 2^39 fields is refused in microseconds; over a limit, the document gets
QUERY_TOO_COMPLEX and never reaches the validation rules. (strawberry's
`MaxAliasesLimiter` and `QueryDepthLimiter`, which this replaces, expand
fragments once per spread: a 1.6 KB document froze the process.)

What the pass accepts is then validated by graphql-core's rules, with one
change: `OverlappingFieldsCanBeMerged`, quadratic in the fields that share
a response name, gets a complexity budget 50 times smaller than
graphql-core's default (`OVERLAP_BUDGET`); graphql-core meters that rule's
work and aborts it once the budget is spent. The other rules are linear in
the document, which the token limit bounds (parser option).

And a new document is parsed, measured and validated in the schema's worker
thread, not on the event loop (a document seen before comes from the cache
and is only measured again). Both, because each alone falls short, as
measured on the 2-core test machine while other tests ran, /healthz polled
during 10 requests of each kind: with the bound alone, documents the limits
accept but whose validation spends the budget held the event loop for up to
110-180 ms, and parsing a 1 MB document for 200 ms; with the thread, the
/healthz p99 stayed under 15 ms, its maximum set by garbage-collector pauses
(20-40 ms). The bound stays necessary: the thread burns the same CPU, cannot
be cancelled, and new documents queue behind whatever it is doing.

The remaining limits are graphql-core's own: the token count and the
parser's nesting guard, and `MaxIntrospectionDepthRule` (one of its
specified rules: the nested `fields`/`ofType` lists of introspection). Every
one answers QUERY_TOO_COMPLEX (see `errors`). The cost limit bounds how many
records one request loads; the view bounds the bytes of what it sends
(HTTP_MAX_RESPONSE_BYTES).

Parsed and validated documents are cached by their text (`DocumentCache`),
only documents of a few KB, and the cache is bounded by the characters it
holds (see CACHE_CHARS for why it is small).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    is_interface_type,
    is_object_type,
    parse,
)
from graphql.validation import OverlappingFieldsCanBeMergedRule
from graphql.validation.validate import ValidationAbortedError
from strawberry.extensions import DisableIntrospection, MaxTokensLimiter, SchemaExtension
from strawberry.schema.schema import validate_document  # the rules strawberry adds, too

from ..errors import ErrorCodes
from ..settings import Settings
from ..jobs import MAX_PAGE

# graphql-core's default is 500,000 units: about 2 s of CPU here for 400 copies of
# `jobs{edges{node{id}}}`. GraphiQL's introspection query spends 0, a document of
# nested fragments that selects 2000 fields about 400.
OVERLAP_BUDGET = 10_000
# Each node of a connection (a record loaded) costs this much beside its selections.
NODE_COST = 10
# Documents longer than this are parsed and validated each time; the cache holds
# at most CACHE_CHARS characters of document text. A syntax tree is many small
# objects (up to 270 bytes a character), and every full garbage collection walks
# them all: 64 KiB of the densest documents is 17 MB and adds about 20 ms to each
# (256 KiB would add 120 ms). GraphiQL's introspection query is 1.6 KB.
MAX_CACHED_DOCUMENT_CHARS = 4096
CACHE_CHARS = 64 * 1024


class TooComplex(Exception):
    """A document over one of the limits; the message names the limit."""


@dataclass(frozen=True)
class Limits:
    depth: int
    aliases: int
    fields: int
    fragments: int
    cost: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(depth=settings.graphql_max_depth, aliases=settings.graphql_max_aliases,
                   fields=settings.graphql_max_fields, fragments=settings.graphql_max_fragments,
                   cost=settings.graphql_max_cost)


class Size(NamedTuple):
    """What a selection set selects, fragments expanded. Height is 0 for leaves only
    (top-level fields are depth 0, as in graphql-depth-limit and strawberry)."""

    height: int = 0
    fields: int = 0
    aliases: int = 0
    cost: int = 0

    def __add__(self, other: Size) -> Size:
        return Size(max(self.height, other.height), self.fields + other.fields,
                    self.aliases + other.aliases, self.cost + other.cost)


class _Pass:
    """One walk over a document: each selection set once, each fragment once."""

    def __init__(self, document: DocumentNode, schema: GraphQLSchema, variables: Any,
                 limits: Limits):
        self.schema, self.limits = schema, limits
        self.fragments = {d.name.value: d for d in document.definitions
                          if isinstance(d, FragmentDefinitionNode)}
        self.operations = [d for d in document.definitions
                           if isinstance(d, OperationDefinitionNode)]
        self.variables = _int_variables(self.operations, variables)
        self.sizes: dict[str, Size] = {}  # fragment -> its size
        self.open: set[str] = set()  # fragments being measured (a cycle spreads one again)
        self.spreads = 0
        self.read_variables = False  # a page size came from a variable

    def run(self) -> None:
        limits = self.limits
        if len(self.fragments) > limits.fragments:
            raise TooComplex(f"the document defines {len(self.fragments)} fragments; the limit "
                             f"is {limits.fragments} (GRAPHQL_MAX_FRAGMENTS)")
        total = Size()
        for operation in self.operations:
            root = self.schema.get_root_type(operation.operation)
            total += self.selections(operation.selection_set, root)
            self.check(total)
        for name in self.fragments:  # unused ones too: their spreads count
            self.fragment(name)

    def check(self, size: Size) -> None:
        limits = self.limits
        if self.spreads > limits.fragments:
            raise TooComplex(f"the document has more than {limits.fragments} fragment spreads "
                             "(GRAPHQL_MAX_FRAGMENTS)")
        if size.height > limits.depth:
            raise TooComplex(f"it is {size.height} levels deep; the limit is {limits.depth} "
                             "(GRAPHQL_MAX_DEPTH)")
        if size.aliases > limits.aliases:
            raise TooComplex(f"{size.aliases} aliases found; the limit is {limits.aliases} "
                             "(GRAPHQL_MAX_ALIASES)")
        if size.fields > limits.fields:
            raise TooComplex(f"it has {size.fields} fields selected, fragments expanded; the "
                             f"limit is {limits.fields} (GRAPHQL_MAX_FIELDS)")
        if size.cost > limits.cost:
            raise TooComplex(f"its cost is {size.cost} (fields times list sizes); the limit is "
                             f"{limits.cost} (GRAPHQL_MAX_COST)")

    def selections(self, selection_set: SelectionSetNode | None, parent) -> Size:
        total = Size()
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                total += self.field(selection, parent)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                kind = self.schema.get_type(condition.name.value) if condition else parent
                total += self.selections(selection.selection_set, kind)
            elif isinstance(selection, FragmentSpreadNode):
                self.spreads += 1
                total += self.fragment(selection.name.value)
            self.check(total)  # over already: no need to look further
        return total

    def field(self, node: FieldNode, parent) -> Size:
        composite = is_object_type(parent) or is_interface_type(parent)
        definition = parent.fields.get(node.name.value) if composite else None
        kind = get_named_type(definition.type) if definition else None
        inner = self.selections(node.selection_set, kind) if node.selection_set else Size()
        nodes = self.page_size(node, definition)
        cost = 1 + (inner.cost if nodes is None else nodes * (NODE_COST + inner.cost))
        height = inner.height + 1 if node.selection_set else 0
        return Size(height, inner.fields + 1, inner.aliases + (node.alias is not None), cost)

    def fragment(self, name: str) -> Size:
        if name in self.sizes:
            return self.sizes[name]
        definition = self.fragments.get(name)
        if definition is None or name in self.open:
            return Size()  # unknown fragments and cycles are the validation rules' errors
        self.open.add(name)
        kind = self.schema.get_type(definition.type_condition.name.value)
        self.sizes[name] = self.selections(definition.selection_set, kind)
        self.open.discard(name)
        return self.sizes[name]

    def page_size(self, node: FieldNode, definition) -> int | None:
        """How many nodes a connection field returns (its `first`, at most MAX_PAGE, as
        the resolvers refuse more); None for other fields."""
        argument = definition.args.get("first") if definition else None
        if argument is None:
            return None
        given = next((a.value for a in node.arguments or () if a.name.value == "first"), None)
        if isinstance(given, IntValueNode):
            value = _int(given.value)
        elif isinstance(given, VariableNode) and given.name.value in self.variables:
            self.read_variables = True
            value = self.variables[given.name.value]
        else:  # absent, null, or not an integer (refused by validation later)
            self.read_variables |= isinstance(given, VariableNode)
            value = argument.default_value
        return min(max(value, 0), MAX_PAGE) if isinstance(value, int) else MAX_PAGE


def _int_variables(operations: list[OperationDefinitionNode], values: Any) -> dict[str, int]:
    """Integer variables: the request's values, or the defaults in the document."""
    found: dict[str, int] = {}
    for operation in operations:
        for definition in operation.variable_definitions or ():
            default = definition.default_value
            if isinstance(default, IntValueNode):
                name = definition.variable.name.value
                found[name] = max(found.get(name, 0), _int(default.value))
    for name, value in (values or {}).items() if isinstance(values, dict) else ():
        if isinstance(value, int) and not isinstance(value, bool):
            found[name] = value
    return found


def _int(literal: str) -> int:
    """An Int literal's value; past Python's 4300 digits, larger than any page."""
    try:
        return int(literal)
    except ValueError:
        return MAX_PAGE + 1


def measure(document: DocumentNode, schema: GraphQLSchema, variables: Any,
            limits: Limits) -> bool:
    """Raise TooComplex when the document is over a limit. Depth, aliases, fields
    and cost are summed (depth: the maximum) over the document's operations.
    Within the limits: whether the measure read any variable (else it holds for all)."""
    walk = _Pass(document, schema, variables, limits)
    try:
        walk.run()
    except RecursionError:  # a chain of fragments thousands long
        raise TooComplex("it is nested too deeply") from None
    return walk.read_variables


class BoundedOverlappingFields(OverlappingFieldsCanBeMergedRule):
    """graphql-core's rule with OVERLAP_BUDGET instead of its default budget."""

    def __init__(self, context):
        super().__init__(context)
        self.rule_context.remaining_complexity_budget = OVERLAP_BUDGET


def bounded(rules) -> tuple:
    """The rules, with the overlapping-fields rule held to OVERLAP_BUDGET."""
    return tuple(BoundedOverlappingFields if rule is OverlappingFieldsCanBeMergedRule else rule
                 for rule in rules)


def too_complex(message: str, node=None) -> GraphQLError:
    return GraphQLError(f"Query too complex: {message}.", node,
                        extensions={"code": "QUERY_TOO_COMPLEX"})


class DocumentCache:
    """Parsed documents and their validation errors, by document text: least recently
    used first out, bounded by the characters of the documents it holds."""

    def __init__(self, max_chars: int = CACHE_CHARS,
                 max_document_chars: int = MAX_CACHED_DOCUMENT_CHARS):
        self.max_chars, self.max_document_chars = max_chars, max_document_chars
        self.entries: OrderedDict[str, tuple[DocumentNode, list[GraphQLError]]] = OrderedDict()
        self.chars = 0
        # documents within the limits whatever the variables (no page size from a
        # variable): not measured again (DocumentLimits.refusal)
        self.within_limits: set[str] = set()

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, query: str) -> tuple[DocumentNode, list[GraphQLError]] | None:
        if len(query) > self.max_document_chars:
            return None  # never stored: not worth hashing
        entry = self.entries.get(query)
        if entry is not None:
            self.entries.move_to_end(query)
        return entry

    def put(self, query: str, document: DocumentNode, errors: list[GraphQLError]) -> None:
        if len(query) > self.max_document_chars or query in self.entries:
            return
        self.entries[query] = (document, errors)
        self.chars += len(query)
        while self.chars > self.max_chars:
            old, _ = self.entries.popitem(last=False)
            self.chars -= len(old)
            self.within_limits.discard(old)


class DocumentLimits(SchemaExtension):
    """Parse, measure and validate each new document in the schema's worker thread; take
    a document seen before from the cache (measured again: its cost depends on the
    variables). A document over a limit is never validated, nor cached."""

    def __init__(self, limits: Limits, cache: DocumentCache, worker: Executor):
        self.limits, self.cache, self.worker = limits, cache, worker

    async def in_worker(self, function, *args):
        # A request cancelled meanwhile (the client went away) leaves the worker to
        # finish this document: it is bounded, and nothing else waits for it.
        return await asyncio.get_running_loop().run_in_executor(self.worker, function, *args)

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context
        context.validation_rules = bounded(context.validation_rules)
        yield

    async def on_parse(self) -> AsyncIterator[None]:
        context = self.execution_context  # strawberry refuses an empty query before this
        entry = self.cache.get(context.query)
        if entry is not None:
            context.graphql_document = entry[0]
        else:  # a syntax error raises here, and ErrorCodes gives it its code
            context.graphql_document = await self.in_worker(
                partial(parse, context.query, **context.parse_options))
        yield  # strawberry does not parse again: the document is set

    async def on_validate(self) -> AsyncIterator[None]:
        context = self.execution_context
        document, schema = context.graphql_document, context.schema._schema
        entry = self.cache.get(context.query)
        if entry is not None:
            refusal = self.refusal(document, schema, context.variables, context.query)
            context.pre_execution_errors = [refusal] if refusal else entry[1]
        else:
            errors, within_limits = await self.in_worker(
                self.validate, document, schema, context.variables, context.validation_rules)
            context.pre_execution_errors = errors
            if within_limits:
                self.cache.put(context.query, document, errors)
        yield  # strawberry does not validate again: the errors are set

    def refusal(self, document, schema, variables, query: str | None = None
                ) -> GraphQLError | None:
        """The error of a document over a limit, or None. `query`: the text of a
        cached document, measured once when its size does not depend on variables."""
        cache = self.cache
        if query is not None and query in cache.within_limits:
            return None
        try:
            read_variables = measure(document, schema, variables, self.limits)
        except TooComplex as exc:
            return too_complex(str(exc))
        if query is not None and not read_variables and query in cache.entries:
            cache.within_limits.add(query)
        return None

    def validate(self, document, schema, variables, rules) -> tuple[list[GraphQLError], bool]:
        """The pass, then (within the limits only) the rules: (errors, within the limits)."""
        refusal = self.refusal(document, schema, variables)
        if refusal is not None:
            return [refusal], False
        errors = validate_document(schema, document, rules)
        for i, error in enumerate(errors):
            if isinstance(error, ValidationAbortedError) and error.message == "Validation aborted.":
                errors[i] = too_complex("validating it takes too long (many fields of the "
                                        "same name to compare)")
            elif isinstance(error.original_error, ValueError):
                # a literal its type cannot read (an Int of more than Python's 4300
                # digits): the client's mistake, not an unexpected error to mask
                error.original_error, error.extensions = None, {
                    "code": "GRAPHQL_VALIDATION_FAILED"}
        return errors, True


def schema_extensions(settings: Settings) -> list:
    """Every extension of the schema, as factories, in the order they must run."""
    suggestions = settings.graphql_introspection  # "Did you mean" only with introspection on
    limits, cache = Limits.of(settings), DocumentCache()
    # one thread: documents are pure Python, so more threads would only take turns on
    # the GIL; new documents queue for it, cached ones do not
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="documents")
    extensions = [
        lambda: ErrorCodes(suggestions=suggestions),
        lambda: MaxTokensLimiter(max_token_count=settings.graphql_max_tokens),
        lambda: DocumentLimits(limits, cache, worker),
    ]
    if not settings.graphql_introspection:
        extensions.append(DisableIntrospection)
    return extensions
