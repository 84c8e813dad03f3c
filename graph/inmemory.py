"""Keeping the in-memory MongoDB (mongomock) fast for the job history.

mongomock answers every query by testing every document, copies every match
and sorts them all before it applies the limit: `jobs(first: 20)` over 100,000
archived jobs took seconds, and as mongomock-motor runs on the event loop,
the archiver and an in-process worker stalled with it. Three narrow patches:

- each collection keeps its `_id`s in sorted order (a list kept with bisect,
  updated where mongomock stores or deletes a document), and each field named
  in `install(ordered_by=...)` a sorted list of `_id`s per value. A query
  sorted by `_id` alone walks those in order and stops at its limit.
- a cursor with a limit takes only `skip + limit` documents from mongomock.
- an update of one document by `_id` that only `$set`s top-level fields (the
  archiver's upsert) is applied directly, not by mongomock's per-field routine.

- the archiver's batch of version-guarded upserts (`save_job_snapshots`)
  is applied straight to the collection's documents (`upsert_versions`),
  as the patched update above applies each, without pymongo's `UpdateOne`
  objects and mongomock's bulk-write machinery around them: those cost
  about as much as the writes (bench/history_writes.py).

Every document walked still passes mongomock's own `filter_applies`, so a
query answers what mongomock would; only the order of work changes. A field
indexed this way must never change in place after insert (the jobs' `user_id`
never does): the per-value lists follow inserts, replacements and deletes.
tests/test_history_store.py checks the answers against a plain scan.
"""

from __future__ import annotations

import bisect
import itertools
from datetime import datetime

_ORDER = "_sorted_ids"  # attribute of a mongomock CollectionStore: its _SortedIds


class _SortedIds:
    """A collection's `_id`s in order, overall and per value of some fields."""

    def __init__(self, fields: tuple[str, ...]):
        self.fields = fields
        self.ids: list | None = []  # None: keys that do not compare (mixed types)
        self.by_value: dict[str, dict] = {f: {} for f in fields}
        self.source = None  # the documents dict indexed (a drop replaces it)

    def added(self, key, doc) -> None:
        if self.ids is None:
            return
        try:
            _insort(self.ids, key)
            for field in self.fields:
                value = doc.get(field)
                if isinstance(value, str):
                    _insort(self.by_value[field].setdefault(value, []), key)
        except TypeError:  # e.g. ObjectId beside str: leave this collection to mongomock
            self.ids = None

    def removed(self, key, doc) -> None:
        if self.ids is None:
            return
        _remove(self.ids, key)
        for field in self.fields:
            ids = self.by_value[field].get(doc.get(field))
            if ids is not None:
                _remove(ids, key)

    def candidates(self, spec: dict) -> list | None:
        """The sorted `_id`s a query must look at: one value's, or all."""
        if self.ids is None:
            return None
        for field in self.fields:
            value = _equality(spec, field)
            if isinstance(value, str):
                return self.by_value[field].get(value, [])
        return self.ids


def _insort(ids: list, key) -> None:
    if not ids or ids[-1] < key:  # the common case: ObjectId-like keys arrive in order
        ids.append(key)
    else:
        i = bisect.bisect_left(ids, key)
        if i == len(ids) or ids[i] != key:
            ids.insert(i, key)


def _remove(ids: list, key) -> None:
    i = bisect.bisect_left(ids, key)
    if i < len(ids) and ids[i] == key:
        del ids[i]


def _equality(spec: dict, field: str):
    """The value `spec` requires `field` to equal (top level or in a top-level $and)."""
    if field in spec:
        return spec[field]
    for part in spec.get("$and", ()):
        if isinstance(part, dict) and field in part:
            return part[field]
    return None


