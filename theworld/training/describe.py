"""The describe stage: before the VSR task, the world projector learns to write a sentence about each training scene
into the world tokens (a LLaVA-style alignment stage on synthetic scenes).

The sentence is `describe_scene`'s, which settles every caption the synthetic data set asks. Its target is the
language model's own input embeddings of that sentence, one world token per sentence token in the last world tokens,
and the blank line's embedding in each world token before them, so the stage never runs the language model. The
sentence ends where the prompt goes on, and what comes before it is a word the language model reads: a zero vector
cannot be written exactly, and Gemma's RMSNorm scales what is left of it up to a random token. The loss is a
cross-entropy over the words the targets use (each world token scored against their embeddings) plus the squared
distance of every world token to its target, relative to the embeddings' mean norm; the sentences' words and the filler
weigh the same however many world tokens each takes.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.nn import functional
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..data import SceneObject, describe_scene, load_image
from ..loading_theworld import blank_line_id
from ..modeling_theworld import TheWorld
from ..processing_theworld import TheWorldProcessor
from .collation import IGNORE_INDEX
from .latent_cache import WorldLatentCache

DESCRIBE_BATCH_SIZE = 64  # scenes per step (and per encoding batch); the stage never runs the language model
DESCRIBE_EVAL_EVERY = 100  # steps between dev evaluations of the sentences written


@dataclass
class DescribedScene:
    """An image and the sentence the world tokens should hold for it."""

    image_path: Path
    sentence: str


def described_scenes(path: Path, images_dir: Path) -> list[DescribedScene]:
    """One `DescribedScene` per distinct image of a synthetic split (rows must carry the drawn `objects`)."""
    scenes: dict[Path, DescribedScene] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        row = json.loads(line)
        if "objects" not in row:
            raise ValueError(
                f"{path}:{number} has no 'objects': the describe stage needs each scene's objects, which synthetic "
                "data (theworld synth-vsr) has. Set describe_steps=0 for other data."
            )
        image_path = images_dir / row["image"]
        if image_path not in scenes:
            objects = [SceneObject(item["colour"], item["shape"], tuple(item["box"])) for item in row["objects"]]
            with Image.open(image_path) as image:
                sentence = describe_scene(objects, image_size=image.width)
            scenes[image_path] = DescribedScene(image_path, sentence)
    return list(scenes.values())


def sentence_token_ids(tokenizer, sentences: Sequence[str], num_world_tokens: int) -> torch.Tensor:
    """(n, num_world_tokens) token ids of each sentence in the last world tokens, after -100s (world tokens that hold
    no word): the sentence ends where the prompt goes on, so the question reads it as text it follows."""
    encoded = [tokenizer.encode(sentence, add_special_tokens=False) for sentence in sentences]
    longest = max(encoded, key=len)
    if len(longest) > num_world_tokens:
        raise ValueError(
            f"The describe stage's sentences take up to {len(longest)} tokens, more than the {num_world_tokens} world "
            "tokens per image; use a larger world_grid_size."
        )
    return torch.tensor([[IGNORE_INDEX] * (num_world_tokens - len(ids)) + ids for ids in encoded])


@torch.no_grad()
def world_latents(
    model: TheWorld, processor: TheWorldProcessor, paths: Sequence[Path], latent_cache: WorldLatentCache | None
) -> torch.Tensor:
    """(n, channels, frames, h, w) world latents of the images, through the latent cache if there is one."""
    if latent_cache is not None:
        latent_cache.fill(paths, progress=False)
        return torch.stack([latent_cache.get(path) for path in paths])
    latents = []
    for start in range(0, len(paths), DESCRIBE_BATCH_SIZE):
        images = [load_image(path) for path in paths[start : start + DESCRIBE_BATCH_SIZE]]
        latents.append(model.encode_world(processor.preprocess_world_images(images).to(model.device)).cpu())
    return torch.cat(latents)


class SentenceTargets:
    """The sentences of some scenes as world-token targets: each world token's index among the words the targets use
    (the sentences' words and the filler before them), and those words' input embeddings."""

    def __init__(self, model: TheWorld, token_ids: torch.Tensor, filler_id: int):
        self.words = token_ids != IGNORE_INDEX  # (n, N): world tokens that hold a sentence's word
        targets = token_ids.masked_fill(~self.words, filler_id)  # (n, N)
        vocabulary = torch.unique(targets)  # (V,) sorted ids of every word the targets use
        with torch.no_grad():
            self.vocabulary_embeddings = model.get_input_embeddings()(vocabulary.to(model.device)).float()  # (V, h)
            self.scale = self.vocabulary_embeddings.norm(dim=-1).mean()
        self.classes = torch.searchsorted(vocabulary, targets)  # (n, N)

    def logits(self, world_tokens: torch.Tensor) -> torch.Tensor:
        """(n, N, V) each world token's scores against the vocabulary's embeddings."""
        return world_tokens @ self.vocabulary_embeddings.T / self.scale

    def loss(self, world_tokens: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Each world token's cross-entropy plus squared distance to its target (relative to the embeddings' mean
        norm), averaged over the words and over the filler apart, then between the two: a long run of filler cannot
        outweigh the words."""
        classes = self.classes[rows].to(world_tokens.device)  # (b, N)
        words = self.words[rows].to(world_tokens.device)  # (b, N)
        cross_entropy = functional.cross_entropy(self.logits(world_tokens).transpose(1, 2), classes, reduction="none")
        distance = (world_tokens - self.vocabulary_embeddings[classes]).pow(2).sum(-1) / self.scale**2
        per_token = cross_entropy + distance  # (b, N)
        return torch.stack([per_token[group].mean() for group in (words, ~words) if group.any()]).mean()

    def accuracy(self, world_tokens: torch.Tensor, rows: torch.Tensor) -> tuple[float, float]:
        """Share of the sentences' tokens whose world token scores the sentence's own word highest, and share of
        scenes whose every world token (filler included) does."""
        correct = self.logits(world_tokens).argmax(-1).cpu() == self.classes[rows]
        words = self.words[rows]
        return ((correct & words).sum() / words.sum()).item(), correct.all(-1).float().mean().item()


def describe_world(
    model: TheWorld,
    processor: TheWorldProcessor,
    train_scenes: Sequence[DescribedScene],
    dev_scenes: Sequence[DescribedScene],
    steps: int,
    learning_rate: float,
    latent_cache: WorldLatentCache | None = None,
    batch_size: int = DESCRIBE_BATCH_SIZE,
    progress: bool = True,
) -> dict[str, list]:
    """Trains the world projector and position embeddings to write each scene's sentence; returns the stage's history:
    `describe_loss` per step and `describe_dev_token_accuracy` / `describe_dev_sentence_accuracy` per evaluation."""
    scenes = [*train_scenes, *dev_scenes]
    token_ids = sentence_token_ids(
        processor.tokenizer, [scene.sentence for scene in scenes], model.config.num_world_tokens
    )
    targets = SentenceTargets(model, token_ids, blank_line_id(processor.tokenizer))
    latents = world_latents(model, processor, [scene.image_path for scene in scenes], latent_cache)
    train_rows = torch.arange(len(train_scenes))
    dev_rows = torch.arange(len(train_scenes), len(scenes))

    parameters = [*model.world_projector.parameters(), model.world_position_embeddings]
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=steps // 20, num_training_steps=steps)
    history: dict[str, list] = {
        "describe_loss": [],
        "describe_dev_token_accuracy": [],
        "describe_dev_sentence_accuracy": [],
    }

    def evaluate(step: int) -> None:
        if not len(dev_rows):
            return
        with torch.no_grad():
            tokens, sentences = targets.accuracy(model.project_world(latents[dev_rows].to(model.device)), dev_rows)
        history["describe_dev_token_accuracy"].append([step, tokens])
        history["describe_dev_sentence_accuracy"].append([step, sentences])

    evaluate(0)
    for step in tqdm(range(1, steps + 1), desc="describe stage", disable=not progress):
        rows = train_rows[torch.randint(len(train_rows), (batch_size,))]
        loss = targets.loss(model.project_world(latents[rows].to(model.device)), rows)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        history["describe_loss"].append([step, loss.item()])
        if step % DESCRIBE_EVAL_EVERY == 0 or step == steps:
            evaluate(step)
    optimizer.zero_grad(set_to_none=True)
    return history
