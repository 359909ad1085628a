"""Messages Go machinery v1 and v2 wrote round-trip byte-for-byte and read as in Go."""

from __future__ import annotations

import pytest

from bridge.types import SUPPORTED_TYPES
from tests.fixtures import KINDS, Golden, golden_fixtures
from tests.golden_checks import check_python_built, check_round_trip, check_values

GOLDEN = golden_fixtures()


def test_fixtures_exist_for_both_machinery_versions() -> None:
    versions = {g.version for g in GOLDEN}
    assert versions == {"v1", "v2"}, "run compat_fixtures/regen.sh"
    for version in versions:
        kinds = {g.kind for g in GOLDEN if g.version == version}
        assert kinds == set(KINDS)
        checked_args = [a for g in GOLDEN if g.version == version for a in g.args]
        assert {a["type"] for a in checked_args} >= SUPPORTED_TYPES


@pytest.mark.parametrize("golden", GOLDEN, ids=lambda g: g.id)
def test_round_trips_byte_for_byte(golden: Golden) -> None:
    check_round_trip(golden)


@pytest.mark.parametrize("golden", [g for g in GOLDEN if g.args or g.results],
                         ids=lambda g: g.id)
def test_args_and_results_read_as_go_reflects_them(golden: Golden) -> None:
    check_values(golden)


@pytest.mark.parametrize("golden", [g for g in GOLDEN if g.kind != "group_meta"],
                         ids=lambda g: g.id)
def test_python_built_messages_equal_go_bytes(golden: Golden) -> None:
    check_python_built(golden)
