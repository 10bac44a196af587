"""CLIP scoring, consistency and FID with a tiny random open_clip model (no downloads).

The ``tiny_clip`` fixture is shared by the other evaluation tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from loradeck.core.evaluation.clip import ClipScorer, mean_pairwise_cosine  # noqa: E402
from loradeck.core.evaluation.errors import WeightsUnavailableError  # noqa: E402
from loradeck.core.evaluation.fid import ClipFeatures, FidScorer  # noqa: E402
from loradeck.core.evaluation.tinyclip import (  # noqa: E402
    TINY_NAME,
    WEIGHTS_FILE,
    register_tiny_config,
    write_tiny_model,
)
from loradeck.core.evaluation.weights import resolve_weights  # noqa: E402


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tinyclip")
    write_tiny_model(folder, seed=0)
    return folder


def load_tiny(folder: Path) -> ClipScorer:
    """The tiny model on the CPU, one thread: tiny tensors gain nothing from more, and
    on a loaded machine the extra threads only wait."""
    torch.set_num_threads(1)
    return ClipScorer.load(f"local-dir:{folder}", "", device="cpu")


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_dir: Path) -> ClipScorer:
    return load_tiny(tiny_clip_dir)


def images(count: int, *, seed: int = 0, size: int = 48, shift: float = 0.0) -> list[np.ndarray]:
    """Smooth random colour fields (+ ``shift`` in brightness), H x W x 3 uint8."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        coarse = rng.random((4, 4, 3)) * 200
        field = np.kron(coarse, np.ones((size // 4, size // 4, 1)))
        out.append(np.clip(field + shift + rng.normal(0, 8, field.shape), 0, 255).astype(np.uint8))
    return out


PROMPTS = ["a red circle", "a blue square", "a green triangle on black", "a photo"]


def test_batched_equals_one_by_one(tiny_clip: ClipScorer) -> None:
    batch = images(10, size=40) + images(3, seed=9, size=64)  # two sizes in one batch
    together = tiny_clip.encode_images(batch, batch_size=8)
    alone = torch.cat([tiny_clip.encode_images([image], batch_size=1) for image in batch])
    assert together.shape == (13, tiny_clip.embed_dim)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
    prompts = [PROMPTS[i % 4] for i in range(13)]
    scores = tiny_clip.score(batch, prompts, batch_size=8)
    single = [
        tiny_clip.score([image], [prompt])[0] for image, prompt in zip(batch, prompts, strict=True)
    ]
    np.testing.assert_allclose(scores, single, atol=1e-3)


def test_deterministic_across_loads(tiny_clip: ClipScorer, tiny_clip_dir: Path) -> None:
    again = ClipScorer.load(f"local-dir:{tiny_clip_dir}", "", device="cpu")
    batch = images(6, seed=3)
    torch.testing.assert_close(tiny_clip.encode_images(batch), again.encode_images(batch))
    torch.testing.assert_close(tiny_clip.encode_texts(PROMPTS), again.encode_texts(PROMPTS))


def test_ranges_and_definition(tiny_clip: ClipScorer) -> None:
    batch = images(8, seed=4)
    features = tiny_clip.encode_images(batch)
    texts = tiny_clip.encode_texts([PROMPTS[i % 4] for i in range(8)])
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(8), atol=1e-5, rtol=0)
    scores = ClipScorer.clip_scores(features, texts)
    assert bool(((scores >= 0) & (scores <= 100)).all())
    expected = torch.clamp(100 * (features * texts).sum(-1), min=0)
    torch.testing.assert_close(scores, expected, atol=1e-4, rtol=1e-4)
    # Identical image and text embeddings score 100: the top of the range.
    assert float(ClipScorer.clip_scores(features[:1], features[:1])[0]) == pytest.approx(100.0)


def test_consistency_is_mean_pairwise_cosine(tiny_clip: ClipScorer) -> None:
    same = tiny_clip.encode_images(images(1, seed=5) * 4)
    assert mean_pairwise_cosine(same) == pytest.approx(1.0, abs=1e-5)
    varied = tiny_clip.encode_images(images(4, seed=6))
    value = mean_pairwise_cosine(varied)
    assert value is not None and -1.0 <= value < 1.0
    assert mean_pairwise_cosine(varied[:1]) is None


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_shift(tiny_clip: ClipScorer) -> None:
    reference = tiny_clip.to_model_size(images(64, seed=1))
    fid = FidScorer(tiny_clip, reference, batch_size=16)
    itself = fid.distance(reference)
    near = fid.distance(tiny_clip.to_model_size(images(64, seed=1, shift=20)))
    far = fid.distance(tiny_clip.to_model_size(images(64, seed=1, shift=60)))
    assert itself == pytest.approx(0.0, abs=1e-4)
    assert itself < near < far
    assert fid.why_not(64) is None
    assert "at least 8" in (fid.why_not(3) or "")


def test_fid_feature_module_takes_uint8_and_any_size(tiny_clip: ClipScorer) -> None:
    module = ClipFeatures(tiny_clip)
    assert module.num_features == tiny_clip.embed_dim
    raw = torch.from_numpy(np.stack(images(2, size=64))).permute(0, 3, 1, 2)
    sized = tiny_clip.to_model_size(images(2, size=64))
    torch.testing.assert_close(module(raw), module(sized))
    torch.testing.assert_close(module(raw.float() / 255), module(raw), atol=1e-4, rtol=1e-4)


def test_registered_config_with_a_weights_file(
    tiny_clip: ClipScorer, tiny_clip_dir: Path, tmp_path: Path
) -> None:
    name = register_tiny_config(tmp_path)
    assert name == TINY_NAME and name in open_clip.list_models()
    weights = str(tiny_clip_dir / WEIGHTS_FILE)
    scorer = ClipScorer.load(name, weights, device="cpu")
    batch = images(3, seed=8)
    torch.testing.assert_close(scorer.encode_images(batch), tiny_clip.encode_images(batch))


def test_weight_names_that_cannot_work_fail_with_advice(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="not an open_clip model"):
        resolve_weights("ViT-Nope", "openai", online=False)
    with pytest.raises(WeightsUnavailableError, match=r"not a pretrained tag of ViT-B-32"):
        resolve_weights("ViT-B-32", "no-such-tag", online=False)
    with pytest.raises(WeightsUnavailableError, match="no such file"):
        resolve_weights("ViT-B-32", str(tmp_path / "w.safetensors"), online=False)
    with pytest.raises(WeightsUnavailableError, match=r"no open_clip_config\.json"):
        resolve_weights(f"local-dir:{tmp_path}", "", online=False)
    random = resolve_weights("ViT-B-32", "", online=False)
    assert random.pretrained is None and "random" in random.description


def test_tag_resolution_uses_the_cache_or_explains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_weights("ViT-B-32", "openai", online=False)
    message = info.value.message
    assert "hf download timm/vit_base_patch32_clip_224.openai" in message
    assert "models--timm--vit_base_patch32_clip_224.openai" in message
    assert str(tmp_path / "hub") in message and "clip_pretrained" in message
    snapshot = (
        tmp_path / "hub" / "models--timm--vit_base_patch32_clip_224.openai" / "snapshots" / "abc"
    )
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"x")
    refs = snapshot.parent.parent / "refs"
    refs.mkdir()
    (refs / "main").write_text("abc")
    found = resolve_weights("ViT-B-32", "openai", online=False)
    assert found.pretrained == str(snapshot / "open_clip_model.safetensors")
    assert found.force_quick_gelu and found.preprocess  # what the tag implies is kept


def test_half_precision_model_as_on_a_gpu(tiny_clip: ClipScorer, tiny_clip_dir: Path) -> None:
    """On a GPU the model is fp16 while open_clip keeps some parameters fp32; inputs must
    follow the layers. CPUs run fp16 convolutions too, so this path is checked here."""
    from loradeck.core.evaluation.clip import Preprocess, quiet_open_clip

    with quiet_open_clip():
        model = open_clip.create_model(f"local-dir:{tiny_clip_dir}", precision="fp16")
    half = ClipScorer(model, tiny_clip.tokenizer, tiny_clip.preprocess, device=torch.device("cpu"))
    assert half.dtype == torch.float16
    assert isinstance(tiny_clip.preprocess, Preprocess)
    batch = images(4, seed=11)
    torch.testing.assert_close(
        half.encode_images(batch), tiny_clip.encode_images(batch), atol=2e-2, rtol=0
    )
    fid = FidScorer(half, half.to_model_size(images(8, seed=12)), min_images=2)
    assert fid.distance(half.to_model_size(images(8, seed=12))) == pytest.approx(0, abs=1e-2)
