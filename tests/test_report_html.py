"""`tympan report` writes report.html: one offline page, checked on made-up runs and, in a real
browser (headless chromium), on the tiny suite evaluated end to end."""

import json
import pickle
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from tympan.cli import main as cli
from tympan.kit import metrics, report_html
from tympan.kit.tasks import Event

HEARMODS = Path(__file__).parent / "hearmods"
SCENE, EVENTS = "scene-a", "events-b"
SCENE_VOCAB, EVENT_VOCAB = ["a", "b", "c"], ["x", "y"]


class Page(HTMLParser):
    """What a check needs from the page: figures, score rows and cells, marked boxes."""

    def __init__(self, text: str):
        super().__init__()
        self.figures, self.missing, self.rows, self.ids, self.bench = [], [], {}, set(), []
        self._row, self._cell, self._svg_in_figure = None, None, False
        self.svg_figures = 0
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "figure":
            self.figures.append((a["data-kind"], a["data-task"], a["data-column"]))
            self._svg_in_figure = True
        if tag == "svg" and self._svg_in_figure:
            self.svg_figures += 1
            self._svg_in_figure = False
        if tag == "p" and "missing-figure" in (a.get("class") or ""):
            self.missing.append((a["data-kind"], a["data-task"], a["data-column"]))
        if tag == "tr" and "data-task" in a:
            self._row = self.rows.setdefault(a["data-task"], [])
        if tag == "tr" and "data-bench" in a:
            self.bench.append(a["data-bench"])
        if tag == "td" and self._row is not None:
            self._cell = {"best": "best" in (a.get("class") or ""), "text": ""}
            self._row.append(self._cell)

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = None
        if tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data


def _write_split(folder: Path, split: str, x: np.ndarray, labels: list[list[str]]) -> None:
    x.astype(np.float32).tofile(folder / f"{split}.embeddings.npy")  # raw memmap, as heareval's layout
    (folder / f"{split}.embedding-dimensions.json").write_text(json.dumps(list(x.shape)))
    with open(folder / f"{split}.target-labels.pkl", "wb") as f:
        pickle.dump(labels, f)


def make_run(root: Path, module: str, scene_score: float, event_score: float, suite: str = "tiny",
             old: bool = False, seed: int = 0) -> Path:
    """A results.json and the evaluate output beside it, for a scene and an event task.

    old: as an older `tympan evaluate` wrote it (no versions, git revision, event grid, device,
    weights hash) and copied without its embeddings folder."""
    out = root / f"{module}-seed{seed}"
    tasks_dir = root / f"tasks-{suite}"
    tasks_dir.mkdir(parents=True, exist_ok=True)
    (tasks_dir / f"manifest-{suite}.json").write_text(json.dumps({"suite": suite}))
    rng = np.random.default_rng(seed)
    if not old:
        folder = out / "embeddings" / module / SCENE
        folder.mkdir(parents=True)
        (folder / "labelvocabulary.csv").write_text("idx,id,label\n" + "".join(
            f"{i},{i},{v}\n" for i, v in enumerate(SCENE_VOCAB)))
        truth = np.repeat(np.arange(3), 10)
        x = rng.normal(size=(30, 4)) + 3 * np.eye(4)[truth]
        _write_split(folder, "test", x, [[SCENE_VOCAB[i]] for i in truth])
        scores = np.full((30, 3), 0.1, dtype=np.float32)
        scores[np.arange(30), np.where(np.arange(30) < 20, truth, (truth + 1) % 3)] = 0.8
        with open(folder / "test.predictions.pkl", "wb") as f:
            pickle.dump({"task": SCENE, "split": "test", "embedding_type": "scene", "prediction_type": "multiclass",
                         "vocabulary": SCENE_VOCAB, "targets": np.eye(3, dtype=np.uint8)[truth], "scores": scores}, f)
        folder = out / "embeddings" / module / EVENTS
        folder.mkdir(parents=True)
        reference = {"clip1.wav": [("x", 100.0, 400.0)],
                     "clip2.wav": [("x", 100.0, 400.0), ("y", 500.0, 900.0), ("x", 1000.0, 1500.0)]}
        with open(folder / "test.predictions.pkl", "wb") as f:
            pickle.dump({"task": EVENTS, "split": "test", "embedding_type": "event", "prediction_type": "multilabel",
                         "vocabulary": EVENT_VOCAB, "events": {"clip2.wav": [("y", 520.0, 880.0)]},
                         "reference": reference}, f)

    def entry(kind, metric, value):
        return {"task": kind, "embedding_type": "scene" if kind == SCENE else "event", "primary_metric": metric,
                "scores": {metric: {"mean": value, "std": 0.0, "folds": {"test": value}}}}

    results = {"module": module, "model_path": None, "tasks_dir": str(tasks_dir), "seed": seed, "grid": "fast",
               "tasks": {SCENE: entry(SCENE, "top1_acc", scene_score),
                         EVENTS: entry(EVENTS, "event_onset_200ms_fms", event_score)}}
    if not old:
        results.update(weights_sha256="ab" * 32, event_grid="fast", device="cpu", git_revision="0" * 40,
                       versions={"tympan": "0.1.0", "torch": "2.13.0"})
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results))
    return out / "results.json"


