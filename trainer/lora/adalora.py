"""AdaLoRA (Zhang et al. 2023) through peft: the rank budget moves to the layers that need it during training.

peft's AdaLoRA layers hold the update in SVD form, P·diag(E)·Q (`lora_B`, `lora_E`, `lora_A`), and its
RankAllocator scores each singular triplet and zeroes the least important ones' E until the average rank is
lora.rank. peft drives both from AdaLoraModel.forward/update_and_allocate, which our injected UNet does not
have (inject_adapter_in_model returns the bare model), so here the allocator and the orthogonality
regulariser ride on the optimizer's step hooks: the regulariser's gradient is added just before each step,
the importance update and masking run just after it (where peft's examples call update_and_allocate).

The schedule is tied to the run: no pruning for the first lora.adalora_warmup of the steps, the budget falls
(peft's cubic schedule) to lora.rank on average, and the last lora.adalora_final of the steps train at the
final allocation. Export folds the pruned triplets away (trainer.export.kohya: up = P[:, kept],
down = diag(E)·Q[kept]), a plain kohya LoRA of per-module ranks that every UI loads.
"""

from __future__ import annotations

import torch

from trainer.lora import ADAPTER

STATE_COMPONENT = "adalora_scores"  # beside the adapters in a resume snapshot (trainer.run.state)
SCORES = ("ipt", "exp_avg_ipt", "exp_avg_unc")  # peft RankAllocator's per-parameter importance statistics

# AdaLoRA layers are Linear only: 1x1-conv projections (SD1.5's proj_in/proj_out) stay out of its target set
EXCLUDED = r".*attentions\.\d+\.(proj_in|proj_out)"


def adalora_config(lc, target_regex: str, total_steps: int):
    from peft import AdaLoraConfig

    init_r = lc.adalora_init_rank or max(lc.rank + 1, round(lc.rank * 1.5))
    return AdaLoraConfig(init_r=init_r, target_r=lc.rank, lora_alpha=lc.alpha, lora_dropout=lc.dropout,
                         target_modules=target_regex, exclude_modules=EXCLUDED, init_lora_weights=True,
                         **schedule(lc, total_steps))


def schedule(lc, total_steps: int) -> dict:
    """peft's tinit / tfinal / deltaT for a run of `total_steps` optimizer steps."""
    tinit, tfinal = int(total_steps * lc.adalora_warmup), int(total_steps * lc.adalora_final)
    if tinit + tfinal >= total_steps:  # too short a run for the fractions: keep one budgeting step
        tinit, tfinal = 0, max(0, total_steps - 1)
    return dict(tinit=tinit, tfinal=tfinal, deltaT=max(1, total_steps // 100), total_step=max(1, total_steps))


class AdaLoraBudget:
    """One RankAllocator per adapted model (UNet, each trained text encoder), stepped by the optimizer."""

    def __init__(self, models: list[torch.nn.Module], total_steps: int, lc, step: int):
        from peft.tuners.adalora.layer import RankAllocator

        self.models, self.step = models, step
        self.allocators, self.patterns = [], []
        for model in models:
            config = model.peft_config[ADAPTER]
            for key, value in schedule(lc, total_steps).items():  # the real length, known once the data is read
                setattr(config, key, value)
            self.allocators.append(RankAllocator(model, config, ADAPTER))
            self.patterns.append(_pattern_from_zeros(model) if step > total_steps - config.tfinal else None)

    @classmethod
    def attach(cls, cfg, rt, optimizer, total_steps: int, step: int) -> AdaLoraBudget | None:
        if cfg.lora.algorithm != "adalora":
            return None
        models = [rt.model.unet, *(rt.model.text_encoders if rt.te_params else [])]
        budget = cls(models, total_steps, cfg.lora, step)
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper calls the inner step
        inner.register_step_pre_hook(lambda *_: budget.add_orthogonality_gradient())
        inner.register_step_post_hook(lambda *_: budget.update_and_allocate())
        return budget

    def add_orthogonality_gradient(self) -> None:
        """peft's regulariser (AdaLoraModel.forward): ||PᵀP − I|| + ||QQᵀ − I|| keeps P and Q near orthogonal,
        so E's entries stay singular values and their scores mean something."""
        for model in self.models:
            weight = model.peft_config[ADAPTER].orth_reg_weight
            terms = []
            with torch.enable_grad():
                for name, p in model.named_parameters():
                    if p.requires_grad and (".lora_A." in name or ".lora_B." in name):
                        cov = p @ p.T if ".lora_A." in name else p.T @ p
                        terms.append(torch.linalg.matrix_norm(cov - torch.eye(len(cov), device=cov.device)))
                if terms:
                    (weight * torch.stack(terms).mean()).backward()

    def state(self) -> dict[str, dict[str, torch.Tensor]]:
        """For the resume snapshot: each allocator's smoothed importance scores, so a run resumed in the middle
        of the allocation prunes exactly the triplets the uninterrupted run would have pruned."""
        tensors = {f"{i}|{kind}|{name}": t.detach().cpu() for i, allocator in enumerate(self.allocators)
                   for kind in SCORES for name, t in getattr(allocator, kind).items()}
        return {STATE_COMPONENT: tensors}

    def load(self, adapters: dict[str, dict[str, torch.Tensor]]) -> None:
        for key, tensor in adapters.get(STATE_COMPONENT, {}).items():
            index, kind, name = key.split("|", 2)
            allocator = self.allocators[int(index)]
            device = next(self.models[int(index)].parameters()).device
            getattr(allocator, kind)[name] = tensor.to(device)

    @torch.no_grad()
    def update_and_allocate(self) -> None:
        """peft's AdaLoraModel.update_and_allocate, with the rank pattern kept here: peft would write it into
        the config, whose state-dict code then tries to resize a model that is not its own."""
        self.step += 1
        for model in self.models:  # a layer the loss does not reach (a text encoder's last) has no gradient
            for name, p in model.named_parameters():
                if ".lora_" in name and p.requires_grad and p.grad is None:
                    p.grad = torch.zeros_like(p)
        for index, (model, allocator) in enumerate(zip(self.models, self.allocators)):
            config = model.peft_config[ADAPTER]
            final = config.total_step - config.tfinal
            if self.step < final:
                allocator.update_and_allocate(model, self.step)
            elif self.step == final:
                _, self.patterns[index] = allocator.update_and_allocate(model, self.step, force_mask=True)
                allocator.reset_ipt()
            elif self.patterns[index] is not None:
                allocator.mask_using_rank_pattern(model, self.patterns[index])


def _pattern_from_zeros(model) -> dict[str, list[bool]]:
    """The final allocation of a resumed run: the triplets whose E the allocator had zeroed."""
    return {name: (p != 0).view(-1).tolist() for name, p in model.named_parameters() if ".lora_E." in name}

