"""Configuration: dataclasses whose defaults are the paper's settings, YAML presets, ``--set a.b=c`` overrides.

Every option is documented once, here, next to its default. A preset is a YAML file in ``pespot/configs/``
(the repository's ``configs/`` folder); it may name another preset under ``base:`` and override any key.
The resolved config is saved as ``config.yaml`` in every run folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pespot.errors import ConfigError

PRESET_DIR = Path(__file__).parent / "configs"


@dataclass
class AstrmConfig:
    """ASTRM (method-spec section 4): Psi(x) = ((x * (1 + Fs)) * (1 + Ft)) conv Gt."""

    use_fs: bool = True  # local spatial block (CBAM spatial attention, 7x7)
    use_ft: bool = True  # local temporal block (3x1x1 conv -> ReLU -> BN -> 1x1x1 conv -> sigmoid)
    use_gt: bool = True  # global temporal block (TAM-style adaptive kernel over time)
    beta: int = 4  # channel reduction of Ft (C -> C/beta)
    alpha: int = 2  # hidden width factor of Gt's FCs over time (T -> alpha*T)
    kernel_size: int = 3  # K, taps of the adaptive temporal kernel
    gt_activation: str = "sigmoid"  # sigmoid (paper) | softmax (TAM)
    fs_bn: bool = False  # BatchNorm after Fs's 7x7 conv (official CBAM code); the paper has none
    fs_kernel: int = 7  # spatial kernel of Fs
    gt_center_init: bool = False  # bias the last Gt FC so the centre tap dominates at init (not in the paper)
    # Gt's FCs at init: torch (PyTorch's default, uniform +-1/sqrt(fan_in): the kernel depends on the clip from the
    # first step) | tam (mmaction2's TAM: N(0, 0.001), so the taps start equal and the same for every clip)
    gt_init: str = "torch"


@dataclass
class ModelConfig:
    """The spotter: backbone (+ per-block temporal module) -> spatial pool -> temporal head -> linear."""

    backbone: str = "regnety_002"  # regnety_002 (368-d) | regnety_008 (768-d), from timm
    pretrained: bool = True  # ImageNet weights through timm when the network allows; else warn + random init
    weights: str | None = None  # local timm-format state dict (.safetensors or .pth), loaded before insertion
    # Fine-tuning: a trained run folder (its best.pt, else last.pt) or checkpoint whose weights start this run (the
    # architecture must match). When its classes differ from data.root's class.txt, the classifier is
    # re-initialised (said on stderr); the rest (backbone, temporal modules, head, projection) is kept. Replaces
    # pretrained/weights; ignored by --resume (the run's own checkpoint wins).
    init: str | None = None
    temporal_module: str = "astrm"  # per-bottleneck module (pespot.registry.TEMPORAL_MODULES): none | tsm | gsm | astrm
    astrm: AstrmConfig = field(default_factory=AstrmConfig)
    # pespot.registry.TEMPORAL_HEADS: bigru | bilstm | transformer | deformable | mstcn | none (old names kept as
    # aliases: bigru2 = bigru with 2 layers, transformer_l1h8 / transformer_l2h8 = transformer, 8 heads, 1 / 2 layers)
    temporal_head: str = "bigru"
    hidden_dim: int | None = None  # temporal head width; None = feature dim (capped at 768, as E2E-Spot)
    head_layers: int | None = None  # layers of the head (MS-TCN: stages); None = its default (or the alias's)
    head_heads: int | None = None  # attention heads (transformer, deformable); None = 8
    dropout: float = 0.5  # before the classifier (E2E-Spot)
    clip_len: int = 128  # frames per clip; modules with a fixed length (tsm, gsm, astrm) are built for it
    projection_dim: int = 128  # SoftIC projection head output (only built when the loss needs it)
    softic_feature: str = "temporal"  # temporal: Bi-GRU output (classifier input) | backbone: pooled feature
    channels_last: bool = True  # memory format of the backbone
    # Random initialisation (both only matter for what pretrained weights do not replace):
    residual_init: str = "live"  # live: BN after each bottleneck's conv3 starts at gamma 1 | zero: timm's zero_init_last
    prior_bias: bool = True  # classifier bias at the class prior of the training frames (log-odds / log prior)
    # what the backbone sees: rgb (the paper) | gray_diff (a grey frame and its two temporal differences, three
    # channels, no parameters; pespot.model.inputs)
    input: str = "rgb"


@dataclass
class DataConfig:
    """Where the dataset is and how clips are made from it."""

    root: str = ""  # dataset folder with class.txt and {train,val,test}.json (E2E-Spot layout)
    frames: str = ""  # frame store; "" = <root>/frames
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    height: int = 224  # frames are read at this height (aspect kept)
    crop: int | None = 224  # random square crop for training, centre crop for evaluation; null = full frame
    pad_len: int = 5  # clips may start/end this many frames past either end of a video (zero padded)
    dilate_len: int = 0  # label dilation in frames (E2E-Spot: 1 for FS, 0 otherwise)
    fg_upsample: float | None = None  # probability that a training clip is placed around a random event (null: never)
    mixup: bool = True
    mixup_alpha: float = 0.1  # lambda ~ Beta(alpha, alpha); the paper uses 0.1 (E2E-Spot 0.2)
    augment: bool = True  # crop, flip, colour jitter, blur (same parameters for every frame of a clip)
    # largest sigma (pixels of the model's input) of the 5x5 Gaussian blur, drawn in [0.05, 1] x it; null = E2E-Spot's
    # 2 px at 224 px scaled with the input size (0.57 at 64 px: the same blur of the scene; 2 px would smear a
    # 1-2 px ball to half its contrast, docs/results/small_cues.md); 0 = no blur
    blur_max_sigma: float | None = None
    num_workers: int = 4  # DataLoader workers (0 = in the main process)


@dataclass
class LossConfig:
    """Classification loss + the contrastive term: total = cls + softic_weight * contrastive."""

    classification: str = "bce"  # bce (paper, K+1 outputs, soft targets) | ce (E2E-Spot, fg weight) | focal
    fg_weight: float = 5.0  # foreground class weight of the ce loss
    bce_fg_weight: float = 1.0  # weight of the positive term of the K event columns in bce (1 = the paper's BCE)
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25
    contrastive: str = "softic"  # softic (paper) | ic (OpenDet, hard labels) | none
    softic_weight: float = 0.001  # lambda_SIC
    temperature: float = 0.1
    bank_size: int = 256  # FIFO entries per event class
    max_enqueue: int = 16  # new entries per class per step, most dissimilar first
    w_anchor: float = 0.5  # minimum mixup weight of a frame/class pair to be an anchor
    w_bank: float = 0.7  # minimum mixup weight to enter the bank
    omega_mode: str = "divide"  # divide (paper's 1/omega) | multiply | none
    omega_min: float = 1e-3  # clamp of omega for the literal (thresholds near 0) variant
    bg_negatives: bool = False  # add a background bank used only as negatives
    linear_decay: bool = False  # OpenDet's (1 - step/total) factor on the contrastive weight


@dataclass
class OptimConfig:
    """AdamW wrapped by ASAM (paper), SAM or nothing; warm-up then cosine, stepped per optimiser step."""

    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    sam: str = "asam"  # asam | sam | none
    # Neighbourhood size; null = the method's usual value: ASAM 2.0 (the paper; davda54's adaptive mode, where rho
    # bounds the relative perturbation ||eps / |w|||_2), SAM 0.05 (absolute: ||eps||_2 = rho). Not
    # interchangeable: SAM at 2 moves small weights by many times their size.
    rho: float | None = None
    asam_eta: float = 0.0  # T_w = |w| + eta (SamsungLabs default 0.01; davda54 0)
    # Fraction of the optimiser steps made with the plain base optimiser before SAM/ASAM starts (0 = from the first
    # step, the paper). From random initialisation ASAM's ascent at rho 2 moves the young classifier bias and stem
    # by up to 40-50 % of their size, and its second-pass gradient points elsewhere (docs/results/recipe.md).
    sam_start: float = 0.0
    asam_weights_only: bool = False  # official ASAM: scale only params named *weight*
    scheduler: str = "warmup_cosine"  # warmup_cosine | e2e_chained (E2E-Spot's overlapping ChainedScheduler)
    warmup_epochs: float = 3.0
    warmup_start_factor: float = 0.01  # 1e-5 at the start of warm-up for lr 1e-3 (paper)
    min_lr_factor: float = 0.0
    # Learning rate of ASTRM's Gt (its two FCs over time and their BatchNorm) as a multiple of optim.lr; 1 = the
    # paper (one lr for every weight). Under AdamW every weight moves about lr per step whatever the size of its
    # gradient; a smaller scale lets Gt's kernels change more slowly than the rest. On court-top from scratch 0.1
    # and 0.01 were no better than 1 beyond the seed spread (docs/results/recipe.md, "Gt at a smaller learning rate").
    gt_lr_scale: float = 1.0


@dataclass
class TrainConfig:
    """The training loop."""

    epochs: int = 50
    clips_per_epoch: int | None = None  # None = 500,000 frames // clip_len (E2E-Spot)
    batch_size: int = 8  # clips per optimiser step per process (the paper: 4 GPUs x 2)
    val_clips: int | None = None  # clips for the validation loss; None = clips_per_epoch // 4
    start_val_epoch: int | None = None  # first epoch with validation mAP; None = epochs - 20 (E2E-Spot)
    val_videos: int | None = None  # validation mAP on the first N videos of the val split (None = all)
    # Model selection (which checkpoint is best.pt): map (mean validation mAP at tolerances 1, 2, 4) | loss (the
    # lowest validation loss) | last (no selection: the last epoch; validation is still computed and logged)
    criterion: str = "map"
    # The validation mAP's candidates: none (E2E-Spot: every frame's score, no NMS) | eval (the run's own inference
    # rule, eval.nms and eval.nms_window, as the test split is scored). With dilated targets (data.dilate_len) a
    # model's score covers several frames around an event and without NMS each counts as a false positive.
    selection_nms: str = "none"
    keep_epochs: bool = False  # also keep every epoch's checkpoint as checkpoints/epoch-NNN.pt (E2E-Spot keeps all)
    amp: str = "auto"  # auto (bf16 on CUDA, off on CPU) | bf16 | none
    compile: bool = False  # torch.compile the model
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    log_every: int = 10  # steps between progress/TensorBoard updates
    save_every_steps: int = 0  # extra mid-epoch checkpoints (0 = only at epoch ends)
    threads: int | None = None  # torch CPU threads (None = torch default)


@dataclass
class EvalConfig:
    """Inference and evaluation."""

    tolerances: list[int] = field(default_factory=lambda: [0, 1, 2, 4])
    overlap: float = 0.5  # window overlap as a fraction of the clip length (paper: half)
    # Candidates: every (frame, class) score >= threshold, then NMS, then at most top_k events per class and video.
    # 0 (default) keeps every local maximum: no score floor decides a ranking (AP only grows with more candidates);
    # E2E-Spot's 0.01 (made for softmax scores) drops calibrated sigmoid scores of rare classes.
    threshold: float = 0.0
    top_k: int | None = None  # null = no cap; a cap bounds file size on long videos
    nms: str = "local_max"  # local_max (E2E-Spot) | greedy | soft | none
    nms_window: int = 1  # frames
    batch_size: int = 4  # windows per forward pass
    soccernet_metric: str = "tight"  # tight | loose | at1 .. at5
    tta: str = "none"  # test-time augmentation: none | flip (mean of the scores of each clip and its mirror)
    # At the end of training, choose nms / nms_window on the validation split (every method x nms_windows, best
    # mean mAP over the tolerances) and store it in the run (nms.json), where infer and stream read it.
    choose_nms: bool = False
    nms_windows: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])


@dataclass
class Config:
    """A whole experiment."""

    name: str = "paper"
    num_classes: int | None = None  # event classes K (outputs K+1); None = read from data.root/class.txt
    out: str = "runs/default"  # run folder
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def frames_dir(self) -> str:
        """The frame store (``data.frames`` or ``<data.root>/frames``)."""
        return self.data.frames or str(Path(self.data.root) / "frames")

    @property
    def clips_per_epoch(self) -> int:
        """Training clips per epoch (E2E-Spot: 500,000 frames per epoch)."""
        if self.train.clips_per_epoch is not None:
            return self.train.clips_per_epoch
        return 500_000 // self.model.clip_len

    @property
    def start_val_epoch(self) -> int:
        """First epoch (0-based) from which validation mAP is computed."""
        if self.train.start_val_epoch is not None:
            return self.train.start_val_epoch
        return max(0, self.train.epochs - 20)


# --------------------------------------------------------------------------------------------------------------
# dict <-> dataclass with type checking


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping, got {value!r}")
        return _from_dict(tp, value, key + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"config key '{key}': expected {len(args)} values, got {value!r}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        out = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}': expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads '1e-3' (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
    return value


def _from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        key = prefix + unknown[0]
        close = closest_keys(key)
        hint = (f"did you mean {' or '.join(close)}?" if close
                else f"known under '{prefix or '.'}': {', '.join(sorted(names))}")
        raise ConfigError(f"unknown config key '{key}' ({hint})")
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    """A plain, YAML-safe dict of a config dataclass."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def from_dict(data: dict) -> Config:
    """Build a Config from a (possibly partial) nested dict; unknown keys and wrong types are errors."""
    return _merge(Config(), data)


