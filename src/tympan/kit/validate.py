"""`tympan validate`: a strict validator for any HEAR module (tympan, hearbaseline.naive, ...).

    tympan validate MODULE [--model PATH] [--device DEV] [--long-minutes M] [--json]

    from tympan.kit.validate import validate
    report = validate("hearbaseline.naive", long_minutes=1.0)
    report.passed, report.check("hop_size").message

What is checked, and why. HEAR scores an embedding through three module-level functions
(`load_model`, `get_timestamp_embeddings`, `get_scene_embeddings`); a module that breaks the
contract quietly scores badly instead of crashing, so everything the contract implies is
checked here, with the value found and what to change:

- Everything the official hear-validator checks: the module imports and has the three
  functions; `load_model` returns a torch.nn.Module; `sample_rate` is one of HEAR's rates;
  both embedding sizes are ints; timestamp embeddings of 16 x 2.0 s and 2 x {1.07, 1.98,
  4.0} s of white noise and scene embeddings of 8 x 3.74 s are float32 with the declared
  shapes: embeddings (n_sounds, n_timestamps, timestamp_embedding_size), timestamps
  (n_sounds, n_timestamps), scene (n_sounds, scene_embedding_size).
- What it misses and what cost 2021 entries their scores: timestamps in milliseconds (a
  model returning seconds passes the official validator and scores 0 on event tasks);
  float32 timestamps; no NaN/Inf (the evaluation kit refuses them); a regular hop and
  hop <= 50 ms (onsets are scored with a 50 ms tolerance; the official validator only
  warns, we fail); frame centres covering the clip; the same embedding for a sound alone and
  at every index of batches of 2, 5 and 16 short sounds beside louder and quieter ones (a
  batch-wide peak or statistic, or another code path for larger batches, changes it); the
  same output for the same input; tones and digital silence (the kit pads clips with
  zeros); clips of 1 ms and 10 ms; lengths that are not a whole number of hops; a long
  clip (default 20 minutes, batch 1, the HEAR maximum) with its wall time and peak memory,
  failing above HEAR's 16 GB GPU limit; outputs on the input's device.

Every call runs under torch.no_grad() with the model moved by `.to(device)` and the audio on
that device, as the HEAR evaluation kit does. Test audio is deterministic (seeded noise and
tones, float32 in [-1, 1]) at the module's own sample rate. An exception inside the module
is a failed check carrying the exception text; checks that need what failed are skipped.
Warnings (coarse or fractional hop, slow model, model left in training mode) never change
the exit code: 0 when every required check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import resource
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import torch

from tympan.kit.hear import HEAR_FUNCTIONS

Status = Literal["pass", "fail", "warn", "skip"]

SAMPLE_RATES = (16000, 22050, 32000, 44100, 48000)

# The official validator's inputs: (n_sounds, seconds).
OFFICIAL_TIMESTAMP_INPUTS = ((16, 2.0), (2, 1.07), (2, 1.98), (2, 4.0))
OFFICIAL_SCENE_INPUT = (8, 3.74)
SHORT_SECONDS = (0.001, 0.010)
# Batch independence: each of BATCH_POOL short sounds alone, and every index of batches of
# these sizes drawn from them (the HEAR kit batches up to 16 clips and more).
BATCH_POOL = 16
BATCH_SIZES = (2, 5, 16)
BATCH_SECONDS = 0.25  # short: per embedding function, 16 sounds alone and 2 + 5 + 16 in batches

MAX_HOP_MS = 50.0  # HEAR scores note onsets with a 50 ms tolerance
FINE_HOP_MS = 25.0  # above this, a hop still passes but costs onset precision
HOP_TOLERANCE_MS = 1e-3
FLOAT32_EPS = torch.finfo(torch.float32).eps
# Two runs of the same sound may differ by float rounding (batched kernels, GPU atomics);
# the allowed difference is this fraction of the largest |value|, plus a floor for all-zero output.
MATCH_RTOL = 1e-4
MATCH_ATOL = 1e-7
GPU_LIMIT_BYTES = 16 * 1024**3  # HEAR rule: 20 minutes of audio within 16 GB of GPU memory
MIN_REALTIME_FACTOR = 10.0  # seconds of audio per second of compute, below which we warn

# Required checks in report order. Each probe group (the official inputs, tones and silence,
# short clips, odd lengths, ...) is its own check that fails when a call raises; the
# properties of what came back (dtype, shape, units, hop, ...) are checked once over all
# outputs, so one defect fails one check that names the input it was seen on.
REQUIRED_CHECKS = (
    "device",
    "import",
    "api",
    "load_model",
    "sample_rate",
    "embedding_sizes",
    "timestamp_embeddings",
    "scene_embeddings",
    "tones_and_silence",
    "short_clips",
    "odd_lengths",
    "determinism",
    "batch_independence",
    "long_clip",
    "gpu_memory",
    "embedding_dtype",
    "timestamp_dtype",
    "shapes",
    "finite",
    "output_device",
    "timestamp_units",
    "hop_regular",
    "hop_size",
    "coverage",
)


@dataclass
class Check:
    """One check's result. figures: the numbers behind the message (ms, seconds, bytes)."""

    name: str
    status: Status
    message: str
    figures: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"{self.status.upper():4}  {self.name} - {self.message}"


@dataclass
class Report:
    """All results of one run. `checks` holds required checks in REQUIRED_CHECKS order, then warnings."""

    module: str
    model: str
    device: str
    checks: list[Check] = field(default_factory=list)
    long_clip: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.status == "warn"]

    @property
    def exit_code(self) -> int:
        """0: every required check passed; 2: the --device cannot be used (a usage error, the
        module was not tried); 1: the module failed a check."""
        if any(c.name == "device" and c.status == "fail" for c in self.checks):
            return 2
        return 0 if self.passed else 1

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r}; checks: {[c.name for c in self.checks]}")

    def verdict(self) -> str:
        counts = {s: sum(c.status == s for c in self.checks) for s in ("pass", "fail", "skip", "warn")}
        tally = (
            f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped, "
            f"{counts['warn']} warning{'s' if counts['warn'] != 1 else ''}"
        )
        if self.passed:
            return f"VERDICT: PASS - {self.module} follows the HEAR API ({tally})"
        names = ", ".join(c.name for c in self.failures)
        return f"VERDICT: FAIL - {self.module}: {names} ({tally})"

    def text(self) -> str:
        model = self.model or "load_model() default"
        lines = [f"tympan validate {self.module} (model: {model}, device: {self.device})"]
        lines += [c.line() for c in self.checks if c.status != "warn"]
        if self.warnings:
            lines.append("warnings (do not change the verdict):")
            lines += [c.line() for c in self.warnings]
        lines.append(self.verdict())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "model": self.model,
            "device": self.device,
            "verdict": "pass" if self.passed else "fail",
            "exit_code": self.exit_code,
            "checks": [
                {"name": c.name, "status": c.status, "message": c.message, "figures": _json_safe(c.figures)}
                for c in self.checks
            ],
            "long_clip": _json_safe(self.long_clip),
        }


