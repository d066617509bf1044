"""The engine's CUDA paths: the Triton decode kernel, CUDA graphs, and the full-size model in bf16 against the
float32 reference. Skipped without a GPU (run on the device machine: see docs/engine-notes.md)."""

import os
import random
import subprocess
import sys

import pytest
import torch

from dsocr.engine.engine import EngineConfig, EngineRequest, LLMEngine
from dsocr.engine.kv_cache import gathered_decode_attention
from dsocr.generation.params import SamplingParams
from dsocr.generation.reference import GenerationRequest, generate
from dsocr.model.config import DeepseekOCR2Config
from dsocr.testing.fixtures import random_model, tiny_config

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
IMAGE_ID, EOS_ID = 3, 1


def _attention_case(dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, h, d, block, num_blocks, max_blocks = 5, 10, 128, 64, 40, 12
    keys = torch.randn(num_blocks, h, block, d, generator=g).to(device, dtype)
    values = torch.randn(num_blocks, h, block, d, generator=g).to(device, dtype)
    q = torch.randn(b, h, 1, d, generator=g).to(device, dtype)
    tables = torch.randint(1, num_blocks, (b, max_blocks), generator=g, dtype=torch.int32).to(device)
    lengths = torch.tensor([1, 64, 65, 300, 12 * 64], dtype=torch.int32, device=device)
    return q, keys, values, tables, lengths


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("splits", [None, 1, 3, 12])
def test_triton_decode_kernel_equals_the_gathered_reference(dtype, splits) -> None:
    from dsocr.engine.attention import paged_decode_attention
    q, keys, values, tables, lengths = _attention_case(dtype, "cuda")
    expected = gathered_decode_attention(q.float(), keys.float(), values.float(), tables, lengths)[:, :, 0]
    out = paged_decode_attention(q[:, :, 0], keys, values, tables, lengths, num_splits=splits)
    tolerance = 2e-5 if dtype == torch.float32 else 2e-2
    assert (out.float() - expected).abs().max().item() < tolerance


def test_triton_decode_kernel_in_the_interpreter() -> None:
    """The same kernel through Triton's CPU interpreter, where Triton is installed (not needed by dsocr)."""
    pytest.importorskip("triton")
    code = ("import torch\nfrom tests.engine.test_engine_cuda import _attention_case\n"
            "from dsocr.engine.attention import paged_decode_attention\n"
            "from dsocr.engine.kv_cache import gathered_decode_attention\n"
            "q, k, v, t, n = _attention_case(torch.float32, 'cpu')\n"
            "ref = gathered_decode_attention(q, k, v, t, n)[:, :, 0]\n"
            "for s in (1, 3, 12):\n"
            "    out = paged_decode_attention(q[:, :, 0], k, v, t, n, num_splits=s)\n"
            "    assert (out - ref).abs().max().item() < 1e-5, s\n"
            "print('ok')\n")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600, check=False,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr[-2000:]


def _engine(model, **config):
    return LLMEngine(model, encode_images=list, eos_token_id=EOS_ID, image_token_id=IMAGE_ID,
                     token_id=lambda token: 4 + len(token), config=EngineConfig(**config))


def _prompts(n, seed=0):
    rng = random.Random(seed)
    return [[0] + [rng.randrange(10, 500) for _ in range(rng.randrange(3, 40))] for _ in range(n)]


@cuda
def test_graphs_and_triton_equal_the_reference_on_cuda() -> None:
    """float32 on the GPU: the engine with CUDA graphs per bucket, Triton attention, requests joining a running
    batch (3 rows for 7 requests) gives the reference loop's greedy tokens."""
    model = random_model(tiny_config(), seed=7, device="cuda")
    reference = random_model(tiny_config(), seed=7, device="cuda")  # keeps the per-expert loop
    params = [SamplingParams(max_new_tokens=n, ngram_size=3, ngram_window=12, ignore_eos=True)
              for n in (40, 7, 25, 60, 3, 33, 18)]
    engine = _engine(model, max_batch=3, kv_cache_tokens=64 * 64)
    assert engine.runner.use_graphs and engine.runner.attention == "triton"
    prompts = _prompts(len(params))
    requests = engine.generate([EngineRequest(prompt_ids=p, params=sp) for p, sp in zip(prompts, params)])
    for prompt, sp, r in zip(prompts, params, requests):
        expected = generate(reference, [GenerationRequest(prompt_ids=prompt)], sp, image_token_id=IMAGE_ID,
                            eos_token_id=EOS_ID)[0]
        assert r.token_ids == expected.token_ids
    assert len(engine.runner._graphs) >= 2  # several buckets were captured


@cuda
def test_graph_replay_equals_eager_steps_in_bf16() -> None:
    model = random_model(tiny_config(), seed=3, dtype=torch.bfloat16, device="cuda")
    params = SamplingParams(max_new_tokens=50, ignore_eos=True)
    runs = []
    for graphs in (True, False):
        engine = _engine(model, cuda_graphs=graphs, kv_cache_tokens=64 * 64)
        runs.append([r.token_ids for r in engine.generate([EngineRequest(prompt_ids=p, params=params)
                                                           for p in _prompts(6, seed=1)])])
    assert runs[0] == runs[1]


@cuda
@pytest.mark.slow
def test_full_size_bf16_engine_matches_the_float32_reference() -> None:
    """The official architecture with random weights: the bf16 engine's tokens, re-scored by the float32
    reference (teacher forcing), are the reference's argmax wherever its top-2 margin is clear: more than twice
    the largest bf16 logit error measured at the prompts' last positions (a flip needs one of the two logits
    off by half the margin)."""
    config = DeepseekOCR2Config()
    reference = random_model(config, seed=0, device="cuda")  # float32
    model = random_model(config, seed=0, dtype=torch.bfloat16, device="cuda")
    rng = random.Random(0)
    prompts = [[0] + [rng.randrange(100, 100000) for _ in range(n)] for n in (20, 300, 1100)]
    params = SamplingParams(max_new_tokens=64, ngram_size=0, ignore_eos=True, stop_on_loop=False)
    requests = _engine(model).generate([EngineRequest(prompt_ids=p, params=params) for p in prompts])
    steps, tokens, error = [], [], 0.0
    for prompt, r in zip(prompts, requests):
        ids = torch.tensor([prompt + r.token_ids], device="cuda")
        t = ids.shape[1]
        with torch.inference_mode():
            logits = reference(reference.model.embed_inputs(ids), torch.arange(t, device="cuda")[None],
                               torch.ones(t, t, dtype=torch.bool, device="cuda").tril()[None, None])[0]
            n = len(prompt)
            first = model(model.model.embed_inputs(ids[:, :n]), torch.arange(n, device="cuda")[None],
                          torch.ones(n, n, dtype=torch.bool, device="cuda").tril()[None, None], last_only=True)[0, -1]
        error = max(error, float((first - logits[n - 1]).abs().max()))
        steps.append(logits[n - 1:-1])  # the reference's prediction for each generated token
        tokens.append(torch.tensor(r.token_ids, device="cuda"))
    steps, tokens = torch.cat(steps), torch.cat(tokens)
    top2 = steps.topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2 * error
    agree = steps.argmax(dim=-1) == tokens
    assert error < 0.05 * float(steps.abs().max()), error  # bf16 logits close to float32
    assert int(clear.sum()) >= 50, (int(clear.sum()), error)
    assert bool(agree[clear].all()), (int(agree[clear].sum()), int(clear.sum()), error)