def _in_range(ids: list, bounds, direction: int):
    """`ids` in the query's direction, from its `_id` bound on (a page `after` a cursor)."""
    lo, hi = 0, len(ids)
    if isinstance(bounds, dict):
        try:
            if "$lt" in bounds:
                hi = bisect.bisect_left(ids, bounds["$lt"])
            elif "$lte" in bounds:
                hi = bisect.bisect_right(ids, bounds["$lte"])
            if "$gt" in bounds:
                lo = bisect.bisect_right(ids, bounds["$gt"])
            elif "$gte" in bounds:
                lo = bisect.bisect_left(ids, bounds["$gte"])
        except TypeError:  # a bound of another type: walk all, the filter decides
            lo, hi = 0, len(ids)
    if direction < 0:
        return (ids[i] for i in range(hi - 1, lo - 1, -1))
    return (ids[i] for i in range(lo, hi))


_SCALARS = (str, int, float, type(None))  # stored as they are (bool is an int)


def _stored_value(value, patch):
    """One value as MongoDB keeps it (see _as_stored)."""
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, _SCALARS):
        return value
    if type(value) is datetime:  # as mongomock's patch does: naive UTC, milliseconds
        ms = value.microsecond // 1000 * 1000
        if value.tzinfo is not None:
            return (value - value.utcoffset()).replace(tzinfo=None, microsecond=ms)
        return value.replace(microsecond=ms)
    return patch(value)


def _as_stored(fields: dict, patch) -> dict:
    """The values as MongoDB would keep them: a str subclass (a str Enum such as
    JobStatus) as its plain string, as BSON encodes it, and datetimes as mongomock
    keeps them (naive UTC, milliseconds). Plain values also keep the document out
    of the cycle collector's way: a dict of atomic values is not tracked, so a
    long history does not lengthen every full collection (pauses of 300 ms at
    100,000 jobs when each document held an Enum member)."""
    return {k: _stored_value(v, patch) for k, v in fields.items()}


def _plain_set(document):
    """The fields of an update that is `{"$set": {...}}` on top-level names alone."""
    if not isinstance(document, dict) or list(document) != ["$set"]:
        return None
    fields = document["$set"]
    if not isinstance(fields, dict) or not fields:
        return None
    names = tuple(fields)
    if names not in _PLAIN_NAMES:  # the archiver sends the same names each time
        if any(not isinstance(k, str) or k.startswith("$") or "." in k for k in names):
            return None
        if len(_PLAIN_NAMES) < 64:
            _PLAIN_NAMES.add(names)
    return fields


_PLAIN_NAMES: set[tuple] = set()  # tuples of top-level field names found plain


def _unique_beyond_id(store) -> bool:
    """Unique indexes other than `_id`'s: mongomock checks those on write, keep it so.
    (Remembered per collection until its indexes change.)"""
    names = tuple(store.indexes)
    known = store.__dict__.get("_unique_beyond_id")
    if known is None or known[0] != names:
        known = (names, any(ix.get("unique") and [k for k, _ in ix.get("key", ())] != ["_id"]
                            for ix in store.indexes.values()))
        store.__dict__["_unique_beyond_id"] = known
    return known[1]


def _applies(spec: dict, doc: dict, filter_applies) -> bool:
    """filter_applies, with the archiver's version guard `{_id, version: {$lt: n}}`
    on a stored int version answered directly."""
    if len(spec) == 2 and "version" in spec and "_id" in spec:
        bound, have = spec["version"], doc.get("version")
        if (type(bound) is dict and len(bound) == 1 and type(bound.get("$lt")) is int
                and type(have) is int):
            return doc.get("_id") == spec["_id"] and have < bound["$lt"]
    return filter_applies(spec, doc)


def _merge(store, key, old: dict, fields: dict) -> bool:
    """`$set` of top-level `fields` on the stored document `old`; whether it changed
    (a write that changes nothing is not made)."""
    new = {**old, **fields}
    if new == old:
        return False
    store[key] = new
    return True