def run_report(tmp_path: Path, *args: str) -> tuple[int, Page, str]:
    out = tmp_path / "report"
    code = cli(["report", *map(str, args), "--out", str(out)])
    text = (out / "report.html").read_text() if (out / "report.html").exists() else ""
    return code, Page(text), text


def test_page_holds_scores_best_chance_summary_and_every_figure(tmp_path):
    a = make_run(tmp_path, "moda", scene_score=0.9, event_score=0.3)
    b = make_run(tmp_path, "modb", scene_score=0.6, event_score=0.5)
    code, page, text = run_report(tmp_path, a, b)
    assert code == 0
    # cells: metric, chance, moda, modb
    scene, events = page.rows[SCENE], page.rows[EVENTS]
    assert scene[1]["text"] == f"{1 / 3:.3f}" and events[1]["text"] == "–"  # no closed form for events
    assert [c["best"] for c in scene[2:]] == [True, False]
    assert [c["best"] for c in events[2:]] == [False, True]
    assert scene[2]["text"].startswith("0.900 ± 0.000") and events[3]["text"].startswith("0.500 ± 0.000")
    summary = re.findall(r"<tr class=summary>.*?</tr>", text)[0]
    # moda: (0.9/0.9 + 0.3/0.5) / 2 = 0.8; modb: (0.6/0.9 + 0.5/0.5) / 2 = 0.833
    assert re.findall(r"<td>(\d\.\d{3}) ", summary) == ["0.800", "0.833"]
    assert sorted(page.figures) == sorted([
        ("overview", "all", "all"), ("bars", SCENE, "all"), ("bars", EVENTS, "all"),
        ("confusion", SCENE, "moda"), ("confusion", SCENE, "modb"), ("map", SCENE, "moda"), ("map", SCENE, "modb"),
        ("timeline", EVENTS, "all"),
    ])
    assert page.svg_figures == len(page.figures)  # every figure is drawn inline
    assert "partial" not in page.ids and "mixed-suites" not in page.ids and not page.missing
    assert "accuracy 0.667 on 30 clips" in text  # the kept predictions' own score
    assert not re.search(r"(src|href)=['\"]?https?:", text)  # offline: nothing fetched


def test_results_of_an_older_version_give_a_marked_partial_report(tmp_path, capsys):
    a = make_run(tmp_path, "moda", scene_score=0.9, event_score=0.3)
    b = make_run(tmp_path, "modold", scene_score=0.6, event_score=0.5, old=True)
    code, page, text = run_report(tmp_path, a, b)
    assert code == 0, capsys.readouterr().err
    assert "partial" in page.ids
    assert set(page.missing) == {("confusion", SCENE, "modold"), ("map", SCENE, "modold"),
                                 ("timeline", EVENTS, "modold")}
    assert ("confusion", SCENE, "moda") in page.figures and ("timeline", EVENTS, "all") in page.figures
    assert "modold: package versions not recorded" in text and "not recorded" in text
    assert page.rows[SCENE][3]["text"].startswith("0.600")  # its scores are still in the table


