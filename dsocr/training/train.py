"""The training loop behind `dsocr train`: from scratch (small configs, our own tokenizer) or fine-tuning a
checkpoint (LoRA or full), on synthetic pages or the user's (image, text) pairs.

Must write checkpoints in the official layout (the output folder loads with `--model`), atomically, and resume
exactly from `trainer_state.pt`. AdamW, linear warmup then cosine decay to 10%, gradient clipping, loss on the
target tokens only, bf16 autocast on CUDA (float32 master weights), float32 on CPU.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from dsocr.api import OCR, resolve_device
from dsocr.errors import ConfigError
from dsocr.hub import resolve_model_dir
from dsocr.model.config import (
    DeepseekOCR2Config,
    EncoderConfig,
    LanguageConfig,
    ProjectorConfig,
    SamConfig,
)
from dsocr.model.ocr import DeepseekOCR2ForCausalLM
from dsocr.model.weights import build_model, load_model, save_checkpoint
from dsocr.processing.image import ProcessingConfig, preprocess_image, processing_config_for_mode
from dsocr.processing.image import normalize as normalize_pixels
from dsocr.processing.tokenizer import Tokenizer
from dsocr.training.alignment import alignment_loss, attention_inputs
from dsocr.training.data import (
    IGNORE,
    Batch,
    EncodedStream,
    Example,
    SyntheticExamples,
    UserExamples,
    collate,
    encode,
    page_example,
    read_pairs,
    split_pairs,
    strip_example,
    synthetic_example,
)
from dsocr.training.evaluate import evaluate, vision_spread
from dsocr.training.glyphs import glyph_loss, head_outputs, sam_outputs
from dsocr.training.lora import add_lora, merged_state_dict

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"
LOG_FILE = "train_log.jsonl"
READING_CHECKS = 16  # held-out snippets for teacher_forced at every save
SHARD_BYTES = 16 << 20  # shards small enough to travel through the GPU machine's file channel


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainConfig:
    output_dir: Path
    model: str | None = None  # fine-tune this checkpoint; None = from scratch with `preset`
    preset: str = "embedded"  # from scratch: "embedded" (~20M parameters) or "tiny" (tests)
    data: str | None = None  # folder or JSONL of (image, text) pairs; None = synthetic pages
    prompts: tuple[str, ...] = ("markdown", "free")  # synthetic pages: grounding and plain targets, alternating
    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    lora_rank: int = 0  # > 0: LoRA on the decoder's and the flow encoder's attention projections, the rest frozen
    freeze_vision: bool = False  # full fine-tuning of the decoder only
    # The vision tower's (SAM + flow encoder) learning rate against the decoder's. From scratch it must be low
    # (~0.1): at the full rate the tower's output collapses to one image-independent vector within a few
    # hundred steps, before the decoder has learnt to use it, and the model never learns to read.
    vision_lr_scale: float | None = None  # None: 0.1 from scratch, 1 when fine-tuning
    # Weight of the glyph loss (training/glyphs.py: which characters each SAM cell shows, synthetic pages only),
    # the vision tower's own signal from the first step. None: 0.1 from scratch, 0 (off) when fine-tuning.
    glyph_weight: float | None = None
    glyph_slots: bool = False  # the glyph loss on every 16x16 slot's character instead of the cell's bag (experimental)
    # Weight of the alignment loss (training/alignment.py, synthetic pages only): decoder layer align_layers[1]'s
    # attention on the visual tokens that show the token it predicts, layer align_layers[0]'s on those of the
    # token it reads. Off by default: on the CPU probe it slowed learning (docs/training.md, run 2).
    align_weight: float = 0.0
    align_layers: tuple[int, int] = (0, 1)
    snippets: float = 0.0  # synthetic data: the share of small pages of large print (synthetic.SNIPPETS)
    # synthetic data: the share of line views (training/strips.py, the `free` prompt), what a model that reads lines
    # (`reading: "lines"`, processing/lines.py) sees; they are base views, so strips need mode "base"
    strips: float = 0.0
    snippet_fonts: tuple[int, int] | None = None  # their body text size in px (lo, hi); None: SNIPPETS' own
    # From scratch: the causal-flow query tables start as 2D sinusoidal codes of their cells at this RMS (0: random
    # like the rest), so every visual token reaching the decoder says where on the view it is (init_query_positions).
    # Off by default: at 0.2 the first GPU chunk's visual embeddings collapsed by step 1000 (docs/training.md).
    query_positions: float = 0.0
    mode: str = "gundam"  # the views the model is trained on (dsocr.processing.image modes)
    max_target_tokens: int = 1536
    vocab_size: int = 8192  # from scratch: the BPE tokenizer trained first...
    tokenizer_pages: int = 200  # ... on the corpus plus the targets of this many synthetic pages
    eval_every: int = 250
    eval_pages: int = 16
    eval_fraction: float = 0.05  # user data: the held-out share
    eval_max_tokens: int = 2048
    save_every: int = 250
    log_every: int = 10
    workers: int = 2
    seed: int = 0
    device: str = "auto"
    time_limit: float | None = None  # minutes: save and stop early (chunks that fit a leased machine's limits)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("steps and batch size must be >= 1 and the learning rate > 0")
        if self.model is None and self.preset not in PRESETS:
            raise ConfigError(f"preset: {self.preset!r} is not one of {', '.join(PRESETS)}")
        if not 0.0 <= self.snippets <= 1.0 or not 0.0 <= self.strips <= 1.0 or self.snippets + self.strips > 1.0:
            raise ConfigError(f"snippets and strips: shares in 0..1 summing to at most 1, got {self.snippets}, "
                              f"{self.strips}")
        if self.strips and self.mode != "base":
            raise ConfigError(f"strips are base views: they need mode 'base', got {self.mode!r}")


def held_out_seed(seed: int, i: int) -> int:
    """Synthetic page i of a run's held-out set: far from the training stream (seed * 10^9 + step)."""
    return seed * 10**9 + 500_000_000 + i


