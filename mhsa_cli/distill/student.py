"""The student: its shape, its init from the teacher, and the layer pairs.

Student shape (:func:`student_config`): ``--shrink half`` halves the layers
(min 1), ``d_model``, heads (``head_dim`` kept) and ``d_ff``; ``quarter`` halves
the layers and quarters the width (:data:`SHRINK`). ``--layers/--d-model/--heads/--d-ff``
override the preset; with neither, ``half`` is used (with ``--init-from-teacher``:
half the layers at the teacher's width, as DistilBERT, :data:`DEPTH_ONLY`).

``--init-from-teacher`` (:func:`match_teacher_blocks`, :func:`init_from_teacher`)
copies embeddings, classifier and student block ``i`` <- teacher block
``floor(i * L_t / L_s)`` (1-based, e.g. 2 from 4 -> blocks 2 and 4; see
:func:`layer_map`); it needs equal ``d_model`` and ``d_ff``.

Layer pairs (:func:`parse_pairs`): ``--hidden-layers s:t``, default last:last.
For the attention loss (:func:`attention_pairs`), pairs involving the embeddings
(0) or a layer with zero heads (pruned) are skipped with a note; if none remain
it is an error.
"""

from __future__ import annotations

import dataclasses

from ..config import DistillConfig
from ..errors import MhsaError
from ..model import MHSAClassifier, ModelConfig, make_config

SHRINK = {"half": (0.5, 0.5), "quarter": (0.5, 0.25)}  # preset -> (layer factor, width factor)
DEPTH_ONLY = (0.5, 1.0)  # default with --init-from-teacher (DistilBERT: half the layers, same width)


