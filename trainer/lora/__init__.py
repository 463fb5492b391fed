"""Adapters (LoRA, DoRA, LoHa, LoKr, AdaLoRA) on the denoiser and text encoders, through peft."""

ADAPTER = "default"   # peft's adapter name for the one adapter a run trains
# the name prefixes of trainable adapter parameters, one per algorithm (AdaLoRA's lora_A / lora_B / lora_E
# included)
PARAM_PREFIXES = ("lora_", "hada_", "lokr_")
