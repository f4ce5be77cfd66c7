"""`tympan evaluate` and `tympan report` end to end on small generated tasks."""

import json
import pickle

import numpy as np
import pytest

import tympan
from tympan.cli import main as cli
from tympan.kit import evaluate as ev
from tympan.kit.tasks import Event, Task, write_task

SR = 16000
PITCHES = {"low": 220.0, "mid": 440.0, "high": 880.0}


def tone(freq: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.4 * np.sin(2 * np.pi * freq * (1 + 0.01 * rng.standard_normal()) * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def scene_task(root, split_mode="trainvaltest"):
    rng = np.random.default_rng(0)
    splits = ["train", "valid", "test"] if split_mode == "trainvaltest" else ["fold00", "fold01", "fold02"]
    labels, audio = {}, {}
    for split in splits:
        labels[split] = {}
        for i in range(12):
            label = list(PITCHES)[i % 3]
            name = f"{split}-{i:02d}.wav"
            labels[split][name] = [label]
            audio[(split, name)] = tone(PITCHES[label], 0.5, rng)
    task = Task(
        task_name=f"tones-{split_mode}", version="v1", embedding_type="scene", prediction_type="multiclass",
        split_mode=split_mode, sample_duration=0.5, evaluation=["top1_acc", "mAP"], splits=splits,
        mode="full", vocabulary=sorted(PITCHES), labels=labels, nfolds=None if split_mode == "trainvaltest" else 3,
    )
    return write_task(task, audio, root)


def event_task(root):
    rng = np.random.default_rng(1)
    labels, audio = {}, {}
    for split in ["train", "valid", "test"]:
        labels[split] = {}
        for i in range(8):
            x = 0.01 * rng.standard_normal(2 * SR).astype(np.float32)
            events = []
            for k, start in enumerate((0.2, 1.1)):
                label = ["beep", "buzz"][(i + k) % 2]
                freq = 1000.0 if label == "beep" else 150.0
                seg = tone(freq, 0.5, rng)
                a = int(start * SR)
                x[a : a + seg.size] += seg
                events.append(Event(label, start * 1000, (start + 0.5) * 1000))
            name = f"{split}-{i:02d}.wav"
            labels[split][name] = events
            audio[(split, name)] = x
    task = Task(
        task_name="beeps", version="v1", embedding_type="event", prediction_type="multilabel",
        split_mode="trainvaltest", sample_duration=2.0, evaluation=["event_onset_200ms_fms", "segment_1s_er"],
        splits=["train", "valid", "test"], mode="full", vocabulary=["beep", "buzz"], labels=labels,
    )
    return write_task(task, audio, root)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    tasks = tmp_path_factory.mktemp("tasks")
    scene_task(tasks)
    scene_task(tasks, "new_split_kfold")
    event_task(tasks)
    out = tmp_path_factory.mktemp("out")
    results = ev.evaluate("tympan", tasks, out, grid="fast", seed=0)
    return tasks, out, results


def test_scores_are_high_on_easy_tasks(evaluated):
    _, _, results = evaluated
    tasks = results["tasks"]
    assert set(tasks) == {"tones-trainvaltest-v1-full", "tones-new_split_kfold-v1-full", "beeps-v1-full"}
    assert tasks["tones-trainvaltest-v1-full"]["scores"]["top1_acc"]["mean"] > 0.9
    kfold = tasks["tones-new_split_kfold-v1-full"]["scores"]["top1_acc"]
    assert set(kfold["folds"]) == {"fold00", "fold01", "fold02"}
    assert kfold["mean"] == pytest.approx(np.mean(list(kfold["folds"].values())))
    assert kfold["mean"] > 0.9
    beeps = tasks["beeps-v1-full"]
    assert list(beeps["scores"]) == ["event_onset_200ms_fms", "segment_1s_er"]  # primary first
    assert beeps["scores"]["event_onset_200ms_fms"]["mean"] > 0.7
    assert beeps["postprocessing"]["test"]["min_duration"] in (125, 250)


def test_results_json_records_provenance(evaluated):
    _, out, results = evaluated
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert on_disk["weights_sha256"] == tympan.load_model().weights_sha256
    assert on_disk["versions"]["torch"] and on_disk["versions"]["tympan"]
    assert on_disk["seed"] == 0 and on_disk["grid"] == "fast" and on_disk["event_grid"] == "fast"
    assert "| tones-trainvaltest-v1-full | scene | top1_acc |" in (out / "results.md").read_text()


def test_embeddings_follow_the_official_layout(evaluated):
    tasks, out, _ = evaluated
    emb = out / "embeddings" / "tympan" / "beeps-v1-full"
    for name in ["task_metadata.json", "labelvocabulary.csv", "train.json", "valid.json", "test.json"]:
        assert (emb / name).is_file(), name
    rows, dim = json.loads((emb / "test.embedding-dimensions.json").read_text())
    assert dim == tympan.load_model().timestamp_embedding_size
    assert rows == 8 * (2 * SR // 320 + 1)
    stacked = np.memmap(emb / "test.embeddings.npy", dtype=np.float32, mode="r", shape=(rows, dim))
    labels = pickle.loads((emb / "test.target-labels.pkl").read_bytes())
    where = json.loads((emb / "test.filename-timestamps.json").read_text())
    assert len(labels) == len(where) == rows
    # A row of the stack is the embedding of the file and timestamp it is listed with.
    stem, t = where[5]
    one = np.load(stem + ".embedding.npy")
    ts = json.loads(open(stem + ".timestamps.json").read())
    assert np.array_equal(stacked[5], one[ts.index(t)])
    # The frame at 300 ms of a file whose first event spans 200-700 ms carries that label.
    frame_labels = json.loads((emb / "test" / "test-00.wav.target-labels.json").read_text())
    assert frame_labels[15] == ["beep"] and frame_labels[0] == []
    scene = out / "embeddings" / "tympan" / "tones-trainvaltest-v1-full"
    assert np.load(scene / "train" / "train-00.wav.embedding.npy").shape == (tympan.load_model().scene_embedding_size,)
    assert json.loads((scene / "train" / "train-00.wav.target-labels.json").read_text()) == ["low"]


def test_a_second_run_reuses_everything(evaluated, monkeypatch):
    tasks, out, results = evaluated

    def refuse(*args, **kwargs):
        raise AssertionError("nothing should be recomputed")

    monkeypatch.setattr(ev, "embed_task", refuse)
    monkeypatch.setattr(ev, "score_task", refuse)
    again = ev.evaluate("tympan", tasks, out, grid="fast", seed=0)
    assert again["tasks"] == json.loads(json.dumps(results["tasks"]))


def test_an_interrupted_embedding_resumes_without_recomputing_done_files(tmp_path, monkeypatch):
    tasks = tmp_path / "tasks"
    scene_task(tasks)
    out = tmp_path / "out"
    calls = {"n": 0}
    real = tympan.get_scene_embeddings

    def dies_on_third_batch(audio, model):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(audio, model)

    # 12 clips of 0.5 s per split fit one batch, so the third call is the test split's.
    assert ev.batch_size_for(ev.read_task(tasks / "tones-trainvaltest-v1-full"), SR) >= 12
    monkeypatch.setattr(tympan, "get_scene_embeddings", dies_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate("tympan", tasks, out, grid="fast")
    emb = out / "embeddings" / "tympan" / "tones-trainvaltest-v1-full"
    assert not list(emb.rglob("*.tmp-*"))
    assert (emb / "valid.embedding-dimensions.json").exists()
    assert not (emb / "test.embedding-dimensions.json").exists()
    assert not list((emb / "test").glob("*.embedding.npy"))
    mtimes = {p: p.stat().st_mtime_ns for p in emb.rglob("*.embedding.npy")}
    assert len(mtimes) == 24

    monkeypatch.setattr(tympan, "get_scene_embeddings", real)
    results = ev.evaluate("tympan", tasks, out, grid="fast")
    assert all(p.stat().st_mtime_ns == m for p, m in mtimes.items())
    assert len(list((emb / "test").glob("*.embedding.npy"))) == 12
    assert results["tasks"]["tones-trainvaltest-v1-full"]["scores"]["top1_acc"]["mean"] > 0.9


def test_cli_errors_and_report(evaluated, tmp_path, capsys):
    tasks, out, _ = evaluated
    assert cli(["evaluate", "tympan", "--tasks", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no task folders" in capsys.readouterr().err
    assert cli(["evaluate", "tympan", "--tasks", str(tasks), "--out", str(out), "--task", "nope"]) == 2
    assert "nope" in capsys.readouterr().err

    second = json.loads((out / "results.json").read_text())
    second["module"] = "other.module"
    del second["tasks"]["beeps-v1-full"]
    (tmp_path / "other.json").write_text(json.dumps(second))
    assert cli(["report", str(out / "results.json"), str(tmp_path / "other.json"), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| task | metric | tympan | other.module |" in md and "(1) |" in md
    assert "| beeps-v1-full | event_onset_200ms_fms |" in md and md.count(" - ") >= 1
    png = (tmp_path / "rep" / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    (tmp_path / "bad.json").write_text("{}")
    assert cli(["report", str(tmp_path / "bad.json"), "--out", str(tmp_path / "rep2")]) == 2


def test_report_pools_seeds_of_the_same_module_and_weights():
    from tympan.kit import report

    def run(module, seed, score, model_path=None, sha="a" * 64):
        entry = {"primary_metric": "top1_acc", "scores": {"top1_acc": {"mean": score, "std": 0.0, "folds": {"test": score}}}}
        return {"module": module, "model_path": model_path, "weights_sha256": sha, "seed": seed, "tasks": {"t": entry}}

    runs = [run("m", 0, 0.5), run("m", 1, 0.7), run("f", 0, 0.9, "x/a.pt", "b" * 64), run("f", 0, 0.2, "x/b.pt", "c" * 64)]
    runs.append(run("g", 0, 0.4, "local", "d" * 64))  # a module given a named model, alone: still named
    md = report.table(runs)
    assert "| task | metric | m | f=a | f=b | g=local |" in md
    # m: mean of 0.5 and 0.7, sample std 0.1414, two scores; f=a and f=b stay apart (other weights)
    assert "| t | top1_acc | 0.600 ± 0.141 (2) | 0.900 ± 0.000 (1) | 0.200 ± 0.000 (1) | 0.400 ± 0.000 (1) |" in md


def test_weights_hash_for_a_file_and_for_a_name_the_module_resolves(tmp_path):
    """load_model's argument may be a file (hashed) or a name such as crepe's "full" or aisfx's
    "local" (no file: the loaded state_dict is hashed), never an error after a finished run."""
    import hashlib

    import torch

    from tympan.checksum import state_dict_sha256, weights_identity

    f = tmp_path / "w.pt"
    f.write_bytes(b"weights")
    net = torch.nn.Linear(2, 3)
    # a torch module is identified by what it loaded, however load_model was called
    by_state = state_dict_sha256(net.state_dict())
    assert len(by_state) == 64
    assert weights_identity(net, str(f)) == weights_identity(net, "local") == weights_identity(net, "") == by_state
    # a model that is not a torch module: the file's bytes, else unknown
    assert weights_identity(object(), str(f)) == hashlib.sha256(b"weights").hexdigest()
    assert weights_identity(object(), "local") is None
