"""Rules the engine and the GUI must agree on, in torch-free modules both import (an import-linter contract
in pyproject.toml keeps torch, diffusers, transformers, peft and accelerate out of them):

- images: which files are images, and which folders a dataset scan skips
- captions: reading a caption sidecar, splitting it into tags
- dataset_layout: a dataset folder's subsets (dataset.toml, kohya `N_name` folders, or the folder itself)
- masks: which image is a training image's loss mask (loss.masked)
- steps: how many optimizer steps a run takes
- trainer.shared.run_folder: the run folder's layout (sample, checkpoint and EMA file names)
"""
