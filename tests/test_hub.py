"""Sharing checkpoints over a fake Hub (tests/hub_server.py): `push_to_hub` and `theworld push`, loading by repo id
in a process without `theworld`, pinned checkpoint and base revisions, refused checkpoints, the card, `theworld info`.

Three subprocesses do the work (each pays the ~10 s import of transformers): one builds and pushes the checkpoints
(`theworld` installed, bases from the fake Hub so their revisions are pinned to its commits), one loads them with
nothing but transformers, one runs the command line.
"""

import hashlib
import json
import logging
import pickle
import re
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from fresh_process import run_fresh
from hub_server import FakeHub, hub_env
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, Gemma3ForConditionalGeneration
from world_inputs import CHECKPOINT_FILES, make_image

import theworld
from theworld import TheWorld
from theworld.data import VSRExample
from theworld.hub.card import EXAMPLE_CAPTION, build_model_card
from theworld.hub.files import REMOTE_CODE_FILES
from theworld.hub.push import push_checkpoint
from theworld.prompt import ANSWERS
from theworld.testing.tiny import tiny_gemma_config
from theworld.training import evaluate_vsr

pytestmark = pytest.mark.usefixtures("online_hub_client")

TESTS = Path(__file__).parent
PACKAGE = Path(theworld.__file__).parent
GEMMA, COSMOS, NARROW_GEMMA = "tiny-org/gemma", "tiny-org/cosmos", "tiny-org/gemma-narrow"
PROJECTOR, LORA, CLI_REPO = "tiny-org/theworld-projector", "tiny-org/theworld-lora", "tiny-org/theworld-cli"
PICKLED, OTHER_BASE = "tiny-org/theworld-pickled", "tiny-org/theworld-other-base"
REPUSHED = "tiny-org/theworld-repushed"
PUSHED_FILES = {".gitattributes", "README.md", *CHECKPOINT_FILES}
LORA_CONFIG = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.0}

# Shared by both scripts: the outputs compared between the original model and the one loaded from the Hub.
OUTPUTS = """
import json, sys
from pathlib import Path
import torch
from PIL import Image
from safetensors.torch import save_file

out = Path(sys.argv[1])
image = Image.open(out / "photo.jpg").convert("RGB")

def save_outputs(model, processor, name, question):
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}]
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        logits = model(**inputs).logits
    generated = model.generate(**inputs, max_new_tokens=8, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    trained = {"trained." + key: value.contiguous() for key, value in model.trainable_state_dict().items()}
    save_file({"logits": logits, "generated": generated, **trained}, out / f"{name}.safetensors")
    return processor.decode(generated, skip_special_tokens=True)
"""

# Builds TheWorld on the Hub bases, "trains" it (seeded perturbation), pushes it with push_to_hub.
BUILD_SCRIPT = OUTPUTS + textwrap.dedent(
    f"""
    from world_inputs import perturb_trainable
    from theworld import TheWorld, TheWorldProcessor
    from theworld.hub.card import example_question

    question = example_question()
    answers = {{"question": question}}

    def build(**extra):
        model = TheWorld.from_bases({GEMMA!r}, {COSMOS!r}, world_image_size=64, world_grid_size=2)
        if extra.get("lora"):
            model.add_language_model_lora(extra["lora"])
        return model, TheWorldProcessor.from_model_config(model.config)

    def publish(model, processor, repo_id, name, seed, revision=None):
        perturb_trainable(model, seed=seed)
        answers[name] = save_outputs(model, processor, name, question)
        model.save_pretrained(out / name)
        processor.save_pretrained(out / name)
        model.push_to_hub(repo_id, revision=revision)
        processor.push_to_hub(repo_id, revision=revision)

    model, processor = build()
    publish(model, processor, {PROJECTOR!r}, "projector", seed=1)
    publish(model, processor, {PROJECTOR!r}, "projector-v2", seed=2, revision="v2")
    model, processor = build(lora={LORA_CONFIG!r})
    publish(model, processor, {LORA!r}, "lora", seed=3)
    (out / "answers.json").write_text(json.dumps(answers))
    """
)