def _merge(cfg: Config, data: dict) -> Config:
    base = to_dict(cfg)
    _deep_update(base, data)
    return _from_dict(Config, base)


def _deep_update(base: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


# --------------------------------------------------------------------------------------------------------------
# presets, files, overrides


def list_presets() -> list[str]:
    """Names of the presets shipped with pespot (``configs/*.yaml`` and ``configs/ablations/*.yaml``)."""
    names = [p.stem for p in sorted(PRESET_DIR.glob("*.yaml"))]
    names += [f"ablations/{p.stem}" for p in sorted((PRESET_DIR / "ablations").glob("*.yaml"))]
    return names


def _preset_path(name: str) -> Path:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        presets = list_presets()
        close = difflib.get_close_matches(name, presets, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}?" if close else f"known: {', '.join(presets)}"
        raise ConfigError(f"unknown preset '{name}' ({hint})")
    return path


def config_keys(cfg: Any = None, prefix: str = "") -> list[str]:
    """Every dotted leaf key of a config (``train.epochs``, ``model.astrm.beta``, ...)."""
    cfg = Config() if cfg is None else cfg
    keys = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            keys += config_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def closest_keys(key: str, n: int = 3) -> list[str]:
    """The known config keys closest to a mistyped ``key`` (difflib), best first; [] when none is close."""
    keys = config_keys()
    close = difflib.get_close_matches(key, keys, n=n, cutoff=0.75)
    if not close:  # the last part alone: 'train.epoch' -> 'train.epochs', 'epochs' -> 'train.epochs'
        leaf = key.rsplit(".", 1)[-1]
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in keys}
        close = [by_leaf[m] for m in difflib.get_close_matches(leaf, list(by_leaf), n=n, cutoff=0.8)]
    return close


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    return data


