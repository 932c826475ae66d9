"""Contrastive losses: one masked log-softmax giving SupCon and SimCLR, plus GradMix's mix term.

Every loss runs in fp32, also under autocast: with temperature 0.05 the logits reach 20 and a
bf16/fp16 softmax over them loses the small differences the loss lives on.

``contrastive_loss_per_anchor`` is the general form (anchors against a bank with explicit masks)
so that a distributed caller can pass its local anchors and a globally gathered bank.

These are the maths; contrastive.py wraps them as the training step's objectives (``--method``).
"""

from __future__ import annotations

import torch

from fastgradmix.distributed import collectives as dist

__all__ = [
    "clean_anchor_mix_loss_per_sample",
    "contrastive_loss",
    "contrastive_loss_per_anchor",
    "gradmix_objective",
    "mix_loss_per_sample",
    "simclr_loss",
    "supcon_loss",
]


def _masked_logsumexp(logits: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logsumexp over the True entries of each row, safe for rows with no True entry.

    Returns (log_sum (A,), row_is_empty (A,)). Empty rows get 0 (not -inf) and a zero gradient:
    torch.logsumexp over an all -inf row returns -inf and its backward gives exp(-inf + inf) = NaN.
    """
    masked_logits = logits.masked_fill(~mask, float("-inf"))  # (A, B)
    row_max = masked_logits.amax(dim=1, keepdim=True)  # (A, 1), -inf on empty rows
    # -inf only: a NaN row (features gone NaN in a diverging run) must give a NaN loss, not pass for empty
    row_is_empty = torch.isneginf(row_max.squeeze(1))  # (A,)
    # The shift only needs to be a constant per row; detaching it saves a backward path whose
    # contributions cancel anyway, and zeroing it on empty rows keeps -inf out of the arithmetic.
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max)).detach()
    # where() rather than multiply-by-mask: masked entries become exp(-inf) = 0 exactly, and no
    # exp(large) * 0 = inf * 0 can appear for masked entries above the row maximum.
    shifted = torch.where(mask, logits - row_max, torch.full_like(logits, float("-inf")))  # (A, B)
    sum_exp = shifted.exp().sum(dim=1)  # (A,), >= 1 on non-empty rows (the max term is exp(0))
    sum_exp = torch.where(row_is_empty, torch.ones_like(sum_exp), sum_exp)
    return sum_exp.log() + row_max.squeeze(1), row_is_empty


def contrastive_loss_per_anchor(
    anchors: torch.Tensor,
    bank: torch.Tensor,
    positive_mask: torch.Tensor,
    valid_mask: torch.Tensor,
    temperature: float | torch.Tensor,
    negatives_only: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-anchor contrastive loss of ``anchors`` (A, D) against ``bank`` (B, D).

    ``valid_mask`` (A, B) says which bank entries take part for each anchor at all (False for the
    anchor itself); ``positive_mask`` (A, B) marks its positives, which must also be valid.
    logits = anchors @ bank.T / temperature. For each positive p,
    log_prob(p) = logits[a, p] - logsumexp(logits[a, b] over the denominator set), and
    loss[a] = -mean over positives of log_prob(p). The denominator set is every valid entry (the
    Khosla et al. SupCon form, default) or, with ``negatives_only``, the valid non-positive
    entries (eq. 2 of the GradMix paper).

    Returns ``(loss (A,), has_positive (A,) bool)``; loss is fp32 (float64 for float64 inputs).
    ``has_positive`` marks the anchors that contribute: at least one positive and a non-empty
    denominator (the latter only matters with ``negatives_only``, where an anchor without
    negatives has nothing to contrast against). The other anchors get loss 0 with a zero (finite)
    gradient.
    """
    # at least fp32: half inputs are upcast, float64 stays float64 (gradcheck, reference checks)
    compute_dtype = torch.promote_types(torch.promote_types(anchors.dtype, bank.dtype), torch.float32)
    with torch.autocast(device_type=anchors.device.type, enabled=False):
        anchors = anchors.to(compute_dtype)
        bank = bank.to(compute_dtype)
        positive_mask = positive_mask & valid_mask  # (A, B); a positive outside the valid set is ignored
        logits = anchors @ bank.T / temperature  # (A, B)

        denominator_mask = valid_mask & ~positive_mask if negatives_only else valid_mask  # (A, B)
        log_denominator, denominator_is_empty = _masked_logsumexp(logits, denominator_mask)  # (A,)

        log_prob = logits - log_denominator.unsqueeze(1)  # (A, B)
        positive_count = positive_mask.sum(dim=1)  # (A,)
        positive_log_prob_sum = torch.where(positive_mask, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
        has_positive = (positive_count > 0) & ~denominator_is_empty  # (A,)
        # clamp, not a branch: anchors without positives divide 0 by 1 instead of syncing the host
        loss = -positive_log_prob_sum / positive_count.clamp_min(1).to(log_prob.dtype)  # (A,)
        loss = torch.where(has_positive, loss, torch.zeros_like(loss))
    return loss, has_positive


def contrastive_loss(
    features: torch.Tensor,
    labels: torch.Tensor,
    temperature: float | torch.Tensor = 0.05,
    negatives_only: bool = False,
) -> torch.Tensor:
    """Mean contrastive loss over ``features`` (M, D) whose positives share a label (M,).

    Anchor i's positives are all k != i with labels[k] == labels[i]; every k != i is valid. The
    mean runs over anchors that contribute (see ``contrastive_loss_per_anchor``); 0 when none do.

    Under torch.distributed the bank is every rank's features (gathered with gradient) and labels,
    the anchors stay this rank's; the returned value is scaled so that the ranks' average (what DDP's
    gradient averaging optimises) is exactly the single-process loss of the global batch.
    """
    num_local = features.shape[0]
    bank = dist.gather_with_grad(features)  # (W*M, D), rank order
    bank_labels = dist.gather(labels)  # (W*M,)
    self_index = dist.rank() * num_local + torch.arange(num_local, device=features.device)  # (M,)
    columns = torch.arange(bank.shape[0], device=features.device)
    not_self = columns.unsqueeze(0) != self_index.unsqueeze(1)  # (M, W*M)
    same_label = labels.unsqueeze(1) == bank_labels.unsqueeze(0)  # (M, W*M)
    loss, has_positive = contrastive_loss_per_anchor(
        features, bank, same_label & not_self, not_self, temperature, negatives_only
    )
    # sum / clamped global count keeps the graph (a differentiable 0 when no anchor counts) and the
    # host out; the world-size factor undoes the averaging over ranks
    contributing = dist.all_reduce_sum(has_positive.sum()).clamp_min(1).to(loss.dtype)
    return loss.sum() * dist.world_size() / contributing


def simclr_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float | torch.Tensor = 0.05,
    negatives_only: bool = False,
) -> torch.Tensor:
    """SimCLR (NT-Xent) over two views z1, z2 (N, D): each feature's positive is its other view.

    Image ids are global (offset by the rank), so across ranks only the two views of one image match.
    """
    image_index = dist.rank() * z1.shape[0] + torch.arange(z1.shape[0], device=z1.device)  # (N,)
    return contrastive_loss(
        torch.cat([z1, z2]), torch.cat([image_index, image_index]), temperature, negatives_only
    )


def supcon_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    labels: torch.Tensor,
    temperature: float | torch.Tensor = 0.05,
    negatives_only: bool = False,
) -> torch.Tensor:
    """SupCon over two views z1, z2 (N, D) with class labels (N,): positives share the class."""
    return contrastive_loss(torch.cat([z1, z2]), torch.cat([labels, labels]), temperature, negatives_only)


