"""The long-range study's answer in words, over seeds, claiming no more than the runs show.

The synthetic task (:func:`aalib.data.long_range`: "are the two marks the same colour?", the marks
farther apart than the Simple-CNN's receptive field) has three landmarks: chance (50 %, two
balanced classes), the best any additive (local) rule can reach (:func:`aalib.data.additive_ceiling`,
2/3 with 4 colours) and "solved" (:data:`SOLVED_TOP1`). Each finished run is put in one of four
:data:`OUTCOMES` by its test top-1; a model's verdict counts how many of its seeds solved the
task, with the exact binomial 95 % interval for that rate (:func:`aalib.stats.binomial_interval`),
and says where the other seeds stopped. Unfinished runs are named and never counted.

On an image-classification dataset the verdict tests the reproduced study's two conclusions
(:data:`STUDY_CONCLUSIONS`): that AA-conv beats the convolution it replaces, and that the linear
approximation loses accuracy against softmax attention (with Shen et al.'s layer and with the
study's own swapped-axes layer). Each :class:`Comparison` pairs the two models' runs by seed
(same seed, same data order and initialisation stream) and states the mean per-seed difference
of test top-1 with its 95 % Student's t interval (:func:`aalib.stats.mean_interval`): a conclusion
is "supported" only when the interval lies above zero, "contradicted" only when it lies below,
and otherwise the seeds do not tell the two models apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from .data import additive_ceiling
from .stats import Spread, binomial_interval, mean_interval, spread

__all__ = [
    "CHANCE_SIGMAS",
    "Comparison",
    "NO_ATTENTION",
    "STUDY_CONCLUSIONS",
    "OUTCOMES",
    "SOLVED_TOP1",
    "Landmarks",
    "ModelVerdict",
    "comparisons",
    "long_range_verdicts",
]

NO_ATTENTION = "none"  # how a run table (aalib.report.collect) writes the attention of a plain convolution
SOLVED_TOP1 = 90.0  # test top-1 (%) at or above which the long-range task counts as solved
CHANCE_SIGMAS = 3.0  # a test top-1 within this many binomial standard deviations of 50 % is "chance"
# One seed's outcome, from best to worst.
OUTCOMES: tuple[str, ...] = ("solved", "partial", "additive", "chance")
_DESCRIBE = {
    "partial": "beyond the {ceiling:.1f} % any additive, local rule reaches, short of the {solved:g} % counted as solved",
    "additive": "above chance but within the {ceiling:.1f} % an additive, local rule reaches",
    "chance": "within {margin:.1f} points of chance, 50 %",
}


@dataclass(frozen=True)
class Landmarks:
    """Chance, the additive ceiling and the solved threshold (test top-1, %) for one test set."""

    ceiling: float  # best additive rule, %
    margin: float  # CHANCE_SIGMAS binomial standard deviations at p = 0.5, %
    solved: float = SOLVED_TOP1

    @classmethod
    def for_task(cls, colours: int, test_images: int) -> Landmarks:
        """The landmarks of a long-range test set with ``colours`` mark colours."""
        margin = CHANCE_SIGMAS * 100 * math.sqrt(0.25 / max(test_images, 1))
        return cls(ceiling=100 * additive_ceiling(colours), margin=margin)


def classify(top1: float, landmarks: Landmarks) -> str:
    """One run's outcome: ``"solved"``, ``"partial"`` (beyond any additive rule), ``"additive"``
    (beyond chance, within an additive rule's reach) or ``"chance"`` (within the margin of 50 %,
    or below it)."""
    if top1 >= landmarks.solved:
        return "solved"
    if top1 <= 50.0 + landmarks.margin:
        return "chance"
    if top1 <= landmarks.ceiling + landmarks.margin:
        return "additive"
    return "partial"


@dataclass(frozen=True)
class ModelVerdict:
    """What one model's seeds show on the long-range task."""

    model: str
    seeds: list[int]  # finished seeds, in order
    top1: list[float]  # their test top-1, same order
    outcomes: list[str]  # their outcomes, same order
    unfinished: list[int]  # seeds without a test result (running, interrupted, failed)
    landmarks: Landmarks

    @property
    def runs(self) -> int:
        return len(self.seeds)

    @property
    def solved(self) -> int:
        return self.outcomes.count("solved")

    @property
    def interval(self) -> tuple[float, float] | None:
        """95 % Clopper-Pearson interval of the rate of solving, in %; None without finished runs."""
        if not self.runs:
            return None
        low, high = binomial_interval(self.solved, self.runs)
        return 100 * low, 100 * high

    @property
    def spread(self) -> Spread:
        return spread(self.top1)

    def solved_text(self) -> str:
        """``"2/3 (95 % CI 9-99 %)"``, or ``"-"`` without finished runs."""
        if not self.runs:
            return "-"
        low, high = self.interval
        return f"{self.solved}/{self.runs} (95 % CI {low:.0f}-{high:.0f} %)"

    def sentence(self) -> str:
        """The verdict in one sentence: how many seeds solved the task (with the interval), their
        test top-1, and where each other seed stopped; unfinished runs named, not counted."""
        if not self.runs:
            return f"{self.model} has no finished run yet ({_count(len(self.unfinished), 'unfinished run')})."
        low, high = self.interval
        seeds = "seed" if self.runs == 1 else "seeds"
        text = f"{self.model} solved the task in {self.solved} of {self.runs} {seeds} (95 % CI {low:.0f}-{high:.0f} %)"
        solved = [t for t, o in zip(self.top1, self.outcomes) if o == "solved"]
        if solved:
            text += f": test top-1 {_values(solved)} %"
        stops = []
        for outcome in OUTCOMES[1:]:
            values = [t for t, o in zip(self.top1, self.outcomes) if o == outcome]
            if values:
                where = _DESCRIBE[outcome].format(ceiling=self.landmarks.ceiling, solved=self.landmarks.solved,
                                                  margin=self.landmarks.margin)
                stops.append(f"{_values(values)} % ({where})")
        if stops:
            others = self.runs - self.solved
            if not self.solved:
                who = "it stopped at" if others == 1 else "they stopped at"
            else:
                who = "the other stopped at" if others == 1 else f"the other {others} stopped at"
            text += f"; {who} " + "; ".join(stops)
        if self.unfinished:
            text += f" ({_count(len(self.unfinished), 'unfinished run')} not counted)"
        return text + "."


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _values(values: list[float]) -> str:
    """``"74.05"``, ``"74.05 and 75.35"``, ``"48.10, 53.20 and 54.90"``; a range from four values on."""
    if len(values) > 3:
        return f"{min(values):.2f}-{max(values):.2f}"
    texts = [f"{v:.2f}" for v in values]
    return texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " and " + texts[-1]


