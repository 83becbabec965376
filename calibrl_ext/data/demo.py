"""The embedded demo dataset: small visual reasoning problems drawn with PIL, generated in code.

Four kinds, each with a ground truth the reward function checks and an expert solution in the
``<think>…</think><answer>…</answer>`` format, written from the same numbers that drew the image:

- ``count_shapes``: count the circles / squares / triangles among distractor shapes;
- ``bar_chart``: read unit-grid bar heights (tallest, sum, range, how many above a level);
- ``triangle_angle``: the missing angle of a drawn triangle (general, isosceles, right);
- ``clock_time``: read an analog clock (``H:MM``, minutes past the hour, or the hour).

Every row draws from its own ``random.Random`` seeded by ``(seed, row index)`` (redrawing while it
repeats an earlier row), so the output is byte-identical for the same settings and the first N rows
do not depend on how many rows are generated.
Image sides are multiples of 28 (Qwen2.5-VL's patch 14 x merge 2) between ``min_side`` and
``max_side``, and questions come in several phrasings: rows differ in total token length, like real data
(equal-length batches are covered separately: calibrl_ext/verl_fixes.py, tests/recipe/test_e2e_equal_lengths.py).

The generator yields records in an ordinary input shape (``question``, ``answer``, ``images``,
``solution``, ``id``, ``split``, ``kind``, ``data_source``) that go through the same validation and
writer as user data (preset ``demo``).
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw

from calibrl_ext.data.schema import TRAIN_SPLIT, VAL_SPLIT

#: Image sides are multiples of this (Qwen2.5-VL's processor then needs no resize).
SIDE_MULTIPLE = 28

#: data_source of demo rows is ``DATA_SOURCE_PREFIX + kind`` (validation metrics come per kind).
DATA_SOURCE_PREFIX = "calibrl_demo/"

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
GRID = (200, 200, 200)
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 50, 47),
    "blue": (38, 110, 210),
    "green": (60, 150, 40),
    "orange": (230, 130, 20),
    "purple": (120, 80, 190),
}

SHAPES = ("circle", "square", "triangle")
#: Grid of cells the counting kind places shapes in (cells x cells).
COUNT_GRID_CELLS = 3
COUNT_MAX_TARGETS = 5
COUNT_MAX_DISTRACTORS = 3
BAR_MIN_BARS, BAR_MAX_BARS = 3, 5
BAR_MAX_HEIGHT = 6
#: Triangle angles are multiples of this many degrees; the smallest angle drawn.
ANGLE_STEP, ANGLE_MIN = 5, 20
CLOCK_MINUTE_STEP = 5
#: Draws per row before giving up on finding a problem not generated before (the build rejects
#: duplicates, so the generator avoids them to deliver exactly the requested row counts).
MAX_DRAWS_PER_ROW = 100


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the embedded demo dataset.

    Attributes:
        rows: total rows generated (train + val). Default 320.
        val_rows: how many of them are marked ``val`` (chosen by the seed). Default 64.
        seed: RNG seed; same seed and settings give byte-identical parquet files. Default 0.
        min_side, max_side: image side range in pixels; sides are multiples of 28. Default 56..112.
        missing_expert_ratio: share of rows generated WITHOUT an expert solution (their groups train
            as plain GRPO). Default 0.0.
        experts_per_row: expert solutions per row. 1 (default): ``solution`` is a string, as before. Above 1:
            ``solution`` is a list of that many correct solutions, each worded differently
            (:func:`expert_solutions`), for ``--max-experts`` builds.
    """

    rows: int = 320
    val_rows: int = 64
    seed: int = 0
    min_side: int = 56
    max_side: int = 112
    missing_expert_ratio: float = 0.0
    experts_per_row: int = 1

    def validate(self) -> None:
        """Raise ``ValueError`` naming the flag when a setting cannot work."""
        if self.rows < 1:
            raise ValueError(f"--demo-rows must be >= 1, got {self.rows}")
        if not 0 <= self.val_rows <= self.rows:
            raise ValueError(f"--demo-val-rows must be in [0, --demo-rows={self.rows}], got {self.val_rows}")
        if self.min_side < SIDE_MULTIPLE or self.max_side < self.min_side:
            raise ValueError(
                f"--demo-min-side/--demo-max-side must satisfy {SIDE_MULTIPLE} <= min <= max, "
                f"got {self.min_side}..{self.max_side}"
            )
        if not self.sides():
            raise ValueError(
                f"no multiple of {SIDE_MULTIPLE} lies in --demo-min-side..--demo-max-side = "
                f"{self.min_side}..{self.max_side}; widen the range"
            )
        if not 0.0 <= self.missing_expert_ratio <= 1.0:
            raise ValueError(f"--demo-missing-expert-ratio must be in [0, 1], got {self.missing_expert_ratio}")
        if not 1 <= self.experts_per_row <= 1 + len(EXPERT_WORDINGS):
            raise ValueError(f"--demo-experts must be in [1, {1 + len(EXPERT_WORDINGS)}], got {self.experts_per_row}")

    def sides(self) -> list[int]:
        first = math.ceil(self.min_side / SIDE_MULTIPLE) * SIDE_MULTIPLE
        return list(range(first, self.max_side + 1, SIDE_MULTIPLE))


