"""Documents seen before, executed by graphql-core without strawberry's per-operation hooks.

strawberry's `Schema.execute` runs every schema extension's hooks around each
operation (operation, parsing, validation, execution: an execution context,
context managers on an exit stack, a middleware manager), before and after
graphql-core executes the document. For a small mutation that machinery cost
about a third of the API process's CPU per request (issue 17, bench/RESULTS.md).

A document that `DocumentLimits`' cache holds without errors was parsed,
measured and validated by those hooks already. For such a document this runs
only what the hooks still do per operation, in their order:

- DocumentLimits: measure it again (its cost depends on the variables); over
  a limit, the standard path answers (and counts) the refusal;
- graphql-core's `execute`, called as strawberry calls it;
- ErrorCodes: every error gets its code, unexpected ones are masked;
- OperationMetrics: `graphql_operations_total` counts the operation.

A document of plain `enqueue` fields alone skips graphql-core's execution too
(graph/http/compiled.py). The answer is graphql-core's own result, so it is
the same bytes as by the standard path (tests/test_prepared.py and
tests/test_compiled.py compare them). Anything this does not know (a new
document, an invalid one, several operations without a name, an operation
the method does not allow, operation extensions) returns None, and
strawberry runs the request as before.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from graphql import DocumentNode, GraphQLError, OperationDefinitionNode
from graphql import ExecutionResult as CoreResult
from strawberry.extensions import DisableIntrospection, MaxTokensLimiter
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from ..adapters import extension_of, graphql_schema, plain_execution
from ..errors import ErrorCodes, fix_all
from . import metrics
from .batching import enqueue_items, store_together
from .compiled import EnqueueFields
from .completion import completion_class
from .grouping import EnqueueGroups
from .limits import DocumentLimits

# the schema's extensions whose per-operation work is done here (or was done once
# for the cached document: parsing, the token limit, validation rules)
HOOKS_DONE_HERE = (metrics.OperationMetrics, ErrorCodes, MaxTokensLimiter, DocumentLimits,
                   DisableIntrospection)


class PreparedDocuments:
    """The fast path of one schema; `execute` answers None when it does not apply."""

    def __init__(self, schema):
        self.schema = graphql_schema(schema)
        self.limits = extension_of(schema, DocumentLimits)
        codes = extension_of(schema, ErrorCodes)
        self.suggestions = codes.suggestions if codes else True
        self.groups = EnqueueGroups()
        self.compiled = EnqueueFields(schema, self.schema)
        # None when the schema has something per field (a `resolve` hook) or per
        # operation (an extension that is not ours) that only strawberry runs
        self.executor = plain_execution(schema, known=HOOKS_DONE_HERE)
        if self.executor is not None:
            execute, kwargs = self.executor
            if "executor_class" in kwargs:  # and plain objects completed by compiled steps
                kwargs = {**kwargs, "executor_class": completion_class(
                    schema, kwargs["executor_class"])}
            self.executor = execute, kwargs
        if self.limits is None or codes is None:
            self.executor = None

    def operation(self, query: Any, operation_name: Any
                  ) -> tuple[DocumentNode, OperationDefinitionNode, str | None] | None:
        """The cached, valid document and the operation strawberry would run (its
        name as strawberry passes it to graphql-core), or None."""
        if not isinstance(query, str):
            return None
        entry = self.limits.cache.get(query)
        if entry is None or entry[1]:
            return None  # never seen, or it has errors: the standard path answers
        document = entry[0]
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if operation_name is None:
            # strawberry takes the first operation's name when none is given
            operation_name = operations[0].name.value if operations and operations[0].name \
                else None
        if operation_name is None:
            chosen = operations if len(operations) == 1 else []
        else:
            chosen = [o for o in operations if o.name and o.name.value == operation_name][:1]
        if not chosen:
            return None  # strawberry's refusal (no such operation) is the standard path's
        return document, chosen[0], operation_name

    async def execute(self, query: Any, variables: Any, operation_name: Any, context: Any,
                      root_value: Any, allowed: Collection[OperationType],
                      extensions: Any = None) -> ExecutionResult | None:
        if self.executor is None or extensions:
            return None
        found = self.operation(query, operation_name)
        if found is None:
            return None
        document, operation, name = found
        kind = OperationType(operation.operation.value)
        if kind not in allowed or kind == OperationType.SUBSCRIPTION:
            return None
        if self.limits.refusal(document, self.schema, variables, query) is not None:
            return None
        execute, kwargs = self.executor
        items = enqueue_items(self.schema, operation, variables)
        plans = None
        if items:
            plans = self.compiled.plan(operation)
            if plans is not None and not self.compiled.variables_fit(operation, variables):
                plans = None
        data = None
        if items and len(items) > 1:  # aliased enqueues: one script call stores them all
            stored = await store_together(context, items)
            if stored is not None and plans is not None:
                data = self.compiled.answer_stored(plans, stored)
        elif items:  # one: with the other requests of its user at this moment
            self.groups.join(context, items[0])
            if plans is not None:
                data = await self.compiled.answer(plans[0], context, items[0])
        if data is not None:  # else graphql-core answers, nothing done twice
            return self._counted(ExecutionResult(data=data, errors=None, extensions={}),
                                 name, kind)
        try:
            result = execute(self.schema, document, root_value=root_value,
                             variable_values=variables, operation_name=name,
                             context_value=context, **kwargs)
            if not isinstance(result, CoreResult):
                result = await result
            errors = result.errors
        except RecursionError as exc:  # as ErrorCodes turns it, around strawberry's execution
            error = GraphQLError("The document is nested too deeply: too complex.",
                                 extensions={"code": "QUERY_TOO_COMPLEX"})
            error.__cause__ = exc
            result, errors = CoreResult(None, [error]), [error]
        except Exception as exc:  # strawberry's answer to what escapes graphql-core: the
            error = GraphQLError(str(exc), original_error=exc)  # view masks it, uncounted
            return ExecutionResult(data=None, errors=[error], extensions={})
        fix_all(errors, self.suggestions)
        return self._counted(ExecutionResult(data=result.data, errors=errors, extensions={}),
                             name, kind)

    @staticmethod
    def _counted(result: ExecutionResult, name: str | None, kind: OperationType
                 ) -> ExecutionResult:
        """OperationMetrics' count of the operation, by the code of its first error."""
        code = "OK"
        if result.errors:
            code = (result.errors[0].extensions or {}).get("code", "INTERNAL_SERVER_ERROR")
        metrics.OPERATIONS.labels(metrics.OPERATION_NAMES.label(name, True), kind.value,
                                  code).inc()
        return result
