"""HEAR's downstream protocol: a small MLP trained on frozen embeddings, chosen by grid search.

    from tympan.kit.downstream import evaluate_splits
    result = evaluate_splits({"train": (X, Y), "valid": (X, Y), "test": (X, Y)}, data_splits(task),
                             "multiclass", lambda valid_split: score_fn, grid="default", seed=0)
    result.config, result.folds[0].test_predictions        # (n_test, n_labels) probabilities

This is hear-eval-kit's protocol (heareval/predictions/task_predictions.py) in plain PyTorch:

- Model: `MLP`, 1 or 2 hidden layers of 1024 units, each Linear -> BatchNorm1d -> Dropout 0.1
  -> ReLU, then a Linear output; no input normalisation. Weights are re-initialised with
  Xavier (uniform or normal) at gain 1 for the first layer and gain sqrt(2) for the layers
  that follow a ReLU; biases and BatchNorm keep PyTorch's defaults (as heareval).
- Loss: cross-entropy for "multiclass" (index or one-hot targets), BCE-with-logits for
  "multilabel" (also the per-frame targets of event tasks). Predictions are softmax or
  sigmoid probabilities.
- Training: Adam (default betas), batch 1024, up to 500 epochs, validation every
  `check_every` epochs (3; heareval uses 10 for DCASE 2016 task 2 because its scoring is
  slow), i.e. after epochs 3, 6, 9, ... Early stopping and the checkpoint follow the
  primary metric `score_fn` (higher is better), as Lightning's EarlyStopping(patience=20,
  min_delta=0, check_on_train_epoch_end=False) and ModelCheckpoint(save_top_k=1) do there:
  * patience counts VALIDATION CHECKS, not epochs: training stops after 20 checks in a row
    without a strict improvement, i.e. 60 epochs after the best one at `check_every=3`;
  * a check improves only if its score is strictly greater than the best so far, so ties
    keep the earlier checkpoint; the best checkpoint is restored for the test predictions;
  * a NaN score counts as -inf for the checkpoint, and a non-finite score stops training.
- Grid: hidden layers {1, 2} x lr {3.2e-3, 1e-3, 3.2e-4, 1e-4} x init {xavier_uniform,
  xavier_normal}, 16 points of which heareval trains 8: it lists the grid with sklearn's
  ParameterGrid (keys sorted, the last key varying fastest: hidden_layers, initialization,
  lr), then `random.shuffle`s it right after `seed_everything(42)` and keeps the first 8.
  `grid_points` reproduces that order with `random.Random(42)`.
- Splits: the grid search runs on the first split; the best configuration (by validation
  score, the earliest on ties) is retrained on every other split, and the first split keeps
  the model from the search. k-fold: folds sorted, test = fold i, valid = fold i+1 (mod k),
  train = the other folds in sorted order.

Where we differ from heareval, on purpose:
- Training batches are reshuffled every epoch from a seeded torch.Generator. heareval asks
  for shuffling only when the split name equals "train" but passes a list of names, so its
  batches keep the same order every epoch.
- A final training batch of a single example is left out of that epoch: BatchNorm cannot
  train on one example (heareval would crash). Batches are reshuffled, so each epoch leaves
  out a different example.
- Epochs after the last validation check (499 and 500 at `check_every=3`) are not trained:
  they cannot change the checkpoint that is kept.
- Scores are compared as Python floats; Lightning logs them as float32 tensors first.

Determinism: every training run seeds its own RNG scope (initialisation, dropout) and its own
shuffling generator from `seed`, and leaves the caller's global RNG state untouched, so the
same inputs and seed give bitwise-identical predictions on CPU. On CUDA that also needs
`torch.use_deterministic_algorithms(True)`, which is the caller's choice.
"""

import copy
import itertools
import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from tympan.kit.tasks import DataSplit

PredictionType = Literal["multiclass", "multilabel"]
Init = Literal["xavier_uniform", "xavier_normal"]
Array = np.ndarray | torch.Tensor
ScoreFn = Callable[[np.ndarray, np.ndarray], float]

