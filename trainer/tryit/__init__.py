"""Try a LoRA: generate with it, serve generate requests, combine LoRAs, bake them into a checkpoint."""
