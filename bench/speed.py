"""Whole-process speed against diffusers' LoRA example: the command to the adapter on disk, same work.

Both train a rank-4 LoRA on the attention layers of the same tiny SD1.5-architecture model (saved as a
diffusers folder) on the same 24 images at 64 px, batch 1, 200 steps, constant LR 1e-4, gradient clipping 1.0,
TensorBoard logging, no previews or checkpoints, fp32, on this machine's device. diffusers'
`examples/text_to_image/train_text_to_image_lora.py` is not in this repository: give its path, and the Python
that has its requirements (`datasets` and the rest), e.g. a venv outside the repo:

    .venv/bin/python bench/speed.py --theirs /work/ext/train_text_to_image_lora.py \\
        --their-python /work/ext/venv/bin/python [--repeats 2] [--json]

Printed: our seconds, theirs, the ratio (target >= 1.5); theirs again on one CPU thread, which our engine
chooses for a tiny model on a CPU (trainer/runtime.py), so that choice's share shows; `train --demo`'s time to its first step
(target <= 3 s) and the step-overhead ratio from bench/step_overhead.py. Wall times: other programs on the machine slow both; the runs
alternate so that both see the same load, and each figure is the median of --repeats.

Also the same work done by the bare libraries with no trainer around them (bare_run below: import, load,
inject LoRA with peft, encode the images and captions once, 200 plain steps, TensorBoard, save): the least any
trainer built on torch, transformers, diffusers and peft can take here, so theirs / bare is the best ratio any
such trainer could reach on this machine, and ours / bare is what our engine adds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_RATIO, TARGET_FIRST_STEP_S = 1.5, 3.0
STEPS, IMAGES, RESOLUTION, RANK, LR = 200, 24, 64, 4, 1e-4


def build_model(folder: Path) -> None:
    """The built-in tiny SD1.5 model as a diffusers folder, so both trainers load it the same way."""
    sys.path.insert(0, str(REPO))
    from diffusers import StableDiffusionPipeline

    from trainer.models.assets import load_tokenizer
    from trainer.models.tiny import build_tiny_components

    parts = build_tiny_components("sd15")
    StableDiffusionPipeline(vae=parts["vae"], text_encoder=parts["text_encoder"], tokenizer=load_tokenizer(),
                            unet=parts["unet"], scheduler=parts["scheduler"], safety_checker=None,
                            feature_extractor=None, requires_safety_checker=False).save_pretrained(folder)


def build_images(ours: Path, theirs: Path) -> None:
    """24 square images with captions: .txt files for us, metadata.jsonl (imagefolder) for diffusers."""
    import numpy as np
    from PIL import Image

    ours.mkdir(parents=True)
    theirs.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(IMAGES):
        pixels = (rng.random((RESOLUTION, RESOLUTION, 3)) * 64 + rng.integers(0, 192, 3)).astype(np.uint8)
        name, caption = f"img_{i:02d}.png", f"a shape number {i}, plain background"
        Image.fromarray(pixels).save(ours / name)
        shutil.copy(ours / name, theirs / name)
        (ours / name).with_suffix(".txt").write_text(caption, encoding="utf-8")
        rows.append(json.dumps({"file_name": name, "text": caption}))
    (theirs / "metadata.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")


def our_command(python: str, model: Path, images: Path, out: Path) -> list[str]:
    config = out.parent / f"{out.name}.toml"
    config.write_text(f"""schema_version = 1
[model]
path = {json.dumps(str(model))}
[dataset]
path = {json.dumps(str(images))}
resolution = {RESOLUTION}
[lora]
rank = {RANK}
alpha = {float(RANK)}
[optimizer]
lr = {LR}
max_grad_norm = 1.0
[schedule]
batch_size = 1
max_steps = {STEPS}
lr_scheduler = "constant"
[sampling]
every_n_steps = 0
[saving]
every_n_steps = 0
output_name = "bench"
trigger_phrase = "shape"
""", encoding="utf-8")
    return [python, "-m", "trainer", "train", str(config), "--out", str(out), "--events", "jsonl"]


def their_command(python: str, script: Path, model: Path, images: Path, out: Path) -> list[str]:
    return [python, str(script), "--pretrained_model_name_or_path", str(model), "--train_data_dir", str(images),
            "--resolution", str(RESOLUTION), "--center_crop", "--train_batch_size", "1", "--max_train_steps",
            str(STEPS), "--rank", str(RANK), "--learning_rate", str(LR), "--lr_scheduler", "constant",
            "--max_grad_norm", "1.0", "--mixed_precision", "no", "--report_to", "tensorboard", "--seed", "0",
            "--output_dir", str(out)]


def run_ours(args: list[str], cache: Path, stop_after_first_step: bool = False, repo: Path = REPO) -> dict:
    """Seconds to the first `progress` event (step 1 done) and to the process's end; the adapter must exist.
    Stderr goes to a file: a pipe nobody reads would stall the run once full."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LORA_STUDIO_CACHE": str(cache), "PYTHONPATH": str(repo)}
    with tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        first_step = None
        for line in proc.stdout:
            if first_step is None and '"type": "progress"' in line:
                first_step = time.perf_counter() - start
                if stop_after_first_step:
                    proc.kill()
        proc.wait()
        total = time.perf_counter() - start
        err.seek(0)
        log = err.read()
    if stop_after_first_step:
        if first_step is None:
            raise RuntimeError(f"no first step:\n{log[-3000:]}")
        return {"first_step_s": first_step}
    adapter = Path(args[args.index("--out") + 1]) / "bench.safetensors"
    if proc.returncode or not adapter.exists():
        raise RuntimeError(f"our run failed ({proc.returncode}):\n{log[-3000:]}")
    return {"total_s": total, "first_step_s": first_step}


