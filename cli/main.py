"""`autodeco`: the command group. Commands parse options into a config and call the library."""

from __future__ import annotations

import json
import sys

import click
import transformers
from transformers.utils import logging as hf_logging

from autodeco_lp.cli.bench import bench_group
from autodeco_lp.cli.data import data_group
from autodeco_lp.cli.evaluate import eval_group
from autodeco_lp.cli.fit import fit_command
from autodeco_lp.cli.options import dataclass_options
from autodeco_lp.cli.plot import plot_group
from autodeco_lp.cli.push import push_command
from autodeco_lp.cli.serve import serve_command
from autodeco_lp.engines import torch_device
from autodeco_lp.hub.checkpoint import export_official
from autodeco_lp.hub.models import load_model, packaged_model, packaged_model_dir
from autodeco_lp.inference.heads import AutoDecoHeads
from autodeco_lp.inference.processor import AutoDeco
from autodeco_lp.inference.textgen import GenerateArgs, generate_text
from autodeco_lp.version import __version__


def _fail(exc: Exception) -> None:
    """User errors print one clear line instead of a traceback."""
    raise click.ClickException(str(exc)) from exc


@click.group()
@click.version_option(__version__, prog_name="autodeco")
def autodeco() -> None:
    """AutoDeco for Hugging Face causal LMs: per-token temperature and top-p from two small heads."""
    hf_logging.disable_progress_bar()  # every command's stdout is its result; our own bars go to stderr


@autodeco.command()
@dataclass_options(GenerateArgs)
@click.argument("prompts", nargs=-1, required=True)
def generate(prompts: tuple[str, ...], **options) -> None:
    """Sample a completion for each PROMPT with AutoDeco deciding T and P at every token."""
    try:
        args = GenerateArgs(**options)
        model, tokenizer = load_model(args.model, device=torch_device(args.device))
        with AutoDeco.from_pretrained(
            model, args.heads, temperature_scale=args.temperature_scale, top_p_scale=args.top_p_scale
        ) as processor:
            completions = generate_text(
                model,
                tokenizer,
                list(prompts),
                processor,
                max_new_tokens=args.max_new_tokens,
                chat=args.chat,
                seed=args.seed,
            )
    except (ValueError, TypeError, OSError, ModuleNotFoundError) as exc:
        _fail(exc)
    for completion in completions:
        click.echo(f"### {completion.prompt}")
        click.echo(completion.text)
        if args.show_trace:
            click.echo(f"{'token':>16}  {'T':>6}  {'P':>6}")
            for token, t, p in zip(completion.tokens, completion.temperature, completion.top_p):
                click.echo(f"{json.dumps(token, ensure_ascii=False):>16}  {t:6.3f}  {p:6.3f}")
            if completion.tokens:
                mean_t = sum(completion.temperature) / len(completion.temperature)
                mean_p = sum(completion.top_p) / len(completion.top_p)
                click.echo(f"{'mean':>16}  {mean_t:6.3f}  {mean_p:6.3f}")
        click.echo()


@autodeco.command()
@click.option("--heads", required=True, help="Heads folder or Hub id to export.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder to write.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["official", "native"]),
    default="official",
    show_default=True,
    help="official: the released lightweight layout (config.json + model.safetensors) that the authors' "
    "vLLM fork serves; native: autodeco_config.json + autodeco_heads.safetensors.",
)
@click.option(
    "--model",
    default=None,
    help="Base model whose config the official layout inlines (default: the heads' recorded base model).",
)
def export(heads: str, out_dir: str, fmt: str, model: str | None) -> None:
    """Write heads in another layout."""
    try:
        loaded = AutoDecoHeads.from_pretrained(heads)
        if fmt == "native":
            loaded.save_pretrained(out_dir)
        else:
            base = _base_config(model or loaded.config.base_model_name_or_path)
            export_official(loaded.config, loaded.state_dict(), out_dir, base_config=base)
    except (ValueError, TypeError, OSError) as exc:
        _fail(exc)
    click.echo(f"wrote {fmt} heads to {out_dir}")


def _base_config(name_or_path: str | None) -> dict:
    # `transformers.AutoConfig` is resolved here, not imported by name: the auto classes cost ~0.2 s of `--help`.
    if not name_or_path:
        raise ValueError("the heads record no base model; pass --model ID so its config can be inlined.")

    packaged = packaged_model(name_or_path)
    if packaged is not None:
        config = transformers.AutoConfig.from_pretrained(packaged_model_dir(packaged))
        config.name_or_path = packaged.model_id
        return config.to_dict()
    try:
        return transformers.AutoConfig.from_pretrained(name_or_path).to_dict()
    except OSError as exc:
        raise ValueError(
            f"cannot read the config of base model {name_or_path!r} ({exc}); pass --model with a local folder."
        ) from exc


autodeco.add_command(fit_command)
autodeco.add_command(data_group)
autodeco.add_command(eval_group)
autodeco.add_command(bench_group)
autodeco.add_command(plot_group)
autodeco.add_command(serve_command)
autodeco.add_command(push_command)


def main() -> None:  # pragma: no cover - console entry point
    autodeco(prog_name="autodeco")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
