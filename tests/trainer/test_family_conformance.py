"""Every registered family passes the conformance suite (tests/support/conformance.py) on its tiny model;
SD2 in both of its objectives (768-v and the 512-base's epsilon)."""

import pytest

from tests.support.conformance import check_family
from trainer.families.registry import families, get

CASES = [(f.id, {}) for f in families()] + [("sd2", {"model__prediction_type": "epsilon"})]


@pytest.mark.parametrize("family_id, overrides", CASES, ids=[f"{f}{'-' + '-'.join(o.values()) if o else ''}"
                                                             for f, o in CASES])
def test_family_conforms(tmp_path, family_id, overrides):
    check_family(get(family_id), tmp_path, **overrides)


def test_the_registry_knows_each_family_once_and_the_gui_facts_are_complete():
    ids = [f.id for f in families()]
    assert len(ids) == len(set(ids)) and {"sd1", "sd2", "sdxl"} <= set(ids)
    for family in families():
        facts = family.facts()
        assert facts["native_resolution"] % 64 == 0 and facts["max_tokens"] >= facts["token_chunk"] >= 1
        assert facts["targets"] == list(family.lora.denoiser) and facts["label"]
