"""Hostile inputs, made on the spot: broken images, special files, booby-trapped zips, doctored checkpoints.

Shared by the reliability tests and ``benchmarks/hostile_corpus.py`` (which makes many more). Nothing
here is committed as data: every file is generated into a temporary folder by the caller.
"""

from __future__ import annotations

import io
import json
import os
import random
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save

FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")


def good_image(rng: random.Random, fmt: str = "PNG", size: tuple[int, int] = (40, 48)) -> bytes:
    """A small valid image of random pixels in ``fmt``."""
    arr = np.random.default_rng(rng.getrandbits(32)).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One of the ways files break: truncation, flipped bytes, a zeroed block, inserted junk, a swapped header."""
    b = bytearray(data)
    kind = rng.randrange(5)
    if kind == 0:
        return bytes(b[: rng.randrange(len(b))])
    if kind == 1:
        for _ in range(rng.randint(1, 16)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == 2:
        at = rng.randrange(len(b))
        b[at : at + rng.randint(1, 256)] = bytes(min(256, len(b) - at))
    elif kind == 3:
        at = rng.randrange(len(b))
        b[at:at] = rng.randbytes(rng.randint(1, 64))
    else:
        b[:8] = rng.randbytes(8)
    return bytes(b)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims ``width``×``height`` pixels (a decompression bomb)."""
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b"")


def special_files(folder: Path, rng: random.Random) -> dict[str, str]:
    """Make the odd entries a real dataset folder can hold; return {name: what its skip reason says}."""
    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}

    def add(name: str, reason: str, make: Callable[[Path], None]) -> None:
        make(folder / name)
        made[name] = reason

    add("dangling.jpg", "dangling link", lambda p: os.symlink(folder / "no-such-file.jpg", p))
    add("loop.jpg", "unreadable", lambda p: os.symlink(p, p))
    if hasattr(os, "mkfifo"):
        add("pipe.jpg", "named pipe", lambda p: os.mkfifo(p))
    if os.path.exists("/dev/zero"):
        add("zero.jpg", "character device", lambda p: os.symlink("/dev/zero", p))
    add("huge.png", "too large", lambda p: _sparse(p, 65 << 20))  # 65 MB of holes: no disk used
    add("empty.jpg", "empty", lambda p: p.write_bytes(b""))
    add("text.jpg", "not an image", lambda p: p.write_text("this is not a photo\n" * 20))
    add("strip.png", "elongated", lambda p: Image.new("RGB", (4000, 10), (200, 10, 10)).save(p))
    add("tiny.png", "too small", lambda p: Image.new("RGB", (3, 3)).save(p))
    add("bomb.png", "decompression bomb", lambda p: p.write_bytes(bomb_png()))
    add("truncated.jpg", "truncated", lambda p: p.write_bytes(good_image(rng, "JPEG", (64, 64))[:300]))
    return made


