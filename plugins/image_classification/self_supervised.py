"""Self-supervised pretraining on unlabelled images: ``rotation`` and ``simclr``.

Both are *pretext* strategies for a stage whose only job is to train a backbone that a
later stage fine-tunes (``init_from``). They never read the batch's labels, so the stage's
data may be any image dataset, its labels ignored. Each adds a pretext head of its own
(``owner="strategy"``: saved in ``own.safetensors`` beside ``model.safetensors``, and
re-added when the model is loaded) and trains the backbone and that head alone:

* ``rotation`` (Gidaris, Singh & Komodakis, ICLR 2018, "Unsupervised representation
  learning by predicting image rotations"): every image is rotated by 0, 90, 180 and 270
  degrees and a linear ``rotation_head`` on the pooled features predicts which. It only
  teaches anything on images with a canonical orientation (digits, photos): on images whose
  content is equally likely at any angle the pretext cannot be solved and stays at chance
  (``synthetic-shapes`` draws every shape, stripe and gradient at a uniform random angle,
  see the README's "Self-supervised pretraining").
* ``simclr`` (Chen, Kornblith, Norouzi & Hinton, ICML 2020, "A simple framework for
  contrastive learning of visual representations"): two random views of every image go
  through the backbone and a ``projection_head`` (Linear - ReLU - Linear); :func:`nt_xent`
  pulls each image's two views together and pushes them from the batch's other views.

What trains: every block of every pretrained part, at ``train.lr`` (as ``scratch``), from
whatever start the stage gives it: random with ``model.weights: null``, the named weights,
or an earlier stage's backbone with ``init_from``. ``strategy.parts.<part>`` overrides
(``lr_mult``, ``unfreeze``, ``init``) apply as for every strategy; the fine-tune keys
(``backbone_lr_mult``, ``unfreeze``) do not: a pretext stage trains the backbone at full rate,
and the 0.1 default of ``backbone_lr_mult`` would silently slow it tenfold.

The stage's classifier head (``head``) is built as in every image stage and never trained
by these strategies: the stage's val/test accuracy is that of an untrained head (about
chance) and says nothing about the backbone. So give a pretext stage ``train: {keep: last}``:
with the default ``keep: best`` the "best" epoch would be chosen by that chance accuracy.
What the pretext learnt shows in the next stage, which ``init_from`` takes only the
``backbone.*`` tensors from (the image task's one pretrained part); the pretext heads are
strategy parts and are not carried over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from tlengine.errors import TLEngineError
from tlengine.model import TransferModel
from tlengine.strategies import StepContext, Strategy
from tlengine.strategies.domain_losses import pooled_features
from torch import nn
from torchvision.transforms import v2

if TYPE_CHECKING:
    from tlengine.task import TaskData

__all__ = [
    "PROJECTION_HEAD",
    "ROTATION_HEAD",
    "SELF_SUPERVISED_STRATEGIES",
    "Pretext",
    "Rotation",
    "RotationArgs",
    "SimCLR",
    "SimCLRArgs",
    "nt_xent",
    "projection_head",
    "rotate_batch",
    "simclr_augmentation",
    "two_views",
]

ROTATION_HEAD = "rotation_head"
PROJECTION_HEAD = "projection_head"


# ---------------------------------------------------------------------- losses and ops
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's normalised-temperature cross-entropy of two views' embeddings.

    ``z1[i]`` and ``z2[i]`` ([N,D] each) embed two views of sample i. All 2N rows are
    L2-normalised; for each row, its cosine similarities to the 2N-1 *other* rows, divided by
    ``temperature``, are the logits of a 2N-1-way classification whose right answer is the
    other view of the same sample. The loss is that cross-entropy averaged over all 2N rows
    (both directions), computed in float32::

        loss = mean_k -log( exp(s(k, pos(k))/t) / sum_{j != k} exp(s(k, j)/t) )

    A lower value means each view is closer to its partner than to the other samples' views.
    With N=1 there are no negatives and the loss is 0.
    """
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(f"nt_xent needs two [N,D] tensors of one shape, got {list(z1.shape)} and {list(z2.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = z @ z.T / temperature
    self_pairs = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_pairs, float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, partner)