def long_range_verdicts(runs: pd.DataFrame) -> list[ModelVerdict]:
    """One :class:`ModelVerdict` per model of the ``long_range`` rows of a run table
    (:func:`aalib.report.collect`), sorted by model name."""
    verdicts = []
    subset = runs[runs["dataset"] == "long_range"]
    for model, group in subset.groupby("model", sort=True):
        done = group[(group["status"] == "finished") & group["top1"].notna()].sort_values("seed")
        images = int(done["test_images"].max()) if len(done) else 0
        landmarks = Landmarks.for_task(int(group["colours"].iloc[0]), images)
        top1 = [float(t) for t in done["top1"]]
        verdicts.append(ModelVerdict(
            model=str(model),
            seeds=[int(s) for s in done["seed"]],
            top1=top1,
            outcomes=[classify(t, landmarks) for t in top1],
            unfinished=sorted(int(s) for s in group.loc[~group.index.isin(done.index), "seed"]),
            landmarks=landmarks,
        ))
    return verdicts


# The reproduced study's conclusions as (attention kind expected higher, kind expected lower,
# the conclusion in words); None is the plain convolution. Kinds of aalib.attention.ATTENTION_KINDS.
STUDY_CONCLUSIONS: tuple[tuple[str | None, str | None, str], ...] = (
    ("softmax", None, "AA-conv improves on the convolution it replaces"),
    ("softmax", "linear", "the linear approximation loses accuracy against softmax attention"),
    ("softmax", "linear_swapped", "the study's own linear layer (swapped axes) loses accuracy against softmax attention"),
    ("linear", "linear_swapped", "the swapped axes cost accuracy against Shen et al.'s linear attention"),
)