def embedded_config(vocab_size: int) -> DeepseekOCR2Config:
    """Our small model: the same architecture at ~20M parameters (the bf16 weights under 50 MB)."""
    return DeepseekOCR2Config(
        language=LanguageConfig(
            vocab_size=vocab_size, hidden_size=256, intermediate_size=1024, moe_intermediate_size=256,
            num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4, n_routed_experts=8,
            n_shared_experts=1, num_experts_per_tok=2, first_k_dense_replace=1, max_position_embeddings=4096,
        ),
        sam=SamConfig(image_size=640, patch_size=16, width=192, depth=6, num_heads=3, mlp_dim=768, window_size=10,
                      global_attn_indexes=(2, 5), neck_channels=128, downsample_channels=(192, 256)),
        encoder=EncoderConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                              intermediate_size=768),
        projector=ProjectorConfig(input_dim=256, n_embed=256),
        base_size=640, crop_size=512, torch_dtype="bfloat16",
    )


def tiny_config(vocab_size: int) -> DeepseekOCR2Config:
    from dsocr.testing.fixtures import tiny_config as tiny

    return tiny(vocab_size=vocab_size)


PRESETS: dict[str, Callable[[int], DeepseekOCR2Config]] = {"embedded": embedded_config, "tiny": tiny_config}