@dataclass(frozen=True)
class Problem:
    """One generated problem: the picture, the question, the answer and the expert's reasoning."""

    image: Image.Image
    question: str
    answer: str
    reasoning: str


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[float, float, float, float], color) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=color, outline=INK)
    elif shape == "square":
        draw.rectangle(box, fill=color, outline=INK)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=color, outline=INK)


def count_shapes(rng: random.Random, side: int) -> Problem:
    """Circles, squares or triangles to count, among shapes of the other kinds."""
    target = rng.choice(SHAPES)
    others = [shape for shape in SHAPES if shape != target]
    targets = rng.randint(1, COUNT_MAX_TARGETS)
    distractors = rng.randint(0, min(COUNT_MAX_DISTRACTORS, COUNT_GRID_CELLS**2 - targets))
    cells = rng.sample(range(COUNT_GRID_CELLS**2), targets + distractors)
    kinds = [target] * targets + [rng.choice(others) for _ in range(distractors)]
    image = Image.new("RGB", (side, side), BACKGROUND)
    draw = ImageDraw.Draw(image)
    cell = side / COUNT_GRID_CELLS
    margin = cell * 0.15
    for index, shape in zip(cells, kinds, strict=True):
        row, col = divmod(index, COUNT_GRID_CELLS)
        box = (col * cell + margin, row * cell + margin, (col + 1) * cell - margin, (row + 1) * cell - margin)
        _draw_shape(draw, shape, box, PALETTE[rng.choice(sorted(PALETTE))])
    question = rng.choice(
        [
            f"How many {target}s are there in the image?",
            f"Count the {target}s in the picture. How many are there?",
            f"The image shows several shapes. How many of them are {target}s?",
            f"Look carefully at the figure: what is the number of {target}s it contains?",
        ]
    )
    distractor_note = (
        " There are no other shapes."
        if distractors == 0
        else f" The other {_plural(distractors, 'shape')} are not {target}s, so I do not count them."
    )
    reasoning = (
        f"I go through the picture cell by cell and find {_plural(targets + distractors, 'shape')} in total. "
        f"{_plural(targets, target).capitalize()} {'is' if targets == 1 else 'are'} drawn.{distractor_note} "
        f"So the number of {target}s is {targets}."
    )
    return Problem(image, question, str(targets), reasoning)


def bar_chart(rng: random.Random, side: int) -> Problem:
    """A unit-grid bar chart; questions on the tallest bar, the sum, the range or a threshold."""
    count = rng.randint(BAR_MIN_BARS, BAR_MAX_BARS)
    heights = [rng.randint(1, BAR_MAX_HEIGHT) for _ in range(count)]
    colors = rng.sample(sorted(PALETTE), count)
    image = Image.new("RGB", (side, side), BACKGROUND)
    draw = ImageDraw.Draw(image)
    left, bottom, top = side * 0.1, side * 0.92, side * 0.08
    unit = (bottom - top) / BAR_MAX_HEIGHT
    for level in range(1, BAR_MAX_HEIGHT + 1):
        draw.line([(left, bottom - level * unit), (side * 0.95, bottom - level * unit)], fill=GRID)
    slot = (side * 0.95 - left) / count
    for position, (height, color) in enumerate(zip(heights, colors, strict=True)):
        x0 = left + position * slot + slot * 0.2
        draw.rectangle([x0, bottom - height * unit, x0 + slot * 0.6, bottom], fill=PALETTE[color], outline=INK)
    draw.line([(left, top), (left, bottom), (side * 0.95, bottom)], fill=INK)
    readout = ", ".join(str(h) for h in heights)
    reading = (
        f"Each grid line is one unit. Reading the {count} bars from left to right against the grid, "
        f"their heights are {readout}."
    )
    variant = rng.randrange(4)
    if variant == 0:
        question = "Each grid line in the bar chart marks one unit. What is the height of the tallest bar?"
        answer = max(heights)
        reasoning = f"{reading} The largest of these is {answer}."
    elif variant == 1:
        question = (
            "In the bar chart, every horizontal grid line is one unit apart. "
            "What is the sum of the heights of all the bars?"
        )
        answer = sum(heights)
        reasoning = f"{reading} Adding them: {' + '.join(str(h) for h in heights)} = {answer}."
    elif variant == 2:
        question = "Using the unit grid of the chart, how much taller is the tallest bar than the shortest bar?"
        answer = max(heights) - min(heights)
        reasoning = (
            f"{reading} The tallest is {max(heights)} and the shortest is {min(heights)}, "
            f"so the difference is {answer}."
        )
    else:
        level = rng.randint(1, BAR_MAX_HEIGHT - 1)
        question = f"The grid lines are one unit apart. How many bars are taller than {level} units?"
        answer = sum(h > level for h in heights)
        reasoning = f"{reading} The bars higher than {level} are {answer} in number."
    return Problem(image, question, str(answer), reasoning)


