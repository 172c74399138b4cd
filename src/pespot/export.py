"""Export a trained spotter to ONNX or TorchScript, and run an exported ONNX model as an inference engine.

What is exported is the whole per-clip function of ``pespot infer``'s model call: normalised frames
(B, T, 3, H, W) float32 -> backbone (with its ASTRM/GSM/TSM modules) -> temporal head -> classifier ->
activation (sigmoid for BCE/focal models, softmax for CE models) -> per-frame scores (B, T, K+1). T is fixed
(the clip length the temporal modules were built for); the batch, height and width axes are dynamic. Reading,
resizing, cropping, normalising, sliding windows and NMS stay in Python (``pespot.infer``), shared with the
PyTorch engine, so both engines cut the same windows and only the network differs.

ASTRM's fast path is three custom autograd Functions that a tracer cannot see through, and its reference form
(``ASTRM.forward_reference``) does its temporal convolution as a grouped conv with ``B*C`` groups (a number the
traced graph would freeze at the export batch) and writes its result through an in-place copy into a view (which
the ONNX tracer drops). For export each ASTRM runs :func:`_astrm_export_forward` instead: the reference's own
Fs, Ft and Gt (``forward_reference``), composed as in eq. 1, with the temporal convolution as K shifted products.
``check_export`` and the tests compare every exported model with the PyTorch model's usual (fast) output.

The exported file carries what inference needs besides the weights (ONNX metadata / a TorchScript extra file):
the run's config, the class names, the activation, and the checkpoint it came from (path and SHA-256), so
``pespot infer --engine onnx RUN`` refuses an export that is older than the run's checkpoint.

Integrity: beside the exported file, ``<file>.sha256`` holds its SHA-256 (``sha256sum`` format, written atomically
after the file; the old one is removed before the file is replaced). Loading an export (``load_onnx_predictor``,
``load_torchscript``) checks it: a damaged file is one line naming it, never scores from flipped weights. An export
without the file (made before pespot wrote it) is accepted as it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
import types
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pespot.config import from_dict, to_dict
from pespot.errors import ConfigError, DataError
from pespot.fsutil import atomic_path, write_text_atomic

EXPORT_FORMAT = "pespot-export-v1"
EXPORT_FORMATS = ("onnx", "torchscript")
EXPORT_DIR = "export"  # inside a run folder
DEFAULT_NAMES = {"onnx": "spotter.onnx", "torchscript": "spotter.torchscript.pt"}
ONNX_OPSET = 17
PARITY_TOLERANCE = 1e-4  # max |score difference| accepted between the exported model and PyTorch


def default_export_path(run: str | Path, fmt: str) -> Path:
    """Where ``pespot export RUN`` writes by default, and where ``--engine onnx RUN`` looks:
    ``RUN/export/spotter.onnx`` (``spotter.torchscript.pt`` for TorchScript)."""
    return Path(run) / EXPORT_DIR / DEFAULT_NAMES[fmt]


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def digest_path(path: str | Path) -> Path:
    """Where the SHA-256 of an exported file is kept: ``<file>.sha256`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def write_export_digest(path: str | Path) -> Path:
    """Write ``<path>.sha256`` (``sha256sum`` format) atomically; returns it."""
    path = Path(path)
    write_text_atomic(digest_path(path), f"{file_sha256(path)}  {path.name}\n")
    return digest_path(path)


def verify_export_digest(path: str | Path) -> None:
    """A DataError when ``path`` does not match its ``<path>.sha256``; nothing when there is none (an export
    made before pespot wrote one)."""
    path, sidecar = Path(path), digest_path(path)
    if not sidecar.is_file():
        return
    try:
        expected = sidecar.read_text().split()[0].lower()
    except (OSError, UnicodeDecodeError, IndexError):
        raise DataError(f"{sidecar}: not a SHA-256 file (expected '<hex digest>  {path.name}'); export the "
                        "model again") from None
    if file_sha256(path) != expected:
        raise DataError(f"{path}: contents do not match {sidecar.name} (file damaged or changed after export); "
                        "export the model again with `pespot export`")


# ------------------------------------------------------------------------------------------------------------
# the exported function


def _shift_frames(y: torch.Tensor, offset: int) -> torch.Tensor:
    """``out[:, t] = y[:, t + offset]`` on (B, T, ...), zero outside the clip; out of place (traceable)."""
    length = y.shape[1]
    if offset == 0:
        return y
    if abs(offset) >= length:
        return torch.zeros_like(y)
    if offset > 0:
        return torch.cat([y[:, offset:], torch.zeros_like(y[:, :offset])], dim=1)
    return torch.cat([torch.zeros_like(y[:, offset:]), y[:, :offset]], dim=1)


def _astrm_export_forward(self, x: torch.Tensor) -> torch.Tensor:
    """ASTRM (eq. 1) for tracing: the reference's Fs, Ft and Gt, then the depthwise temporal convolution with
    the per-(clip, channel) kernels as K shifted products. (B*T, C, H, W) -> (B*T, C, H, W)."""
    theta = self.gt(x) if self.gt is not None else None  # (B, C, K)
    y = x
    if self.fs is not None:
        y = y * (1 + self.fs.forward_reference(x))  # (B*T, 1, H, W) broadcast over channels
    if self.ft is not None:
        y = y * (1 + self.ft.forward_reference(x))
    if theta is None:
        return y
    n, c, h, w = y.shape
    y5 = y.reshape(n // self.clip_len, self.clip_len, c, h, w)  # (B, T, C, H, W)
    taps = theta.to(y.dtype)[:, None, :, :, None, None]  # (B, 1, C, K, 1, 1)
    half = theta.shape[-1] // 2
    out = y5 * taps[:, :, :, half]
    for k in range(theta.shape[-1]):
        if k != half:  # frame t takes y[t + k - K//2] (cross-correlation, zero padded)
            out = out + _shift_frames(y5, k - half) * taps[:, :, :, k]
    return out.reshape(n, c, h, w)


@contextlib.contextmanager
def traceable(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block every ASTRM of ``model`` runs :func:`_astrm_export_forward`, and the transformer heads
    run their plain layers (torch's fused inference kernel for ``nn.TransformerEncoderLayer`` has no ONNX form);
    both restored on exit."""
    from pespot.model.astrm import ASTRM

    modules = [m for m in model.modules() if isinstance(m, ASTRM)]
    for m in modules:
        m.forward = types.MethodType(_astrm_export_forward, m)  # an instance attribute shadows the class's
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield model
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for m in modules:
            del m.forward


class ScoringModel(nn.Module):
    """The spotter followed by its activation: normalised frames (B, T, 3, H, W) -> scores (B, T, K+1)."""

    def __init__(self, model: nn.Module, activation: str) -> None:
        super().__init__()
        self.model = model
        self.activation = activation

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) -> per-frame class probabilities (B, T, K+1)."""
        logits = self.model(frames).float()
        return torch.softmax(logits, dim=-1) if self.activation == "softmax" else torch.sigmoid(logits)


def example_input(predictor, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A random normalised clip of the size the predictor reads: (batch, T, 3, H, W), W = 16/9 H without crop."""
    height = predictor.crop or predictor.height
    width = predictor.crop or max(2, round(predictor.height * 16 / 9 / 2) * 2)
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, predictor.clip_len, 3, height, width, generator=gen)


# ------------------------------------------------------------------------------------------------------------
# writing


@dataclass
class ExportReport:
    """What ``export_model`` wrote and how close it is to PyTorch."""

    path: Path
    format: str
    clip_len: int
    input_shape: tuple[int, ...]  # of the example clip used to trace and check
    max_abs_diff: float | None  # exported vs PyTorch scores on the example clip (None: not checked)
    seconds: float


def _metadata(predictor) -> dict[str, str]:
    ckpt = Path(predictor.source) if predictor.source else None
    meta = {
        "pespot_format": EXPORT_FORMAT,
        "config": json.dumps(to_dict(predictor.cfg)),
        "classes": json.dumps(list(predictor.classes)),
        "activation": predictor.activation,
        "clip_len": str(predictor.clip_len),
        "input": "normalised frames (batch, clip_len, 3, height, width) float32, ImageNet mean/std, RGB",
        "output": "per-frame scores (batch, clip_len, num_classes + 1), column 0 background, after activation",
    }
    if ckpt is not None and ckpt.is_file():
        meta["checkpoint"] = str(ckpt.resolve())
        meta["checkpoint_sha256"] = file_sha256(ckpt)
    return meta


def export_model(predictor, fmt: str, out: str | Path, check: bool = True) -> ExportReport:
    """Export the predictor's model (whole spotter + activation, clip length fixed) as ``fmt`` to ``out``.

    The file is written atomically, then its SHA-256 beside it (``<out>.sha256``). With ``check`` the exported
    model is run on the example clip and compared with the PyTorch model (fast path); a difference above
    ``PARITY_TOLERANCE`` is an error and nothing is kept.
    """
    import time

    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"--format '{fmt}': expected one of {', '.join(EXPORT_FORMATS)}")
    if predictor.model is None:
        raise ConfigError(f"{predictor.source}: only a PyTorch checkpoint can be exported")
    out = Path(out)
    started = time.perf_counter()
    model = ScoringModel(predictor.model, predictor.activation).eval().cpu()
    example = example_input(predictor)
    meta = _metadata(predictor)
    with atomic_path(out) as tmp:
        with traceable(model), warnings.catch_warnings(), torch.no_grad():
            # Tracer warnings say that Python-side shape checks are frozen: true, and T is fixed by design.
            warnings.simplefilter("ignore")
            if fmt == "onnx":
                _write_onnx(model, example, tmp, meta)
            else:
                traced = torch.jit.trace(model, (example,), check_trace=False)
                torch.jit.save(traced, str(tmp), _extra_files={"pespot.json": json.dumps(meta)})
        diff = None
        if check:
            diff = max_abs_diff(predictor, tmp, fmt, example)
            if not diff <= PARITY_TOLERANCE:
                raise DataError(f"{out}: the exported model differs from PyTorch by {diff:.3g} (max |score "
                                f"difference|, tolerance {PARITY_TOLERANCE:g}); nothing written (an untrained "
                                "network can amplify float32 rounding this much: --no-check skips the check)")
        # A crash between the rename and the new digest then leaves no digest, never a stale one.
        digest_path(out).unlink(missing_ok=True)
    write_export_digest(out)
    predictor.model.to(predictor.device)
    return ExportReport(path=out, format=fmt, clip_len=predictor.clip_len, input_shape=tuple(example.shape),
                        max_abs_diff=diff, seconds=time.perf_counter() - started)


def _write_onnx(model: nn.Module, example: torch.Tensor, path: Path, meta: dict[str, str]) -> None:
    import onnx

    with tempfile.TemporaryDirectory(prefix="pespot-export-") as tmp:
        raw = Path(tmp) / "model.onnx"
        torch.onnx.export(model, (example,), str(raw), input_names=["frames"], output_names=["scores"],
                          dynamic_axes={"frames": {0: "batch", 3: "height", 4: "width"}, "scores": {0: "batch"}},
                          opset_version=ONNX_OPSET, dynamo=False)
        proto = onnx.load(str(raw))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "pespot"
    onnx.save(proto, str(path))


def max_abs_diff(predictor, path: str | Path, fmt: str, clip: torch.Tensor) -> float:
    """max |exported - PyTorch| of the scores of ``clip`` (normalised, (B, T, 3, H, W))."""
    with torch.inference_mode():
        reference = ScoringModel(predictor.model, predictor.activation).eval().cpu()(clip).numpy()
    if fmt == "onnx":
        scores = OnnxEngine(path, device="cpu")(clip)
    else:
        with torch.inference_mode():
            scores = load_torchscript(path)[0](clip).numpy()
    return float(np.abs(scores - reference).max())


# ------------------------------------------------------------------------------------------------------------
# reading


def _onnx_providers(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device in ("auto", "cuda") or device.startswith("cuda:"):
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if device != "auto":
            raise ConfigError(f"--device '{device}': onnxruntime has no CUDA provider here (install "
                              "onnxruntime-gpu)")
    elif device != "cpu":
        raise ConfigError(f"--device '{device}': expected auto, cpu, cuda or cuda:N")
    return ["CPUExecutionProvider"]


class OnnxEngine:
    """An exported ONNX spotter run by onnxruntime: normalised frames (B, T, 3, H, W) -> scores (B, T, K+1)."""

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        # onnxruntime's own default is one thread per core; follow torch's setting so both engines compare fairly
        # and a shared machine is not oversubscribed.
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=_onnx_providers(device))
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DataError(f"{self.path}: not a readable ONNX model ({first})") from None
        self.providers = self.session.get_providers()
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, frames: torch.Tensor) -> np.ndarray:
        """(B, T, 3, H, W) float -> (B, T, K+1) float32 numpy."""
        x = np.ascontiguousarray(frames.detach().cpu().numpy(), dtype=np.float32)
        return self.session.run(None, {"frames": x})[0]


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, dict[str, str]]:
    """An exported TorchScript spotter and its metadata."""
    extra = {"pespot.json": ""}
    verify_export_digest(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated": still the loader
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except (RuntimeError, ValueError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: not a readable TorchScript model ({first})") from None
    meta = json.loads(extra["pespot.json"]) if extra["pespot.json"] else {}
    return module.eval(), meta


def find_onnx_model(run_or_model: str | Path) -> tuple[Path, Path | None]:
    """An ``.onnx`` file -> (itself, None); a run folder -> (its ``export/spotter.onnx``, the checkpoint it must
    have been exported from)."""
    from pespot.infer import find_checkpoint

    path = Path(run_or_model)
    if path.is_file():
        if path.suffix.lower() != ".onnx":
            raise DataError(f"{path}: --engine onnx needs an .onnx file made by `pespot export` (or a run folder "
                            f"holding {EXPORT_DIR}/{DEFAULT_NAMES['onnx']}), not a checkpoint")
        return path, None
    if not path.is_dir():
        raise DataError(f"{path}: ONNX model or run folder not found")
    model = default_export_path(path, "onnx")
    if not model.is_file():
        raise DataError(f"{path}: run folder has no {EXPORT_DIR}/{DEFAULT_NAMES['onnx']}; make it with "
                        f"`pespot export {path} --format onnx`")
    return model, find_checkpoint(path)


def run_classes(run: str | Path) -> tuple[list[str], str]:
    """The classes of a run folder (its classes.txt, else its checkpoint), a checkpoint or an export, and the
    file they were read from."""
    from pespot.data.labels import load_classes
    from pespot.infer import find_checkpoint
    from pespot.train.checkpoint import load_checkpoint

    path = Path(run)
    if path.is_dir() and (path / "classes.txt").is_file():
        return load_classes(path / "classes.txt"), str(path / "classes.txt")
    if path.is_file() and path.suffix.lower() == ".onnx":
        meta = OnnxEngine(path, device="cpu", threads=1).metadata
        try:
            return [str(c) for c in json.loads(meta["classes"])], str(path)
        except (KeyError, ValueError):
            raise DataError(f"{path}: not a pespot export (no class list in its metadata)") from None
    checkpoint = find_checkpoint(path)
    return [str(c) for c in load_checkpoint(checkpoint)["classes"]], str(checkpoint)


def check_same_classes(model: Path, model_classes: list[str], run: str | Path) -> None:
    """A DataError naming both files and the difference when ``model``'s classes are not ``run``'s."""
    classes, source = run_classes(run)
    if classes == model_classes:
        return
    only_model = [c for c in model_classes if c not in classes]
    only_run = [c for c in classes if c not in model_classes]
    parts = [f"only in the model: {', '.join(only_model)}" if only_model else "",
             f"only in the run: {', '.join(only_run)}" if only_run else ""]
    difference = "; ".join(p for p in parts if p) or "the same names in another order"
    raise DataError(f"{model}: its classes are not those of {source} ({difference}); give --model the export of "
                    "this run, or RUN the run the model comes from")


def load_onnx_predictor(run_or_model: str | Path, device: str = "auto", classes: list[str] | None = None,
                        classes_source: str = "--classes", threads: int | None = None,
                        run: str | Path | None = None):
    """A ``pespot.infer.Predictor`` whose windows are scored by onnxruntime (``engine``), with the config and
    classes stored in the exported file. ``device``: auto (CUDA provider when present, else CPU), cpu, cuda.
    ``run``: the RUN given beside ``--model FILE.onnx``, whose classes the model must have."""
    from pespot.infer import Predictor

    path, checkpoint = find_onnx_model(run_or_model)
    verify_export_digest(path)
    engine = OnnxEngine(path, device=device, threads=threads)
    meta = engine.metadata
    if meta.get("pespot_format") != EXPORT_FORMAT:
        raise DataError(f"{path}: not a pespot export (no '{EXPORT_FORMAT}' metadata); make it with "
                        "`pespot export`")
    if checkpoint is not None and meta.get("checkpoint_sha256") != file_sha256(checkpoint):
        raise DataError(f"{path}: exported from another checkpoint than {checkpoint} (it changed since); run "
                        f"`pespot export {Path(run_or_model)} --format onnx` again")
    try:
        cfg = from_dict(json.loads(meta["config"]))
        model_classes = [str(c) for c in json.loads(meta["classes"])]
    except (KeyError, ValueError, ConfigError) as err:
        raise DataError(f"{path}: bad pespot metadata ({err})") from None
    if run is not None:
        check_same_classes(path, model_classes, run)
    if classes is not None:
        if len(classes) != len(model_classes):
            raise DataError(f"{path}: the model has {len(model_classes)} classes, {classes_source} gives "
                            f"{len(classes)} (use the class.txt of the dataset the model was trained on)")
        model_classes = list(classes)
    activation = meta.get("activation", "sigmoid")
    # The run's NMS choice (nms.json) when a run folder was given (its export, checked against its checkpoint).
    from pespot.postprocess import use_run_nms_choice

    nms_from = use_run_nms_choice(cfg, checkpoint) if checkpoint is not None else None
    return Predictor(model=None, cfg=cfg, classes=model_classes, device=torch.device("cpu"), activation=activation,
                     source=str(path), engine=engine, tta=getattr(cfg.eval, "tta", "none"), nms_from=nms_from)


def engine_description(predictor) -> str:
    """'torch (cpu)' or 'onnx (CPUExecutionProvider)', for reports."""
    engine = getattr(predictor, "engine", None)
    if isinstance(engine, OnnxEngine):
        return f"onnx ({engine.providers[0]})"
    return f"torch ({predictor.device})"