def init_weights(model: nn.Module, seed: int) -> None:
    """From-scratch initialisation: N(0, 0.02) matrices and embeddings, zero biases, unit norms."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name or name.endswith(".weight") and "neck" in name):
                p.fill_(1.0)
            elif p.dim() == 1:
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=gen, device=p.device) * 0.02)


def init_flow_attention(model: DeepseekOCR2ForCausalLM, sharpness: float = 4.0, frequencies: int = 10) -> None:
    """From scratch: make the flow encoder's queries attend to the visual token at their own index, so the query
    outputs carry the view's content in place from the first step.

    Randomly initialised, every query attends to all visual tokens alike: its output is the view's mean
    feature, which differs little between pages (mostly white) - measured, a text page's outputs differ from a
    blank page's by 7% of their size - and the decoder has nothing to read. Here every layer's q and k come
    from their biases alone (zero weights), so a logit depends only on the RoPE distance; each query head's
    phases cancel the offset n between query i (at position n + i) and visual token i, n being one view size's
    token count (heads alternate between the crop and the global size; for the other size that head's diagonal
    is shifted). Only the fastest `frequencies` rotary pairs are used: the slow ones barely change between
    neighbours. The architecture and parameter names are unchanged.
    """
    encoder = model.model.qwen2_model
    config = model.config.encoder
    d, half = config.head_dim, config.head_dim // 2
    frequencies = min(frequencies, half)
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))[:frequencies]
    sizes = (encoder.query_768.num_embeddings, encoder.query_1024.num_embeddings)
    scale = (sharpness * math.sqrt(d)) ** 0.5  # peak logit: sharpness * frequencies
    with torch.no_grad():
        for layer in encoder.model.model.layers:
            attn = layer.self_attn
            attn.k_proj.weight.zero_()
            attn.k_proj.bias.zero_()
            for kv in range(config.num_key_value_heads):
                attn.k_proj.bias[kv * d:kv * d + frequencies] = scale  # real parts: the same key everywhere
            attn.q_proj.weight.zero_()
            for head in range(config.num_attention_heads):
                n = sizes[head % len(sizes)]
                bias = torch.zeros(d, dtype=torch.float64)
                bias[:frequencies] = scale * torch.cos(inv_freq * n)  # q = scale * exp(-i theta n) per pair
                bias[half:half + frequencies] = -scale * torch.sin(inv_freq * n)
                attn.q_proj.bias[head * d:(head + 1) * d] = bias.to(attn.q_proj.bias.dtype)


def position_codes(grid: int, dim: int, rms: float, base: float = 100.0) -> torch.Tensor:
    """(grid * grid, dim) 2D sinusoidal codes of a grid's cells, row-major: the first half of the channels encode
    the row, the second the column, each as sin and cos of the index at dim / 4 geometric frequencies. A move by
    one cell is the same rotation everywhere (a linear map), whatever the view size."""
    quarter = dim // 4
    omega = 1.0 / base ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    angles = torch.arange(grid, dtype=torch.float64)[:, None] * omega  # (grid, quarter)
    axis = torch.cat([angles.sin(), angles.cos()], dim=1)  # (grid, dim / 2)
    code = torch.zeros(grid, grid, dim, dtype=torch.float64)
    code[..., : 2 * quarter] = axis[:, None]  # row
    code[..., 2 * quarter: 4 * quarter] = axis[None, :]  # column
    return (code.reshape(grid * grid, dim) * rms * math.sqrt(2)).float()  # sin^2 + cos^2 = 1 per pair


def init_query_positions(model: DeepseekOCR2ForCausalLM, rms: float) -> None:
    """From scratch: query i of each table starts as the position code of visual token i's cell (with
    init_flow_attention it reads that token), so the query outputs the decoder reads carry their place on the view
    as well as its content. Without it the only sense of place is RoPE over the sequence, and a text token, whose
    own position runs on, cannot say "the cell right of the one I read last"; with a code, layer one can copy the
    code of the cell it matched and the next layer look for that code moved by one cell. The tables keep their
    official names and shapes; the model learns from there. Experimental (TrainConfig.query_positions): it did
    not help on the probe and the GPU run with it collapsed (docs/training.md, run 3).
    """
    encoder = model.model.qwen2_model
    with torch.no_grad():
        for table in (encoder.query_768, encoder.query_1024):
            grid = math.isqrt(table.num_embeddings)
            if grid * grid == table.num_embeddings:
                table.weight.copy_(position_codes(grid, table.embedding_dim, rms))


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup, then cosine from 1 to 0.1 at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress)))


def compute_loss(model: DeepseekOCR2ForCausalLM, batch: Batch, image_id: int) -> torch.Tensor:
    """Mean cross-entropy of the target tokens."""
    logits, labels = target_logits(model, batch, image_id)
    return F.cross_entropy(logits, labels)


@torch.no_grad()
def teacher_forced(model: DeepseekOCR2ForCausalLM, examples: Sequence[Example], tokenizer: Tokenizer,
                   processing: ProcessingConfig, max_target_tokens: int) -> dict[str, float]:
    """Whether the model reads, before greedy decoding shows it: on the examples with their true targets, the
    loss per target token with each example's own image and with the next example's image (the gap is what the
    image tells the decoder), and the share of target tokens predicted exactly (a model that knows which words
    are on the image but not where it is reading gets the loss gap without the share)."""
    if len(examples) < 2:
        return {}
    was_training = model.training
    model.eval()
    try:
        device = model.model.view_seperator.device
        views = [preprocess_image(e.image, processing) for e in examples]
        own = collate([encode(e, tokenizer, processing, max_target_tokens, v) for e, v in zip(examples, views)],
                      tokenizer.pad_id)
        other = collate([encode(e, tokenizer, processing, max_target_tokens, views[(i + 1) % len(views)])
                         for i, e in enumerate(examples)], tokenizer.pad_id)  # the next example's image
        logits, labels = target_logits(model, own.to(device), tokenizer.image_id)
        other_logits, other_labels = target_logits(model, other.to(device), tokenizer.image_id)
        return {"tf_loss": round(F.cross_entropy(logits.float(), labels).item(), 4),
                "tf_loss_other_image": round(F.cross_entropy(other_logits.float(), other_labels).item(), 4),
                "tf_top1": round((logits.argmax(-1) == labels).float().mean().item(), 4)}
    finally:
        model.train(was_training)


def target_logits(model: DeepseekOCR2ForCausalLM, batch: Batch, image_id: int,
                  embeds: Sequence[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits at the target tokens and their labels; logits only where there is a loss (the vocabulary is
    large). `embeds`: the distinct images' visual sequences when already computed (else the model's own)."""
    if embeds is None:
        dtype = model.lm_head.weight.dtype
        embeds = model.model.embed_images(normalize_pixels(batch.global_views).to(dtype),
                                          normalize_pixels(batch.crops).to(dtype), batch.num_crops)
    inputs = model.model.embed_inputs(batch.input_ids, batch.input_ids == image_id,
                                      [embeds[i] for i in batch.image_of_row])
    t = batch.input_ids.shape[1]
    positions = torch.arange(t, device=inputs.device)[None].expand(batch.input_ids.shape[0], t)
    causal = torch.ones(t, t, dtype=torch.bool, device=inputs.device).tril()[None, None]
    hidden = model.model.decode(inputs, positions, causal)  # right padding: no row attends to its padding
    selected = batch.labels != IGNORE
    return model.lm_head(hidden[selected]).float(), batch.labels[selected]