def _resolve_file(path: Path, seen: tuple = ()) -> dict:
    """Read a config file, following ``base:`` (a preset name or a path relative to the file)."""
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'base' chain loops")
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = Path(base)
    if not base_path.suffix:
        base_path = _preset_path(str(base))
    elif not base_path.is_absolute():
        base_path = path.parent / base_path
    merged = _resolve_file(base_path, seen + (path.resolve(),))
    _deep_update(merged, data)
    return merged


def load_config(source: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a preset name or YAML file (``None`` = the paper's defaults) and apply ``key=value`` overrides."""
    data: dict = {}
    if source is not None:
        path = Path(source)
        if path.suffix in (".yaml", ".yml") or path.exists():
            data = _resolve_file(path)
        else:
            data = _resolve_file(_preset_path(str(source)))
    cfg = from_dict(data)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg


def preset_defaults(name: str) -> Config:
    """A preset's values without the checks of ``load_config`` (and without importing the registered parts):
    for help texts that print a preset's defaults."""
    return from_dict(_resolve_file(_preset_path(name)))


def run_default(key: str, nms_json: bool = False) -> str:
    """How a help text names a default that the run's config decides: "the run's KEY; pespot's default V" (V from
    ``Config()``, so it cannot drift); ``nms_json``: the run's ``nms.json``, when it has one, comes first."""
    value: Any = Config()
    for part in key.split("."):
        value = getattr(value, part)
    shown = "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
    first = "the run's nms.json when it has one (eval --choose-nms --run, eval.choose_nms), else " if nms_json else ""
    return f"{first}the run's {key}; pespot's default {shown}"


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=c`` -> (['a', 'b'], value parsed as YAML)."""
    if "=" not in item:
        raise ConfigError(f"--set '{item}': expected key=value, e.g. train.epochs=10")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set '{item}': empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``--set a.b=c`` overrides; an unknown key or a wrong type is a ConfigError naming the key."""
    data = to_dict(cfg)
    for item in overrides:
        parts, value = parse_override(item)
        node = data
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"--set {item}: unknown config key '{'.'.join(parts[: i + 1])}'"
                                  f"{_did_you_mean('.'.join(parts))}")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"--set {item}: unknown config key '{'.'.join(parts)}'{_did_you_mean('.'.join(parts))}")
        node[parts[-1]] = value
    return _from_dict(Config, data)


