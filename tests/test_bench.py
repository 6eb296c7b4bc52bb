"""`theworld bench`: the micro preset end to end, and the memory accounting the figures rest on."""

import json
import math

import pytest
import torch

from theworld.bench.harness import interleave, resident_bytes, transient_peak_bytes
from theworld.bench.report import ratios
from theworld.cli import main

FIGURES = ("training_step", "token_sweep", "generation", "loading", "latent_cache")
MIB = 2**20


@pytest.fixture()
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_micro_preset_end_to_end(tmp_path, capsys, one_thread):
    output = tmp_path / "bench.json"
    assert main(["bench", "--preset", "micro", "--threads", "1", "--output", str(output)]) == 0
    result = json.loads(output.read_text())

    assert tuple(result["figures"]) == FIGURES
    training = result["figures"]["training_step"]
    cases = {"theworld_cached", "theworld_vae", "theworld_checkpointed", "theworld_answer_logits", "gemma"}
    assert set(training["cases"]) == cases
    assert training["sequence_length"]["theworld"] == training["sequence_length"]["gemma"] + 16 + 2
    for case in training["cases"].values():
        assert case["peak_memory_bytes"] == case["resident_bytes"] + case["transient_bytes"] > 0
        assert len(case["samples"]) == result["settings"]["repeats"]
    assert [point["world_tokens"] for point in result["figures"]["token_sweep"]["points"]] == [4, 16]
    assert result["figures"]["loading"]["weights_overhead_bytes"] > 0

    for name in FIGURES:
        found = list(ratios(result["figures"][name]))
        assert found, f"{name} has no ratio"
        assert all(math.isfinite(value) and value > 0 for value in found), (name, found)
    assert len(result["targets"]) == 6
    assert all(isinstance(target["passed"], bool) for target in result["targets"])
    printed = capsys.readouterr().out
    assert "### Targets" in printed and ("PASS" in printed or "MISS" in printed)


def test_transient_peak_counts_what_is_alive_at_once():
    def two_buffers() -> None:
        first = torch.ones(MIB // 4)  # 1 MiB of float32
        second = torch.ones(MIB // 2)  # 2 MiB, while the first is alive
        del first, second
        torch.ones(MIB // 2)  # 2 MiB again, after both were freed

    assert transient_peak_bytes(two_buffers, torch.device("cpu")) == 3 * MIB


def test_resident_bytes_counts_shared_storage_once():
    linear = torch.nn.Linear(256, 256, bias=False)
    tied = torch.nn.ModuleDict({"a": linear, "b": torch.nn.Linear(256, 256, bias=False)})
    tied["b"].weight = linear.weight
    weight_bytes = 256 * 256 * 4
    assert resident_bytes(tied) == weight_bytes
    batch = {"x": torch.zeros(4, 256), "view": torch.zeros(8)[:4]}
    assert resident_bytes(tied, batch) == weight_bytes + 4 * 256 * 4 + 8 * 4


def test_interleave_alternates_cases():
    calls = []
    seconds = interleave({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, torch.device("cpu"), 1, 2)
    assert calls == ["a", "b"] * 3
    assert [len(samples) for samples in seconds.values()] == [2, 2]
