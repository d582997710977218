"""Feature encoding of request contexts."""

import math

import numpy as np
import pytest

from bandits import FeatureError, FeatureSpec


@pytest.fixture
def spec():
    return FeatureSpec.from_mapping(
        numeric=["hour", "tenure_days"],
        categorical={"city": ["berlin", "hamburg", "munich"], "device": ["ios", "android"]},
    )


def test_columns_name_the_vector_layout(spec):
    assert spec.columns == [
        "intercept",
        "hour",
        "tenure_days",
        "city=berlin",
        "city=hamburg",
        "city=munich",
        "device=ios",
        "device=android",
    ]
    assert spec.dim == 8


def test_encode_puts_intercept_numeric_then_one_hot_blocks(spec):
    x = spec.encode({"hour": 14, "tenure_days": 2.5, "city": "munich", "device": "ios"})
    assert x.dtype == np.float64 and x.shape == (8,)
    assert x.tolist() == [1.0, 14.0, 2.5, 0.0, 0.0, 1.0, 1.0, 0.0]


def test_encode_without_intercept():
    spec = FeatureSpec.from_mapping(["a"], {"c": ["x"]}, intercept=False)
    assert spec.columns == ["a", "c=x"]
    assert spec.encode({"a": -1, "c": "x"}).tolist() == [-1.0, 1.0]


def test_missing_features_encode_as_zeros(spec):
    assert spec.encode({}).tolist() == [1.0] + [0.0] * 7


def test_unknown_category_encodes_as_zeros(spec):
    assert spec.encode({"city": "paris"}).tolist() == [1.0] + [0.0] * 7


def test_unknown_feature_is_rejected_with_its_field(spec):
    with pytest.raises(FeatureError) as info:
        spec.encode({"hour": 1, "weather": "rain"})
    assert info.value.field == "context.weather"
    assert "unknown feature" in info.value.message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "value", [True, False, math.nan, math.inf, -math.inf, "14", None, [1], 10**400]
)
def test_numeric_feature_rejects_non_numbers_and_non_finite(spec, value):
    with pytest.raises(FeatureError) as info:
        spec.encode({"hour": value})
    assert info.value.field == "context.hour"


def test_numeric_feature_accepts_numpy_numbers(spec):
    x = spec.encode({"hour": np.int64(3), "tenure_days": np.float32(0.5)})
    assert x[1:3].tolist() == [3.0, 0.5]


@pytest.mark.parametrize("value", [1, 1.0, True, None, ["berlin"]])
def test_categorical_feature_rejects_non_strings(spec, value):
    with pytest.raises(FeatureError) as info:
        spec.encode({"city": value})
    assert info.value.field == "context.city"


def test_non_mapping_context_is_rejected(spec):
    with pytest.raises(FeatureError) as info:
        spec.encode(["hour", 1])
    assert info.value.field == "context"


@pytest.mark.parametrize(
    "numeric, categorical, intercept",
    [
        (["hour", "hour"], {}, True),
        (["city"], {"city": ["berlin"]}, True),
        ([], {"city": ["berlin", "berlin"]}, True),
        (["intercept"], {}, True),
    ],
)
def test_duplicate_names_are_rejected(numeric, categorical, intercept):
    with pytest.raises(ValueError):
        FeatureSpec.from_mapping(numeric, categorical, intercept)


def test_feature_named_intercept_is_fine_without_intercept_column():
    assert FeatureSpec.from_mapping(["intercept"], intercept=False).columns == ["intercept"]


def test_spec_is_frozen_hashable_and_equal_by_declaration(spec):
    same = FeatureSpec(
        numeric=("hour", "tenure_days"),
        categorical=(("city", ("berlin", "hamburg", "munich")), ("device", ("ios", "android"))),
    )
    assert same == spec and hash(same) == hash(spec)
    with pytest.raises(AttributeError):
        spec.intercept = False


def test_encode_many_equals_encode_row_by_row_and_raises_what_encode_raises():
    spec = FeatureSpec.from_mapping(["hour", "pay"], {"city": ["berlin", "munich"]})
    rows = [
        {"hour": 14, "pay": 12.5, "city": "munich"},
        {},
        {"city": "paris", "pay": -1},
        {"hour": 10**300},
    ]
    np.testing.assert_array_equal(spec.encode_many(rows), [spec.encode(r) for r in rows])
    assert spec.encode_many([]).shape == (0, spec.dim)
    for bad in ({"hour": True}, {"hour": "3"}, {"city": None}, {"colour": 1}, {"pay": 10**400}):
        with pytest.raises(FeatureError) as many:
            spec.encode_many([rows[0], bad])
        with pytest.raises(FeatureError) as one:
            spec.encode(bad)
        assert (many.value.field, many.value.message) == (one.value.field, one.value.message)