def _sparse(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def hostile_zip(path: Path, rng: random.Random, good: int = 4) -> dict[str, str]:
    """A zip whose members include every kind zipfile cannot or must not inflate; {member: skip reason}."""
    made = {}
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(good):
            zf.writestr(f"good{i}.png", good_image(rng))
        zf.writestr("encrypted.png", good_image(rng))
        made["encrypted.png"] = "encrypted"
        for unsafe in ("../escape.png", "faces/../../up.png", "/absolute.png", "..\\win.png", "C:/drive.png"):  # good images, crafted paths
            zf.writestr(unsafe, good_image(rng))
            made[unsafe] = "unsafe path in the archive"
        zf.writestr("deflate64.png", good_image(rng))
        made["deflate64.png"] = "compression method 9"
        zf.writestr(zipfile.ZipInfo("bomb.png"), b"\0" * (80 << 20), compress_type=zipfile.ZIP_DEFLATED)
        made["bomb.png"] = "too large"
        zf.writestr("badcrc.png", good_image(rng))
        made["badcrc.png"] = "unreadable zip member"
        zf.writestr("badlzma.png", good_image(rng, "BMP"), compress_type=zipfile.ZIP_LZMA)
        made["badlzma.png"] = "unreadable zip member"
        lzma_at = zf.getinfo("badlzma.png").header_offset
    raw = bytearray(path.read_bytes())
    data_at = lzma_at + 30 + struct.unpack_from("<HH", raw, lzma_at + 26)[0] + struct.unpack_from("<HH", raw, lzma_at + 26)[1]
    raw[data_at + 16 : data_at + 48] = bytes(range(32))  # garbage inside the LZMA stream
    _patch_member(raw, b"encrypted.png", flag_bits=0x1)
    _patch_member(raw, b"deflate64.png", method=9)
    _patch_member(raw, b"badcrc.png", crc=0xDEADBEEF)
    path.write_bytes(bytes(raw))
    return made


def _patch_member(raw: bytearray, name: bytes, flag_bits: int | None = None, method: int | None = None,
                  crc: int | None = None) -> None:
    """Edit a member's general-purpose flags, compression method or CRC in its local and central headers."""
    for sig, off_flags in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = 0
        while (at := raw.find(sig, at)) >= 0:
            name_at = at + (30 if sig == b"PK\x03\x04" else 46)
            n = struct.unpack_from("<H", raw, at + (26 if sig == b"PK\x03\x04" else 28))[0]
            if raw[name_at : name_at + n] == name:
                if flag_bits is not None:
                    struct.pack_into("<H", raw, at + off_flags, struct.unpack_from("<H", raw, at + off_flags)[0] | flag_bits)
                if method is not None:
                    struct.pack_into("<H", raw, at + off_flags + 2, method)
                if crc is not None:
                    struct.pack_into("<I", raw, at + off_flags + 8, crc)
            at += 4


# ---- option values: (args with {tmp} a scratch folder holding a file "afile", {ckpt} a valid checkpoint; what the line says)

BAD_VALUES: list[tuple[list[str], str]] = [
    (["train", "--lr-g", "nan"], "--lr-g must be a finite number"),
    (["train", "--lr-d", "-1"], "--lr-d must be a finite number > 0"),
    (["train", "--lr-g", "1e6"], "≤ 1"),
    (["train", "--seed", str(2**70)], "--seed must be an integer in 0 … 4294967295"),
    (["train", "--epochs", "nan"], "--epochs"),
    (["train", "--max-time", "inf"], "--max-time"),
    (["train", "--beta1", "nan"], "--beta1"),
    (["train", "--ema-kimg", "inf"], "--ema-kimg"),
    (["train", "--label-noise", "nan"], "--label-noise"),
    (["train", "--batch", "1000000"], "--batch"),
    (["train", "--augment", "colour"], "unknown augmentation"),
    (["train", "--out", "{tmp}/afile"], "is a file, not a folder"),
    (["train", "--out", "{tmp}/afile/run"], "is a file, so nothing can be written under it"),
    (["train-sr", "--lr", "nan", "--out", "{tmp}/sr"], "--lr must be a finite number"),
    (["train-sr", "--noise", "inf", "--out", "{tmp}/sr"], "--noise"),
    (["prepare", "procedural:8", "--res", "16", "--out", "{tmp}"], "is a folder; give a file name"),
    (["prepare", "procedural:8", "--res", "16", "--out", "{tmp}/x.txt"], "must be a .npy file"),
    (["prepare", "procedural:8", "--res", "30000", "--out", "{tmp}/x.npy"], "--res must be an integer in 4 … 2048"),
    (["prepare", "procedural:8", "--res", "16", "--out", "{tmp}/afile/x.npy"], "is a file"),
    (["generate", "{ckpt}", "--grid", "{tmp}"], "is a folder; give a file name"),
    (["generate", "{ckpt}", "--seed", "-1"], "--seed"),
    (["generate", "{ckpt}", "--seed", str(2**64)], "--seed"),
    (["generate", "{ckpt}", "--out", "{tmp}/afile"], "is a file, not a folder"),
    (["interpolate", "{ckpt}", "--seeds", f"1,{2**40}"], "--seeds"),
    (["interpolate", "{ckpt}", "--frames", "100000000"], "--frames"),
    (["interpolate", "{ckpt}", "--fps", "nan"], "--fps"),
    (["interpolate", "{ckpt}", "--truncation", "nan"], "threshold"),
    (["generate", "{ckpt}", "--truncation", "-1", "--out", "{tmp}/faces"], "threshold"),
    (["train", "--epochs", "0"], "no training budget"),
    (["evaluate", "--real", "{tmp}", "--fake", "{tmp}", "--seed", "-3"], "--seed"),
]


# ---- checkpoints -------------------------------------------------------------------------------

def safetensors_bytes(tensors: dict[str, torch.Tensor], meta: object) -> bytes:
    """A safetensors file whose "facegan" metadata is ``meta`` as JSON (any JSON, even not an object)."""
    return save({k: v.contiguous() for k, v in tensors.items()}, metadata={"facegan": json.dumps(meta)})


# Doctored only in a training option: the weights are fine to sample from; resuming must be refused.
TRAINING_RULE_CASES = ("lr is nan in config", "seed overflows")


def checkpoint_variants(tensors: dict[str, torch.Tensor], meta: dict) -> dict[str, tuple[bytes, str]]:
    """Doctored copies of one valid GAN checkpoint: {case: (file bytes, what the error line names)}."""
    g_key = min(k for k in tensors if k.startswith("G.") and tensors[k].is_floating_point())
    bn_var = next(k for k in tensors if k.startswith("D.") and k.endswith("running_var"))
    cfg = meta["config"]

    def with_cfg(**model: object) -> dict:
        return {**meta, "config": {**cfg, "model": {**cfg["model"], **model}}}

    cases: dict[str, tuple[dict[str, torch.Tensor], object, str]] = {
        "extra tensor": ({**tensors, "G.backdoor": torch.zeros(3)}, meta, "unexpected tensor G.backdoor"),
        "missing tensor": ({k: v for k, v in tensors.items() if k != g_key}, meta, f"missing tensor {g_key}"),
        "wrong shape": ({**tensors, g_key: torch.zeros(2, 2)}, meta, g_key),
        "float64 weights": ({**tensors, g_key: tensors[g_key].double()}, meta, "F64"),
        "nan weight": ({**tensors, g_key: torch.full_like(tensors[g_key], float("nan"))}, meta, "NaN"),
        "inf buffer": ({**tensors, bn_var: torch.full_like(tensors[bn_var], float("inf"))}, meta, "NaN/inf"),
        "other preset's shapes": (tensors, with_cfg(g_width=cfg["model"]["g_width"] * 2), "does not match"),
        "memory bomb config": ({}, with_cfg(g_width=200_000), "g_width"),
        "width as string": (tensors, with_cfg(g_width="64"), "g_width"),
        "unknown layer kind": (tensors, with_cfg(g_up="pixelshuffle"), "g_up"),
        "entry_res zero": (tensors, with_cfg(entry_res=0), "entry_res"),
        "step is text": (tensors, {**meta, "step": "ten"}, "'step'"),
        "negative images": (tensors, {**meta, "images": -5}, "'images'"),
        "config is a list": (tensors, {**meta, "config": [1, 2]}, "config"),
        "no config": (tensors, {k: v for k, v in meta.items() if k != "config"}, "config"),
        "lr is nan in config": (tensors, {**meta, "config": {**cfg, "lr_g": float("nan")}}, "--lr-g"),
        "seed overflows": (tensors, {**meta, "config": {**cfg, "seed": 2**70}}, "--seed"),
        "optimizer groups doctored": (tensors, {**meta, "optG": [{"lr": "fast", "params": []}]}, "optG"),
        "no optimizer groups": (tensors, {k: v for k, v in meta.items() if k != "optD"}, "optD"),
        "missing rng state": ({k: v for k, v in tensors.items() if not k.startswith("rng.")}, meta, "missing tensor rng"),
        "rng state is huge": ({**tensors, "rng.gen": torch.zeros(1 << 20, dtype=torch.uint8)}, meta, "rng.gen"),
        "upscaler kind on GAN tensors": (tensors, {**meta, "kind": "upscaler"}, "optSR"),
        "unknown kind": (tensors, {**meta, "kind": "stylegan"}, "kind"),
        "meta not an object": (tensors, [meta], "format"),
        "other format": (tensors, {**meta, "format": "facegan-checkpoint-99"}, "format"),
    }
    out = {name: (safetensors_bytes(t, m), needle) for name, (t, m, needle) in cases.items()}
    valid = safetensors_bytes(tensors, meta)
    out["truncated file"] = (valid[: len(valid) // 2], "not a readable facegan checkpoint")
    out["empty file"] = (b"", "not a readable facegan checkpoint")
    out["header length lies"] = (struct.pack("<Q", 1 << 40) + valid[8:], "not a readable facegan checkpoint")
    out["pickle"] = (b"\x80\x04\x95" + bytes(64), "not a readable facegan checkpoint")
    deep = "[" * 100_000 + "]" * 100_000  # json would exhaust the stack parsing it
    out["deeply nested header"] = (save({k: v.contiguous() for k, v in tensors.items()}, metadata={"facegan": deep}),
                                   "nested too deeply")
    return out


def flip_bytes(data: bytes, rng: random.Random, n: int = 8) -> bytes:
    """``data`` with ``n`` random bytes replaced (anywhere: header or tensor data)."""
    b = bytearray(data)
    for _ in range(n):
        b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b)
