"""trainer.commands"""
