"""`tympan evaluate` and `tympan report` end to end on small generated tasks."""

import json
import pickle
import shutil
from pathlib import Path

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


def scene_task(root, split_mode="trainvaltest", n_clips=12):
    rng = np.random.default_rng(0)
    splits = ["train", "valid", "test"] if split_mode == "trainvaltest" else ["fold00", "fold01", "fold02"]
    labels, audio = {}, {}
    for split in splits:
        labels[split] = {}
        for i in range(n_clips):
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


# ---------------------------------------------------------------------------------------
# Unlike runs are never mixed (issue 11.1, 11.2), tasks are checked before any embedding
# (11.7), usage errors are one line with exit code 2 and Ctrl-C exits 130 (11.8).

HEARMODS = Path(__file__).parent / "hearmods"
TONES = "tones-trainvaltest-v1-full"


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """One small scene task scored by tympan (seed 0, grid fast): (tasks folder, OUT)."""
    tasks = tmp_path_factory.mktemp("one-task")
    scene_task(tasks)
    out = tmp_path_factory.mktemp("scored") / "out"
    ev.evaluate("tympan", tasks, out, grid="fast", seed=0)
    return tasks, out


def copy_of(out, tmp_path):
    return Path(shutil.copytree(out, tmp_path / "out"))


def no_work(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("nothing may be embedded or trained in a refused run")

    monkeypatch.setattr(ev, "embed_task", refuse)
    monkeypatch.setattr(ev, "score_task", refuse)


UNLIKE = {
    # what differs from the run that filled OUT: evaluate's arguments, and words of the refusal
    "module": (dict(module_name="hearmod_good"), "module 'tympan' there, 'hearmod_good' now"),
    "weights": (dict(weights="f" * 64), "weights_sha256"),
    "seed": (dict(seed=1), "seed 0 there, 1 now"),
    "grid": (dict(grid="one"), "grid 'fast' there, 'one' now"),
    "suite": (dict(suite=True), "task_identity"),
}


@pytest.mark.parametrize("change", list(UNLIKE))
def test_unlike_runs_into_one_folder_are_refused_before_any_work(scored, tmp_path, monkeypatch, change):
    """Before: every one of these printed 'already scored' and wrote tympan's seed-0 scores
    labelled as the new run (exit 0)."""
    tasks, out = scored
    out = copy_of(out, tmp_path)
    args, words = UNLIKE[change]
    kwargs = dict(module_name="tympan", tasks_dir=tasks, out=out, grid="fast", seed=0)
    kwargs.update({k: v for k, v in args.items() if k in ("module_name", "seed", "grid")})
    monkeypatch.syspath_prepend(str(HEARMODS))
    if "weights" in args:
        monkeypatch.setattr(ev, "weights_identity", lambda model, path="": args["weights"])
    if "suite" in args:  # the same task name in another suite: other clips
        kwargs["tasks_dir"] = tmp_path / "other-suite"
        scene_task(kwargs["tasks_dir"], n_clips=11)
    before = (out / "results.json").read_bytes()
    no_work(monkeypatch)
    with pytest.raises(ev.UsageError) as info:
        ev.evaluate(**kwargs)
    message = str(info.value)
    assert f"tasks/{TONES}.json was scored by another run" in message and words in message, message
    assert "another --out" in message
    assert (out / "results.json").read_bytes() == before  # nothing rewritten


def test_embeddings_of_other_weights_are_never_reused(scored, tmp_path, monkeypatch):
    """Before: with the task's score deleted, a run with other weights rescored tympan's v0
    embeddings and labelled them with the new weights."""
    tasks, out = scored
    out = copy_of(out, tmp_path)
    (out / "tasks" / f"{TONES}.json").unlink()
    monkeypatch.setattr(ev, "weights_identity", lambda model, path="": "e" * 64)
    no_work(monkeypatch)
    with pytest.raises(ev.UsageError, match=f"embeddings/tympan/{TONES} holds embeddings of another run") as info:
        ev.evaluate("tympan", tasks, out, grid="fast", seed=0)
    assert "weights_sha256" in str(info.value)
    provenance = json.loads((out / "embeddings" / "tympan" / TONES / "provenance.json").read_text())
    assert provenance["weights_sha256"] == tympan.load_model().weights_sha256


def test_each_result_records_what_produced_it(scored):
    _, out = scored
    entry = json.loads((out / "tasks" / f"{TONES}.json").read_text())
    prov = entry["provenance"]
    assert prov["module"] == "tympan" and prov["seed"] == 0 and prov["grid"] == "fast"
    assert prov["weights_sha256"] == tympan.load_model().weights_sha256
    assert len(prov["task_identity"]) == 64


def test_results_without_provenance_are_refused(scored, tmp_path, monkeypatch):
    tasks, out = scored
    out = copy_of(out, tmp_path)
    done = out / "tasks" / f"{TONES}.json"
    entry = json.loads(done.read_text())
    del entry["provenance"]
    done.write_text(json.dumps(entry))
    no_work(monkeypatch)
    with pytest.raises(ev.UsageError, match="records no provenance"):
        ev.evaluate("tympan", tasks, out, grid="fast", seed=0)


def test_a_resumed_run_matches_an_uninterrupted_one(scored, tmp_path, monkeypatch):
    """Killed after the embeddings, before scoring: the rerun scores what is there and gets
    the uninterrupted run's numbers."""
    tasks, out = scored
    fresh = tmp_path / "fresh"
    real = ev.score_task

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ev, "score_task", killed)
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate("tympan", tasks, fresh, grid="fast", seed=0)
    assert not (fresh / "tasks" / f"{TONES}.json").exists()
    monkeypatch.setattr(ev, "score_task", real)
    resumed = ev.evaluate("tympan", tasks, fresh, grid="fast", seed=0)["tasks"][TONES]
    reference = json.loads((out / "tasks" / f"{TONES}.json").read_text())
    assert resumed["scores"] == reference["scores"] and resumed["provenance"] == reference["provenance"]