HIDDEN_DIM = 1024
DROPOUT = 0.1
BATCH_SIZE = 1024
MAX_EPOCHS = 500
PATIENCE = 20  # validation checks, not epochs
CHECK_EVERY = 3
CHECK_EVERY_DCASE = 10

GRID_HIDDEN_LAYERS = (1, 2)
GRID_INITS: tuple[Init, ...] = ("xavier_uniform", "xavier_normal")
GRID_LRS = (3.2e-3, 1e-3, 3.2e-4, 1e-4)
GRID_SEED = 42
GRID_N_POINTS = 8

_INIT_FNS = {"xavier_uniform": torch.nn.init.xavier_uniform_, "xavier_normal": torch.nn.init.xavier_normal_}


class MLP(torch.nn.Module):
    """HEAR's downstream MLP: `hidden_layers` x (Linear -> BatchNorm1d -> Dropout -> ReLU) -> Linear.

    forward(x: (batch, in_dim) float32) -> logits (batch, n_labels)
    """

    def __init__(
        self,
        in_dim: int,
        n_labels: int,
        hidden_layers: int,
        hidden_dim: int = HIDDEN_DIM,
        dropout: float = DROPOUT,
        init: Init = "xavier_uniform",
    ):
        super().__init__()
        if hidden_layers not in GRID_HIDDEN_LAYERS:
            raise ValueError(f"hidden_layers={hidden_layers!r}: HEAR's MLP has 1 or 2 hidden layers")
        if init not in _INIT_FNS:
            raise ValueError(f"init={init!r}: use one of {sorted(_INIT_FNS)}")
        init_fn = _INIT_FNS[init]
        layers: list[torch.nn.Module] = []
        width = in_dim
        # heareval scales each Xavier init by the gain of the activation feeding the layer:
        # unknown (treated as linear) for the embedding, ReLU for hidden activations.
        gain = torch.nn.init.calculate_gain("linear")
        for _ in range(hidden_layers):
            linear = torch.nn.Linear(width, hidden_dim)
            init_fn(linear.weight, gain=gain)
            layers += [linear, torch.nn.BatchNorm1d(hidden_dim), torch.nn.Dropout(dropout), torch.nn.ReLU()]
            width = hidden_dim
            gain = torch.nn.init.calculate_gain("relu")
        self.hidden = torch.nn.Sequential(*layers)
        self.projection = torch.nn.Linear(width, n_labels)
        init_fn(self.projection.weight, gain=gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.hidden(x))


@dataclass(frozen=True)
class DownstreamConfig:
    """One grid point plus the fixed training settings (HEAR's values by default)."""

    hidden_layers: int
    lr: float
    init: Init
    hidden_dim: int = HIDDEN_DIM
    dropout: float = DROPOUT
    batch_size: int = BATCH_SIZE
    max_epochs: int = MAX_EPOCHS
    check_every: int = CHECK_EVERY
    patience: int = PATIENCE

    def __post_init__(self):
        if self.check_every < 1 or self.max_epochs < self.check_every:
            raise ValueError(
                f"check_every={self.check_every}, max_epochs={self.max_epochs}: validation must run "
                "at least once, so use 1 <= check_every <= max_epochs"
            )
        if self.batch_size < 2:
            raise ValueError(f"batch_size={self.batch_size}: BatchNorm needs batches of 2 or more")


FAST_MAX_EPOCHS = 30


Grid = Literal["default", "one", "fast"]
GRIDS: tuple[str, ...] = ("default", "one", "fast")