def mix_loss_per_sample(
    z_mix: torch.Tensor,
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float | torch.Tensor = 0.05,
    negatives_only: bool = False,
) -> torch.Tensor:
    """GradMix's l_mix(i) (N,): anchor z_mix[i], positive z2[i], negatives z1[j] and z2[j], j != i.

    z1[i] takes no part: the mixed view was made from view 1 of image i, so it is neither a fair
    negative nor the positive the paper names. Under torch.distributed j runs over the global batch.
    """
    num_images = z1.shape[0]
    # bank: per rank r, the block [z1_r; z2_r] of 2N rows, ranks in order
    bank = dist.gather_with_grad(torch.cat([z1, z2]))  # (W*2N, D)
    local = torch.arange(num_images, device=z1.device)
    block = dist.rank() * 2 * num_images
    columns = torch.arange(bank.shape[0], device=z1.device)
    positive_mask = columns.unsqueeze(0) == (block + num_images + local).unsqueeze(1)  # (N, W*2N)
    valid_mask = columns.unsqueeze(0) != (block + local).unsqueeze(1)  # (N, W*2N)
    loss, _ = contrastive_loss_per_anchor(z_mix, bank, positive_mask, valid_mask, temperature, negatives_only)
    return loss


def clean_anchor_mix_loss_per_sample(
    z_mix: torch.Tensor,
    z_second: torch.Tensor,
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float | torch.Tensor = 0.05,
) -> torch.Tensor:
    """The published code's l_mix (``--mix-anchors clean``), per image (N,).

    ``z_mix``, ``z_second`` (N, D): the features of one forward of [m; v2] (the mixed view and, again, the
    second view); z1, z2 (N, D) the clean features. The published call ``SupConLoss()(features,
    features_positive=mixed_features)`` has 2N anchors, the clean z1_i and z2_i; anchor z1_i's positive is
    z_second_i, anchor z2_i's is z_mix_i; each denominator runs over the clean features except the anchor
    itself (the other clean view of the image included, the positive not). l(i) is the mean of image i's two
    anchors, so the mean over images is the published mean over the 2N anchors. (The published value also
    carries a detached per-anchor offset, max of the denominator logits minus max of the positive logits,
    from shifting the two logit matrices by different maxima; it changes no gradient and is left out.)
    Under torch.distributed the denominators run over the global batch.
    """
    num_images = z1.shape[0]
    compute_dtype = torch.promote_types(z1.dtype, torch.float32)
    with torch.autocast(device_type=z1.device.type, enabled=False):
        anchors = torch.cat([z1, z2]).to(compute_dtype)  # (2N, D)
        positives = torch.cat([z_second, z_mix]).to(compute_dtype)  # (2N, D)
        bank = dist.gather_with_grad(anchors)  # (W*2N, D), rank order
        own = dist.rank() * 2 * num_images + torch.arange(2 * num_images, device=z1.device)  # (2N,)
        columns = torch.arange(bank.shape[0], device=z1.device)
        not_self = columns.unsqueeze(0) != own.unsqueeze(1)  # (2N, W*2N)
        log_denominator, _ = _masked_logsumexp(anchors @ bank.T / temperature, not_self)  # (2N,)
        per_anchor = log_denominator - (anchors * positives).sum(dim=1) / temperature  # (2N,)
    return 0.5 * (per_anchor[:num_images] + per_anchor[num_images:])


