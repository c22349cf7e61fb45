"""The heads a fit trains, for both objectives: built or loaded from `--init-heads`, and checked."""

from __future__ import annotations

import torch

from autodeco_lp.hub.config import AutoDecoConfig
from autodeco_lp.inference.capture import OutputProjection
from autodeco_lp.inference.heads import AutoDecoHeads, check_heads_fit_model
from autodeco_lp.training.args import FitArgs


def build_heads(args: FitArgs, model, device) -> AutoDecoHeads:
    """The heads a fit starts from: `--init-heads`, else fresh ones (seeded by `--seed`) for `model`."""
    if args.init_heads:
        return AutoDecoHeads.from_pretrained(args.init_heads, device=device)
    torch.manual_seed(args.seed)
    config = AutoDecoConfig(
        hidden_size=model.get_output_embeddings().weight.shape[1],
        vocab_size=model.get_output_embeddings().weight.shape[0],
        enable_temperature_head=args.trains("temperature"),
        enable_top_p_head=args.trains("top_p"),
        use_enhanced_features=args.use_enhanced_features,
        mlp_hidden_size=args.mlp_hidden_size,
        base_model_name_or_path=getattr(model, "name_or_path", None) or None,
    )
    return AutoDecoHeads(config).to(device)


def check_heads(args: FitArgs, heads: AutoDecoHeads, projection: OutputProjection) -> None:
    """Refuse heads of another model, or without a head `--train-heads` trains."""
    check_heads_fit_model(
        heads.config,
        projection.hidden_size,
        projection.vocab_size,
        args.model,
        what=f"`--init-heads` {args.init_heads!r}",
    )
    needed = {"temperature": heads.temp_head, "top_p": heads.top_p_head}
    for name, head in needed.items():
        if args.trains(name) and head is None:
            raise ValueError(
                f"`--train-heads {args.train_heads}` but `--init-heads` {args.init_heads!r} has no {name} head."
            )