def grid_points(grid: Grid = "default", check_every: int = CHECK_EVERY) -> list[DownstreamConfig]:
    """The configurations to search, in heareval's order.

    "default": heareval's 8 points. "one": the first of those 8 (1 hidden layer, lr 1e-4,
    xavier_normal) with HEAR's full training (500 epochs, early stopping), which is what
    heareval's runner trains with `--grid-points 1`: an eighth of the search cost, for
    comparing many modules on a small machine. "fast": one point (1 hidden layer, lr 1e-3,
    xavier_normal, also one of the 8) trained for at most FAST_MAX_EPOCHS epochs, for smoke
    tests (heareval's own "fast" grid shortens training the same way). `check_every`: 3, or
    `CHECK_EVERY_DCASE` (10).
    """
    if grid == "fast":
        return [
            DownstreamConfig(
                hidden_layers=1, lr=1e-3, init="xavier_normal", check_every=check_every, max_epochs=FAST_MAX_EPOCHS
            )
        ]
    if grid == "one":
        return grid_points("default", check_every)[:1]
    if grid != "default":
        raise ValueError(
            f"grid={grid!r}: use 'default' (heareval's 8 points), 'one' (the first of them, as heareval's "
            "--grid-points 1) or 'fast' (one point, short training)"
        )
    # ParameterGrid's order: sorted keys (hidden_layers < initialization < lr), last fastest.
    points = list(itertools.product(GRID_HIDDEN_LAYERS, GRID_INITS, GRID_LRS))
    random.Random(GRID_SEED).shuffle(points)
    return [
        DownstreamConfig(hidden_layers=layers, lr=lr, init=init, check_every=check_every)
        for layers, init, lr in points[:GRID_N_POINTS]
    ]


