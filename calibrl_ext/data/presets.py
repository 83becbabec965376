"""Which input column holds what: explicit flags, presets for common schemas, auto-detection.

Resolution order for each role (question, answer, images, expert, id, split, data_source):
an explicit ``--*-col`` flag, else the ``--preset``'s column, else the first candidate of
:data:`CANDIDATES` present in the input. The result is printed at start-up, and a required role
that resolves to nothing is an error naming the input's columns and the flag to set.

A column may be a dotted path into a struct column: ``reward_model.ground_truth``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace


@dataclass(frozen=True)
class ColumnMapping:
    """Input column per role (None: the role is absent). Dotted paths reach into struct columns.

    Attributes:
        question: question text, or chat messages (required).
        answer: ground truth (required).
        images: one image or a list (bytes, ``{bytes, path}``, path string, PIL).
        expert: expert solution (string, messages or ``{content}``); or use ``--expert-file``.
        id: stable row id (needed to join ``--expert-file``; also names rows in the rejects file).
        split: the input's own train/val assignment (overrides ``--val-ratio``).
        data_source: per-row data_source (else the constant ``--data-source``).
        keep: further columns copied into ``extra_info`` as strings.
    """

    question: str | None = None
    answer: str | None = None
    images: str | None = None
    expert: str | None = None
    id: str | None = None
    split: str | None = None
    data_source: str | None = None
    keep: tuple[str, ...] = ()

    ROLES = ("question", "answer", "images", "expert", "id", "split", "data_source")

    def columns(self) -> list[str]:
        """Top-level input columns the mapping reads (what readers load; nothing else)."""
        names = [getattr(self, role) for role in self.ROLES] + list(self.keep)
        return sorted({name.split(".")[0] for name in names if name})


@dataclass(frozen=True)
class Preset:
    """A known input schema.

    Attributes:
        name: ``--preset`` value.
        description: one line for ``--help``.
        mapping: its columns.
        data_source: default ``data_source`` (when no per-row column).
        unwrap_boxed_answer: ground truths come as ``\\boxed{X}`` and are unwrapped to ``X``.
        allow_text_only: rows without images are expected (text datasets).
    """

    name: str
    description: str
    mapping: ColumnMapping
    data_source: str | None = None
    unwrap_boxed_answer: bool = False
    allow_text_only: bool = False


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "virl39k",
            "TIGER-Lab/ViRL39K 39Krelease.parquet: question (with <image>), answer (\\boxed{}), "
            "image (relative paths), qid",
            ColumnMapping(question="question", answer="answer", images="image", id="qid", keep=("category", "source")),
            data_source="virl39k",
            unwrap_boxed_answer=True,
        ),
        Preset(
            "geometry3k",
            "hiyouga/geometry3k: problem (with <image>), answer, images (HF Image list)",
            ColumnMapping(question="problem", answer="answer", images="images"),
            data_source="geometry3k",
        ),
        Preset(
            "mmk12",
            "FanqingM/MMK12: id, subject, image (HF Image), question, answer",
            ColumnMapping(question="question", answer="answer", images="image", id="id", keep=("subject",)),
            data_source="mmk12",
        ),
        Preset(
            "calibrl",
            "the released CalibRL parquet: verl columns (prompt, images, reward_model, data_source) + solution",
            ColumnMapping(
                question="prompt",
                answer="reward_model.ground_truth",
                images="images",
                expert="solution",
                data_source="data_source",
            ),
        ),
        Preset(
            "luffy",
            "LUFFY-style parquet: verl columns (prompt, reward_model, data_source) + target (assistant messages); "
            "text-only",
            ColumnMapping(
                question="prompt", answer="reward_model.ground_truth", expert="target", data_source="data_source"
            ),
            allow_text_only=True,
        ),
        Preset(
            "demo",
            "the embedded demo generator's records (used when no --input is given)",
            ColumnMapping(
                question="question",
                answer="answer",
                images="images",
                expert="solution",
                id="id",
                split="split",
                data_source="data_source",
                keep=("kind",),
            ),
        ),
    )
}

#: Auto-detection: input columns tried per role, in order, when neither a flag nor a preset names one.
#: The expert role is auto-detected too (see :data:`calibrl_ext.data.experts.EXPERT_COLUMN_CANDIDATES`).
CANDIDATES: dict[str, tuple[str, ...]] = {
    "question": ("question", "problem", "query", "prompt"),
    "answer": ("answer", "ground_truth", "gt", "reward_model.ground_truth"),
    "images": ("images", "image", "decoded_image", "image_path", "image_paths"),
    "expert": ("expert_solution", "solution", "target"),
    "id": ("id", "qid", "uid", "question_id", "sample_id"),
    "split": (),
    "data_source": (),
}

REQUIRED_ROLES = ("question", "answer")


def _present(path: str, columns: list[str], struct_fields: dict[str, list[str]]) -> bool:
    head, _, rest = path.partition(".")
    if head not in columns:
        return False
    return not rest or rest.split(".")[0] in struct_fields.get(head, [rest.split(".")[0]])


@dataclass(frozen=True)
class ResolvedMapping:
    """A mapping checked against an input, with where each column came from (for the start-up printout)."""

    mapping: ColumnMapping
    origin: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        parts = []
        for role in ColumnMapping.ROLES:
            column = getattr(self.mapping, role)
            if column:
                parts.append(f"{role}={column} ({self.origin.get(role, '?')})")
        if self.mapping.keep:
            parts.append(f"keep={list(self.mapping.keep)}")
        return ", ".join(parts)


def resolve_mapping(
    explicit: ColumnMapping,
    preset: Preset | None,
    columns: list[str],
    input_name: str,
    struct_fields: dict[str, list[str]] | None = None,
    need_images: bool = True,
) -> ResolvedMapping:
    """Combine flags, preset and auto-detection for one input, and check every column exists.

    Args:
        explicit: columns given by flags (None where not given).
        preset: the chosen preset, if any.
        columns: the input's top-level column names.
        input_name: for error messages.
        struct_fields: sub-field names of struct columns (to check dotted paths), when known.
        need_images: whether a missing image column is an error (False with --allow-text-only).

    Raises:
        ValueError: a named column is absent, or a required role found no column.
    """
    struct_fields = struct_fields or {}
    chosen: dict[str, str | None] = {}
    origin: dict[str, str] = {}
    for role in ColumnMapping.ROLES:
        flag_value = getattr(explicit, role)
        preset_value = getattr(preset.mapping, role) if preset else None
        if flag_value:
            chosen[role], origin[role] = flag_value, "flag"
        elif preset_value:
            chosen[role], origin[role] = preset_value, f"preset {preset.name}"
        else:
            found = next((c for c in CANDIDATES[role] if _present(c, columns, struct_fields)), None)
            chosen[role], origin[role] = found, "auto-detected"
        column = chosen[role]
        if column and not _present(column, columns, struct_fields):
            flag = "--image-col" if role == "images" else f"--{role.replace('_', '-')}-col"
            if origin[role].startswith("preset") and role not in REQUIRED_ROLES and role != "images":
                chosen[role] = None  # an optional preset column the file lacks: the role is simply absent
                continue
            raise ValueError(
                f"{input_name}: column {column!r} for the {role} ({origin[role]}) is not in the input; columns are "
                f"{columns}. Set {flag}"
            )
    for role in REQUIRED_ROLES:
        if not chosen[role]:
            raise ValueError(
                f"{input_name}: no {role} column found (tried {list(CANDIDATES[role])}); columns are {columns}. "
                f"Set --{role}-col or a --preset ({', '.join(PRESETS)})"
            )
    if need_images and not chosen["images"]:
        raise ValueError(
            f"{input_name}: no image column found (tried {list(CANDIDATES['images'])}); columns are {columns}. "
            "Set --image-col, or pass --allow-text-only for a text dataset"
        )
    keep = tuple(explicit.keep) or (preset.mapping.keep if preset else ())
    if preset and not explicit.keep:
        keep = tuple(column for column in keep if column in columns)  # optional preset extras the file lacks
    missing_keep = [column for column in keep if not _present(column, columns, struct_fields)]
    if missing_keep:
        raise ValueError(f"{input_name}: --keep-col {missing_keep} not in the input; columns are {columns}")
    mapping = replace(ColumnMapping(**{k: v for k, v in chosen.items()}), keep=keep)
    return ResolvedMapping(mapping, origin)


def mapping_from_flags(**flags) -> ColumnMapping:
    """A ColumnMapping of flag values (unknown role names raise ``TypeError``)."""
    names = {f.name for f in fields(ColumnMapping)}
    unknown = sorted(set(flags) - names)
    if unknown:
        raise TypeError(f"unknown column roles {unknown}; known: {sorted(names)}")
    return ColumnMapping(**flags)


def get_value(record: dict, path: str | None):
    """The value at a (dotted) column path of a record, None when any step is absent."""
    if not path:
        return None
    value = record
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value
