"""One record per architecture: every arm's record is complete and right, its module paths
resolve on a built model, code outside the family modules names no arm, and the per-step SSM
states that ``vlab inspect`` reads are the ones the training kernels compute."""

import ast
import importlib
import re
from pathlib import Path

import pytest
import torch

from vlab.analysis.inside.image_figures import vl_name
from vlab.analysis.plots import arch_colors
from vlab.bench.cli import NAMES
from vlab.models.backbones import (
    FAMILIES,
    PRESETS,
    BackboneConfig,
    build_backbone,
    families,
    family,
    family_of_model_type,
    flagged,
)
from vlab.models.backbones import mamba2_internals as m2
from vlab.models.backbones import mamba_internals as m1
from vlab.models.backbones.family import BLOCK_NAMES, GLOBAL_NAMES, READOUTS, Family
from vlab.models.ops.selective_scan import (
    selective_scan,
    selective_scan_reference,
    selective_scan_states,
    use_scan_backend,
)
from vlab.models.ops.ssd import ssd_reference, ssd_scan, ssd_states

REPO = Path(__file__).resolve().parents[2]
ARCHS = list(FAMILIES)
INTERNALS = (
    "mixer_internals",
    "scan_states",
    "readout",
    "mixer_output",
    "last_row",
    "computed",
    "output_with_state",
    "conv_window",
    "output_with_patch",
)


# -- the records --------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_has_a_complete_record_beside_its_model(arch):
    module = FAMILIES[arch]
    record = family(arch)
    assert isinstance(record, Family) and record is module.FAMILY
    assert record.arch == arch and record.model_type == module.MODEL_TYPE
    assert record.presets is PRESETS[arch] and "tiny" in record.presets
    assert record.defaults is module.DEFAULTS and record.hf_config is module.hf_config
    assert record.hf_config("tiny").model_type == record.model_type
    assert callable(record.model_kwargs) and callable(record.prepare)
    assert record.name and record.vlm_name.endswith("-VL")
    assert re.fullmatch(r"#[0-9a-f]{6}", record.color)
    assert set(GLOBAL_NAMES) <= set(record.global_sites)
    assert family_of_model_type(record.model_type) is record
    for block in record.blocks:
        assert set(BLOCK_NAMES) <= set(block.sites) and block.readout in READOUTS
        if block.readout == "hidden_attention":  # an SSM: its internals module is complete
            internals = importlib.import_module(block.internals)
            assert all(callable(getattr(internals, f, None)) for f in INTERNALS)
        else:
            assert block.internals is None and "blocks.{i}.attn.pattern" in block.sites


def test_the_records_are_the_known_arms_with_their_names_and_colours():
    assert [f.arch for f in families()] == ["pythia", "mamba", "mamba2", "hybrid"]
    got = {f.arch: (f.model_type, f.name, f.vlm_name, f.color) for f in families()}
    assert got == {
        "pythia": ("gpt_neox", "Pythia", "Pythia-VL", "#1f77b4"),
        "mamba": ("mamba", "Mamba", "Mamba-VL", "#ff7f0e"),
        "mamba2": ("mamba2", "Mamba-2", "Mamba2-VL", "#d62728"),
        "hybrid": ("vlab_hybrid", "Hybrid", "Hybrid-VL", "#2ca02c"),
    }
    kinds = {
        f.arch: (f.block_kinds, [f.block(k).readout for k in f.block_kinds]) for f in families()
    }
    assert kinds == {
        "pythia": (("attention",), ["attention"]),
        "mamba": (("mamba",), ["hidden_attention"]),
        "mamba2": (("mamba2",), ["hidden_attention"]),
        "hybrid": (("mamba", "attention"), ["hidden_attention", "attention"]),
    }
    assert flagged("baseline").arch == "pythia" and flagged("scan_comparison").arch == "mamba"
    assert [f.arch for f in families() if f.selective_scan] == ["mamba", "hybrid"]
    assert family_of_model_type("llama") is None


