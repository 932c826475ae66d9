"""``--compile``: torch.compile the model in pieces whose boundaries are the CAM layers.

Compiling the whole model at once breaks GradMix: the CAM hooks would store an intermediate of one
fused graph, and ``torch.autograd.grad(loss, activations)`` then fails because, inside the compiled
graph, the layers after the CAM layer consume the graph's internal value, not the tensor the hook
kept. So the model is compiled as a set of regions instead:

- a module on the path from the root to a CAM layer ("ancestor") keeps its eager ``forward`` (cheap
  glue: it only calls its children) and its children are handled by these rules;
- a CAM layer gets a compiled ``forward`` while ``Module.__call__``, which runs the forward hooks,
  stays eager, so the hooks see the real output tensor that the next region consumes;
- every other module with submodules (a ResNet stage, a block, the projection head) is compiled
  whole; leaf modules under an ancestor (the stem's conv, BN, ReLU) are single ops with nothing to
  fuse, and stay eager.

The weights, ``state_dict`` keys and hooks are untouched: only ``forward`` attributes are replaced,
so checkpoints are the same with and without ``--compile``.
"""

from __future__ import annotations

import torch
from torch import nn

# Regions of the same class share one code object (e.g. every nn.Sequential.forward), and dynamo's
# recompile limit counts compiled variants per code object: stages of different widths, the clean
# (2N) and mixed (N) batch, train and eval mode. The default (8) is reached easily; past it dynamo
# silently falls back to eager.
_RECOMPILE_LIMIT = 64


def _configure_compiler() -> None:
    import torch._dynamo.config
    import torch._functorch.config
    import torch._inductor.config

    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # the newer name first; older torch has the other
        if hasattr(config, name) and getattr(config, name) < _RECOMPILE_LIMIT:
            setattr(config, name, _RECOMPILE_LIMIT)
    # The exact CAM gradient runs autograd.grad(..., retain_graph=True) through the regions after the
    # CAM layer, and their backward runs again in the step's final backward. A compiled backward with
    # donated buffers (torch >= 2.6) reuses its saved tensors' memory and refuses a retained graph.
    functorch_config = torch._functorch.config
    if hasattr(functorch_config, "donated_buffer"):
        functorch_config.donated_buffer = False
        # The on-disk caches do not key on that setting (seen with torch 2.14): a backward compiled
        # elsewhere with donated buffers for an identical graph is served as is, its retain check
        # bypassed, and the second backward returns wrong gradients with no error. So compile
        # afresh: slower start, correct gradients.
        torch._inductor.config.fx_graph_cache = False
        if hasattr(functorch_config, "enable_autograd_cache"):
            functorch_config.enable_autograd_cache = False


def compile_regions(model: nn.Module, cam_modules: list[nn.Module]) -> list[str]:
    """Compiles ``model`` in place around ``cam_modules`` (see the module docstring).

    Returns the qualified names of the compiled regions, in module order (for logs and tests).
    """
    cam_ids = {id(m) for m in cam_modules}
    if id(model) in cam_ids:
        raise ValueError("compile_regions: a CAM layer must be a submodule, not the whole model")
    if cam_ids - {id(m) for m in model.modules()}:
        raise ValueError("compile_regions: a CAM layer is not a submodule of the model")
    _configure_compiler()
    # the ancestors: every module that strictly contains a CAM layer
    ancestor_ids = {id(module) for module in model.modules()
                    if any(id(inner) in cam_ids for inner in module.modules() if inner is not module)}

    compiled = []

    def visit(module: nn.Module, prefix: str) -> None:
        for child_name, child in module.named_children():
            qualified = f"{prefix}{child_name}"
            if id(child) in ancestor_ids:
                visit(child, qualified + ".")
            elif id(child) in cam_ids or next(child.children(), None) is not None:
                child.forward = torch.compile(child.forward)
                compiled.append(qualified)

    if id(model) in ancestor_ids:
        visit(model, "")
    else:  # no CAM layer inside (plain training): one region
        model.forward = torch.compile(model.forward)
        compiled.append("")
    return compiled
