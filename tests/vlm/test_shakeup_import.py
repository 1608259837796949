"""``vlab vlm import --format shakeup``: the SHAKEUP authors' Pythia-VL / Mamba-VL checkpoints
(``gpantaz/vl_mamba``) opened as vlab VLM runs.

Tiny checkpoints are written here in their format (their module and tensor names, their
config.json fields, safetensors; the Mamba one sharded with its tied head saved once), then
imported. The reference forwards below are written from their code's semantics, not from
vlab's: their ``VLCLIPGPTNeoXForCausalLM`` (transformers' GPTNeoXModel + ``embed_out``) and
their ``VLMambaCLIPLMHeadModel`` (mamba_ssm's MixerModel: add, RMSNorm, mixer; a sequential
selective scan here), both reading timm's EVA-02 ``forward_features`` without the class
token through ``vision_embed_tokens`` and writing it into the slots of negative input ids.
"""

import json

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F
from transformers import GPTNeoXConfig, GPTNeoXModel

from vlab.analysis.inside.runs import open_any_run
from vlab.analysis.inside.vlm import load_vlm
from vlab.cli import main
from vlab.models.vlm.batch import pixel_values
from vlab.models.vlm.parts import EVA_ARCH
from vlab.models.vlm.parts import PRESETS as VISION_PRESETS
from vlab.models.vlm.tokenizer import train_bpe_tokenizer
from vlab.vlm.answer import question_batch, read_image
from vlab.vlm.external.shakeup import read_checkpoint, vlab_names
from vlab.vlm.trained import load_trained

IMAGE_TOKEN = -200  # their placeholder id of an image slot (SpecialTokens.img_token_id)
WIDTH, LAYERS, PADDING = 32, 2, 7  # LM width and depth; embedding rows beyond the tokenizer
# Their markers recur in many texts, so the BPE learns them as one token each (as GPT-NeoX's).
TEXTS = [f"###{i}&&{i}###" for i in range(40)] + ["What is in the image?", "A red square."]
PROMPT = "What is in the image?"


def authors_tokenizer(where):
    tok = train_bpe_tokenizer(TEXTS + ["the quick brown fox jumps over the lazy dog"], 300)
    tok.save_pretrained(str(where))
    return tok


def eva_tower():
    """Their tower: timm's EVA-02 without a head (here in vlab's tiny shapes, 32 px, 4 x 4)."""
    return timm.create_model(
        EVA_ARCH, pretrained=False, num_classes=0, **VISION_PRESETS["eva02"]["tiny"]
    )


def perturb(module, gen):
    """Move every parameter off its initial value (norms start at 1 and 0), so a tensor
    mapped to the wrong place shows in the logits."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))


CLIP_NAME = "openai/clip-vit-large-patch14-336"


def clip_tower():
    """Their other tower: transformers' CLIPVisionModel (vlab's tiny CLIP shapes)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    return CLIPVisionModel(CLIPVisionConfig(**VISION_PRESETS["clip"]["tiny"]))


def their_config(lm: dict, tower: str = "timm/eva02_large_patch14_clip_336") -> dict:
    return {
        **lm,
        "vision_encoder_name": tower,
        "select_layer": -2,
        "select_feature": "patch",
        "image_size": 32,
    }


def merge_images(embed, input_ids, patches):
    """Their step 2: embed the ids (negative ones as id 0), then the patch embeddings into
    the slots of negative ids, in order."""
    masked = input_ids.clone()
    masked[input_ids < 0] = 0
    out = embed(masked)
    for b in range(out.shape[0]):
        slots = (input_ids[b] < 0).nonzero(as_tuple=True)[0]
        out[b, slots] = patches[b].to(out.dtype)
    return out