def _json_safe(value: Any) -> Any:
    """NaN/Inf figures become None: strict JSON has no such numbers."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------------------------
# Test audio and the outputs collected from the module


class _Signals:
    """Deterministic test audio: float32 (n_sounds, n_samples) in [-1, 1] on the device.

    Generated on the CPU from seeded generators, then moved: the same seed gives the same
    audio on every device, so results on CPU and CUDA are comparable.
    """

    def __init__(self, sample_rate: int, device: torch.device):
        self.sample_rate = sample_rate
        self.device = device

    def n_samples(self, seconds: float) -> int:
        return max(1, round(seconds * self.sample_rate))

    def noise(self, n_sounds: int, n_samples: int, seed: int, amplitude: float = 1.0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return ((torch.rand(n_sounds, n_samples, generator=g) * 2 - 1) * amplitude).to(self.device)

    def tone(self, n_samples: int, freqs_hz: tuple[float, ...], amplitude: float = 0.5) -> torch.Tensor:
        """A sum of sines, (1, n_samples), peak at most `amplitude`."""
        t = torch.arange(n_samples, dtype=torch.float64) / self.sample_rate
        wave = sum(torch.sin(2 * math.pi * f * t) for f in freqs_hz) * (amplitude / len(freqs_hz))
        return wave.to(torch.float32).unsqueeze(0).to(self.device)


def _describe_seconds(seconds: float) -> str:
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    if seconds >= 1:
        return f"{seconds:g} s"
    return f"{seconds * 1000:g} ms"


@dataclass
class _Input:
    """One call's audio. label names it in messages, e.g. '16 x 2 s'."""

    label: str
    audio: torch.Tensor  # (n_sounds, n_samples) float32 on the device
    sample_rate: int

    @property
    def n_sounds(self) -> int:
        return self.audio.shape[0]

    @property
    def n_samples(self) -> int:
        return self.audio.shape[1]

    @property
    def duration_ms(self) -> float:
        return self.n_samples / self.sample_rate * 1000.0


@dataclass
class _Output:
    """What one call returned, kept on the CPU for analysis, with the dtype/device it came in.

    Timestamp calls fill embeddings (n_sounds, n_timestamps, size) and timestamps
    (n_sounds, n_timestamps, ms); scene calls fill embeddings (n_sounds, size) only.
    """

    kind: Literal["timestamp", "scene"]
    group: str  # the check whose input this was, e.g. "short_clips"
    input: _Input
    embeddings: torch.Tensor
    embeddings_device: torch.device
    timestamps: torch.Tensor | None = None
    timestamps_device: torch.device | None = None

    @property
    def where(self) -> str:
        return f"{_fn_name(self.kind)} on {self.input.label}"


def _describe_error(error: BaseException) -> str:
    """'RuntimeError: message (at file.py:12 in fn)', locating the fault by the innermost frame
    outside this file and the import machinery (none for a module that is not found)."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not _is_machinery(f.filename)]
    where = ""
    if frames:
        frame = frames[-1]
        where = f" (at {Path(frame.filename).name}:{frame.lineno} in {frame.name})"
    lines = str(error).strip().splitlines()
    text = lines[0].rstrip(" .!") if lines else ""  # callers end the sentence themselves
    return f"{type(error).__name__}: {text}{where}"


def _is_machinery(filename: str) -> bool:
    """True for frames of this validator and of the import system, which locate nothing useful."""
    if filename.startswith("<"):  # <frozen importlib._bootstrap>, <string>
        return True
    path = Path(filename).resolve()
    return path == Path(__file__).resolve() or Path(importlib.__file__).resolve().parent in path.parents


def _max_difference(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(largest |a - b|, allowed difference) for two outputs that should match.

    Values equal on both sides (NaN included: non-finite output is the `finite` check's
    business) count as 0; NaN on one side only counts as an infinite difference.
    """
    a, b = a.double(), b.double()
    same = (a == b) | (a.isnan() & b.isnan())
    diff = torch.where(same, torch.zeros_like(a), (a - b).abs().nan_to_num(nan=math.inf))
    finite = torch.cat([a[a.isfinite()].abs().flatten(), b[b.isfinite()].abs().flatten()])
    scale = float(finite.max()) if finite.numel() else 0.0
    return (float(diff.max()) if diff.numel() else 0.0), MATCH_RTOL * scale + MATCH_ATOL


def _float32_tolerance_ms(magnitude_ms: float) -> float:
    """Allowed error of a float32 timestamp difference: 1e-3 ms plus two float32 roundings
    at that magnitude (0.29 ms at 20 minutes, where float32 spacing is 0.125 ms)."""
    return HOP_TOLERANCE_MS + 2 * FLOAT32_EPS * abs(magnitude_ms)


def _peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (never resets)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 1024**3:.2f} GiB"


