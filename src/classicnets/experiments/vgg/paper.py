"""The VGG paper as data: its scales, the grid of nets we train, the test protocols, Tables 3-5 and the
claims compared. Also the experiment's training recipes. Nothing here runs anything."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PAPER_REF = ("Simonyan & Zisserman, Very Deep Convolutional Networks for Large-Scale Image Recognition, "
             "arXiv:1409.1556v6 (ICLR 2015)")

# --- scale: the paper's pixel sizes, scaled by our crop size / 224 -------------------------------------

PAPER_CROP = 224  # training crop (Sect. 2.1)
PAPER_FIXED_S = 256  # fixed training scale (Sect. 3.1; 384 was the other)
PAPER_JITTER = (256, 512)  # S_min, S_max of scale jittering (Sect. 3.1)
PAPER_Q_STEP = 32  # multi-scale test Q = {S-32, S, S+32} for fixed S (Sect. 4.2)


@dataclass(frozen=True)
class Geometry:
    """Train and test scales (short sides, pixels) for one crop size."""

    size: int  # the training crop = the net's input size
    fixed_s: int
    jitter: tuple[int, int]
    q_step: int

    @classmethod
    def for_size(cls, size: int) -> Geometry:
        def scaled(pixels: int) -> int:
            return max(size, round(pixels * size / PAPER_CROP))

        return cls(size, scaled(PAPER_FIXED_S), (scaled(PAPER_JITTER[0]), scaled(PAPER_JITTER[1])),
                   max(1, round(PAPER_Q_STEP * size / PAPER_CROP)))

    def train_scale(self, kind: str) -> tuple[int, int]:
        """(S_min, S_max) for the trainer's scale_jitter: a fixed S is the range [S, S]."""
        return (self.fixed_s, self.fixed_s) if kind == "fixed" else self.jitter

    def single_q(self, kind: str) -> int:
        """Sect. 4.1: Q = S for fixed S, Q = (S_min + S_max) / 2 for jittered S (the trainer's test scale)."""
        lo, hi = self.train_scale(kind)
        return (lo + hi) // 2

    def multi_q(self, kind: str) -> tuple[int, ...]:
        """Sect. 4.2: {S-32, S, S+32} for fixed S; {S_min, (S_min + S_max) / 2, S_max} for jittered S."""
        if kind == "fixed":
            s = self.fixed_s
            return tuple(sorted({max(self.size, s - self.q_step), s, s + self.q_step}))
        lo, hi = self.jitter
        return (lo, (lo + hi) // 2, hi)


# --- the grid ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GridRow:
    """One row of the experiment: a net of Table 1 and how it is trained."""

    key: str  # the paper's name for it
    model: str  # classicnets model name (without _bn)
    scale: str  # "fixed" S or "jitter" S in [S_min, S_max]
    about: str
    warm_from: str | None = None  # key of the row whose trained net (same seed) initialises this one


GRID: tuple[GridRow, ...] = (
    GridRow("A", "vgg11", "fixed", "11 weight layers"),
    GridRow("A-LRN", "vgg11_lrn", "fixed", "A with local response normalisation after conv 1"),
    GridRow("B", "vgg13", "fixed", "13 weight layers"),
    GridRow("C", "vgg16_c", "fixed", "16 weight layers, three of them 1x1 convs"),
    GridRow("D", "vgg16", "fixed", "16 weight layers, all 3x3 convs"),
    GridRow("E", "vgg19", "fixed", "19 weight layers"),
    GridRow("D-jitter", "vgg16", "jitter", "D trained with scale jittering"),
    GridRow("D-warm", "vgg16", "fixed", "D whose first 4 convs and 3 FC layers start from the trained A",
            warm_from="A"),
)
GRID_ROWS = {c.key: c for c in GRID}

# Training recipes: a trainer recipe (classicnets.training.config.RECIPES) plus overrides. Scales, width,
# epochs, seed and data come from the command.
GRID_RECIPES: dict[str, dict[str, Any]] = {
    # The paper's recipe (Sect. 3.1: SGD momentum 0.9, weight decay 5e-4, dropout 0.5, flips, mean
    # subtraction, no batch norm) with what makes plain VGG learn in a few epochs at 1/8 of the width:
    # He init for every conv and FC layer (Glorot init, the paper's later note, left E at loss ln 10 for
    # 470 steps here, and torchvision's N(0, 0.01) FC layers shrink the logits of narrow nets), lr 0.02 at
    # batch 64 after a half-epoch linear warm-up, then a cosine decay instead of waiting for plateaus.
    "small": {"recipe": "paper", "init": "he", "batch_size": 64, "lr": 0.02, "warmup_epochs": 0.5,
              "schedule": "cosine", "precision": "fp32"},
    # The paper's recipe as the trainer has it (N(0, 0.01) init, lr 0.01 at batch 256, drops on plateaus):
    # for long runs on a GPU; the deep nets may need their warm start to leave chance.
    "paper": {"recipe": "paper"},
}
DEFAULT_GRID_RECIPE = "small"

# Trainer fields that change how a run is shown or where it runs, not what it computes: they may differ
# between the runs of one grid, and the report leaves them out of the recipe.
PRESENTATION = frozenset({"progress", "tensorboard", "plots", "threads", "device", "data_dir",
                          "checkpoint_every", "checkpoint_seconds"})


# --- the test protocols -----------------------------------------------------------------------------

@dataclass(frozen=True)
class TestProtocol:
    """A test protocol of Sect. 3.2 / 4.1-4.3, as arguments of classicnets.evaluation.evaluate."""

    __test__ = False  # not a pytest test class, whatever its name

    title: str
    multi_scale: bool
    crops: str | None = "center"
    dense: bool = False
    combine: tuple[str, ...] = ()  # average the posteriors of these protocols instead of evaluating


TEST_PROTOCOLS: dict[str, TestProtocol] = {
    "single": TestProtocol("single-scale", multi_scale=False),
    "multi-scale": TestProtocol("multi-scale", multi_scale=True),
    "multi-crop": TestProtocol("multi-crop", multi_scale=True, crops="multi"),
    "dense": TestProtocol("dense", multi_scale=True, crops=None, dense=True),
    # evaluate(crops="multi", dense=True) averages the two kinds' posteriors with equal weight; averaging
    # the two results above gives the same numbers without running every view again.
    "multi-crop+dense": TestProtocol("multi-crop + dense", multi_scale=True, combine=("multi-crop", "dense")),
}

DEFAULT_CROP_GRID = 3  # multi-crop: crops per side of the grid at each test scale (the paper: 5)


# --- the paper's numbers ---------------------------------------------------------------------------

@dataclass(frozen=True)
class PaperRow:
    table: str
    row: str  # as the paper labels it: config, train S, test Q / method
    top1: float  # ILSVRC-2012 validation error, %
    top5: float
    ours: tuple[tuple[str, str], ...] = ()  # (grid row, protocol) cells it stands beside


# arXiv:1409.1556v6. Table 3: one test scale; Table 4: three test scales; Table 5: multi-crop vs dense,
# S in [256;512], Q = {256, 384, 512}. Tables 3-4 use dense evaluation: Table 5's dense row for D
# equals Table 4's D [256;512] row. The paper's B-E were warm-started from A (Sect. 3.1).
PAPER: tuple[PaperRow, ...] = (
    PaperRow("Table 3", "A, S=256, Q=256", 29.6, 10.4, (("A", "single"),)),
    PaperRow("Table 3", "A-LRN, S=256, Q=256", 29.7, 10.5, (("A-LRN", "single"),)),
    PaperRow("Table 3", "B, S=256, Q=256", 28.7, 9.9, (("B", "single"),)),
    PaperRow("Table 3", "C, S=256, Q=256", 28.1, 9.4, (("C", "single"),)),
    PaperRow("Table 3", "C, S=384, Q=384", 28.1, 9.3),
    PaperRow("Table 3", "C, S=[256;512], Q=384", 27.3, 8.8),
    PaperRow("Table 3", "D, S=256, Q=256", 27.0, 8.8, (("D", "single"), ("D-warm", "single"))),
    PaperRow("Table 3", "D, S=384, Q=384", 26.8, 8.7),
    PaperRow("Table 3", "D, S=[256;512], Q=384", 25.6, 8.1, (("D-jitter", "single"),)),
    PaperRow("Table 3", "E, S=256, Q=256", 27.3, 9.0, (("E", "single"),)),
    PaperRow("Table 3", "E, S=384, Q=384", 26.9, 8.7),
    PaperRow("Table 3", "E, S=[256;512], Q=384", 25.5, 8.0),
    PaperRow("Table 4", "B, S=256, Q={224,256,288}", 28.2, 9.6, (("B", "multi-scale"),)),
    PaperRow("Table 4", "C, S=256, Q={224,256,288}", 27.7, 9.2, (("C", "multi-scale"),)),
    PaperRow("Table 4", "C, S=384, Q={352,384,416}", 27.8, 9.2),
    PaperRow("Table 4", "C, S=[256;512], Q={256,384,512}", 26.3, 8.2),
    PaperRow("Table 4", "D, S=256, Q={224,256,288}", 26.6, 8.6,
             (("D", "multi-scale"), ("D-warm", "multi-scale"))),
    PaperRow("Table 4", "D, S=384, Q={352,384,416}", 26.5, 8.6),
    PaperRow("Table 4", "D, S=[256;512], Q={256,384,512}", 24.8, 7.5, (("D-jitter", "multi-scale"),)),
    PaperRow("Table 4", "E, S=256, Q={224,256,288}", 26.9, 8.7, (("E", "multi-scale"),)),
    PaperRow("Table 4", "E, S=384, Q={352,384,416}", 26.7, 8.6),
    PaperRow("Table 4", "E, S=[256;512], Q={256,384,512}", 24.8, 7.5),
    PaperRow("Table 5", "D, dense", 24.8, 7.5, (("D-jitter", "dense"),)),
    PaperRow("Table 5", "D, multi-crop", 24.6, 7.5, (("D-jitter", "multi-crop"),)),
    PaperRow("Table 5", "D, multi-crop & dense", 24.4, 7.2, (("D-jitter", "multi-crop+dense"),)),
    PaperRow("Table 5", "E, dense", 24.8, 7.5),
    PaperRow("Table 5", "E, multi-crop", 24.6, 7.4),
    PaperRow("Table 5", "E, multi-crop & dense", 24.4, 7.1),
)
PAPER_BESIDE = {cell: row for row in PAPER for cell in row.ours}


# --- the claims ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Claim:
    key: str
    text: str
    paper: str  # the paper's evidence
    kind: str  # lower | not-lower | depth | protocol-lower | combined | warm (see stats.CHECKS)
    a: str  # the grid row (or protocol) that should have the lower error
    b: tuple[str, ...]  # what it is compared with
    protocol: str = "single"


CLAIMS: tuple[Claim, ...] = (
    Claim("depth", "depth lowers error (A -> B -> D -> E: 11, 13, 16, 19 layers)",
          "Table 3, S=Q=256: top-1 29.6 (A), 28.7 (B), 27.0 (D), 27.3 (E); saturates at 19 layers",
          "depth", "E", ("A", "B", "D")),
    Claim("lrn", "LRN does not help (A-LRN is no better than A)",
          "Table 3: A 29.6 / 10.4, A-LRN 29.7 / 10.5", "not-lower", "A-LRN", ("A",)),
    Claim("1x1", "1x1 convs are worse than 3x3 at the same depth (C worse than D)",
          "Table 3, S=Q=256: C 28.1 / 9.4, D 27.0 / 8.8", "lower", "D", ("C",)),
    Claim("jitter", "scale jittering in training helps (D-jitter better than D)",
          "Table 3: D S=256 27.0 / 8.8, D S=[256;512] 25.6 / 8.1", "lower", "D-jitter", ("D",)),
    Claim("multi-scale", "multi-scale testing helps (three test scales better than one)",
          "Table 4 vs 3: D 27.0 -> 26.6, D-jitter 25.6 -> 24.8",
          "protocol-lower", "multi-scale", ("single",)),
    Claim("dense+crop", "dense + multi-crop helps (better than either alone)",
          "Table 5: dense 24.8, multi-crop 24.6, both 24.4 (D, S=[256;512])",
          "combined", "multi-crop+dense", ("multi-crop", "dense")),
    Claim("warm", "warm start from A helps D (at least as good in the end, and better or faster)",
          "Sect. 3.1: B-E started from A's first 4 convs and 3 FC layers; no table compares it",
          "warm", "D-warm", ("D",)),
)