class TheirPythiaVL(nn.Module):
    """Their ``VLCLIPGPTNeoXForCausalLM``'s modules and forward: an EVA-02 tower read by
    ``forward_features``, or a CLIP tower read at ``hidden_states[select_layer]``."""

    def __init__(self, config: GPTNeoXConfig, clip: bool = False, select_layer: int = -2):
        super().__init__()
        self.gpt_neox = GPTNeoXModel(config)
        self.embed_out = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.vision_encoder = clip_tower() if clip else eva_tower()
        self.select_layer = select_layer
        width = self.vision_encoder.config.hidden_size if clip else self.vision_encoder.num_features
        self.vision_embed_tokens = nn.Sequential(
            nn.Linear(width, config.hidden_size),
            nn.GELU(),
            nn.Linear(config.hidden_size, config.hidden_size),
        )

    def forward(self, input_ids, pixels):
        from transformers import CLIPVisionModel

        if isinstance(self.vision_encoder, CLIPVisionModel):
            out = self.vision_encoder(pixels, output_hidden_states=True)
            features = out.hidden_states[self.select_layer]
        else:
            features = self.vision_encoder.forward_features(pixels)
        patches = self.vision_embed_tokens(features[:, 1:])
        embeds = merge_images(self.gpt_neox.embed_in, input_ids, patches)
        hidden = self.gpt_neox(inputs_embeds=embeds, attention_mask=torch.ones_like(input_ids))[0]
        return self.embed_out(hidden)


def write_pythia(src, vocab, clip=False):
    """Their Pythia-VL, saved as their trainer saves it (one model.safetensors), plus a buffer
    old transformers wrote into GPT-NeoX files (derived, skipped by the import)."""
    lm = dict(
        architectures=["VLCLIPGPTNeoXForCausalLM"],
        model_type="gpt_neox",
        vocab_size=vocab,
        hidden_size=WIDTH,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        intermediate_size=64,
        rotary_pct=0.5,
        rotary_emb_base=10000,
        max_position_embeddings=256,
        layer_norm_eps=1e-5,
        use_parallel_residual=True,
        hidden_act="gelu",
        tie_word_embeddings=False,
        rope_scaling=None,
    )
    torch.manual_seed(0)
    model = TheirPythiaVL(GPTNeoXConfig(**lm), clip=clip).eval()
    perturb(model, torch.Generator().manual_seed(1))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["gpt_neox.layers.0.attention.masked_bias"] = torch.tensor(-1e9)
    if clip:  # their transformers (4.40) nested CLIPVisionModel's modules under vision_model
        tower = [k for k in state if k.startswith("vision_encoder.")]
        state |= {k.replace("encoder.", "encoder.vision_model.", 1): state.pop(k) for k in tower}
    save_file(state, str(src / "model.safetensors"))
    tower = CLIP_NAME if clip else "timm/eva02_large_patch14_clip_336"
    (src / "config.json").write_text(json.dumps(their_config(lm, tower)))
    return model