def test_what_reads_the_records_gives_the_records_answers_and_the_old_fallbacks():
    colors = arch_colors(["hybrid", "rwkv", "pythia", "mamba2", "mamba"])
    assert list(colors)[:4] == ["pythia", "mamba", "mamba2", "hybrid"]  # registry order
    assert colors["mamba2"] == "#d62728" and colors["rwkv"] not in list(colors.values())[:4]
    assert vl_name("mamba2") == "Mamba2-VL" and vl_name("rwkv") == "rwkv-VL"
    assert NAMES["mamba2"] == "Mamba-2" and NAMES.get("rwkv", "rwkv") == "rwkv"


def _resolve(model: torch.nn.Module, path: str) -> torch.nn.Module:
    for part in path.split("."):
        model = model[int(part)] if part.isdigit() else getattr(model, part)
    return model


@pytest.mark.parametrize("arch", ARCHS)
def test_every_site_of_a_family_is_a_module_of_its_tiny_model_with_that_output(arch):
    record = family(arch)
    model = build_backbone(BackboneConfig(arch=arch, attn_implementation="eager"), seed=0)
    model.eval()
    config = model.config
    layers = range(config.num_hidden_layers)
    kinds = [record.kind_at(config, i) for i in layers]
    assert set(kinds) == set(record.block_kinds)  # the tiny preset has every kind it declares
    sites = {name: site for name, site in record.global_sites.items()}
    for i, kind in zip(layers, kinds, strict=True):
        for name, site in record.block(kind).sites.items():
            sites[name.replace("{i}", str(i))] = type(site)(
                site.module.replace("{i}", str(i)), site.index
            )
    outputs, hooks = {}, []
    for name, site in sites.items():
        module = _resolve(model, site.module)
        assert isinstance(module, torch.nn.Module), name

        def keep(_module, _inputs, output, name=name):
            outputs[name] = output

        hooks.append(module.register_forward_hook(keep))
    batch, length = 2, 7
    with torch.no_grad():
        model(torch.randint(0, 200, (batch, length)))
    for hook in hooks:
        hook.remove()
    hidden, vocab = config.hidden_size, model.get_input_embeddings().weight.shape[0]
    for name, site in sites.items():
        output = outputs[name]
        # ``index`` picks from a tuple; transformers releases differ in which modules return
        # one (a decoder layer's output is a bare tensor in 5.x), as the trace allows
        if site.index is not None and isinstance(output, tuple):
            assert len(output) > site.index, name
            value = output[site.index]
        else:
            assert site.index in (None, 0), name  # only element 0 can stand alone
            value = output
        assert isinstance(value, torch.Tensor), name
        if name == "logits":
            assert value.shape == (batch, length, vocab)
        elif name.endswith("attn.pattern"):
            assert value.shape == (batch, config.num_attention_heads, length, length)
        else:
            assert value.shape == (batch, length, hidden), name


# -- no code outside the family modules names an arm ----------------------------------------