def _result(collection, matched: int, modified: int, upserted, existing: bool) -> dict:
    """What mongomock's Collection._update returns."""
    return {"connectionId": collection.database.client._id, "err": None, "n": matched,
            "nModified": modified if existing else 0, "ok": 1, "upserted": upserted,
            "updatedExisting": existing}


def _id_sort(sort) -> int | None:
    """1 or -1 when a query sorts by `_id` alone, else None."""
    if not sort:
        return None
    items = list(sort.items()) if isinstance(sort, dict) else list(sort)
    if len(items) == 1 and items[0][0] == "_id":
        return -1 if items[0][1] < 0 else 1
    return None


def sync_collection(collection):
    """The mongomock collection behind a mongomock-motor one once `install` has
    patched mongomock; None for anything else (a real MongoDB's collection)."""
    import mongomock.store

    if not getattr(mongomock.store.CollectionStore, "_patched_for_order", False):
        return None
    inner = getattr(collection, "_AsyncMongoMockCollection__collection", None)
    return inner if inner is not None and hasattr(inner, "_store") else None


def upsert_versions(collection, rows) -> bool:
    """Upsert each (key, version, fields): `{"_id": key, "version": {"$lt": version}}`,
    `{"$set": fields}`, `upsert=True`, as mongomock (with the patched update) does
    for the bulk write of those, duplicate-key refusals ignored: a document at the
    same or a newer version is left as it is. False, having done nothing, for a
    collection that needs mongomock's own way (TTL or unique indexes beyond `_id`)."""
    from bson import BSON, ObjectId
    from mongomock import helpers
    from mongomock.filtering import filter_applies

    store = collection._store
    if store._ttl_indexes or _unique_beyond_id(store) \
            or not all(isinstance(key, (str, ObjectId)) for key, _, _ in rows):
        return False
    documents = store._documents
    patch = helpers.patch_datetime_awareness_in_document
    for key, version, fields in rows:
        fields = _as_stored(fields, patch)
        if fields.get("_id", key) != key:
            raise ValueError("a record's fields name another _id")
        old = documents.get(key)
        if old is None:
            new = {"_id": key, **fields}
            BSON.encode(new)  # what mongomock's insert checks: values MongoDB can store
            store[key] = new
            continue
        spec = {"_id": key, "version": {"$lt": version}}
        if _applies(spec, old, filter_applies):
            _merge(store, key, old, fields)
        # else the stored version is the same or newer: the upsert's insert would hit
        # the _id (a duplicate key, which the archiver ignores)
    return True


