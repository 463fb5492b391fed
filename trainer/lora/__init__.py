"""LoRA / DoRA adapters on the UNet and text encoders, through peft."""