def rotate_batch(images: torch.Tensor, *, all_rotations: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotated copies of ``images`` [N,C,H,W] (H == W) and their labels k (rotation by k * 90
    degrees counter-clockwise, ``torch.rot90(x, k, dims=(2, 3))``).

    all_rotations: every image four times, rotation k for rows ``k*N .. k*N+N-1`` ([4N,C,H,W],
        labels ``[0]*N + [1]*N + [2]*N + [3]*N``); otherwise one rotation per image drawn from
        torch's global RNG ([N,C,H,W], row i is ``images[i]`` rotated by ``labels[i]``).
    """
    if images.dim() != 4 or images.shape[2] != images.shape[3]:
        raise TLEngineError(
            f"strategy 'rotation' rotates square image batches [N,C,S,S]; got inputs of shape {list(images.shape)}"
        )
    n = images.shape[0]
    if all_rotations:
        rotated = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(4)])
        labels = torch.arange(4).repeat_interleave(n)
        return rotated, labels.to(images.device)
    labels = torch.randint(0, 4, (n,))
    rotated = images.clone()
    for k in range(1, 4):
        rows = (labels == k).nonzero().flatten().to(images.device)
        if len(rows):
            rotated[rows] = torch.rot90(images[rows], k, dims=(2, 3))
    return rotated, labels.to(images.device)


def simclr_augmentation(
    size: tuple[int, int],
    *,
    min_scale: float = 0.2,
    color_strength: float = 0.5,
    grayscale: float = 0.2,
    blur: bool = False,
) -> v2.Compose:
    """SimCLR's view of one image: a float tensor [3,H,W] in 0..1 -> one of the same shape.

    Random resized crop (scale ``min_scale``..1, back to ``size``), horizontal flip, colour
    jitter of strength s = ``color_strength`` (brightness, contrast and saturation 0.8 s, hue
    0.2 s: 0.4/0.4/0.4/0.1 at the default 0.5, the paper's CIFAR setting; 1.0 is its ImageNet
    one) with p 0.8, grayscale with p ``grayscale`` and, with ``blur``, a Gaussian blur (kernel
    ~10% of the side, sigma 0.1-2) with p 0.5. The random draws use torch's global RNG (the
    training loop seeds it each epoch).
    """
    s = color_strength
    jitter = v2.ColorJitter(brightness=0.8 * s, contrast=0.8 * s, saturation=0.8 * s, hue=min(0.5, 0.2 * s))
    steps: list[Any] = [
        v2.RandomResizedCrop(size, scale=(min_scale, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([jitter], p=0.8),
        v2.RandomGrayscale(p=grayscale),
    ]
    if blur:
        kernel = max(3, (min(size) // 10) | 1)  # odd, ~10% of the side as in the paper
        steps.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5))
    return v2.Compose(steps)


def two_views(
    images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, augment: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independently augmented views of each image of a *normalised* batch [N,3,H,W].

    Colour jitter and grayscale are defined on pixel values in 0..1 (brightness scales them,
    saturation and hue go through the colour wheel, everything is clamped to 0..1), not on
    values already shifted by a mean and divided by a std; so each image is first taken back
    to pixels (``x * std + mean``, the dataset's own normalisation), augmented sample by sample
    (every sample draws its own crop, flip and jitter), and normalised again. Both views have
    the input's shape, dtype and device.
    """
    if images.dim() != 4:
        raise TLEngineError(
            f"strategy 'simclr' needs image batches [N,C,H,W]; got inputs of shape {list(images.shape)}"
        )
    mean = mean.to(images.device, torch.float32).view(1, -1, 1, 1)
    std = std.to(images.device, torch.float32).view(1, -1, 1, 1)
    pixels = (images.float() * std + mean).clamp(0.0, 1.0)
    views = []
    for _ in range(2):
        view = torch.stack([augment(x) for x in pixels])
        views.append(((view - mean) / std).to(images.dtype))
    return views[0], views[1]


def projection_head(dim: int, hidden: int, out: int) -> nn.Sequential:
    """SimCLR's projection g(h): features [N,dim] -> Linear - ReLU - Linear -> [N,out]."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, out))


# ---------------------------------------------------------------------- strategies
class Pretext(Strategy):
    """A self-supervised stage: the backbone and a pretext head train; labels are never read.

    Subclasses add the head in :meth:`prepare` and compute its loss in :meth:`training_step`.

    Neither :class:`~tlengine.strategies.FineTune` (whose ``backbone_lr_mult`` defaults to
    0.1: a backbone learning from random init at a tenth of the rate) nor
    :class:`~tlengine.strategies.Scratch` (which always starts random, ignoring ``init_from``
    and ``model.weights``): every block trains at ``train.lr`` from the stage's own start.
    """

    #: start from whatever the stage gives (weights, init_from), random with weights: null
    uses_pretrained: ClassVar[bool] = True
    #: the task's own head sits in the model but no pretext loss reaches it
    ddp_find_unused_parameters: ClassVar[bool] = True

    def trainable_blocks(self, num_blocks: int, epoch: int) -> int:
        return num_blocks

    def features(self, step: StepContext, inputs: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features [N,D] of ``inputs`` (the whole model runs: a pretext
        strategy never freezes the backbone, so it never trains from the feature cache)."""
        return pooled_features(step.full_model.forward_features(inputs))


class RotationArgs(BaseModel):
    """``strategy.args`` of ``rotation``."""

    model_config = ConfigDict(extra="forbid")

    all_rotations: bool = Field(
        True,
        description="train on all four rotations of every image (4x the compute per batch, as Gidaris et al. "
        "found best); false: one random rotation per image",
    )