def student_config(teacher: ModelConfig, cfg: DistillConfig) -> ModelConfig:
    """The student's architecture from ``--shrink`` and/or explicit shape options.

    Raises:
        MhsaError: an unusable shape (e.g. ``d_model`` not divisible by ``heads``).
    """
    explicit = any(v is not None for v in (cfg.layers, cfg.d_model, cfg.heads, cfg.d_ff))
    if cfg.shrink:
        lf, wf = SHRINK[cfg.shrink]
    elif explicit:
        lf, wf = 1.0, 1.0  # unspecified options keep the teacher's value
    else:
        lf, wf = DEPTH_ONLY if cfg.init_from_teacher else SHRINK["half"]
    layers = cfg.layers or max(1, int(teacher.n_layers * lf))
    d_model = cfg.d_model or max(1, int(teacher.d_model * wf))
    heads = cfg.heads or max(1, d_model // teacher.head_dim)  # keep head_dim where possible
    d_ff = cfg.d_ff or max(1, int(max(teacher.ff_sizes) * wf))  # a neuron-pruned teacher: its widest layer
    shape = make_config(teacher.input_kind, teacher.max_len, teacher.num_classes, teacher.vocab_size,
                        teacher.feature_dim, layers, d_model, heads, d_ff, teacher.dropout, teacher.pooling)
    return dataclasses.replace(shape, **teacher.style()).validate()  # post-LN, pooler, ... as the teacher


def layer_map(n_student: int, n_teacher: int) -> list[int]:
    """Teacher block (1-based) for each student block: every k-th, ending at the last.

    >>> layer_map(2, 4), layer_map(3, 12), layer_map(1, 2)
    ([2, 4], [4, 8, 12], [2])
    """
    return [max(1, (i * n_teacher) // n_student) for i in range(1, n_student + 1)]


def match_teacher_blocks(student: ModelConfig, teacher: ModelConfig, explicit_heads: int | None
                         ) -> tuple[ModelConfig, list[int]]:
    """For ``--init-from-teacher``: give the student the copied blocks' head counts.

    Returns:
        The student config (per-layer heads and ``head_dim`` of the teacher's
        mapped blocks) and the layer map.

    Raises:
        MhsaError: widths differ, or ``--heads`` disagrees with the teacher's blocks.
    """
    widest = max(teacher.ff_sizes)  # a neuron-pruned teacher: the copied blocks keep their own widths
    if (student.d_model, student.d_ff) != (teacher.d_model, widest):
        raise MhsaError(f"--init-from-teacher needs the teacher's widths (d_model {teacher.d_model}, "
                        f"d_ff {teacher.d_ff}); the student has d_model {student.d_model}, d_ff {student.d_ff}")
    mapping = layer_map(student.n_layers, teacher.n_layers)
    heads = [teacher.heads[j - 1] for j in mapping]
    if explicit_heads is not None and any(h != explicit_heads for h in heads):
        raise MhsaError(f"--init-from-teacher copies teacher blocks {mapping} with heads {heads}; "
                        f"--heads {explicit_heads} disagrees (drop --heads)")
    d_ff = [teacher.ff_sizes[j - 1] for j in mapping]
    return dataclasses.replace(student, heads=heads, head_dim=teacher.head_dim, d_ff=d_ff).validate(), mapping


def init_from_teacher(student: MHSAClassifier, teacher: MHSAClassifier, mapping: list[int]) -> None:
    """Copy embeddings, final norm, classifier and block ``i`` <- teacher block ``mapping[i]``.

    Args:
        mapping: 1-based teacher block per student block (see :func:`layer_map`).
    """
    src = teacher.state_dict()
    state = {}
    for key in student.state_dict():
        if key.startswith("blocks."):
            _, i, rest = key.split(".", 2)
            key_t = f"blocks.{mapping[int(i)] - 1}.{rest}"
        else:
            key_t = key
        state[key] = src[key_t].detach().clone()
    student.load_state_dict(state, strict=True)


def parse_pairs(specs: list[str] | None, n_student: int, n_teacher: int, flag: str = "--hidden-layers",
                sides: tuple[str, str] = ("student", "teacher")) -> list[tuple[int, int]]:
    """``["1:2", "0:0"]`` -> ``[(1, 2), (0, 0)]``; default last student : last teacher block.

    ``flag`` and ``sides`` name the option and its two sides in errors (prune's ``--kd-hidden-layers``
    pairs the pruned model's blocks with its teacher's).

    Raises:
        MhsaError: a malformed pair or an index out of range (0 = embeddings).
    """
    if not specs:
        return [(n_student, n_teacher)]
    pairs = []
    for spec in specs:
        try:
            s, t = (int(v) for v in str(spec).split(":"))
        except ValueError:
            raise MhsaError(f"{flag}: expected {sides[0]}:{sides[1]} pairs like 1:2, got '{spec}'") from None
        for who, i, n in ((sides[0], s, n_student), (sides[1], t, n_teacher)):
            if not 0 <= i <= n:
                raise MhsaError(f"{flag}: {who} layer {i} out of range 0..{n} (0 = embeddings) in '{spec}'")
        pairs.append((s, t))
    return pairs


def attention_pairs(pairs: list[tuple[int, int]], s_heads: list[int], t_heads: list[int],
                    notes: list[str]) -> list[tuple[int, int]]:
    """The hidden pairs usable for the attention loss: blocks with heads on both sides.

    Skipped pairs are explained in ``notes``.

    Raises:
        MhsaError: no pair is usable.
    """
    usable = []
    for s, t in pairs:
        if s == 0 or t == 0:
            notes.append(f"attention loss skips pair {s}:{t} (embeddings have no attention)")
        elif s_heads[s - 1] == 0 or t_heads[t - 1] == 0:
            notes.append(f"attention loss skips pair {s}:{t} (a layer with 0 heads)")
        else:
            usable.append((s, t))
    if not usable:
        raise MhsaError(f"--attn-weight: no --hidden-layers pair has attention heads on both sides "
                        f"(student heads {s_heads}, teacher heads {t_heads})")
    return usable
