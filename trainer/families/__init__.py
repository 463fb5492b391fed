"""Model families: one module per family behind one interface (trainer.families.base.Family)."""