def quoted_arch_names(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) of every string constant in ``source`` that is exactly one of ``names``:
    quoted with either quote, alone or as a piece of an f-string."""
    return sorted(
        (node.lineno, node.value)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
    )


def test_the_name_check_finds_a_planted_arch_name():
    names = {"mamba2", "gpt_neox"}
    source = "x = {'mamba2': 1}\ny = f\"{a}\" + 'mamba2s'\n# 'gpt_neox'\nz = [\"gpt_neox\"]\n"
    assert quoted_arch_names(source, names) == [(1, "mamba2"), (4, "gpt_neox")]


def test_analysis_bench_and_plots_name_no_architecture():
    names = {f.arch for f in families()} | {f.model_type for f in families()}
    files = sorted((REPO / "analysis").rglob("*.py")) + sorted((REPO / "models").glob("bench*.py"))
    assert REPO / "models" / "bench.py" in files and REPO / "analysis" / "plots.py" in files
    found = [
        f"{path.relative_to(REPO)}:{line}: {name!r}"
        for path in files
        for line, name in quoted_arch_names(path.read_text(), names)
    ]
    assert found == [], "read the family record instead (vlab.models.backbones.family)"


# -- the states vlab inspect reads are the training kernels' --------------------------------


def tiny_mixer(arch: str, seed: int = 0):
    """Layer 1's mixer of a tiny random ``arch`` model (decays large enough to matter), and
    an input for it (B=3, T=11, H)."""
    cfg = BackboneConfig(arch=arch, overrides={"initializer_range": 0.3})
    model = build_backbone(cfg, seed=seed).eval()
    hidden = torch.randn(
        3, 11, model.config.hidden_size, generator=torch.Generator().manual_seed(1)
    )
    return model.backbone.layers[1].mixer, hidden


def test_mamba_states_are_the_reference_scans_and_give_the_fast_scans_output():
    mixer, hidden = tiny_mixer("mamba")
    with torch.no_grad():
        it = m1.mixer_internals(mixer, hidden)
        states = m1.scan_states(it)  # (B, D, N, T)
        gated = m1.readout(it, states)
        ops = selective_scan_states(it.x, it.delta, it.A, it.B)
        reference, last = selective_scan_reference(
            it.x, it.delta, it.A, it.B, it.C, it.D, it.z, return_last_state=True
        )
        with use_scan_backend("torch"):
            fast, fast_last = selective_scan(
                it.x, it.delta, it.A, it.B, it.C, it.D, it.z, return_last_state=True
            )
        default = selective_scan(it.x, it.delta, it.A, it.B, it.C, it.D, it.z)
    assert states.shape == (3, mixer.intermediate_size, mixer.ssm_state_size, 11)
    assert torch.equal(states, ops)
    assert torch.equal(states[..., -1], last)
    torch.testing.assert_close(gated, reference)
    torch.testing.assert_close(gated, fast, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gated, default, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(states[..., -1], fast_last, atol=1e-5, rtol=1e-5)


def test_mamba2_states_give_the_chunked_scans_output_and_final_state():
    mixer, hidden = tiny_mixer("mamba2")
    with torch.no_grad():
        it = m2.mixer_internals(mixer, hidden)
        states = m2.scan_states(it)  # (B, heads, P, N, T)
        y = m2.readout(it, states)  # (B, heads, P, T)
        x = it.x.permute(0, 3, 1, 2)  # transformers' layout: (B, T, heads, P)
        dt = it.delta.transpose(1, 2)
        B, C = it.B.permute(0, 3, 1, 2), it.C.permute(0, 3, 1, 2)  # (B, T, groups, N)
        chunked, final = ssd_scan(x, dt, it.A, B, C, it.D)
        plain, plain_final = ssd_reference(x, dt, it.A, B, C, it.D)
    assert states.shape == (3, mixer.num_heads, mixer.head_dim, mixer.ssm_state_size, 11)
    assert torch.equal(states, ssd_states(x, dt, it.A, B))
    torch.testing.assert_close(y.permute(0, 3, 1, 2), plain)
    torch.testing.assert_close(states[..., -1], plain_final)
    torch.testing.assert_close(y.permute(0, 3, 1, 2), chunked, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(states[..., -1], final, atol=1e-5, rtol=1e-5)


def test_without_decay_the_states_are_running_sums_of_the_inputs():
    # A = 0: nothing decays, so h_t = sum_{s <= t} delta_s u_s B_s (a known answer)
    g = torch.Generator().manual_seed(0)
    u, delta = torch.randn(2, 3, 5, generator=g), torch.rand(2, 3, 5, generator=g)
    B = torch.randn(2, 4, 5, generator=g)
    got = selective_scan_states(u, delta, torch.zeros(3, 4), B)
    want = torch.cumsum((delta * u)[:, :, None, :] * B[:, None], dim=-1)
    torch.testing.assert_close(got, want)
    start = torch.randn(2, 3, 4, generator=g)
    torch.testing.assert_close(
        selective_scan_states(u, delta, torch.zeros(3, 4), B, initial_state=start),
        want + start[..., None],
    )
    assert selective_scan_states(u[..., :0], delta[..., :0], torch.zeros(3, 4), B).shape == (
        2,
        3,
        4,
        0,
    )
    # Mamba-2: x (batch, L, heads, P), dt (batch, L, heads), one group of B for both heads
    x, dt = torch.randn(2, 5, 2, 3, generator=g), torch.rand(2, 5, 2, generator=g)
    Bg = torch.randn(2, 5, 1, 4, generator=g)
    got = ssd_states(x, dt, torch.zeros(2), Bg)
    want = torch.cumsum(torch.einsum("bth,bthp,btn->bhpnt", dt, x, Bg[:, :, 0]), dim=-1)
    torch.testing.assert_close(got, want)