class Rotation(Pretext):
    """Self-supervised: predict which of 4 rotations (0/90/180/270 degrees) an image shows."""

    name = "rotation"
    Args = RotationArgs

    def prepare(self, model: TransferModel, data: "TaskData | None") -> None:
        model.add_part(ROTATION_HEAD, nn.Linear(self.feature_dim(model, "its pretext head"), 4), owner="strategy")

    def training_step(self, step: StepContext) -> dict[str, torch.Tensor]:
        # All four rotations by default: Gidaris et al. (sec. 3.2) found training on the four
        # rotated copies of each image together better than one random rotation per image,
        # and every batch is then balanced over the four labels. Labels: step.targets is
        # never touched, the rotation is the label.
        rotated, labels = rotate_batch(step.inputs, all_rotations=self.args.all_rotations)
        logits = step.full_model.run_part(ROTATION_HEAD, self.features(step, rotated))
        return {"rotation": F.cross_entropy(logits.float(), labels)}

    def describe(self, model: TransferModel, epoch: int) -> str:
        how = "all 4 rotations" if self.args.all_rotations else "1 random rotation"
        return f"{super().describe(model, epoch)}, rotation pretext ({how} per image; classifier head untrained)"


class SimCLRArgs(BaseModel):
    """``strategy.args`` of ``simclr``."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.5, gt=0.0, description="NT-Xent temperature")
    hidden: int = Field(256, ge=1, description="width of the projection head's hidden layer")
    out: int = Field(64, ge=1, description="size of the projection the loss compares")
    min_scale: float = Field(
        0.2, gt=0.0, le=1.0, description="smallest area fraction of the random resized crop of each view"
    )
    color_strength: float = Field(
        0.5,
        gt=0.0,
        le=2.5,
        description="colour jitter strength s: brightness, contrast, saturation 0.8 s, hue 0.2 s (0.5: the paper's "
        "CIFAR 0.4/0.4/0.4/0.1; 1.0: its ImageNet setting)",
    )
    grayscale: float = Field(0.2, ge=0.0, le=1.0, description="probability that a view is turned grayscale")
    blur: bool = Field(
        False,
        description="Gaussian blur with p 0.5 in each view (the paper's ImageNet recipe; its CIFAR recipe, for "
        "small images, leaves it out)",
    )


class SimCLR(Pretext):
    """Self-supervised: contrast two augmented views of each image (NT-Xent, projection head)."""

    name = "simclr"
    Args = SimCLRArgs

    def __init__(self, config: Any):
        super().__init__(config)
        self._mean: torch.Tensor | None = None
        self._std: torch.Tensor | None = None
        self._augment: dict[tuple[int, int], v2.Compose] = {}

    def prepare(self, model: TransferModel, data: "TaskData | None") -> None:
        # The mean/std that normalised the batches: the data's own preprocessing (what
        # build_data used), else the model's (a model rebuilt for predict has no data).
        pp = (data.info.get("preprocessing") if data is not None else None) or model.preprocessing or {}
        if "mean" in pp and "std" in pp:
            self._mean = torch.tensor([float(m) for m in pp["mean"]])
            self._std = torch.tensor([float(s) for s in pp["std"]])
        a = self.args
        model.add_part(
            PROJECTION_HEAD,
            projection_head(self.feature_dim(model, "its pretext head"), a.hidden, a.out),
            owner="strategy",
        )

    def views(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two augmented views of a normalised batch [N,3,H,W] (see :func:`two_views`)."""
        if self._mean is None or self._std is None:
            raise TLEngineError(
                "strategy 'simclr' augments images in pixel space and needs the inputs' normalisation "
                "(preprocessing mean and std), which this stage's data does not give"
            )
        size = (int(images.shape[-2]), int(images.shape[-1]))
        if size not in self._augment:
            a = self.args
            self._augment[size] = simclr_augmentation(
                size, min_scale=a.min_scale, color_strength=a.color_strength, grayscale=a.grayscale, blur=a.blur
            )
        with torch.autocast(images.device.type, enabled=False):  # pixels stay float32
            return two_views(images, self._mean, self._std, self._augment[size])

    def training_step(self, step: StepContext) -> dict[str, torch.Tensor]:
        # step.targets is never touched: the pairs of views are the only supervision.
        v1, v2_ = self.views(step.inputs)
        n = v1.shape[0]
        features = self.features(step, torch.cat([v1, v2_]))  # one pass: batch-norm sees both views
        z = step.full_model.run_part(PROJECTION_HEAD, features)
        return {"nt_xent": nt_xent(z[:n], z[n:], self.args.temperature)}

    def describe(self, model: TransferModel, epoch: int) -> str:
        return (
            f"{super().describe(model, epoch)}, SimCLR pretext (temperature {self.args.temperature:g}; "
            "classifier head untrained)"
        )


#: what the image-classification plugin registers
SELF_SUPERVISED_STRATEGIES: dict[str, type[Strategy]] = {"rotation": Rotation, "simclr": SimCLR}