def _triangle_vertices(angle_left: float, angle_right: float, side: int) -> list[tuple[float, float]]:
    """Vertices of a triangle with the given base angles (degrees), fitted into a ``side`` square."""
    a, b = math.radians(angle_left), math.radians(angle_right)
    # Unit base from (0,0) to (1,0); by the law of sines the left side has length sin(b) / sin(a + b).
    left_side = math.sin(b) / math.sin(a + b)
    apex_x, apex_y = left_side * math.cos(a), left_side * math.sin(a)
    points = [(0.0, 0.0), (1.0, 0.0), (apex_x, apex_y)]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    span = max(max(xs) - min(xs), max(ys) - min(ys))
    margin = side * 0.1
    scale = (side - 2 * margin) / span
    return [(margin + (x - min(xs)) * scale, side - margin - (y - min(ys)) * scale) for x, y in points]


def triangle_angle(rng: random.Random, side: int) -> Problem:
    """A triangle drawn with its true angles; find the missing one (general, isosceles or right)."""
    variant = rng.randrange(3)
    if variant == 0:
        first = rng.randrange(ANGLE_MIN + 10, 101, ANGLE_STEP)
        second = rng.randrange(ANGLE_MIN + 10, 180 - first - ANGLE_MIN + 1, ANGLE_STEP)
        answer = 180 - first - second
        angles = (first, second)
        question = rng.choice(
            [
                f"Two angles of the triangle in the image measure {first}° and {second}°. "
                "What is the third angle, in degrees?",
                f"In the triangle shown, one angle is {first} degrees and another is {second} degrees. "
                "Find the remaining angle in degrees.",
            ]
        )
        reasoning = (
            f"The angles of a triangle add up to 180°. The third angle is 180 - {first} - {second} = {answer} degrees."
        )
    elif variant == 1:
        apex = rng.randrange(ANGLE_MIN + 10, 141, 2 * ANGLE_STEP)
        answer = (180 - apex) // 2
        angles = (answer, answer)
        question = (
            f"The triangle in the image is isosceles and its apex angle measures {apex}°. "
            "What is the measure of each base angle, in degrees?"
        )
        reasoning = (
            f"The two base angles of an isosceles triangle are equal and all three angles add up to 180°. "
            f"So each base angle is (180 - {apex}) / 2 = {answer} degrees."
        )
    else:
        acute = rng.randrange(ANGLE_MIN + 5, 71, ANGLE_STEP)
        answer = 90 - acute
        angles = (90, acute)
        question = (
            f"The triangle shown has a right angle and another angle of {acute}°. How many degrees is the third angle?"
        )
        reasoning = (
            f"With a right angle of 90°, the two other angles add up to 90°. "
            f"So the third angle is 90 - {acute} = {answer} degrees."
        )
    image = Image.new("RGB", (side, side), BACKGROUND)
    draw = ImageDraw.Draw(image)
    draw.polygon(_triangle_vertices(*angles, side), outline=INK, fill=PALETTE[rng.choice(sorted(PALETTE))])
    return Problem(image, question, str(answer), reasoning)