@dataclass(frozen=True)
class Comparison:
    """Two models of one network family on one dataset, their runs paired by seed."""

    dataset: str
    model: str  # expected higher by the conclusion
    baseline: str  # expected lower
    conclusion: str
    seeds: list[int]  # seeds both finished, in order
    differences: list[float]  # model minus baseline, test top-1 points, same order

    @property
    def interval(self) -> tuple[float, float, float]:
        """Mean difference and its 95 % t interval, in points (limits NaN below two seeds)."""
        return mean_interval(self.differences)

    @property
    def outcome(self) -> str:
        """``"supported"`` (interval above 0), ``"contradicted"`` (below 0) or ``"undecided"``."""
        _, low, high = self.interval
        if math.isnan(low):
            return "undecided"
        return "supported" if low > 0 else "contradicted" if high < 0 else "undecided"

    def sentence(self) -> str:
        """The comparison in one sentence: mean difference, interval, per-seed differences, and
        what that says of the conclusion."""
        if not self.seeds:
            return f"{self.model} vs {self.baseline} ({self.dataset}): no seed finished for both, nothing to compare."
        mean, low, high = self.interval
        per_seed = ", ".join(f"{d:+.2f}" for d in self.differences)
        seeds = "seed" if len(self.seeds) == 1 else "seeds"
        text = f"{self.model} minus {self.baseline} ({self.dataset}, {len(self.seeds)} paired {seeds}): {mean:+.2f} points"
        if math.isnan(low):
            return text + f"; one seed gives no interval, so it neither supports nor contradicts that {self.conclusion}."
        text += f" (95 % CI {low:+.2f} to {high:+.2f}; per seed {per_seed})"
        if self.outcome == "supported":
            return text + f": supports the conclusion that {self.conclusion}."
        if self.outcome == "contradicted":
            return text + f": contradicts the conclusion that {self.conclusion} (the difference goes the other way)."
        return text + f": the interval includes 0, so these seeds neither support nor contradict that {self.conclusion}."


def comparisons(runs: pd.DataFrame) -> list[Comparison]:
    """:class:`Comparison` of every :data:`STUDY_CONCLUSIONS` pair present in a run table
    (:func:`aalib.report.collect`) on its image-classification datasets (not ``long_range``),
    within each network family; experiments renamed by a ``label`` (ablations) are left out, and
    runs of one kind and seed (the report merges them under one name) are averaged."""
    found = []
    plain = runs[(runs["dataset"] != "long_range") & ~runs["labelled"].astype(bool)]
    for (dataset, _), family in plain.groupby(["dataset", "network"], sort=True):
        names = family.groupby("attention")["model"].first()
        done = family[(family["status"] == "finished") & family["top1"].notna()]
        top1 = done.groupby(["attention", "seed"])["top1"].mean()  # (kind, seed) -> test top-1
        for higher, lower, conclusion in STUDY_CONCLUSIONS:
            a, b = _kind(higher), _kind(lower)
            if a not in names or b not in names:
                continue
            a_top1 = top1.get(a, pd.Series(dtype=float))
            b_top1 = top1.get(b, pd.Series(dtype=float))
            seeds = sorted(int(seed) for seed in set(a_top1.index) & set(b_top1.index))
            found.append(Comparison(
                dataset=str(dataset),
                model=str(names[a]),
                baseline=str(names[b]),
                conclusion=conclusion,
                seeds=seeds,
                differences=[float(a_top1[seed] - b_top1[seed]) for seed in seeds],
            ))
    return found


def _kind(attention: str | None) -> str:
    """How a run table writes an attention kind (:data:`NO_ATTENTION` for the plain convolution)."""
    return NO_ATTENTION if attention is None else attention