def gradmix_objective(
    z1: torch.Tensor,
    z2: torch.Tensor,
    labels: torch.Tensor,
    z_mix: torch.Tensor | None = None,
    mix_weights: torch.Tensor | None = None,
    theta: float = 1.0,
    lam: float = 1.2,
    temperature: float | torch.Tensor = 0.05,
    negatives_only: bool = False,
    loss_scale: float = 1.0,
) -> dict[str, torch.Tensor]:
    """L = theta * L_supcon + lam * (L_simclr + mean_i(w_i * l_mix(i))), and its parts.

    z1, z2, z_mix are (N, D) L2-normalised features; labels (N,); mix_weights (N,) are the w_i
    (box area fractions; all ones when None). Without z_mix the mix term is a zero tensor. Returns
    scalar fp32 tensors (float64 for float64 features) under "loss", "supcon", "simclr" and "mix".

    ``negatives_only`` is the paper's pair of equations (``--denominator negatives``): SupCon's denominator
    holds the negatives only (eq. 2), SimCLR's keeps the positive (eq. 1), and so does l_mix, which has
    SimCLR's form. ``loss_scale`` multiplies the three terms (the published tau / 0.07, ``--loss-scale``).
    """
    supcon = loss_scale * supcon_loss(z1, z2, labels, temperature, negatives_only)
    simclr = loss_scale * simclr_loss(z1, z2, temperature)
    if z_mix is None:
        mix = torch.zeros((), dtype=supcon.dtype, device=supcon.device)
    else:
        per_sample = loss_scale * mix_loss_per_sample(z_mix, z1, z2, temperature)  # (N,)
        if mix_weights is not None:
            per_sample = per_sample * mix_weights.to(per_sample.dtype)
        mix = per_sample.mean()
    loss = theta * supcon + lam * (simclr + mix)
    return {"loss": loss, "supcon": supcon, "simclr": simclr, "mix": mix}