def write_wav(path, samples, rate=SR):
    import soundfile as sf

    sf.write(path, samples, rate, subtype="PCM_16")


def break_empty_split(task):
    (task / "valid.json").write_text("{}")
    return "valid.json: files: none: split 'valid' is empty"


def break_length(task):
    write_wav(task / "16000" / "test" / "test-03.wav", np.zeros(SR, dtype=np.float32))
    return "16000/test/test-03.wav: length: 16000 samples; sample_duration 0.5 s at 16000 Hz needs 8000"


def break_channels(task):
    write_wav(task / "16000" / "train" / "train-01.wav", np.zeros((SR // 2, 2), dtype=np.float32))
    return "16000/train/train-01.wav: channels: 2; HEAR task audio is mono"


def break_metric(task):
    meta = json.loads((task / "task_metadata.json").read_text())
    meta["evaluation"] = ["top1_acc", "top5_acc"]
    (task / "task_metadata.json").write_text(json.dumps(meta))
    return "task_metadata.json: evaluation: unknown metric 'top5_acc'"


def break_stray_folder(task):
    (task.parent / "keywords-v2-full").mkdir()
    (task.parent / "keywords-v2-full" / "train.json").write_text("{}")
    return "keywords-v2-full/task_metadata.json: file: missing: keywords-v2-full is not a HEAR task folder"


@pytest.mark.parametrize("damage", [break_empty_split, break_length, break_channels, break_metric, break_stray_folder])
def test_a_bad_task_stops_the_run_before_any_embedding(tmp_path, monkeypatch, capsys, damage):
    """Before: IndexError after embedding (empty split), a numpy traceback naming no file
    (length, channels), a failure after training (metric), a task silently left out (stray)."""
    tasks = tmp_path / "tasks"
    good = scene_task(tasks, "new_split_kfold")  # a good task beside the damaged one
    words = damage(scene_task(tasks))
    no_work(monkeypatch)
    code = cli(["evaluate", "tympan", "--tasks", str(tasks), "--out", str(tmp_path / "out"), "--grid", "fast"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("tympan evaluate: error: ") and err.count("\n") == 1, err
    assert words in err, err
    assert not (tmp_path / "out" / "embeddings").exists()
    assert good.is_dir()


def test_usage_errors_are_one_line_with_exit_code_2(scored, tmp_path, capsys):
    """Before: tracebacks (FileNotFoundError, FileExistsError, WeightsError)."""
    tasks, _ = scored
    out = str(tmp_path / "out")
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "bad.pt").write_bytes(b"not weights")
    cases = [
        (["--tasks", str(tmp_path / "nowhere"), "--out", out], f"--tasks {tmp_path / 'nowhere'}: no such folder"),
        (["--tasks", str(tasks), "--out", str(tmp_path / "a-file")], f"--out {tmp_path / 'a-file'} is a file"),
        (["--tasks", str(tasks), "--out", out, "--model", str(tmp_path / "bad.pt")], f"--model {tmp_path / 'bad.pt'}"),
        (["--tasks", str(tasks), "--out", out, "--device", "no-such-device"], "--device 'no-such-device' cannot be used"),
    ]
    for args, words in cases:
        assert cli(["evaluate", "tympan", *args, "--grid", "fast"]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("tympan evaluate: error: ") and err.count("\n") == 1 and words in err, err
        assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_ctrl_c_in_evaluate_exits_130_and_resumes(scored, tmp_path, monkeypatch, capsys):
    tasks, _ = scored

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ev, "embed_task", interrupted)
    try:
        code = cli(["evaluate", "tympan", "--tasks", str(tasks), "--out", str(tmp_path / "out"), "--grid", "fast"])
    except KeyboardInterrupt:  # before: it escaped with a traceback (and would stop pytest)
        pytest.fail("KeyboardInterrupt escaped tympan evaluate")
    assert code == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "run the same command again to resume" in err and "Traceback" not in err


def results_file(path, module="m", seed=0, score=0.5, grid="fast", tasks_dir="suite-a", identity=None, **extra):
    scores = {"top1_acc": {"mean": score, "std": 0.0, "folds": {"test": score}}}
    entry = {"primary_metric": "top1_acc", "scores": scores}
    if identity:
        entry["provenance"] = {"task_identity": identity}
    run = {"module": module, "model_path": None, "weights_sha256": "a" * 64, "seed": seed, "grid": grid,
           "event_grid": grid, "tasks_dir": tasks_dir, "tasks": {"t": entry}, **extra}
    path.write_text(json.dumps(run))
    return str(path)


def test_report_refuses_the_same_run_twice(tmp_path, capsys):
    """Before: one results file given twice was pooled as two seeds: '0.500 ± 0.000 (2)'."""
    one = results_file(tmp_path / "r.json")
    assert cli(["report", one, one, "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert "are the same run" in err and "give each run once" in err and err.count("\n") == 1, err
    assert not (tmp_path / "rep").exists()
    # A copy of the same run under another name is the same run too.
    two = results_file(tmp_path / "copy.json")
    assert cli(["report", one, two, "--out", str(tmp_path / "rep")]) == 2


REPORT_UNLIKE = {
    # second run's difference from results_file's defaults -> the two column labels
    "module": (dict(module="n"), ["m", "n"]),
    "weights": (dict(weights_sha256="b" * 64), ["m (aaaaaaaa)", "m (bbbbbbbb)"]),
    "grid": (dict(grid="default"), ["m [grid fast]", "m [grid default]"]),
    "suite (recorded identity)": (dict(tasks_dir="suite-a", identity="2" * 64), ["m #1", "m #2"]),
    "suite (older results: by path)": (dict(tasks_dir="suite-b"), ["m [tasks suite-a]", "m [tasks suite-b]"]),
}


@pytest.mark.parametrize("change", list(REPORT_UNLIKE))
def test_report_never_pools_unlike_runs(tmp_path, capsys, change):
    """Before: the same module on two suites with the same task names (and the same runs at
    two grids) were averaged as seeds: '0.500 ± 0.707 (2)'."""
    diff, labels = REPORT_UNLIKE[change]
    base = dict(identity="1" * 64) if "identity" in diff else {}
    first = results_file(tmp_path / "a.json", score=0.0, **base)
    second = results_file(tmp_path / "b.json", seed=1, score=1.0, **diff)
    assert cli(["report", first, second, "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert f"| task | metric | {' | '.join(labels)} |" in md, md
    assert "| t | top1_acc | 0.000 ± 0.000 (1) | 1.000 ± 0.000 (1) |" in md, md
    if change in ("grid", "suite (recorded identity)", "suite (older results: by path)"):
        assert "Not pooled as seeds of one run" in md and f"{second} (seed 1) is not pooled" in md
        assert ("grid" in md.split("Not pooled")[1]) == (change == "grid")


def test_report_pools_seeds_with_the_same_task_data(tmp_path):
    first = results_file(tmp_path / "a.json", score=0.0, identity="1" * 64)
    second = results_file(tmp_path / "b.json", seed=1, score=1.0, identity="1" * 64, tasks_dir="moved/suite-a")
    assert cli(["report", first, second, "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| t | top1_acc | 0.500 ± 0.707 (2) |" in md and "Not pooled" not in md


def test_report_gives_each_columns_difference_from_the_first_in_standard_errors(tmp_path):
    from tympan.kit import report

    base = [results_file(tmp_path / f"a{s}.json", seed=s, score=v) for s, v in enumerate((0.50, 0.52, 0.54))]
    other = [results_file(tmp_path / f"b{s}.json", seed=s, score=v, weights_sha256="b" * 64)
             for s, v in enumerate((0.60, 0.64, 0.62))]
    lone = results_file(tmp_path / "c.json", module="n", score=0.9)
    assert cli(["report", *base, *other, lone, "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    # +0.10 with both stds 0.02 over 3 scores: se = sqrt(2 * 0.0004 / 3) = 0.0163 -> 6.1 se
    assert "| t | +0.100 (6.1 se) | +0.380 (one score: no se) |" in md, md
    assert "| task | m (bbbbbbbb) - m (aaaaaaaa) | n - m (aaaaaaaa) |" in md, md
    assert report.difference((0.5, 0.0, 3), (0.5, 0.0, 3)) == "+0.000 (no spread)"
    assert report.difference(None, (0.5, 0.1, 3)) == "-"
    # one column: no differences table
    assert report.differences([json.loads(Path(p).read_text()) for p in base]) == ""


def test_report_refuses_foreign_files_and_a_file_as_out(tmp_path, capsys):
    """Before: a results.json without scores gave a KeyError traceback."""
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"module": "m", "tasks": {"t": {"primary_metric": "top1_acc", "scores": {}}}}))
    truncated = tmp_path / "truncated.json"
    truncated.write_text(Path(results_file(tmp_path / "ok.json")).read_text()[:40])
    for bad in (foreign, truncated):
        assert cli(["report", str(bad), "--out", str(tmp_path / "rep")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"tympan report: error: {bad} is not a results.json") and err.count("\n") == 1, err
    (tmp_path / "a-file").write_text("x")
    assert cli(["report", str(tmp_path / "ok.json"), "--out", str(tmp_path / "a-file")]) == 2
    assert "--out" in capsys.readouterr().err