def _did_you_mean(key: str) -> str:
    close = closest_keys(key)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def config_differences(a: Config, b: Config, keys: tuple[str, ...]) -> list[tuple[str, Any, Any]]:
    """(dotted key, value in a, value in b) for every leaf under ``keys`` that differs."""
    da, db = to_dict(a), to_dict(b)
    out: list[tuple[str, Any, Any]] = []

    def walk(x: Any, y: Any, key: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y)):
                walk(x.get(k), y.get(k), f"{key}.{k}")
        elif x != y:
            out.append((key, x, y))

    for key in keys:
        x, y = da, db
        for part in key.split("."):
            x, y = x[part], y[part]
        walk(x, y, key)
    return out


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from pespot.fsutil import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


_CHOICES = {
    "model.backbone": ("regnety_002", "regnety_008"),
    "model.softic_feature": ("temporal", "backbone"),
    "model.residual_init": ("live", "zero"),
    "model.input": ("rgb", "gray_diff"),
    "model.astrm.gt_activation": ("sigmoid", "softmax"),
    "model.astrm.gt_init": ("torch", "tam"),
    "loss.contrastive": ("softic", "ic", "none"),
    "loss.omega_mode": ("divide", "multiply", "none"),
    "optim.sam": ("asam", "sam", "none"),
    "train.criterion": ("map", "loss", "last"),
    "train.selection_nms": ("none", "eval"),
    "train.amp": ("auto", "bf16", "none"),
    "eval.tta": ("none", "flip"),
}