def shuffled_batches(n_items: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's batches: a fresh permutation of range(n_items) cut into `batch_size` chunks.

    Returns index tensors (int64, (batch_size,) except the last); a last chunk of one item is
    dropped because BatchNorm cannot train on a single example.
    """
    batches = list(torch.randperm(n_items, generator=generator).split(batch_size))
    if len(batches[-1]) == 1:
        batches.pop()
    return batches


@dataclass
class TrainInfo:
    """How one training run went. `valid_history`: (epoch, score) for every validation check."""

    config: DownstreamConfig
    best_epoch: int
    epochs_trained: int
    stopped_early: bool
    valid_history: list[tuple[int, float]]
    valid_predictions: np.ndarray  # (n_valid, n_labels) at the best checkpoint, e.g. to tune event decoding


def train_and_predict(
    train: tuple[Array, Array],
    valid: tuple[Array, Array],
    test: Array,
    prediction_type: PredictionType,
    score_fn: ScoreFn,
    config: DownstreamConfig,
    seed: int,
    device: str | torch.device = "cpu",
    *,
    n_labels: int | None = None,
) -> tuple[np.ndarray, float, TrainInfo]:
    """Train one MLP with early stopping on `valid` and predict `test` from the best checkpoint.

    train, valid: (X (n, dim) float, Y) with Y either label indices (n,) ("multiclass" only)
        or a one-hot / multi-hot matrix (n, n_labels). Event tasks pass frames of all files
        stacked, with their multi-hot frame targets, as "multilabel".
    test: X (n_test, dim).
    score_fn(predictions (n_valid, n_labels) float32 probabilities, valid Y as given, as numpy)
        -> the primary metric, higher is better.
    n_labels: the vocabulary size; needed only for index targets whose highest label may be
        missing from train and valid (default: max index + 1).
    Returns test probabilities (n_test, n_labels) float32 (softmax for "multiclass", sigmoid
    for "multilabel"), the best validation score, and a TrainInfo.
    """
    device = torch.device(device)
    train_x, train_y = _features(train[0], "train"), train[1]
    valid_x, valid_y = _features(valid[0], "valid"), valid[1]
    test_x = _features(test, "test")
    n_labels = _n_labels(prediction_type, [train_y, valid_y], n_labels)
    train_t = _train_targets(train_y, prediction_type, n_labels).to(device)
    valid_targets = _numpy(valid_y)
    if len(train_x) < 2:
        raise ValueError(f"train has {len(train_x)} example(s): BatchNorm needs at least 2")
    if not (train_x.shape[1] == valid_x.shape[1] == test_x.shape[1]):
        raise ValueError(
            f"embedding sizes differ: train {train_x.shape[1]}, valid {valid_x.shape[1]}, test {test_x.shape[1]}"
        )
    train_x = train_x.to(device)
    loss_fn = torch.nn.CrossEntropyLoss() if prediction_type == "multiclass" else torch.nn.BCEWithLogitsLoss()
    shuffle_gen = torch.Generator().manual_seed(seed)
    # Later epochs would be trained and never validated, so they cannot change the result.
    last_epoch = config.max_epochs - config.max_epochs % config.check_every

    with _seeded(seed, device):
        model = MLP(train_x.shape[1], n_labels, config.hidden_layers, config.hidden_dim, config.dropout, config.init)
        model.to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        best_score, best_epoch, best_state, best_valid = -math.inf, 0, None, None
        history: list[tuple[int, float]] = []
        checks_without_improvement = 0
        stopped_early = False
        for epoch in range(1, last_epoch + 1):
            model.train()
            for idx in shuffled_batches(len(train_x), config.batch_size, shuffle_gen):
                idx = idx.to(device)
                optimizer.zero_grad()
                loss_fn(model(train_x[idx]), train_t[idx]).backward()
                optimizer.step()
            if epoch % config.check_every:
                continue
            valid_pred = _predict(model, valid_x, prediction_type, config.batch_size, device)
            score = float(score_fn(valid_pred, valid_targets))
            if math.isnan(score):
                score = -math.inf
            history.append((epoch, score))
            if best_state is None or score > best_score:
                best_score, best_epoch, best_valid = score, epoch, valid_pred
                best_state = copy.deepcopy(model.state_dict())
                checks_without_improvement = 0
            else:
                checks_without_improvement += 1
            if not math.isfinite(score) or checks_without_improvement >= config.patience:
                stopped_early = True
                break
        model.load_state_dict(best_state)
        test_pred = _predict(model, test_x, prediction_type, config.batch_size, device)
    info = TrainInfo(
        config=config,
        best_epoch=best_epoch,
        epochs_trained=epoch,
        stopped_early=stopped_early,
        valid_history=history,
        valid_predictions=best_valid,
    )
    return test_pred, best_score, info


@dataclass
class FoldResult:
    """One split's model: which splits it used and its test predictions (n_test, n_labels)."""

    test: str
    valid: str
    train: tuple[str, ...]
    test_predictions: np.ndarray
    valid_score: float
    info: TrainInfo


@dataclass
class SplitsResult:
    """The chosen configuration, one FoldResult per split, and every grid point's validation score."""

    config: DownstreamConfig
    folds: list[FoldResult]
    grid_scores: list[tuple[DownstreamConfig, float]] = field(default_factory=list)


def evaluate_splits(
    splits_data: Mapping[str, tuple[Array, Array]],
    rotation: Sequence[DataSplit],
    prediction_type: PredictionType,
    score_fn_for: Callable[[str], ScoreFn],
    grid: Grid = "default",
    seed: int = 0,
    *,
    check_every: int = CHECK_EVERY,
    n_labels: int | None = None,
    device: str | torch.device = "cpu",
) -> SplitsResult:
    """Grid search on the first split, then the best configuration on every other split.

    splits_data: split name ("train"/"valid"/"test" or "foldNN") -> (X (n, dim), Y) as in
        `train_and_predict`; the test split's Y is not used here (score it with the metrics).
    rotation: the models to train, in order (tympan.kit.tasks.data_splits of the task).
    score_fn_for(valid split name) -> the score function for that validation split (event
        tasks decode frames per file, so the scorer must know which files it is given).
    Every training run uses `seed`. Returns the chosen config and, per entry of `rotation`,
    the test predictions (n_test, n_labels).
    """
    splits = list(rotation)
    if n_labels is None:
        n_labels = _n_labels(prediction_type, [y for _, y in splits_data.values()], None)

    def run(split: DataSplit, config: DownstreamConfig) -> FoldResult:
        train_parts = [splits_data[name] for name in split.train]
        train = (_concat([x for x, _ in train_parts]), _concat([y for _, y in train_parts]))
        (test,), (valid,) = split.test, split.valid
        pred, score, info = train_and_predict(
            train, splits_data[valid], splits_data[test][0], prediction_type, score_fn_for(valid), config, seed,
            device, n_labels=n_labels,
        )
        return FoldResult(test, valid, tuple(split.train), pred, score, info)

    searched = [run(splits[0], config) for config in grid_points(grid, check_every)]
    # max() keeps the first of equal scores, as heareval's stable sort does.
    best = max(searched, key=lambda fold: fold.valid_score)
    folds = [best] + [run(split, best.info.config) for split in splits[1:]]
    return SplitsResult(best.info.config, folds, [(fold.info.config, fold.valid_score) for fold in searched])


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNGs (init, dropout) for one run, restoring the caller's state after."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def _predict(
    model: MLP, x: torch.Tensor, prediction_type: PredictionType, batch_size: int, device: torch.device
) -> np.ndarray:
    """Probabilities (n, n_labels) float32 in eval mode (BatchNorm running stats, no dropout)."""
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(chunk.to(device)) for chunk in x.split(batch_size)])
    probs = logits.softmax(dim=1) if prediction_type == "multiclass" else logits.sigmoid()
    return probs.cpu().numpy()