def demo_first_step(python: str, root: Path, repo: Path) -> float:
    """`train --demo` as a new user types it (baseline previews included), to its first step."""
    args = [python, "-m", "trainer", "train", "--demo", "--out", str(root / "demo"), "--events", "jsonl"]
    return run_ours(args, root / "demo-cache", stop_after_first_step=True, repo=repo)["first_step_s"]


def run_theirs(args: list[str], one_thread: bool = False) -> dict:
    """`one_thread`: with the one CPU thread our engine gives a tiny model (trainer/runtime.py), to tell that
    choice apart from the rest of the difference."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": ""}
    if one_thread:
        env["OMP_NUM_THREADS"] = "1"
    start = time.perf_counter()
    result = subprocess.run(args, env=env, capture_output=True, text=True)
    total = time.perf_counter() - start
    adapter = Path(args[args.index("--output_dir") + 1]) / "pytorch_lora_weights.safetensors"
    if result.returncode or not adapter.exists():
        raise RuntimeError(f"diffusers' example failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return {"total_s": total}


def bare_run(model: Path, images: Path, out: Path) -> None:
    """The bench's work with the libraries' own APIs and nothing else (no events, checks, state, previews);
    run in a process of its own: `speed.py --bare-run MODEL IMAGES OUT`. One CPU thread and a quick exit,
    as our engine does for a tiny model on a CPU."""
    import numpy as np
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from peft import LoraConfig, get_peft_model_state_dict
    from PIL import Image
    from safetensors.torch import save_file
    from torch.utils.tensorboard import SummaryWriter
    from transformers import CLIPTextModel, CLIPTokenizer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(str(model), subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(str(model), subfolder="text_encoder").requires_grad_(False)
    vae = AutoencoderKL.from_pretrained(str(model), subfolder="vae").requires_grad_(False)
    unet = UNet2DConditionModel.from_pretrained(str(model), subfolder="unet").requires_grad_(False)
    scheduler = DDPMScheduler.from_pretrained(str(model), subfolder="scheduler")
    unet.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    params = [p for p in unet.parameters() if p.requires_grad]
    with torch.no_grad():  # each image and caption encoded once, as a latent/text cache does
        files = sorted(images.glob("*.png"))
        pixels = [torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1).float() / 127.5 - 1
                  for f in files]
        latents = [vae.encode(p[None]).latent_dist for p in pixels]
        ids = [tokenizer(f.with_suffix(".txt").read_text(), padding="max_length", truncation=True,
                         max_length=tokenizer.model_max_length, return_tensors="pt").input_ids for f in files]
        hidden = [text_encoder(i)[0] for i in ids]
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=0.01, fused=True)
    writer = SummaryWriter(log_dir=str(out / "logs"))
    for step in range(STEPS):
        i = step % len(files)
        x0 = latents[i].sample() * vae.config.scaling_factor
        noise, t = torch.randn_like(x0), torch.randint(0, scheduler.config.num_train_timesteps, (1,))
        loss = torch.nn.functional.mse_loss(unet(scheduler.add_noise(x0, noise, t), t, hidden[i]).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        writer.add_scalar("loss", loss.item(), step)
    writer.close()
    save_file({k: v.contiguous() for k, v in get_peft_model_state_dict(unet).items()},
              str(out / "bare.safetensors"))
    sys.stdout.flush()
    os._exit(0)


def run_bare(python: str, model: Path, images: Path, out: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    start = time.perf_counter()
    result = subprocess.run([python, __file__, "--bare-run", str(model), str(images), str(out), "--steps",
                             str(STEPS)], env=env, capture_output=True, text=True)
    total = time.perf_counter() - start
    if result.returncode or not (out / "bare.safetensors").exists():
        raise RuntimeError(f"the bare-libraries run failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return {"total_s": total}


def step_overhead() -> dict:
    out = subprocess.run([sys.executable, "bench/step_overhead.py", "--tiny-only", "--json"], cwd=REPO,
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if out.returncode:
        raise RuntimeError(f"bench/step_overhead.py failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)[0]


def measure(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_model(root / "model")
        build_images(root / "ours", root / "theirs")
        ours, theirs, theirs_1t, demo, bare = [], [], [], [], []
        for k in range(args.repeats):  # alternate, so a change in the machine's load hits both alike
            ours.append(run_ours(our_command(args.python, root / "model", root / "ours", root / f"run{k}"),
                                 root / f"cache{k}", repo=args.repo))  # a fresh latent cache: a first run
            theirs.append(run_theirs(their_command(args.their_python, args.theirs, root / "model",
                                                   root / "theirs", root / f"theirs{k}")))
            demo.append(demo_first_step(args.python, root / f"demo{k}", args.repo))
            theirs_1t.append(run_theirs(their_command(args.their_python, args.theirs, root / "model",
                                                      root / "theirs", root / f"theirs-1t{k}"), True))
            (root / f"bare{k}").mkdir()
            bare.append(run_bare(args.python, root / "model", root / "ours", root / f"bare{k}"))
    ours_s = statistics.median(r["total_s"] for r in ours)
    theirs_s = statistics.median(r["total_s"] for r in theirs)
    overhead = step_overhead()
    theirs_1t_s = statistics.median(r["total_s"] for r in theirs_1t)
    bare_s = statistics.median(r["total_s"] for r in bare)
    return {"bench": "speed", "ours_s": ours_s, "theirs_s": theirs_s, "ratio": theirs_s / ours_s,
            "theirs_one_thread_s": theirs_1t_s, "ratio_same_threads": theirs_1t_s / ours_s,
            "bare_s": bare_s, "best_ratio": theirs_s / bare_s, "ours_over_bare": ours_s / bare_s,
            "first_step_s": statistics.median(r["first_step_s"] for r in ours),
            "demo_first_step_s": statistics.median(demo),
            "step_ratio": overhead["ratio"], "step_ratio_with_update": overhead["ratio_with_update"],
            "repeats": args.repeats, "load": os.getloadavg()[0]}


def print_table(r: dict) -> None:
    def mark(ok: bool) -> str:
        return "ok" if ok else "MISS"

    print(f"{'figure':52} {'value':>8}  target")
    print(f"{'ours: command to adapter on disk (s)':52} {r['ours_s']:8.2f}")
    print(f"{'diffusers train_text_to_image_lora.py (s)':52} {r['theirs_s']:8.2f}")
    print(f"{'ratio (theirs / ours)':52} {r['ratio']:8.2f}  >= {TARGET_RATIO} {mark(r['ratio'] >= TARGET_RATIO)}")
    print(f"{'diffusers on one thread, as ours on a tiny model (s)':52} {r['theirs_one_thread_s']:8.2f}")
    print(f"{'ratio with the same thread setting':52} {r['ratio_same_threads']:8.2f}  >= {TARGET_RATIO} "
          f"{mark(r['ratio_same_threads'] >= TARGET_RATIO)}")
    print(f"{'the bare libraries, same work, no trainer (s)':52} {r['bare_s']:8.2f}")
    print(f"{'best ratio on these libraries (theirs / bare)':52} {r['best_ratio']:8.2f}")
    print(f"{'ours / bare (what our engine adds)':52} {r['ours_over_bare']:8.3f}")
    print(f"{'`train --demo`: command to first step done (s)':52} {r['demo_first_step_s']:8.2f}  <= "
          f"{TARGET_FIRST_STEP_S} {mark(r['demo_first_step_s'] <= TARGET_FIRST_STEP_S)}")
    print(f"{'ours above: command to first step done (s)':52} {r['first_step_s']:8.2f}")
    print(f"{'step / bare fwd+bwd+AdamW, tiny model':52} {r['step_ratio_with_update']:8.3f}  <= 1.05 "
          f"{mark(r['step_ratio_with_update'] <= 1.05)}")
    print(f"{'step / bare fwd+bwd, tiny model':52} {r['step_ratio']:8.3f}")
    print(f"{STEPS} steps, {IMAGES} images at {RESOLUTION} px, rank {RANK}, batch 1; median of {r['repeats']}; "
          f"1-min load average at the end {r['load']:.1f}")


def main() -> int:
    if sys.argv[1:2] == ["--bare-run"]:  # the child process of run_bare
        globals()["STEPS"] = int(sys.argv[sys.argv.index("--steps") + 1])
        bare_run(*(Path(a) for a in sys.argv[2:5]))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--theirs", type=Path, required=True, help="path of train_text_to_image_lora.py")
    p.add_argument("--their-python", default=sys.executable, help="the Python that has its requirements")
    p.add_argument("--python", default=sys.executable, help="the Python that runs LoRA Studio")
    p.add_argument("--repo", type=Path, default=REPO, help="the LoRA Studio checkout to time (e.g. an older "
                                                             "commit's worktree, for before/after)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--steps", type=int, default=STEPS, help="for a quick look; the comparison is made at 200")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    globals()["STEPS"] = args.steps
    result = measure(args)
    print_table(result)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
