"""The config refuses bad values loudly, naming the key; presets and overrides layer as documented."""

import pytest

from trainer.shared import config as config_mod
from trainer.shared.errors import ConfigError


def test_defaults_have_the_contract_keys():
    cfg = config_mod.TrainConfig()
    for key, value in {"model.path": "demo:sd15", "dataset.resolution": 512, "lora.rank": 16,
                       "lora.alpha": 16.0, "lora.targets": "attention", "lora.train_text_encoder": False,
                       "optimizer.lr": 1e-4, "schedule.max_steps": 1000, "sampling.every_n_steps": 250,
                       "saving.every_n_steps": 250}.items():
        assert cfg.get(key) == value
    assert cfg.schema_version == 1


@pytest.mark.parametrize("toml, key, words", [
    ("[lora]\nrnak = 4\n", "lora.rnak", "known keys in [lora]"),
    ("[lora]\nrank = 0\n", "lora.rank", "allowed range is 1 to 1024"),
    ("[lora]\nrank = \"big\"\n", "lora.rank", "must be int"),
    ("[lora]\ntargets = \"everything\"\n", "lora.targets", "attention, attention+ff, full"),
    ("[optimiser]\nlr = 1\n", "[optimiser]", "sections:"),
    ("schema_version = 7\n", "schema_version", "version 1"),
])
def test_bad_values_name_the_key(tmp_path, toml, key, words):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        config_mod.load(path)
    assert key in err.value.message
    assert words in str(err.value)


def test_not_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[lora\nrank = 4")
    with pytest.raises(ConfigError, match="broken.toml is not valid TOML"):
        config_mod.load(path)


def test_overrides_parse_toml_literals_and_bare_strings():
    cfg = config_mod.apply_overrides(config_mod.TrainConfig(), [
        "lora.rank=8", "optimizer.lr=3e-4", "lora.train_text_encoder=true", "model.path=/models/x.safetensors",
        "sampling.prompts=[\"a\", \"b\"]", "lora.alpha=4"])
    assert (cfg.lora.rank, cfg.optimizer.lr, cfg.lora.train_text_encoder) == (8, 3e-4, True)
    assert cfg.model.path == "/models/x.safetensors"
    assert cfg.sampling.prompts == ["a", "b"]
    assert cfg.lora.alpha == 4.0 and isinstance(cfg.lora.alpha, float)


def test_override_of_unknown_key_is_refused():
    with pytest.raises(ConfigError, match="lora.rnak"):
        config_mod.apply_overrides(config_mod.TrainConfig(), ["lora.rnak=3"])


def test_sparse_overlay_keeps_other_defaults_and_round_trips(tmp_path):
    path = tmp_path / "sparse.toml"
    path.write_text("[lora]\nrank = 32\n")
    cfg = config_mod.load(path)
    assert cfg.lora.rank == 32 and cfg.lora.alpha == 16.0
    config_mod.save(cfg, tmp_path / "full.toml")
    assert config_mod.load(tmp_path / "full.toml") == cfg


def test_cross_key_rule_names_both_keys():
    with pytest.raises(ConfigError, match="text_encoder_lr.*train_text_encoder"):
        config_mod.apply_overrides(config_mod.TrainConfig(),
                                   ["lora.train_text_encoder=true", "optimizer.text_encoder_lr=0"])


def test_every_preset_loads_and_validates():
    names = sorted(p.stem for p in config_mod.PRESETS_DIR.glob("*.toml"))
    assert "demo" in names
    for name in names:
        config_mod.load_preset(name)


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ConfigError, match="known presets: .*demo"):
        config_mod.load_preset("nope")
