"""The ``mhsa`` command line: one thin command per verb.

Each command is generated from its stage's config dataclass (see
:mod:`mhsa_cli.config`): options -> config -> library call -> report. The
library never prints; :mod:`mhsa_cli.report` renders what it returns.

Bad input (:class:`MhsaError`, or a usage error from the parser) is one line on
stderr and exit code 2; ``--debug`` shows the traceback. An interruption (Ctrl-C or
SIGTERM, :mod:`mhsa_cli.interrupts`) is one line too, exit code 130 / 143, after
every temporary file or folder has been removed.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import sys
import typing
import warnings
from typing import Any, List, Optional

import typer
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from . import __version__
from .config import _base_type, build_config, field_types
from .errors import MhsaError, MhsaWarning
from .stages import RENDER, RUN, resolve



def _click_exception(name: str) -> type:
    """The parser's exception class: newer typer vendors click, older typer uses it."""
    for module in ("typer._click.exceptions", "typer.exceptions", "click.exceptions"):
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(name)  # pragma: no cover


UsageError, ClickException, Abort = (_click_exception(n) for n in ("UsageError", "ClickException", "Abort"))

DEBUG = {"on": bool(os.environ.get("MHSA_DEBUG"))}
INTERRUPTED = 130  # what typer returns for a KeyboardInterrupt (standalone_mode=False)


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` as one line on stderr and exit."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _plain_metavars(params: list[Any]) -> list[Any]:
    """Help without type noise: flags show no ``<bool>``, arguments are named in capitals."""
    for p in params:
        if getattr(p, "is_flag", False) and p.metavar is None:
            p.metavar = ""  # a flag takes no value: nothing in the type column
        elif getattr(p, "param_type_name", "") == "argument" and p.metavar is None:
            p.metavar = p.name.upper()
    return params


def _usage_pieces(command: Any, ctx: Any) -> list[str]:
    """``[OPTIONS] CHECKPOINT`` / ``[OPTIONS] CHECKPOINTS...`` (not ``{checkpoint}``)."""
    pieces = [command.options_metavar] if command.options_metavar else []
    for p in command.get_params(ctx):
        if getattr(p, "param_type_name", "") != "argument":
            continue
        name = p.metavar or p.name.upper()
        name = name if p.required else f"[{name}]"
        pieces.append(name + ("..." if p.nargs != 1 else ""))
    return pieces


class MhsaCommand(TyperCommand):
    """A command whose help shows plain metavars (see :func:`_plain_metavars`)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_metavars(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return _usage_pieces(self, ctx)


class MhsaGroup(TyperGroup):
    """Turns usage errors and :class:`MhsaError` into one line + exit 2, and an interruption
    (Ctrl-C, SIGTERM: :mod:`mhsa_cli.interrupts`) into one line + exit 128 + signal."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_metavars(super().get_params(ctx))

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        from .interrupts import exit_code, interruptible, message

        with interruptible() as got:  # SIGTERM too raises KeyboardInterrupt: every clean-up runs
            try:
                rv = self._run(args, prog_name, complete_var, **extra)
            except KeyboardInterrupt:
                rv = INTERRUPTED
            except BaseException:
                if not got:
                    raise
                rv = INTERRUPTED  # whatever ended the command once a signal came, it was the signal
        if got or rv == INTERRUPTED:
            fail(message(got.get("signal")), exit_code(got.get("signal")))
        sys.exit(rv if isinstance(rv, int) else 0)

    def _run(self, args: Any, prog_name: Any, complete_var: Any, **extra: Any) -> Any:
        """Parse and run; a usage error or :class:`MhsaError` is one line and exit 2."""
        try:
            return super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                standalone_mode=False, **extra)
        except UsageError as exc:
            ctx = exc.ctx
            if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
                print(ctx.get_help())
                sys.exit(0)
            cmd = f"{ctx.command_path}: " if ctx is not None else ""
            fail(f"{cmd}{exc.format_message()} (see --help)")
        except ClickException as exc:
            fail(exc.format_message())
        except Abort:
            fail("aborted", 130)
        except MhsaError as exc:
            if DEBUG["on"]:
                import traceback

                traceback.print_exc()
            fail(str(exc))


app = typer.Typer(
    cls=MhsaGroup,
    help="Train, prune, quantize, distill and benchmark multi-head self-attention models.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mhsa {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="show tracebacks for errors"),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="print the version and exit"),
) -> None:
    """Train, prune, quantize, distill and benchmark multi-head self-attention models."""
    DEBUG["on"] = bool(os.environ.get("MHSA_DEBUG")) or debug  # per call, not sticky
    # (no blanket warning filter: torch's int8 notices are hidden where they arise, by quantize.quiet)
    warnings.showwarning = _show_warning


_plain_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """:class:`MhsaWarning` as one ``warning: ...`` line on stderr; others as Python shows them."""
    if issubclass(category, MhsaWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        _plain_showwarning(message, category, filename, lineno, file, line)


def _group_device(name: str, cls: type, values: dict[str, Any]) -> Any:
    """The device a torchrun group is set up for: the command's ``--device``, or for ``mhsa run``
    a function deriving it from the recipe's training stages (a CPU recipe gets gloo, not NCCL)."""
    if name == "run":
        def from_recipe() -> str:
            from .recipe import recipe_device

            return recipe_device(config_from_cli(cls, values))

        return from_recipe
    return values.get("device") or "auto"


# --------------------------------------------------------------------------- generator

def _cli_param(f: dataclasses.Field, tp: Any) -> inspect.Parameter:
    """A Typer parameter for one config field (lists as "a,b", dicts as repeated k=v)."""
    meta = f.metadata
    base, optional = _base_type(tp)
    origin = typing.get_origin(base)
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    help_text = meta.get("help", "")
    choices = meta.get("choices")
    if choices is not None and not callable(choices):
        help_text += " " + escape(f"[{'|'.join(map(str, choices))}]")  # not a rich markup tag
    if meta.get("argument"):
        if origin is list:
            info = typer.Argument(..., help=help_text, show_default=False)
            return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=List[str])
        info = typer.Argument(... if default in (None, "") else default, help=help_text)
        return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=str)
    flag = meta.get("flag") or "--" + f.name.replace("_", "-")
    flags = (flag,) if isinstance(flag, str) else tuple(flag)  # first is the main name
    flag = flags[0]
    if origin is dict or base is dict:
        info = typer.Option(None, *flags, help=help_text + " (repeatable key=value)", show_default=False)
        annotation: Any = Optional[List[str]]
    elif origin is list and meta.get("repeat"):
        info = typer.Option(None, *flags, help=help_text + " (repeatable)", show_default=False)
        annotation = Optional[List[str]]
    elif origin is list:
        shown = ",".join(map(str, default)) if default else None
        info = typer.Option(shown, *flags, help=help_text + " (comma-separated)")
        annotation = Optional[str]
    elif base is bool:  # aliases get their --no- form too
        info = typer.Option(default, *(f"{f}/--no-{f[2:]}" for f in flags), help=help_text)
        annotation = bool
    elif meta.get("required"):
        info = typer.Option(..., *flags, help=help_text, show_default=False)
        annotation = base
    else:
        info = typer.Option(default, *flags, help=help_text)
        annotation = Optional[base] if optional or default is None else base
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation)


def config_from_cli(cls: type, values: dict[str, Any]) -> Any:
    """Build a config from parsed CLI values (dropping unset optional dicts/lists)."""
    clean = {k: v for k, v in values.items() if v is not None or _base_type(field_types(cls)[k])[1]}
    return build_config(cls, clean)


def stage_command(name: str, cls: type, help: str, epilog: str) -> None:
    """Register ``mhsa NAME``: options from ``cls``, calls the stage's library
    function ``run(cfg, progress)``, then its ``render(result, console)``
    (both from :mod:`mhsa_cli.stages`)."""
    hints = field_types(cls)
    fields = [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]
    params = [_cli_param(f, hints[f.name]) for f in fields]

    def command(**values: Any) -> None:
        # under torchrun every rank runs this: rank 0 alone draws bars and renders
        from rich.console import Console

        from . import distributed as dist
        from .progress import NULL, RichProgress

        with dist.launched(name, _group_device(name, cls, values)):
            cfg = dist.agree(config_from_cli, cls, values)
            main = dist.is_main()
            result = resolve(RUN[name])(cfg, progress=RichProgress() if main else NULL)
            if main:
                resolve(RENDER[name])(result, Console())

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = help
    command.__name__ = name
    app.command(name, help=help, epilog=epilog, cls=MhsaCommand)(command)


def _stages() -> None:
    from . import config as c

    specs = [
        ("train", c.TrainConfig,
         "Train a baseline attention classifier on a task and save a checkpoint.",
         "Examples:  mhsa train --out runs/baseline  ·  mhsa train --task digits --epochs 20 --out runs/digits"
         "  ·  mhsa train --data reviews.csv --task-opt text_column=review --out runs/reviews"
         "  ·  mhsa train --data train.csv --task-opt test_path=test.csv --task-opt tokenizer=bpe."
         "  Text defaults (real text is small data, so a small regularised model): 1 layer, d_model 64, "
         "4 heads, d_ff 128, dropout 0.3, mean+max pooling, word dropout 0.1 (--token-dropout), words "
         "seen once in train read as <unk> (--task-opt min_freq=2), batch 32, lr 3e-3, up to 30 epochs with "
         "early stopping (patience 5) on the validation split; input length = 99th percentile of the "
         "training texts' token counts; batches cut to their longest row. Chosen on validation "
         "accuracy of trec and sms (README)."),
        ("prune", c.PruneConfig,
         "Score attention heads, feed-forward neurons and whole blocks; physically remove the least important.",
         "Examples:  mhsa prune runs/baseline --ratio 0.5 --finetune-epochs 1 --out runs/pruned"
         "  ·  mhsa prune runs/baseline --ratio 0.5 --ffn-ratio 0.5 --drop-layers 1 --finetune-epochs 1 --out runs/small"
         "  ·  mhsa prune runs/baseline --target-flops 0.4 --finetune-epochs 1 --kd-weight 0.5 --out runs/budget"
         "  ·  mhsa prune runs/baseline --sweep 0,0.25,0.5,0.75 --method gradient,magnitude,random --out runs/sweep"),
        ("quantize", c.QuantizeConfig,
         "Dynamic int8 quantization of every Linear layer (CPU inference).",
         "Examples:  mhsa quantize runs/baseline --out runs/int8  ·  mhsa quantize runs/pruned --engine x86 --out runs/pruned-int8"),
        ("distill", c.DistillConfig,
         "Train a smaller student from a teacher checkpoint (knowledge distillation).",
         "Examples:  mhsa distill --teacher runs/baseline --shrink half --out runs/student"
         "  ·  mhsa distill --teacher runs/baseline --layers 1 --d-model 32 --compare-scratch --out runs/student"),
        ("export", c.ExportConfig,
         "Export a float checkpoint to ONNX (fp32 + ONNX Runtime int8), checked against torch.",
         "Examples:  mhsa export runs/pruned --out runs/pruned-onnx  ·  mhsa export runs/student --no-int8 "
         "--out runs/student-onnx"),
        ("bench", c.BenchConfig,
         "Compare checkpoints: accuracy, size and latency on CPU (and CUDA).",
         "Examples:  mhsa bench runs/baseline runs/int8 runs/pruned --baseline runs/baseline --out runs/bench"
         "  ·  mhsa bench runs/baseline runs/student --runtime torch,onnxruntime --threads 1"),
        ("predict", c.PredictConfig,
         "Predict labels and probabilities for new text with a trained text model.",
         "Examples:  mhsa predict runs/reviews --text \"great food\" --text \"cold and late\""
         "  ·  mhsa predict runs/reviews-int8 --data new.csv --out predictions.csv"
         "  ·  mhsa predict runs/reviews --data labelled.jsonl   (a label column is used for accuracy)"),
        ("import", c.ImportConfig,
         "Import a local Hugging Face BERT / RoBERTa / DistilBERT folder (safetensors) as a checkpoint.",
         "Examples:  mhsa import ./my-bert --out runs/imported"
         "  ·  mhsa import ./bert-base --data reviews.csv --task-opt text_column=review --out runs/imported"
         "  ·  mhsa import ./roberta-base --labels neg,pos --out runs/roberta"),
        ("run", c.RecipeConfig,
         "Run a YAML recipe: a whole compression pipeline, resumable.",
         "Examples:  mhsa run recipes/quickstart.yaml  ·  mhsa run recipes/digits.yaml --dry-run"
         "  ·  mhsa run recipes/text-csv.yaml --set baseline.data=my.csv"),
    ]
    for name, cls, help_text, epilog in specs:
        stage_command(name, cls, help_text, epilog)


_stages()


@app.command("info", epilog="Example:  mhsa info runs/baseline", cls=MhsaCommand)
def info(checkpoint: str = typer.Argument(..., help="checkpoint folder")) -> None:
    """Show a checkpoint: architecture, task, metrics, environment and lineage."""
    from rich.console import Console

    from .checkpoint import load_checkpoint
    from .report.info import render_info

    render_info(load_checkpoint(checkpoint), Console())


@app.command("tasks", epilog="Example:  mhsa tasks", cls=MhsaCommand)
def tasks() -> None:
    """List the built-in tasks with their input kind, classes and options."""
    from rich.console import Console

    from .report.info import render_tasks

    render_tasks(Console())


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C before the group's handlers are in place (while importing)
        from .interrupts import exit_code, message

        fail(message(None), exit_code(None))
