"""Limits on GraphQL documents, and the schema's extension list that applies them.

Why not strawberry's `QueryDepthLimiter` alone: it skips introspection fields
(`__schema { types { fields { type { fields ... } } } }` is unbounded by it),
raises KeyError on a spread of an unknown fragment (which would surface as an
internal error), and walks fragments once per spread. `DocumentLimits` counts
every field, introspection included, computes each fragment once, and also
bounds breadth: the number of fields selected with fragments expanded.

The remaining limits are strawberry's and graphql-core's own: the token
count (parser option), aliases, graphql-core's `MaxIntrospectionDepthRule`
(the nested `fields`/`ofType` lists of introspection), and the parser's own
nesting guard. Every one of them answers QUERY_TOO_COMPLEX (see `errors`).

Extensions are given to strawberry as factories (one instance per request);
the validation rules are built once per schema, so `ValidationCache`, whose
key includes the rule classes, keeps hitting.
"""

from __future__ import annotations

from graphql import (
    SKIP,
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
)
from graphql.validation import MaxIntrospectionDepthRule
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaxTokensLimiter,
    ParserCache,
    ValidationCache,
)
from strawberry.extensions.max_aliases import create_validator as max_aliases_rule

from engine.settings import Settings

from ..errors import ErrorCodes

# Breadth: fields selected by one document, fragments expanded. GraphiQL's
# introspection query selects about 250. Not yet a setting of its own.
DEFAULT_MAX_FIELDS = 2000
CACHE_SIZE = 1000


def document_limits(max_depth: int, max_fields: int) -> type[ValidationRule]:
    """A validation rule: depth at most `max_depth` (top-level fields are depth 0,
    as in graphql-depth-limit and strawberry) and at most `max_fields` fields."""

    class DocumentLimits(ValidationRule):
        def __init__(self, context):
            super().__init__(context)
            self.sizes: dict[str, tuple[int, int]] = {}  # fragment -> (height, fields)
            self.open: set[str] = set()

        def enter_operation_definition(self, node: OperationDefinitionNode, *_):
            try:
                height, fields = self.measure(node.selection_set)
            except RecursionError:  # a chain of fragments thousands long
                height, fields = max_depth + 1, max_fields + 1
            name = node.name.value if node.name else "anonymous"
            if height > max_depth:
                self.report(f"Query too complex: '{name}' is {height} levels deep; "
                            f"the limit is {max_depth} (GRAPHQL_MAX_DEPTH).", node)
            elif fields > max_fields:
                self.report(f"Query too complex: '{name}' has {fields} fields selected; "
                            f"the limit is {max_fields}.", node)
            return SKIP

        def report(self, message: str, node) -> None:
            self.report_error(GraphQLError(message, node,
                                           extensions={"code": "QUERY_TOO_COMPLEX"}))

        def measure(self, selection_set: SelectionSetNode | None) -> tuple[int, int]:
            """(height, fields) of a selection set: height 0 for leaves only."""
            height = fields = 0
            for selection in selection_set.selections if selection_set else ():
                if isinstance(selection, FieldNode):
                    fields += 1
                    if selection.selection_set:
                        h, f = self.measure(selection.selection_set)
                        height, fields = max(height, h + 1), fields + f
                elif isinstance(selection, InlineFragmentNode):
                    h, f = self.measure(selection.selection_set)
                    height, fields = max(height, h), fields + f
                elif isinstance(selection, FragmentSpreadNode):
                    h, f = self.fragment(selection.name.value)
                    height, fields = max(height, h), fields + f
                if height > max_depth or fields > max_fields:
                    break  # already over: no need to look further
            return height, fields

        def fragment(self, name: str) -> tuple[int, int]:
            if name in self.sizes:
                return self.sizes[name]
            definition = self.context.get_fragment(name)
            if definition is None or name in self.open:
                return 0, 0  # unknown fragments and cycles are other rules' errors
            self.open.add(name)
            self.sizes[name] = self.measure(definition.selection_set)
            self.open.discard(name)
            return self.sizes[name]

    return DocumentLimits


def schema_extensions(settings: Settings) -> list:
    """Every extension of the schema, as factories, in the order they must run."""
    suggestions = settings.graphql_introspection  # "Did you mean" only with introspection on
    rules = [
        document_limits(settings.graphql_max_depth,
                        getattr(settings, "graphql_max_fields", DEFAULT_MAX_FIELDS)),
        max_aliases_rule(settings.graphql_max_aliases),
        MaxIntrospectionDepthRule,
    ]
    extensions = [
        lambda: ErrorCodes(suggestions=suggestions),
        lambda: MaxTokensLimiter(max_token_count=settings.graphql_max_tokens),
        lambda: ParserCache(maxsize=CACHE_SIZE),
        lambda: AddValidationRules(rules),
        lambda: ValidationCache(maxsize=CACHE_SIZE),
    ]
    if not settings.graphql_introspection:
        extensions.append(DisableIntrospection)
    return extensions