# Loads each (name, repo id, from_pretrained kwargs) of a plan as any Hub user would, with transformers alone, runs the
# model card's usage snippet, and pushes the first model again.
LOAD_SCRIPT = (
    'import sys; sys.modules["theworld"] = None\n'
    + OUTPUTS
    + textwrap.dedent(
        """
        import contextlib, io, logging
        from transformers import AutoModel, AutoProcessor
        from transformers.utils import logging as transformers_logging

        # Transformers propagates its warnings to the root logger only when CI is set; collect them either way.
        transformers_logging.enable_propagation()
        # Transformers' standard notice for remote code fetched without a pinned revision; expected here.
        REMOTE_CODE_NOTICE = "A new version of the following files was downloaded"

        try:
            import theworld  # noqa: F401
        except ImportError:
            report = {"theworld_importable": False}
        else:
            report = {"theworld_importable": True}

        class Collect(logging.Handler):
            def __init__(self):
                super().__init__(logging.WARNING)
                self.messages = []

            def emit(self, record):
                if not record.getMessage().startswith(REMOTE_CODE_NOTICE):
                    self.messages.append({"logger": record.name, "message": record.getMessage()})

        question = json.loads((out / "answers.json").read_text())["question"]
        models = {}
        for name, repo_id, kwargs in json.loads(sys.argv[2]):
            collect = Collect()
            logging.getLogger().addHandler(collect)
            try:
                model = models[name] = AutoModel.from_pretrained(repo_id, trust_remote_code=True, **kwargs)
                revision = kwargs.get("revision")
                processor = AutoProcessor.from_pretrained(repo_id, trust_remote_code=True, revision=revision)
                answer = save_outputs(model, processor, "loaded-" + name, question)
                report[name] = {"answer": answer, "module": type(model).__module__}
            except Exception as error:
                report[name] = {"error": f"{type(error).__name__}: {error}"}
            report[name]["warnings"] = collect.messages
            logging.getLogger().removeHandler(collect)

        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile((out / "snippet.py").read_text(), "snippet.py", "exec"), {})
        report["snippet"] = printed.getvalue()[:-1]  # print() adds one newline
        models["projector"].push_to_hub(sys.argv[3])  # the remote code alone: transformers' default card
        print(json.dumps(report))
        """
    )
)


@dataclass
class Published:
    """The fake Hub after the build script: base commits, and the work folder with the original outputs."""

    hub: FakeHub
    api: HfApi
    base_commits: dict[str, str]
    work: Path
    answers: dict[str, str]

    def outputs(self, name: str) -> dict[str, torch.Tensor]:
        return load_file(self.work / f"{name}.safetensors")

    def download(self, repo_id: str, filename: str, revision: str | None = None) -> Path:
        cache_dir = self.work / "downloads"
        return Path(
            hf_hub_download(repo_id, filename, revision=revision, endpoint=self.hub.endpoint, cache_dir=cache_dir)
        )


def run_python(script: str, *args: str, env: dict[str, str], cwd: Path) -> str:
    return run_fresh(script, *args, cwd=cwd, env={"PYTHONPATH": str(TESTS), **env})


def subprocess_env(hub: FakeHub, folder: Path) -> dict[str, str]:
    """A fresh Hub cache and remote-code module cache, on the fake Hub."""
    return {**hub_env(hub.endpoint, folder / "hf"), "HF_MODULES_CACHE": str(folder / "modules")}


def trained(outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key.removeprefix("trained."): value for key, value in outputs.items() if key.startswith("trained.")}