def install(ordered_by: dict[str, tuple[str, ...]]) -> None:
    """Patch mongomock once; `ordered_by` names, per collection, the fields that
    get a sorted list of `_id`s per value (for example {"jobs": ("user_id",)})."""
    import mongomock.collection
    import mongomock.store
    from bson import BSON, ObjectId
    from mongomock import DuplicateKeyError, helpers
    from mongomock.filtering import filter_applies

    store_cls = mongomock.store.CollectionStore
    if getattr(store_cls, "_patched_for_order", False):
        return

    def order_of(store) -> _SortedIds:
        order = store.__dict__.get(_ORDER)
        if order is None or order.source is not store._documents:
            # first use, or the collection was dropped: index what it holds now
            order = _SortedIds(tuple(ordered_by.get(store.name, ())))
            for key, doc in store._documents.items():
                order.added(key, doc)
            order.source = store._documents
            store.__dict__[_ORDER] = order
        return order

    set_item, del_item = store_cls.__setitem__, store_cls.__delitem__

    def setitem(self, key, val):
        old = self._documents.get(key)
        set_item(self, key, val)
        order = order_of(self)
        if old is None:
            order.added(key, val)
        elif any(old.get(f) != val.get(f) for f in order.fields):
            # an indexed field changed: move it (an update in place keeps its
            # place: removing and re-inserting moved half of each list a write)
            order.removed(key, old)
            order.added(key, val)

    def delitem(self, key):
        old = self._documents.get(key)
        del_item(self, key)
        if old is not None:
            order_of(self).removed(key, old)

    get_dataset = mongomock.collection.Collection._get_dataset

    def get_dataset_in_order(self, spec, sort, fields, as_class):
        direction = _id_sort(sort)
        store = self._store
        if direction is None or store._ttl_indexes:
            yield from get_dataset(self, spec, sort, fields, as_class)
            return
        ids = order_of(store).candidates(spec)
        if ids is None:
            yield from get_dataset(self, spec, sort, fields, as_class)
            return
        # mongomock-motor runs each call to its end on the event loop: no write
        # lands while this walks
        documents = store._documents
        for key in _in_range(ids, _equality(spec, "_id"), direction):
            doc = documents.get(key)
            if doc is not None and filter_applies(spec, doc):
                yield self._copy_only_fields(doc, fields, as_class)

    compute_results = mongomock.collection.Cursor._compute_results

    def compute_results_up_to_limit(self, with_limit_and_skip=False):
        """With a limit, take skip + limit documents, not all of them."""
        if not (with_limit_and_skip and self._limit and self._limit > 0):
            return compute_results(self, with_limit_and_skip)
        wanted = (self._factory, self._skip, self._limit)
        if getattr(self, "_limited_for", None) != wanted:
            docs = itertools.islice(self._factory(), self._skip + self._limit)
            if self.collection.codec_options.tz_aware:
                from mongomock import helpers

                docs = (helpers.make_datetime_timezone_aware_in_document(d) for d in docs)
            self._limited = list(docs)[self._skip:]
            self._limited_for = wanted
        return self._limited

    update = mongomock.collection.Collection._update

    def update_by_id(self, spec, document, upsert=False, manipulate=False, multi=False,
                     check_keys=False, **kwargs):
        """An update of one document named by `_id` that only `$set`s top-level
        fields (each archiver upsert): the same outcome without mongomock's
        per-field machinery. Anything else, or a case in doubt, goes to mongomock."""
        key = spec.get("_id") if isinstance(spec, dict) else None
        fields = _plain_set(document)
        if (fields is None or multi or kwargs.get("session") or kwargs.get("hint")
                or kwargs.get("array_filters") or not isinstance(key, (str, ObjectId))
                or self._store._ttl_indexes or _unique_beyond_id(self._store)):
            return update(self, spec, document, upsert, manipulate, multi, check_keys, **kwargs)
        fields = _as_stored(fields, helpers.patch_datetime_awareness_in_document)
        if fields.get("_id", key) != key:
            return update(self, spec, document, upsert, manipulate, multi, check_keys, **kwargs)
        store = self._store
        old = store._documents.get(key)
        if old is not None and _applies(spec, old, filter_applies):
            return _result(self, 1, int(_merge(store, key, old, fields)), None, True)
        if old is not None and upsert:  # no match, and the upsert's insert hits the _id:
            # what mongomock's _insert raises (a version-guarded snapshot that is not newer)
            raise DuplicateKeyError("E11000 Duplicate Key Error", 11000)
        if old is not None or not upsert:
            return update(self, spec, document, upsert, manipulate, multi, check_keys, **kwargs)
        new = {k: v for k, v in spec.items() if not k.startswith("$")
               and not (isinstance(v, dict) and any(str(o).startswith("$") for o in v))}
        new = _as_stored(new, helpers.patch_datetime_awareness_in_document)
        new.update(fields)
        new["_id"] = key
        BSON.encode(new)  # what mongomock's insert checks: values MongoDB can store
        store[key] = new
        return _result(self, 1, 1, key, False)

    store_cls.__setitem__ = setitem
    store_cls.__delitem__ = delitem
    mongomock.collection.Collection._get_dataset = get_dataset_in_order
    mongomock.collection.Cursor._compute_results = compute_results_up_to_limit
    mongomock.collection.Collection._update = update_by_id
    store_cls._patched_for_order = True