def validate(cfg: Config) -> None:
    """Check choices and ranges; raise ConfigError naming the key."""
    data = to_dict(cfg)
    for key, choices in _CHOICES.items():
        node: Any = data
        for part in key.split("."):
            node = node[part]
        if node not in choices:
            raise ConfigError(f"config key '{key}': expected one of {', '.join(choices)}, got {node!r}")
    from pespot import registry  # the pluggable parts: temporal modules and heads, losses, NMS, schedules

    for key, reg in registry.ALL.items():
        node = data
        for part in key.split("."):
            node = node[part]
        reg.get(node)  # a ConfigError naming the key and the registered names
    positive = {
        "model.clip_len": cfg.model.clip_len,
        "train.epochs": cfg.train.epochs,
        "train.batch_size": cfg.train.batch_size,
        "model.astrm.beta": cfg.model.astrm.beta,
        "model.astrm.kernel_size": cfg.model.astrm.kernel_size,
        "loss.bank_size": cfg.loss.bank_size,
        "eval.batch_size": cfg.eval.batch_size,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"config key '{key}': expected a positive value, got {value}")
    if cfg.model.astrm.kernel_size % 2 != 1:
        raise ConfigError(f"config key 'model.astrm.kernel_size': expected an odd number, got {cfg.model.astrm.kernel_size}")
    if not 0.0 <= cfg.eval.overlap < 1.0:
        raise ConfigError(f"config key 'eval.overlap': expected 0 <= overlap < 1, got {cfg.eval.overlap}")
    if cfg.num_classes is not None and cfg.num_classes <= 0:
        raise ConfigError(f"config key 'num_classes': expected a positive integer, got {cfg.num_classes}")
    if cfg.model.temporal_module == "astrm" and cfg.model.clip_len < cfg.model.astrm.kernel_size:
        raise ConfigError(
            f"config key 'model.clip_len': ASTRM with kernel {cfg.model.astrm.kernel_size} needs at least "
            f"{cfg.model.astrm.kernel_size} frames, got {cfg.model.clip_len}")
    if cfg.data.blur_max_sigma is not None and not cfg.data.blur_max_sigma >= 0:
        raise ConfigError(f"config key 'data.blur_max_sigma': expected >= 0 or null, got {cfg.data.blur_max_sigma}")
    if cfg.data.mixup and cfg.data.mixup_alpha <= 0:
        raise ConfigError(f"config key 'data.mixup_alpha': expected > 0, got {cfg.data.mixup_alpha}")
    _validate_ranges(cfg)


