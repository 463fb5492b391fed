"""The proof that the family seam holds: a family defined and registered here, which no product file names,
passes the whole conformance suite. It is a UNet family with its own id, label, demo name, single-file layout
(its text encoder under `toy_text.transformer.`), config folder outside assets/, metadata and LoRA detection."""

import shutil

import pytest

from tests.support.conformance import check_family
from trainer.families import registry
from trainer.families.ldm_layout import LdmLayout
from trainer.families.sd import StableDiffusion1
from trainer.models.assets import CONFIGS


class ToyFamily(StableDiffusion1):
    id, label = "toy", "Toy UNet"
    demo, preset_prefix, a1111_version = "demo:toy", "sd15", "Toy"
    tiny_config = "tiny-toy"
    te_marker = "toy_text."
    ldm = LdmLayout(clip_prefix="toy_text.transformer.", openclip_prefix=None)

    def __init__(self, configs):
        self.configs = configs

    def config_folder(self, name):
        return self.configs / name

    def config_names(self):
        return (self.tiny_config,)

    def config_name(self, prediction_type, tiny, variant=""):
        return self.tiny_config

    def claims_folder(self, index, denoiser_config):
        return index.get("_class_name") == "ToyPipeline"

    def claims_lora(self, keys, metadata):
        return metadata.get("lora_studio_base_config") in self.config_names() or \
            metadata.get("ss_base_model_version") == "toy_v1"

    def metadata(self, prediction_type, variant=""):
        return {"ss_base_model_version": "toy_v1", "modelspec.architecture": "toy-unet"}


@pytest.fixture
def toy(tmp_path_factory):
    configs = tmp_path_factory.mktemp("toy-configs")
    shutil.copytree(CONFIGS / "tiny-sd15", configs / "tiny-toy")
    family = registry.register(ToyFamily(configs))
    yield family
    registry.unregister(family.id)


def test_a_family_registered_in_a_test_passes_the_conformance_suite(toy, tmp_path):
    check_family(toy, tmp_path)


def test_its_facts_and_demo_reach_front_ends_through_the_engine(toy):
    from trainer.models.detect import inspect_file

    info = inspect_file("demo:toy")
    assert info["arch"] == "toy" and info["family"]["label"] == "Toy UNet" and info["size"] == "tiny"
    assert registry.by_demo("demo:toy") is toy and registry.by_config("tiny-toy") is toy


def test_an_sd15_lora_is_refused_for_it_by_name(toy, tmp_path):
    from tests.support.loras import our_lora
    from trainer.shared.errors import UserError
    from trainer.tryit.loras import check_family as check_lora_family
    from trainer.tryit.loras import read_lora

    path = our_lora(tmp_path / "sd15.safetensors")
    tensors, metadata = read_lora(path)
    with pytest.raises(UserError, match="is a LoRA for SD 1.x, the base model is Toy UNet"):
        check_lora_family(path, tensors, metadata, "toy")
