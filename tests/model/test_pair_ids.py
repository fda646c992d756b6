"""factorize_pairs numbers (repository, digest) pairs as factorising their MultiIndex would."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recommender.units import factorize_pairs


def _objects(*values: object) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


@pytest.mark.parametrize(("first", "second"), [
    # Repeated pairs, a repository shared by digests, a digest shared by repositories.
    (_objects("team/a", "team/b", "team/a", "team/a", "team/c", "team/b"),
     _objects("sha256:1", "sha256:1", "sha256:2", "sha256:1", "sha256:1", "sha256:1")),
    (_objects(), _objects()),
    # A missing value: pandas decides (the fallback), not the integer pairing.
    (_objects("team/a", None, "team/a"), _objects("sha256:1", "sha256:1", "sha256:1")),
])
def test_pairs_are_numbered_as_their_multiindex_would_be(first: np.ndarray,
                                                          second: np.ndarray) -> None:
    ids, pairs = factorize_pairs(first, second)
    expected_ids, expected = pd.factorize(pd.MultiIndex.from_arrays([first, second]))
    np.testing.assert_array_equal(ids, expected_ids)
    assert list(pairs) == list(expected)
    assert len(first) == 0 or len(set(ids.tolist())) < len(first)  # some pair repeats
