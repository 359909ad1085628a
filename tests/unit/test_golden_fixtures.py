"""Go machinery v1 and v2 wrote these messages: they round-trip byte-for-byte and read as in Go."""

from __future__ import annotations

import pytest

from bridge import ArgTranslationError, Signature, TaskState
from bridge.protocol.gojson import plain
from bridge.types import SUPPORTED_TYPES, arg_to_python, result_to_python
from tests.canon import canon
from tests.fixtures import KINDS, Golden, golden_fixtures

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
    data = golden.path.read_bytes()
    decoded = KINDS[golden.kind].from_json(data)
    assert decoded.to_json() == data
    assert KINDS[golden.kind].from_json(decoded.to_json()) == decoded


@pytest.mark.parametrize("golden", [g for g in GOLDEN if g.args], ids=lambda g: g.id)
def test_args_translate_to_the_values_go_reflects(golden: Golden) -> None:
    sig = Signature.from_json(golden.path.read_bytes())
    assert sig.args is not None and len(sig.args) == len(golden.args)
    for index, (arg, expect) in enumerate(zip(sig.args, golden.args, strict=True)):
        assert arg.type == expect["type"]
        if "canon" in expect:
            assert canon(arg.type, arg_to_python(arg, index)) == expect["canon"], arg
        else:
            with pytest.raises(ArgTranslationError):
                arg_to_python(arg, index)


@pytest.mark.parametrize("golden", [g for g in GOLDEN if g.results], ids=lambda g: g.id)
def test_results_translate_to_the_values_go_reflects(golden: Golden) -> None:
    state = TaskState.from_json(golden.path.read_bytes())
    assert state.results is not None and len(state.results) == len(golden.results)
    for result, expect in zip(state.results, golden.results, strict=True):
        assert result is not None and result.type == expect["type"]
        if "canon" in expect:
            assert canon(result.type, result_to_python(result)) == expect["canon"], result
        elif result.type in SUPPORTED_TYPES:
            with pytest.raises(ArgTranslationError):
                result_to_python(result)
        else:  # structs, maps, []interface {}: Go cannot reflect them; we still read them
            assert result_to_python(result) == plain(result.value)
