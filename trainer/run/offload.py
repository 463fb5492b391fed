"""Giving memory back once the caches are full.

With every latent and every caption embedding cached, and the text encoders not trained, the VAE and the text
encoders have nothing to do until the next preview: on SDXL that is 1.8 GB of bf16 weights (1.1 GB in fp8)
the UNet's activations can use instead. On a GPU they wait in RAM and come back for the moment a preview
needs them. With previews off and no front end that could ask for one ("sample now"), they are dropped
altogether, RAM too.
"""

from __future__ import annotations

import contextlib
import logging

import torch

log = logging.getLogger("trainer")


class Offload:
    def __init__(self, modules: dict[str, torch.nn.Module], device: torch.device, previews: bool):
        self.modules, self.device, self.previews = modules, torch.device(device), previews
        self.dropped = False

    @classmethod
    def after_caching(cls, rt, data, samples_on_request: bool) -> Offload:
        """Decide what the loop can do without from here on, and move it out of the way.
        `samples_on_request`: a front end listens and may ask for a preview at any step."""
        modules = {}
        if not rt.te_params and rt.text_cache_in_use:
            from trainer.models.load import released

            modules.update({f"text encoder {i + 1}": m for i, m in enumerate(rt.model.text_encoders)
                            if not released(m)})
        if data.cacheable_latents and data.latent_cache:
            modules["VAE"] = rt.model.vae
        offload = cls(modules, rt.device, bool(rt.cfg.sampling.every_n_steps) or samples_on_request)
        offload._release()
        return offload

    def _release(self) -> None:
        if not self.modules or (self.device.type == "cpu" and self.previews):
            return  # on the CPU, RAM is where they are needed again
        size = sum(p.numel() * p.element_size() for m in self.modules.values() for p in m.parameters())
        target = "cpu" if self.previews else "meta"
        for module in self.modules.values():
            module.to(target)
        self.dropped = target == "meta"
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        where = "RAM until a preview needs them" if self.previews else "memory (no previews in this run)"
        log.info("%s left %s to %s: %.2f GB freed", ", ".join(self.modules), self.device.type, where,
                 size / 1024**3)

    @contextlib.contextmanager
    def for_previews(self):
        """The released modules back on the training device while previews render. Yields False when they
        were dropped (previews off) and no preview can be made."""
        if self.dropped:
            yield False
            return
        moved = self.device.type != "cpu" and bool(self.modules)
        for module in self.modules.values() if moved else ():
            module.to(self.device)
        try:
            yield True
        finally:
            for module in self.modules.values() if moved else ():
                module.to("cpu")