@pytest.fixture(scope="module")
def published(tiny_bases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    with FakeHub() as hub:
        api = HfApi(endpoint=hub.endpoint, token="hf_fake_token")
        commits = {}
        for repo_id, folder in ((GEMMA, tiny_bases.gemma), (COSMOS, tiny_bases.cosmos)):
            api.create_repo(repo_id)
            commits[repo_id] = api.upload_folder(repo_id=repo_id, folder_path=folder).oid
        work = tmp_path_factory.mktemp("published")
        make_image(0).save(work / "photo.jpg")
        run_python(BUILD_SCRIPT, str(work), env=subprocess_env(hub, work), cwd=work)
        answers = json.loads((work / "answers.json").read_text())
        yield Published(hub, api, commits, work, answers)
        assert not [entry for entry in hub.request_log if entry[2] >= 500], hub.request_log


@pytest.fixture(scope="module")
def loaded(published: Published, tiny_bases, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Adds the bad repositories and a new commit of the Gemma base, then loads everything without `theworld`."""
    api, work = published.api, published.work
    publish_pickled_checkpoint(api, work)
    publish_checkpoint_on_narrow_base(api, work, tiny_bases, tmp_path_factory.mktemp("narrow"))
    publish_new_gemma_commit(api, tiny_bases, tmp_path_factory.mktemp("gemma-v2"))
    card = ModelCard.load(published.download(PROJECTOR, "README.md"))
    (work / "snippet.py").write_text(re.search(r"```python\n(.*?)```", card.text, re.DOTALL).group(1))
    plan = [
        ("projector", PROJECTOR, {}),
        ("projector-v2", PROJECTOR, {"revision": "v2"}),
        ("lora", LORA, {}),
        ("gemma-override", PROJECTOR, {"gemma_revision": "main"}),
        ("pickled", PICKLED, {}),
        ("other-base", OTHER_BASE, {}),
    ]
    folder = tmp_path_factory.mktemp("loaded")
    env = subprocess_env(published.hub, folder)
    stdout = run_python(LOAD_SCRIPT, str(work), json.dumps(plan), REPUSHED, env=env, cwd=work)
    return json.loads(stdout.strip().splitlines()[-1])


class Tripwire:
    """Pickles to a call that creates `marker`: if it exists, something unpickled the weights."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def publish_pickled_checkpoint(api: HfApi, work: Path) -> None:
    folder = work / "pickled"
    shutil.copytree(work / "projector", folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Tripwire(work / "unpickled")))
    api.create_repo(PICKLED)
    api.upload_folder(repo_id=PICKLED, folder_path=folder)


def publish_checkpoint_on_narrow_base(api: HfApi, work: Path, tiny_bases, folder: Path) -> None:
    """A checkpoint whose config names a Gemma of half the hidden size (a hand-edited or mixed-up config.json)."""
    vocab_size = AutoConfig.from_pretrained(tiny_bases.gemma).get_text_config().vocab_size
    Gemma3ForConditionalGeneration(tiny_gemma_config(vocab_size, hidden_size=32)).save_pretrained(folder / "gemma")
    api.create_repo(NARROW_GEMMA)
    narrow_commit = api.upload_folder(repo_id=NARROW_GEMMA, folder_path=folder / "gemma").oid
    shutil.copytree(work / "projector", folder / "checkpoint")
    config = json.loads((folder / "checkpoint" / "config.json").read_text())
    config.update(gemma_model_name_or_path=NARROW_GEMMA, gemma_revision=narrow_commit)
    (folder / "checkpoint" / "config.json").write_text(json.dumps(config))
    api.create_repo(OTHER_BASE)
    api.upload_folder(repo_id=OTHER_BASE, folder_path=folder / "checkpoint")


def publish_new_gemma_commit(api: HfApi, tiny_bases, folder: Path) -> None:
    """Moves the Gemma base's main branch to other weights, after the checkpoints were pinned to the old commit."""
    weights = load_file(tiny_bases.gemma / "model.safetensors")
    generator = torch.Generator().manual_seed(0)
    moved = {name: tensor + 0.05 * torch.randn(tensor.shape, generator=generator) for name, tensor in weights.items()}
    save_file(moved, folder / "model.safetensors", metadata={"format": "pt"})
    api.upload_file(path_or_fileobj=folder / "model.safetensors", path_in_repo="model.safetensors", repo_id=GEMMA)


def assert_same_outputs(loaded: dict[str, torch.Tensor], original: dict[str, torch.Tensor]) -> None:
    torch.testing.assert_close(loaded["logits"], original["logits"], rtol=0, atol=1e-6)
    assert torch.equal(loaded["generated"], original["generated"])
    assert trained(loaded).keys() == trained(original).keys()
    for name, tensor in trained(original).items():
        assert torch.equal(trained(loaded)[name], tensor), name


# ---------------------------------------------------------------------------------------------- push_to_hub


@pytest.mark.parametrize("name, repo_id", [("projector", PROJECTOR), ("lora", LORA)])
def test_push_to_hub_uploads_exactly_the_checkpoint(published: Published, name: str, repo_id: str) -> None:
    assert set(published.api.list_repo_files(repo_id)) == PUSHED_FILES
    config = json.loads(published.download(repo_id, "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_theworld.TheWorld"
    assert config["gemma_model_name_or_path"] == GEMMA and config["world_encoder_name_or_path"] == COSMOS
    assert config["gemma_revision"] == published.base_commits[GEMMA]
    assert config["world_encoder_revision"] == published.base_commits[COSMOS]
    assert (config["lora_config"] is not None) == (name == "lora")

    weights = load_file(published.download(repo_id, "model.safetensors"))
    expected = trained(published.outputs(name))
    assert weights.keys() == expected.keys()  # the trained part only: no frozen Gemma or VAE weight
    assert all(torch.equal(weights[key], expected[key]) for key in expected)
    assert any("lora_" in key for key in weights) == (name == "lora")
    for file in REMOTE_CODE_FILES:
        assert published.download(repo_id, file).read_bytes() == (PACKAGE / file).read_bytes()


# ---------------------------------------------------------------------------------------------- loading anywhere


@pytest.mark.parametrize("name", ["projector", "lora"])
def test_a_process_without_theworld_reproduces_the_pushed_model(published: Published, loaded: dict, name: str) -> None:
    assert loaded["theworld_importable"] is False
    assert "error" not in loaded[name], loaded[name]
    assert loaded[name]["module"].startswith("transformers_modules.")  # the remote code, not the package
    assert_same_outputs(published.outputs(f"loaded-{name}"), published.outputs(name))
    assert loaded[name]["answer"] == published.answers[name]
    # TheWorld itself has nothing to warn about (dependencies' own warnings are not this test's business).
    assert [warning for warning in loaded[name]["warnings"] if "theworld" in warning["logger"]] == []


def test_the_card_usage_snippet_gives_the_original_answer(published: Published, loaded: dict) -> None:
    assert loaded["snippet"] == published.answers["projector"]


def test_each_checkpoint_revision_loads_its_own_weights(published: Published, loaded: dict) -> None:
    main, v2 = published.outputs("projector"), published.outputs("projector-v2")
    assert not torch.equal(main["logits"], v2["logits"])
    assert_same_outputs(published.outputs("loaded-projector-v2"), v2)
    assert_same_outputs(published.outputs("loaded-projector"), main)


def test_bases_load_at_the_pinned_commit_after_the_base_moved(published: Published, loaded: dict) -> None:
    pinned, moved = published.base_commits[GEMMA], published.api.model_info(GEMMA).sha
    assert moved != pinned
    # `loaded` ran after the Gemma base got a new commit; the checkpoint still reproduces the original outputs.
    assert_same_outputs(published.outputs("loaded-projector"), published.outputs("projector"))
    requests = [path for _, path, _ in published.hub.request_log]
    assert f"/{GEMMA}/resolve/{pinned}/model.safetensors" in requests


def test_overriding_a_pinned_base_warns_with_both_commits(published: Published, loaded: dict) -> None:
    pinned, moved = published.base_commits[GEMMA], published.api.model_info(GEMMA).sha
    (warning,) = [w["message"] for w in loaded["gemma-override"]["warnings"] if "pinned" in w["message"]]
    assert pinned in warning and moved in warning and GEMMA in warning
    override, original = published.outputs("loaded-gemma-override"), published.outputs("projector")
    assert not torch.allclose(override["logits"], original["logits"])  # the other base really was loaded


def test_a_pickle_only_repository_is_refused_without_unpickling(published: Published, loaded: dict) -> None:
    error = loaded["pickled"]["error"]
    assert error.startswith("OSError") and "only pickled weights (pytorch_model.bin)" in error, error
    assert not (published.work / "unpickled").exists()


def test_a_checkpoint_naming_a_base_of_another_architecture_is_refused(loaded: dict) -> None:
    error = loaded["other-base"]["error"]
    assert error.startswith("ValueError") and NARROW_GEMMA in error, error
    assert "gemma hidden_size: checkpoint 64 vs base 32" in error, error


def test_local_base_override_warns_that_its_commit_cannot_be_checked(make_world, tiny_bases, tmp_path, caplog) -> None:
    model, processor = make_world()
    model.save_pretrained(tmp_path / "checkpoint")
    with caplog.at_level(logging.WARNING):
        TheWorld.from_pretrained(tmp_path / "checkpoint")
    assert "pinned" not in caplog.text
    copy = shutil.copytree(tiny_bases.gemma, tmp_path / "gemma-copy")
    with caplog.at_level(logging.WARNING):
        TheWorld.from_pretrained(tmp_path / "checkpoint", gemma_model_name_or_path=str(copy))
    assert f"but '{copy}' at a commit that cannot be checked" in caplog.text


# ---------------------------------------------------------------------------------------------- model card


def sha256sum_of_code(folder: Path) -> str:
    """What the card tells users to run: `sha256sum <the three files> | sha256sum`."""
    listing = subprocess.run(["sha256sum", *REMOTE_CODE_FILES], cwd=folder, capture_output=True, check=True).stdout
    return hashlib.sha256(listing).hexdigest()


def downloaded_code(published: Published, repo_id: str, folder: Path, revision: str | None = None) -> Path:
    folder.mkdir()
    for file in REMOTE_CODE_FILES:
        shutil.copy(published.download(repo_id, file, revision=revision), folder / file)
    return folder


def test_remote_code_pushes_again_with_the_default_card(published: Published, loaded: dict) -> None:
    """Without the `theworld` package, `push_to_hub` is transformers' own: the checkpoint with the default card."""
    files = set(published.api.list_repo_files(REPUSHED))
    assert {"README.md", "config.json", "model.safetensors", "modeling_theworld.py"} <= files
    weights = load_file(published.download(REPUSHED, "model.safetensors"))
    expected = trained(published.outputs("projector"))
    assert weights.keys() == expected.keys() and all(torch.equal(weights[key], expected[key]) for key in expected)
    card = ModelCard.load(published.download(REPUSHED, "README.md"))
    assert card.data.library_name == "transformers" and "theworld" not in (card.data.tags or [])


def test_push_to_hub_writes_the_theworld_model_card(published: Published, tmp_path: Path) -> None:
    card = ModelCard.load(published.download(PROJECTOR, "README.md"))
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "image-text-to-text"
    assert card.data.base_model == [GEMMA, COSMOS]
    assert card.data.license == "other" and "Gemma Terms of Use" in card.text
    # A world encoder from a repository whose license the card does not know: it points at that repository.
    assert f"the world encoder under the license of `{COSMOS}`" in card.text
    assert "world encoder: wan2.1 (Cosmos-Predict2 / Wan 2.1 VAE" in card.text
    assert "theworld" in card.data.tags and "wan2.1" in card.data.tags
    assert published.base_commits[GEMMA] in card.text and published.base_commits[COSMOS] in card.text
    assert sha256sum_of_code(downloaded_code(published, PROJECTOR, tmp_path / "code")) in card.text
    assert "## Evaluation" not in card.text and card.data.eval_results is None  # push_to_hub knows no evaluation


# ---------------------------------------------------------------------------------------------- the command line

CLI_SCRIPT = """
import contextlib, io, json, sys
from theworld.cli import main

results = []
for argv in json.loads(sys.argv[1]):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(argv)
    results.append({"code": code, "stdout": printed.getvalue()})
print(json.dumps(results))
"""


def score(correct: int, total: int) -> dict[str, Any]:
    return {"accuracy": correct / total, "correct": correct, "total": total}


def eval_report() -> dict[str, Any]:
    """A `theworld eval` report of one split (the format of `training.evaluate.world_ablation_report`)."""
    world = {"Adjacency": score(1, 2), "Directional": score(5, 8)}
    ablated = {"Adjacency": score(1, 2), "Directional": score(4, 8)}
    return {
        "test": {
            "examples": 10,
            "world": {**score(6, 10), "unparsed": 0, "per_relation": {}, "per_meta_category": world},
            "world_ablated": {**score(5, 10), "unparsed": 1, "per_relation": {}, "per_meta_category": ablated},
            "world_gain": 0.1,
            "answers_changed_by_ablation": 2,
        }
    }


def make_run_folder(published: Published, run: Path) -> Path:
    """What `theworld train` leaves: OUTPUT/checkpoint, training_config.json, history.json; plus an eval.json."""
    shutil.copytree(published.work / "projector", run / "checkpoint")
    training = {
        "gemma": GEMMA,
        "world_encoder_path": COSMOS,
        "data_dir": "/private/data",
        "max_steps": 20,
        "batch_size": 8,
    }
    training |= {"learning_rate": 0.001, "lora_rank": 0, "seed": 0, "dtype": "float32", "mixed_precision": "no"}
    (run / "training_config.json").write_text(json.dumps(training))
    (run / "history.json").write_text(json.dumps({"loss": [[1, 2.0], [20, 0.25]], "dev_accuracy": []}))
    (run / "eval.json").write_text(json.dumps(eval_report()))
    return run / "checkpoint"


def test_cli_push_and_info(published: Published, tmp_path: Path) -> None:
    checkpoint = make_run_folder(published, tmp_path / "run")
    commands = [
        ["push", str(checkpoint), CLI_REPO, "--private", "--revision", "exp", "--dataset", "cambridgeltl/vsr_random"],
        ["info", CLI_REPO, "--revision", "exp"],
        ["info", str(checkpoint)],
    ]
    stdout = run_python(CLI_SCRIPT, json.dumps(commands), env=subprocess_env(published.hub, tmp_path), cwd=tmp_path)
    results = json.loads(stdout.strip().splitlines()[-1])
    assert [result["code"] for result in results] == [0, 0, 0], results
    api = published.api

    # One commit on a new branch of a new private repository: the checkpoint, its evaluation and the card.
    refs = {ref.name: ref.target_commit for ref in api.list_repo_refs(CLI_REPO).branches}
    assert refs.keys() == {"main", "exp"} and api.model_info(CLI_REPO).private
    assert api.list_repo_files(CLI_REPO) == [".gitattributes"]
    assert len(published.hub.repos[CLI_REPO].commits) == 2  # the repository's initial commit, and the push
    checkpoint_files = {path.name for path in checkpoint.iterdir()}
    assert set(api.list_repo_files(CLI_REPO, revision="exp")) == checkpoint_files | {
        ".gitattributes",
        "README.md",
        "eval.json",
    }

    card = ModelCard.load(published.download(CLI_REPO, "README.md", revision="exp"))
    assert card.data.base_model == [GEMMA, COSMOS] and card.data.datasets == ["cambridgeltl/vsr_random"]
    metrics = {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert metrics == {("test", "accuracy (world on)"): 0.6, ("test", "accuracy (world ablated)"): 0.5}
    assert "| test | 10 | 60.0% | 50.0% | +10.0 points |" in card.text
    assert "| Directional | 8 | 62.5% | 50.0% |" in card.text
    assert "| learning_rate | 0.001 |" in card.text and "| steps run | 20 |" in card.text
    assert "/private/data" not in card.text
    code_hash = sha256sum_of_code(downloaded_code(published, CLI_REPO, tmp_path / "code", revision="exp"))
    assert code_hash in card.text

    weights = load_file(checkpoint / "model.safetensors")
    expected_lines = [
        f"gemma base: {GEMMA} @ {published.base_commits[GEMMA]}",
        f"world encoder base: {COSMOS} @ {published.base_commits[COSMOS]} (in vae/)",
        "world encoder: wan2.1 (Cosmos-Predict2 / Wan 2.1 VAE (AutoencoderKLWan, 16 channels, 8x))",
        f"trainable parameters: {sum(t.numel() for t in weights.values()):,} in {len(weights)} tensors",
        f"size: {(checkpoint / 'model.safetensors').stat().st_size:,} bytes",
        f"remote code sha256: {code_hash}",
        "test: 60.0% / 50.0% (+10.0 points), 10 examples",
    ]
    repo_info, folder_info = results[1]["stdout"], results[2]["stdout"]
    assert f"checkpoint: {CLI_REPO} @ exp (commit {refs['exp']})" in repo_info
    for line in expected_lines:
        assert line in repo_info and line in folder_info, line


def test_the_card_of_a_choice_loss_run_answers_by_choice(make_world, tmp_path: Path) -> None:
    model, processor = make_world()
    run = tmp_path / "run"
    model.save_pretrained(run / "checkpoint")
    processor.save_pretrained(run / "checkpoint")
    (run / "training_config.json").write_text(json.dumps({"max_steps": 1, "answer_loss": "choices"}))
    card = build_model_card(run / "checkpoint", str(run / "checkpoint"))
    assert "| answer_loss | choices |" in card.text
    snippet = card.text.split("```python\n")[1].split("```")[0]
    make_image(0).save(tmp_path / "photo.jpg")
    answer = run_fresh(snippet, cwd=tmp_path).strip().splitlines()[-1]
    example = VSRExample("photo.jpg", tmp_path / "photo.jpg", EXAMPLE_CAPTION, label=1, relation="left of")
    chosen = evaluate_vsr(model, processor, [example], answer_by="choices", progress=False).predictions[0]
    assert answer == ANSWERS[chosen]


def test_push_refuses_a_checkpoint_on_local_bases(make_world, tmp_path: Path) -> None:
    model, processor = make_world()
    model.save_pretrained(tmp_path / "checkpoint")
    processor.save_pretrained(tmp_path / "checkpoint")
    with pytest.raises(ValueError, match="names its gemma base as .* at revision None, which nobody else can load"):
        push_checkpoint(tmp_path / "checkpoint", "tiny-org/never-created")
