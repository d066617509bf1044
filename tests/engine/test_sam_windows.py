"""SAM's leading windowed blocks window by window, flat windows kept (dsocr.engine.sam_windows), against the
reference blocks."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dsocr.api import OCR
from dsocr.engine.sam_windows import BlankWindows, use_blank_windows
from dsocr.model.sam import SamEncoder
from dsocr.testing.fixtures import randomize_, tiny_config, write_random_checkpoint

# 12 x 12 patches: 3 x 3 windows
WINDOWED = dataclasses.replace(tiny_config().sam, global_attn_indexes=(), window_size=4)


def tower(config=WINDOWED) -> SamEncoder:
    sam = SamEncoder(config)
    randomize_(sam, seed=3)
    return sam.eval()


def views() -> torch.Tensor:
    """Four 192-px views: text-like noise on flat paper of two colours, with whole 64-px windows left flat
    (one view all flat), as line views are."""
    gen = torch.Generator().manual_seed(0)
    paper = torch.tensor([[0.9, 0.9, 0.9], [0.8, 0.7, 0.6]])
    x = paper[torch.tensor([0, 0, 1, 1])][:, :, None, None].expand(4, 3, 192, 192).clone()
    x[0, :, :64, :150] += torch.randn(3, 64, 150, generator=gen)  # the top windows (the third in part)
    x[1, :, 70:140, 10:80] += torch.randn(3, 70, 70, generator=gen)  # parts of 2 x 2 windows
    x[2, :, 100:110, :] -= 0.5  # a rule across the middle row of windows
    return x  # view 3: all paper


def test_flat_windows_are_kept_and_the_output_equals_the_reference_blocks() -> None:
    sam, pixels = tower(), views()
    with torch.inference_mode():
        expected = sam(pixels)
        runner = BlankWindows(sam)
        computed = []
        blocks = runner._blocks
        runner._blocks = lambda x: computed.append(x.shape[0]) or blocks(x)
        sam.blocks_runner = runner
        got = sam(pixels)
        again = sam(pixels)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(again, expected, rtol=1e-4, atol=1e-4)
    # 36 windows, 3 + 4 + 3 show something; two paper colours, each computed once at its 9 places
    assert computed == [10, 9, 9, 10]
    assert len(runner.cache) == 2


def test_bfloat16_as_on_a_cpu_with_native_bfloat16() -> None:
    sam, pixels = tower().to(torch.bfloat16), views().to(torch.bfloat16)
    with torch.inference_mode():
        expected = sam(pixels)
        use_blank_windows(sam)
        torch.testing.assert_close(sam(pixels), expected, rtol=0.05, atol=0.05)
    assert len(sam.blocks_runner.cache) == 2


def test_few_colours_are_kept() -> None:
    sam = tower()
    runner = BlankWindows(sam, colours=2)
    with torch.inference_mode():
        for shade in (0.1, 0.2, 0.3):
            runner(sam.patch_embed(torch.full((1, 3, 192, 192), shade)))
    assert len(runner.cache) == 2


def test_blocks_from_the_first_global_one_run_as_the_reference_runs_them() -> None:
    sam, pixels = tower(dataclasses.replace(WINDOWED, depth=4, global_attn_indexes=(2,))), views()
    with torch.inference_mode():
        expected = sam(pixels)
        assert use_blank_windows(sam) == 1 and sam.blocks_runner.leading == 2
        torch.testing.assert_close(sam(pixels), expected, rtol=1e-4, atol=1e-4)
    assert len(sam.blocks_runner.cache) == 2


def test_a_global_first_block_or_edge_padding_keeps_the_reference_blocks() -> None:
    global_first = tower(dataclasses.replace(WINDOWED, global_attn_indexes=(0,)))
    assert use_blank_windows(global_first) == 0 and global_first.blocks_runner is None
    with pytest.raises(ValueError, match="first block is windowed"):
        BlankWindows(global_first)
    padded = tower(dataclasses.replace(WINDOWED, window_size=5))  # 12 patches: windows padded at the edge
    assert use_blank_windows(padded) == 1 and use_blank_windows(padded) == 0
    with torch.inference_mode():
        expected = padded.run_blocks(padded.patch_embed(views()))
        torch.testing.assert_close(padded(views()), padded.net_3(padded.net_2(padded.neck(
            expected.permute(0, 3, 1, 2)))))
    assert not padded.blocks_runner.cache


def test_with_gradients_on_the_reference_blocks_run_and_nothing_is_kept() -> None:
    sam = tower()
    use_blank_windows(sam)
    sam(views()).sum().backward()
    assert not sam.blocks_runner.cache
    assert sam.patch_embed.proj.weight.grad is not None


def test_from_pretrained_switches_it_on_on_the_cpu(tmp_path) -> None:
    config = dataclasses.replace(tiny_config(), sam=WINDOWED)
    path = write_random_checkpoint(tmp_path / "windowed", config)
    assert isinstance(OCR.from_pretrained(path, device="cpu").model.model.sam_model.blocks_runner, BlankWindows)
    assert OCR.from_pretrained(path, device="cpu", engine="reference").model.model.sam_model.blocks_runner is None
