"""trainer.run"""
