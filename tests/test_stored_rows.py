"""Encoded rows of stored items, remembered by their stored JSON (stored_rows.py)."""

import numpy as np
import orjson

from app.config import config_from_text
from app.item_models.stored_rows import StoredItems, StoredRows

TOML = """
[experiments.jobs]
policy = "linucb"
arms = "dynamic"
model = "shared"
features = {{ numeric = ["hour"] }}

[experiments.jobs.item_features]
numeric = ["pay"]
categorical = {{ category = ["kitchen", "driver"] }}
{extra}
"""
NAMES = frozenset({"pay", "category"})


def jobs(extra: str = ""):
    return config_from_text(TOML.format(extra=extra), "test").get("jobs")


def stored(*features: dict) -> StoredItems:
    return StoredItems(tuple(orjson.dumps(f) for f in features), NAMES)


def test_rows_equal_what_encoding_the_features_gives_and_are_remembered():
    exp = jobs()
    rows = StoredRows()
    items = stored({"pay": 14.5, "category": "kitchen"}, {"pay": 11, "category": "driver"}, {})
    first = rows.encode(exp, items)
    assert np.array_equal(first, exp.item_features.encode_many(list(items)))
    assert len(rows) == 3
    # the same stored values again (new bytes objects, in another order): no new entries
    again = rows.encode(exp, stored({}, {"pay": 14.5, "category": "kitchen"}))
    assert np.array_equal(again, first[[2, 0]])
    assert len(rows) == 3


def test_a_rewritten_item_or_a_new_config_version_is_encoded_afresh():
    exp = jobs()
    rows = StoredRows()
    rows.encode(exp, stored({"pay": 1.0}))
    changed = rows.encode(exp, stored({"pay": 2.0}))
    assert np.array_equal(changed, exp.item_features.encode_many([{"pay": 2.0}]))
    assert len(rows) == 2
    # another version of the config (a category added): its own rows
    wider = config_from_text(
        TOML.format(extra="").replace('"driver"]', '"driver", "cook"]'), "test"
    ).get("jobs")
    assert wider.version != exp.version
    got = rows.encode(wider, stored({"pay": 1.0, "category": "cook"}))
    assert np.array_equal(got, wider.item_features.encode_many([{"pay": 1.0, "category": "cook"}]))
    assert len(rows) == 3


def test_only_the_declared_features_are_parsed_back():
    items = stored({"pay": 3.0, "colour": "red"}, {"pay": 4.0})
    assert items[0] == {"pay": 3.0}
    assert list(items) == [{"pay": 3.0}, {"pay": 4.0}]
    assert items[1:] == [{"pay": 4.0}]


def test_a_value_that_cannot_be_encoded_is_left_to_the_caller():
    exp = jobs()
    rows = StoredRows()
    assert rows.encode(exp, stored({"pay": 1.0}, {"pay": "lots"})) is None
    assert len(rows) == 0  # nothing of a failed request is kept


def test_the_bound_holds_and_the_newest_rows_stay():
    exp = jobs()
    rows = StoredRows(max_rows=10)
    for start in range(0, 40, 4):
        rows.encode(exp, stored(*({"pay": float(p)} for p in range(start, start + 4))))
        assert len(rows) <= 10
    held = len(rows)
    latest = rows.encode(exp, stored({"pay": 39.0}))  # among the newest: still held
    assert np.array_equal(latest, exp.item_features.encode_many([{"pay": 39.0}]))
    assert len(rows) == held
