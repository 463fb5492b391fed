"""Datasets: folders of images with same-named .txt captions."""