def _features(x: Array, name: str) -> torch.Tensor:
    """(n, dim) float32 tensor; heareval refuses NaN/Inf embeddings, so do we."""
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"{name} X has shape {tuple(x.shape)}: expected (n_examples > 0, embedding_size)")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} X holds {int((~torch.isfinite(x)).sum())} NaN/Inf values; embeddings must be finite")
    return x


def _n_labels(prediction_type: PredictionType, targets: Sequence[Array], n_labels: int | None) -> int:
    """Vocabulary size from one-hot/multi-hot widths, else from `n_labels` or the largest index."""
    if prediction_type not in ("multiclass", "multilabel"):
        raise ValueError(f"prediction_type={prediction_type!r}: use 'multiclass' or 'multilabel'")
    widths = {np.shape(y)[1] for y in targets if np.ndim(y) == 2}
    if len(widths) > 1 or (widths and n_labels is not None and widths != {n_labels}):
        raise ValueError(f"target widths {sorted(widths)} disagree (n_labels={n_labels})")
    if widths:
        return widths.pop()
    if prediction_type == "multilabel":
        raise ValueError("multilabel targets must be multi-hot matrices (n, n_labels)")
    return n_labels if n_labels is not None else int(max(_numpy(y).max() for y in targets)) + 1


def _train_targets(y: Array, prediction_type: PredictionType, n_labels: int) -> torch.Tensor:
    """Class indices (n,) int64 for cross-entropy, or multi-hot (n, n_labels) float32 for BCE."""
    y = torch.as_tensor(_numpy(y))
    if prediction_type == "multilabel":
        if not ((y == 0) | (y == 1)).all():
            raise ValueError("multilabel targets must be 0/1 multi-hot matrices")
        return y.float()
    if y.ndim == 2:
        # heareval asserts one and only one label per row before taking the argmax.
        if not (((y == 0) | (y == 1)).all() and (y.sum(dim=1) == 1).all()):
            raise ValueError("multiclass targets given as a matrix must be one-hot (exactly one 1 per row)")
        return y.argmax(dim=1)
    if y.ndim != 1 or y.is_floating_point() or y.min() < 0 or y.max() >= n_labels:
        raise ValueError(f"multiclass targets must be one-hot or integer indices in [0, {n_labels})")
    return y.long()


def _numpy(a: Array) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _concat(parts: Sequence[Array]) -> Array:
    """Stack folds along the first axis, as tensors if they all are, else as numpy arrays."""
    if all(isinstance(p, torch.Tensor) for p in parts):
        return torch.cat(list(parts))
    return np.concatenate([_numpy(p) for p in parts])