def _progress(message: str) -> None:
    print(f"[tympan validate] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# The validator


class _Validator:
    """Runs the checks in order, recording each in `report`; see the module docstring."""

    def __init__(self, module_name: str, model_path: str, device: str, long_minutes: float):
        self.report = Report(module=module_name, model=model_path, device=device)
        self.model_path = model_path
        self.device_name = device
        self.long_minutes = long_minutes
        self.device: torch.device | None = None
        self.module: ModuleType | None = None
        self.model: torch.nn.Module | None = None
        self.signals: _Signals | None = None
        self.timestamp_size: int | None = None
        self.scene_size: int | None = None
        # Why the remaining required checks cannot run; set by the first blocking failure.
        self.blocked: str = ""
        # Embedding functions that cannot be called, and why.
        self.unusable: dict[str, str] = {}
        self.outputs: list[_Output] = []
        self.hop_ms: float | None = None

    # -- recording --------------------------------------------------------------------

    def add(self, name: str, status: Status, message: str, **figures: Any) -> None:
        self.report.checks.append(Check(name, status, message, figures))

    def status_of(self, name: str) -> Status | None:
        return next((c.status for c in self.report.checks if c.name == name), None)

    def run(self) -> Report:
        steps: list[Callable[[], None]] = [
            self.check_device,
            self.check_import,
            self.check_api,
            self.check_load_model,
            self.check_embedding_sizes,  # before sample_rate, whose absence blocks the rest
            self.check_sample_rate,
            self.check_official_inputs,
            self.check_tones_and_silence,
            self.check_short_clips,
            self.check_odd_lengths,
            self.check_determinism,
            self.check_batch_independence,
            self.check_long_clip,
            self.check_embedding_dtype,
            self.check_timestamp_dtype,
            self.check_shapes,
            self.check_finite,
            self.check_output_device,
            self.check_timestamp_units,
            self.check_hop,
            self.check_coverage,
        ]
        for step in steps:
            if self.blocked:
                break
            step()
        done = {c.name for c in self.report.checks}
        for name in REQUIRED_CHECKS:
            if name not in done:
                self.add(name, "skip", self.blocked or "not run")
        order = {name: i for i, name in enumerate(REQUIRED_CHECKS)}
        self.report.checks.sort(key=lambda c: order.get(c.name, len(order)))
        return self.report

    # -- setup checks -----------------------------------------------------------------

    def check_device(self) -> None:
        try:
            # Outputs are copied to the CPU for analysis, which rules out data-less devices (meta).
            probe = torch.zeros(1, device=torch.device(self.device_name))
            probe.cpu()
        except Exception as error:  # e.g. AssertionError from torch built without CUDA
            self.add(
                "device",
                "fail",
                f"cannot use device {self.device_name!r}: {_describe_error(error)}. "
                "Pass an available device with --device (e.g. cpu, or cuda when torch.cuda.is_available()).",
            )
            self.blocked = f"device {self.device_name!r} is unusable"
            return
        # 'cuda' and 'cuda:0' name the same device: compare outputs with the concrete one
        self.device = probe.device
        self.add("device", "pass", f"running on {self.device}")

    def check_import(self) -> None:
        name = self.report.module
        try:
            self.module = importlib.import_module(name)
        except (Exception, SystemExit) as error:
            hint = (
                " Is it installed in this Python environment (pip install <its repo>), or on PYTHONPATH?"
                if isinstance(error, ModuleNotFoundError)
                else " Fix the error raised while importing it."
            )
            self.add("import", "fail", f"cannot import {name!r}: {_describe_error(error)}.{hint}")
            self.blocked = f"module {name!r} did not import"
            return
        self.add("import", "pass", f"imported {name} from {getattr(self.module, '__file__', '?')}")

    def check_api(self) -> None:
        missing = [f for f in HEAR_FUNCTIONS if not callable(getattr(self.module, f, None))]
        if missing:
            self.add(
                "api",
                "fail",
                f"module {self.report.module} lacks {', '.join(missing)}; the HEAR API needs all of "
                f"{', '.join(HEAR_FUNCTIONS)} as module-level functions (define or re-export them in the module).",
            )
        else:
            self.add("api", "pass", f"has {', '.join(HEAR_FUNCTIONS)}")
        if "load_model" in missing:
            self.blocked = "the module has no load_model"
        for fn in missing:
            self.unusable[fn] = f"the module has no {fn}"

    def check_load_model(self) -> None:
        call = f"load_model({self.model_path!r})" if self.model_path else "load_model()"
        started = time.perf_counter()
        try:
            model = self.module.load_model(self.model_path) if self.model_path else self.module.load_model()
        except (Exception, SystemExit) as error:
            self.add("load_model", "fail", f"{call} raised {_describe_error(error)}")
            self.blocked = "load_model failed"
            return
        seconds = time.perf_counter() - started
        if not isinstance(model, torch.nn.Module):
            self.add(
                "load_model",
                "fail",
                f"{call} returned {type(model).__module__}.{type(model).__qualname__}, not a torch.nn.Module; "
                "return the model as an nn.Module subclass (TensorFlow modules are not supported here).",
            )
            self.blocked = "load_model did not return a torch.nn.Module"
            return
        try:
            model.to(self.device)
        except (Exception, SystemExit) as error:
            self.add("load_model", "fail", f"model.to({str(self.device)!r}) raised {_describe_error(error)}")
            self.blocked = f"the model could not be moved to {self.device}"
            return
        self.model = model
        n_params = sum(p.numel() for p in model.parameters())
        n_buffers = sum(b.numel() for b in model.buffers())
        self.add(
            "load_model",
            "pass",
            f"{call} returned {type(model).__qualname__} ({n_params:,} parameter and {n_buffers:,} buffer "
            f"values) in {seconds:.2f} s, moved to {self.device}",
            seconds=seconds,
            parameters=n_params,
            buffers=n_buffers,
        )
        if model.training:
            self.add(
                "eval_mode",
                "warn",
                "load_model returned the model in training mode; the HEAR evaluation kit never calls "
                ".eval(), so dropout and batch-norm statistics stay live. Call model.eval() in load_model.",
            )

    def check_sample_rate(self) -> None:
        rate = getattr(self.model, "sample_rate", None)
        if rate is None:
            self.add(
                "sample_rate",
                "fail",
                "the model has no sample_rate attribute; set model.sample_rate to the input rate, "
                f"one of {SAMPLE_RATES} Hz.",
            )
            self.blocked = "without sample_rate no test audio can be made"
            return
        if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
            self.add(
                "sample_rate",
                "fail",
                f"model.sample_rate is {rate!r} ({type(rate).__name__}), not a positive Python int; "
                f"set it to one of {SAMPLE_RATES} as an int.",
            )
            self.blocked = "sample_rate is not a positive int"
            return
        # An unlisted rate fails, but the audio checks can still run at that rate.
        self.signals = _Signals(rate, self.device)
        if rate not in SAMPLE_RATES:
            self.add(
                "sample_rate",
                "fail",
                f"model.sample_rate is {rate} Hz; HEAR provides audio only at {SAMPLE_RATES} Hz. "
                "Pick one of those (resample inside the model if it was trained at another rate).",
                sample_rate=rate,
            )
        else:
            self.add("sample_rate", "pass", f"{rate} Hz", sample_rate=rate)

    def check_embedding_sizes(self) -> None:
        problems = []
        for attr in ("timestamp_embedding_size", "scene_embedding_size"):
            value = getattr(self.model, attr, None)
            if value is None:
                problems.append(f"model.{attr} is missing")
            elif not isinstance(value, int) or isinstance(value, bool):
                problems.append(f"model.{attr} is {value!r} ({type(value).__name__}), not a Python int")
            elif value <= 0:
                problems.append(f"model.{attr} is {value}, not positive")
            elif attr == "timestamp_embedding_size":
                self.timestamp_size = value
            else:
                self.scene_size = value
        if problems:
            self.add(
                "embedding_sizes",
                "fail",
                "; ".join(problems) + ". Set both sizes as Python ints (wrap numpy or tensor values in int()).",
            )
        else:
            self.add(
                "embedding_sizes",
                "pass",
                f"timestamp_embedding_size {self.timestamp_size}, scene_embedding_size {self.scene_size}",
            )

    # -- calling the module -----------------------------------------------------------

    def noise_input(self, n_sounds: int, seconds: float, seed: int) -> _Input:
        audio = self.signals.noise(n_sounds, self.signals.n_samples(seconds), seed)
        return _Input(f"{n_sounds} x {_describe_seconds(seconds)}", audio, self.signals.sample_rate)

    def call(self, kind: Literal["timestamp", "scene"], group: str, inp: _Input) -> tuple[_Output | None, str]:
        """Call one embedding function on inp; (output, "") or (None, what went wrong).

        The output is also kept for the property checks.
        """
        fn_name = _fn_name(kind)
        try:
            with torch.no_grad():
                result = getattr(self.module, fn_name)(inp.audio, self.model)
        except (Exception, SystemExit) as error:
            return None, f"{fn_name} raised on {inp.label} ({inp.n_samples} samples): {_describe_error(error)}"
        if kind == "timestamp":
            if not (
                isinstance(result, (tuple, list))
                and len(result) == 2
                and all(isinstance(t, torch.Tensor) for t in result)
            ):
                return None, (
                    f"get_timestamp_embeddings returned {_type_summary(result)} on {inp.label}; "
                    "return a tuple (embeddings, timestamps) of torch tensors."
                )
            embeddings, timestamps = result
        elif isinstance(result, torch.Tensor):
            embeddings, timestamps = result, None
        else:
            return None, (
                f"get_scene_embeddings returned {_type_summary(result)} on {inp.label}; "
                "return a torch tensor (n_sounds, scene_embedding_size)."
            )
        try:
            output = _Output(
                kind,
                group,
                inp,
                embeddings.detach().cpu(),
                embeddings.device,
                None if timestamps is None else timestamps.detach().cpu(),
                None if timestamps is None else timestamps.device,
            )
        except Exception as error:  # e.g. a tensor without data (meta device)
            return None, f"{fn_name} returned outputs on {inp.label} that cannot be read: {_describe_error(error)}"
        self.outputs.append(output)
        return output, ""

    def callable_kinds(self) -> list[Literal["timestamp", "scene"]]:
        return [k for k in ("timestamp", "scene") if self.usable(k)]

    def usable(self, kind: str) -> bool:
        return _fn_name(kind) not in self.unusable

    def run_group(
        self,
        group: str,
        inputs: list[_Input],
        fix: str,
        problem: Callable[[_Output], str] | None = None,
    ) -> None:
        """Call every usable function on every input: one check for the group, failing on any
        exception or on the first output for which problem(output) is non-empty."""
        kinds = self.callable_kinds()
        if not kinds:
            self.add(group, "skip", "no embedding function can be called: " + "; ".join(self.unusable.values()))
            return
        errors, outputs = [], []
        for kind in kinds:
            for inp in inputs:
                output, error = self.call(kind, group, inp)
                if error:
                    errors.append(error)
                else:
                    outputs.append(output)
        if problem:
            errors += [p for o in outputs if (p := problem(o))]
        if errors:
            more = f" (and {len(errors) - 1} more failing call(s))" if len(errors) > 1 else ""
            self.add(group, "fail", f"{errors[0]}{more}. {fix}", errors=errors)
            return
        shapes: dict[str, list[str]] = {}
        for o in outputs:
            shapes.setdefault(o.input.label, []).append(_output_summary(o))
        summary = "; ".join(f"{label}: {', '.join(parts)}" for label, parts in shapes.items())
        not_called = "".join(f"; {fn} not called: {why}" for fn, why in self.unusable.items())
        self.add(group, "pass", f"{summary}{not_called}")

    # -- probe groups ---------------------------------------------------------------

    def check_official_inputs(self) -> None:
        if self.usable("timestamp"):
            inputs = [self.noise_input(n, s, seed=i) for i, (n, s) in enumerate(OFFICIAL_TIMESTAMP_INPUTS)]
            errors = [self.call("timestamp", "timestamp_embeddings", inp)[1] for inp in inputs]
            self._official_result("timestamp", inputs, [e for e in errors if e])
        else:
            self.add("timestamp_embeddings", "skip", self.unusable["get_timestamp_embeddings"])
        if self.usable("scene"):
            n, s = OFFICIAL_SCENE_INPUT
            inp = self.noise_input(n, s, seed=10)
            _, error = self.call("scene", "scene_embeddings", inp)
            self._official_result("scene", [inp], [error] if error else [])
        else:
            self.add("scene_embeddings", "skip", self.unusable["get_scene_embeddings"])

    def _official_result(self, kind: str, inputs: list[_Input], errors: list[str]) -> None:
        name, fn = f"{kind}_embeddings", _fn_name(kind)
        labels = ", ".join(i.label for i in inputs)
        if errors:
            self.add(name, "fail", f"{errors[0]}. These are the official hear-validator's inputs: fix this first.")
            # Every later call would fail the same way; say so once instead of repeating it.
            self.unusable[fn] = f"{fn} failed on the official inputs"
        else:
            self.add(name, "pass", f"{fn} ran on white noise {labels} (shapes and types: see the property checks)")

    def check_tones_and_silence(self) -> None:
        n = self.signals.n_samples(2.0)
        tones = [self.signals.tone(n, (440.0,)), self.signals.tone(n, (1000.0, 3000.0))]
        audio = torch.cat([*tones, torch.zeros(1, n, device=self.device)])
        inp = _Input("3 x 2 s [440 Hz tone, 1 kHz + 3 kHz tones, digital silence]", audio, self.signals.sample_rate)
        self.run_group(
            "tones_and_silence",
            [inp],
            "Tones and silence must work too: the evaluation kit pads clips with zeros.",
        )

    def check_short_clips(self) -> None:
        def no_timestamps(o: _Output) -> str:
            if o.kind == "timestamp" and (o.timestamps.ndim < 2 or o.timestamps.shape[1] < 1):
                return f"{o.where} returned no timestamps (shape {tuple(o.timestamps.shape)})"
            return ""

        self.run_group(
            "short_clips",
            [self.noise_input(2, s, seed=20 + i) for i, s in enumerate(SHORT_SECONDS)],
            "HEAR passes clips of any length, each needing at least one timestamp: pad clips shorter "
            "than the model's window so that one frame is centred at 0 ms.",
            no_timestamps,
        )

    def check_odd_lengths(self) -> None:
        sig = self.signals
        inputs = [
            _Input("2 x 1.013 s", sig.noise(2, sig.n_samples(1.013), seed=30), sig.sample_rate),
            _Input("2 x (0.5 s + 1 sample)", sig.noise(2, sig.sample_rate // 2 + 1, seed=31), sig.sample_rate),
        ]
        self.run_group(
            "odd_lengths",
            inputs,
            "Lengths need not be whole hops: pad the last partial frame instead of assuming it fits.",
        )

    def compare_calls(
        self, name: str, first: _Input, second: _Input, index: int | None
    ) -> tuple[float, float, str] | None:
        """Call each usable function on `first` and on `second` and compare what came back
        (index: the sound of second's batch that is first's sound; None: the whole output).

        Returns (largest difference, its allowance, which output) for the worst part relative
        to its allowance, or None after recording a failed check for an exception or a shape
        mismatch.
        """
        worst = (0.0, MATCH_ATOL, "")
        for kind in self.callable_kinds():
            a, error_a = self.call(kind, name, first)
            b, error_b = self.call(kind, name, second)
            if error_a or error_b:
                self.add(name, "fail", f"{error_a or error_b}.")
                return None
            for label, x, y in _comparable_parts(a, b, index):
                where = f"{label} of {_fn_name(kind)}"
                if x.shape != y.shape:
                    self.add(
                        name,
                        "fail",
                        f"{where} has shape {tuple(x.shape)} on {first.label} but {tuple(y.shape)} on "
                        f"{second.label}; a sound's output must depend only on that sound.",
                    )
                    return None
                diff, allowed = _max_difference(x, y)
                if diff / allowed > worst[0] / worst[1]:
                    worst = (diff, allowed, where)
        return worst

    def check_determinism(self) -> None:
        if not self.callable_kinds():
            self.add("determinism", "skip", "no embedding function can be called")
            return
        inp = self.noise_input(2, 2.0, seed=40)
        result = self.compare_calls("determinism", inp, inp, index=None)
        if result is None:
            return
        diff, allowed, where = result
        figures = {"max_difference": diff, "allowed": allowed}
        if diff > allowed:
            self.add(
                "determinism",
                "fail",
                f"two calls on the same {inp.label} input differ: {where} by up to {diff:.3g} (allowed "
                f"{allowed:.3g}). Embeddings must be repeatable: put the model in eval mode (dropout) and "
                "use no unseeded randomness at inference.",
                **figures,
            )
        else:
            self.add(
                "determinism",
                "pass",
                f"two calls on {inp.label} agree: max difference {diff:.3g} (allowed {allowed:.3g})",
                **figures,
            )

    def batch_pool(self) -> list[tuple[str, torch.Tensor]]:
        """BATCH_POOL distinct short sounds, (1, n) each, with their descriptions: seeded noise
        and tones alternately, peaks spread from 0.001 to 1 (log spaced) in a shuffled order,
        so that in any batch a sound has louder and quieter neighbours of other content."""
        sig = self.signals
        n = sig.n_samples(BATCH_SECONDS)
        g = torch.Generator().manual_seed(52)
        peaks = torch.logspace(-3, 0, BATCH_POOL, dtype=torch.float64)[torch.randperm(BATCH_POOL, generator=g)]
        pool = []
        for i, peak in enumerate(peaks.tolist()):
            if i % 2:
                sound, what = sig.tone(n, (110.0 * (i + 1), 165.0 * (i + 1)), amplitude=peak), "tones"
            else:
                sound, what = sig.noise(1, n, seed=50 + i, amplitude=peak), "noise"
            pool.append((f"sound {i} ({what}, peak {peak:.3g})", sound))
        return pool

    def check_batch_independence(self) -> None:
        if self.status_of("determinism") == "fail":
            self.add(
                "batch_independence",
                "skip",
                "outputs are not repeatable (see determinism), so batch effects cannot be told from noise",
            )
            return
        if not self.callable_kinds():
            self.add("batch_independence", "skip", "no embedding function can be called")
            return
        pool = self.batch_pool()
        rate = self.signals.sample_rate
        seconds = _describe_seconds(BATCH_SECONDS)
        worst = (0.0, MATCH_ATOL, "")
        for kind in self.callable_kinds():
            alone = []
            for what, sound in pool:
                out, error = self.call(kind, "batch_independence", _Input(f"1 x {seconds} [{what}]", sound, rate))
                if error:
                    self.add("batch_independence", "fail", f"{error}.")
                    return
                alone.append(out)
            for size in BATCH_SIZES:
                order = torch.randperm(BATCH_POOL, generator=torch.Generator().manual_seed(size))[:size].tolist()
                batch = torch.cat([pool[k][1] for k in order])
                inp = _Input(f"{size} x {seconds} [sounds {', '.join(map(str, order))}]", batch, rate)
                out, error = self.call(kind, "batch_independence", inp)
                if error:
                    self.add("batch_independence", "fail", f"{error}.")
                    return
                for index, k in enumerate(order):
                    for label, x, y in _comparable_parts(alone[k], out, index):
                        where = f"{label} of {_fn_name(kind)} for {pool[k][0]} at index {index} of a batch of {size}"
                        if x.shape != y.shape:
                            self.add(
                                "batch_independence",
                                "fail",
                                f"{where} have shape {tuple(y.shape)} but {tuple(x.shape)} alone; a sound's "
                                "output must depend only on that sound.",
                            )
                            return
                        diff, allowed = _max_difference(x, y)
                        if diff / allowed > worst[0] / worst[1]:
                            worst = (diff, allowed, where)
        diff, allowed, where = worst
        figures = {"max_difference": diff, "allowed": allowed, "batch_sizes": list(BATCH_SIZES)}
        sizes = ", ".join(map(str, BATCH_SIZES))
        if diff > allowed:
            self.add(
                "batch_independence",
                "fail",
                f"a sound's output depends on the other sounds in its batch: {where} differ by up to "
                f"{diff:.3g} (allowed {allowed:.3g}) from the sound alone. The evaluation kit batches "
                "unrelated clips: do not use statistics over the batch dimension (batch mean/std/peak, "
                "batch-norm in training mode) nor another code path for larger batches.",
                **figures,
            )
        else:
            self.add(
                "batch_independence",
                "pass",
                f"every sound of batches of {sizes} (louder and quieter neighbours) agrees with the sound alone: "
                f"max difference {diff:.3g} (allowed {allowed:.3g})",
                **figures,
            )

    def check_long_clip(self) -> None:
        if self.long_minutes <= 0:
            self.add("long_clip", "skip", "skipped by --long-minutes 0 (HEAR requires up to 20 minutes)")
            self.add("gpu_memory", "skip", "measured with the long clip, which was skipped")
            return
        kinds = self.callable_kinds()
        if not kinds:
            self.add("long_clip", "skip", "no embedding function can be called")
            self.add("gpu_memory", "skip", "measured with the long clip, which was skipped")
            return
        seconds = self.long_minutes * 60
        inp = _Input(
            f"1 x {_describe_seconds(seconds)}",
            self.signals.noise(1, self.signals.n_samples(seconds), seed=60, amplitude=0.5),
            self.signals.sample_rate,
        )
        on_cuda = self.device.type == "cuda"
        figures: dict[str, Any] = {"minutes": self.long_minutes, "n_samples": inp.n_samples}
        rss_before = _peak_rss_bytes()
        if on_cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        timings, errors = [], []
        for kind in kinds:
            fn = _fn_name(kind)
            _progress(f"long clip: {fn} on {inp.label} ({inp.n_samples:,} samples) ...")
            started = time.perf_counter()
            output, error = self.call(kind, "long_clip", inp)
            if on_cuda:
                torch.cuda.synchronize(self.device)
            took = time.perf_counter() - started
            figures[f"{kind}_seconds"] = took
            _progress(f"long clip: {fn} {'failed' if error else 'done'} in {took:.2f} s")
            if error:
                errors.append(error)
                continue
            n_out = output.timestamps.shape[-1] if kind == "timestamp" and output.timestamps.ndim else None
            timings.append(f"{fn} {took:.2f} s" + (f" ({n_out} timestamps)" if n_out is not None else ""))
        figures["peak_rss_bytes"] = _peak_rss_bytes()
        figures["peak_rss_before_bytes"] = rss_before
        if on_cuda:
            figures["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(self.device)
        if "timestamp_seconds" in figures:
            figures["realtime_factor"] = seconds / max(figures["timestamp_seconds"], 1e-9)
        self.report.long_clip = figures
        memory = f"peak RSS {_gib(figures['peak_rss_bytes'])} (process peak, {_gib(rss_before)} before this clip)"
        if on_cuda:
            memory += f", CUDA peak {_gib(figures['cuda_peak_bytes'])}"
        if errors:
            self.add(
                "long_clip",
                "fail",
                f"{errors[0]}. HEAR requires clips up to 20 minutes in one call: process long audio in "
                f"chunks of frames to bound memory. {memory}",
                **figures,
            )
        else:
            self.add("long_clip", "pass", f"{inp.label}, batch 1: {', '.join(timings)}; {memory}", **figures)
            if figures.get("realtime_factor", math.inf) < MIN_REALTIME_FACTOR:
                self.add(
                    "speed",
                    "warn",
                    f"timestamp embeddings run at {figures['realtime_factor']:.1f}x real time on {self.device} "
                    f"(under {MIN_REALTIME_FACTOR:g}x): embedding the HEAR tasks will take long; "
                    "consider a GPU, a larger hop or a lighter model.",
                    realtime_factor=figures["realtime_factor"],
                )
        if not on_cuda:
            self.add(
                "gpu_memory",
                "skip",
                f"HEAR's 16 GB limit is on GPU memory; not measured on {self.device} (run with --device cuda)",
            )
        elif figures["cuda_peak_bytes"] > GPU_LIMIT_BYTES:
            self.add(
                "gpu_memory",
                "fail",
                f"CUDA peak {_gib(figures['cuda_peak_bytes'])} on {inp.label} exceeds HEAR's 16 GB limit "
                f"({_gib(GPU_LIMIT_BYTES)}, weights and embeddings included): process long audio in chunks.",
                cuda_peak_bytes=figures["cuda_peak_bytes"],
            )
        else:
            self.add(
                "gpu_memory",
                "pass",
                f"CUDA peak {_gib(figures['cuda_peak_bytes'])} on {inp.label} (limit {_gib(GPU_LIMIT_BYTES)})",
                cuda_peak_bytes=figures["cuda_peak_bytes"],
            )

    # -- properties of all outputs ----------------------------------------------------

    def property_outputs(self, name: str, kinds: tuple[str, ...] = ("timestamp", "scene")) -> list[_Output]:
        outputs = [o for o in self.outputs if o.kind in kinds]
        if not outputs:
            self.add(name, "skip", "no output to check: no embedding call succeeded")
        return outputs

    def check_embedding_dtype(self) -> None:
        outputs = self.property_outputs("embedding_dtype")
        bad = [o for o in outputs if o.embeddings.dtype != torch.float32]
        if bad:
            self.add(
                "embedding_dtype",
                "fail",
                f"{bad[0].where} returned {_fmt_dtype(bad[0].embeddings.dtype)} embeddings "
                f"({len(bad)} of {len(outputs)} calls); HEAR requires float32: return embeddings.float().",
            )
        elif outputs:
            self.add("embedding_dtype", "pass", f"float32 in all {len(outputs)} calls")

    def check_timestamp_dtype(self) -> None:
        outputs = self.property_outputs("timestamp_dtype", ("timestamp",))
        bad = [o for o in outputs if o.timestamps.dtype != torch.float32]
        if bad:
            self.add(
                "timestamp_dtype",
                "fail",
                f"{bad[0].where} returned {_fmt_dtype(bad[0].timestamps.dtype)} timestamps "
                f"({len(bad)} of {len(outputs)} calls); HEAR requires float32 (the official validator does "
                "not check this): return timestamps.float().",
            )
        elif outputs:
            self.add("timestamp_dtype", "pass", f"float32 in all {len(outputs)} calls")

    def check_shapes(self) -> None:
        outputs = self.property_outputs("shapes")
        problems = [p for o in outputs if (p := self._shape_problem(o))]
        if problems:
            more = f" ({len(problems) - 1} more call(s) with wrong shapes)" if len(problems) > 1 else ""
            self.add("shapes", "fail", problems[0] + more)
        elif outputs:
            self.add("shapes", "pass", f"as declared in all {len(outputs)} calls")

    def _shape_problem(self, o: _Output) -> str:
        n, e = o.input.n_sounds, tuple(o.embeddings.shape)
        if o.kind == "scene":
            if len(e) != 2 or e[0] != n or (self.scene_size is not None and e[1] != self.scene_size):
                return (
                    f"{o.where} returned embeddings of shape {e}; expected (n_sounds, scene_embedding_size) = "
                    f"({n}, {self.scene_size})."
                )
            return ""
        t = tuple(o.timestamps.shape)
        if len(e) != 3 or e[0] != n or (self.timestamp_size is not None and e[2] != self.timestamp_size):
            return (
                f"{o.where} returned embeddings of shape {e}; expected (n_sounds, n_timestamps, "
                f"timestamp_embedding_size) = ({n}, n_timestamps, {self.timestamp_size})."
            )
        if t != e[:2]:
            return (
                f"{o.where} returned timestamps of shape {t} for embeddings {e}; "
                f"expected {e[:2]} (n_sounds, n_timestamps)."
            )
        return ""

    def check_finite(self) -> None:
        outputs = self.property_outputs("finite")
        problems = []
        for o in outputs:
            for label, tensor in _parts(o):
                if tensor.is_floating_point() and not (bad := int((~tensor.isfinite()).sum())) == 0:
                    n_nan = int(tensor.isnan().sum())
                    problems.append(
                        f"{label} of {o.where} hold {n_nan} NaN and {bad - n_nan} Inf of {tensor.numel()} values"
                    )
        if problems:
            more = f" ({len(problems) - 1} more output(s) likewise)" if len(problems) > 1 else ""
            self.add(
                "finite",
                "fail",
                f"{problems[0]}{more}. The evaluation kit refuses non-finite embeddings (the official validator "
                "does not check): guard logs and divisions, e.g. log(x + eps), x / (norm + eps).",
                problems=problems,
            )
        elif outputs:
            self.add("finite", "pass", f"no NaN or Inf in {len(outputs)} calls")

    def check_output_device(self) -> None:
        outputs = self.property_outputs("output_device")
        wrong = []
        for o in outputs:
            devices = [("embeddings", o.embeddings_device)]
            if o.timestamps_device is not None:
                devices.append(("timestamps", o.timestamps_device))
            wrong += [(label, d, o) for label, d in devices if d != o.input.audio.device]
        if wrong:
            label, d, o = wrong[0]
            self.add(
                "output_device",
                "fail",
                f"{o.where} returned {label} on {d} for audio on {o.input.audio.device}; return outputs on the "
                "input's device (create them with device=audio.device).",
            )
        elif outputs:
            self.add("output_device", "pass", f"outputs on {self.device} in all {len(outputs)} calls")

    def timing_outputs(self) -> list[_Output]:
        """Timestamp outputs with well-formed, finite timestamps (others are reported elsewhere)."""
        return [
            o
            for o in self.outputs
            if o.kind == "timestamp" and o.timestamps.ndim == 2 and bool(o.timestamps.isfinite().all())
        ]

    def check_timestamp_units(self) -> None:
        # Only clips of 0.5 s or more with 2+ timestamps tell units apart: seconds end near
        # duration / 1000, milliseconds near the duration, samples near duration * rate / 1000.
        usable = [
            o
            for o in self.timing_outputs()
            if o.timestamps.shape[1] >= 2 and o.input.duration_ms >= 500 and float(o.timestamps.max()) > 0
        ]
        if not usable:
            self.add("timestamp_units", "skip", "no clip of 0.5 s or more returned 2 or more finite timestamps")
            return
        for o in usable:
            latest, duration = float(o.timestamps.max()), o.input.duration_ms
            ratio = latest / duration
            if ratio < 0.01:
                self.add(
                    "timestamp_units",
                    "fail",
                    f"timestamps look like seconds, not milliseconds: {o.where} returned timestamps ending at "
                    f"{latest:.4g} for a {duration:g} ms clip. HEAR timestamps are frame centres in milliseconds "
                    "(the official validator misses this; event tasks then score 0): multiply them by 1000.",
                    latest=latest,
                    duration_ms=duration,
                )
                return
            if ratio > 4:
                guess = (
                    "look like sample indices"
                    if abs(latest / o.input.n_samples - 1) < 0.25
                    else "are too large for milliseconds"
                )
                self.add(
                    "timestamp_units",
                    "fail",
                    f"timestamps {guess}: {o.where} returned timestamps ending at {latest:.6g} for a "
                    f"{duration:g} ms clip ({o.input.n_samples} samples). HEAR timestamps are frame centres in "
                    "milliseconds: divide sample positions by sample_rate / 1000.",
                    latest=latest,
                    duration_ms=duration,
                )
                return
        self.add("timestamp_units", "pass", f"milliseconds: timestamps span the clip in {len(usable)} calls")

    def check_hop(self) -> None:
        """hop_regular (even spacing, one hop for all clips) and hop_size (<= 50 ms)."""
        if self.status_of("timestamp_units") == "fail":
            for name in ("hop_regular", "hop_size"):
                self.add(name, "skip", "timestamps are not in milliseconds (see timestamp_units)")
            return
        multi = [o for o in self.timing_outputs() if o.timestamps.shape[1] >= 2]
        if not multi:
            for name in ("hop_regular", "hop_size"):
                self.add(name, "skip", "no call returned 2 or more finite timestamps")
            return
        problem, worst_dev, reference = "", 0.0, None
        for o in multi:
            t = o.timestamps.double()
            tol = _float32_tolerance_ms(float(t.abs().max()))
            row_diff = float((t - t[:1]).abs().max())
            if row_diff > tol:
                problem = problem or (
                    f"{o.where}: timestamps differ between sounds of the same length by up to {row_diff:.4g} ms; "
                    "every row should hold the same frame centres."
                )
                continue
            hop = float(t[0, -1] - t[0, 0]) / (t.shape[1] - 1)
            if hop <= 0:
                problem = problem or f"{o.where}: timestamps do not increase (mean hop {hop:.4g} ms); sort them."
                continue
            deviation = float((t[0].diff() - hop).abs().max())
            worst_dev = max(worst_dev, deviation)
            if deviation > tol:
                problem = problem or (
                    f"timestamps are not evenly spaced: {o.where} returned spacings that deviate from the mean hop "
                    f"{hop:.6g} ms by up to {deviation:.4g} ms (tolerance {tol:.3g} ms; the official validator "
                    "fails at 1 ms). Compute centre k as k * hop, never by accumulating a rounded hop."
                )
            if reference is None:
                reference = (hop, o)
            elif abs(hop - reference[0]) > tol:
                problem = problem or (
                    f"the hop changes with clip length: {hop:.6g} ms from {o.where} but {reference[0]:.6g} ms "
                    f"from {reference[1].where}; use one hop for every length."
                )
        if problem:
            self.add("hop_regular", "fail", problem, max_deviation_ms=worst_dev)
        else:
            self.add(
                "hop_regular",
                "pass",
                f"regular in {len(multi)} calls: max deviation {worst_dev:.3g} ms from the hop",
                max_deviation_ms=worst_dev,
            )
        if reference is None:
            self.add("hop_size", "skip", "no regular timestamps to measure a hop from")
            return
        self.hop_ms = hop = reference[0]
        if hop > MAX_HOP_MS:
            self.add(
                "hop_size",
                "fail",
                f"the hop is {hop:.6g} ms, over {MAX_HOP_MS:g} ms: HEAR scores note onsets with a 50 ms "
                "tolerance, so a coarser grid misses events. The official validator only warns here; tympan "
                f"is stricter and fails. Use a hop of {MAX_HOP_MS:g} ms or less (25 ms is common).",
                hop_ms=hop,
            )
            return
        self.add("hop_size", "pass", f"hop {hop:.6g} ms (<= {MAX_HOP_MS:g} ms)", hop_ms=hop)
        if hop > FINE_HOP_MS:
            self.add(
                "hop_coarse",
                "warn",
                f"the hop is {hop:.6g} ms: allowed, but onsets land up to {hop / 2:.3g} ms off the grid "
                f"against a 50 ms scoring tolerance; {FINE_HOP_MS:g} ms or less is safer.",
                hop_ms=hop,
            )
        hop_samples = hop * self.signals.sample_rate / 1000
        if abs(hop_samples - round(hop_samples)) > 1e-3:
            self.add(
                "hop_samples",
                "warn",
                f"the hop {hop:.6g} ms is {hop_samples:.6g} samples at {self.signals.sample_rate} Hz, not a whole "
                "number: if frames start at a rounded hop accumulated k times, centres drift from the timestamps "
                "(25 ms at 44.1 kHz drifts 25 ms every 37 minutes). Start frame k at round(k * hop_samples).",
                hop_samples=hop_samples,
            )

    def check_coverage(self) -> None:
        if self.status_of("timestamp_units") == "fail":
            self.add("coverage", "skip", "timestamps are not in milliseconds (see timestamp_units)")
            return
        outputs = self.timing_outputs()
        if not outputs:
            self.add("coverage", "skip", "no call returned finite timestamps")
            return
        # The hop bounds how far the first/last centres may sit from the clip's ends; without a
        # measured hop (single-timestamp outputs only) the largest allowed hop stands in.
        hop = self.hop_ms if self.hop_ms is not None else MAX_HOP_MS
        problems = []
        for o in outputs:
            end = o.input.duration_ms
            if o.timestamps.shape[1] == 0:
                if o.group != "short_clips":  # short_clips reports empty output itself
                    problems.append(f"{o.where} returned no timestamps for a {end:g} ms clip")
                continue
            tol = _float32_tolerance_ms(end)
            first, last = float(o.timestamps.amin()), float(o.timestamps.amax())
            if first < -tol:
                problems.append(f"{o.where}: a centre at {first:.6g} ms lies before the start of the clip")
            elif first > hop + tol:
                problems.append(
                    f"{o.where}: the first centre is at {first:.6g} ms, more than one hop ({hop:.6g} ms) after "
                    "the start, so the clip's start has no embedding"
                )
            if last > end + tol:
                problems.append(f"{o.where}: the last centre {last:.6g} ms is past the end of the {end:g} ms clip")
            elif last < end - hop - tol:
                problems.append(
                    f"{o.where}: the last centre is at {last:.6g} ms, more than one hop ({hop:.6g} ms) before the "
                    f"end of the {end:g} ms clip, so the clip's end has no embedding"
                )
        if problems:
            more = f" ({len(problems) - 1} more like it)" if len(problems) > 1 else ""
            self.add(
                "coverage",
                "fail",
                f"{problems[0]}{more}. Centres must cover the clip from 0 ms to its end and stay inside it: pad half "
                "a window on each side and centre frame k at k * hop ms while k * hop <= duration.",
                problems=problems,
            )
        else:
            self.add("coverage", "pass", f"centres within one hop of both ends of the clip in {len(outputs)} calls")


def _fn_name(kind: str) -> str:
    return "get_timestamp_embeddings" if kind == "timestamp" else "get_scene_embeddings"


def _fmt_dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _type_summary(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} ({', '.join(type(v).__name__ for v in value)})"
    return f"a {type(value).__name__}"


def _output_summary(o: _Output) -> str:
    if o.kind == "timestamp":
        return f"embeddings {tuple(o.embeddings.shape)}, timestamps {tuple(o.timestamps.shape)}"
    return f"scene {tuple(o.embeddings.shape)}"


def _parts(o: _Output) -> list[tuple[str, torch.Tensor]]:
    if o.kind == "timestamp":
        return [("timestamp embeddings", o.embeddings), ("timestamps", o.timestamps)]
    return [("scene embeddings", o.embeddings)]


def _comparable_parts(a: _Output, b: _Output, index_b: int | None) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Matching parts of two outputs; index_b picks one sound of b's batch (kept as a batch of 1)."""
    pick = slice(None) if index_b is None else slice(index_b, index_b + 1)
    return [(label, x, y[pick]) for (label, x), (_, y) in zip(_parts(a), _parts(b), strict=True)]


def validate(module_name: str, model_path: str = "", device: str = "cpu", long_minutes: float = 20.0) -> Report:
    """Validate a HEAR module; never raises for the module's faults (they become failed checks).

    module_name: importable name, e.g. "tympan" or "hearbaseline.naive".
    model_path: passed to load_model; "" calls load_model() with no argument.
    long_minutes: length of the long-clip check (batch 1); 0 skips it.
    """
    return _Validator(module_name, model_path, device, long_minutes).run()


def main(args: argparse.Namespace) -> int:
    """The `tympan validate` command: print the report (text or --json); 0 when it passes, 1
    when a check fails, 2 (one line on stderr) for an unusable --device, 130 on Ctrl-C."""
    try:
        # The module's own prints go to stderr, so that stdout holds only the report.
        with contextlib.redirect_stdout(sys.stderr):
            report = validate(args.module, args.model, args.device, args.long_minutes)
    except KeyboardInterrupt:
        print("tympan validate: interrupted", file=sys.stderr)
        return 130
    if report.exit_code == 2:
        print(f"tympan validate: error: {report.check('device').message}", file=sys.stderr)
        if args.json:
            print(json.dumps(report.to_dict(), indent=2))
        return 2
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.text())
    return report.exit_code