def write_mamba(src, vocab):
    """Their Mamba-VL's tensors under mamba_ssm's names, sharded over two files with an index;
    the tied head saved once, as ``backbone.embedding.weight`` (as safetensors' dedup may)."""
    gen = torch.Generator().manual_seed(2)
    d, n, k, inner = WIDTH, 4, 4, 2 * WIDTH
    rank = -(-d // 16)

    def rand(*shape, scale=0.2):
        return scale * torch.randn(shape, generator=gen)

    state = {
        "backbone.embedding.weight": rand(vocab, d, scale=1.0),
        "backbone.norm_f.weight": 1 + rand(d),
    }
    for i in range(LAYERS):
        p = f"backbone.layers.{i}."
        dt = torch.empty(inner).uniform_(1e-3, 0.1, generator=gen)
        state |= {
            p + "norm.weight": 1 + rand(d),
            p + "mixer.in_proj.weight": rand(2 * inner, d),
            p + "mixer.conv1d.weight": rand(inner, 1, k),
            p + "mixer.conv1d.bias": rand(inner),
            p + "mixer.x_proj.weight": rand(rank + 2 * n, inner),
            p + "mixer.dt_proj.weight": rand(inner, rank),
            p + "mixer.dt_proj.bias": dt + torch.log(-torch.expm1(-dt)),
            p + "mixer.A_log": torch.log(torch.arange(1, n + 1).float()).repeat(inner, 1)
            + rand(inner, n),
            p + "mixer.D": 1 + rand(inner),
            p + "mixer.out_proj.weight": rand(d, inner),
        }
    torch.manual_seed(3)
    tower = eva_tower().eval()
    perturb(tower, gen)
    state |= {f"vision_encoder.{k}": v for k, v in tower.state_dict().items()}
    connector = nn.Sequential(nn.Linear(tower.num_features, d), nn.GELU(), nn.Linear(d, d))
    state |= {f"vision_embed_tokens.{k}": v.detach() for k, v in connector.state_dict().items()}
    names = sorted(state)
    shards = {
        "model-00001-of-00002.safetensors": names[::2],
        "model-00002-of-00002.safetensors": names[1::2],
    }
    for file, keys in shards.items():
        save_file({key: state[key].contiguous() for key in keys}, str(src / file))
    index = {"weight_map": {key: file for file, keys in shards.items() for key in keys}}
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    lm = dict(d_model=d, n_layer=LAYERS, vocab_size=vocab, ssm_cfg={}, rms_norm=True)
    lm |= dict(residual_in_fp32=True, fused_add_norm=True, pad_vocab_size_multiple=8, hidden_size=d)
    (src / "config.json").write_text(json.dumps(their_config(lm)))
    return state, tower


def rms_norm(x, weight, eps=1e-5):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def mamba_mixer(x, s, p):
    """mamba_ssm's ``Mamba.forward`` (the reference path, a sequential scan). x: (B, L, D)."""
    inner, n = s[p + "A_log"].shape
    rank = s[p + "dt_proj.weight"].shape[1]
    xs, z = (x @ s[p + "in_proj.weight"].T).chunk(2, dim=-1)  # (B, L, inner) each
    kernel = s[p + "conv1d.weight"].shape[-1]
    conv = F.conv1d(
        xs.transpose(1, 2),
        s[p + "conv1d.weight"],
        s[p + "conv1d.bias"],
        padding=kernel - 1,
        groups=inner,
    )
    xs = F.silu(conv[..., : x.shape[1]]).transpose(1, 2)  # causal: the first L outputs
    dt, b, c = (xs @ s[p + "x_proj.weight"].T).split([rank, n, n], dim=-1)
    dt = F.softplus(dt @ s[p + "dt_proj.weight"].T + s[p + "dt_proj.bias"])  # (B, L, inner)
    a = -torch.exp(s[p + "A_log"])  # (inner, n)
    h = x.new_zeros(x.shape[0], inner, n)
    ys = []
    for t in range(x.shape[1]):
        h = (
            h * torch.exp(dt[:, t, :, None] * a)
            + dt[:, t, :, None] * b[:, t, None, :] * xs[:, t, :, None]
        )
        ys.append((h * c[:, t, None, :]).sum(-1))
    y = (torch.stack(ys, 1) + xs * s[p + "D"]) * F.silu(z)
    return y @ s[p + "out_proj.weight"].T


def their_mamba_logits(state, tower, input_ids, pixels):
    """Their ``VLMambaCLIPLMHeadModel.forward``: patches merged, MixerModel (residual add,
    RMSNorm, mixer per block; final add and norm_f), head tied to the embedding."""
    connector = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.GELU(), nn.Linear(WIDTH, WIDTH))
    connector.load_state_dict(
        {
            k.removeprefix("vision_embed_tokens."): v
            for k, v in state.items()
            if k.startswith("vision_embed_tokens.")
        }
    )
    patches = connector(tower.forward_features(pixels)[:, 1:])
    table = state["backbone.embedding.weight"]
    hidden = merge_images(lambda ids: F.embedding(ids, table), input_ids, patches)
    residual = None
    for i in range(LAYERS):
        p = f"backbone.layers.{i}."
        residual = hidden if residual is None else hidden + residual
        hidden = mamba_mixer(rms_norm(residual, state[p + "norm.weight"]), state, p + "mixer.")
    return rms_norm(hidden + residual, state["backbone.norm_f.weight"]) @ table.T


def their_ids(batch):
    """vlab's sequence as their code writes it: image slots as their placeholder id."""
    return torch.where(batch["patch_index"] >= 0, IMAGE_TOKEN, batch["input_ids"])


