"""The New LoRA wizard (QWizard) and its Qt-free decisions (plan.py)."""