def test_truncated_results_json_is_one_line_exit_2(tmp_path, capsys):
    good = make_run(tmp_path, "moda", 0.9, 0.3)
    cut = tmp_path / "cut.json"
    cut.write_text(good.read_text()[:50])
    assert cli(["report", str(good), str(cut), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert str(cut) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_results_of_two_suites_are_marked(tmp_path):
    a = make_run(tmp_path, "moda", 0.9, 0.3, suite="tiny")
    b = make_run(tmp_path, "modb", 0.6, 0.5, suite="full")
    code, page, text = run_report(tmp_path, a, b)
    assert code == 0 and "mixed-suites" in page.ids
    assert (f"Results on different data for 2 task(s)</strong> ({EVENTS}, {SCENE}; "
            "suites: tasks-full (not recorded); tasks-tiny (not recorded))") in text


def test_bench_rows_from_the_benchmark_output(tmp_path, capsys):
    rows = [{"module": m, "sample_rate": 16000, "audio_s": 1200.0, "timestamp_s": t, "scene_s": t, "peak_rss_mb": 800,
             "timestamp_shape": [1, 60001, 301], "threads": 2, "torch": "2.13.0"}
            for m, t in [("tympan", 2.8), ("hearbaseline.naive", 6.3)]]
    bench = tmp_path / "bench.txt"  # the script's stdout: JSON lines, a table, the final JSON list
    bench.write_text("\n".join(json.dumps(r) for r in rows) + "\n| module | rate |\n|---|---|\n" + json.dumps(rows))
    a = make_run(tmp_path, "moda", 0.9, 0.3)
    code, page, text = run_report(tmp_path, a, "--bench", bench)
    assert code == 0 and page.bench == ["tympan", "hearbaseline.naive"]
    assert "<td>429</td>" in text  # 1200 s / 2.8 s, real-time factor
    bad = tmp_path / "bad.txt"
    bad.write_text("nothing here\n")
    capsys.readouterr()
    assert cli(["report", str(a), "--bench", str(bad), "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert "no rows of benchmarks/long_audio.py" in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def tiny_report(tiny_suite, tiny_tympan_results, tmp_path_factory):
    """The report of tympan (every tiny task) and tests/hearmods/hearmod_good (two of them)."""
    root = tmp_path_factory.mktemp("tiny-report")
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(HEARMODS))
    try:
        tasks = ["--task", "keywords-v1-tiny", "--task", "sound-events-v1-tiny"]
        assert cli(["evaluate", "hearmod_good", "--tasks", str(tiny_suite), "--out", str(root / "good"),
                    "--grid", "fast", *tasks]) == 0
    finally:
        mp.undo()
    assert cli(["report", str(tiny_tympan_results), str(root / "good" / "results.json"), "--out",
                str(root / "report")]) == 0
    return root / "report" / "report.html", tiny_tympan_results


def test_evaluate_keeps_the_test_predictions_it_scored(tiny_report):
    _, results_path = tiny_report
    results = json.loads(results_path.read_text())
    for task, entry in results["tasks"].items():
        folder = results_path.parent / "embeddings" / "tympan" / task
        for split, score in entry["scores"][entry["primary_metric"]]["folds"].items():
            with open(folder / f"{split}.predictions.pkl", "rb") as f:
                kept = pickle.load(f)
            if entry["embedding_type"] == "scene":
                with open(folder / f"{split}.target-labels.pkl", "rb") as f:
                    labels = pickle.load(f)
                assert [kept["vocabulary"][i] for i in kept["targets"].argmax(axis=1)] == [row[0] for row in labels]
                again = metrics.score(entry["primary_metric"], kept["scores"], kept["targets"], kept["vocabulary"])
            else:
                def events(by_file):
                    return {f: [Event(*e) for e in evs] for f, evs in by_file.items()}

                again = metrics.score(entry["primary_metric"], events(kept["events"]), events(kept["reference"]),
                                      kept["vocabulary"])
            assert again == pytest.approx(score, nan_ok=True), (task, split)


def test_tiny_suite_report_renders_in_chromium(tiny_report, tmp_path):
    page_path, results_path = tiny_report
    results = json.loads(results_path.read_text())
    scene = [t for t, e in results["tasks"].items() if e["embedding_type"] == "scene"]
    event = [t for t, e in results["tasks"].items() if e["embedding_type"] == "event"]
    shot = tmp_path / "report.png"
    dom = report_html.browse(page_path, screenshot=shot, width=1280, height=1600)
    page = Page(dom)
    assert set(page.rows) == set(results["tasks"])  # one score row per task
    assert all(len(cells) == 4 for cells in page.rows.values())  # metric, chance, tympan, hearmod_good
    expected = ([("overview", "all", "all")] + [("bars", t, "all") for t in results["tasks"]]
                + [(kind, t, "tympan") for t in scene for kind in ("confusion", "map")]
                + [(kind, "keywords-v1-tiny", "hearmod_good") for kind in ("confusion", "map")]
                + [("timeline", t, "all") for t in event])
    assert sorted(page.figures) == sorted(expected)
    assert page.svg_figures == len(expected)  # each figure drawn, in the DOM chromium built
    assert "partial" not in page.ids and not page.missing
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert pixels.shape[:2] == (1600, 1280)
    gray = pixels.mean(axis=2)
    inked = (gray < 200).mean()  # text, rules, bars
    coloured = (pixels.max(axis=2) - pixels.min(axis=2) > 60).mean()  # chart bars, the best cells
    assert gray.std() > 15 and 0.01 < inked < 0.6 and coloured > 0.005, (gray.std(), inked, coloured)