def their_layout(tok, rows, cols, text):
    """Their ``prepare_image_tokens`` (### row && row && ... row ###), then the text."""
    start, sep = (tok.encode(m, add_special_tokens=False) for m in ("###", "&&"))
    assert len(start) == len(sep) == 1  # one token each, as in GPT-NeoX's vocabulary
    grid = torch.cat(
        [torch.full((rows, cols), IMAGE_TOKEN), torch.full((rows, 1), sep[0])], 1
    ).flatten()
    grid[-1] = start[0]
    return [start[0], *grid.tolist(), *tok.encode(text, add_special_tokens=False)]


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """Both archs written in their format and imported with ``vlab vlm import``: the Pythia
    with its tokenizer beside the weights, the Mamba with ``--tokenizer``."""
    root = tmp_path_factory.mktemp("shakeup")
    tok_dir = root / "gpt-neox-20b"
    tok = authors_tokenizer(tok_dir)
    vocab = len(tok) + PADDING
    runs = {}
    pythia_src = root / "finetuned_pythiavl"
    pythia_src.mkdir()
    authors_tokenizer(pythia_src)
    pythia = write_pythia(pythia_src, vocab)
    assert main(["vlm", "import", str(pythia_src), "--out", str(root / "pythia")]) == 0
    runs["pythia"] = (pythia_src, root / "pythia", lambda ids, px: pythia(ids, px))
    clip_src = root / "finetuned_pythiavl_clip"
    clip_src.mkdir()
    with_clip = write_pythia(clip_src, vocab, clip=True)
    argv = [
        "vlm",
        "import",
        str(clip_src),
        "--tokenizer",
        str(tok_dir),
        "--out",
        str(root / "clip"),
    ]
    assert main(argv) == 0
    runs["pythia-clip"] = (clip_src, root / "clip", lambda ids, px: with_clip(ids, px))
    mamba_src = root / "finetuned_mambavl"
    mamba_src.mkdir()
    state, tower = write_mamba(mamba_src, vocab)
    argv = [
        "vlm",
        "import",
        str(mamba_src),
        "--tokenizer",
        str(tok_dir),
        "--out",
        str(root / "mamba"),
    ]
    assert main(argv) == 0
    runs["mamba"] = (
        mamba_src,
        root / "mamba",
        lambda ids, px: their_mamba_logits(state, tower, ids, px),
    )
    return runs


@pytest.fixture
def image(tmp_path):
    from PIL import Image

    gen = torch.Generator().manual_seed(4)
    pixels = (torch.rand(40, 48, 3, generator=gen) * 255).to(torch.uint8).numpy()
    path = tmp_path / "picture.png"
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.parametrize("arch", ["pythia", "mamba", "pythia-clip"])
def test_every_tensor_is_mapped_and_every_vlab_tensor_set(imported, arch):
    src, out, _ = imported[arch]
    ck = read_checkpoint(src)
    trained = load_trained(out, 2, "cpu")
    vlab_state = trained.model.state_dict()
    about = json.loads((out / "import.json").read_text())
    skipped = [] if arch == "mamba" else ["gpt_neox.layers.0.attention.masked_bias"]
    assert about["skipped"] == skipped and about["tensors"]["source"] == len(ck.tensors)
    covered = set()
    for name, tensor in ck.tensors.items():
        targets = vlab_names(ck, name)
        if name in skipped:
            continue
        assert targets, f"{name} is not mapped"
        for target in targets:
            assert torch.equal(vlab_state[target], tensor.float()), (name, target)
        covered.update(targets)
    assert covered == set(vlab_state)  # no vlab tensor left at its random initialisation
    if arch == "mamba":  # the head was saved once; vlab's tied head is the same table
        assert torch.equal(vlab_state["lm.lm_head.weight"], ck.tensors["backbone.embedding.weight"])
    lm, _, tower = arch.partition("-")
    vision = trained.config.model.vision
    assert trained.config.model.lm.arch == lm and vision.kind == (tower or "eva02")
    assert vision.feature_layer == (-2 if tower else -1) and vision.final_norm == (not tower)
    assert (
        trained.model.lm.get_input_embeddings().weight.shape[0] == len(trained.tokenizer) + PADDING
    )