def clock_time(rng: random.Random, side: int) -> Problem:
    """An analog clock: read the full time, the minutes past the hour, or the hour."""
    hour = rng.randint(1, 12)
    minute = rng.randrange(0, 60, CLOCK_MINUTE_STEP)
    image = Image.new("RGB", (side, side), BACKGROUND)
    draw = ImageDraw.Draw(image)
    center, radius = side / 2, side * 0.42
    draw.ellipse([center - radius, center - radius, center + radius, center + radius], outline=INK, width=2)
    for tick in range(12):
        angle = math.radians(tick * 30)
        inner = radius * (0.75 if tick % 3 == 0 else 0.85)
        draw.line(
            [
                (center + inner * math.sin(angle), center - inner * math.cos(angle)),
                (center + radius * math.sin(angle), center - radius * math.cos(angle)),
            ],
            fill=INK,
            width=2 if tick % 3 == 0 else 1,
        )

    def hand(turns: float, length: float, width: int, color) -> None:
        angle = 2 * math.pi * turns
        draw.line(
            [(center, center), (center + length * math.sin(angle), center - length * math.cos(angle))],
            fill=color,
            width=width,
        )

    hand(((hour % 12) + minute / 60) / 12, radius * 0.5, 3, INK)
    hand(minute / 60, radius * 0.85, 2, PALETTE["red"])
    reading = (
        f"The short hour hand is {'just past' if minute else 'on'} the {hour}, and the long minute hand points at "
        f"the {minute // CLOCK_MINUTE_STEP or 12} mark, which means {minute} minutes."
    )
    variant = rng.randrange(3)
    if variant == 0:
        question = "What time does the clock in the image show? Give the time in the form H:MM."
        answer = f"{hour}:{minute:02d}"
        reasoning = f"{reading} So the time is {answer}."
    elif variant == 1:
        question = "How many minutes past the hour does the clock show?"
        answer = str(minute)
        reasoning = f"{reading} So it is {minute} minutes past the hour."
    else:
        question = "Which hour (1 to 12) has the hour hand of the clock most recently reached?"
        answer = str(hour)
        reasoning = f"{reading} The hour hand has most recently reached {hour}."
    return Problem(image, question, answer, reasoning)


#: The problem kinds, in the order rows cycle through them.
KINDS = {
    "count_shapes": count_shapes,
    "bar_chart": bar_chart,
    "triangle_angle": triangle_angle,
    "clock_time": clock_time,
}


def expert_solution(problem: Problem) -> str:
    """The expert trajectory e for a problem, in the policy's output format."""
    return f"<think>\n{problem.reasoning}\n</think>\n<answer>{problem.answer}</answer>"


#: How the demo's extra experts word the same reasoning (expert j > 0 uses wording j - 1): each a correct
#: solution with the same answer, so the experts differ in their tokens, not in their outcome.
EXPERT_WORDINGS = (
    "Let me read the picture carefully before answering. {reasoning} So the answer follows.",
    "Step by step: {reasoning} I double-checked this against the image.",
    "{reasoning} Checking once more, nothing in the image contradicts it.",
)


def expert_solutions(problem: Problem, count: int) -> list[str]:
    """``count`` correct expert trajectories for a problem: the plain one, then :data:`EXPERT_WORDINGS` in order."""
    texts = [expert_solution(problem)]
    for wording in EXPERT_WORDINGS[: count - 1]:
        reasoning = wording.format(reasoning=problem.reasoning)
        texts.append(f"<think>\n{reasoning}\n</think>\n<answer>{problem.answer}</answer>")
    return texts


def _val_indices(config: DemoConfig) -> set[int]:
    return set(random.Random(f"calibrl-demo-split:{config.seed}").sample(range(config.rows), config.val_rows))


def _solution_value(problem: Problem, config: DemoConfig) -> str | list[str]:
    """One string (the default, byte-identical to before) or a list of ``experts_per_row`` solutions."""
    if config.experts_per_row == 1:
        return expert_solution(problem)
    return expert_solutions(problem, config.experts_per_row)


def generate_demo_records(config: DemoConfig) -> Iterator[dict[str, Any]]:
    """Yield ``config.rows`` demo records (kinds cycle in :data:`KINDS` order; val rows seeded)."""
    config.validate()
    val = _val_indices(config)
    kinds = list(KINDS.items())
    sides = config.sides()
    seen: set[tuple[str, bytes]] = set()
    for index in range(config.rows):
        rng = random.Random(f"calibrl-demo:{config.seed}:{index}")
        kind, make = kinds[index % len(kinds)]
        for _ in range(MAX_DRAWS_PER_ROW):
            problem = make(rng, rng.choice(sides))
            image = _png(problem.image)
            if (problem.question, image) not in seen:
                break
        else:
            raise ValueError(
                f"the demo ran out of distinct {kind} problems at row {index}; "
                "lower --demo-rows or widen the image sides"
            )
        seen.add((problem.question, image))
        has_expert = rng.random() >= config.missing_expert_ratio
        yield {
            "id": f"demo-{index:05d}",
            "data_source": DATA_SOURCE_PREFIX + kind,
            "kind": kind,
            "question": problem.question,
            "answer": problem.answer,
            "images": [image],
            "solution": _solution_value(problem, config) if has_expert else None,
            "split": VAL_SPLIT if index in val else TRAIN_SPLIT,
        }