class Trainer:
    def __init__(self, config: TrainConfig, on_log: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.config = config
        self.on_log = on_log or (lambda record: None)
        self.device = resolve_device(config.device)
        # User data is read (and bad data refused) before any work: (train, held-out) pairs.
        self.pairs = split_pairs(read_pairs(config.data), config.eval_fraction) if config.data else None
        self.out = Path(config.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.model, self.tokenizer = self._model_and_tokenizer()
        self.glyph_weight = config.glyph_weight if config.glyph_weight is not None else (0.0 if config.model else 0.1)
        self.glyph_head = (  # trainer-only: never in the checkpoint
            nn.Linear(self.model.config.sam.downsample_channels[1], head_outputs(config.glyph_slots)).to(self.device)
            if self.glyph_weight > 0 else None)
        self.align_weight = config.align_weight
        if self.align_weight and not all(0 <= i < len(self.model.model.layers) for i in config.align_layers):
            raise ConfigError(f"align_layers: the decoder has {len(self.model.model.layers)} layers, "
                              f"got {config.align_layers}")
        self.step = 0
        self.optimizer = torch.optim.AdamW(self._param_groups(), lr=config.lr, betas=(0.9, 0.95),
                                           fused=self.device.type == "cuda")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, partial(lr_factor, warmup=config.warmup_steps, total=config.steps))
        self._resume()
        self.processing = processing_config_for_mode(config.mode, base_size=self.model.config.base_size,
                                                     crop_size=self.model.config.crop_size)
        self.held_out = self._held_out()
        self.reading_checks = self._reading_checks()

    # --- setup -------------------------------------------------------------------------------------------
    def _param_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters by (decoder side | vision tower) x (decayed matrices | norms and biases)."""
        cfg = self.config
        vision = {id(p) for part in (self.model.model.sam_model, self.model.model.qwen2_model)
                  for p in part.parameters()}
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("nothing to train: every parameter is frozen")
        vision_scale = cfg.vision_lr_scale or (1.0 if cfg.model else 0.1)
        groups = []
        for is_vision in (False, True):
            part = [p for p in params if (id(p) in vision) == is_vision]
            for decays in (True, False):
                group = [p for p in part if (p.dim() >= 2) == decays]
                if group:
                    groups.append({"params": group, "lr": cfg.lr * (vision_scale if is_vision else 1.0),
                                   "weight_decay": cfg.weight_decay if decays else 0.0})
        if self.glyph_head is not None:
            groups.append({"params": list(self.glyph_head.parameters()), "lr": cfg.lr, "weight_decay": 0.0})
        return groups

    def _model_and_tokenizer(self) -> tuple[DeepseekOCR2ForCausalLM, Tokenizer]:
        cfg = self.config
        if cfg.model is not None:
            model_dir = resolve_model_dir(cfg.model)
            model = load_model(model_dir, device=self.device, dtype=torch.float32).requires_grad_(True)  # loaded frozen
            tokenizer = Tokenizer.from_file(Path(model_dir) / "tokenizer.json")
            (self.out / "tokenizer.json").write_bytes((Path(model_dir) / "tokenizer.json").read_bytes())
        else:
            tokenizer = self._scratch_tokenizer()
            config = PRESETS[cfg.preset](tokenizer.vocab_size)
            if cfg.strips >= 1:  # it will only ever have seen line views
                config = replace(config, reading="lines")
            model = build_model(config, device=self.device)
            init_weights(model, cfg.seed)
            init_flow_attention(model)
            if cfg.query_positions:
                init_query_positions(model, cfg.query_positions)
        model.train()
        if cfg.lora_rank:
            wrapped = add_lora(model, cfg.lora_rank)
            logger.info("LoRA rank %d on %d projections", cfg.lora_rank, len(wrapped))
        elif cfg.freeze_vision:
            for part in (model.model.sam_model, model.model.qwen2_model):
                part.requires_grad_(False)
        return model, tokenizer

    def _scratch_tokenizer(self) -> Tokenizer:
        path = self.out / "tokenizer.json"
        if not path.exists():
            from dsocr.training.synthetic import generate_page
            from dsocr.training.tokenizer import train_tokenizer, training_text

            samples = [generate_page(self.config.seed * 10**9 + 900_000_000 + i) for i in range(self.config.tokenizer_pages)]
            extra = [t for page in samples for t in (page.grounding_target(), page.plain_target())]
            if self.config.strips:  # the words a line reader meets: docstrings, made-up words, codes
                extra += [strip_example(self.config.seed * 10**9 + 900_000_000 + i, 640).target
                          for i in range(4 * self.config.tokenizer_pages)]
            train_tokenizer(training_text(extra), path, vocab_size=self.config.vocab_size)
        return Tokenizer.from_file(path)

    def _resume(self) -> None:
        path = self.out / STATE_FILE
        if not path.exists():
            return
        state = torch.load(path, map_location=self.device, weights_only=False)
        if state["config"].get("preset") != self.config.preset or state["config"].get("model") != self.config.model:
            raise ConfigError(f"{path} belongs to another run (model/preset differ); use a new output folder")
        self.model.load_state_dict(state["model"])
        if self.glyph_head is not None:
            self.glyph_head.load_state_dict(state["glyph_head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]
        logger.info("resumed at step %d", self.step)

    def _held_out(self) -> list[Example]:
        cfg = self.config
        if self.pairs is None and cfg.strips >= 1.0:  # a run of line views only
            return self._held_out_strips(cfg.eval_pages)
        if self.pairs is None:  # synthetic pages with seeds far from the training stream's
            return [synthetic_example(held_out_seed(cfg.seed, i), cfg.prompts[i % len(cfg.prompts)])
                    for i in range(cfg.eval_pages)]
        from dsocr.processing.image import load_image

        return [Example(load_image(path), prompt, text) for path, prompt, text in self.pairs[1][: cfg.eval_pages]]

    def _held_out_strips(self, count: int) -> list[Example]:
        return [strip_example(held_out_seed(self.config.seed, i), self.model.config.base_size) for i in range(count)]

    def _reading_checks(self) -> list[Example]:
        """The examples teacher_forced is logged on at every save: held-out line views when the run has them, else
        held-out snippets (plain target) when the data is synthetic, where reading starts; else the held-out
        pairs."""
        if self.pairs is not None:
            return self.held_out
        if self.config.strips:
            return self._held_out_strips(READING_CHECKS)
        from dsocr.training.synthetic import generate_page, snippet_config

        snippets = snippet_config(self.config.snippet_fonts)
        return [page_example(generate_page(held_out_seed(self.config.seed, i), snippets), "free")
                for i in range(READING_CHECKS)]

    def _batches(self) -> Iterator[Batch]:
        cfg = self.config
        start = self.step * cfg.batch_size  # a resumed run continues the same stream
        if self.pairs is None:
            examples = SyntheticExamples(cfg.seed, cfg.prompts, start=start, snippets=cfg.snippets,
                                         snippet_fonts=cfg.snippet_fonts, strips=cfg.strips,
                                         strip_size=self.model.config.base_size)
        else:
            examples = UserExamples(self.pairs[0], cfg.seed, start=start)
        stream = EncodedStream(examples, self.tokenizer, self.processing, cfg.max_target_tokens,
                               glyphs=self.glyph_head is not None, guides=self.align_weight > 0)
        loader = DataLoader(stream, batch_size=cfg.batch_size, num_workers=cfg.workers,
                            collate_fn=partial(collate, pad_id=self.tokenizer.pad_id),
                            persistent_workers=cfg.workers > 0, prefetch_factor=2 if cfg.workers else None,
                            pin_memory=self.device.type == "cuda")
        return iter(loader)

    # --- the loop ----------------------------------------------------------------------------------------
    def train(self) -> Path:
        cfg = self.config
        batches = self._batches()
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else nullcontext()
        start, tokens, waited = time.perf_counter(), 0, 0.0  # waited: time spent waiting for data
        deadline = start + 60 * cfg.time_limit if cfg.time_limit is not None else float("inf")
        while self.step < cfg.steps:
            if time.perf_counter() > deadline:
                self._log({"step": self.step, "stopped": "time limit", "elapsed_s": round(time.perf_counter() - start)})
                self.save()
                break
            before = time.perf_counter()
            batch = next(batches).to(self.device)
            waited += time.perf_counter() - before
            with autocast:
                loss, glyph, align = self._losses(batch)
            total = loss
            if glyph is not None:
                total = total + self.glyph_weight * glyph
            if align is not None:
                total = total + self.align_weight * align
            total.backward()
            norm = torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                                  cfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            tokens += batch.num_target_tokens
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                elapsed = time.perf_counter() - start
                self._log({"step": self.step, "loss": round(loss.item(), 4),
                           **({"glyph_loss": round(glyph.item(), 4)} if glyph is not None else {}),
                           **({"align_loss": round(align.item(), 4)} if align is not None else {}),
                           "grad_norm": round(norm.item(), 3),
                           "lr": self.scheduler.get_last_lr()[0], "target_tokens_per_s": round(tokens / elapsed, 1),
                           "elapsed_s": round(elapsed, 1), "data_wait_s": round(waited, 1)})
            if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                self._log({"step": self.step, **self.evaluate().to_dict()})
            if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                self._log({"step": self.step, "vision_spread": self.vision_spread(),  # cheap: a collapse shows
                           **teacher_forced(self.model, self.reading_checks, self.tokenizer, self.processing,
                                            cfg.max_target_tokens)})
                self.save()
        return self.out

    def _losses(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The decoder's loss, and the glyph and alignment losses where they are on and the batch has their
        targets (synthetic pages)."""
        layers = [self.model.model.layers[i] for i in self.config.align_layers] if self.align_weight else []
        with ExitStack() as stack:
            features = stack.enter_context(sam_outputs(self.model)) if self.glyph_head is not None else []
            inputs = [stack.enter_context(attention_inputs(layer)) for layer in layers]  # (reads, predicts)
            loss = compute_loss(self.model, batch, self.tokenizer.image_id)
        glyph = align = None
        if self.glyph_head is not None and batch.glyph_classes:
            glyph = glyph_loss(self.glyph_head, features, batch.glyph_classes, batch.glyph_known,
                               slots=self.config.glyph_slots)
        if layers and batch.guides:
            align = (alignment_loss(layers[0], inputs[0][0], batch.guides, shift=1)
                     + alignment_loss(layers[1], inputs[1][0], batch.guides)) / 2
        return loss, glyph, align

    def evaluate(self):
        self.model.eval()
        try:
            ocr = OCR(self.model, self.tokenizer, name=str(self.out), engine="reference")
            return evaluate(ocr, self.held_out, max_new_tokens=self.config.eval_max_tokens)
        finally:
            self.model.train()

    def vision_spread(self) -> float:
        return round(vision_spread(self.model, [e.image for e in self.held_out[:8]], self.processing), 6)

    def save(self) -> None:
        """The model in the official layout (adapters merged), then the state to resume from; each file is
        written to a temporary name and renamed."""
        save_checkpoint(self.model, self.out, dtype=torch.bfloat16, max_shard_bytes=SHARD_BYTES,
                        state=merged_state_dict(self.model))  # bf16 like the official checkpoint
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "step": self.step,
                 **({"glyph_head": self.glyph_head.state_dict()} if self.glyph_head is not None else {}),
                 "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.config).items()}}
        tmp = self.out / (STATE_FILE + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.out / STATE_FILE)

    def _log(self, record: dict[str, Any]) -> None:
        with (self.out / LOG_FILE).open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.on_log(record)