@pytest.mark.parametrize("arch", ["pythia", "mamba", "pythia-clip"])
def test_logits_match_their_forward(imported, image, arch):
    """vlab's model on vlab's sequence gives the logits their model gives on the same
    sequence in their id convention, and that sequence is their layout."""
    _, out, theirs = imported[arch]
    trained = load_trained(out, 2, "cpu")
    model, tok = trained.model, trained.tokenizer
    batch = question_batch(
        read_image(image), PROMPT, "chat", model, tok, trained.config.model.sequence
    )
    ids = their_ids(batch)
    rows, cols = model.grid
    assert ids[0].tolist() == their_layout(tok, rows, cols, PROMPT + "\n") + [tok.eos_token_id]
    pixels = pixel_values(batch)
    with torch.no_grad():
        ours = model(batch["input_ids"], batch["patch_index"], pixels, batch["attention_mask"])[
            "logits"
        ]
        want = theirs(ids, pixels[0])
    assert ours.shape == want.shape
    torch.testing.assert_close(ours, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ["pythia", "mamba"])
def test_generate_answers_as_their_greedy_decoding(imported, image, arch, capsys):
    """``vlab vlm generate`` on the imported run prints what greedy decoding with their
    forward (recomputed over the whole sequence every step) gives."""
    _, out, theirs = imported[arch]
    trained = load_trained(out, 2, "cpu")
    tok = trained.tokenizer
    batch = question_batch(
        read_image(image), PROMPT, "chat", trained.model, tok, trained.config.model.sequence
    )
    ids = their_ids(batch)[:, :-1]  # cut where the response starts (before the closing eos)
    new = []
    with torch.no_grad():
        for _ in range(5):
            token = int(theirs(ids, pixel_values(batch)[0])[0, -1].argmax())
            if token == tok.eos_token_id:
                break
            new.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], 1)
    argv = ["vlm", "generate", "--run", str(out), "--image", str(image), "--prompt", PROMPT]
    assert main([*argv, "--max-new-tokens", "5", "--device", "cpu"]) == 0
    assert capsys.readouterr().out == tok.decode(new, skip_special_tokens=True) + "\n"
    assert new  # a random model does not stop at once: the comparison is not vacuous


def test_inspect_opens_the_imported_stage(imported, image):
    """``vlab inspect`` reads a VLM stage through ``open_any_run`` and the experiment's
    ``open``: the imported stage 2 is such a stage, with the imported weights."""
    _, out, _ = imported["pythia"]
    run = open_any_run(out / "stage2")
    assert run.kind == "vlm" and run.stage == 2 and run.out == out
    model, _ = load_vlm(run, 0)
    reference = load_trained(out, 2, "cpu").model.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())