def _validate_ranges(cfg: Config) -> None:
    """Values that would otherwise fail deep inside torch (or silently mean something else) once training runs."""
    positive = {
        "model.astrm.alpha": cfg.model.astrm.alpha,
        "model.projection_dim": cfg.model.projection_dim,
        "model.hidden_dim": cfg.model.hidden_dim,  # 0 would silently mean "the default width"
        "model.head_layers": cfg.model.head_layers,
        "model.head_heads": cfg.model.head_heads,
        "data.height": cfg.data.height,
        "data.crop": cfg.data.crop,
        "train.threads": cfg.train.threads,  # 0 would silently mean "torch's default"
        "train.val_videos": cfg.train.val_videos,
    }
    for key, value in positive.items():
        if value is not None and value <= 0:
            raise ConfigError(f"config key '{key}': expected a positive value{_or_null(key)}, got {value}")
    non_negative = {
        "data.num_workers": cfg.data.num_workers,
        "data.pad_len": cfg.data.pad_len,
        "data.dilate_len": cfg.data.dilate_len,
        "optim.lr": cfg.optim.lr,
        "optim.weight_decay": cfg.optim.weight_decay,
        "optim.asam_eta": cfg.optim.asam_eta,
        "eval.nms_window": cfg.eval.nms_window,
        "eval.threshold": cfg.eval.threshold,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"config key '{key}': expected >= 0, got {value}")
    if not 0.0 <= cfg.optim.sam_start <= 1.0:
        raise ConfigError(f"config key 'optim.sam_start': expected a fraction of the steps in [0, 1], "
                          f"got {cfg.optim.sam_start}")
    if cfg.optim.rho is not None and cfg.optim.rho < 0:
        raise ConfigError(f"config key 'optim.rho': expected >= 0 or null (the method's usual value), "
                          f"got {cfg.optim.rho}")
    if not cfg.eval.nms_windows or any(not isinstance(w, int) or w < 0 for w in cfg.eval.nms_windows):
        raise ConfigError(f"config key 'eval.nms_windows': expected a non-empty list of non-negative windows "
                          f"(frames), got {cfg.eval.nms_windows}")
    if cfg.eval.top_k is not None and cfg.eval.top_k < 1:
        raise ConfigError(f"config key 'eval.top_k': expected a positive number of events or null, got {cfg.eval.top_k}")
    fs_kernel = cfg.model.astrm.fs_kernel
    if fs_kernel <= 0 or fs_kernel % 2 != 1:
        raise ConfigError(f"config key 'model.astrm.fs_kernel': expected a positive odd number, got {fs_kernel}")
    if not 0.0 <= cfg.model.dropout < 1.0:
        raise ConfigError(f"config key 'model.dropout': expected 0 <= dropout < 1, got {cfg.model.dropout}")
    for i, beta in enumerate(cfg.optim.betas):
        if not 0.0 <= beta < 1.0:
            raise ConfigError(f"config key 'optim.betas[{i}]': expected 0 <= beta < 1, got {beta}")
    head, width, heads = cfg.model.temporal_head, cfg.model.hidden_dim, cfg.model.head_heads or 8
    # width None = the backbone's (368 or 768), a multiple of 8.
    if (head.startswith("transformer") or head == "deformable") and width is not None and width % heads != 0:
        raise ConfigError(f"config key 'model.hidden_dim': the {head} head has {heads} attention heads, so the "
                          f"width must be a multiple of {heads}, got {width}")


def _or_null(key: str) -> str:
    nullable = ("model.hidden_dim", "model.head_layers", "model.head_heads", "data.crop", "train.threads",
                "train.val_videos")
    return " or null" if key in nullable else ""
