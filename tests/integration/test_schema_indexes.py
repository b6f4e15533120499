"""Every index earns its writes: none is a leading prefix of another plain index on the same table.

Each index costs a write per inserted row, and the reconciler writes a ledger row per key (issue 13). A
plain b-tree whose columns lead another plain b-tree of the same table serves no query the longer one
cannot (a range or equality on the leading columns reads the longer index just as well), so it is only
cost. Unique and partial indexes are left out: they say something (a constraint, a subset) the longer
index does not. The schema is the migrated test database's, so a new migration is held to it too.
"""

from __future__ import annotations

import asyncpg

# Plain (non-unique, non-partial, no expressions) b-tree indexes, as column lists in order.
PLAIN_INDEXES = """
SELECT c.relname AS table_name, i.relname AS index_name,
       array_agg(a.attname ORDER BY k.ordinality) AS columns
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class c ON c.oid = x.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_am am ON am.oid = i.relam
CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ordinality)
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
WHERE n.nspname = current_schema() AND am.amname = 'btree'
  AND NOT x.indisunique AND x.indpred IS NULL AND x.indexprs IS NULL
GROUP BY c.relname, i.relname
"""
# Every b-tree of the schema that is not partial (unique ones included: they can make a plain one redundant).
ALL_INDEXES = PLAIN_INDEXES.replace("AND NOT x.indisunique ", "")


async def test_no_plain_index_is_a_leading_prefix_of_another(db: asyncpg.Connection) -> None:
    plain = await db.fetch(PLAIN_INDEXES)
    every = await db.fetch(ALL_INDEXES)
    redundant = []
    for short in plain:
        for long in every:
            if short["index_name"] == long["index_name"] or short["table_name"] != long["table_name"]:
                continue
            n = len(short["columns"])
            if len(long["columns"]) >= n and list(long["columns"][:n]) == list(short["columns"]):
                redundant.append(f"{short['index_name']} {list(short['columns'])} leads {long['index_name']}")
    assert plain, "the query found no indexes at all"
    assert redundant == []