def _refused(tmp_path, src, capsys, *extra):
    out = tmp_path / "out"
    assert main(["vlm", "import", str(src), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vlab: error: ") and "\n" not in err
    assert not out.exists() and not list(tmp_path.glob(".out.*"))  # nothing written
    return err


def test_unrecognised_checkpoints_are_refused_in_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no config.json" in _refused(tmp_path, empty, capsys)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    save_file({"gpt_neox.embed_in.weight": torch.zeros(4, 2)}, str(other / "model.safetensors"))
    assert "not a SHAKEUP (vl_mamba) checkpoint" in _refused(tmp_path, other, capsys)
    pixel = tmp_path / "pixel"
    pixel.mkdir()
    (pixel / "config.json").write_text(json.dumps({"patch_size": 16}))
    tensors = {
        "vision_embed_tokens.0.weight": torch.zeros(8, 768),
        "gpt_neox.embed_in.weight": torch.zeros(4, 8),
    }
    save_file(tensors, str(pixel / "model.safetensors"))
    assert "pixel-based" in _refused(tmp_path, pixel, capsys)
    zero = tmp_path / "zero"
    (zero / "global_step100").mkdir(parents=True)
    (zero / "config.json").write_text("{}")
    assert "DeepSpeed ZeRO" in _refused(tmp_path, zero, capsys)


def test_bad_tokenizer_or_out_refused_and_nothing_written(imported, tmp_path, capsys):
    src, _, _ = imported["pythia"]
    no_tok = tmp_path / "no_tokenizer"
    no_tok.mkdir()
    assert "give --tokenizer" in _refused(tmp_path, src, capsys, "--tokenizer", str(no_tok))
    big = tmp_path / "big"
    bigger = authors_tokenizer(big)
    bigger.add_tokens([f"<extra{i}>" for i in range(PADDING + 1)])  # one more than the rows
    bigger.save_pretrained(str(big))
    assert "embedding rows" in _refused(tmp_path, src, capsys, "--tokenizer", str(big))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert main(["vlm", "import", str(src), "--out", str(busy)]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]


def paper_sized_tensors(arch):
    """Their tensor names with the released models' shapes (EVA-02-L/14 at 336 px; Pythia-1B
    or Mamba-790M), on the meta device: what a real file holds, without its bytes."""
    from transformers import MambaConfig, MambaModel

    with torch.device("meta"):
        tower = timm.create_model(EVA_ARCH, pretrained=False, num_classes=0, img_size=336)
        if arch == "pythia":
            lm_config = GPTNeoXConfig(vocab_size=50304, hidden_size=2048, num_hidden_layers=16)
            lm_config.update(dict(num_attention_heads=8, intermediate_size=8192))
            lm = {f"gpt_neox.{k}": v for k, v in GPTNeoXModel(lm_config).state_dict().items()}
            lm["embed_out.weight"] = torch.empty(50304, 2048)
            config = {"num_attention_heads": 8, "rotary_pct": 0.25}
        else:
            mamba = MambaModel(
                MambaConfig(vocab_size=50280, hidden_size=1536, num_hidden_layers=48)
            )
            state = mamba.state_dict()
            lm = {f"backbone.{k}": v for k, v in state.items() if not k.startswith("embeddings.")}
            lm["lm_head.weight"] = state["embeddings.weight"]  # the name the head was saved under
            config = {"d_model": 1536, "n_layer": 48, "ssm_cfg": {}, "rms_norm": True}
        width = lm_config.hidden_size if arch == "pythia" else 1536
        connector = {
            "vision_embed_tokens.0.weight": torch.empty(width, 1024),
            "vision_embed_tokens.0.bias": torch.empty(width),
            "vision_embed_tokens.2.weight": torch.empty(width, width),
            "vision_embed_tokens.2.bias": torch.empty(width),
        }
    tensors = {f"vision_encoder.{k}": v for k, v in tower.state_dict().items()} | lm | connector
    return their_config(config) | {"image_size": 336}, tensors


@pytest.mark.parametrize("arch", ["pythia", "mamba"])
def test_released_sizes_map_completely(arch, tmp_path):
    """The released checkpoints' shapes (no file downloaded: meta tensors) map onto the paper
    presets, every tensor of theirs to one of vlab's and every one of vlab's set."""
    from vlab.config import from_dict
    from vlab.vlm.config import VLMRunConfig
    from vlab.vlm.external.imported import check_complete, hf_config, target_shapes
    from vlab.vlm.external.shakeup import (
        ShakeupCheckpoint,
        lm_settings,
        map_tensors,
        recognise,
        run_config,
    )

    config, tensors = paper_sized_tensors(arch)
    assert recognise(tmp_path, config, set(tensors)) == (arch, "eva02")
    ck = ShakeupCheckpoint(tmp_path, config, tensors, arch, "eva02")
    settings = lm_settings(ck)
    run = run_config(ck)
    assert run["model"]["vision"] == {
        "kind": "eva02",
        "preset": "paper",
        "image_size": 336,
        "feature_layer": -1,
        "final_norm": True,
    }
    mapping = map_tensors(ck)
    shapes = target_shapes(from_dict(VLMRunConfig, run), hf_config(arch, settings))
    check_complete(mapping.state, shapes, mapping.unmapped)
    assert settings["vocab_size"] == {"pythia": 50304, "mamba": 50280}[arch]
